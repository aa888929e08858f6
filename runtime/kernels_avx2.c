/*
 * kernels_avx2.c - AVX2 + FMA + F16C kernels (built with -mavx2 -mfma -mf16c, selected only
 * when CPUID and XCR0 report all three).
 *
 * int8: AVX2 has no int8 dot product that is exact for two signed 8-bit operands, because
 * vpmaddubsw takes unsigned x signed bytes and saturates its int16 pair sums. The sign trick
 * keeps it exact: vpsignb moves the sign of a onto w, so vpmaddubsw multiplies |a| (unsigned)
 * by sign(a) * w, and with both operands in [-127, 127] each pair sum is at most
 * 2 * 127 * 127 = 32258 < 32767. vpmaddwd against ones then widens the pairs to int32 without
 * loss.
 *
 * Blocking (zq_gemm_tiled): W is walked in blocks of GEMM_NB rows, and within a block A in
 * panels of up to 4 rows, with register tiles of mr x nr dot products (4x2, 3x2, 2x4, 1x8) so
 * that each loaded vector of A or W is used several times. For M = 1 (decode) this streams 8
 * weight rows at once, one after another when they are long (see s8_tile_rows). For large M
 * the W block stays in cache while all panels of A pass over it. Every element is reduced in
 * the same order whatever tile it falls in, so a float result does not depend on M, N or how a
 * caller splits the matrix.
 */
#include "internal.h"
#include "kernels_impl.h"
#include "kernels_x86.h"

#include <immintrin.h>
#include <string.h>

#define ALWAYS_INLINE inline __attribute__((always_inline))

#define TILE_MR_MAX ZQ_TILE_MR_MAX
#define TILE_NR_MAX 8
#define GEMM_NB 64 /* rows of W per cache block: 64 * 3072 bytes of int8 fit in L2 */

/* ---- int8 tiles -------------------------------------------------------------------------- */

/* acc[m][j] += dot of 32 bytes of a[m] and w[j] at offset k, exact (see the file comment). */
static ALWAYS_INLINE void s8_step(int mr, int nr, const int8_t *const *a, const int8_t *const *w,
                                  size_t k, __m256i acc[TILE_MR_MAX][TILE_NR_MAX])
{
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int m = 0; m < mr; m++) {
        __m256i av = _mm256_loadu_si256((const __m256i *)(a[m] + k));
        __m256i ua = _mm256_abs_epi8(av);
#pragma GCC unroll 8
        for (int j = 0; j < nr; j++) {
            __m256i wv = _mm256_loadu_si256((const __m256i *)(w[j] + k));
            __m256i pairs = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(wv, av));
            acc[m][j] = _mm256_add_epi32(acc[m][j], _mm256_madd_epi16(pairs, ones));
        }
    }
}

/* Runs the last K % 32 columns through s8_step from zero-padded copies, so that no load reads
 * past the end of a row. The zeros add nothing. */
static ALWAYS_INLINE void s8_tail(int mr, int nr, const int8_t *const *a, const int8_t *const *w,
                                  int k, int K, __m256i acc[TILE_MR_MAX][TILE_NR_MAX])
{
    int8_t abuf[TILE_MR_MAX][32], wbuf[TILE_NR_MAX][32];
    const int8_t *ap[TILE_MR_MAX], *wp[TILE_NR_MAX];
    for (int m = 0; m < mr; m++) {
        memset(abuf[m], 0, 32);
        memcpy(abuf[m], a[m] + k, (size_t)(K - k));
        ap[m] = abuf[m];
    }
    for (int j = 0; j < nr; j++) {
        memset(wbuf[j], 0, 32);
        memcpy(wbuf[j], w[j] + k, (size_t)(K - k));
        wp[j] = wbuf[j];
    }
    s8_step(mr, nr, ap, wp, 0, acc);
}

