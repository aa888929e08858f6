/*
 * kernels_attn_avx2.c - attention of one token over an f16 or int8 KV cache, with AVX2, FMA
 * and F16C (built with -mavx2 -mfma -mf16c). The AVX-512 table uses these too: wider vectors
 * would change the order of the float additions, and every table must give the reference's
 * bits (see zq_kernels in kernels.h for the order each kernel follows).
 *
 * Decoding reads the whole cache once per token, in blocks of rows. The f16 scores kernel takes
 * each row's heads in groups of up to eight, and the int8 one each head of eight rows, so that
 * their accumulators stay in registers. The values kernels add four rows per pass into each
 * head's slice of the output, which stays in registers across the four. All prefetch the rows
 * ahead into L2.
 */
#include "kernels_impl.h"
#include "kernels_x86.h"

#include <immintrin.h>

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Rows ahead of the one being scored whose lines are requested into L2: about 10% faster
 * scoring of an f16 cache that comes from memory than with the hardware prefetcher alone. */
#define SCORES_PREFETCH_ROWS 4

/* The int8 scores kernel requests into L2 the lines of the block SCORES_Q8_PREFETCH_BLOCKS
 * blocks of SCORES_Q8_ROWS rows ahead. Scoring a cache that comes from memory took 4.2 ns per
 * row and head with one block ahead and 3.0 with three (one core of an AMD EPYC). */
#define SCORES_Q8_ROWS            8
#define SCORES_Q8_PREFETCH_BLOCKS 3

/* Rows ahead of the block being weighed whose lines are requested into L2. The four rows of a
 * block are four interleaved streams, which the hardware prefetcher follows poorly. Without
 * this prefetch, reading a cache from memory ran at half the speed of reading it row by row. */
#define VALUES_PREFETCH_ROWS 8

/* Requests the bytes [at, at + n) into L2. The address is an integer because the rows ahead
 * may lie past the cache, where no pointer may point. A prefetch of such an address does
 * nothing. */
static ALWAYS_INLINE void prefetch_l2(uintptr_t at, size_t n)
{
    for (size_t b = 0; b < n; b += 64)
        _mm_prefetch((const char *)(at + b), _MM_HINT_T1);
}

static ALWAYS_INLINE __m256 load_f16x8(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static ALWAYS_INLINE __m256 load_s8x8(const int8_t *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* Eight elements of a cache row as floats: halves, or int8 when q8 is set. */
static ALWAYS_INLINE __m256 load_row8(int q8, const void *row, size_t at)
{
    return q8 ? load_s8x8((const int8_t *)row + at) : load_f16x8((const uint16_t *)row + at);
}

/* Returns acc + w * x: fused for an int8 cache, rounded twice for f16 (see zq_kernels). */
static ALWAYS_INLINE __m256 weigh8(int q8, __m256 acc, __m256 w, __m256 x)
{
    return q8 ? _mm256_fmadd_ps(w, x, acc) : _mm256_add_ps(acc, _mm256_mul_ps(w, x));
}

/* ---- scores ------------------------------------------------------------------------------- */

/* f16 scores of heads [h0, h0 + ng) of one cache row. */
static ALWAYS_INLINE void score_heads_f16(int ng, const float *q, const uint16_t *key, int h0,
                                          int hd, float *scores, size_t ld)
{
    __m256 acc[8];
    for (int g = 0; g < 8; g++)
        acc[g] = _mm256_setzero_ps();
    for (int j = 0; j < hd; j += 8) {
#pragma GCC unroll 8
        for (int g = 0; g < ng; g++) {
            const size_t at = (size_t)(h0 + g) * hd + j;
            const __m256 k = load_f16x8(key + at);
            acc[g] = _mm256_add_ps(acc[g], _mm256_mul_ps(_mm256_loadu_ps(q + at), k));
        }
    }
    float sums[8];
    _mm256_storeu_ps(sums, hsum8_ps_ymm(acc));
    for (int g = 0; g < ng; g++)
        scores[(size_t)(h0 + g) * ld] = sums[g];
}

void zq_attn_scores_f16_avx2(const float *q, const uint16_t *keys, int n, int heads, int hd,
                             float *scores, size_t ld)
{
    if (hd % 8 != 0) {
        zq_attn_scores_f16_ref(q, keys, n, heads, hd, scores, ld);
        return;
    }
    const size_t d = (size_t)heads * hd;
    for (int i = 0; i < n; i++) {
        const uint16_t *key = keys + (size_t)i * d;
        prefetch_l2((uintptr_t)key + SCORES_PREFETCH_ROWS * d * sizeof *key, d * sizeof *key);
        int h = 0;
        for (; h + 8 <= heads; h += 8)
            score_heads_f16(8, q, key, h, hd, scores + i, ld);
        for (; h + 4 <= heads; h += 4)
            score_heads_f16(4, q, key, h, hd, scores + i, ld);
        for (; h < heads; h++)
            score_heads_f16(1, q, key, h, hd, scores + i, ld);
    }
}

/* int8 scores of heads [h0, h0 + ng) of one cache row, exact in int32 by the sign trick:
 * vpmaddubsw multiplies |k| (unsigned) by q carrying the sign of k, and with both in
 * [-127, 127] no int16 pair sum saturates. */
static ALWAYS_INLINE void score_heads_q8(int ng, const int8_t *q, const float *q_scale,
                                         const int8_t *key, const float *k_scale, int h0, int hd,
                                         float *scores, size_t ld)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[8];
    for (int g = 0; g < 8; g++)
        acc[g] = _mm256_setzero_si256();
    for (int j = 0; j < hd; j += 32) {
#pragma GCC unroll 8
        for (int g = 0; g < ng; g++) {
            const size_t at = (size_t)(h0 + g) * hd + j;
            const __m256i k = _mm256_loadu_si256((const __m256i *)(key + at));
            const __m256i qs = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(q + at)), k);
            const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(k), qs);
            acc[g] = _mm256_add_epi32(acc[g], _mm256_madd_epi16(pairs, ones));
        }
    }
    int32_t sums[8];
    _mm256_storeu_si256((__m256i *)sums, hsum8_epi32_ymm(acc));
    for (int g = 0; g < ng; g++)
        scores[(size_t)(h0 + g) * ld] = ((float)sums[g] * q_scale[h0 + g]) * k_scale[h0 + g];
}

