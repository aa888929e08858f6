/*
 * kernels_avx512.c - AVX-512 kernels with VNNI (built with -mavx512f -mavx512bw -mavx512vl
 * -mavx512vnni -mavx2 -mfma -mf16c; selected only when CPUID reports F, BW, VL and VNNI and
 * XCR0 shows that the OS saves the opmask and ZMM state).
 *
 * int8: vpdpbusd multiplies unsigned by signed bytes and adds groups of four products straight
 * into int32 without an int16 stage, so nothing saturates; the only issue is the unsigned
 * first operand. The tiles shift a to a + 128 (an XOR of the sign bit) and subtract
 * 128 * sum(w), which a second vpdpbusd against ones accumulates per weight row. This costs
 * one extra vpdpbusd per weight vector, shared by all rows of A in the tile, where the sign
 * trick of the AVX2 file would cost a masked negation per product (AVX-512 has no vpsignb).
 *
 * K tails use masked loads, which never fault on the masked-off bytes, so there are no scalar
 * tails and no padded copies.
 */
#include "kernels_impl.h"
#include "kernels_x86.h"

#include <immintrin.h>

#define ALWAYS_INLINE inline __attribute__((always_inline))

#define TILE_NR_MAX 8
#define GEMM_NB 64 /* rows of W per cache block */

/* ---- horizontal sums ------------------------------------------------------------------- */

/* Returns a vector whose lane i is the sum of the lanes of v[i]. Each ZMM is folded to a YMM,
 * then three rounds of hadd and one cross-lane add finish all eight at once, in far fewer
 * instructions than eight separate reductions. */
static ALWAYS_INLINE __m256i hsum8_epi32(const __m512i v[8])
{
    __m256i h[8];
    for (int i = 0; i < 8; i++)
        h[i] = _mm256_add_epi32(_mm512_castsi512_si256(v[i]), _mm512_extracti64x4_epi64(v[i], 1));
    const __m256i t0 = _mm256_hadd_epi32(h[0], h[1]), t1 = _mm256_hadd_epi32(h[2], h[3]);
    const __m256i t2 = _mm256_hadd_epi32(h[4], h[5]), t3 = _mm256_hadd_epi32(h[6], h[7]);
    const __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                            _mm256_permute2x128_si256(u0, u1, 0x31));
}

/* Float version of hsum8_epi32. Every lane goes through the same sequence of adds, so its
 * result does not depend on its position, which keeps tiles of all shapes consistent. */
