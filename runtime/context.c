/*
 * context.c - one sequence's inference state: its KV cache, activation workspace and the
 * logits of its last token. Prompts are evaluated in chunks of n_batch rows.
 */
#include "internal.h"
#include "model.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct zq_context {
    const zq_model *model;
    zq_kv kv;
    zq_workspace ws;
    int pos;
    int n_ctx;
    int n_threads;
    float *logits; /* [n_vocab] of the last evaluated token */
    int32_t *ids;  /* [n_batch] scratch for batched decoding */
    int *rows_pos; /* [n_batch] */
    zq_kv **rows_kv;
    float **rows_logits;
    zq_forward_hooks hooks;
};

static zq_status alloc_rows(zq_context *c, int n_batch)
{
    c->ids = calloc((size_t)n_batch, sizeof *c->ids);
    c->rows_pos = calloc((size_t)n_batch, sizeof *c->rows_pos);
    c->rows_kv = calloc((size_t)n_batch, sizeof *c->rows_kv);
    c->rows_logits = calloc((size_t)n_batch, sizeof *c->rows_logits);
    c->logits = zq_aligned_alloc((size_t)c->model->hp.n_vocab * sizeof(float));
    if (!c->ids || !c->rows_pos || !c->rows_kv || !c->rows_logits || !c->logits)
        return zq_fail(ZQ_ERR_NOMEM, "context: out of memory");
    memset(c->logits, 0, (size_t)c->model->hp.n_vocab * sizeof(float));
    return ZQ_OK;
}

/* Attention scratch is per thread; size it so zq_context_set_threads can raise the count up to
 * the number of logical CPUs. */
static int max_threads(int requested)
{
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    return requested > online ? requested : (int)(online > 0 ? online : 1);
}

zq_status zq_context_create(const zq_model *model, const zq_context_params *params,
                            zq_context **out)
{
    *out = NULL;
    const zq_hparams *hp = &model->hp;
    int n_ctx = params && params->n_ctx > 0 ? params->n_ctx : hp->n_ctx;
    int n_batch = params && params->n_batch > 0 ? params->n_batch : 512;
    if (n_ctx > hp->n_ctx)
        return zq_fail(ZQ_ERR_INVALID_ARG, "context size %d exceeds the model's %d positions",
                       n_ctx, hp->n_ctx);
    if (n_batch > n_ctx)
        n_batch = n_ctx;
    if (params && (params->kv_type < ZQ_KV_AUTO || params->kv_type > ZQ_KV_Q8))
        return zq_fail(ZQ_ERR_INVALID_ARG, "unknown KV cache type %d", (int)params->kv_type);

    zq_context *c = calloc(1, sizeof *c);
    if (!c)
        return zq_fail(ZQ_ERR_NOMEM, "context: out of memory");
    c->model = model;
    c->n_ctx = n_ctx;
    c->n_threads = zq_resolve_threads(params ? params->n_threads : 0);

    const zq_kv_type kv_type = zq_kv_resolve(params ? params->kv_type : ZQ_KV_AUTO, model->type);
    zq_status st = zq_kv_init(&c->kv, hp, n_ctx, kv_type);
    if (st == ZQ_OK)
        st = zq_workspace_init(&c->ws, hp, n_batch, max_threads(c->n_threads));
    if (st == ZQ_OK)
        st = alloc_rows(c, n_batch);
    if (st != ZQ_OK) {
        zq_context_free(c);
        return st;
    }
    ZQ_INFO("context: %d positions, %s KV cache of up to %.1f MB, %d threads", n_ctx,
            zq_kv_type_name(kv_type),
            (double)n_ctx * zq_model_kv_bytes_per_position(model, kv_type) / 1e6, c->n_threads);
    *out = c;
    return ZQ_OK;
}

void zq_context_free(zq_context *ctx)
{
    if (!ctx)
        return;
    zq_kv_free(&ctx->kv);
    zq_workspace_free(&ctx->ws);
    zq_aligned_free(ctx->logits);
    free(ctx->ids);
    free(ctx->rows_pos);
    free(ctx->rows_kv);
    free(ctx->rows_logits);
    free(ctx);
}

static zq_status check_ids(const zq_model *m, const int32_t *ids, int n)
{
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->hp.n_vocab)
            return zq_fail(ZQ_ERR_INVALID_ARG, "token id %d is outside the vocabulary [0, %d)",
                           ids[i], m->hp.n_vocab);
    return ZQ_OK;
}

