/*
 * zqfile.h - reader and writer of .zq model files. formats/ZQ_FORMAT.md specifies the format;
 * this header gives the in-memory form. Layout of version 1, all integers little-endian:
 *
 *   0   magic "\x89ZQM\r\n\x1a\n" (8 bytes)
 *   8   u32 version (ZQ_FILE_VERSION)      12  u32 flags (0)
 *   16  u64 meta_size                      24  u32 CRC-32C of the metadata frame
 *   28  u32 CRC-32C of bytes 0..27
 *   32  metadata: one zstd frame (content checksum on) holding JSON with the hparams, the
 *       tokenizer, the provenance and the tensor directory (name, type, rows, cols, group,
 *       offset from the end of the metadata frame, size, raw_size, crc32c)
 *   then one zstd frame per tensor, contiguous, in directory order; the file ends where the
 *       last frame ends. Frame content: f32 / f16 raw values; int8: the f32 scales, zero
 *       padding to a multiple of 64 bytes, then the int8 values in [-127, 127].
 *
 * After reading, all tensors live in one arena; each tensor's data and scales are 64-byte
 * aligned.
 */
#ifndef ZQ_ZQFILE_H
#define ZQ_ZQFILE_H

#include "../runtime/zq.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZQ_FILE_VERSION 1

/* One stored tensor. For ZQ_TYPE_Q8, data is int8 [rows][cols] and scales f32
 * [rows][n_groups], n_groups = group ? cols / group : 1. 1-D tensors have rows = 1. */
typedef struct {
    char name[96];   /* Hugging Face name without the "transformer." prefix, e.g. "h.0.ln_1.weight" */
    zq_type type;
    int32_t rows;
    int32_t cols;
    int32_t group;   /* ZQ_TYPE_Q8 only; 0 = one scale per row */
    void *data;      /* 64-byte aligned; owned by the zq_file arena after reading */
    float *scales;   /* ZQ_TYPE_Q8 only; 64-byte aligned */
} zq_file_tensor;

typedef struct {
    zq_hparams hparams;

    /* Tokenizer: vocab[i] is token i (vocab.txt order); added tokens follow with ids
     * n_vocab_base + j and are never split. */
    char **vocab;
    int32_t n_vocab_base;
    char **added;
    int32_t n_added;
    bool lower_case;
    char tokenizer_kind[16]; /* "wordpiece" */

    /* Provenance, free text: the tool and version that wrote the file, the source folder and
     * its weight format ("safetensors F32", "pytorch_model.bin"), the quantization options. */
    char name[64];
    char tool[64];
    char source[256];
    char source_format[64];
    char quant_desc[128];

    zq_file_tensor *tensors;
    int32_t n_tensors;

    void *arena; /* one allocation that holds every tensor after zq_file_read */
    size_t arena_bytes;
} zq_file;

/* Reads and verifies path (magic, version, sizes, every zstd frame's checksum), decompressing
 * the tensors into one 64-byte aligned arena with n_threads threads (0 = physical cores).
 * Errors name the file and the problem. On failure *out is left empty. */
zq_status zq_file_read(const char *path, int n_threads, zq_file *out);

/* Writes f to path through a temporary file in the same folder that is renamed at the end, so
 * an interrupted write leaves no partial file. zstd_level 1..22; n_threads compress in
 * parallel. The tensors' data need not live in an arena. */
zq_status zq_file_write(const char *path, const zq_file *f, int zstd_level, int n_threads);

/* Frees everything zq_file_read allocated (also the vocab strings) and zeroes f. */
void zq_file_free(zq_file *f);

/* Returns the tensor called name, or NULL. */
const zq_file_tensor *zq_file_find(const zq_file *f, const char *name);

/* Returns the payload bytes of a tensor (data plus scales). */
size_t zq_file_tensor_bytes(const zq_file_tensor *t);

#endif /* ZQ_ZQFILE_H */
