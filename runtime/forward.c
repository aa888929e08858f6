/*
 * forward.c - the GPT-2 forward pass over a batch of token rows with per-sequence KV caches.
 *
 * Per layer (pre-LayerNorm GPT-2):
 *   h = LN1(x); qkv = h W_attn^T + b; append k, v to each row's cache;
 *   att = softmax(q k^T / sqrt(d_head)) v over the row's causal window;
 *   x += att W_proj^T + b; h = LN2(x); x += act(h W_fc^T + b) W_fc2^T + b.
 * Then LN_f and the output head for the rows that want logits. LayerNorm, softmax, the
 * activation and the residual stream stay in f32; the matrix products go through zq_linear, so
 * this file does not depend on the weight type. Softmax and GELU use exp_fast, an exp that
 * vectorizes; every result is computed in an order that does not depend on the thread count.
 * A single decoded token on several threads runs the whole pass on one OpenMP team
 * (forward_one_team). Everything else opens a team per step.
 */
#include "internal.h"
#include "linear_dnnl.h"
#include "model.h"

#include <math.h>
#include <string.h>

#ifdef ZQ_USE_OPENMP
#include <omp.h>
#endif

/* Returns the sum over i < d of (x[i] - shift)^square, in double, in four running sums that
 * are added at the end: four independent chains of additions run about three times faster than
 * one, and the order stays fixed. */
