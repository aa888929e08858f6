/*
 * test_eval.c - the evaluation statistics (runtime/eval.h): perplexity against values computed
 * here from the float64 reference logits of tests/fixtures/tiny-random-ref, KL of a model
 * against itself, quantiles, window plans, text framing and the errors on bad text files.
 */
#include "../quantize/quantize.h"
#include "../runtime/eval.h"
#include "../runtime/zq.h"
#include "support/check.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REF_DIR "tiny-random-ref"
#define MAX_PROMPTS 16

typedef struct {
    int n;
    char *text[MAX_PROMPTS];
    int32_t *ids[MAX_PROMPTS];
    int n_ids[MAX_PROMPTS];
    float *logits[MAX_PROMPTS]; /* [n_ids][vocab] */
} reference;

static bool load_reference(int vocab, reference *ref)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/reference.json", zq_test_fixtures(), REF_DIR);
    char *json = zq_test_read_file(path, NULL);
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    free(json);
    if (!root)
        return false;
    memset(ref, 0, sizeof *ref);
    const cJSON *prompts = cJSON_GetObjectItem(root, "prompts");
    bool ok = true;
    for (int p = 0; p < cJSON_GetArraySize(prompts) && p < MAX_PROMPTS && ok; p++) {
        const cJSON *item = cJSON_GetArrayItem(prompts, p);
        const cJSON *ids = cJSON_GetObjectItem(item, "ids");
        ref->text[p] = strdup(cJSON_GetObjectItem(item, "text")->valuestring);
        ref->n_ids[p] = cJSON_GetArraySize(ids);
        ref->ids[p] = malloc((size_t)ref->n_ids[p] * sizeof(int32_t));
        for (int i = 0; i < ref->n_ids[p]; i++)
            ref->ids[p][i] = (int32_t)cJSON_GetArrayItem(ids, i)->valueint;
        snprintf(path, sizeof path, "%s/%s/%s", zq_test_fixtures(), REF_DIR,
                 cJSON_GetObjectItem(item, "logits_file")->valuestring);
        size_t size = 0;
        ref->logits[p] = (float *)zq_test_read_file(path, &size);
        ok = ref->logits[p] && size == (size_t)ref->n_ids[p] * vocab * sizeof(float);
        ref->n = p + 1;
    }
    cJSON_Delete(root);
    return ok && ref->n > 0;
}

static void free_reference(reference *ref)
{
    for (int p = 0; p < ref->n; p++) {
        free(ref->text[p]);
        free(ref->ids[p]);
        free(ref->logits[p]);
    }
}

static const char *model_dir(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/tiny-random", zq_test_fixtures());
    return path;
}

/* Quantizes tiny-random (optionally with one added token) into the temp dir and loads it. */
static zq_model *load_tiny(zq_type type, const char *added, const char *tag)
{
    char out[600];
    snprintf(out, sizeof out, "%s/%s.zq", zq_test_tmpdir(), tag);
    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    qp.type = type;
    qp.zstd_level = 1;
    qp.added_tokens = &added;
    qp.n_added = added ? 1 : 0;
    zq_quant_report report;
    zq_status st = zq_quantize_model(model_dir(), out, &qp, &report);
    CHECK(st == ZQ_OK, "quantize: %s", zq_last_error());
    if (st != ZQ_OK)
        return NULL;
    zq_quant_report_free(&report);
    zq_model *m = NULL;
    st = zq_model_load(out, NULL, &m);
    CHECK(st == ZQ_OK, "load %s: %s", out, zq_last_error());
    return m;
}

static const char *write_temp(const char *name, const char *data, size_t len)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", zq_test_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, len, f);
        fclose(f);
    }
    return path;
}

/* Writes a string literal, NUL bytes inside it included. */
#define WRITE_TEMP(name, literal) write_temp(name, literal, sizeof literal - 1)

