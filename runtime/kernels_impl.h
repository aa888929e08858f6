/*
 * kernels_impl.h - private to the kernel files: the per-ISA tables that kernels_dispatch.c
 * selects from, and scalar helpers that every variant shares so that its tails and its
 * quantization round exactly like the reference.
 */
#ifndef ZQ_KERNELS_IMPL_H
#define ZQ_KERNELS_IMPL_H

#include "kernels.h"

#include <math.h>

/* Tables; a table exists only in builds for its architecture (see the Makefile's SIMD_SKIP). */
extern const zq_kernels zq_kernels_ref_table;
extern const zq_kernels zq_kernels_avx2_table;
extern const zq_kernels zq_kernels_avx512_table;
extern const zq_kernels zq_kernels_neon_table;
extern const zq_kernels zq_kernels_neondot_table;

/* Returns the table that zq_kernels_best() uses when ZQ_KERNELS is set to forced (NULL, "" or
 * "auto": the fastest supported table). An unknown or unsupported name logs a warning and
 * returns the fastest supported table. */
const zq_kernels *zq_kernels_select(const char *forced);

/* Attention over an f16 or int8 cache (see zq_kernels). The SIMD versions fall back to the
 * portable ones when hd is not a multiple of their vector width. The AVX-512 table uses the
 * AVX2 versions (kernels_attn_avx2.c), because 16-lane vectors would change the order of the
 * additions. */
void zq_attn_scores_f16_ref(const float *q, const uint16_t *keys, int n, int heads, int hd,
                            float *scores, size_t ld);
void zq_attn_values_f16_ref(const float *w, size_t ld, const uint16_t *values, int n, int heads,
                            int hd, float *out);
void zq_attn_scores_f16_avx2(const float *q, const uint16_t *keys, int n, int heads, int hd,
                             float *scores, size_t ld);
void zq_attn_values_f16_avx2(const float *w, size_t ld, const uint16_t *values, int n, int heads,
                             int hd, float *out);
void zq_attn_scores_q8_ref(const int8_t *q, const float *q_scale, const int8_t *keys,
                           const float *k_scales, int n, int heads, int hd, float *scores,
                           size_t ld);
void zq_attn_values_q8_ref(const float *w, size_t ld, const int8_t *values, const float *v_scales,
                           int n, int heads, int hd, float *out);
void zq_attn_scores_q8_avx2(const int8_t *q, const float *q_scale, const int8_t *keys,
                            const float *k_scales, int n, int heads, int hd, float *scores,
                            size_t ld);
void zq_attn_values_q8_avx2(const float *w, size_t ld, const int8_t *values,
                            const float *v_scales, int n, int heads, int hd, float *out);

/* ---- tiled GEMM driver (kernels_tiled.c) --------------------------------------------------- */

#define ZQ_TILE_MR_MAX 4   /* rows of A per register tile */
#define ZQ_TILE_NR_MAX 16  /* rows of W per register tile */
#define ZQ_TILE_OUT_MAX 16 /* mr * nr */

/* Computes out[m * nr + j] = dot(a[m], w[j]) over K for one mr x nr tile, out being int32 or
 * float. The a[] and w[] pointers may repeat a row (edge tiles); the results are then unused. */
typedef void (*zq_tile_fn)(const void *const *a, const void *const *w, int K, void *out);

/* One ISA's tiles: tile[mr] handles a panel of mr rows of A against nr[mr] rows of W. */
typedef struct {
    zq_tile_fn tile[ZQ_TILE_MR_MAX + 1];
    int nr[ZQ_TILE_MR_MAX + 1];
    int nb; /* rows of W per cache block, walked by every panel of A before the next block */
} zq_tile_set;

/* C [M][ldc] (4-byte elements) = A · W^T with the given tiles. lda_bytes and ldw_bytes are row
 * strides in bytes, so one driver serves int8, f16 and f32 operands. Every element goes through
 * the same tile code path whatever M and N are, so results do not depend on the matrix shape. */
void zq_gemm_tiled(const zq_tile_set *tiles, int M, int N, int K, const void *A, size_t lda_bytes,
                   const void *W, size_t ldw_bytes, void *C, size_t ldc);

/* ---- quantization ------------------------------------------------------------------------ */

/* Rows whose max |x| is below this quantize to all zeros with scale 0: 1 / (max / 127) would
 * overflow float for max below about 3.7e-37, and such rows contribute nothing anyway. */
#define ZQ_QUANT_MIN_ABS 1e-30f

/* Sets the scale of a row with the given max |x| and returns its reciprocal, the factor that
 * every variant multiplies by (x * inv, not x / scale, so that SIMD and scalar agree). */
static inline float zq_quant_inverse(float amax, float *scale)
{
    if (!(amax >= ZQ_QUANT_MIN_ABS)) { /* also catches NaN */
        *scale = 0.0f;
        return 0.0f;
    }
    *scale = amax / 127.0f;
    return 1.0f / *scale;
}

/* Quantizes one value: round half to even (nearbyintf in the default rounding mode, like the
 * cvtps2dq instruction), clamped to [-127, 127]. NaN maps to -127, like cvtps2dq's integer
 * indefinite after the clamp; -128 is never produced. */
static inline int8_t zq_quant_value(float x, float inv)
{
    float r = nearbyintf(x * inv);
    if (r >= 127.0f)
        return 127;
    if (r > -127.0f)
        return (int8_t)r;
    return -127;
}

#endif /* ZQ_KERNELS_IMPL_H */
