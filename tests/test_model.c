/*
 * test_model.c - the forward pass against reference logits computed in float64 by an
 * independent PyTorch implementation of GPT2LMHeadModel (the tests/fixtures/...-ref folders).
 *
 * Tolerances (max |logit - reference| over every position of every prompt):
 * - f32 weights: 1e-3. Only float32 rounding separates the two computations.
 * - f16 weights: 2e-2. Each weight is rounded to 11 significant bits (relative error <= 2^-12),
 *   and the errors of a 256-long dot product add up like a random walk.
 * - int8 (W8A8): bounded relative to the spread (standard deviation) of the reference logits at
 *   each position, and the greedy token must agree wherever the reference's top-2 margin is
 *   clear. Each product rounds weights and activations to steps of max|row| / 127, a relative
 *   error of about 1% for rows whose max is 4x their RMS, and up to 5% where an outlier channel
 *   20x the others sets the activation scale (tiny-random's layer-0 MLP input). Measured worst
 *   errors are 0.15 (zh-chat-tiny) and 0.23 (tiny-random) of the logits' std; the bounds below
 *   are about twice those, so a real regression (a wrong scale, a saturated sum) fails them
 *   while rounding noise does not.
 */
#include "../formats/zqfile.h"
#include "../quantize/quantize.h"
#include "../runtime/zq.h"
#include "support/check.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* int8 logits may differ from the reference by these fractions of the reference logits' standard
 * deviation at any position. */
#define INT8_TOL_ZH_CHAT 0.3
#define INT8_TOL_OUTLIER 0.45
/* Greedy tokens must agree where the reference's top-2 margin exceeds this many logits. */
#define INT8_CLEAR_MARGIN 0.25

typedef struct {
    int n_prompts;
    int32_t *ids[16];
    int n_ids[16];
    float *logits[16]; /* [n_ids][vocab] */
    int32_t greedy[16][12];
    float margins[16][12];
    int n_greedy[16];
} reference;

static int32_t *json_ids(const cJSON *arr, int *n)
{
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc((size_t)(*n > 0 ? *n : 1) * sizeof(int32_t));
    for (int i = 0; i < *n; i++)
        ids[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valueint;
    return ids;
}

static bool load_reference(const char *dir, int vocab, reference *ref)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/reference.json", zq_test_fixtures(), dir);
    char *text = zq_test_read_file(path, NULL);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!root)
        return false;
    memset(ref, 0, sizeof *ref);
    const cJSON *prompts = cJSON_GetObjectItem(root, "prompts");
    for (int p = 0; p < cJSON_GetArraySize(prompts) && p < 16; p++) {
        const cJSON *item = cJSON_GetArrayItem(prompts, p);
        ref->ids[p] = json_ids(cJSON_GetObjectItem(item, "ids"), &ref->n_ids[p]);
        int n = 0;
        int32_t *greedy = json_ids(cJSON_GetObjectItem(item, "greedy_next_ids"), &n);
        const cJSON *margins = cJSON_GetObjectItem(item, "greedy_top2_margins");
        ref->n_greedy[p] = n < 12 ? n : 12;
        for (int i = 0; i < ref->n_greedy[p]; i++) {
            ref->greedy[p][i] = greedy[i];
            ref->margins[p][i] = (float)cJSON_GetArrayItem(margins, i)->valuedouble;
        }
        free(greedy);
        snprintf(path, sizeof path, "%s/%s/%s", zq_test_fixtures(), dir,
                 cJSON_GetObjectItem(item, "logits_file")->valuestring);
        size_t size = 0;
        ref->logits[p] = (float *)zq_test_read_file(path, &size);
        if (!ref->logits[p] || size != (size_t)ref->n_ids[p] * vocab * sizeof(float)) {
            cJSON_Delete(root);
            return false;
        }
        ref->n_prompts = p + 1;
    }
    cJSON_Delete(root);
    return ref->n_prompts > 0;
}

static void free_reference(reference *ref)
{
    for (int p = 0; p < ref->n_prompts; p++) {
        free(ref->ids[p]);
        free(ref->logits[p]);
    }
}

