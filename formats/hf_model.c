/*
 * hf_model.c - loads a Hugging Face GPT-2 model folder: config.json, the weights
 * (model.safetensors, else pytorch_model.bin) and the tokenizer files. It then drops the
 * buffers that GPT-2 recomputes, detects a tied output head, and checks every tensor against
 * the shapes that config.json implies.
 */
#include "hf_internal.h"

#include "../runtime/internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The tensors of one transformer block; matrices are Conv1D weights, stored [in, out]. */
static const char *const layer_suffixes[] = {
    "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
    "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias",
};
#define N_LAYER_TENSORS (int)(sizeof layer_suffixes / sizeof layer_suffixes[0])

static void join(char *buf, size_t cap, const char *dir, const char *file)
{
    snprintf(buf, cap, "%s/%s", dir, file);
}

/* Reads the weights file of dir and returns its path in path. */
static zq_status read_weights(const char *dir, zq_hf_model *m, char *path, size_t cap)
{
    join(path, cap, dir, "model.safetensors");
    if (access(path, F_OK) == 0)
        return zq_hf_read_safetensors(path, m);
    join(path, cap, dir, "pytorch_model.bin");
    if (access(path, F_OK) == 0)
        return zq_hf_read_torch_bin(path, m);

    const char *const sharded[] = {"model.safetensors.index.json", "pytorch_model.bin.index.json"};
    for (int i = 0; i < 2; i++) {
        join(path, cap, dir, sharded[i]);
        if (access(path, F_OK) == 0)
            return zq_fail(ZQ_ERR_UNSUPPORTED,
                           "%s: sharded checkpoints are not supported; merge the shards into one "
                           "model.safetensors",
                           path);
    }
    return zq_fail(ZQ_ERR_IO, "%s: neither model.safetensors nor pytorch_model.bin found", dir);
}

static int32_t find_index(const zq_hf_model *m, const char *name)
{
    for (int32_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return i;
    return -1;
}

static void remove_at(zq_hf_model *m, int32_t i)
{
    free(m->tensors[i].data);
    const size_t after = (size_t)(m->n_tensors - i - 1);
    memmove(&m->tensors[i], &m->tensors[i + 1], after * sizeof *m->tensors);
    m->n_tensors--;
}

static bool same_tensor(const zq_hf_tensor *a, const zq_hf_tensor *b)
{
    uint64_t n = 0;
    if (a->ndim != b->ndim || memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]) ||
        !zq_hf_numel(a->ndim, a->shape, &n))
        return false;
    return memcmp(a->data, b->data, (size_t)n * sizeof(float)) == 0;
}

/* Drops the attention mask buffers, and lm_head.weight when it equals wte.weight. */
static void normalise(const char *path, zq_hf_model *m)
{
    for (int32_t i = m->n_tensors - 1; i >= 0; i--)
        if (zq_hf_is_attn_buffer(m->tensors[i].name))
            remove_at(m, i);

    const int32_t head = find_index(m, "lm_head.weight");
    const int32_t wte = find_index(m, "wte.weight");
    m->lm_head_tied = true;
    if (head >= 0 && wte >= 0 && same_tensor(&m->tensors[head], &m->tensors[wte])) {
        remove_at(m, head);
    } else if (head >= 0) {
        m->lm_head_tied = false;
        ZQ_WARN("%s: lm_head.weight differs from wte.weight, so the model keeps a separate "
                "output head", path);
    }
}

static void format_shape(const int64_t *shape, int ndim, char *buf, size_t cap)
{
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++) {
        const char *sep = i ? ", " : "";
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", sep, (long long)shape[i]);
    }
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

/* Checks that name exists with shape [rows, cols], or [cols] when rows is 0. */
static zq_status expect(const char *path, const zq_hf_model *m, const char *name, int64_t rows,
                        int64_t cols)
{
    const int64_t want[2] = {rows ? rows : cols, cols};
    const int ndim = rows ? 2 : 1;
    char want_text[48], got_text[96];
    format_shape(want, ndim, want_text, sizeof want_text);
    const zq_hf_tensor *t = zq_hf_find(m, name);
    if (!t)
        return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' is missing (config.json implies shape %s)",
                       path, name, want_text);
    if (t->ndim != ndim || t->shape[0] != want[0] || (ndim == 2 && t->shape[1] != want[1])) {
        format_shape(t->shape, t->ndim, got_text, sizeof got_text);
        return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' has shape %s, config.json implies %s",
                       path, name, got_text, want_text);
    }
    return ZQ_OK;
}

