/*
 * kernels_neon.c - AArch64 Advanced SIMD kernels, in two tables (built with
 * -march=armv8.2-a+dotprod+fp16 on aarch64 only; the dispatcher checks HWCAP before use):
 * - "neondot" computes int8 products with sdot (vdotq_s32, ARMv8.2 dot product), four
 *   products per int32 lane, exact for any int8 values.
 * - "neon" serves ARMv8.0 cores without sdot: smull/smlal2 form two products in int16 (each at
 *   most 127 * 127, the pair at most 32258, so exact for operands in [-127, 127]) and sadalp
 *   widens the pairs into int32.
 * The float kernels and quantization are shared by both tables. Only the int8 GEMM of
 * "neondot" uses an instruction beyond ARMv8.0.
 *
 * NOTE: compiled with clang --target=aarch64-linux-gnu but never run on AArch64 hardware;
 * test_kernels checks it against the reference on the first aarch64 machine it runs on.
 */
#include "internal.h"
#include "kernels_impl.h"

#include <arm_neon.h>
#include <string.h>

#define ALWAYS_INLINE inline __attribute__((always_inline))

#define TILE_NR_MAX 8
#define GEMM_NB 64 /* rows of W per cache block */

/* ---- int8 tiles -------------------------------------------------------------------------- */

/* Adds the exact dot product of 16 int8 pairs to the four int32 lanes of acc. */
static ALWAYS_INLINE int32x4_t dot16_sdot(int32x4_t acc, int8x16_t a, int8x16_t w)
{
    return vdotq_s32(acc, a, w);
}

static ALWAYS_INLINE int32x4_t dot16_smull(int32x4_t acc, int8x16_t a, int8x16_t w)
{
    int16x8_t pairs = vmull_s8(vget_low_s8(a), vget_low_s8(w));
    pairs = vmlal_high_s8(pairs, a, w);
    return vpadalq_s16(acc, pairs);
}

/* acc[m][j] += dot of 16 bytes of a[m] and w[j] at offset k. */
static ALWAYS_INLINE void s8_step(int mr, int nr, int sdot, const int8_t *const *a,
                                  const int8_t *const *w, size_t k,
                                  int32x4_t acc[ZQ_TILE_MR_MAX][TILE_NR_MAX])
{
    int8x16_t av[ZQ_TILE_MR_MAX];
    for (int m = 0; m < mr; m++)
        av[m] = vld1q_s8(a[m] + k);
#pragma GCC unroll 8
    for (int j = 0; j < nr; j++) {
        const int8x16_t wv = vld1q_s8(w[j] + k);
#pragma GCC unroll 4
        for (int m = 0; m < mr; m++)
            acc[m][j] = sdot ? dot16_sdot(acc[m][j], av[m], wv)
                             : dot16_smull(acc[m][j], av[m], wv);
    }
}

/* Runs the last K % 16 columns from zero-padded copies, so no load reads past a row. */
static ALWAYS_INLINE void s8_tail(int mr, int nr, int sdot, const int8_t *const *a,
                                  const int8_t *const *w, int k, int K,
                                  int32x4_t acc[ZQ_TILE_MR_MAX][TILE_NR_MAX])
{
    int8_t abuf[ZQ_TILE_MR_MAX][16], wbuf[TILE_NR_MAX][16];
    const int8_t *ap[ZQ_TILE_MR_MAX], *wp[TILE_NR_MAX];
    for (int m = 0; m < mr; m++) {
        memset(abuf[m], 0, 16);
        memcpy(abuf[m], a[m] + k, (size_t)(K - k));
        ap[m] = abuf[m];
    }
    for (int j = 0; j < nr; j++) {
        memset(wbuf[j], 0, 16);
        memcpy(wbuf[j], w[j] + k, (size_t)(K - k));
        wp[j] = wbuf[j];
    }
    s8_step(mr, nr, sdot, ap, wp, 0, acc);
}

