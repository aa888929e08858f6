/*
 * hf_internal.h - helpers shared by the Hugging Face readers (hf_*.c). Not part of any API.
 */
#ifndef ZQ_HF_INTERNAL_H
#define ZQ_HF_INTERNAL_H

#include "hf.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the Hugging Face readers convert little-endian data in place and need a little-endian host"
#endif

#define ZQ_HF_MAX_DIMS 4

/* Element types of checkpoint data that the readers convert to f32. */
typedef enum {
    ZQ_HF_F32,
    ZQ_HF_F16,
    ZQ_HF_BF16,
    ZQ_HF_OTHER, /* stored in the file but not convertible (bool, integers, f64) */
} zq_hf_dtype;

/* Returns the bytes of one element (0 for ZQ_HF_OTHER) and the safetensors name ("F32"). */
size_t zq_hf_dtype_size(zq_hf_dtype dtype);
const char *zq_hf_dtype_name(zq_hf_dtype dtype);

/* Converts n little-endian elements of src to f32. */
void zq_hf_convert(zq_hf_dtype dtype, const void *src, size_t n, float *dst);

/* Returns the element count of a shape in *out; false if a dimension is negative or the count
 * exceeds 2^48. */
bool zq_hf_numel(int ndim, const int64_t *shape, uint64_t *out);

/* Returns whether name (without the "transformer." prefix) is an attention mask buffer,
 * "h.<N>.attn.bias" or "h.<N>.attn.masked_bias", which GPT-2 computes and ZQ drops. */
bool zq_hf_is_attn_buffer(const char *name);

/* Appends a tensor to m, taking ownership of data (freed on failure too). name is the
 * checkpoint key, from which the "transformer." prefix is removed. path names the file in
 * messages. Fails on a name that is too long or already present, and on a NaN or infinity
 * in any tensor but the attention mask buffers. */
zq_status zq_hf_append(zq_hf_model *m, const char *path, const char *name, int ndim,
                       const int64_t *shape, zq_hf_dtype dtype, float *data);

/* Sets m->source_format to "<container> <dtype>", or "<container> mixed" when the tensors
 * appended since index first differ in dtype. */
void zq_hf_set_source_format(zq_hf_model *m, const char *container, int32_t first);

/* Opens a regular file for reading and returns its size. Anything else (a directory, a FIFO,
 * a device) fails with ZQ_ERR_IO, without blocking. */
zq_status zq_hf_open(const char *path, int *fd, uint64_t *size);

/* Opens a regular file as zq_hf_open does, as a stdio stream; NULL with the message set (the
 * status is ZQ_ERR_IO). */
FILE *zq_hf_fopen(const char *path);

/* Reads exactly n bytes at offset, which the caller has checked against the file size. */
zq_status zq_hf_pread(const char *path, int fd, void *buf, size_t n, uint64_t offset);

/* Reads a whole file of at most max_bytes into a NUL-terminated malloc'd buffer. */
zq_status zq_hf_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* Checks that text[0, len) is valid UTF-8; the error names path and the line. */
zq_status zq_hf_check_utf8(const char *path, const char *text, size_t len);

/* Reads and parses a JSON file, which must be valid UTF-8; the caller frees *out with
 * cJSON_Delete. */
zq_status zq_hf_read_json(const char *path, cJSON **out);

/* Reads vocab.txt, tokenizer_config.json and added_tokens.json of dir into m's vocab,
 * lower_case and added tokens. m->hparams.n_vocab must be set. */
zq_status zq_hf_read_tokenizer(const char *dir, zq_hf_model *m);

/* A tensor of a torch.save state dict, as the pickle describes it: a view of a storage. */
typedef struct {
    char name[160];
    char storage_key[64];      /* entry "<prefix>/data/<storage_key>" of the zip archive */
    char storage_type[32];     /* "FloatStorage", ... */
    zq_hf_dtype dtype;
    int64_t storage_numel;     /* elements of the storage */
    int64_t offset;            /* view start, in elements */
    int ndim;
    int64_t shape[ZQ_HF_MAX_DIMS];
    int64_t stride[ZQ_HF_MAX_DIMS]; /* in elements */
} zq_torch_tensor;

/* Runs the restricted pickle machine over data.pkl of a torch.save archive and lists the
 * state dict's tensors in *out (malloc'd, *n_out entries). It accepts only the opcodes and
 * globals that torch.save uses for a state dict and rejects anything else by name, so no code
 * from the file ever runs. path names the pickle in messages. */
zq_status zq_pickle_read_state_dict(const char *path, const uint8_t *data, size_t n,
                                    zq_torch_tensor **out, int32_t *n_out);

#endif /* ZQ_HF_INTERNAL_H */