zq_status zq_context_eval(zq_context *ctx, const int32_t *ids, int n, float *all_logits)
{
    if (n <= 0 || !ids)
        return zq_fail(ZQ_ERR_INVALID_ARG, "no tokens to evaluate");
    if (ctx->pos + n > ctx->n_ctx)
        return zq_fail(ZQ_ERR_CONTEXT_FULL, "%d tokens at position %d exceed the context of %d",
                       n, ctx->pos, ctx->n_ctx);
    ZQ_TRY(check_ids(ctx->model, ids, n));
    ZQ_TRY(zq_kv_reserve(&ctx->kv, ctx->pos + n));

    const size_t vocab = (size_t)ctx->model->hp.n_vocab;
    for (int done = 0; done < n;) {
        const int chunk = n - done < ctx->ws.max_rows ? n - done : ctx->ws.max_rows;
        for (int i = 0; i < chunk; i++) {
            const int row = done + i;
            ctx->rows_pos[i] = ctx->pos + i;
            ctx->rows_kv[i] = &ctx->kv;
            ctx->rows_logits[i] = all_logits ? all_logits + (size_t)row * vocab : NULL;
        }
        if (done + chunk == n && !all_logits)
            ctx->rows_logits[chunk - 1] = ctx->logits;
        zq_forward(ctx->model, &ctx->ws, ctx->rows_kv, ctx->rows_pos, ids + done, chunk,
                   ctx->rows_logits, ctx->n_threads, &ctx->hooks);
        ctx->pos += chunk;
        done += chunk;
    }
    if (all_logits)
        memcpy(ctx->logits, all_logits + (size_t)(n - 1) * vocab, vocab * sizeof(float));
    return ZQ_OK;
}

zq_status zq_decode_batch(zq_context *const *ctxs, const int32_t *ids, int n)
{
    if (n <= 0 || !ctxs || !ids)
        return zq_fail(ZQ_ERR_INVALID_ARG, "no tokens to decode");
    zq_context *lead = ctxs[0];
    for (int i = 0; i < n; i++) {
        if (ctxs[i]->model != lead->model)
            return zq_fail(ZQ_ERR_INVALID_ARG, "batched contexts use different models");
        if (ctxs[i]->pos + 1 > ctxs[i]->n_ctx)
            return zq_fail(ZQ_ERR_CONTEXT_FULL, "sequence %d is full (%d positions)", i,
                           ctxs[i]->n_ctx);
        for (int j = 0; j < i; j++)
            if (ctxs[j] == ctxs[i])
                return zq_fail(ZQ_ERR_INVALID_ARG, "context %d appears twice in the batch", i);
    }
    ZQ_TRY(check_ids(lead->model, ids, n));
    for (int i = 0; i < n; i++)
        ZQ_TRY(zq_kv_reserve(&ctxs[i]->kv, ctxs[i]->pos + 1));

    for (int done = 0; done < n;) {
        const int chunk = n - done < lead->ws.max_rows ? n - done : lead->ws.max_rows;
        for (int i = 0; i < chunk; i++) {
            zq_context *c = ctxs[done + i];
            lead->rows_pos[i] = c->pos;
            lead->rows_kv[i] = &c->kv;
            lead->rows_logits[i] = c->logits;
        }
        zq_forward(lead->model, &lead->ws, lead->rows_kv, lead->rows_pos, ids + done, chunk,
                   lead->rows_logits, lead->n_threads, NULL);
        done += chunk;
    }
    for (int i = 0; i < n; i++)
        ctxs[i]->pos++;
    return ZQ_OK;
}

const float *zq_context_logits(const zq_context *ctx)
{
    return ctx->logits;
}

int zq_context_pos(const zq_context *ctx)
{
    return ctx->pos;
}

int zq_context_size(const zq_context *ctx)
{
    return ctx->n_ctx;
}

zq_kv_type zq_context_kv_type(const zq_context *ctx)
{
    return ctx->kv.type;
}

zq_kv_type zq_model_kv_type(const zq_model *model, zq_kv_type requested)
{
    return zq_kv_resolve(requested, model->type);
}

size_t zq_model_kv_bytes_per_position(const zq_model *model, zq_kv_type type)
{
    const zq_kv_type t = zq_kv_resolve(type, model->type);
    const zq_hparams *hp = &model->hp;
    const size_t row = (size_t)hp->n_embd * zq_kv_elem_size(t) + zq_kv_scale_size(t, hp->n_head);
    return 2 * (size_t)hp->n_layer * row;
}

const char *zq_kv_type_name(zq_kv_type type)
{
    switch (type) {
    case ZQ_KV_AUTO:
        return "auto";
    case ZQ_KV_F32:
        return "f32";
    case ZQ_KV_F16:
        return "f16";
    case ZQ_KV_Q8:
        return "int8";
    }
    return "unknown";
}

zq_status zq_kv_type_parse(const char *name, zq_kv_type *out)
{
    static const zq_kv_type types[] = {ZQ_KV_AUTO, ZQ_KV_F32, ZQ_KV_F16, ZQ_KV_Q8};
    for (size_t i = 0; name && out && i < sizeof types / sizeof types[0]; i++) {
        if (strcmp(name, zq_kv_type_name(types[i])) == 0) {
            *out = types[i];
            return ZQ_OK;
        }
    }
    return zq_fail(ZQ_ERR_INVALID_ARG,
                   "unknown KV cache type '%s' (expected auto, f32, f16 or int8)",
                   name ? name : "(null)");
}

void zq_context_truncate(zq_context *ctx, int pos)
{
    if (pos >= 0 && pos < ctx->pos)
        ctx->pos = pos;
}

void zq_context_set_threads(zq_context *ctx, int n_threads)
{
    const int n = zq_resolve_threads(n_threads);
    /* The attention score buffers were sized for the thread count at creation. */
    ctx->n_threads = n < ctx->ws.score_threads ? n : ctx->ws.score_threads;
}

void zq_context_set_layer_callback(zq_context *ctx, zq_layer_fn fn, void *user)
{
    ctx->hooks.layer_fn = fn;
    ctx->hooks.layer_user = user;
}
