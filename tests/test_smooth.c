/*
 * test_smooth.c - the SmoothQuant-style migration (quantize/smooth.h). It checks the factor
 * formula, that a migrated f32 model computes the same logits, and the provenance it records.
 * It also checks that the int8 error drops on tiny-random, whose layer 0 MLP input channel 5 is
 * a x20 outlier.
 */
#include "../formats/zqfile.h"
#include "../quantize/quantize.h"
#include "../quantize/smooth.h"
#include "../runtime/eval.h"
#include "../runtime/zq.h"
#include "support/check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prompts in tiny-random's vocabulary, one dialogue per line. */
static const char CALIBRATION_TEXT[] =
    "你好\t今天天气怎么样？\n我们明天去哪里吃饭\tHello, 你叫什么名字?\n"
    "这是很久之前的事情了\t人工智能会不会取代人类的工作\n"
    "2024年的冬天特别冷。\t你在说什么呢...我不明白\n";

static const char *calibration_file(void)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/calibration.tsv", zq_test_tmpdir());
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(CALIBRATION_TEXT, f);
        fclose(f);
    }
    return path;
}

static const char *quantize_tiny(zq_type type, bool smooth, const char *tag)
{
    static char out[4][600];
    static int next;
    char *path = out[next++ % 4];
    snprintf(path, 600, "%s/%s.zq", zq_test_tmpdir(), tag);
    char src[512];
    snprintf(src, sizeof src, "%s/tiny-random", zq_test_fixtures());
    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    qp.type = type;
    qp.zstd_level = 1;
    qp.calibrate = smooth ? calibration_file() : NULL;
    zq_quant_report report;
    const zq_status st = zq_quantize_model(src, path, &qp, &report);
    CHECK(st == ZQ_OK, "quantize %s: %s", tag, zq_last_error());
    if (st != ZQ_OK)
        return NULL;
    CHECK(!smooth || report.calibration_tokens > 50, "%lld calibration tokens",
          report.calibration_tokens);
    zq_quant_report_free(&report);
    return path;
}

static zq_model *load(const char *path)
{
    zq_model *m = NULL;
    if (path && zq_model_load(path, NULL, &m) != ZQ_OK)
        CHECK(false, "load %s: %s", path, zq_last_error());
    return m;
}

static void test_smooth_factors_formula(void)
{
    /* w [3 inputs][2 outputs]; max |w| per input: 0.5, 2, 1. */
    const float w[] = {0.5f, -0.25f, 1.0f, -2.0f, 0.0f, 1.0f};
    const float act[] = {8.0f, 1.0f, 0.0f};
    float s[3];
    zq_smooth_factors(act, w, 3, 2, 0.5f, s);
    CHECK_NEAR(s[0], sqrt(8.0) / sqrt(0.5), 1e-5);
    CHECK_NEAR(s[1], 1.0 / sqrt(2.0), 1e-6);
    CHECK_NEAR(s[2], 1.0, 0); /* no activation: left alone */
    zq_smooth_factors(act, w, 3, 2, 1.0f, s);
    CHECK_NEAR(s[0], 8.0, 1e-5);
    zq_smooth_factors(act, w, 3, 2, 0.0f, s);
    CHECK_NEAR(s[1], 0.5, 1e-6);
    const float zero_w[] = {0, 0, 1, 1, 1, 1};
    zq_smooth_factors(act, zero_w, 3, 2, 0.5f, s);
    CHECK_NEAR(s[0], 1.0, 0); /* no weight: left alone */
}

static void test_smooth_f32_logits_unchanged(void)
{
    zq_model *plain = load(quantize_tiny(ZQ_TYPE_F32, false, "f32"));
    zq_model *smooth = load(quantize_tiny(ZQ_TYPE_F32, true, "f32-smooth"));
    if (!plain || !smooth) {
        zq_model_free(plain);
        zq_model_free(smooth);
        return;
    }
    int32_t *ids = NULL;
    int n = 0;
    zq_status st = zq_eval_tokenize(plain, "calibration", CALIBRATION_TEXT,
                                    sizeof CALIBRATION_TEXT - 1, ZQ_TEXT_AUTO, NULL, &ids, &n);
    CHECK(st == ZQ_OK, "tokenize: %s", zq_last_error());
    n = n > 64 ? 64 : n;
    const int vocab = zq_model_hparams(plain)->n_vocab;
    float *a = malloc((size_t)n * vocab * sizeof(float));
    float *b = malloc((size_t)n * vocab * sizeof(float));
    zq_context *ca = NULL, *cb = NULL;
    st = zq_context_create(plain, NULL, &ca);
    if (st == ZQ_OK)
        st = zq_context_create(smooth, NULL, &cb);
    if (st == ZQ_OK)
        st = zq_context_eval(ca, ids, n, a);
    if (st == ZQ_OK)
        st = zq_context_eval(cb, ids, n, b);
    CHECK(st == ZQ_OK, "eval: %s", zq_last_error());
    double worst = 0;
    for (size_t i = 0; st == ZQ_OK && i < (size_t)n * vocab; i++)
        worst = fmax(worst, fabs((double)a[i] - b[i]));
    CHECK(worst <= 1e-4, "max |logit difference| %g over %d tokens", worst, n);
    printf("# migrated f32 vs f32: max |logit difference| %.3g over %d tokens\n", worst, n);
    zq_context_free(ca);
    zq_context_free(cb);
    free(a);
    free(b);
    free(ids);
    zq_model_free(plain);
    zq_model_free(smooth);
}

