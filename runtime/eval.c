/*
 * eval.c - perplexity and KL-divergence statistics of models against a reference, window by
 * window (definitions in eval.h).
 *
 * Per window, the reference runs first and its logits stay in a [window][n_vocab] buffer. Each
 * other model then runs into a second buffer, and every scored row is compared with the
 * reference's. Log-probabilities are formed on the fly as logit - logsumexp in double, so no
 * [tokens][n_vocab] array is ever held and a model compared with itself gets a KL of exactly 0.
 */
#include "eval.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- statistics -------------------------------------------------------------------------- */

zq_status zq_eval_acc_init(zq_eval_acc *acc, long long cap)
{
    memset(acc, 0, sizeof *acc);
    acc->kld = malloc((size_t)(cap > 0 ? cap : 1) * sizeof(float));
    if (!acc->kld)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory for %lld KL values", cap);
    acc->cap = cap;
    return ZQ_OK;
}

void zq_eval_acc_free(zq_eval_acc *acc)
{
    free(acc->kld);
    memset(acc, 0, sizeof *acc);
}

double zq_eval_logsumexp(const float *logits, int n_vocab)
{
    float max = -INFINITY;
    for (int v = 0; v < n_vocab; v++)
        max = logits[v] > max ? logits[v] : max;
    double sum = 0;
    for (int v = 0; v < n_vocab; v++)
        sum += exp((double)logits[v] - max);
    return max + log(sum);
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

void zq_eval_acc_add(zq_eval_acc *acc, const float *ref, double ref_lse, const float *logits,
                     double lse, int n_vocab, int32_t target)
{
    double kld = 0;
    for (int v = 0; v < n_vocab; v++) {
        const double log_p = (double)ref[v] - ref_lse;
        const double log_q = (double)logits[v] - lse;
        kld += exp(log_p) * (log_p - log_q);
    }
    const double log_q_target = (double)logits[target] - lse;
    const double dp = exp(log_q_target) - exp((double)ref[target] - ref_lse);

    acc->nll_sum -= log_q_target;
    acc->kld_sum += kld;
    acc->kld_max = kld > acc->kld_max ? kld : acc->kld_max;
    acc->dp_sum += dp;
    acc->dp_sq_sum += dp * dp;
    acc->same_top1 += argmax(ref, n_vocab) == argmax(logits, n_vocab);
    acc->kld[acc->n++] = (float)kld;
}

void zq_eval_acc_add_ref(zq_eval_acc *acc, const float *logits, double lse, int32_t target)
{
    acc->nll_sum -= (double)logits[target] - lse;
    acc->same_top1++;
    acc->kld[acc->n++] = 0;
}

static int compare_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

double zq_eval_quantile(const float *sorted, long long n, double q)
{
    if (n <= 0)
        return 0;
    const double pos = q * (double)(n - 1);
    const long long lo = (long long)floor(pos);
    if (lo >= n - 1)
        return sorted[n - 1];
    const double frac = pos - (double)lo;
    return sorted[lo] + frac * ((double)sorted[lo + 1] - sorted[lo]);
}

void zq_eval_acc_finish(zq_eval_acc *acc, double ref_nll_mean, zq_eval_stats *out)
{
    memset(out, 0, sizeof *out);
    const double n = (double)acc->n;
    out->tokens = acc->n;
    if (acc->n == 0)
        return;
    qsort(acc->kld, (size_t)acc->n, sizeof(float), compare_float);
    out->nll_mean = acc->nll_sum / n;
    out->ppl = exp(out->nll_mean);
    out->ppl_ratio = exp(out->nll_mean - ref_nll_mean);
    out->kld_mean = acc->kld_sum / n;
    out->kld_median = zq_eval_quantile(acc->kld, acc->n, 0.5);
    out->kld_p99 = zq_eval_quantile(acc->kld, acc->n, 0.99);
    out->kld_max = acc->kld_max;
    out->same_top1 = (double)acc->same_top1 / n;
    out->dp_mean = acc->dp_sum / n;
    out->dp_rms = sqrt(acc->dp_sq_sum / n);
}

/* ---- windows ----------------------------------------------------------------------------- */

int zq_eval_plan(int n_tokens, int window, int stride, zq_eval_window *out)
{
    int count = 0;
    int prev_end = 0;
    for (int begin = 0; begin < n_tokens; begin += stride) {
        const int end = n_tokens - begin < window ? n_tokens : begin + window;
        const int first = prev_end > begin + 1 ? prev_end : begin + 1;
        if (first < end) {
            if (out)
                out[count] = (zq_eval_window){begin, end, first};
            count++;
        }
        prev_end = end;
        if (end == n_tokens)
            break;
    }
    return count;
}

/* ---- models ------------------------------------------------------------------------------ */

zq_status zq_eval_check_models(const zq_model *const *models, int n_models, bool per_layer)
{
    const zq_hparams *a = zq_model_hparams(models[0]);
    for (int i = 1; i < n_models; i++) {
        const zq_hparams *b = zq_model_hparams(models[i]);
        if (b->n_vocab != a->n_vocab)
            return zq_fail(ZQ_ERR_INVALID_ARG,
                           "model %d has %d tokens but model 1 has %d: models with different "
                           "vocabularies cannot be compared",
                           i + 1, b->n_vocab, a->n_vocab);
        for (int32_t id = 0; id < a->n_vocab; id++) {
            const char *x = zq_token_str(models[0], id), *y = zq_token_str(models[i], id);
            if (!x || !y || strcmp(x, y) != 0)
                return zq_fail(ZQ_ERR_INVALID_ARG,
                               "model %d's token %d is '%s' but model 1's is '%s': models with "
                               "different vocabularies cannot be compared",
                               i + 1, id, y ? y : "", x ? x : "");
        }
        if (per_layer && (b->n_layer != a->n_layer || b->n_embd != a->n_embd))
            return zq_fail(ZQ_ERR_INVALID_ARG,
                           "model %d has %d layers of %d but model 1 has %d of %d: per-layer "
                           "comparison needs the same shape",
                           i + 1, b->n_layer, b->n_embd, a->n_layer, a->n_embd);
    }
    return ZQ_OK;
}

/* ---- per-layer comparison ---------------------------------------------------------------- */

/* Layer callback state. The forward pass may call back once per chunk of rows, so row0 is the
 * window row of the chunk's first row. It advances after the last layer's call. */
typedef struct {
    bool capture;      /* reference: store the states; other models: compare with them */
    int n_layers;      /* n_layer + 1 */
    int n_embd;
    int window;
    int row0;
    int first_row;     /* rows below this are context only and not compared */
    float *states;     /* [n_layers][window][n_embd] reference states */
    double *cos_sum;   /* [n_layers] */
    double *rel_sum;   /* [n_layers] */
} layer_probe;

static void compare_row(const float *x, const float *ref, int d, double *cos, double *rel)
{
    double dot = 0, xx = 0, rr = 0, ee = 0;
    for (int i = 0; i < d; i++) {
        dot += (double)x[i] * ref[i];
        xx += (double)x[i] * x[i];
        rr += (double)ref[i] * ref[i];
        ee += ((double)x[i] - ref[i]) * ((double)x[i] - ref[i]);
    }
    *cos = xx > 0 && rr > 0 ? dot / sqrt(xx * rr) : (xx == rr ? 1 : 0);
    *rel = rr > 0 ? sqrt(ee / rr) : sqrt(ee);
}

static void on_layer(int layer, const float *x, int n, int n_embd, void *user)
{
    layer_probe *p = user;
    for (int r = 0; r < n; r++) {
        const int row = p->row0 + r;
        float *ref = p->states + ((size_t)layer * p->window + row) * n_embd;
        if (p->capture) {
            memcpy(ref, x + (size_t)r * n_embd, (size_t)n_embd * sizeof(float));
        } else if (row >= p->first_row) {
            double cos, rel;
            compare_row(x + (size_t)r * n_embd, ref, n_embd, &cos, &rel);
            p->cos_sum[layer] += cos;
            p->rel_sum[layer] += rel;
        }
    }
    if (layer == p->n_layers - 1)
        p->row0 += n;
}

/* ---- the run ----------------------------------------------------------------------------- */

typedef struct {
    const zq_model *const *models;
    int n_models;
    int ref;
    int window;
    int n_vocab;
    zq_context **ctxs;
    zq_eval_acc *accs;
    float *ref_logits; /* [window][n_vocab] */
    float *logits;     /* [window][n_vocab] */
    double *ref_lse;   /* [window] */
    layer_probe probe;
    double **cos_sums; /* [n_models][n_layers] */
    double **rel_sums;
} run_state;

static zq_status resolve_window(const zq_model *const *models, int n_models,
                                const zq_eval_params *p, int *window, int *stride)
{
    int n_ctx = zq_model_hparams(models[0])->n_ctx;
    for (int i = 1; i < n_models; i++)
        if (zq_model_hparams(models[i])->n_ctx < n_ctx)
            n_ctx = zq_model_hparams(models[i])->n_ctx;
    *window = p->window > 0 ? p->window : ZQ_EVAL_DEFAULT_WINDOW;
    if (p->window <= 0 && *window > n_ctx)
        *window = n_ctx;
    if (*window < 2 || *window > n_ctx)
        return zq_fail(ZQ_ERR_INVALID_ARG, "window %d is outside 2..%d (the models' context)",
                       *window, n_ctx);
    *stride = p->stride > 0 ? p->stride : *window;
    if (*stride > *window)
        return zq_fail(ZQ_ERR_INVALID_ARG, "stride %d exceeds the window of %d tokens", *stride,
                       *window);
    return ZQ_OK;
}

static zq_status alloc_probe(run_state *s, int n_models)
{
    const zq_hparams *hp = zq_model_hparams(s->models[s->ref]);
    layer_probe *p = &s->probe;
    p->n_layers = hp->n_layer + 1;
    p->n_embd = hp->n_embd;
    p->window = s->window;
    p->states = malloc((size_t)p->n_layers * s->window * hp->n_embd * sizeof(float));
    s->cos_sums = calloc((size_t)n_models, sizeof(double *));
    s->rel_sums = calloc((size_t)n_models, sizeof(double *));
    if (!p->states || !s->cos_sums || !s->rel_sums)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory for the per-layer states");
    for (int i = 0; i < n_models; i++) {
        s->cos_sums[i] = calloc((size_t)p->n_layers, sizeof(double));
        s->rel_sums[i] = calloc((size_t)p->n_layers, sizeof(double));
        if (!s->cos_sums[i] || !s->rel_sums[i])
            return zq_fail(ZQ_ERR_NOMEM, "out of memory for the per-layer sums");
    }
    return ZQ_OK;
}

zq_kv_type zq_eval_kv_type(const zq_model *model, bool is_ref, const zq_eval_params *params)
{
    const zq_kv_type t = is_ref && params->ref_kv_set ? params->ref_kv_type : params->kv_type;
    return zq_model_kv_type(model, t);
}

static zq_status run_init(run_state *s, long long scored, const zq_eval_params *p)
{
    const size_t logits_bytes = (size_t)s->window * s->n_vocab * sizeof(float);
    s->ctxs = calloc((size_t)s->n_models, sizeof *s->ctxs);
    s->accs = calloc((size_t)s->n_models, sizeof *s->accs);
    s->ref_logits = malloc(logits_bytes);
    s->logits = malloc(logits_bytes);
    s->ref_lse = malloc((size_t)s->window * sizeof(double));
    if (!s->ctxs || !s->accs || !s->ref_logits || !s->logits || !s->ref_lse)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory for two windows of %d x %d logits",
                       s->window, s->n_vocab);
    for (int i = 0; i < s->n_models; i++) {
        const zq_context_params cp = {.n_ctx = s->window,
                                      .n_threads = p->n_threads,
                                      .n_batch = s->window,
                                      .kv_type = zq_eval_kv_type(s->models[i], i == s->ref, p)};
        ZQ_TRY(zq_context_create(s->models[i], &cp, &s->ctxs[i]));
        ZQ_TRY(zq_eval_acc_init(&s->accs[i], scored));
    }
    return p->per_layer ? alloc_probe(s, s->n_models) : ZQ_OK;
}