/* Stores to scores[0..8) the int8 scores of head h for the SCORES_Q8_ROWS rows from key on.
 * The rows share each load of the head's query, and their sums come out of one horizontal sum
 * as a vector that is scaled and stored whole. From L1 this takes 1.7 ns per row and head on
 * one core of an AMD EPYC, against 2.5 ns for scoring the heads of one row together. */
static ALWAYS_INLINE void score_rows_q8(const int8_t *q, float q_scale, const int8_t *key,
                                        const float *k_scale, size_t d, int heads, int h, int hd,
                                        float *scores)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[SCORES_Q8_ROWS];
    for (int r = 0; r < SCORES_Q8_ROWS; r++)
        acc[r] = _mm256_setzero_si256();
    for (int j = 0; j < hd; j += 32) {
        const __m256i qv = _mm256_loadu_si256((const __m256i *)(q + (size_t)h * hd + j));
#pragma GCC unroll 8
        for (int r = 0; r < SCORES_Q8_ROWS; r++) {
            const int8_t *k = key + r * d + (size_t)h * hd + j;
            const __m256i kv = _mm256_loadu_si256((const __m256i *)k);
            const __m256i pairs =
                _mm256_maddubs_epi16(_mm256_abs_epi8(kv), _mm256_sign_epi8(qv, kv));
            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(pairs, ones));
        }
    }
    const __m256i rows =
        _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(heads));
    const __m256 ks = _mm256_i32gather_ps(k_scale + h, rows, 4);
    const __m256 sums = _mm256_cvtepi32_ps(hsum8_epi32_ymm(acc));
    _mm256_storeu_ps(scores, _mm256_mul_ps(_mm256_mul_ps(sums, _mm256_set1_ps(q_scale)), ks));
}

void zq_attn_scores_q8_avx2(const int8_t *q, const float *q_scale, const int8_t *keys,
                            const float *k_scales, int n, int heads, int hd, float *scores,
                            size_t ld)
{
    if (hd % 32 != 0) {
        zq_attn_scores_q8_ref(q, q_scale, keys, k_scales, n, heads, hd, scores, ld);
        return;
    }
    const size_t d = (size_t)heads * hd;
    const size_t block = SCORES_Q8_ROWS * d, ahead = SCORES_Q8_PREFETCH_BLOCKS * block;
    const size_t share = (size_t)SCORES_Q8_ROWS * hd; /* each head prefetches 1/heads of a block */
    int i = 0;
    for (; i + SCORES_Q8_ROWS <= n; i += SCORES_Q8_ROWS) {
        const int8_t *key = keys + (size_t)i * d;
        for (int h = 0; h < heads; h++) {
            prefetch_l2((uintptr_t)key + ahead + h * share, share);
            score_rows_q8(q, q_scale[h], key, k_scales + (size_t)i * heads, d, heads, h, hd,
                          scores + (size_t)h * ld + i);
        }
    }
    for (; i < n; i++) {
        const int8_t *key = keys + (size_t)i * d;
        const float *ks = k_scales + (size_t)i * heads;
        prefetch_l2((uintptr_t)key + SCORES_PREFETCH_ROWS * d, d);
        int h = 0;
        for (; h + 8 <= heads; h += 8)
            score_heads_q8(8, q, q_scale, key, ks, h, hd, scores + i, ld);
        for (; h + 4 <= heads; h += 4)
            score_heads_q8(4, q, q_scale, key, ks, h, hd, scores + i, ld);
        for (; h < heads; h++)
            score_heads_q8(1, q, q_scale, key, ks, h, hd, scores + i, ld);
    }
}

