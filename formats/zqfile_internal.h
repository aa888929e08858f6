/*
 * zqfile_internal.h - pieces shared by the .zq reader and writer: the header constants, the
 * per-frame directory record, the metadata JSON codec and CRC-32C. Not part of any API.
 */
#ifndef ZQ_ZQFILE_INTERNAL_H
#define ZQ_ZQFILE_INTERNAL_H

#include "zqfile.h"

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .zq reader and writer copy little-endian data as is and need a little-endian host"
#endif

/* An OpenMP directive that compiles to nothing without -fopenmp, without a warning. */
#ifdef _OPENMP
#define ZQ_OMP(directive) _Pragma(directive)
#else
#define ZQ_OMP(directive)
#endif

#define ZQ_FILE_MAGIC "\x89ZQM\r\n\x1a\n"
#define ZQ_FILE_HEADER_BYTES 32
#define ZQ_FILE_MAX_META_BYTES ((uint64_t)256 << 20) /* uncompressed JSON */
#define ZQ_FILE_MAX_TENSORS 65536
/* A zstd block of at least 4 bytes decodes to at most 128 KiB, so no frame expands more. */
#define ZQ_FILE_MAX_RATIO 32768u

/* Where one tensor's frame lies in the file, as the directory records it. */
typedef struct {
    uint64_t offset;   /* from the first tensor frame, i.e. the end of the metadata frame */
    uint64_t size;     /* compressed bytes on disk */
    uint64_t raw_size; /* content bytes */
    uint32_t crc32c;   /* of the size bytes at offset */
} zq_frame_ref;

/* The outcome of one tensor's work in a parallel loop, carried back to the calling thread
 * because zq_last_error() is per thread. */
typedef struct {
    zq_status status;
    char message[320];
} zq_worker_result;

/* Returns the bytes of a tensor frame's content: the values, plus for int8 the scales padded
 * to a multiple of 64 bytes. 0 if the shape or type is invalid or the size overflows. */
uint64_t zq_frame_content_bytes(const zq_file_tensor *t);

/* Returns the bytes of the int8 scales before padding (0 for other types). */
uint64_t zq_frame_scale_bytes(const zq_file_tensor *t);

/* Returns the CRC-32C (Castagnoli) of data continued from crc; start with crc = 0. Uses the
 * SSE4.2 instruction when the CPU has it. */
uint32_t zq_crc32c(uint32_t crc, const void *data, size_t n);

/* The same CRC with the portable tables only, so tests can compare both variants. */
uint32_t zq_crc32c_portable(uint32_t crc, const void *data, size_t n);

/* ---- fields shared by the metadata parser (zqfile_meta.c) and builder (zqfile_json.c) ---- */

/* An integer hyper-parameter: its JSON key, where it sits in zq_hparams, and its maximum (the
 * minimum is 1). */
typedef struct {
    const char *key;
    size_t offset;
    int32_t max;
} zq_hparam_int;

#define ZQ_HPARAM_INT_COUNT 6
extern const zq_hparam_int zq_hparam_ints[ZQ_HPARAM_INT_COUNT];

static inline int32_t *zq_hparam_int_ptr(zq_hparams *hp, const zq_hparam_int *field)
{
    return (int32_t *)(void *)((char *)hp + field->offset);
}

/* Keys of tokenizer.special ("pad", ...) and the tokens they name ("[PAD]", ...). */
#define ZQ_SPECIAL_COUNT 5
extern const char *const zq_special_keys[ZQ_SPECIAL_COUNT];
extern const char *const zq_special_tokens_text[ZQ_SPECIAL_COUNT];

/* Name <-> enum maps for the metadata; the from_name functions return -1 for unknown names. */
const char *zq_activation_name(zq_activation activation);
int zq_activation_from_name(const char *name);
int zq_type_from_name(const char *name);

/* Returns the offset of the first byte of s[0, n) that does not start a valid UTF-8 sequence
 * (RFC 3629: no overlong forms, surrogates or code points above U+10FFFF), or n if all of
 * s is valid. */
size_t zq_utf8_invalid_at(const char *s, size_t n);

/* Returns the first id whose string is token, searching vocab then added tokens; -1 if none. */
int32_t zq_file_find_token(const zq_file *f, const char *token);

/* The checks below fail with the given status: ZQ_ERR_FORMAT when reading, ZQ_ERR_INVALID_ARG
 * when writing. */

/* Checks the hyper-parameter ranges of ZQ_FORMAT.md; what names the source in messages. */
zq_status zq_check_hparams(const char *path, zq_status status, const char *what,
                           const zq_hparams *hp);

/* Checks a tensor's rows, cols and group against its type. */
zq_status zq_check_tensor_shape(const char *path, zq_status status, const zq_file_tensor *t);

/* Checks what the int8 kernels rely on: values in [-127, 127], scales finite and >= 0. */
zq_status zq_check_q8_values(const char *path, zq_status status, const zq_file_tensor *t);

/* Checks that name is a weight of a GPT-2 model with n_layer blocks: wte.weight, wpe.weight,
 * ln_f.weight, ln_f.bias, lm_head.weight or h.<layer>.<suffix> with layer < n_layer. */
zq_status zq_check_tensor_name(const char *path, zq_status status, const char *name,
                               int32_t n_layer);

/* Checks what the runtime tokenizer and prompt framing need of the tokens: no empty added
 * token, and a [CLS] and a [SEP] token. */
zq_status zq_check_tokens(const char *path, zq_status status, const zq_file *f);

/* Checks that no two tensors share a name. */
zq_status zq_check_unique_names(const char *path, zq_status status, const zq_file *f);

/* Parses the metadata JSON into f (hparams, tokenizer, provenance, tensor names, types and
 * shapes; data pointers stay NULL) and *frames (malloc'd, f->n_tensors entries). Checks every
 * field, and that the frames, which start at file offset data_start, follow one another and
 * end at file_size. path names the file in messages. On failure f may hold partial
 * allocations: free them with zq_file_free. */
zq_status zq_meta_parse(const char *path, const char *json, size_t len, uint64_t data_start,
                        uint64_t file_size, zq_file *f, zq_frame_ref **frames);

/* Builds the metadata JSON for f with the given frame records. Returns a string to free with
 * cJSON_free, or NULL with the message set. */
char *zq_meta_build(const zq_file *f, const zq_frame_ref *frames);

/* Checks the writable parts of f before writing: hyper-parameters, tokenizer, tensor names,
 * types, shapes and data pointers. */
zq_status zq_meta_check_input(const char *path, const zq_file *f);

#endif /* ZQ_ZQFILE_INTERNAL_H */
