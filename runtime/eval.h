/*
 * eval.h - perplexity of models over a text and the distance of their next-token distributions
 * from a reference model's: the one implementation behind `zq eval`, bench/accuracy.sh, the
 * quantizer's calibration text and the tests, so that their numbers agree.
 *
 * Text framing (zq_eval_tokenize):
 * - chat: one dialogue per line, turns separated by TAB; each dialogue becomes
 *   [CLS] turn [SEP] turn [SEP] ..., and the dialogues are concatenated into one stream.
 * - plain: one [CLS] starts the stream; every line is followed by [SEP].
 * - auto: chat when the text contains a TAB, else plain.
 * Lines and turns that are empty or give no tokens are skipped; a trailing "\r" is dropped.
 *
 * Windows (zq_eval_plan): window w starts at token w * stride and ends window tokens later (or
 * at the end of the stream). Each window scores, as next-token predictions made inside the
 * window, only the tokens that no earlier window scored. With stride == window the windows do
 * not overlap, and the first token of each window is context only. This is the sliding-window
 * scheme of Hugging Face's perplexity guide.
 *
 * Statistics per scored token t with target id y, reference distribution P and model Q:
 *   nll = -log Q(y);  KL(P || Q) = sum_v P(v) (log P(v) - log Q(v));
 *   same_top1: argmax P == argmax Q (first index on ties);  dp = Q(y) - P(y).
 * ppl = exp(mean nll); median and p99 of the KL values interpolate linearly between the
 * sorted values at position q * (n - 1), as numpy.percentile does by default.
 */
#ifndef ZQ_EVAL_H
#define ZQ_EVAL_H

#include "zq.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    ZQ_TEXT_AUTO = 0,
    ZQ_TEXT_PLAIN = 1,
    ZQ_TEXT_CHAT = 2,
} zq_text_format;

/* Tokenizes text[0..len) (UTF-8) into one stream as described above. name appears in error
 * messages (a file name). The text is rejected with ZQ_ERR_FORMAT if it is empty, contains a
 * NUL byte or invalid UTF-8 (the message gives the line number) or gives fewer than 2 tokens.
 * On success *ids is malloc'd (free it with free) and contains *n_ids ids, and *used (when not
 * NULL) receives the framing applied: ZQ_TEXT_PLAIN or ZQ_TEXT_CHAT. */
zq_status zq_eval_tokenize(const zq_model *model, const char *name, const char *text,
                           size_t len, zq_text_format format, zq_text_format *used,
                           int32_t **ids, int *n_ids);

/* Reads path and tokenizes it with zq_eval_tokenize. ZQ_ERR_IO if it cannot be read. */
zq_status zq_eval_tokenize_file(const zq_model *model, const char *path, zq_text_format format,
                                zq_text_format *used, int32_t **ids, int *n_ids);

/* One window: tokens [begin, end); it scores the targets [first_target, end). */
typedef struct {
    int begin;
    int end;
    int first_target;
} zq_eval_window;

/* Cuts a stream of n_tokens into windows of `window` tokens every `stride` tokens
 * (1 <= stride <= window). Writes them to out when out is not NULL (room for the returned
 * count) and returns their number. Windows that would score nothing are left out. */
int zq_eval_plan(int n_tokens, int window, int stride, zq_eval_window *out);

/* Statistics of one model over a text, against the reference. */
typedef struct {
    long long tokens;  /* scored tokens */
    double nll_mean;   /* nats per token */
    double ppl;
    double ppl_ratio;  /* ppl / reference ppl */
    double kld_mean;   /* KL(reference || model) in nats */
    double kld_median;
    double kld_p99;
    double kld_max;
    double same_top1;  /* fraction of tokens where the two argmax agree */
    double dp_mean;    /* mean of p_model(target) - p_ref(target) */
    double dp_rms;     /* sqrt(mean (p_model(target) - p_ref(target))^2) */
} zq_eval_stats;