static ALWAYS_INLINE void s8_tile(int mr, int nr, const void *const *av, const void *const *wv,
                                  int K, void *out)
{
    const int8_t *const *a = (const int8_t *const *)av;
    const int8_t *const *w = (const int8_t *const *)wv;
    __m256i acc[TILE_MR_MAX][TILE_NR_MAX];
    for (int m = 0; m < mr; m++)
        for (int j = 0; j < nr; j++)
            acc[m][j] = _mm256_setzero_si256();

    int k = 0;
    for (; k + 32 <= K; k += 32) {
        prefetch_next_rows(nr, (const void *const *)w, (size_t)k, 32, (size_t)K);
        s8_step(mr, nr, a, w, (size_t)k, acc);
    }
    if (k < K)
        s8_tail(mr, nr, a, w, k, K, acc);

    for (int half = 0; half * 8 < mr * nr; half++) {
        __m256i flat[8];
        for (int i = 0; i < 8; i++) {
            const int e = half * 8 + i;
            flat[i] = e < mr * nr ? acc[e / nr][e % nr] : _mm256_setzero_si256();
        }
        _mm256_storeu_si256((__m256i *)out + half, hsum8_epi32_ymm(flat));
    }
}

/* ---- f32 and f16 tiles ------------------------------------------------------------------- */

/* Lane mask for the first n (0..8) floats, for maskload. */
static ALWAYS_INLINE __m256i lane_mask(int n)
{
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
}

/* Loads 8 weights at offset k, or the n < 8 that remain (zero-filled) when tail is set. */
static ALWAYS_INLINE __m256 load_w_f32(const void *w, size_t k, int n, __m256i mask)
{
    const float *p = (const float *)w + k;
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
}

static ALWAYS_INLINE __m256 load_w_f16(const void *w, size_t k, int n, __m256i mask)
{
    const uint16_t *p = (const uint16_t *)w + k;
    if (n >= 8)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    uint16_t buf[8] = {0};
    memcpy(buf, p, (size_t)n * sizeof *p);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)buf));
}

/* acc[m][j] += a[m][k..k+n) * w[j][k..k+n) lane-wise, n = 8 or a masked tail. */
static ALWAYS_INLINE void float_step(int mr, int nr, const float *const *a, const void *const *w,
                                     int f16, size_t k, int n, __m256 acc[TILE_MR_MAX][TILE_NR_MAX])
{
    __m256i mask = lane_mask(n);
    __m256 av[TILE_MR_MAX];
    for (int m = 0; m < mr; m++)
        av[m] = n >= 8 ? _mm256_loadu_ps(a[m] + k) : _mm256_maskload_ps(a[m] + k, mask);
#pragma GCC unroll 8
    for (int j = 0; j < nr; j++) {
        __m256 wv = f16 ? load_w_f16(w[j], k, n, mask) : load_w_f32(w[j], k, n, mask);
#pragma GCC unroll 4
        for (int m = 0; m < mr; m++)
            acc[m][j] = _mm256_fmadd_ps(av[m], wv, acc[m][j]);
    }
}

static ALWAYS_INLINE void float_tile(int mr, int nr, int f16, const void *const *av,
                                     const void *const *w, int K, void *out)
{
    const float *const *a = (const float *const *)av;
    __m256 acc[TILE_MR_MAX][TILE_NR_MAX];
    for (int m = 0; m < mr; m++)
        for (int j = 0; j < nr; j++)
            acc[m][j] = _mm256_setzero_ps();

    int k = 0;
    const size_t w_size = f16 ? 2 : 4;
    for (; k + 8 <= K; k += 8) {
        prefetch_next_rows(nr, w, (size_t)k * w_size, 8 * w_size, (size_t)K * w_size);
        float_step(mr, nr, a, w, f16, (size_t)k, 8, acc);
    }
    if (k < K)
        float_step(mr, nr, a, w, f16, (size_t)k, K - k, acc);

    for (int half = 0; half * 8 < mr * nr; half++) {
        __m256 flat[8];
        for (int i = 0; i < 8; i++) {
            const int e = half * 8 + i;
            flat[i] = e < mr * nr ? acc[e / nr][e % nr] : _mm256_setzero_ps();
        }
        _mm256_storeu_ps((float *)out + 8 * half, hsum8_ps_ymm(flat));
    }
}