/* Returns exp(mean over t of -log softmax(logits[t - 1])[ids[t]]) in double. */
static double reference_ppl(const float *logits, const int32_t *ids, int n, int vocab)
{
    double nll = 0;
    for (int t = 1; t < n; t++) {
        const float *row = logits + (size_t)(t - 1) * vocab;
        double max = row[0], sum = 0;
        for (int v = 1; v < vocab; v++)
            max = row[v] > max ? row[v] : max;
        for (int v = 0; v < vocab; v++)
            sum += exp(row[v] - max);
        nll -= row[ids[t]] - max - log(sum);
    }
    return exp(nll / (n - 1));
}

static void test_eval_ppl_matches_reference(void)
{
    zq_model *m = load_tiny(ZQ_TYPE_F32, NULL, "f32");
    if (!m)
        return;
    const int vocab = zq_model_hparams(m)->n_vocab;
    reference ref;
    CHECK(load_reference(vocab, &ref), "cannot read %s", REF_DIR);
    for (int p = 0; p < ref.n; p++) {
        /* One chat line frames the prompt as [CLS] text [SEP], as the reference ids are. */
        const char *path = write_temp("prompt.tsv", ref.text[p], strlen(ref.text[p]));
        int32_t *ids = NULL;
        int n = 0;
        zq_status st = zq_eval_tokenize_file(m, path, ZQ_TEXT_CHAT, NULL, &ids, &n);
        CHECK(st == ZQ_OK, "prompt %d: %s", p, zq_last_error());
        CHECK_EQ_INT(n, ref.n_ids[p]);
        for (int i = 0; i < n && i < ref.n_ids[p]; i++)
            CHECK(ids[i] == ref.ids[p][i], "prompt %d token %d: %d vs %d", p, i, ids[i],
                  ref.ids[p][i]);

        const zq_eval_params params = {.window = n, .n_threads = 1};
        const zq_model *models[] = {m};
        zq_eval_result res;
        st = zq_eval_run(models, 1, 0, ids, n, &params, &res);
        CHECK(st == ZQ_OK, "eval prompt %d: %s", p, zq_last_error());
        const double want = reference_ppl(ref.logits[p], ref.ids[p], ref.n_ids[p], vocab);
        /* f32 logits are within 1e-3 of the float64 reference, so each nll is within 2e-3. */
        CHECK(fabs(res.stats.ppl / want - 1) < 2e-3, "prompt %d: ppl %.6f, reference %.6f", p,
              res.stats.ppl, want);
        CHECK_EQ_INT(res.stats.tokens, n - 1);
        zq_eval_result_free(&res);
        free(ids);
    }
    free_reference(&ref);
    zq_model_free(m);
}

/* A text of the reference prompts, one per line: a few hundred tokens of chat framing. */
static int32_t *prompt_stream(const zq_model *m, int *n)
{
    reference ref;
    const int vocab = zq_model_hparams(m)->n_vocab;
    if (!load_reference(vocab, &ref))
        return NULL;
    char text[4096] = "";
    for (int round = 0; round < 3; round++)
        for (int p = 0; p < ref.n; p++) {
            strncat(text, ref.text[p], sizeof text - strlen(text) - 2);
            strncat(text, p % 2 ? "\n" : "\t", sizeof text - strlen(text) - 1);
        }
    free_reference(&ref);
    int32_t *ids = NULL;
    const zq_status st = zq_eval_tokenize(m, "prompts", text, strlen(text), ZQ_TEXT_AUTO, NULL,
                                          &ids, n);
    CHECK(st == ZQ_OK, "tokenize: %s", zq_last_error());
    return ids;
}

