/*
 * linear_dnnl.h - the oneDNN path of zq_linear for int8 weights with one scale per row.
 * Private to linear.c, its tests and bench/kernel_bench.c.
 *
 * oneDNN 2.6's int8 matmul is exact only where its kernels cannot saturate: on CPUs with VNNI
 * (vpdpbusd) for any u8 activations, on plain AVX2 only for u8 activations of at most 7 bits
 * (vpmaddubsw pair sums must stay within int16). So activations are quantized per row to
 * [-127, 127] with VNNI and to [-63, 63] without, then shifted to u8 by a zero point that
 * oneDNN subtracts exactly in int32.
 */
#ifndef ZQ_LINEAR_DNNL_H
#define ZQ_LINEAR_DNNL_H

#include "kernels.h"

#include <stdbool.h>

/* When zq_linear takes the oneDNN path. The environment variable ZQ_DNNL=0|1 sets the
 * initial mode (unset: ZQ_DNNL_AUTO). */
typedef enum {
    ZQ_DNNL_AUTO = -1, /* where oneDNN is faster at equal accuracy (bench/KERNEL_CHOICE.md) */
    ZQ_DNNL_OFF = 0,   /* never */
    ZQ_DNNL_ON = 1,    /* for every int8 row-scale weight, any M (tests compare the paths) */
} zq_dnnl_mode;

/* Returns whether this build has the oneDNN path (ZQ_USE_DNNL on x86-64). */
bool zq_linear_dnnl_available(void);

/* Overrides ZQ_DNNL for the whole process; for tests and benchmarks. */
void zq_linear_set_dnnl(zq_dnnl_mode mode);

/* Returns whether zq_linear should compute this weight for M tokens through oneDNN. */
bool zq_linear_uses_dnnl(const zq_weight *w, int M, int n_threads);

/* Returns the largest quantized activation magnitude on the oneDNN path: 127 or 63. */
int zq_linear_dnnl_activation_max(void);

/* y [M][w->rows] = x · W^T + bias through oneDNN, for ZQ_TYPE_Q8 weights with row scales and
 * M <= s->max_m. Quantizes x into s. Returns false, with y unspecified, if oneDNN failed
 * (logged once); the caller then computes y itself. oneDNN allocates inside this call. */
bool zq_linear_dnnl(const zq_weight *w, const float *bias, const float *x, int M, float *y,
                    zq_linear_scratch *s, int n_threads);

#endif /* ZQ_LINEAR_DNNL_H */