/* Running sums behind zq_eval_stats. The per-token KL values are kept for the percentiles. */
typedef struct {
    long long n;
    long long cap;
    double nll_sum;
    double kld_sum;
    double kld_max;
    double dp_sum;
    double dp_sq_sum;
    long long same_top1;
    float *kld; /* [cap] */
} zq_eval_acc;

zq_status zq_eval_acc_init(zq_eval_acc *acc, long long cap);
void zq_eval_acc_free(zq_eval_acc *acc);

/* Returns log(sum_v exp(logits[v])), computed in double. */
double zq_eval_logsumexp(const float *logits, int n_vocab);

/* Adds one scored token: ref / logits are the two models' logits [n_vocab] with their
 * zq_eval_logsumexp values. Identical logits add exactly 0 to the KL sum. acc must have room
 * (n < cap). */
void zq_eval_acc_add(zq_eval_acc *acc, const float *ref, double ref_lse, const float *logits,
                     double lse, int n_vocab, int32_t target);

/* Adds one scored token of the reference itself: its nll, KL 0, same top-1, dp 0. */
void zq_eval_acc_add_ref(zq_eval_acc *acc, const float *logits, double lse, int32_t target);

/* Fills out from acc; ref_nll_mean is the reference's mean nll, for ppl_ratio. Sorts
 * acc->kld in place. */
void zq_eval_acc_finish(zq_eval_acc *acc, double ref_nll_mean, zq_eval_stats *out);

/* Returns the q-quantile (0 <= q <= 1) of n sorted values, interpolating linearly; 0 if n is
 * 0. */
double zq_eval_quantile(const float *sorted, long long n, double q);

typedef struct {
    int window;       /* tokens per window; 0 = 128, capped at the smallest model context */
    int stride;       /* 0 = window */
    bool per_layer;   /* compare each layer's hidden states with the reference's */
    int n_threads;    /* 0 = physical cores */
    zq_kv_type kv_type; /* of every model's cache; 0 = ZQ_KV_AUTO, each model's own default */
    bool ref_kv_set;        /* the reference's cache is ref_kv_type, not kv_type */
    zq_kv_type ref_kv_type;
    /* Called after each window (done of total); may be NULL. */
    void (*progress)(int done, int total, void *user);
    void *progress_user;
} zq_eval_params;

#define ZQ_EVAL_DEFAULT_WINDOW 128

/* Returns the cache type that a model gets in a run under params. is_ref is true for the run's
 * reference. */
zq_kv_type zq_eval_kv_type(const zq_model *model, bool is_ref, const zq_eval_params *params);

/* The result of one model. */
typedef struct {
    zq_eval_stats stats;
    int n_layers;       /* n_layer + 1 when per_layer (the last entry is after ln_f), else 0 */
    double *layer_cos;  /* [n_layers] mean cosine similarity with the reference's states */
    double *layer_rel;  /* [n_layers] mean ||x - x_ref|| / ||x_ref|| */
} zq_eval_result;

/* Checks that the models can be compared: the same vocabulary (size and every token string)
 * and, when per_layer, the same n_layer and n_embd. */
zq_status zq_eval_check_models(const zq_model *const *models, int n_models, bool per_layer);

/* Scores ids[0..n_ids) with every model, window by window, against models[ref]. results
 * [n_models] receives each model's statistics (the reference's own has KL 0, same_top1 1, a
 * ratio of 1); free each with zq_eval_result_free. Memory: two [window][n_vocab] logit
 * buffers, plus [n_layer + 1][window][n_embd] for per_layer; nothing grows with n_ids except
 * one float per scored token and model. */
zq_status zq_eval_run(const zq_model *const *models, int n_models, int ref, const int32_t *ids,
                      int n_ids, const zq_eval_params *params, zq_eval_result *results);
void zq_eval_result_free(zq_eval_result *result);

#endif /* ZQ_EVAL_H */