static void test_eval_self_kl_is_zero(void)
{
    zq_model *m = load_tiny(ZQ_TYPE_Q8, NULL, "int8");
    int n = 0;
    int32_t *ids = m ? prompt_stream(m, &n) : NULL;
    if (!ids) {
        zq_model_free(m);
        return;
    }
    const zq_model *models[] = {m, m};
    const zq_eval_params params = {.window = 32, .stride = 16, .per_layer = true, .n_threads = 1};
    zq_eval_result res[2];
    const zq_status st = zq_eval_run(models, 2, 0, ids, n, &params, res);
    CHECK(st == ZQ_OK, "eval: %s", zq_last_error());
    if (st == ZQ_OK) {
        const zq_eval_stats *s = &res[1].stats;
        CHECK(s->kld_mean == 0, "kld_mean %g", s->kld_mean);
        CHECK(s->kld_max == 0, "kld_max %g", s->kld_max);
        CHECK(s->kld_p99 == 0, "kld_p99 %g", s->kld_p99);
        CHECK(s->same_top1 == 1, "same_top1 %g", s->same_top1);
        CHECK(s->dp_mean == 0, "dp_mean %g", s->dp_mean);
        CHECK(s->dp_rms == 0, "dp_rms %g", s->dp_rms);
        CHECK(s->ppl == res[0].stats.ppl, "ppl %.9g vs %.9g", s->ppl, res[0].stats.ppl);
        CHECK(s->ppl_ratio == 1, "ratio %.9g", s->ppl_ratio);
        CHECK_EQ_INT(s->tokens, n - 1); /* a sliding window scores every token but the first */
        CHECK_EQ_INT(res[1].n_layers, zq_model_hparams(m)->n_layer + 1);
        for (int l = 0; l < res[1].n_layers; l++) {
            CHECK_NEAR(res[1].layer_cos[l], 1, 1e-12);
            CHECK(res[1].layer_rel[l] == 0, "layer %d rel %g", l, res[1].layer_rel[l]);
        }
    }
    for (int i = 0; st == ZQ_OK && i < 2; i++)
        zq_eval_result_free(&res[i]);
    free(ids);
    zq_model_free(m);
}

static void test_eval_int8_against_f32(void)
{
    zq_model *f32 = load_tiny(ZQ_TYPE_F32, NULL, "f32");
    zq_model *q8 = load_tiny(ZQ_TYPE_Q8, NULL, "int8");
    int n = 0;
    int32_t *ids = f32 && q8 ? prompt_stream(f32, &n) : NULL;
    if (ids) {
        const zq_model *models[] = {f32, q8};
        /* Two threads: the OpenMP path must give the statistics too. */
        const zq_eval_params params = {.per_layer = true, .n_threads = 2};
        zq_eval_result res[2];
        const zq_status st = zq_eval_run(models, 2, 0, ids, n, &params, res);
        CHECK(st == ZQ_OK, "eval: %s", zq_last_error());
        const zq_eval_stats *s = &res[1].stats;
        CHECK(st != ZQ_OK || (s->kld_mean > 0 && s->kld_mean < 0.05), "kld_mean %g",
              s->kld_mean);
        CHECK(st != ZQ_OK || s->kld_median <= s->kld_p99, "median %g p99 %g", s->kld_median,
              s->kld_p99);
        CHECK(st != ZQ_OK || s->kld_p99 <= s->kld_max, "p99 %g max %g", s->kld_p99,
              s->kld_max);
        CHECK(st != ZQ_OK || s->same_top1 > 0.8, "same_top1 %g", s->same_top1);
        for (int l = 0; st == ZQ_OK && l < res[1].n_layers; l++) {
            CHECK(res[1].layer_cos[l] > 0.99, "layer %d cos %g", l, res[1].layer_cos[l]);
            CHECK(res[1].layer_rel[l] > 0, "layer %d rel %g", l, res[1].layer_rel[l]);
        }
        for (int i = 0; st == ZQ_OK && i < 2; i++)
            zq_eval_result_free(&res[i]);
    }
    free(ids);
    zq_model_free(f32);
    zq_model_free(q8);
}

static void test_eval_vocab_mismatch(void)
{
    zq_model *a = load_tiny(ZQ_TYPE_F32, NULL, "f32");
    zq_model *b = load_tiny(ZQ_TYPE_F32, "人工智能", "added");
    if (a && b) {
        const zq_model *models[] = {a, b};
        const zq_status st = zq_eval_check_models(models, 2, false);
        CHECK(st == ZQ_ERR_INVALID_ARG, "status %d", (int)st);
        CHECK(strstr(zq_last_error(), "different vocabularies") != NULL, "message: %s",
              zq_last_error());
    }
    zq_model_free(a);
    zq_model_free(b);
}