static ALWAYS_INLINE __m256 hsum8_ps(const __m512 v[8])
{
    __m256 h[8];
    for (int i = 0; i < 8; i++)
        h[i] = _mm256_add_ps(_mm512_castps512_ps256(v[i]),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v[i]), 1)));
    const __m256 t0 = _mm256_hadd_ps(h[0], h[1]), t1 = _mm256_hadd_ps(h[2], h[3]);
    const __m256 t2 = _mm256_hadd_ps(h[4], h[5]), t3 = _mm256_hadd_ps(h[6], h[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                         _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* ---- int8 tiles -------------------------------------------------------------------------- */

/* acc[m][j] += dot(a[m] + 128, w[j]) and wsum[j] += sum(w[j]) over the bytes at [k, k + 64)
 * that kmask selects. Masked-off bytes load as zero in both a and w, so they add nothing. */
static ALWAYS_INLINE void s8_step(int mr, int nr, const int8_t *const *a, const int8_t *const *w,
                                  size_t k, __mmask64 kmask, int full,
                                  __m512i acc[ZQ_TILE_MR_MAX][TILE_NR_MAX], __m512i wsum[TILE_NR_MAX])
{
    const __m512i bias = _mm512_set1_epi8((char)0x80), ones = _mm512_set1_epi8(1);
    __m512i au[ZQ_TILE_MR_MAX];
#pragma GCC unroll 4
    for (int m = 0; m < mr; m++) {
        __m512i av = full ? _mm512_loadu_si512(a[m] + k) : _mm512_maskz_loadu_epi8(kmask, a[m] + k);
        au[m] = _mm512_xor_si512(av, bias); /* a + 128 as an unsigned byte */
    }
#pragma GCC unroll 8
    for (int j = 0; j < nr; j++) {
        __m512i wv = full ? _mm512_loadu_si512(w[j] + k) : _mm512_maskz_loadu_epi8(kmask, w[j] + k);
        wsum[j] = _mm512_dpbusd_epi32(wsum[j], ones, wv);
#pragma GCC unroll 4
        for (int m = 0; m < mr; m++)
            acc[m][j] = _mm512_dpbusd_epi32(acc[m][j], au[m], wv);
    }
}


static ALWAYS_INLINE void s8_tile(int mr, int nr, const void *const *av, const void *const *wv,
                                  int K, void *out)
{
    const int8_t *const *a = (const int8_t *const *)av;
    const int8_t *const *w = (const int8_t *const *)wv;
    __m512i acc[ZQ_TILE_MR_MAX][TILE_NR_MAX], wsum[TILE_NR_MAX];
    for (int j = 0; j < nr; j++) {
        wsum[j] = _mm512_setzero_si512();
        for (int m = 0; m < mr; m++)
            acc[m][j] = _mm512_setzero_si512();
    }

    int k = 0;
    for (; k + 64 <= K; k += 64) {
        prefetch_next_rows(nr, (const void *const *)w, (size_t)k, 64, (size_t)K);
        s8_step(mr, nr, a, w, (size_t)k, ~0ULL, 1, acc, wsum);
    }
    if (k < K)
        s8_step(mr, nr, a, w, (size_t)k, (1ULL << (K - k)) - 1, 0, acc, wsum);

    /* sum((a + 128) * w) - 128 * sum(w) = sum(a * w), exact in int32 for K < 66000. */
    int32_t sums[16], wsums[8];
    __m512i flat[8];
    for (int half = 0; half * 8 < mr * nr; half++) {
        for (int i = 0; i < 8; i++) {
            const int e = half * 8 + i;
            flat[i] = e < mr * nr ? acc[e / nr][e % nr] : _mm512_setzero_si512();
        }
        _mm256_storeu_si256((__m256i *)(sums + half * 8), hsum8_epi32(flat));
    }
    for (int j = 0; j < 8; j++)
        flat[j] = j < nr ? wsum[j] : _mm512_setzero_si512();
    _mm256_storeu_si256((__m256i *)wsums, hsum8_epi32(flat));
    int32_t *c = out;
    for (int i = 0; i < mr * nr; i++)
        c[i] = sums[i] - 128 * wsums[i % nr];
}

/* ---- f32 and f16 tiles ------------------------------------------------------------------- */

/* Loads 16 weights at k as floats, only the lanes in mask unless full is set (masked loads of
 * full vectors measured slower). */
static ALWAYS_INLINE __m512 load_w(const void *w, int f16, size_t k, __mmask16 mask, int full)
{
    if (f16) {
        const uint16_t *p = (const uint16_t *)w + k;
        return _mm512_cvtph_ps(full ? _mm256_loadu_si256((const __m256i *)p)
                                    : _mm256_maskz_loadu_epi16(mask, p));
    }
    const float *p = (const float *)w + k;
    return full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask, p);
}

/* acc[m][j] += a[m] * w[j] lane-wise over the floats at [k, k + 16) that mask selects. */
static ALWAYS_INLINE void float_step(int mr, int nr, const float *const *a, const void *const *w,
                                     int f16, size_t k, __mmask16 mask, int full,
                                     __m512 acc[ZQ_TILE_MR_MAX][TILE_NR_MAX])
{
    __m512 av[ZQ_TILE_MR_MAX];
    for (int m = 0; m < mr; m++)
        av[m] = full ? _mm512_loadu_ps(a[m] + k) : _mm512_maskz_loadu_ps(mask, a[m] + k);
#pragma GCC unroll 8
    for (int j = 0; j < nr; j++) {
        __m512 wv = load_w(w[j], f16, k, mask, full);
#pragma GCC unroll 4
        for (int m = 0; m < mr; m++)
            acc[m][j] = _mm512_fmadd_ps(av[m], wv, acc[m][j]);
    }
}

static ALWAYS_INLINE void float_tile(int mr, int nr, int f16, const void *const *av,
                                     const void *const *w, int K, void *out)
{
    const float *const *a = (const float *const *)av;
    __m512 acc[ZQ_TILE_MR_MAX][TILE_NR_MAX];
    for (int m = 0; m < mr; m++)
        for (int j = 0; j < nr; j++)
            acc[m][j] = _mm512_setzero_ps();

    int k = 0;
    const size_t w_size = f16 ? 2 : 4;
    for (; k + 16 <= K; k += 16) {
        prefetch_next_rows(nr, w, (size_t)k * w_size, 16 * w_size, (size_t)K * w_size);
        float_step(mr, nr, a, w, f16, (size_t)k, 0xffff, 1, acc);
    }
    if (k < K)
        float_step(mr, nr, a, w, f16, (size_t)k, (__mmask16)((1u << (K - k)) - 1), 0, acc);

    float *c = out;
    for (int half = 0; half * 8 < mr * nr; half++) {
        __m512 flat[8];
        for (int i = 0; i < 8; i++) {
            const int e = half * 8 + i;
            flat[i] = e < mr * nr ? acc[e / nr][e % nr] : _mm512_setzero_ps();
        }
        _mm256_storeu_ps(c + half * 8, hsum8_ps(flat));
    }
}

/* One instance per tile shape, so that mr and nr are constants and the accumulators stay in
 * registers: at most 16 of the 32 ZMM registers hold accumulators. */
#define DEFINE_TILES(name, body)                                                                   \
    static void name##_1(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(1, 8, a, w, K, out);                                                                  \
    }                                                                                              \
    static void name##_2(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(2, 8, a, w, K, out);                                                                  \
    }                                                                                              \
    static void name##_3(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(3, 4, a, w, K, out);                                                                  \
    }                                                                                              \
    static void name##_4(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(4, 4, a, w, K, out);                                                                  \
    }                                                                                              \
    static const zq_tile_set name = {                                                              \
        .tile = {NULL, name##_1, name##_2, name##_3, name##_4},                                    \
        .nr = {0, 8, 8, 4, 4},                                                                     \
        .nb = GEMM_NB,                                                                             \
    };

#define F32_TILE(mr, nr, a, w, K, out) float_tile(mr, nr, 0, a, w, K, out)
#define F16_TILE(mr, nr, a, w, K, out) float_tile(mr, nr, 1, a, w, K, out)

DEFINE_TILES(s8_tiles, s8_tile)
DEFINE_TILES(f32_tiles, F32_TILE)
DEFINE_TILES(f16_tiles, F16_TILE)

static void gemm_s8_avx512(int M, int N, int K, const int8_t *A, size_t lda, const int8_t *W,
                           size_t ldw, int32_t *C, size_t ldc)
{
    zq_gemm_tiled(&s8_tiles, M, N, K, A, lda, W, ldw, C, ldc);
}

static void gemm_f16_avx512(int M, int N, int K, const float *A, size_t lda, const uint16_t *W,
                            size_t ldw, float *C, size_t ldc)
{
    zq_gemm_tiled(&f16_tiles, M, N, K, A, lda * 4, W, ldw * 2, C, ldc);
}

static void gemm_f32_avx512(int M, int N, int K, const float *A, size_t lda, const float *W,
                            size_t ldw, float *C, size_t ldc)
{
    zq_gemm_tiled(&f32_tiles, M, N, K, A, lda * 4, W, ldw * 4, C, ldc);
}

/* ---- quantization and vector helpers ----------------------------------------------------- */

static ALWAYS_INLINE __mmask16 tail_mask16(int n)
{
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* Returns max |x|. max_ps(v, m) returns m when v is NaN, so NaN is skipped as in the
 * reference; masked-off lanes load as zero. */
static float max_abs_avx512(const float *x, int K)
{
    __m512 vmax = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 16) {
        __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask16(K - k), x + k));
        vmax = _mm512_max_ps(v, vmax);
    }
    return _mm512_reduce_max_ps(vmax);
}

