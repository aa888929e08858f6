/*
 * kernels.h - matrix kernels behind the linear layers and attention, with one table of function
 * pointers per instruction set. zq_kernels_best() picks the table once from CPU features; every
 * variant must equal the portable reference (exactly, for the int8 paths).
 *
 * Layouts: activations A [M][lda] row-major; weights W [N][ldw] row-major (one row per output
 * feature); results C [M][ldc]. All kernels compute C[m][n] = sum_k A[m][k] * W[n][k].
 */
#ifndef ZQ_KERNELS_H
#define ZQ_KERNELS_H

#include "tensor.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name; /* "ref", "avx2", "avx512vnni", "neon" */

    /* int8 x int8 -> int32, exact. A and W values lie in [-127, 127]. */
    void (*gemm_s8)(int M, int N, int K, const int8_t *A, size_t lda, const int8_t *W,
                    size_t ldw, int32_t *C, size_t ldc);

    /* f32 activations x f16 weights -> f32. */
    void (*gemm_f16)(int M, int N, int K, const float *A, size_t lda, const uint16_t *W,
                     size_t ldw, float *C, size_t ldc);

    /* f32 x f32 -> f32. */
    void (*gemm_f32)(int M, int N, int K, const float *A, size_t lda, const float *W,
                     size_t ldw, float *C, size_t ldc);

    /* Symmetric per-row quantization: q = round(x / scale), scale = max|x| / 127, q in
     * [-127, 127]; an all-zero row gets scale 0 and q = 0. */
    void (*quantize_row_s8)(const float *x, int K, int8_t *q, float *scale);

    float (*dot_f32)(const float *a, const float *b, int n);
    void (*axpy_f32)(float alpha, const float *x, float *y, int n); /* y += alpha * x */

    /* Conversions between f32 and IEEE half (the f16 KV cache). f32 to f16 rounds to nearest
     * even; NaN stays NaN with the quiet bit set, as the F16C and NEON instructions do, so every
     * table gives the same bits. */
    void (*f32_to_f16)(const float *x, uint16_t *y, size_t n);
    void (*f16_to_f32)(const uint16_t *x, float *y, size_t n);

    /* Attention of one token over n rows of an f16 cache, each row holding heads * hd halves.
     * attn_scores_f16 sets scores[h * ld + i] to q_h . key_h of row i, summed in eight lanes
     * (element j goes to lane j % 8) that are then added as ((0+1)+(2+3))+((4+5)+(6+7)).
     * attn_values_f16 adds w[h * ld + i] * value_h of row i to out[h * hd ..], row by row in
     * order. Every product is rounded before its addition (no fused multiply-add), so all
     * tables give the same bits. */
    void (*attn_scores_f16)(const float *q, const uint16_t *keys, int n, int heads, int hd,
                            float *scores, size_t ld);
    void (*attn_values_f16)(const float *w, size_t ld, const uint16_t *values, int n, int heads,
                            int hd, float *out);

    /* The same over an int8 cache. Its rows contain heads * hd values in [-127, 127], with
     * scales[i * heads + h] per row i and head h, and q is the query quantized per head the
     * same way (q_scale[h]). attn_scores_q8 sets scores[h * ld + i] to
     * ((float)dot_h * q_scale[h]) * k_scales[i * heads + h], the dot product exact in int32.
     * attn_values_q8 adds p * value_h[j] to out[h * hd + j] with one fused multiply-add
     * (fmaf), where p = w[h * ld + i] * v_scales[i * heads + h], row by row in order. Fused,
     * because converting the int8 values already costs two instructions per vector: a separate
     * multiply made the kernel a quarter slower. */
    void (*attn_scores_q8)(const int8_t *q, const float *q_scale, const int8_t *keys,
                           const float *k_scales, int n, int heads, int hd, float *scores,
                           size_t ld);
    void (*attn_values_q8)(const float *w, size_t ld, const int8_t *values, const float *v_scales,
                           int n, int heads, int hd, float *out);
} zq_kernels;