/* Quantizes a model folder into the test's temp dir and loads it. */
static zq_model *quantize_and_load(const char *src, zq_type type, const char *tag)
{
    char out[512];
    snprintf(out, sizeof out, "%s/%s.zq", zq_test_tmpdir(), tag);
    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    qp.type = type;
    qp.zstd_level = 1;
    zq_quant_report report;
    zq_status st = zq_quantize_model(src, out, &qp, &report);
    CHECK(st == ZQ_OK, "quantize %s: %s", src, zq_last_error());
    if (st != ZQ_OK)
        return NULL;
    zq_quant_report_free(&report);
    zq_model *m = NULL;
    st = zq_model_load(out, NULL, &m);
    CHECK(st == ZQ_OK, "load %s: %s", out, zq_last_error());
    return m;
}

static double std_dev(const float *x, size_t n)
{
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; i++)
        mean += x[i];
    mean /= n;
    for (size_t i = 0; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean);
    return sqrt(var / n);
}

static size_t argmax(const float *x, int n)
{
    size_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = (size_t)i;
    return best;
}

/* Compares all-position logits of every prompt; returns the worst error measured either in
 * logits (abs) or relative to the reference's standard deviation (rel). */
static void compare_logits(zq_model *m, const reference *ref, double *worst_abs,
                           double *worst_rel)
{
    const int vocab = zq_model_hparams(m)->n_vocab;
    *worst_abs = *worst_rel = 0;
    for (int p = 0; p < ref->n_prompts; p++) {
        zq_context *ctx = NULL;
        CHECK(zq_context_create(m, &(zq_context_params){.n_threads = 2}, &ctx) == ZQ_OK, "%s",
              zq_last_error());
        const int n = ref->n_ids[p];
        float *out = malloc((size_t)n * vocab * sizeof(float));
        CHECK(zq_context_eval(ctx, ref->ids[p], n, out) == ZQ_OK, "%s", zq_last_error());
        for (int t = 0; t < n; t++) {
            const float *want = ref->logits[p] + (size_t)t * vocab;
            const double sd = std_dev(want, (size_t)vocab);
            for (int v = 0; v < vocab; v++) {
                const double e = fabs(out[(size_t)t * vocab + v] - want[v]);
                *worst_abs = e > *worst_abs ? e : *worst_abs;
                *worst_rel = e / sd > *worst_rel ? e / sd : *worst_rel;
            }
        }
        free(out);
        zq_context_free(ctx);
    }
}

/* Greedy continuation must follow the reference wherever its top-2 margin exceeds min_margin;
 * after the first disagreement the sequences diverge, so checking stops there. */
static int greedy_agreement(zq_model *m, const reference *ref, float min_margin)
{
    const int vocab = zq_model_hparams(m)->n_vocab;
    int disagreements = 0;
    for (int p = 0; p < ref->n_prompts; p++) {
        zq_context *ctx = NULL;
        zq_context_create(m, NULL, &ctx);
        zq_context_eval(ctx, ref->ids[p], ref->n_ids[p], NULL);
        for (int i = 0; i < ref->n_greedy[p]; i++) {
            const int32_t next = (int32_t)argmax(zq_context_logits(ctx), vocab);
            if (next != ref->greedy[p][i]) {
                if (ref->margins[p][i] > min_margin) {
                    fprintf(stderr, "prompt %d step %d: got %d, reference %d (margin %.3f)\n", p,
                            i, next, ref->greedy[p][i], ref->margins[p][i]);
                    disagreements++;
                }
                break;
            }
            if (zq_context_eval(ctx, &next, 1, NULL) != ZQ_OK)
                break;
        }
        zq_context_free(ctx);
    }
    return disagreements;
}

static void check_source(const char *src, const char *ref_dir, const char *tag)
{
    zq_model *f32 = quantize_and_load(src, ZQ_TYPE_F32, tag);
    if (!f32)
        return;
    reference ref;
    const int vocab = zq_model_hparams(f32)->n_vocab;
    CHECK(load_reference(ref_dir, vocab, &ref), "cannot read the reference in %s", ref_dir);
    double abs_err, rel_err;
    compare_logits(f32, &ref, &abs_err, &rel_err);
    fprintf(stderr, "%s f32: max |logit error| %.3g\n", tag, abs_err);
    CHECK(abs_err <= 1e-3, "%s: f32 logits differ by %.3g", tag, abs_err);
    CHECK_EQ_INT(greedy_agreement(f32, &ref, 1e-3f), 0);
    free_reference(&ref);
    zq_model_free(f32);
}

