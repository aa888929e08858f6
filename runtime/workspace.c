/*
 * workspace.c - KV caches and forward-pass activation buffers.
 */
#include "internal.h"
#include "model.h"

#include <stdlib.h>
#include <string.h>

/* Caches grow by doubling from this many positions, so a short chat never pays for the full
 * context and a long one reallocates only log2(n_ctx / 64) times. */
#define KV_MIN_POSITIONS 64

zq_kv_type zq_kv_resolve(zq_kv_type requested, zq_type weights)
{
    if (requested != ZQ_KV_AUTO)
        return requested;
    return weights == ZQ_TYPE_F32 ? ZQ_KV_F32 : ZQ_KV_F16;
}

zq_status zq_kv_init(zq_kv *kv, const zq_hparams *hp, int max_positions, zq_kv_type type)
{
    memset(kv, 0, sizeof *kv);
    kv->n_layer = hp->n_layer;
    kv->n_embd = hp->n_embd;
    kv->max = max_positions;
    kv->type = type;
    kv->k = calloc((size_t)hp->n_layer, sizeof(void *));
    kv->v = calloc((size_t)hp->n_layer, sizeof(void *));
    if (!kv->k || !kv->v) {
        zq_kv_free(kv);
        return zq_fail(ZQ_ERR_NOMEM, "KV cache: out of memory for %d layers", hp->n_layer);
    }
    return ZQ_OK;
}

zq_status zq_kv_reserve(zq_kv *kv, int positions)
{
    if (positions <= kv->cap)
        return ZQ_OK;
    if (positions > kv->max)
        return zq_fail(ZQ_ERR_CONTEXT_FULL, "KV cache: %d positions requested, context is %d",
                       positions, kv->max);
    int cap = kv->cap ? kv->cap : KV_MIN_POSITIONS;
    while (cap < positions)
        cap *= 2;
    if (cap > kv->max)
        cap = kv->max;

    const size_t elem = kv->type == ZQ_KV_F16 ? sizeof(uint16_t) : sizeof(float);
    const size_t bytes = (size_t)cap * kv->n_embd * elem;
    for (int l = 0; l < kv->n_layer; l++) {
        void *k = realloc(kv->k[l], bytes);
        if (k)
            kv->k[l] = k;
        void *v = realloc(kv->v[l], bytes);
        if (v)
            kv->v[l] = v;
        if (!k || !v)
            return zq_fail(ZQ_ERR_NOMEM, "KV cache: out of memory for %d positions", cap);
    }
    kv->cap = cap;
    return ZQ_OK;
}

void zq_kv_free(zq_kv *kv)
{
    for (int l = 0; l < kv->n_layer && kv->k; l++)
        free(kv->k[l]);
    for (int l = 0; l < kv->n_layer && kv->v; l++)
        free(kv->v[l]);
    free(kv->k);
    free(kv->v);
    memset(kv, 0, sizeof *kv);
}

static float *alloc_floats(size_t count, zq_status *status)
{
    float *p = zq_aligned_alloc(count * sizeof(float));
    if (!p)
        *status = ZQ_ERR_NOMEM;
    return p;
}

zq_status zq_workspace_init(zq_workspace *ws, const zq_hparams *hp, int max_rows, int threads)
{
    memset(ws, 0, sizeof *ws);
    const size_t rows = (size_t)max_rows;
    const size_t d = (size_t)hp->n_embd;
    zq_status st = ZQ_OK;
    ws->max_rows = max_rows;
    ws->score_threads = threads > 0 ? threads : 1;
    ws->x = alloc_floats(rows * d, &st);
    ws->h = alloc_floats(rows * d, &st);
    ws->qkv = alloc_floats(rows * 3 * d, &st);
    ws->att = alloc_floats(rows * d, &st);
    ws->mlp = alloc_floats(rows * (size_t)hp->n_inner, &st);
    ws->scores = alloc_floats(zq_attention_scratch(hp, ws->score_threads), &st);
    ws->kv_rows = alloc_floats(zq_kv_row_scratch(hp) * (size_t)ws->score_threads, &st);
    ws->head_in = alloc_floats(ZQ_HEAD_ROWS * d, &st);
    ws->head_out = alloc_floats((size_t)ZQ_HEAD_ROWS * (size_t)hp->n_vocab, &st);
    if (st == ZQ_OK) {
        const int max_m = max_rows > ZQ_HEAD_ROWS ? max_rows : ZQ_HEAD_ROWS;
        const int max_k = hp->n_inner > hp->n_embd ? hp->n_inner : hp->n_embd;
        st = zq_linear_scratch_init(&ws->lin, max_m, max_k);
    }
    if (st != ZQ_OK) {
        zq_workspace_free(ws);
        return zq_fail(ZQ_ERR_NOMEM, "workspace: out of memory for %d rows", max_rows);
    }
    return ZQ_OK;
}

void zq_workspace_free(zq_workspace *ws)
{
    zq_aligned_free(ws->x);
    zq_aligned_free(ws->h);
    zq_aligned_free(ws->qkv);
    zq_aligned_free(ws->att);
    zq_aligned_free(ws->mlp);
    zq_aligned_free(ws->scores);
    zq_aligned_free(ws->kv_rows);
    zq_aligned_free(ws->head_in);
    zq_aligned_free(ws->head_out);
    zq_linear_scratch_free(&ws->lin);
    memset(ws, 0, sizeof *ws);
}