static void test_eval_quantile_known_vector(void)
{
    const float eleven[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    CHECK_NEAR(zq_eval_quantile(eleven, 11, 0.5), 5, 1e-12);
    CHECK_NEAR(zq_eval_quantile(eleven, 11, 0.99), 9.9, 1e-6);
    CHECK_NEAR(zq_eval_quantile(eleven, 11, 0), 0, 0);
    CHECK_NEAR(zq_eval_quantile(eleven, 11, 1), 10, 0);
    const float four[] = {1, 2, 3, 4};
    CHECK_NEAR(zq_eval_quantile(four, 4, 0.5), 2.5, 1e-12); /* numpy.percentile(x, 50) */
    CHECK_NEAR(zq_eval_quantile(four, 4, 0.99), 3.97, 1e-6);
    CHECK_NEAR(zq_eval_quantile(four, 1, 0.99), 1, 0);
    CHECK_NEAR(zq_eval_quantile(four, 0, 0.5), 0, 0);

    /* zq_eval_acc_finish sorts the per-token values before taking the quantiles. */
    zq_eval_acc acc;
    CHECK(zq_eval_acc_init(&acc, 5) == ZQ_OK, "init");
    const float values[] = {0.4f, 0.1f, 0.5f, 0.2f, 0.3f};
    for (int i = 0; i < 5; i++) {
        acc.kld[acc.n++] = values[i];
        acc.kld_sum += values[i];
    }
    acc.kld_max = 0.5;
    zq_eval_stats s;
    zq_eval_acc_finish(&acc, 0, &s);
    CHECK_NEAR(s.kld_median, 0.3, 1e-7);
    CHECK_NEAR(s.kld_p99, 0.4 + 0.96 * 0.1, 1e-6);
    CHECK_NEAR(s.kld_mean, 0.3, 1e-7);
    zq_eval_acc_free(&acc);
}

static void check_window(const zq_eval_window *got, const zq_eval_window *want, int i)
{
    CHECK(got->begin == want->begin, "window %d begins at %d", i, got->begin);
    CHECK(got->end == want->end, "window %d ends at %d", i, got->end);
    CHECK(got->first_target == want->first_target, "window %d scores from %d", i,
          got->first_target);
}

static void test_eval_plan_windows(void)
{
    zq_eval_window w[8];
    CHECK_EQ_INT(zq_eval_plan(10, 4, 4, w), 3);
    const zq_eval_window apart[] = {{0, 4, 1}, {4, 8, 5}, {8, 10, 9}};
    for (int i = 0; i < 3; i++)
        check_window(&w[i], &apart[i], i);

    CHECK_EQ_INT(zq_eval_plan(10, 4, 2, w), 4);
    const zq_eval_window sliding[] = {{0, 4, 1}, {2, 6, 4}, {4, 8, 6}, {6, 10, 8}};
    for (int i = 0; i < 4; i++)
        check_window(&w[i], &sliding[i], i);

    /* A last window of one token has nothing to score and is left out. */
    CHECK_EQ_INT(zq_eval_plan(9, 4, 4, NULL), 2);
    CHECK_EQ_INT(zq_eval_plan(2, 128, 128, NULL), 1);
    CHECK_EQ_INT(zq_eval_plan(1, 128, 128, NULL), 0);
}

static void check_ids(const zq_model *m, const char *text, zq_text_format format,
                      zq_text_format want_used, const int32_t *want, int n_want)
{
    int32_t *ids = NULL;
    int n = 0;
    zq_text_format used = ZQ_TEXT_AUTO;
    const zq_status st = zq_eval_tokenize(m, "t", text, strlen(text), format, &used, &ids, &n);
    CHECK(st == ZQ_OK, "'%s': %s", text, zq_last_error());
    CHECK(used == want_used, "'%s': framing %d", text, (int)used);
    CHECK(n == n_want, "'%s': %d tokens, expected %d", text, n, n_want);
    for (int i = 0; i < n && i < n_want; i++)
        CHECK(ids[i] == want[i], "'%s' token %d: %d, expected %d", text, i, ids[i], want[i]);
    free(ids);
}

static void test_eval_text_framing(void)
{
    zq_model *m = load_tiny(ZQ_TYPE_F32, NULL, "f32");
    if (!m)
        return;
    /* tiny-random's vocabulary: [CLS] 2, [SEP] 3, 你 77, 好 78, 今 79, 天 80. */
    const int32_t plain[] = {2, 77, 78, 3, 79, 80, 3};
    check_ids(m, "你好\n\n今天\r\n", ZQ_TEXT_AUTO, ZQ_TEXT_PLAIN, plain, 7);
    const int32_t chat[] = {2, 77, 78, 3, 79, 80, 3, 2, 80, 3};
    check_ids(m, "你好\t今天\n \t\n天\n", ZQ_TEXT_AUTO, ZQ_TEXT_CHAT, chat, 10);
    const int32_t forced[] = {2, 77, 78, 3, 2, 79, 3};
    check_ids(m, "你好\n今", ZQ_TEXT_CHAT, ZQ_TEXT_CHAT, forced, 7);
    const int32_t tabs_as_space[] = {2, 77, 78, 79, 3};
    check_ids(m, "你好\t今", ZQ_TEXT_PLAIN, ZQ_TEXT_PLAIN, tabs_as_space, 5);
    zq_model_free(m);
}

static void expect_error(const zq_model *m, const char *path, zq_status want, const char *words)
{
    int32_t *ids = NULL;
    int n = -1;
    const zq_status st = zq_eval_tokenize_file(m, path, ZQ_TEXT_AUTO, NULL, &ids, &n);
    CHECK(st == want, "%s: status %d, expected %d", path, (int)st, (int)want);
    CHECK(strstr(zq_last_error(), words) != NULL, "%s: message '%s' lacks '%s'", path,
          zq_last_error(), words);
    CHECK(ids == NULL, "%s: ids not cleared", path);
    CHECK(n == 0, "%s: count not cleared", path);
    free(ids);
}

static void test_eval_text_errors(void)
{
    zq_model *m = load_tiny(ZQ_TYPE_F32, NULL, "f32");
    if (!m)
        return;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-file.txt", zq_test_tmpdir());
    expect_error(m, missing, ZQ_ERR_IO, "no-such-file.txt");
    expect_error(m, zq_test_tmpdir(), ZQ_ERR_IO, "is a directory");
    expect_error(m, WRITE_TEMP("empty.txt", ""), ZQ_ERR_FORMAT, "is empty");
    expect_error(m, WRITE_TEMP("bad.txt", "你好\n今天\n\xe4\xbd\n"), ZQ_ERR_FORMAT,
                 "line 3: invalid UTF-8");
    expect_error(m, WRITE_TEMP("nul.txt", "你好\n\0\n"), ZQ_ERR_FORMAT,
                 "line 2: contains a NUL byte");
    expect_error(m, WRITE_TEMP("blank.txt", "\n \n\t\n"), ZQ_ERR_FORMAT, "at least 2");
    zq_model_free(m);
}

int main(void)
{
    ZQ_RUN(test_eval_ppl_matches_reference);
    ZQ_RUN(test_eval_self_kl_is_zero);
    ZQ_RUN(test_eval_int8_against_f32);
    ZQ_RUN(test_eval_vocab_mismatch);
    ZQ_RUN(test_eval_quantile_known_vector);
    ZQ_RUN(test_eval_plan_windows);
    ZQ_RUN(test_eval_text_framing);
    ZQ_RUN(test_eval_text_errors);
    ZQ_CHECK_EXIT();
}