static ALWAYS_INLINE void s8_tile(int mr, int nr, int sdot, const void *const *av,
                                  const void *const *wv, int K, void *out)
{
    const int8_t *const *a = (const int8_t *const *)av;
    const int8_t *const *w = (const int8_t *const *)wv;
    int32x4_t acc[ZQ_TILE_MR_MAX][TILE_NR_MAX];
    for (int m = 0; m < mr; m++)
        for (int j = 0; j < nr; j++)
            acc[m][j] = vdupq_n_s32(0);

    int k = 0;
    for (; k + 16 <= K; k += 16)
        s8_step(mr, nr, sdot, a, w, (size_t)k, acc);
    if (k < K)
        s8_tail(mr, nr, sdot, a, w, k, K, acc);

    int32_t *c = out;
    for (int m = 0; m < mr; m++)
        for (int j = 0; j < nr; j++)
            c[m * nr + j] = vaddvq_s32(acc[m][j]);
}

/* ---- f32 and f16 tiles ------------------------------------------------------------------- */

static ALWAYS_INLINE float32x4_t load_w(const void *w, int f16, size_t k)
{
    if (f16)
        return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)w + k)));
    return vld1q_f32((const float *)w + k);
}

static ALWAYS_INLINE void float_step(int mr, int nr, int f16, const float *const *a,
                                     const void *const *w, size_t k,
                                     float32x4_t acc[ZQ_TILE_MR_MAX][TILE_NR_MAX])
{
    float32x4_t av[ZQ_TILE_MR_MAX];
    for (int m = 0; m < mr; m++)
        av[m] = vld1q_f32(a[m] + k);
#pragma GCC unroll 8
    for (int j = 0; j < nr; j++) {
        const float32x4_t wv = load_w(w[j], f16, k);
#pragma GCC unroll 4
        for (int m = 0; m < mr; m++)
            acc[m][j] = vfmaq_f32(acc[m][j], av[m], wv);
    }
}

/* Runs the last K % 4 columns from zero-padded copies. */
static ALWAYS_INLINE void float_tail(int mr, int nr, int f16, const float *const *a,
                                     const void *const *w, int k, int K,
                                     float32x4_t acc[ZQ_TILE_MR_MAX][TILE_NR_MAX])
{
    float abuf[ZQ_TILE_MR_MAX][4];
    const float *ap[ZQ_TILE_MR_MAX];
    union {
        float f[4];
        uint16_t h[4];
    } wbuf[TILE_NR_MAX];
    const void *wp[TILE_NR_MAX];
    const size_t n = (size_t)(K - k), wsize = f16 ? 2 : 4;
    for (int m = 0; m < mr; m++) {
        memset(abuf[m], 0, sizeof abuf[m]);
        memcpy(abuf[m], a[m] + k, n * 4);
        ap[m] = abuf[m];
    }
    for (int j = 0; j < nr; j++) {
        memset(&wbuf[j], 0, sizeof wbuf[j]);
        memcpy(&wbuf[j], (const char *)w[j] + (size_t)k * wsize, n * wsize);
        wp[j] = &wbuf[j];
    }
    float_step(mr, nr, f16, ap, wp, 0, acc);
}

static ALWAYS_INLINE void float_tile(int mr, int nr, int f16, const void *const *av,
                                     const void *const *w, int K, void *out)
{
    const float *const *a = (const float *const *)av;
    float32x4_t acc[ZQ_TILE_MR_MAX][TILE_NR_MAX];
    for (int m = 0; m < mr; m++)
        for (int j = 0; j < nr; j++)
            acc[m][j] = vdupq_n_f32(0.0f);

    int k = 0;
    for (; k + 4 <= K; k += 4)
        float_step(mr, nr, f16, a, w, (size_t)k, acc);
    if (k < K)
        float_tail(mr, nr, f16, a, w, k, K, acc);

    float *c = out;
    for (int m = 0; m < mr; m++)
        for (int j = 0; j < nr; j++)
            c[m * nr + j] = vaddvq_f32(acc[m][j]);
}

/* One instance per tile shape, so that mr and nr are constants and the accumulators stay in
 * registers: at most 16 of the 32 vector registers hold accumulators. */
