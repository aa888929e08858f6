/*
 * kernels_ref.c - the portable reference of every kernel: plain loops, int32 accumulation for
 * int8, float accumulation in k order for f32 and f16. The SIMD variants are tested against it.
 */
#include "internal.h"
#include "kernels_impl.h"

static void gemm_s8_ref(int M, int N, int K, const int8_t *A, size_t lda, const int8_t *W,
                        size_t ldw, int32_t *C, size_t ldc)
{
    for (int m = 0; m < M; m++) {
        const int8_t *a = A + (size_t)m * lda;
        for (int n = 0; n < N; n++) {
            const int8_t *w = W + (size_t)n * ldw;
            int32_t sum = 0;
            for (int k = 0; k < K; k++)
                sum += (int32_t)a[k] * (int32_t)w[k];
            C[(size_t)m * ldc + n] = sum;
        }
    }
}

static void gemm_f16_ref(int M, int N, int K, const float *A, size_t lda, const uint16_t *W,
                         size_t ldw, float *C, size_t ldc)
{
    for (int m = 0; m < M; m++) {
        const float *a = A + (size_t)m * lda;
        for (int n = 0; n < N; n++) {
            const uint16_t *w = W + (size_t)n * ldw;
            float sum = 0.0f;
            for (int k = 0; k < K; k++)
                sum += a[k] * zq_f16_to_f32(w[k]);
            C[(size_t)m * ldc + n] = sum;
        }
    }
}

static void gemm_f32_ref(int M, int N, int K, const float *A, size_t lda, const float *W,
                         size_t ldw, float *C, size_t ldc)
{
    for (int m = 0; m < M; m++) {
        const float *a = A + (size_t)m * lda;
        for (int n = 0; n < N; n++) {
            const float *w = W + (size_t)n * ldw;
            float sum = 0.0f;
            for (int k = 0; k < K; k++)
                sum += a[k] * w[k];
            C[(size_t)m * ldc + n] = sum;
        }
    }
}

/* NaN inputs are skipped by the max and quantize to -127 (see zq_quant_value). The SIMD
 * variants do the same, so every variant agrees even on non-finite rows. */
static void quantize_row_s8_ref(const float *x, int K, int8_t *q, float *scale)
{
    float amax = 0.0f;
    for (int k = 0; k < K; k++) {
        float a = fabsf(x[k]);
        if (a > amax)
            amax = a;
    }
    float inv = zq_quant_inverse(amax, scale);
    for (int k = 0; k < K; k++)
        q[k] = zq_quant_value(x[k], inv);
}

static float dot_f32_ref(const float *a, const float *b, int n)
{
    float sum = 0.0f;
    for (int i = 0; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

static void axpy_f32_ref(float alpha, const float *x, float *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

static void f32_to_f16_ref(const float *x, uint16_t *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = zq_f32_to_f16(x[i]);
}

static void f16_to_f32_ref(const uint16_t *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = zq_f16_to_f32(x[i]);
}

void zq_attn_scores_f16_ref(const float *q, const uint16_t *keys, int n, int heads, int hd,
                            float *scores, size_t ld)
{
    const size_t d = (size_t)heads * hd;
    for (int i = 0; i < n; i++) {
        const uint16_t *key = keys + (size_t)i * d;
        for (int h = 0; h < heads; h++) {
            float lanes[8] = {0};
            for (int j = 0; j < hd; j++)
                lanes[j % 8] += q[h * hd + j] * zq_f16_to_f32(key[h * hd + j]);
            scores[(size_t)h * ld + i] = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                                         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
        }
    }
}

void zq_attn_values_f16_ref(const float *w, size_t ld, const uint16_t *values, int n, int heads,
                            int hd, float *out)
{
    const size_t d = (size_t)heads * hd;
    for (int i = 0; i < n; i++) {
        const uint16_t *value = values + (size_t)i * d;
        for (int h = 0; h < heads; h++) {
            const float wi = w[(size_t)h * ld + i];
            for (int j = 0; j < hd; j++)
                out[h * hd + j] += wi * zq_f16_to_f32(value[h * hd + j]);
        }
    }
}

void zq_attn_scores_q8_ref(const int8_t *q, const float *q_scale, const int8_t *keys,
                           const float *k_scales, int n, int heads, int hd, float *scores,
                           size_t ld)
{
    const size_t d = (size_t)heads * hd;
    for (int i = 0; i < n; i++) {
        const int8_t *key = keys + (size_t)i * d;
        for (int h = 0; h < heads; h++) {
            int32_t dot = 0;
            for (int j = 0; j < hd; j++)
                dot += (int32_t)q[h * hd + j] * key[h * hd + j];
            const float k_scale = k_scales[(size_t)i * heads + h];
            scores[(size_t)h * ld + i] = ((float)dot * q_scale[h]) * k_scale;
        }
    }
}

void zq_attn_values_q8_ref(const float *w, size_t ld, const int8_t *values, const float *v_scales,
                           int n, int heads, int hd, float *out)
{
    const size_t d = (size_t)heads * hd;
    for (int i = 0; i < n; i++) {
        const int8_t *value = values + (size_t)i * d;
        for (int h = 0; h < heads; h++) {
            const float p = w[(size_t)h * ld + i] * v_scales[(size_t)i * heads + h];
            for (int j = 0; j < hd; j++)
                out[h * hd + j] = fmaf(p, (float)value[h * hd + j], out[h * hd + j]);
        }
    }
}

const zq_kernels zq_kernels_ref_table = {
    .name = "ref",
    .gemm_s8 = gemm_s8_ref,
    .gemm_f16 = gemm_f16_ref,
    .gemm_f32 = gemm_f32_ref,
    .quantize_row_s8 = quantize_row_s8_ref,
    .dot_f32 = dot_f32_ref,
    .axpy_f32 = axpy_f32_ref,
    .f32_to_f16 = f32_to_f16_ref,
    .f16_to_f32 = f16_to_f32_ref,
    .attn_scores_f16 = zq_attn_scores_f16_ref,
    .attn_values_f16 = zq_attn_values_f16_ref,
    .attn_scores_q8 = zq_attn_scores_q8_ref,
    .attn_values_q8 = zq_attn_values_q8_ref,
};