/* ---- values ------------------------------------------------------------------------------- */

/* Returns the weight of row i for head h: w[h][i], times the row's scale for an int8 cache. */
static ALWAYS_INLINE float row_weight(const float *w, size_t ld, const float *scales, int heads,
                                      size_t i, int h)
{
    const float wi = w[(size_t)h * ld + i];
    return scales ? wi * scales[i * heads + h] : wi;
}

/* out_h += weight * value_h of rows i..i+3 for every head h, the rows added in order. The
 * head's slice of out stays in registers across the four rows, so it is loaded and stored once
 * per block instead of once per row. */
static ALWAYS_INLINE void weigh_block4(int q8, const float *w, size_t ld, const void *values,
                                       const float *scales, size_t i, size_t d, int heads, int hd,
                                       float *out)
{
    const size_t elem = q8 ? 1 : 2, row = d * elem;
    const uintptr_t block = (uintptr_t)values + i * row;
    for (int h = 0; h < heads; h++) {
        const uintptr_t head = block + (size_t)h * hd * elem;
        for (size_t r = 0; r < 4; r++)
            prefetch_l2(head + (VALUES_PREFETCH_ROWS + r) * row, (size_t)hd * elem);
        const __m256 w0 = _mm256_set1_ps(row_weight(w, ld, scales, heads, i, h));
        const __m256 w1 = _mm256_set1_ps(row_weight(w, ld, scales, heads, i + 1, h));
        const __m256 w2 = _mm256_set1_ps(row_weight(w, ld, scales, heads, i + 2, h));
        const __m256 w3 = _mm256_set1_ps(row_weight(w, ld, scales, heads, i + 3, h));
        const void *v = (const void *)head;
        float *o = out + (size_t)h * hd;
        for (int j = 0; j < hd; j += 8) {
            __m256 a = _mm256_loadu_ps(o + j);
            a = weigh8(q8, a, w0, load_row8(q8, v, (size_t)j));
            a = weigh8(q8, a, w1, load_row8(q8, v, d + j));
            a = weigh8(q8, a, w2, load_row8(q8, v, 2 * d + j));
            a = weigh8(q8, a, w3, load_row8(q8, v, 3 * d + j));
            _mm256_storeu_ps(o + j, a);
        }
    }
}

/* Adds the weighted value rows [0, n) to out, four rows per pass, then the rest one by one. */
static ALWAYS_INLINE void weigh_rows(int q8, const float *w, size_t ld, const void *values,
                                     const float *scales, int n, int heads, int hd, float *out)
{
    const size_t d = (size_t)heads * hd, elem = q8 ? 1 : 2;
    int i = 0;
    for (; i + 4 <= n; i += 4)
        weigh_block4(q8, w, ld, values, scales, (size_t)i, d, heads, hd, out);
    for (; i < n; i++) {
        const unsigned char *row = (const unsigned char *)values + (size_t)i * d * elem;
        for (int h = 0; h < heads; h++) {
            const __m256 wi = _mm256_set1_ps(row_weight(w, ld, scales, heads, (size_t)i, h));
            const void *v = row + (size_t)h * hd * elem;
            float *o = out + (size_t)h * hd;
            for (int j = 0; j < hd; j += 8)
                _mm256_storeu_ps(o + j, weigh8(q8, _mm256_loadu_ps(o + j), wi,
                                               load_row8(q8, v, (size_t)j)));
        }
    }
}

void zq_attn_values_f16_avx2(const float *w, size_t ld, const uint16_t *values, int n, int heads,
                             int hd, float *out)
{
    if (hd % 8 != 0) {
        zq_attn_values_f16_ref(w, ld, values, n, heads, hd, out);
        return;
    }
    weigh_rows(0, w, ld, values, NULL, n, heads, hd, out);
}

void zq_attn_values_q8_avx2(const float *w, size_t ld, const int8_t *values,
                            const float *v_scales, int n, int heads, int hd, float *out)
{
    if (hd % 8 != 0) {
        zq_attn_values_q8_ref(w, ld, values, v_scales, n, heads, hd, out);
        return;
    }
    weigh_rows(1, w, ld, values, v_scales, n, heads, hd, out);
}