#define DEFINE_TILES(name, body, arg)                                                              \
    static void name##_1(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(1, 8, arg, a, w, K, out);                                                             \
    }                                                                                              \
    static void name##_2(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(2, 8, arg, a, w, K, out);                                                             \
    }                                                                                              \
    static void name##_3(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(3, 4, arg, a, w, K, out);                                                             \
    }                                                                                              \
    static void name##_4(const void *const *a, const void *const *w, int K, void *out)             \
    {                                                                                              \
        body(4, 4, arg, a, w, K, out);                                                             \
    }                                                                                              \
    static const zq_tile_set name = {                                                              \
        .tile = {NULL, name##_1, name##_2, name##_3, name##_4},                                    \
        .nr = {0, 8, 8, 4, 4},                                                                     \
        .nb = GEMM_NB,                                                                             \
    };

DEFINE_TILES(sdot_tiles, s8_tile, 1)
DEFINE_TILES(smull_tiles, s8_tile, 0)
DEFINE_TILES(f32_tiles, float_tile, 0)
DEFINE_TILES(f16_tiles, float_tile, 1)

static void gemm_s8_neondot(int M, int N, int K, const int8_t *A, size_t lda, const int8_t *W,
                            size_t ldw, int32_t *C, size_t ldc)
{
    zq_gemm_tiled(&sdot_tiles, M, N, K, A, lda, W, ldw, C, ldc);
}

static void gemm_s8_neon(int M, int N, int K, const int8_t *A, size_t lda, const int8_t *W,
                         size_t ldw, int32_t *C, size_t ldc)
{
    zq_gemm_tiled(&smull_tiles, M, N, K, A, lda, W, ldw, C, ldc);
}

static void gemm_f16_neon(int M, int N, int K, const float *A, size_t lda, const uint16_t *W,
                          size_t ldw, float *C, size_t ldc)
{
    zq_gemm_tiled(&f16_tiles, M, N, K, A, lda * 4, W, ldw * 2, C, ldc);
}

static void gemm_f32_neon(int M, int N, int K, const float *A, size_t lda, const float *W,
                          size_t ldw, float *C, size_t ldc)
{
    zq_gemm_tiled(&f32_tiles, M, N, K, A, lda * 4, W, ldw * 4, C, ldc);
}

/* ---- quantization and vector helpers ----------------------------------------------------- */

/* Returns max |x|. fmaxnm returns the number when the other operand is NaN, so NaN is skipped
 * as in the reference (plain fmax would return the NaN). */
static float max_abs_neon(const float *x, int K)
{
    float32x4_t vmax = vdupq_n_f32(0.0f);
    int k = 0;
    for (; k + 4 <= K; k += 4)
        vmax = vmaxnmq_f32(vmax, vabsq_f32(vld1q_f32(x + k)));
    float amax = vmaxvq_f32(vmax);
    for (; k < K; k++) {
        const float a = fabsf(x[k]);
        if (a > amax)
            amax = a;
    }
    return amax;
}

/* fcvtns rounds half to even like nearbyintf, but turns NaN into 0; the select restores the
 * reference's -127 for NaN. The clamp keeps -128 out before the saturating narrows. */
static ALWAYS_INLINE int32x4_t quant4(const float *x, float32x4_t vinv)
{
    const float32x4_t v = vmulq_f32(vld1q_f32(x), vinv);
    int32x4_t i = vcvtnq_s32_f32(v);
    i = vminq_s32(vmaxq_s32(i, vdupq_n_s32(-127)), vdupq_n_s32(127));
    return vbslq_s32(vceqq_f32(v, v), i, vdupq_n_s32(-127));
}

static void quantize_row_s8_neon(const float *x, int K, int8_t *q, float *scale)
{
    const float inv = zq_quant_inverse(max_abs_neon(x, K), scale);
    const float32x4_t vinv = vdupq_n_f32(inv);
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        const int16x8_t lo = vcombine_s16(vqmovn_s32(quant4(x + k, vinv)),
                                          vqmovn_s32(quant4(x + k + 4, vinv)));
        const int16x8_t hi = vcombine_s16(vqmovn_s32(quant4(x + k + 8, vinv)),
                                          vqmovn_s32(quant4(x + k + 12, vinv)));
        vst1q_s8(q + k, vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi)));
    }
    for (; k < K; k++)
        q[k] = zq_quant_value(x[k], inv);
}

