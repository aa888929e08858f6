/*
 * workspace.c - KV caches and forward-pass activation buffers.
 */
#include "internal.h"
#include "model.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Caches grow by doubling from this many positions, so a short chat never pays for the full
 * context and a long one reallocates only log2(n_ctx / 64) times. */
#define KV_MIN_POSITIONS 64
/* Caches from this size on are backed by 2 MiB pages: at most one partly used page each. */
#define KV_HUGE_PAGE_MIN_BYTES ((size_t)2 << 20)

zq_kv_type zq_kv_resolve(zq_kv_type requested, zq_type weights)
{
    if (requested != ZQ_KV_AUTO)
        return requested;
    switch (weights) {
    case ZQ_TYPE_F32:
        return ZQ_KV_F32;
    case ZQ_TYPE_F16:
        return ZQ_KV_F16;
    default:
        return ZQ_KV_Q8;
    }
}

zq_status zq_kv_init(zq_kv *kv, const zq_hparams *hp, int max_positions, zq_kv_type type)
{
    memset(kv, 0, sizeof *kv);
    kv->n_layer = hp->n_layer;
    kv->n_embd = hp->n_embd;
    kv->n_head = hp->n_head;
    kv->max = max_positions;
    kv->type = type;
    const size_t layers = (size_t)hp->n_layer;
    kv->k = calloc(layers, sizeof(void *));
    kv->v = calloc(layers, sizeof(void *));
    bool ok = kv->k && kv->v;
    if (type == ZQ_KV_Q8) {
        kv->ks = calloc(layers, sizeof(float *));
        kv->vs = calloc(layers, sizeof(float *));
        ok = ok && kv->ks && kv->vs;
    }
    if (!ok) {
        zq_kv_free(kv);
        return zq_fail(ZQ_ERR_NOMEM, "KV cache: out of memory for %d layers", hp->n_layer);
    }
    return ZQ_OK;
}

/* Returns the bytes of one cached row of one tensor. */
static size_t kv_row_bytes(const zq_kv *kv)
{
    return (size_t)kv->n_embd * zq_kv_elem_size(kv->type);
}

/* Returns the bytes of the scales of one cached row of one tensor. */
static size_t kv_scale_bytes(const zq_kv *kv)
{
    return zq_kv_scale_size(kv->type, kv->n_head);
}

/* Returns the bytes of the rows of every tensor of a cache of cap positions, rounded up to
 * ZQ_ALIGN so that the scales after them are aligned. */
static size_t kv_rows_bytes(const zq_kv *kv, int cap)
{
    return ZQ_ALIGN_UP((size_t)2 * kv->n_layer * cap * kv_row_bytes(kv));
}

/* The arena contains [n_layer][k, v][cap] rows, then for an int8 cache [n_layer][k, v][cap]
 * [n_head] scales. Tensor t (of 2 * n_layer) is layer t / 2's keys when t is even, its values
 * when t is odd. */
static unsigned char *kv_rows_at(const zq_kv *kv, unsigned char *arena, int cap, int t)
{
    return arena + (size_t)t * cap * kv_row_bytes(kv);
}

static float *kv_scales_at(const zq_kv *kv, unsigned char *arena, int cap, int t)
{
    unsigned char *base = arena + kv_rows_bytes(kv, cap);
    return (float *)(base + (size_t)t * cap * kv_scale_bytes(kv));
}

/* Points the tensors of kv into arena, a cache of cap positions. */
static void kv_point(zq_kv *kv, unsigned char *arena, int cap)
{
    for (int l = 0; l < kv->n_layer; l++) {
        kv->k[l] = kv_rows_at(kv, arena, cap, 2 * l);
        kv->v[l] = kv_rows_at(kv, arena, cap, 2 * l + 1);
        if (kv->type == ZQ_KV_Q8) {
            kv->ks[l] = kv_scales_at(kv, arena, cap, 2 * l);
            kv->vs[l] = kv_scales_at(kv, arena, cap, 2 * l + 1);
        }
    }
}

/* Copies the kv->cap rows of every tensor of kv into arena, a cache of cap positions. */
static void kv_copy(const zq_kv *kv, unsigned char *arena, int cap)
{
    const size_t row = kv_row_bytes(kv), scale_bytes = kv_scale_bytes(kv);
    for (int t = 0; t < 2 * kv->n_layer; t++) {
        const int l = t / 2;
        memcpy(kv_rows_at(kv, arena, cap, t), t % 2 ? kv->v[l] : kv->k[l], kv->cap * row);
        if (kv->type == ZQ_KV_Q8)
            memcpy(kv_scales_at(kv, arena, cap, t), t % 2 ? kv->vs[l] : kv->ks[l],
                   kv->cap * scale_bytes);
    }
}

/* The cache is one allocation rather than one per layer and tensor, backed by 2 MiB pages from
 * KV_HUGE_PAGE_MIN_BYTES on: a 768-wide model's int8 cache is 5 MB at 512 positions, about
 * 0.4 MB per tensor. Reading an f16 cache through 4 KB pages made decode attention about 25%
 * slower (the hardware prefetcher stops at every page). */
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

    const size_t scales = (size_t)2 * kv->n_layer * cap * kv_scale_bytes(kv);
    const size_t bytes = kv_rows_bytes(kv, cap) + scales;
    unsigned char *arena = bytes >= KV_HUGE_PAGE_MIN_BYTES ? zq_huge_alloc(bytes)
                                                           : zq_aligned_alloc(bytes);
    if (!arena)
        return zq_fail(ZQ_ERR_NOMEM, "KV cache: out of memory for %d positions", cap);
    if (kv->arena)
        kv_copy(kv, arena, cap);
    zq_aligned_free(kv->arena);
    kv->arena = arena;
    kv->cap = cap;
    kv_point(kv, arena, cap);
    return ZQ_OK;
}

void zq_kv_free(zq_kv *kv)
{
    zq_aligned_free(kv->arena);
    free(kv->k);
    free(kv->v);
    free(kv->ks);
    free(kv->vs);
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
    ws->row_h = alloc_floats((size_t)ws->score_threads * d, &st);
    const int max_k = hp->n_inner > hp->n_embd ? hp->n_inner : hp->n_embd;
    if (st == ZQ_OK) {
        const int max_m = max_rows > ZQ_HEAD_ROWS ? max_rows : ZQ_HEAD_ROWS;
        st = zq_linear_scratch_init(&ws->lin, max_m, max_k);
    }
    if (st == ZQ_OK)
        st = zq_linear_scratch_init(&ws->row_q, ws->score_threads, max_k);
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
    zq_aligned_free(ws->row_h);
    zq_linear_scratch_free(&ws->row_q);
    memset(ws, 0, sizeof *ws);
}
