/*
 * hf.h - readers for Hugging Face GPT-2 model folders as save_pretrained writes them:
 * config.json, model.safetensors (F32, F16, BF16) or pytorch_model.bin (torch.save zip with a
 * pickled state dict), vocab.txt and tokenizer_config.json / added_tokens.json.
 */
#ifndef ZQ_HF_H
#define ZQ_HF_H

#include "../runtime/zq.h"

#include <stdbool.h>
#include <stdint.h>

/* A tensor converted to f32, with the shape of the checkpoint (Conv1D weights stay [in, out]). */
typedef struct {
    char name[96]; /* normalised: "transformer." prefix removed */
    int ndim;
    int64_t shape[4];
    float *data;   /* owned */
    char src_dtype[8]; /* "F32", "F16", "BF16" */
} zq_hf_tensor;

typedef struct {
    zq_hparams hparams; /* n_vocab from config.json's vocab_size */
    char **vocab;       /* vocab.txt lines */
    int32_t n_vocab_lines;
    char **added;       /* added tokens from added_tokens.json / tokenizer_config.json */
    int32_t n_added;
    bool lower_case;    /* tokenizer_config.json do_lower_case, default true */
    char source_format[64]; /* "safetensors F32", "pytorch_model.bin", ... */

    /* Tensors the model uses; "attn.bias" / "attn.masked_bias" buffers are dropped, and
     * "lm_head.weight" is dropped when it equals wte (tied). */
    zq_hf_tensor *tensors;
    int32_t n_tensors;
    bool lm_head_tied;
} zq_hf_model;

/* Loads a model folder. Errors name the file and the problem (missing file, unsupported
 * model_type or activation, shape mismatch with config.json, truncated weights). */
zq_status zq_hf_load(const char *dir, zq_hf_model *out);
void zq_hf_free(zq_hf_model *m);
const zq_hf_tensor *zq_hf_find(const zq_hf_model *m, const char *name);

/* Lower-level readers, exposed for tests. Each appends to m->tensors. */
zq_status zq_hf_read_safetensors(const char *path, zq_hf_model *m);
zq_status zq_hf_read_torch_bin(const char *path, zq_hf_model *m);
zq_status zq_hf_read_config(const char *path, zq_hparams *hp);

#endif /* ZQ_HF_H */