static double mean_kl(zq_model *ref, zq_model *m, const int32_t *ids, int n)
{
    const zq_model *models[] = {ref, m};
    const zq_eval_params params = {.window = 32, .n_threads = 1};
    zq_eval_result res[2];
    if (zq_eval_run(models, 2, 0, ids, n, &params, res) != ZQ_OK) {
        CHECK(false, "eval: %s", zq_last_error());
        return INFINITY;
    }
    const double kl = res[1].stats.kld_mean;
    zq_eval_result_free(&res[0]);
    zq_eval_result_free(&res[1]);
    return kl;
}

static void test_smooth_lowers_int8_error(void)
{
    zq_model *f32 = load(quantize_tiny(ZQ_TYPE_F32, false, "f32"));
    zq_model *q8 = load(quantize_tiny(ZQ_TYPE_Q8, false, "int8"));
    zq_model *q8s = load(quantize_tiny(ZQ_TYPE_Q8, true, "int8-smooth"));
    int32_t *ids = NULL;
    int n = 0;
    if (f32 && q8 && q8s &&
        zq_eval_tokenize(f32, "calibration", CALIBRATION_TEXT, sizeof CALIBRATION_TEXT - 1,
                         ZQ_TEXT_AUTO, NULL, &ids, &n) == ZQ_OK) {
        const double plain = mean_kl(f32, q8, ids, n);
        const double smooth = mean_kl(f32, q8s, ids, n);
        printf("# tiny-random int8 mean KL: per-row %.3g, migrated %.3g\n", plain, smooth);
        CHECK(smooth < plain, "migrated %g, plain %g", smooth, plain);
    }
    free(ids);
    zq_model_free(f32);
    zq_model_free(q8);
    zq_model_free(q8s);
}

static void test_smooth_records_provenance(void)
{
    const char *path = quantize_tiny(ZQ_TYPE_Q8, true, "int8-smooth");
    zq_file f;
    if (!path || zq_file_read(path, 1, &f) != ZQ_OK) {
        CHECK(false, "read: %s", zq_last_error());
        return;
    }
    CHECK(strstr(f.quant_desc, "alpha 0.50") != NULL, "quant_desc '%s'", f.quant_desc);
    CHECK(strstr(f.quant_desc, "calibration.tsv") != NULL, "quant_desc '%s'", f.quant_desc);
    zq_file_free(&f);
}

static void test_smooth_rejects_bad_input(void)
{
    char src[512], out[600];
    snprintf(src, sizeof src, "%s/tiny-random", zq_test_fixtures());
    snprintf(out, sizeof out, "%s/bad.zq", zq_test_tmpdir());
    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    qp.calibrate = calibration_file();
    qp.alpha = 1.5f;
    zq_quant_report report;
    CHECK(zq_quantize_model(src, out, &qp, &report) == ZQ_ERR_INVALID_ARG, "alpha 1.5");
    CHECK(strstr(zq_last_error(), "alpha") != NULL, "message: %s", zq_last_error());

    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-text.tsv", zq_test_tmpdir());
    qp.alpha = 0.5f;
    qp.calibrate = missing;
    CHECK(zq_quantize_model(src, out, &qp, &report) == ZQ_ERR_IO, "missing text");
    CHECK(strstr(zq_last_error(), "no-such-text.tsv") != NULL, "message: %s", zq_last_error());
    FILE *f = fopen(out, "rb");
    CHECK(f == NULL, "a failed quantization left %s", out);
    if (f)
        fclose(f);
}

int main(void)
{
    ZQ_RUN(test_smooth_factors_formula);
    ZQ_RUN(test_smooth_f32_logits_unchanged);
    ZQ_RUN(test_smooth_lowers_int8_error);
    ZQ_RUN(test_smooth_records_provenance);
    ZQ_RUN(test_smooth_rejects_bad_input);
    ZQ_CHECK_EXIT();
}