/* One instance per tile shape, so that mr and nr are constants and the accumulators stay in
 * registers: at most 8 of the 16 YMM registers hold accumulators. */
#define DEFINE_TILE_FNS(name, body)                                                                \
    static void name##_1(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(1, 8, a, w, K, out);                                                                  \
    }                                                                                              \
    static void name##_2(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(2, 4, a, w, K, out);                                                                  \
    }                                                                                              \
    static void name##_3(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(3, 2, a, w, K, out);                                                                  \
    }                                                                                              \
    static void name##_4(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(4, 2, a, w, K, out);                                                                  \
    }

/* The tile set of the four functions above, with first as the one-row tile. */
#define TILE_SET(name, first)                                                                      \
    static const zq_tile_set name = {                                                              \
        .tile = {NULL, first, name##_2, name##_3, name##_4},                                       \
        .nr = {0, 8, 4, 2, 2},                                                                     \
        .nb = GEMM_NB,                                                                             \
    };

#define F32_TILE(mr, nr, a, w, K, out) float_tile(mr, nr, 0, a, w, K, out)
#define F16_TILE(mr, nr, a, w, K, out) float_tile(mr, nr, 1, a, w, K, out)

DEFINE_TILE_FNS(s8_tiles, s8_tile)

/* From this row length on, the one-row int8 tile reads its eight weight rows one after another
 * instead of side by side. */
#define S8_ROW_BY_ROW_MIN_K 2048

/* One row of A against eight rows of W, each row of W whole before the next, without software
 * prefetch: the eight rows then come from memory as one sequential stream. On a 2-vCPU AMD
 * EPYC this made the 768 x 3072 decode product 8% faster, and the 768-wide ones 4-13% slower
 * than reading the rows side by side, hence the threshold. */
static void s8_tile_rows(const void *const *av, const void *const *wv, int K, void *out)
{
    if (K < S8_ROW_BY_ROW_MIN_K) {
        s8_tiles_1(av, wv, K, out);
        return;
    }
    const int8_t *const *a = (const int8_t *const *)av;
    const int8_t *const *w = (const int8_t *const *)wv;
    __m256i row_acc[8];
    for (int j = 0; j < 8; j++) {
        __m256i acc[TILE_MR_MAX][TILE_NR_MAX] = {{_mm256_setzero_si256()}};
        int k = 0;
        for (; k + 32 <= K; k += 32)
            s8_step(1, 1, a, w + j, (size_t)k, acc);
        if (k < K)
            s8_tail(1, 1, a, w + j, k, K, acc);
        row_acc[j] = acc[0][0];
    }
    _mm256_storeu_si256((__m256i *)out, hsum8_epi32_ymm(row_acc));
}

TILE_SET(s8_tiles, s8_tile_rows)
DEFINE_TILE_FNS(f32_tiles, F32_TILE)
TILE_SET(f32_tiles, f32_tiles_1)
DEFINE_TILE_FNS(f16_tiles, F16_TILE)
TILE_SET(f16_tiles, f16_tiles_1)

static void gemm_s8_avx2(int M, int N, int K, const int8_t *A, size_t lda, const int8_t *W,
                         size_t ldw, int32_t *C, size_t ldc)
{
    zq_gemm_tiled(&s8_tiles, M, N, K, A, lda, W, ldw, C, ldc);
}

static void gemm_f16_avx2(int M, int N, int K, const float *A, size_t lda, const uint16_t *W,
                          size_t ldw, float *C, size_t ldc)
{
    zq_gemm_tiled(&f16_tiles, M, N, K, A, lda * 4, W, ldw * 2, C, ldc);
}

static void gemm_f32_avx2(int M, int N, int K, const float *A, size_t lda, const float *W,
                          size_t ldw, float *C, size_t ldc)
{
    zq_gemm_tiled(&f32_tiles, M, N, K, A, lda * 4, W, ldw * 4, C, ldc);
}

/* ---- quantization and vector helpers ----------------------------------------------------- */

/* Returns max |x|. max_ps(v, m) returns m when v is NaN, so NaN is skipped as in the reference. */
static float max_abs_avx2(const float *x, int K)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 vmax = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8)
        vmax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k), abs_mask), vmax);
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    float amax = 0.0f;
    for (int i = 0; i < 8; i++)
        amax = lanes[i] > amax ? lanes[i] : amax;
    for (; k < K; k++) {
        float a = fabsf(x[k]);
        if (a > amax)
            amax = a;
    }
    return amax;
}