static void run_free(run_state *s)
{
    for (int i = 0; i < s->n_models; i++) {
        if (s->ctxs)
            zq_context_free(s->ctxs[i]);
        if (s->accs)
            zq_eval_acc_free(&s->accs[i]);
        if (s->cos_sums)
            free(s->cos_sums[i]);
        if (s->rel_sums)
            free(s->rel_sums[i]);
    }
    free(s->ctxs);
    free(s->accs);
    free(s->ref_logits);
    free(s->logits);
    free(s->ref_lse);
    free(s->probe.states);
    free(s->cos_sums);
    free(s->rel_sums);
}

/* Runs model i over the window, leaving the logits of the rows that predict scored targets in
 * out (row j predicts target w->first_target + j). The context rows before them run without
 * logits. The last token of the window predicts nothing inside it and is not evaluated. */
static zq_status run_window(run_state *s, int i, const int32_t *ids, const zq_eval_window *w,
                            float *out)
{
    zq_context *ctx = s->ctxs[i];
    zq_context_truncate(ctx, 0);
    const int context = w->first_target - 1 - w->begin;
    const int scored = w->end - w->first_target;
    s->probe.row0 = 0;
    s->probe.first_row = context;
    if (context > 0)
        ZQ_TRY(zq_context_eval(ctx, ids + w->begin, context, NULL));
    return zq_context_eval(ctx, ids + w->first_target - 1, scored, out);
}

