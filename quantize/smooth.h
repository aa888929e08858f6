/*
 * smooth.h - SmoothQuant-style migration of activation outliers into the weights, for the W8A8
 * int8 scheme.
 *
 * The runtime quantizes each token's activations with one scale, so a few input channels that
 * are 20-50 times larger than the rest leave the others only a few int8 levels. For the inputs
 * of c_attn and c_fc, which are LayerNorm outputs, the migration picks per input channel j
 *   s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)
 * (max|X_j| over calibration tokens, max|W_j| over the weights that read channel j), divides
 * the LayerNorm's gain and bias by s_j and multiplies the weights that read channel j by s_j.
 * The network computes the same function in exact arithmetic; alpha moves the difficulty
 * between activations (alpha = 0: untouched) and weights (alpha = 1: activations flat).
 */
#ifndef ZQ_SMOOTH_H
#define ZQ_SMOOTH_H

#include "../formats/hf.h"
#include "../runtime/zq.h"

#include <stdint.h>

/* Per-channel maxima of the absolute inputs of c_attn and c_fc over calibration tokens. */
typedef struct {
    int n_layer;
    int n_embd;
    float *attn_in; /* [n_layer][n_embd]: the ln_1 outputs */
    float *fc_in;   /* [n_layer][n_embd]: the ln_2 outputs */
    long long tokens;
} zq_act_max;

/* Runs model over ids[0..n_ids) in non-overlapping windows of min(128, n_ctx) tokens (no
 * output head) and records the maxima. out is allocated; free it with zq_act_max_free. */
zq_status zq_smooth_calibrate(const zq_model *model, const int32_t *ids, int n_ids,
                              int n_threads, zq_act_max *out);
void zq_act_max_free(zq_act_max *act);

/* Computes s [n_in] for a Conv1D weight w [n_in][n_out] (Hugging Face layout: row j contains the
 * weights that read input channel j) and the input maxima act_max [n_in]. A channel whose
 * activation or weight maximum is 0 (or not finite) gets s = 1. */
void zq_smooth_factors(const float *act_max, const float *w, int n_in, int n_out, float alpha,
                       float *s);

/* Applies the migration to every layer of hf in place: ln_1 / c_attn with act->attn_in and
 * ln_2 / c_fc with act->fc_in. ZQ_ERR_INVALID_ARG if the shapes do not match hf or alpha is
 * outside [0, 1]. */
zq_status zq_smooth_apply(zq_hf_model *hf, const zq_act_max *act, float alpha);

#endif /* ZQ_SMOOTH_H */