/* cvtps2dq rounds half to even under the default MXCSR, like nearbyintf. the int32 clamp
 * keeps NaN (converted to INT32_MIN) at -127, never -128, before the truncating vpmovdb. */
static void quantize_row_s8_avx512(const float *x, int K, int8_t *q, float *scale)
{
    const float inv = zq_quant_inverse(max_abs_avx512(x, K), scale);
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int k = 0; k < K; k += 16) {
        const __mmask16 mask = tail_mask16(K - k);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + k), vinv);
        __m512i i32 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(v), lo), hi);
        _mm512_mask_cvtepi32_storeu_epi8(q + k, mask, i32);
    }
}

static float dot_f32_avx512(const float *a, const float *b, int n)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    for (; i < n; i += 16) {
        const __mmask16 mask = tail_mask16(n - i);
        acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i),
                               acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* Multiplies and adds separately (no FMA) so the result equals the reference bit for bit. */
static void axpy_f32_avx512(float alpha, const float *x, float *y, int n)
{
    const __m512 va = _mm512_set1_ps(alpha);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 mask = tail_mask16(n - i);
        __m512 prod = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(mask, x + i));
        _mm512_mask_storeu_ps(y + i, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y + i), prod));
    }
}

static void f32_to_f16_avx512(const float *x, uint16_t *y, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mask = tail_mask16((int)(n - i < 16 ? n - i : 16));
        const __m256i h =
            _mm512_cvtps_ph(_mm512_maskz_loadu_ps(mask, x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_mask_storeu_epi16(y + i, mask, h);
    }
}

static void f16_to_f32_avx512(const uint16_t *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mask = tail_mask16((int)(n - i < 16 ? n - i : 16));
        _mm512_mask_storeu_ps(y + i, mask, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, x + i)));
    }
}

const zq_kernels zq_kernels_avx512_table = {
    .name = "avx512vnni",
    .gemm_s8 = gemm_s8_avx512,
    .gemm_f16 = gemm_f16_avx512,
    .gemm_f32 = gemm_f32_avx512,
    .quantize_row_s8 = quantize_row_s8_avx512,
    .dot_f32 = dot_f32_avx512,
    .axpy_f32 = axpy_f32_avx512,
    .f32_to_f16 = f32_to_f16_avx512,
    .f16_to_f32 = f16_to_f32_avx512,
    .attn_scores_f16 = zq_attn_scores_f16_avx2,
    .attn_values_f16 = zq_attn_values_f16_avx2,
    .attn_scores_q8 = zq_attn_scores_q8_avx2,
    .attn_values_q8 = zq_attn_values_q8_avx2,
};