static void set_probe(run_state *s, int i, bool per_layer)
{
    if (!per_layer)
        return;
    s->probe.capture = i == s->ref;
    s->probe.cos_sum = s->cos_sums[i];
    s->probe.rel_sum = s->rel_sums[i];
    zq_context_set_layer_callback(s->ctxs[i], on_layer, &s->probe);
}

static zq_status score_window(run_state *s, const int32_t *ids, const zq_eval_window *w,
                              bool per_layer)
{
    const int scored = w->end - w->first_target;
    const size_t v = (size_t)s->n_vocab;
    set_probe(s, s->ref, per_layer);
    ZQ_TRY(run_window(s, s->ref, ids, w, s->ref_logits));
    for (int j = 0; j < scored; j++) {
        const float *row = s->ref_logits + j * v;
        s->ref_lse[j] = zq_eval_logsumexp(row, s->n_vocab);
        zq_eval_acc_add_ref(&s->accs[s->ref], row, s->ref_lse[j], ids[w->first_target + j]);
    }
    for (int i = 0; i < s->n_models; i++) {
        if (i == s->ref)
            continue;
        set_probe(s, i, per_layer);
        ZQ_TRY(run_window(s, i, ids, w, s->logits));
        for (int j = 0; j < scored; j++) {
            const float *row = s->logits + j * v;
            zq_eval_acc_add(&s->accs[i], s->ref_logits + j * v, s->ref_lse[j], row,
                            zq_eval_logsumexp(row, s->n_vocab), s->n_vocab,
                            ids[w->first_target + j]);
        }
    }
    return ZQ_OK;
}

