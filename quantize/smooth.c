/*
 * smooth.c - activation calibration and the SmoothQuant-style migration described in smooth.h.
 * Calibration drives the runtime's forward pass directly (runtime/model.h) with a hook on the
 * LayerNorm outputs, so the statistics come from the same arithmetic that inference uses.
 */
#include "smooth.h"

#include "../runtime/internal.h"
#include "../runtime/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALIBRATION_WINDOW 128

void zq_act_max_free(zq_act_max *act)
{
    free(act->attn_in);
    free(act->fc_in);
    memset(act, 0, sizeof *act);
}

static void record_max(int layer, int site, const float *h, int n, int n_embd, void *user)
{
    zq_act_max *act = user;
    float *max = (site == 0 ? act->attn_in : act->fc_in) + (size_t)layer * n_embd;
    for (int r = 0; r < n; r++) {
        const float *row = h + (size_t)r * n_embd;
        for (int j = 0; j < n_embd; j++)
            max[j] = fabsf(row[j]) > max[j] ? fabsf(row[j]) : max[j];
    }
}

/* Runs the windows through the forward pass; the caller owns kv, ws and logits. */
static zq_status run_windows(const zq_model *m, const int32_t *ids, int n_ids, int window,
                             int n_threads, zq_kv *kv, zq_workspace *ws, float *const *logits,
                             zq_act_max *act)
{
    int pos[CALIBRATION_WINDOW];
    zq_kv *kvs[CALIBRATION_WINDOW];
    for (int i = 0; i < window; i++) {
        pos[i] = i;
        kvs[i] = kv;
    }
    const zq_forward_hooks hooks = {.norm_fn = record_max, .norm_user = act};
    for (int begin = 0; begin < n_ids; begin += window) {
        const int n = n_ids - begin < window ? n_ids - begin : window;
        for (int i = 0; i < n; i++)
            if (ids[begin + i] < 0 || ids[begin + i] >= m->hp.n_vocab)
                return zq_fail(ZQ_ERR_INVALID_ARG, "calibration token %d is outside [0, %d)",
                               ids[begin + i], m->hp.n_vocab);
        zq_forward(m, ws, kvs, pos, ids + begin, n, logits, n_threads, &hooks);
        act->tokens += n;
    }
    return ZQ_OK;
}

zq_status zq_smooth_calibrate(const zq_model *model, const int32_t *ids, int n_ids,
                              int n_threads, zq_act_max *out)
{
    memset(out, 0, sizeof *out);
    const zq_hparams *hp = &model->hp;
    const int window = hp->n_ctx < CALIBRATION_WINDOW ? hp->n_ctx : CALIBRATION_WINDOW;
    const size_t count = (size_t)hp->n_layer * hp->n_embd;
    n_threads = zq_resolve_threads(n_threads);
    out->n_layer = hp->n_layer;
    out->n_embd = hp->n_embd;
    out->attn_in = calloc(count, sizeof(float));
    out->fc_in = calloc(count, sizeof(float));
    float *const *no_logits = calloc(CALIBRATION_WINDOW, sizeof(float *));

    zq_kv kv;
    zq_workspace ws;
    memset(&kv, 0, sizeof kv);
    memset(&ws, 0, sizeof ws);
    zq_status st = ZQ_OK;
    if (!out->attn_in || !out->fc_in || !no_logits)
        st = zq_fail(ZQ_ERR_NOMEM, "calibration: out of memory");
    if (st == ZQ_OK)
        st = zq_kv_init(&kv, hp, window, ZQ_KV_F32); /* the source model, exactly */
    if (st == ZQ_OK)
        st = zq_kv_reserve(&kv, window);
    if (st == ZQ_OK)
        st = zq_workspace_init(&ws, hp, window, n_threads);
    if (st == ZQ_OK)
        st = run_windows(model, ids, n_ids, window, n_threads, &kv, &ws, no_logits, out);
    zq_workspace_free(&ws);
    zq_kv_free(&kv);
    free((void *)no_logits);
    if (st != ZQ_OK)
        zq_act_max_free(out);
    return st;
}

void zq_smooth_factors(const float *act_max, const float *w, int n_in, int n_out, float alpha,
                       float *s)
{
    for (int j = 0; j < n_in; j++) {
        float w_max = 0;
        for (int o = 0; o < n_out; o++)
            w_max = fabsf(w[(size_t)j * n_out + o]) > w_max ? fabsf(w[(size_t)j * n_out + o])
                                                             : w_max;
        const double f = pow(act_max[j], alpha) / pow(w_max, 1.0 - alpha);
        s[j] = act_max[j] > 0 && w_max > 0 && isfinite(f) && f > 0 ? (float)f : 1.0f;
    }
}

/* Divides a LayerNorm's gain and bias by s and multiplies the rows of the Conv1D weight that
 * follows it ([n_embd][n_out]) by s. */
static zq_status migrate(zq_hf_model *hf, int layer, const char *ln, const char *linear,
                         const float *act_max, float alpha, float *s)
{
    char gain_name[96], bias_name[96], weight_name[96];
    snprintf(gain_name, sizeof gain_name, "h.%d.%s.weight", layer, ln);
    snprintf(bias_name, sizeof bias_name, "h.%d.%s.bias", layer, ln);
    snprintf(weight_name, sizeof weight_name, "h.%d.%s.weight", layer, linear);
    const zq_hf_tensor *gain = zq_hf_find(hf, gain_name);
    const zq_hf_tensor *bias = zq_hf_find(hf, bias_name);
    const zq_hf_tensor *w = zq_hf_find(hf, weight_name);
    const int d = hf->hparams.n_embd;
    if (!gain || !bias || !w || w->ndim != 2 || w->shape[0] != d || gain->shape[0] != d ||
        bias->shape[0] != d)
        return zq_fail(ZQ_ERR_INVALID_ARG, "cannot migrate layer %d: %s, %s or %s is missing "
                       "or not [%d, ...]", layer, gain_name, bias_name, weight_name, d);

    const int n_out = (int)w->shape[1];
    zq_smooth_factors(act_max, w->data, d, n_out, alpha, s);
    for (int j = 0; j < d; j++) {
        gain->data[j] /= s[j];
        bias->data[j] /= s[j];
        float *row = w->data + (size_t)j * n_out;
        for (int o = 0; o < n_out; o++)
            row[o] *= s[j];
    }
    return ZQ_OK;
}

zq_status zq_smooth_apply(zq_hf_model *hf, const zq_act_max *act, float alpha)
{
    if (!(alpha >= 0 && alpha <= 1))
        return zq_fail(ZQ_ERR_INVALID_ARG, "migration strength alpha %g is outside [0, 1]",
                       (double)alpha);
    if (act->n_layer != hf->hparams.n_layer || act->n_embd != hf->hparams.n_embd)
        return zq_fail(ZQ_ERR_INVALID_ARG,
                       "calibration statistics are for %d layers of %d, the model has %d of %d",
                       act->n_layer, act->n_embd, hf->hparams.n_layer, hf->hparams.n_embd);
    float *s = malloc((size_t)act->n_embd * sizeof(float));
    if (!s)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory");
    zq_status st = ZQ_OK;
    for (int l = 0; l < act->n_layer && st == ZQ_OK; l++) {
        const size_t off = (size_t)l * act->n_embd;
        st = migrate(hf, l, "ln_1", "attn.c_attn", act->attn_in + off, alpha, s);
        if (st == ZQ_OK)
            st = migrate(hf, l, "ln_2", "mlp.c_fc", act->fc_in + off, alpha, s);
    }
    free(s);
    return st;
}