/* cvtps2dq rounds half to even under the default MXCSR, like nearbyintf. clamping in int32
 * before the saturating packs keeps NaN (converted to INT32_MIN) at -127, never -128. */
static ALWAYS_INLINE __m256i quant8_epi32(const float *x, __m256 vinv)
{
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), vinv));
    return _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
}

static void quantize_row_s8_avx2(const float *x, int K, int8_t *q, float *scale)
{
    float inv = zq_quant_inverse(max_abs_avx2(x, K), scale);
    const __m256 vinv = _mm256_set1_ps(inv);
    /* packs work within 128-bit lanes; this puts the four groups of 8 back in order. */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        __m256i i16a = _mm256_packs_epi32(quant8_epi32(x + k, vinv), quant8_epi32(x + k + 8, vinv));
        __m256i i16b =
            _mm256_packs_epi32(quant8_epi32(x + k + 16, vinv), quant8_epi32(x + k + 24, vinv));
        __m256i i8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i16a, i16b), order);
        _mm256_storeu_si256((__m256i *)(q + k), i8);
    }
    for (; k < K; k++)
        q[k] = zq_quant_value(x[k], inv);
}

static float dot_f32_avx2(const float *a, const float *b, int n)
{
    __m256 acc[8] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 4; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8 * j),
                                     _mm256_loadu_ps(b + i + 8 * j), acc[j]);
    for (; i + 8 <= n; i += 8)
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc[0]);
    acc[0] = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    float sum;
    _mm_store_ss(&sum, _mm256_castps256_ps128(hsum8_ps_ymm(acc)));
    for (; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

/* Multiplies and adds separately (no FMA) so the result equals the reference bit for bit. */
static void axpy_f32_avx2(float alpha, const float *x, float *y, int n)
{
    const __m256 va = _mm256_set1_ps(alpha);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 prod = _mm256_mul_ps(va, _mm256_loadu_ps(x + i));
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), prod));
    }
    for (; i < n; i++)
        y[i] += alpha * x[i];
}

static void f32_to_f16_avx2(const float *x, uint16_t *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(y + i), h);
    }
    for (; i < n; i++)
        y[i] = zq_f32_to_f16(x[i]);
}

static void f16_to_f32_avx2(const uint16_t *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++)
        y[i] = zq_f16_to_f32(x[i]);
}

const zq_kernels zq_kernels_avx2_table = {
    .name = "avx2",
    .gemm_s8 = gemm_s8_avx2,
    .gemm_f16 = gemm_f16_avx2,
    .gemm_f32 = gemm_f32_avx2,
    .quantize_row_s8 = quantize_row_s8_avx2,
    .dot_f32 = dot_f32_avx2,
    .axpy_f32 = axpy_f32_avx2,
    .f32_to_f16 = f32_to_f16_avx2,
    .f16_to_f32 = f16_to_f32_avx2,
    .attn_scores_f16 = zq_attn_scores_f16_avx2,
    .attn_values_f16 = zq_attn_values_f16_avx2,
    .attn_scores_q8 = zq_attn_scores_q8_avx2,
    .attn_values_q8 = zq_attn_values_q8_avx2,
};