static zq_status collect(run_state *s, bool per_layer, zq_eval_result *results)
{
    zq_eval_acc *ref = &s->accs[s->ref];
    const double ref_nll = ref->n ? ref->nll_sum / (double)ref->n : 0;
    for (int i = 0; i < s->n_models; i++) {
        zq_eval_result *r = &results[i];
        zq_eval_acc_finish(&s->accs[i], ref_nll, &r->stats);
        if (!per_layer)
            continue;
        const int n = s->probe.n_layers;
        r->layer_cos = malloc((size_t)n * sizeof(double));
        r->layer_rel = malloc((size_t)n * sizeof(double));
        if (!r->layer_cos || !r->layer_rel)
            return zq_fail(ZQ_ERR_NOMEM, "out of memory for the per-layer results");
        r->n_layers = n;
        const double tokens = r->stats.tokens > 0 ? (double)r->stats.tokens : 1;
        for (int l = 0; l < n; l++) {
            r->layer_cos[l] = i == s->ref ? 1 : s->cos_sums[i][l] / tokens;
            r->layer_rel[l] = i == s->ref ? 0 : s->rel_sums[i][l] / tokens;
        }
    }
    return ZQ_OK;
}

zq_status zq_eval_run(const zq_model *const *models, int n_models, int ref, const int32_t *ids,
                      int n_ids, const zq_eval_params *params, zq_eval_result *results)
{
    memset(results, 0, (size_t)n_models * sizeof *results);
    if (n_models < 1 || ref < 0 || ref >= n_models)
        return zq_fail(ZQ_ERR_INVALID_ARG, "reference %d is not one of the %d models", ref,
                       n_models);
    ZQ_TRY(zq_eval_check_models(models, n_models, params->per_layer));
    run_state s = {.models = models, .n_models = n_models, .ref = ref};
    s.n_vocab = zq_model_hparams(models[0])->n_vocab;
    int stride = 0;
    ZQ_TRY(resolve_window(models, n_models, params, &s.window, &stride));
    const int n_windows = zq_eval_plan(n_ids, s.window, stride, NULL);
    if (n_windows == 0)
        return zq_fail(ZQ_ERR_INVALID_ARG, "%d token(s) give nothing to score", n_ids);
    zq_eval_window *plan = malloc((size_t)n_windows * sizeof *plan);
    if (!plan)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory for %d windows", n_windows);
    zq_eval_plan(n_ids, s.window, stride, plan);

    zq_status st = run_init(&s, n_ids, params);
    for (int w = 0; w < n_windows && st == ZQ_OK; w++) {
        st = score_window(&s, ids, &plan[w], params->per_layer);
        if (params->progress)
            params->progress(w + 1, n_windows, params->progress_user);
    }
    if (st == ZQ_OK)
        st = collect(&s, params->per_layer, results);
    run_free(&s);
    free(plan);
    if (st != ZQ_OK)
        for (int i = 0; i < n_models; i++)
            zq_eval_result_free(&results[i]);
    return st;
}

void zq_eval_result_free(zq_eval_result *result)
{
    if (!result)
        return;
    free(result->layer_cos);
    free(result->layer_rel);
    memset(result, 0, sizeof *result);
}