static void f32_tiny_random_safetensors(void)
{
    char src[512];
    snprintf(src, sizeof src, "%s/tiny-random", zq_test_fixtures());
    check_source(src, "tiny-random-ref", "tiny-f32");
}

static void f32_tiny_random_pytorch_bin(void)
{
    char src[512];
    snprintf(src, sizeof src, "%s/tiny-random/pytorch", zq_test_fixtures());
    check_source(src, "tiny-random-ref", "tiny-bin");
}

static void check_rounded_source(const char *sub, double tol)
{
    char src[512];
    snprintf(src, sizeof src, "%s/tiny-random/%s", zq_test_fixtures(), sub);
    zq_model *m = quantize_and_load(src, ZQ_TYPE_F32, sub);
    if (!m)
        return;
    reference ref;
    CHECK(load_reference("tiny-random-ref", zq_model_hparams(m)->n_vocab, &ref), "reference");
    double abs_err, rel_err;
    compare_logits(m, &ref, &abs_err, &rel_err);
    fprintf(stderr, "tiny-random %s source: max |logit error| %.3g\n", sub, abs_err);
    CHECK(abs_err <= tol, "%s source: logits differ by %.3g > %.3g", sub, abs_err, tol);
    free_reference(&ref);
    zq_model_free(m);
}

static void f32_tiny_random_half_sources(void)
{
    /* F16 keeps 11 significant bits and BF16 8, so the weights themselves are off by up to
     * 2^-12 and 2^-9 relative; the bounds are about four times the errors measured. */
    check_rounded_source("f16", 1e-2);
    check_rounded_source("bf16", 6e-2);
}

static void f32_zh_chat_tiny(void)
{
    check_source("models/zh-chat-tiny", "zh-chat-tiny-ref", "zh-f32");
}

static void check_quantized(const char *src, const char *ref_dir, zq_type type, double tol_abs,
                            double tol_rel, const char *tag)
{
    zq_model *m = quantize_and_load(src, type, tag);
    if (!m)
        return;
    reference ref;
    CHECK(load_reference(ref_dir, zq_model_hparams(m)->n_vocab, &ref), "reference");
    double abs_err, rel_err;
    compare_logits(m, &ref, &abs_err, &rel_err);
    fprintf(stderr, "%s: max |logit error| %.3g, %.3g of the logits' std\n", tag, abs_err,
            rel_err);
    CHECK(abs_err <= tol_abs, "%s: logits differ by %.3g > %.3g", tag, abs_err, tol_abs);
    CHECK(rel_err <= tol_rel, "%s: error %.3g of the std > %.3g", tag, rel_err, tol_rel);
    if (type == ZQ_TYPE_Q8)
        CHECK_EQ_INT(greedy_agreement(m, &ref, INT8_CLEAR_MARGIN), 0);
    free_reference(&ref);
    zq_model_free(m);
}

static void f16_weights_zh_chat_tiny(void)
{
    check_quantized("models/zh-chat-tiny", "zh-chat-tiny-ref", ZQ_TYPE_F16, 2e-2, 1, "zh-f16");
}

static void int8_weights_zh_chat_tiny(void)
{
    check_quantized("models/zh-chat-tiny", "zh-chat-tiny-ref", ZQ_TYPE_Q8, 1e9,
                    INT8_TOL_ZH_CHAT, "zh-int8");
}

static void int8_weights_tiny_random(void)
{
    char src[512];
    snprintf(src, sizeof src, "%s/tiny-random", zq_test_fixtures());
    check_quantized(src, "tiny-random-ref", ZQ_TYPE_Q8, 1e9, INT8_TOL_OUTLIER, "tiny-int8");
}

int main(void)
{
    ZQ_RUN(f32_tiny_random_safetensors);
    ZQ_RUN(f32_tiny_random_pytorch_bin);
    ZQ_RUN(f32_tiny_random_half_sources);
    ZQ_RUN(f32_zh_chat_tiny);
    ZQ_RUN(f16_weights_zh_chat_tiny);
    ZQ_RUN(int8_weights_zh_chat_tiny);
    ZQ_RUN(int8_weights_tiny_random);
    ZQ_CHECK_EXIT();
}