static inline __attribute__((always_inline)) double sum4(const float *x, int d, double shift,
                                                         bool square)
{
    double s[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= d; i += 4)
        for (int l = 0; l < 4; l++) {
            const double v = x[i + l] - shift;
            s[l] += square ? v * v : v;
        }
    for (; i < d; i++) {
        const double v = x[i] - shift;
        s[i % 4] += square ? v * v : v;
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

VECTOR_CLONES static void layer_norm(const float *x, const float *g, const float *b, int d,
                                     float eps, float *out)
{
    /* Two passes in double: the variance of a residual stream with outlier channels loses
     * precision in float when computed as E[x^2] - E[x]^2. */
    const double mean = sum4(x, d, 0, false) / d;
    const double var = sum4(x, d, mean, true) / d;
    const float inv = (float)(1.0 / sqrt(var + eps));
    const float mu = (float)mean;
    SIMD_LOOP
    for (int i = 0; i < d; i++)
        out[i] = (x[i] - mu) * inv * g[i] + b[i];
}

static void layer_norm_rows(const float *x, const float *g, const float *b, int n, int d,
                            float eps, float *out, int n_threads)
{
    if (n == 1) {
        /* Even a parallel region that its if clause makes serial costs microseconds (about
         * 1 us per call measured here, 13 calls per decoded token of gpt2-distil). */
        layer_norm(x, g, b, d, eps, out);
        return;
    }
#pragma omp parallel for num_threads(n_threads)
    for (int r = 0; r < n; r++)
        layer_norm(x + (size_t)r * d, g, b, d, eps, out + (size_t)r * d);
}

/* Bit patterns of -87.3f and 88.3f, the range exp_fast clamps to. */
#define EXP_MIN_BITS ((int32_t)0xc2ae999au)
#define EXP_MAX_BITS ((int32_t)0x42b0999a)

/* Returns exp(x) using only arithmetic that vectorizes (no libm call): x = n ln2 + r with
 * |r| <= ln2 / 2, exp(r) from the degree-6 polynomial of Cephes' expf (error about 1 ulp), and
 * 2^n written into the exponent bits. x is first clamped to [-87.3, 88.3] so that the result
 * is a normal float; NaN and infinities become one of the two limits. */
static inline float exp_fast(float x)
{
    /* The clamp compares bit patterns as int32: float compares would stop GCC from vectorizing
     * (they may trap). A float's sign-magnitude bits order like signed integers for x >= 0 and
     * in reverse for x < 0, so one signed minimum clamps either sign. */
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    const int32_t limit = bits < 0 ? EXP_MIN_BITS : EXP_MAX_BITS;
    bits = bits < limit ? bits : limit;
    memcpy(&x, &bits, sizeof x);

    /* Adding and subtracting 1.5 * 2^23 rounds to the nearest integer. */
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f; /* ln2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float e = p * r * r + r + 1.0f;
    const int32_t scale_bits = ((int32_t)n + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return e * scale;
}

/* GELU with the tanh approximation, written as x * sigmoid(2u) because
 * 0.5 * (1 + tanh(u)) = 1 / (1 + exp(-2u)); NaN in x stays NaN. */
static inline float gelu_tanh(float x)
{
    const float c = 0.7978845608028654f; /* sqrt(2 / pi) */
    const float u = c * (x + 0.044715f * x * x * x);
    return x / (1.0f + exp_fast(-2.0f * u));
}

VECTOR_CLONES static void activate_span(zq_activation act, float *x, size_t count)
{
    switch (act) {
    case ZQ_ACT_GELU_TANH:
        SIMD_LOOP
        for (size_t i = 0; i < count; i++)
            x[i] = gelu_tanh(x[i]);
        return;
    case ZQ_ACT_GELU_ERF:
        for (size_t i = 0; i < count; i++)
            x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
        return;
    case ZQ_ACT_RELU:
        for (size_t i = 0; i < count; i++)
            x[i] = x[i] > 0 ? x[i] : 0;
        return;
    }
}

/* Adds features [n0, n1) of every row of y [M][ld] to the residual stream x [M][ld] (user):
 * the post-op of the attention and MLP output products. */
static void add_to_rows(float *y, size_t ld, int M, int n0, int n1, void *user)
{
    float *x = user;
    for (int r = 0; r < M; r++)
        for (int i = n0; i < n1; i++)
            x[(size_t)r * ld + i] += y[(size_t)r * ld + i];
}

/* Applies the activation *(zq_activation *)user to features [n0, n1) of every row of
 * y [M][ld]: the post-op of the MLP's first product. */
static void activate_features(float *y, size_t ld, int M, int n0, int n1, void *user)
{
    const zq_activation act = *(const zq_activation *)user;
    for (int r = 0; r < M; r++)
        activate_span(act, y + (size_t)r * ld + n0, (size_t)(n1 - n0));
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

/* Quantizes x [heads][hd] one head at a time into q, with one scale per head. */
static void quantize_heads(const zq_kernels *k, const float *x, int heads, int hd, int8_t *q,
                           float *scales)
{
    for (int h = 0; h < heads; h++)
        k->quantize_row_s8(x + (size_t)h * hd, hd, q + (size_t)h * hd, &scales[h]);
}

/* Copies each row's k and v (from qkv) into its cache at its position, rounding them to half
 * for an f16 cache and quantizing them per head for an int8 one. */
static void store_kv(const zq_kernels *k, zq_kv *const *kvs, const int *pos, const float *qkv,
                     int n, int layer, int d)
{
    for (int r = 0; r < n; r++) {
        const zq_kv *kv = kvs[r];
        const float *src = qkv + (size_t)r * 3 * d;
        const size_t at = (size_t)pos[r] * d;
        if (kv->type == ZQ_KV_Q8) {
            const int heads = kv->n_head, hd = d / heads;
            const size_t s = (size_t)pos[r] * heads;
            quantize_heads(k, src + d, heads, hd, (int8_t *)kv->k[layer] + at, kv->ks[layer] + s);
            quantize_heads(k, src + 2 * d, heads, hd, (int8_t *)kv->v[layer] + at,
                           kv->vs[layer] + s);
        } else if (kv->type == ZQ_KV_F16) {
            k->f32_to_f16(src + d, (uint16_t *)kv->k[layer] + at, (size_t)d);
            k->f32_to_f16(src + 2 * d, (uint16_t *)kv->v[layer] + at, (size_t)d);
        } else {
            memcpy((float *)kv->k[layer] + at, src + d, (size_t)d * sizeof(float));
            memcpy((float *)kv->v[layer] + at, src + 2 * d, (size_t)d * sizeof(float));
        }
    }
}

/* Returns the scratch of the calling thread for f32 copies of f16 or int8 cache rows and the
 * requantized queries of an int8 cache (zq_kv_row_scratch). */
static float *thread_kv_rows(const zq_model *m, const zq_workspace *ws)
{
#ifdef ZQ_USE_OPENMP
    return ws->kv_rows + (size_t)omp_get_thread_num() * zq_kv_row_scratch(&m->hp);
#else
    (void)m;
    return ws->kv_rows;
#endif
}

/* Sets out [hd] to the sum over t < T of p[t] * values[t * d]. Four positions are added per
 * pass, so out is read and written once per four; the order of the additions is fixed. */
VECTOR_CLONES static void weighted_sum(const float *p, const float *values, int T, int hd, int d, float *out)
{
    memset(out, 0, (size_t)hd * sizeof(float));
    int t = 0;
    for (; t + 4 <= T; t += 4) {
        const float *v0 = values + (size_t)t * d, *v1 = v0 + d, *v2 = v1 + d, *v3 = v2 + d;
        const float p0 = p[t], p1 = p[t + 1], p2 = p[t + 2], p3 = p[t + 3];
        SIMD_LOOP
        for (int j = 0; j < hd; j++)
            out[j] += (p0 * v0[j] + p1 * v1[j]) + (p2 * v2[j] + p3 * v3[j]);
    }
    for (; t < T; t++) {
        const float *v = values + (size_t)t * d;
        const float pt = p[t];
        SIMD_LOOP
        for (int j = 0; j < hd; j++)
            out[j] += pt * v[j];
    }
}

/* Returns the largest of x[0..n), or -INFINITY for n = 0. It keeps eight running maxima, which
 * the compiler turns into one vector, because a single running maximum is a chain of n
 * dependent compares. The largest value is the same in any order. */
static inline __attribute__((always_inline)) float max_of(const float *x, int n)
{
    float lanes[8];
    for (int j = 0; j < 8; j++)
        lanes[j] = -INFINITY;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            lanes[j] = x[i + j] > lanes[j] ? x[i + j] : lanes[j];
    float m = -INFINITY;
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    for (int j = 0; j < 8; j++)
        m = lanes[j] > m ? lanes[j] : m;
    return m;
}

/* Turns the scores [n] of one chunk of positions into exp((score - max) * scale) in place and
 * sets *max and *sum to the chunk's largest score and the sum of the results. */
VECTOR_CLONES static void softmax_chunk(float *scores, int n, float scale, float *max, float *sum)
{
    const float m = max_of(scores, n);
    /* The results are summed in the same pass, in eight running sums added as a fixed tree,
     * so that the order does not depend on the alignment of scores as a vectorized reduction
     * would. Summing the stored results in a second pass took 40% of the time. */
    float lanes[8] = {0};
    int t = 0;
    for (; t + 8 <= n; t += 8)
        for (int j = 0; j < 8; j++) {
            const float e = exp_fast((scores[t + j] - m) * scale);
            scores[t + j] = e;
            lanes[j] += e;
        }
    for (; t < n; t++) {
        const float e = exp_fast((scores[t] - m) * scale);
        scores[t] = e;
        lanes[t % 8] += e;
    }
    *max = m;
    *sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
           ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

/* Turns row scores [T] into attention weights over the causal window [0, n) in place. */
VECTOR_CLONES static void softmax_window(float *scores, int n, float scale)
{
    float max, sum;
    softmax_chunk(scores, n, scale, &max, &sum);
    const float inv = 1.0f / sum;
    SIMD_LOOP
    for (int t = 0; t < n; t++)
        scores[t] *= inv;
}

/* Sets out [n] to q [n] times scale. */
VECTOR_CLONES static void dequantize(const int8_t *q, float scale, int n, float *out)
{
    SIMD_LOOP
    for (int j = 0; j < n; j++)
        out[j] = (float)q[j] * scale;
}

/* Converts the head's slices of cache rows [0, T) of an f16 or int8 cache to f32: keys into
 * kbuf [T][hd], values into vbuf [T][hd]. */
static void head_rows_to_f32(const zq_kernels *k, const zq_kv *kv, int layer, int head, int hd,
                             int T, float *kbuf, float *vbuf)
{
    const size_t d = (size_t)kv->n_embd, first = (size_t)head * hd;
    if (kv->type == ZQ_KV_F16) {
        const uint16_t *k16 = (const uint16_t *)kv->k[layer] + first;
        const uint16_t *v16 = (const uint16_t *)kv->v[layer] + first;
        for (int t = 0; t < T; t++) {
            k->f16_to_f32(k16 + (size_t)t * d, kbuf + (size_t)t * hd, (size_t)hd);
            k->f16_to_f32(v16 + (size_t)t * d, vbuf + (size_t)t * hd, (size_t)hd);
        }
        return;
    }
    const int8_t *k8 = (const int8_t *)kv->k[layer] + first;
    const int8_t *v8 = (const int8_t *)kv->v[layer] + first;
    const size_t heads = (size_t)kv->n_head;
    for (int t = 0; t < T; t++) {
        const size_t s = (size_t)t * heads + head;
        dequantize(k8 + (size_t)t * d, kv->ks[layer][s], hd, kbuf + (size_t)t * hd);
        dequantize(v8 + (size_t)t * d, kv->vs[layer][s], hd, vbuf + (size_t)t * hd);
    }
}

/* Sets out [rows][hd] to the rows of q [rows][ldq] quantized and scaled back, as the decode
 * path quantizes the query of an int8 cache, so that both paths score the same query. q8 is
 * scratch for hd values. */
static void requantize_queries(const zq_kernels *k, const float *q, size_t ldq, int rows, int hd,
                               float *out, int8_t *q8)
{
    float scale;
    for (int i = 0; i < rows; i++) {
        k->quantize_row_s8(q + (size_t)i * ldq, hd, q8, &scale);
        dequantize(q8, scale, hd, out + (size_t)i * hd);
    }
}

/* Causal attention of one head for rows of one sequence at consecutive positions pos0,
 * pos0 + 1, ... The scores of all rows are one rows x (pos0 + rows) product with the head's
 * keys (rows d elements apart in the cache), of which row i uses the first pos0 + i + 1. An
 * f16 or int8 cache is first converted into buf [2][pos0 + rows][hd] (then the int8 path's
 * queries [rows][hd]), so that every cache type runs the same arithmetic as the decode path
 * (attend_one) afterwards, within float rounding. */
static void attend_rows(const zq_kernels *k, const float *q, size_t ldq, const zq_kv *kv, int layer,
                        int pos0, int rows, int head, int hd, float *scores, float *buf, float *out,
                        size_t ldo)
{
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t d = (size_t)kv->n_embd, first = (size_t)head * hd;
    const int T = pos0 + rows;
    const float *keys, *values;
    size_t ld = d;

    if (kv->type == ZQ_KV_F32) {
        keys = (const float *)kv->k[layer] + first;
        values = (const float *)kv->v[layer] + first;
    } else {
        float *kbuf = buf, *vbuf = buf + (size_t)T * hd;
        head_rows_to_f32(k, kv, layer, head, hd, T, kbuf, vbuf);
        keys = kbuf;
        values = vbuf;
        ld = (size_t)hd;
        if (kv->type == ZQ_KV_Q8) {
            float *qbuf = buf + (size_t)2 * T * hd;
            requantize_queries(k, q, ldq, rows, hd, qbuf, (int8_t *)(qbuf + (size_t)rows * hd));
            q = qbuf;
            ldq = (size_t)hd;
        }
    }
    k->gemm_f32(rows, T, hd, q, ldq, keys, ld, scores, (size_t)T);
    for (int i = 0; i < rows; i++) {
        float *row = scores + (size_t)i * T;
        softmax_window(row, pos0 + i + 1, scale);
        weighted_sum(row, values, pos0 + i + 1, hd, (int)ld, out + (size_t)i * ldo);
    }
}

/* Sets scores[h * T + t] to q_h . key_h for every head h, key being cache row t. The products
 * are summed in eight lanes and a fixed tree. */
VECTOR_CLONES static void score_position(const float *q, const float *key, int t, int heads, int hd,
                                         int T, float *scores)
{
    for (int h = 0; h < heads; h++) {
        float lanes[8] = {0};
        for (int j = 0; j + 8 <= hd; j += 8)
            for (int l = 0; l < 8; l++)
                lanes[l] += q[h * hd + j + l] * key[h * hd + j + l];
        for (int j = hd / 8 * 8; j < hd; j++)
            lanes[j % 8] += q[h * hd + j] * key[h * hd + j];
        scores[(size_t)h * T + t] = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                                    ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    }
}

/* Adds weight[h][t] * value_h to partial [d] for every head h, value being cache row t. */
VECTOR_CLONES static void weigh_position(const float *weights, const float *value, int t, int heads,
                                         int hd, int T, float *partial)
{
    for (int h = 0; h < heads; h++) {
        const float w = weights[(size_t)h * T + t];
        float *out = partial + h * hd;
        const float *v = value + h * hd;
        SIMD_LOOP
        for (int j = 0; j < hd; j++)
            out[j] += w * v[j];
    }
}

/* The query of the decoded token: f32, and for an int8 cache quantized per head. */
typedef struct {
    const float *f32;
    int8_t *q8;      /* written by single_query */
    float *q8_scale; /* written by single_query */
} query;

/* Sets weights[h * T + t] to the scores of cache rows t in [t0, t1) for every head. The f16
 * kernels sum in the order of score_position and weigh_position. */
static void score_chunk(const zq_kernels *k, const query *q, const zq_kv *kv, int layer,
                        int heads, int t0, int t1, int T, float *weights)
{
    const int d = kv->n_embd, hd = d / heads;
    const size_t at = (size_t)t0 * d;
    if (kv->type == ZQ_KV_Q8) {
        k->attn_scores_q8(q->q8, q->q8_scale, (const int8_t *)kv->k[layer] + at,
                          kv->ks[layer] + (size_t)t0 * heads, t1 - t0, heads, hd, weights + t0,
                          (size_t)T);
    } else if (kv->type == ZQ_KV_F16) {
        k->attn_scores_f16(q->f32, (const uint16_t *)kv->k[layer] + at, t1 - t0, heads, hd,
                           weights + t0, (size_t)T);
    } else {
        const float *keys = kv->k[layer];
        for (int t = t0; t < t1; t++)
            score_position(q->f32, keys + (size_t)t * d, t, heads, hd, T, weights);
    }
}

/* Adds to sum [d] the value rows t in [t0, t1) weighted by weights[h * T + t], every head. */
static void weigh_chunk(const zq_kernels *k, const float *weights, const zq_kv *kv, int layer,
                        int heads, int t0, int t1, int T, float *sum)
{
    const int d = kv->n_embd, hd = d / heads;
    const size_t at = (size_t)t0 * d;
    if (kv->type == ZQ_KV_Q8) {
        k->attn_values_q8(weights + t0, (size_t)T, (const int8_t *)kv->v[layer] + at,
                          kv->vs[layer] + (size_t)t0 * heads, t1 - t0, heads, hd, sum);
    } else if (kv->type == ZQ_KV_F16) {
        k->attn_values_f16(weights + t0, (size_t)T, (const uint16_t *)kv->v[layer] + at, t1 - t0,
                           heads, hd, sum);
    } else {
        const float *values = kv->v[layer];
        for (int t = t0; t < t1; t++)
            weigh_position(weights, values + (size_t)t * d, t, heads, hd, T, sum);
    }
}

/* The scratch of attend_one (see zq_single_attention_scratch): the scores [heads][T] at a row
 * stride of T, then per chunk of positions its partial output [d], and its largest score and
 * exp sum per head. */
typedef struct {
    float *scores;
    float *partial; /* [chunks][d] */
    float *max;     /* [chunks][heads] */
    float *sum;     /* [chunks][heads] */
} single_scratch;

/* Scores, exponentiates and weighs the cache rows of chunk c: partial[c] receives the sum of the
 * value rows weighted by exp((score - chunk max) * scale), unnormalized. */
static void attend_chunk(const zq_kernels *k, const query *q, const zq_kv *kv, int layer,
                         int heads, int c, int T, float scale, const single_scratch *s)
{
    const int d = kv->n_embd;
    const int t0 = c * ZQ_ATT_CHUNK;
    const int t1 = t0 + ZQ_ATT_CHUNK < T ? t0 + ZQ_ATT_CHUNK : T;
    score_chunk(k, q, kv, layer, heads, t0, t1, T, s->scores);
    for (int h = 0; h < heads; h++)
        softmax_chunk(s->scores + (size_t)h * T + t0, t1 - t0, scale,
                      &s->max[(size_t)c * heads + h], &s->sum[(size_t)c * heads + h]);
    float *partial = s->partial + (size_t)c * d;
    memset(partial, 0, (size_t)d * sizeof(float));
    weigh_chunk(k, s->scores, kv, layer, heads, t0, t1, T, partial);
}

/* Sets out [hd] for head h from the chunks' partial outputs: each chunk is rescaled from its own
 * max to the largest of all, and the sum is divided by the rescaled exp sums, chunk by chunk in
 * order. */
VECTOR_CLONES static void combine_chunks(const single_scratch *s, int chunks, int heads, int hd,
                                         int h, float scale, float *out)
{
    const size_t d = (size_t)heads * hd;
    float m = -INFINITY, total = 0;
    for (int c = 0; c < chunks; c++)
        m = s->max[(size_t)c * heads + h] > m ? s->max[(size_t)c * heads + h] : m;
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int c = 0; c < chunks; c++) {
        const float f = exp_fast((s->max[(size_t)c * heads + h] - m) * scale);
        const float *p = s->partial + c * d + (size_t)h * hd;
        total += f * s->sum[(size_t)c * heads + h];
        SIMD_LOOP
        for (int j = 0; j < hd; j++)
            out[j] += f * p[j];
    }
    const float inv = 1.0f / total;
    SIMD_LOOP
    for (int j = 0; j < hd; j++)
        out[j] *= inv;
}

/* Returns the attention scratch of the calling thread: zq_attention_scratch(hp, 1) floats. */
static float *thread_scores(const zq_model *m, const zq_workspace *ws)
{
#ifdef ZQ_USE_OPENMP
    return ws->scores + (size_t)omp_get_thread_num() * zq_attention_scratch(&m->hp, 1);
#else
    (void)m;
    return ws->scores;
#endif
}

/* Returns the first chunk of thread t of nt: the chunk boundary nearest to position
 * T * t / nt, or chunks for t = nt. */
static int chunk_boundary(int T, int chunks, int t, int nt)
{
    if (t >= nt)
        return chunks;
    const long long at = (long long)T * t / nt;
    const int c = (int)((at + ZQ_ATT_CHUNK / 2) / ZQ_ATT_CHUNK);
    return c < chunks ? c : chunks;
}

/* Sets [*c0, *c1) to the chunks of the calling thread: contiguous, so that each thread reads
 * one stretch of the cache, and cut where the positions split evenly. An even split of the
 * chunks gave the first thread a quarter more positions on average, because the last chunk is
 * partial. */
static void thread_chunks(int T, int chunks, int *c0, int *c1)
{
#ifdef ZQ_USE_OPENMP
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const int t = 0, nt = 1;
#endif
    *c0 = chunk_boundary(T, chunks, t, nt);
    *c1 = chunk_boundary(T, chunks, t + 1, nt);
}

/* The attention of one row over positions 0..T-1 of its cache, all heads at once (decode). */
typedef struct {
    single_scratch s;
    query q;
    int T, chunks, heads, hd;
    float scale;
} single_attention;

/* Lays out the attention of the row at pos with query q [n_embd] over scratch,
 * zq_single_attention_scratch() floats. */
static single_attention single_setup(const zq_model *m, int pos, const float *q, float *scratch)
{
    const int d = m->hp.n_embd;
    single_attention a = {.T = pos + 1, .heads = m->hp.n_head};
    a.hd = d / a.heads;
    a.scale = 1.0f / sqrtf((float)a.hd);
    a.chunks = (a.T + ZQ_ATT_CHUNK - 1) / ZQ_ATT_CHUNK;
    const size_t max_chunks = ((size_t)m->hp.n_ctx + ZQ_ATT_CHUNK - 1) / ZQ_ATT_CHUNK;
    a.s.scores = scratch;
    a.s.partial = scratch + (size_t)a.heads * m->hp.n_ctx;
    a.s.max = a.s.partial + max_chunks * d;
    a.s.sum = a.s.max + max_chunks * a.heads;
    float *q8_scale = a.s.sum + max_chunks * a.heads;
    a.q = (query){q, (int8_t *)(q8_scale + a.heads), q8_scale};
    return a;
}

/* Quantizes the query per head into the scratch, for an int8 cache. */
static void single_query(const zq_kernels *k, const zq_kv *kv, const single_attention *a)
{
    if (kv->type == ZQ_KV_Q8)
        quantize_heads(k, a->q.f32, a->heads, a->hd, a->q.q8, a->q.q8_scale);
}

/* Computes the calling thread's chunks of positions, waits at a barrier, then combines its
 * share of the heads into out [n_embd] and waits at the barrier that ends the loop. Every
 * thread of the innermost team must call it. */
static void attend_one_team(const zq_kernels *k, const zq_kv *kv, int layer,
                            const single_attention *a, float *out)
{
    int c0, c1;
    thread_chunks(a->T, a->chunks, &c0, &c1);
    for (int c = c0; c < c1; c++)
        attend_chunk(k, &a->q, kv, layer, a->heads, c, a->T, a->scale, &a->s);
#pragma omp barrier
#pragma omp for schedule(static)
    for (int h = 0; h < a->heads; h++)
        combine_chunks(&a->s, a->chunks, a->heads, a->hd, h, a->scale, out + (size_t)h * a->hd);
}

/* Computes the attention of one row over positions 0..pos of its cache, all heads at once, so
 * every pass over the cache reads whole rows. Reading one head's 64-float slice of each row
 * instead ran at half the memory bandwidth. The positions are split into chunks of
 * ZQ_ATT_CHUNK. Each chunk is scored, exponentiated against its own max and weighed in one
 * pass, while its exponentials are still in cache. The chunks are then combined in order.
 * With n_threads > 1 the chunks, then the heads, are split over the threads, with one barrier
 * between the two. The result is the same on any thread count.
 * q is the row's query [n_embd], out its output, scratch zq_single_attention_scratch() floats. */
static void attend_one(const zq_model *m, const zq_kv *kv, int layer, int pos, const float *q,
                       float *out, float *scratch, int n_threads)
{
    const zq_kernels *k = m->kernels;
    const single_attention a = single_setup(m, pos, q, scratch);
    single_query(k, kv, &a);
    if (n_threads <= 1 || a.chunks <= 1) {
        /* No parallel region at all: even one that its if clause makes serial costs
         * microseconds. attend_one_team would not do here: called inside the team of a
         * prefill, its barrier would wait for threads that never reach it. */
        for (int c = 0; c < a.chunks; c++)
            attend_chunk(k, &a.q, kv, layer, a.heads, c, a.T, a.scale, &a.s);
        for (int h = 0; h < a.heads; h++)
            combine_chunks(&a.s, a.chunks, a.heads, a.hd, h, a.scale, out + (size_t)h * a.hd);
        return;
    }
#pragma omp parallel num_threads(n_threads)
    attend_one_team(k, kv, layer, &a, out);
}

/* Returns how many rows from r on (at most max) belong to one sequence at consecutive
 * positions. */
static int run_length(zq_kv *const *kvs, const int *pos, int r, int max)
{
    int len = 1;
    while (len < max && kvs[r + len] == kvs[r] && pos[r + len] == pos[r] + len)
        len++;
    return len;
}

/* Returns whether row r is the only row of its sequence at its position and the ones next to
 * it: a decoded token in a batch of several sequences. */
static bool single_row(zq_kv *const *kvs, const int *pos, int n, int r)
{
    const bool after = r > 0 && kvs[r - 1] == kvs[r] && pos[r - 1] + 1 == pos[r];
    const bool before = r + 1 < n && kvs[r + 1] == kvs[r] && pos[r + 1] == pos[r] + 1;
    return !after && !before;
}

/* Runs the prefill attention of head h for the rows of block b that are not single rows. */
static void attend_block(const zq_model *m, zq_workspace *ws, zq_kv *const *kvs, const int *pos,
                         int n, int layer, int b, int h)
{
    const int d = m->hp.n_embd;
    const int hd = d / m->hp.n_head;
    const int first = b * ZQ_ATT_ROWS;
    const int end = first + ZQ_ATT_ROWS < n ? first + ZQ_ATT_ROWS : n;
    float *scores = thread_scores(m, ws);
    float *buf = thread_kv_rows(m, ws);
    for (int r = first; r < end;) {
        const int rows = run_length(kvs, pos, r, end - r);
        if (rows > 1 || !single_row(kvs, pos, n, r)) {
            const float *q = ws->qkv + (size_t)r * 3 * d + (size_t)h * hd;
            float *out = ws->att + (size_t)r * d + (size_t)h * hd;
            attend_rows(m->kernels, q, (size_t)3 * d, kvs[r], layer, pos[r], rows, h, hd, scores,
                        buf, out, (size_t)d);
        }
        r += rows;
    }
}

/* Computes the attention of every row and head. A single row (decode) goes to attend_one on
 * all threads. Of more rows, each single row (a decoded token in a batch) is one work item
 * that runs attend_one, so that it gives the bits it would give alone. The rest are cut into
 * blocks of ZQ_ATT_ROWS, each (block, head) one work item. Either way the result does not
 * depend on the thread count. */
static void attention(const zq_model *m, zq_workspace *ws, zq_kv *const *kvs, const int *pos,
                      int n, int layer, int n_threads)
{
    const int d = m->hp.n_embd;
    const int heads = m->hp.n_head;
    const int work = (n + ZQ_ATT_ROWS - 1) / ZQ_ATT_ROWS * heads;
    if (n_threads > ws->score_threads)
        n_threads = ws->score_threads;
    if (n == 1) {
        attend_one(m, kvs[0], layer, pos[0], ws->qkv, ws->att, ws->scores, n_threads);
        return;
    }

#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
    {
#pragma omp for schedule(dynamic, 1) nowait
        for (int r = 0; r < n; r++)
            if (single_row(kvs, pos, n, r))
                attend_one(m, kvs[r], layer, pos[r], ws->qkv + (size_t)r * 3 * d,
                           ws->att + (size_t)r * d, thread_scores(m, ws), 1);
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < work; i++)
            attend_block(m, ws, kvs, pos, n, layer, i / heads, i % heads);
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
    store_kv(k, kvs, pos, ws->qkv, n, layer, d);
    attention(m, ws, kvs, pos, n, layer, n_threads);
    const zq_post_op residual = {add_to_rows, ws->x};
    zq_linear_post(k, &L->proj, L->proj_b, ws->att, n, ws->h, &ws->lin, n_threads, &residual);

    /* MLP: x += fc2(act(fc(LN2(x)))) */
    layer_norm_rows(ws->x, L->ln2_g, L->ln2_b, n, d, eps, ws->h, n_threads);
    if (norm_fn)
        norm_fn(layer, 1, ws->h, n, d, hooks->norm_user);
    zq_activation act = m->hp.activation;
    const zq_post_op activation = {activate_features, &act};
    zq_linear_post(k, &L->fc, L->fc_b, ws->h, n, ws->mlp, &ws->lin, n_threads, &activation);
    zq_linear_post(k, &L->fc2, L->fc2_b, ws->mlp, n, ws->h, &ws->lin, n_threads, &residual);
}

#ifdef ZQ_USE_OPENMP
/* Computes one layer of a decoded token; every thread of the team of forward_one_team calls it.
 * h is the thread's own layer-norm output and own its own quantized row. step numbers the
 * team's products, and the function returns the step after the layer's last product. */
static int block_team(const zq_model *m, zq_workspace *ws, zq_kv *kv, int pos, int layer,
                      zq_linear_team *team, int step, float *h, zq_linear_scratch *own)
{
    const zq_layer *L = &m->layers[layer];
    const zq_kernels *k = m->kernels;
    const int d = m->hp.n_embd;
    const float eps = m->hp.ln_eps;
    const bool last = layer + 1 == m->hp.n_layer;
    const int next_rows = last ? m->head.rows : m->layers[layer + 1].attn.rows;

    /* attention: x += proj(attn(LN1(x))) */
    layer_norm(ws->x, L->ln1_g, L->ln1_b, d, eps, h);
    zq_linear_team_run(team, step++, k, &L->attn, L->attn_b, h, ws->qkv, own, NULL, L->proj.rows);
    const single_attention a = single_setup(m, pos, ws->qkv, ws->scores);
#pragma omp single
    {
        store_kv(k, &kv, &pos, ws->qkv, 1, layer, d);
        single_query(k, kv, &a);
    }
    attend_one_team(k, kv, layer, &a, ws->att);
    const zq_post_op residual = {add_to_rows, ws->x};
    zq_linear_team_run(team, step++, k, &L->proj, L->proj_b, ws->att, ws->h, own, &residual,
                       L->fc.rows);

    /* MLP: x += fc2(act(fc(LN2(x)))) */
    layer_norm(ws->x, L->ln2_g, L->ln2_b, d, eps, h);
    zq_activation act = m->hp.activation;
    const zq_post_op activation = {activate_features, &act};
    zq_linear_team_run(team, step++, k, &L->fc, L->fc_b, h, ws->mlp, own, &activation, L->fc2.rows);
    zq_linear_team_run(team, step++, k, &L->fc2, L->fc2_b, ws->mlp, ws->h, own, &residual,
                       next_rows);
    return step;
}

/* Decodes the token already embedded in ws->x at position pos of kv on one team of n_threads
 * for the whole pass, and writes its logits when logits is not NULL. A layer needs seven
 * barriers this way against five parallel regions, and a region costs more: about 1.3 us until
 * the second thread starts and 0.6 us to join, against about 0.5 us per barrier (2-vCPU AMD
 * EPYC). Each thread computes the layer norms and quantizes each product's input itself,
 * which takes as long as one thread doing it while the others wait. The result is that of
 * the other path, bit for bit. */
static void forward_one_team(const zq_model *m, zq_workspace *ws, zq_kv *kv, int pos, float *logits,
                             int n_threads)
{
    const int d = m->hp.n_embd;
    zq_linear_team team;
    zq_linear_team_init(&team, 0, m->layers[0].attn.rows, n_threads);
#pragma omp parallel num_threads(n_threads)
    {
        const int t = omp_get_thread_num();
        float *h = ws->row_h + (size_t)t * d;
        zq_linear_scratch own = zq_linear_scratch_row(&ws->row_q, t);
        int step = 0;
        for (int l = 0; l < m->hp.n_layer; l++)
            step = block_team(m, ws, kv, pos, l, &team, step, h, &own);
        layer_norm(ws->x, m->lnf_g, m->lnf_b, d, m->hp.ln_eps, h);
        if (logits)
            zq_linear_team_run(&team, step, m->kernels, &m->head, NULL, h, logits, &own, NULL, 0);
    }
}

/* Returns the thread count of a one-team decode of n rows (forward_one_team), or 0 when the
 * pass takes the other path. That path handles more than one row, one thread, and hooks that
 * read the activations between steps. It also handles oneDNN set to compute one-row products
 * (ZQ_DNNL=1), because oneDNN brings its own threads. */
static int team_threads(const zq_model *m, const zq_workspace *ws, int n, int n_threads,
                        const zq_forward_hooks *hooks)
{
    if (n != 1 || (hooks && (hooks->layer_fn || hooks->norm_fn)))
        return 0;
    int threads = zq_resolve_threads(n_threads);
    threads = threads < ws->score_threads ? threads : ws->score_threads;
    threads = threads < ZQ_LINEAR_MAX_THREADS ? threads : ZQ_LINEAR_MAX_THREADS;
    if (threads <= 1 || zq_linear_uses_dnnl(&m->head, 1, threads))
        return 0;
    for (int l = 0; l < m->hp.n_layer; l++) {
        const zq_layer *L = &m->layers[l];
        const zq_weight *weights[] = {&L->attn, &L->proj, &L->fc, &L->fc2};
        for (int i = 0; i < 4; i++)
            if (zq_linear_uses_dnnl(weights[i], 1, threads))
                return 0;
    }
    return threads;
}
#endif

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
#ifdef ZQ_USE_OPENMP
    const int team = team_threads(m, ws, n, n_threads, hooks);
    if (team > 0) {
        forward_one_team(m, ws, kvs[0], pos[0], logits[0], team);
        return;
    }
#endif
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