static float dot_f32_neon(const float *a, const float *b, int n)
{
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vld1q_f32(b + i));
        acc1 = vfmaq_f32(acc1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

/* Multiplies and adds separately (no fused multiply-add) to match the reference bit for bit. */
static void axpy_f32_neon(float alpha, const float *x, float *y, int n)
{
    int i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vmulq_n_f32(vld1q_f32(x + i), alpha)));
    for (; i < n; i++)
        y[i] += alpha * x[i];
}

static void f32_to_f16_neon(const float *x, uint16_t *y, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; i++)
        y[i] = zq_f32_to_f16(x[i]);
}

static void f16_to_f32_neon(const uint16_t *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + i))));
    for (; i < n; i++)
        y[i] = zq_f16_to_f32(x[i]);
}

/* Attention over an f16 cache. Eight lanes are two vectors of four: lo holds lanes 0-3 and hi
 * lanes 4-7, so the sums come out as in the reference. */
static void attn_scores_f16_neon(const float *q, const uint16_t *keys, int n, int heads, int hd,
                                 float *scores, size_t ld)
{
    if (hd % 8 != 0) {
        zq_attn_scores_f16_ref(q, keys, n, heads, hd, scores, ld);
        return;
    }
    const size_t d = (size_t)heads * hd;
    for (int i = 0; i < n; i++) {
        const uint16_t *key = keys + (size_t)i * d;
        for (int h = 0; h < heads; h++) {
            const size_t at = (size_t)h * hd;
            float32x4_t lo = vdupq_n_f32(0), hi = vdupq_n_f32(0);
            for (int j = 0; j < hd; j += 8) {
                const float16x8_t k = vreinterpretq_f16_u16(vld1q_u16(key + at + j));
                lo = vaddq_f32(lo, vmulq_f32(vld1q_f32(q + at + j), vcvt_f32_f16(vget_low_f16(k))));
                hi = vaddq_f32(hi, vmulq_f32(vld1q_f32(q + at + j + 4), vcvt_high_f32_f16(k)));
            }
            const float32x4_t pairs = vpaddq_f32(lo, hi);
            const float32x4_t quads = vpaddq_f32(pairs, pairs);
            scores[(size_t)h * ld + i] = vgetq_lane_f32(quads, 0) + vgetq_lane_f32(quads, 1);
        }
    }
}

static void attn_values_f16_neon(const float *w, size_t ld, const uint16_t *values, int n,
                                 int heads, int hd, float *out)
{
    if (hd % 8 != 0) {
        zq_attn_values_f16_ref(w, ld, values, n, heads, hd, out);
        return;
    }
    const size_t d = (size_t)heads * hd;
    for (int i = 0; i < n; i++) {
        const uint16_t *value = values + (size_t)i * d;
        for (int h = 0; h < heads; h++) {
            const float wi = w[(size_t)h * ld + i];
            float *o = out + (size_t)h * hd;
            for (int j = 0; j < hd; j += 8) {
                const float16x8_t v = vreinterpretq_f16_u16(vld1q_u16(value + (size_t)h * hd + j));
                vst1q_f32(o + j, vaddq_f32(vld1q_f32(o + j),
                                           vmulq_n_f32(vcvt_f32_f16(vget_low_f16(v)), wi)));
                vst1q_f32(o + j + 4,
                          vaddq_f32(vld1q_f32(o + j + 4), vmulq_n_f32(vcvt_high_f32_f16(v), wi)));
            }
        }
    }
}

/* Attention over an int8 cache: the dot products are exact in int32 (any order), the scaling
 * and the weighted sums (fused multiply-adds) follow the reference's order. */
static ALWAYS_INLINE void attn_scores_q8_body(int sdot, const int8_t *q, const float *q_scale,
                                              const int8_t *keys, const float *k_scales, int n,
                                              int heads, int hd, float *scores, size_t ld)
{
    const size_t d = (size_t)heads * hd;
    for (int i = 0; i < n; i++) {
        const int8_t *key = keys + (size_t)i * d;
        for (int h = 0; h < heads; h++) {
            const size_t at = (size_t)h * hd;
            int32x4_t acc = vdupq_n_s32(0);
            for (int j = 0; j < hd; j += 16) {
                const int8x16_t a = vld1q_s8(q + at + j), k = vld1q_s8(key + at + j);
                acc = sdot ? dot16_sdot(acc, a, k) : dot16_smull(acc, a, k);
            }
            const float k_scale = k_scales[(size_t)i * heads + h];
            scores[(size_t)h * ld + i] = ((float)vaddvq_s32(acc) * q_scale[h]) * k_scale;
        }
    }
}