const zq_kernels *zq_kernels_ref(void);
/* Returns the fastest table this CPU supports (cached after the first call). The environment
 * variable ZQ_KERNELS=ref|avx2|... forces one, for tests and benchmarks. */
const zq_kernels *zq_kernels_best(void);
/* Returns the named table, or NULL if unknown or unsupported by this CPU. */
const zq_kernels *zq_kernels_by_name(const char *name);

/* Scratch for zq_linear: quantized activations of up to max_m rows of max_k columns. */
typedef struct {
    int8_t *q;     /* [max_m][max_k] */
    float *scales; /* [max_m] */
    int max_m;
    int max_k;
} zq_linear_scratch;

zq_status zq_linear_scratch_init(zq_linear_scratch *s, int max_m, int max_k);
void zq_linear_scratch_free(zq_linear_scratch *s);

/* y [M][w->rows] = x [M][w->cols] · W^T + bias (bias may be NULL), for any weight type. Q8
 * weights quantize x per row (W8A8) with int32 accumulation, then scale by row (or group)
 * scale times the token's scale. Runs on n_threads OpenMP threads split over output rows; the
 * result does not depend on n_threads. Allocates nothing. */
void zq_linear(const zq_kernels *k, const zq_weight *w, const float *bias, const float *x, int M,
               float *y, zq_linear_scratch *s, int n_threads);

/* A post-op of zq_linear_post: work on output features [n0, n1) of every row of y [M][ld]. */
typedef struct {
    void (*fn)(float *y, size_t ld, int M, int n0, int n1, void *user);
    void *user;
} zq_post_op;

/* As zq_linear, then applies post (if not NULL) to every output feature once. Each thread
 * applies it to the features it computed, right after computing them, which replaces a serial
 * pass over y afterwards. */
void zq_linear_post(const zq_kernels *k, const zq_weight *w, const float *bias, const float *x,
                    int M, float *y, zq_linear_scratch *s, int n_threads, const zq_post_op *post);

/* Returns a view of row r of s as a scratch of one row. */
zq_linear_scratch zq_linear_scratch_row(const zq_linear_scratch *s, int r);

/* The maximum number of threads of one product. */
#define ZQ_LINEAR_MAX_THREADS 64

/* A stretch [front, back) of 16-row units of output rows that one thread works through. Both
 * ends are packed into one word (front in the low 32 bits), so one compare-and-swap moves either
 * end. Each span is alone on its cache line, so claiming does not slow the product's reads. */
typedef struct {
    _Alignas(64) _Atomic unsigned long long ends;
} zq_row_span;

/* The shared state of one-row products that every thread of an enclosing OpenMP team computes
 * one after another (decode), each numbered by a step. Two sets of spans alternate, so the set
 * of step s + 1 can be filled while threads still claim rows of step s. */
typedef struct {
    zq_row_span spans[2][ZQ_LINEAR_MAX_THREADS];
    int n_spans[2];
} zq_linear_team;

/* Fills the spans of product step, which has rows output rows, for a team of threads threads.
 * Call it for the first step before the team starts. zq_linear_team_run fills the later ones. */
void zq_linear_team_init(zq_linear_team *team, int step, int rows, int threads);

/* Computes product step, zq_linear_post of one row x, with every thread of the enclosing team
 * (at most ZQ_LINEAR_MAX_THREADS). All threads pass the same arguments except own, the thread's
 * own one-row scratch, into which it quantizes x. Thread 0 then fills the spans of step + 1 for
 * a product of next_rows rows (0 for none). The team meets at a barrier before the function
 * returns, so y and the post-op's writes are complete. The result is that of zq_linear_post. */
void zq_linear_team_run(zq_linear_team *team, int step, const zq_kernels *k, const zq_weight *w,
                        const float *bias, const float *x, float *y, zq_linear_scratch *own,
                        const zq_post_op *post, int next_rows);

#endif /* ZQ_KERNELS_H */
