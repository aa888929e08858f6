/*
 * forward.c - the GPT-2 forward pass over a batch of token rows with per-sequence KV caches.
 *
 * Per layer (pre-LayerNorm GPT-2):
 *   h = LN1(x); qkv = h W_attn^T + b; append k, v to each row's cache;
 *   att = softmax(q k^T / sqrt(d_head)) v over the row's causal window;
 *   x += att W_proj^T + b; h = LN2(x); x += act(h W_fc^T + b) W_fc2^T + b.
 * Then LN_f and the output head for the rows that want logits. LayerNorm, softmax, the
 * activation and the residual stream stay in f32; the matrix products go through zq_linear, so
 * this file does not depend on the weight type.
 */
#include "internal.h"
#include "model.h"

#include <math.h>
#include <string.h>

#ifdef ZQ_USE_OPENMP
#include <omp.h>
#endif

static void layer_norm(const float *x, const float *g, const float *b, int d, float eps,
                       float *out)
{
    /* Two passes in double: the variance of a residual stream with outlier channels loses
     * precision in float when computed as E[x^2] - E[x]^2. */
    double mean = 0;
    for (int i = 0; i < d; i++)
        mean += x[i];
    mean /= d;
    double var = 0;
    for (int i = 0; i < d; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= d;
    const float inv = (float)(1.0 / sqrt(var + eps));
    const float mu = (float)mean;
    for (int i = 0; i < d; i++)
        out[i] = (x[i] - mu) * inv * g[i] + b[i];
}

static void layer_norm_rows(const float *x, const float *g, const float *b, int n, int d,
                            float eps, float *out, int n_threads)
{
#pragma omp parallel for num_threads(n_threads) if (n > 1)
    for (int r = 0; r < n; r++)
        layer_norm(x + (size_t)r * d, g, b, d, eps, out + (size_t)r * d);
}

static float activate(zq_activation act, float x)
{
    switch (act) {
    case ZQ_ACT_GELU_TANH: {
        const float c = 0.7978845608028654f; /* sqrt(2 / pi) */
        return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
    }
    case ZQ_ACT_GELU_ERF:
        return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case ZQ_ACT_RELU:
        return x > 0 ? x : 0;
    }
    return x;
}

static void activate_rows(zq_activation act, float *x, size_t count, int n_threads)
{
#pragma omp parallel for num_threads(n_threads) if (count > 4096)
    for (size_t i = 0; i < count; i++)
        x[i] = activate(act, x[i]);
}

static void add_rows(float *x, const float *y, size_t count)
{
    for (size_t i = 0; i < count; i++)
        x[i] += y[i];
}

/* x[r] = wte[ids[r]] + wpe[pos[r]], dequantizing the embedding row. */
static void embed(const zq_model *m, const int32_t *ids, const int *pos, int n, float *x)
{
    const int d = m->hp.n_embd;
    const zq_weight *w = &m->wte;
    for (int r = 0; r < n; r++) {
        float *row = x + (size_t)r * d;
        const size_t base = (size_t)ids[r] * d;
        if (w->type == ZQ_TYPE_F32) {
            memcpy(row, (const float *)w->data + base, (size_t)d * sizeof(float));
        } else if (w->type == ZQ_TYPE_F16) {
            const uint16_t *src = (const uint16_t *)w->data + base;
            for (int i = 0; i < d; i++)
                row[i] = zq_f16_to_f32(src[i]);
        } else {
            const int8_t *src = (const int8_t *)w->data + base;
            const int groups = w->group ? d / w->group : 1;
            const int glen = w->group ? w->group : d;
            const float *scales = w->scales + (size_t)ids[r] * groups;
            for (int i = 0; i < d; i++)
                row[i] = (float)src[i] * scales[i / glen];
        }
        const float *p = m->wpe + (size_t)pos[r] * d;
        for (int i = 0; i < d; i++)
            row[i] += p[i];
    }
}

/* Copies each row's k and v (from qkv) into its cache at its position. */
static void store_kv(zq_kv *const *kvs, const int *pos, const float *qkv, int n, int layer,
                     int d)
{
    for (int r = 0; r < n; r++) {
        const float *src = qkv + (size_t)r * 3 * d;
        memcpy(kvs[r]->k[layer] + (size_t)pos[r] * d, src + d, (size_t)d * sizeof(float));
        memcpy(kvs[r]->v[layer] + (size_t)pos[r] * d, src + 2 * d, (size_t)d * sizeof(float));
    }
}

/* Causal attention of one row and head over positions 0..pos of its cache. */
static void attend_one(const zq_kernels *k, const float *q, const zq_kv *kv, int layer, int pos,
                       int head, int hd, int d, float *scores, float *out)
{
    const float scale = 1.0f / sqrtf((float)hd);
    const float *keys = kv->k[layer] + (size_t)head * hd;
    const float *values = kv->v[layer] + (size_t)head * hd;

    float max = -INFINITY;
    for (int t = 0; t <= pos; t++) {
        scores[t] = k->dot_f32(q, keys + (size_t)t * d, hd) * scale;
        max = scores[t] > max ? scores[t] : max;
    }
    float sum = 0;
    for (int t = 0; t <= pos; t++) {
        scores[t] = expf(scores[t] - max);
        sum += scores[t];
    }

    memset(out, 0, (size_t)hd * sizeof(float));
    const float inv = 1.0f / sum;
    for (int t = 0; t <= pos; t++)
        k->axpy_f32(scores[t] * inv, values + (size_t)t * d, out, hd);
}

static void attention(const zq_model *m, zq_workspace *ws, zq_kv *const *kvs, const int *pos,
                      int n, int layer, int n_threads)
{
    const int d = m->hp.n_embd;
    const int heads = m->hp.n_head;
    const int hd = d / heads;
    const int n_ctx = m->hp.n_ctx;
    const int work = n * heads;
    if (n_threads > ws->score_threads)
        n_threads = ws->score_threads;

#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (work > 1)
    for (int i = 0; i < work; i++) {
        const int r = i / heads;
        const int h = i % heads;
#ifdef ZQ_USE_OPENMP
        float *scores = ws->scores + (size_t)omp_get_thread_num() * n_ctx;
#else
        float *scores = ws->scores;
#endif
        const float *q = ws->qkv + (size_t)r * 3 * d + (size_t)h * hd;
        float *out = ws->att + (size_t)r * d + (size_t)h * hd;
        attend_one(m->kernels, q, kvs[r], layer, pos[r], h, hd, d, scores, out);
    }
}

static void block(const zq_model *m, zq_workspace *ws, zq_kv *const *kvs, const int *pos, int n,
                  int layer, int n_threads, const zq_forward_hooks *hooks)
{
    const zq_norm_fn norm_fn = hooks ? hooks->norm_fn : NULL;
    const zq_layer *L = &m->layers[layer];
    const zq_kernels *k = m->kernels;
    const int d = m->hp.n_embd;
    const float eps = m->hp.ln_eps;

    /* attention: x += proj(attn(LN1(x))) */
    layer_norm_rows(ws->x, L->ln1_g, L->ln1_b, n, d, eps, ws->h, n_threads);
    if (norm_fn)
        norm_fn(layer, 0, ws->h, n, d, hooks->norm_user);
    zq_linear(k, &L->attn, L->attn_b, ws->h, n, ws->qkv, &ws->lin, n_threads);
    store_kv(kvs, pos, ws->qkv, n, layer, d);
    attention(m, ws, kvs, pos, n, layer, n_threads);
    zq_linear(k, &L->proj, L->proj_b, ws->att, n, ws->h, &ws->lin, n_threads);
    add_rows(ws->x, ws->h, (size_t)n * d);

    /* MLP: x += fc2(act(fc(LN2(x)))) */
    layer_norm_rows(ws->x, L->ln2_g, L->ln2_b, n, d, eps, ws->h, n_threads);
    if (norm_fn)
        norm_fn(layer, 1, ws->h, n, d, hooks->norm_user);
    zq_linear(k, &L->fc, L->fc_b, ws->h, n, ws->mlp, &ws->lin, n_threads);
    activate_rows(m->hp.activation, ws->mlp, (size_t)n * m->hp.n_inner, n_threads);
    zq_linear(k, &L->fc2, L->fc2_b, ws->mlp, n, ws->h, &ws->lin, n_threads);
    add_rows(ws->x, ws->h, (size_t)n * d);
}

/* Runs the output head for the rows that want logits, ZQ_HEAD_ROWS rows per product. */
static void output_head(const zq_model *m, zq_workspace *ws, float *const *logits, int n,
                        int n_threads)
{
    const int d = m->hp.n_embd;
    const size_t vocab = (size_t)m->hp.n_vocab;
    int rows[ZQ_HEAD_ROWS];
    int count = 0;
    for (int r = 0; r <= n; r++) {
        if (r < n && logits[r]) {
            memcpy(ws->head_in + (size_t)count * d, ws->h + (size_t)r * d, d * sizeof(float));
            rows[count++] = r;
        }
        if (count == ZQ_HEAD_ROWS || (r == n && count > 0)) {
            zq_linear(m->kernels, &m->head, NULL, ws->head_in, count, ws->head_out, &ws->lin,
                      n_threads);
            for (int i = 0; i < count; i++)
                memcpy(logits[rows[i]], ws->head_out + i * vocab, vocab * sizeof(float));
            count = 0;
        }
    }
}

void zq_forward(const zq_model *m, zq_workspace *ws, zq_kv *const *kvs, const int *pos,
                const int32_t *ids, int n, float *const *logits, int n_threads,
                const zq_forward_hooks *hooks)
{
    const int d = m->hp.n_embd;
    const bool hooked = hooks && hooks->layer_fn;

    embed(m, ids, pos, n, ws->x);
    for (int l = 0; l < m->hp.n_layer; l++) {
        block(m, ws, kvs, pos, n, l, n_threads, hooks);
        if (hooked)
            hooks->layer_fn(l, ws->x, n, d, hooks->layer_user);
    }
    layer_norm_rows(ws->x, m->lnf_g, m->lnf_b, n, d, m->hp.ln_eps, ws->h, n_threads);
    if (hooked)
        hooks->layer_fn(m->hp.n_layer, ws->h, n, d, hooks->layer_user);
    output_head(m, ws, logits, n, n_threads);
}