static zq_status check_layer(const char *path, const zq_hf_model *m, int layer)
{
    const int64_t d = m->hparams.n_embd, ff = m->hparams.n_inner;
    const int64_t shapes[N_LAYER_TENSORS][2] = {
        {0, d}, {0, d}, {d, 3 * d}, {0, 3 * d}, {d, d},  {0, d},
        {0, d}, {0, d}, {d, ff},    {0, ff},    {ff, d}, {0, d},
    };
    for (int i = 0; i < N_LAYER_TENSORS; i++) {
        char name[96];
        snprintf(name, sizeof name, "h.%d.%s", layer, layer_suffixes[i]);
        ZQ_TRY(expect(path, m, name, shapes[i][0], shapes[i][1]));
    }
    return ZQ_OK;
}

/* Returns whether name is a weight of a GPT-2 LM model with n_layer blocks. */
static bool is_expected(const char *name, int n_layer)
{
    const char *const top[] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias",
                               "lm_head.weight"};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (strcmp(name, top[i]) == 0)
            return true;
    int layer = -1, end = 0;
    if (sscanf(name, "h.%d.%n", &layer, &end) != 1 || end == 0 || layer < 0 || layer >= n_layer)
        return false;
    for (int i = 0; i < N_LAYER_TENSORS; i++)
        if (strcmp(name + end, layer_suffixes[i]) == 0)
            return true;
    return false;
}

static zq_status validate(const char *path, const zq_hf_model *m)
{
    const zq_hparams *hp = &m->hparams;
    ZQ_TRY(expect(path, m, "wte.weight", hp->n_vocab, hp->n_embd));
    ZQ_TRY(expect(path, m, "wpe.weight", hp->n_ctx, hp->n_embd));
    for (int l = 0; l < hp->n_layer; l++)
        ZQ_TRY(check_layer(path, m, l));
    ZQ_TRY(expect(path, m, "ln_f.weight", 0, hp->n_embd));
    ZQ_TRY(expect(path, m, "ln_f.bias", 0, hp->n_embd));
    if (!m->lm_head_tied)
        ZQ_TRY(expect(path, m, "lm_head.weight", hp->n_vocab, hp->n_embd));

    for (int32_t i = 0; i < m->n_tensors; i++)
        if (!is_expected(m->tensors[i].name, hp->n_layer))
            return zq_fail(ZQ_ERR_FORMAT,
                           "%s: unexpected tensor '%s'; a GPT-2 language model with %d layers has "
                           "no such weight",
                           path, m->tensors[i].name, hp->n_layer);
    return ZQ_OK;
}

zq_status zq_hf_load(const char *dir, zq_hf_model *out)
{
    if (!out)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_hf_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir || !dir[0])
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_hf_load: the model folder is NULL or empty");
    char config[PATH_MAX], weights[PATH_MAX];
    join(config, sizeof config, dir, "config.json");
    zq_status st = zq_hf_read_config(config, &out->hparams);
    if (st == ZQ_OK)
        st = read_weights(dir, out, weights, sizeof weights);
    if (st == ZQ_OK)
        st = zq_hf_read_tokenizer(dir, out);
    if (st == ZQ_OK) {
        normalise(weights, out);
        st = validate(weights, out);
    }
    if (st != ZQ_OK) {
        zq_hf_free(out);
        return st;
    }
    ZQ_DEBUG("%s: %s, %d tensors, %d vocab lines, %d added tokens, lm_head %s", dir,
             out->source_format, out->n_tensors, out->n_vocab_lines, out->n_added,
             out->lm_head_tied ? "tied" : "separate");
    return ZQ_OK;
}

static void free_strings(char **list, int32_t n)
{
    if (!list)
        return;
    for (int32_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void zq_hf_free(zq_hf_model *m)
{
    if (!m)
        return;
    for (int32_t i = 0; i < m->n_tensors; i++)
        free(m->tensors[i].data);
    free(m->tensors);
    free_strings(m->vocab, m->n_vocab_lines);
    free_strings(m->added, m->n_added);
    memset(m, 0, sizeof *m);
}

const zq_hf_tensor *zq_hf_find(const zq_hf_model *m, const char *name)
{
    if (!m || !name)
        return NULL;
    const int32_t i = find_index(m, name);
    return i >= 0 ? &m->tensors[i] : NULL;
}