static void attn_scores_q8_neondot(const int8_t *q, const float *q_scale, const int8_t *keys,
                                   const float *k_scales, int n, int heads, int hd, float *scores,
                                   size_t ld)
{
    if (hd % 16 != 0)
        zq_attn_scores_q8_ref(q, q_scale, keys, k_scales, n, heads, hd, scores, ld);
    else
        attn_scores_q8_body(1, q, q_scale, keys, k_scales, n, heads, hd, scores, ld);
}

static void attn_scores_q8_neon(const int8_t *q, const float *q_scale, const int8_t *keys,
                                const float *k_scales, int n, int heads, int hd, float *scores,
                                size_t ld)
{
    if (hd % 16 != 0)
        zq_attn_scores_q8_ref(q, q_scale, keys, k_scales, n, heads, hd, scores, ld);
    else
        attn_scores_q8_body(0, q, q_scale, keys, k_scales, n, heads, hd, scores, ld);
}

static void attn_values_q8_neon(const float *w, size_t ld, const int8_t *values,
                                const float *v_scales, int n, int heads, int hd, float *out)
{
    if (hd % 8 != 0) {
        zq_attn_values_q8_ref(w, ld, values, v_scales, n, heads, hd, out);
        return;
    }
    const size_t d = (size_t)heads * hd;
    for (int i = 0; i < n; i++) {
        const int8_t *value = values + (size_t)i * d;
        for (int h = 0; h < heads; h++) {
            const float p = w[(size_t)h * ld + i] * v_scales[(size_t)i * heads + h];
            float *o = out + (size_t)h * hd;
            for (int j = 0; j < hd; j += 8) {
                const int16x8_t v = vmovl_s8(vld1_s8(value + (size_t)h * hd + j));
                const float32x4_t lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(v)));
                const float32x4_t hi = vcvtq_f32_s32(vmovl_high_s16(v));
                vst1q_f32(o + j, vfmaq_n_f32(vld1q_f32(o + j), lo, p));
                vst1q_f32(o + j + 4, vfmaq_n_f32(vld1q_f32(o + j + 4), hi, p));
            }
        }
    }
}

const zq_kernels zq_kernels_neondot_table = {
    .name = "neondot",
    .gemm_s8 = gemm_s8_neondot,
    .gemm_f16 = gemm_f16_neon,
    .gemm_f32 = gemm_f32_neon,
    .quantize_row_s8 = quantize_row_s8_neon,
    .dot_f32 = dot_f32_neon,
    .axpy_f32 = axpy_f32_neon,
    .f32_to_f16 = f32_to_f16_neon,
    .f16_to_f32 = f16_to_f32_neon,
    .attn_scores_f16 = attn_scores_f16_neon,
    .attn_values_f16 = attn_values_f16_neon,
    .attn_scores_q8 = attn_scores_q8_neondot,
    .attn_values_q8 = attn_values_q8_neon,
};

const zq_kernels zq_kernels_neon_table = {
    .name = "neon",
    .gemm_s8 = gemm_s8_neon,
    .gemm_f16 = gemm_f16_neon,
    .gemm_f32 = gemm_f32_neon,
    .quantize_row_s8 = quantize_row_s8_neon,
    .dot_f32 = dot_f32_neon,
    .axpy_f32 = axpy_f32_neon,
    .f32_to_f16 = f32_to_f16_neon,
    .f16_to_f32 = f16_to_f32_neon,
    .attn_scores_f16 = attn_scores_f16_neon,
    .attn_values_f16 = attn_values_f16_neon,
    .attn_scores_q8 = attn_scores_q8_neon,
    .attn_values_q8 = attn_values_q8_neon,
};
