/*
 * test_quantize.c - the checks of zq_quantize_model on its input: weights that are not finite,
 * scale groups that do not divide a matrix, options that have no effect (which warn), and
 * NULL arguments. The models are copies of the tiny-random fixture, edited by the tests.
 */
#include "../formats/zqfile.h"
#include "../quantize/quantize.h"
#include "../runtime/internal.h"
#include "support/check.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tiny[512];

static int write_bytes(const char *path, const void *data, size_t n)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    const int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* Copies the tiny-random model folder to tmp/<name> and returns the copy in dir. */
static void copy_tiny(const char *name, char *dir, size_t cap)
{
    snprintf(dir, cap, "%s/%s", zq_test_tmpdir(), name);
    mkdir(dir, 0700);
    const char *const files[] = {"config.json", "vocab.txt", "tokenizer_config.json",
                                 "model.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char from[700], to[700];
        snprintf(from, sizeof from, "%s/%s", tiny, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        size_t n = 0;
        char *data = zq_test_read_file(from, &n);
        CHECK(data != NULL, "cannot read %s", from);
        if (data)
            CHECK(write_bytes(to, data, n), "cannot write %s", to);
        free(data);
    }
}

/* Sets element index of the F32 tensor key in dir/model.safetensors to value. */
static void poke_weight(const char *dir, const char *key, size_t index, float value)
{
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t n = 0;
    char *bytes = zq_test_read_file(path, &n);
    CHECK(bytes != NULL, "cannot read %s", path);
    if (!bytes)
        return;
    uint64_t header_len;
    memcpy(&header_len, bytes, 8);
    cJSON *header = cJSON_ParseWithLength(bytes + 8, (size_t)header_len);
    const cJSON *range = cJSON_GetObjectItem(cJSON_GetObjectItem(header, key), "data_offsets");
    CHECK(cJSON_IsArray(range), "%s: no tensor %s", path, key);
    if (cJSON_IsArray(range)) {
        const size_t begin = (size_t)cJSON_GetArrayItem(range, 0)->valuedouble;
        memcpy(bytes + 8 + header_len + begin + 4 * index, &value, 4);
        CHECK(write_bytes(path, bytes, n), "cannot write %s", path);
    }
    cJSON_Delete(header);
    free(bytes);
}

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Quantizes dir with params to tmp/<out_name>; returns the status and the output path. */
static zq_status quantize(const char *dir, const zq_quantize_params *params,
                          const char *out_name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", zq_test_tmpdir(), out_name);
    unlink(out);
    zq_quant_report report;
    const zq_status st = zq_quantize_model(dir, out, params, &report);
    zq_quant_report_free(&report);
    return st;
}

/* ---- non-finite weights ---------------------------------------------------------------- */

static void quantize_rejects_non_finite_weights(void)
{
    const struct {
        const char *key;
        size_t index;
        float value;
        const char *needle;
    } cases[] = {
        {"transformer.h.0.attn.c_attn.weight", 7, NAN,
         "model.safetensors: tensor 'h.0.attn.c_attn.weight' has a non-finite value (NaN) at "
         "index 7"},
        {"transformer.h.1.mlp.c_fc.weight", 100, INFINITY,
         "model.safetensors: tensor 'h.1.mlp.c_fc.weight' has a non-finite value (inf) at "
         "index 100"},
    };
    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[600], out[700];
        copy_tiny("non-finite", dir, sizeof dir);
        poke_weight(dir, cases[i].key, cases[i].index, cases[i].value);
        CHECK(quantize(dir, &qp, "non-finite.zq", out, sizeof out) == ZQ_ERR_FORMAT,
              "a non-finite weight was accepted");
        CHECK(strstr(zq_last_error(), cases[i].needle) != NULL, "message: %s", zq_last_error());
        CHECK(!file_exists(out), "a failed quantization left %s", out);
    }
}

/* ---- UTF-8 in the metadata ------------------------------------------------------------- */

static void quantize_keeps_metadata_utf8(void)
{
    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    qp.zstd_level = 1;
    char dir[600], out[700];
    copy_tiny("tiny", dir, sizeof dir);

    const char *const added[] = {"<user>", "<b\xe4t>"};
    qp.added_tokens = added;
    qp.n_added = 2;
    CHECK(quantize(dir, &qp, "latin1.zq", out, sizeof out) == ZQ_ERR_INVALID_ARG,
          "a Latin-1 added token was accepted");
    CHECK(strstr(zq_last_error(), "added token 1 is not valid UTF-8") != NULL, "message: %s",
          zq_last_error());
    CHECK(!file_exists(out), "a failed quantization left %s", out);
    qp.n_added = 0;

    /* A folder name in Latin-1 becomes '?' in the provenance, which must stay UTF-8. */
    copy_tiny("tiny-caf\xe9", dir, sizeof dir);
    CHECK(quantize(dir, &qp, "latin1-folder.zq", out, sizeof out) == ZQ_OK, "%s",
          zq_last_error());
    zq_file f;
    CHECK(zq_file_read(out, 1, &f) == ZQ_OK, "%s", zq_last_error());
    CHECK(strcmp(f.name, "tiny-caf?") == 0, "provenance name '%s'", f.name);
    CHECK(strstr(f.source, "/tiny-caf?") != NULL, "provenance source '%s'", f.source);
    zq_file_free(&f);
}

/* ---- tokenizer ------------------------------------------------------------------------- */

/* A vocabulary without [CLS] is rejected before conversion, naming vocab.txt. */
static void quantize_rejects_vocab_without_cls(void)
{
    char dir[600], path[700], out[700];
    copy_tiny("no-cls", dir, sizeof dir);
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    char *vocab = zq_test_read_file(path, NULL);
    CHECK(vocab != NULL, "cannot read %s", path);
    if (!vocab)
        return;
    char *cls = strstr(vocab, "[CLS]\n");
    CHECK(cls != NULL, "no [CLS] line in %s", path);
    if (cls)
        memcpy(cls, "[CLX]", 5);
    CHECK(write_bytes(path, vocab, strlen(vocab)), "cannot write %s", path);
    free(vocab);

    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    CHECK(quantize(dir, &qp, "no-cls.zq", out, sizeof out) == ZQ_ERR_UNSUPPORTED,
          "a vocabulary without [CLS] was accepted");
    CHECK(strstr(zq_last_error(), "no-cls/vocab.txt has no [CLS] token") != NULL, "message: %s",
          zq_last_error());
    CHECK(!file_exists(out), "a failed quantization left %s", out);
}

/* ---- scale groups ----------------------------------------------------------------------- */

static void quantize_rejects_group_not_dividing(void)
{
    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    qp.zstd_level = 1;
    char out[700];

    /* tiny-random's matrices are 64 wide, except mlp.c_proj, which is 256 wide. */
    qp.group = 128;
    CHECK(quantize(tiny, &qp, "group-128.zq", out, sizeof out) == ZQ_ERR_INVALID_ARG,
          "group 128 was accepted");
    CHECK(strstr(zq_last_error(), "--group 128 does not divide the 64 inputs of 'wte.weight'") !=
              NULL,
          "message: %s", zq_last_error());
    CHECK(strstr(zq_last_error(), "divides 64") != NULL, "message: %s", zq_last_error());
    CHECK(!file_exists(out), "a failed quantization left %s", out);

    /* A matrix kept in f16 has no scales, so the next int8 matrix is named. */
    const char *const keep[] = {"wte.weight"};
    qp.keep_f16 = keep;
    qp.n_keep_f16 = 1;
    CHECK(quantize(tiny, &qp, "group-128.zq", out, sizeof out) == ZQ_ERR_INVALID_ARG,
          "group 128 was accepted");
    CHECK(strstr(zq_last_error(), "64 inputs of 'h.0.attn.c_attn.weight'") != NULL, "message: %s",
          zq_last_error());
    qp.n_keep_f16 = 0;

    qp.group = 32;
    CHECK(quantize(tiny, &qp, "group-32.zq", out, sizeof out) == ZQ_OK, "%s", zq_last_error());
    zq_file f;
    CHECK(zq_file_read(out, 1, &f) == ZQ_OK, "%s", zq_last_error());
    CHECK(strstr(f.quant_desc, "scales per 32 inputs") != NULL, "quant_desc '%s'", f.quant_desc);
    int n_q8 = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        if (f.tensors[i].type != ZQ_TYPE_Q8)
            continue;
        n_q8++;
        CHECK(f.tensors[i].group == 32, "'%s' has group %d", f.tensors[i].name,
              f.tensors[i].group);
    }
    CHECK_EQ_INT(n_q8, 9);
    zq_file_free(&f);
}

/* ---- options without effect ------------------------------------------------------------ */

typedef struct {
    char text[4096];
    int n_warnings;
} log_capture;

static void capture_log(zq_log_level level, const char *func, const char *message, void *user)
{
    log_capture *c = user;
    if (level != ZQ_LOG_WARN)
        return;
    c->n_warnings++;
    const size_t used = strlen(c->text);
    snprintf(c->text + used, sizeof c->text - used, "%s\n", message);
}

/* Quantizes tiny-random with params and returns the warnings it logged in c. */
static void quantize_logged(const zq_quantize_params *params, log_capture *c)
{
    memset(c, 0, sizeof *c);
    zq_log_set_callback(capture_log, c);
    char out[700];
    const zq_status st = quantize(tiny, params, "warn.zq", out, sizeof out);
    zq_log_set_callback(NULL, NULL);
    CHECK(st == ZQ_OK, "%s", zq_last_error());
}

static void quantize_warns_unused_options(void)
{
    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    qp.zstd_level = 1;
    log_capture c;
    quantize_logged(&qp, &c);
    CHECK_EQ_INT(c.n_warnings, 0);

    const char *const keep[] = {"h.*.ln_1.weight", "wte.weight", "no.such.tensor"};
    qp.keep_f16 = keep;
    qp.n_keep_f16 = 3;
    quantize_logged(&qp, &c);
    CHECK_EQ_INT(c.n_warnings, 2);
    CHECK(strstr(c.text, "--keep-f16 pattern 'h.*.ln_1.weight' matches no matrix") != NULL,
          "warnings: %s", c.text);
    CHECK(strstr(c.text, "--keep-f16 pattern 'no.such.tensor' matches no matrix") != NULL,
          "warnings: %s", c.text);
    qp.n_keep_f16 = 0;

    const char *const added[] = {"[CLS]", "<user>", "<user>"};
    qp.added_tokens = added;
    qp.n_added = 3;
    quantize_logged(&qp, &c);
    CHECK_EQ_INT(c.n_warnings, 2);
    CHECK(strstr(c.text, "--add-token '[CLS]' is already in vocab.txt") != NULL, "warnings: %s",
          c.text);
    CHECK(strstr(c.text, "--add-token '<user>' is given more than once") != NULL,
          "warnings: %s", c.text);
    qp.n_added = 0;

    qp.alpha = 0.75f;
    quantize_logged(&qp, &c);
    CHECK_EQ_INT(c.n_warnings, 1);
    CHECK(strstr(c.text, "--alpha 0.75 has no effect without --calibrate") != NULL,
          "warnings: %s", c.text);
    qp.alpha = 0.5f;

    qp.type = ZQ_TYPE_F16;
    qp.group = 32;
    qp.keep_f16 = keep + 1;
    qp.n_keep_f16 = 1;
    quantize_logged(&qp, &c);
    CHECK_EQ_INT(c.n_warnings, 2);
    CHECK(strstr(c.text, "--group 32 has no effect with --type f16") != NULL, "warnings: %s",
          c.text);
    CHECK(strstr(c.text, "--keep-f16 has no effect with --type f16") != NULL, "warnings: %s",
          c.text);
}

/* ---- NULL arguments -------------------------------------------------------------------- */

static void quantize_rejects_null_arguments(void)
{
    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    zq_quant_report report;
    char out[700];
    snprintf(out, sizeof out, "%s/null.zq", zq_test_tmpdir());
    CHECK(zq_quantize_model(NULL, out, &qp, &report) == ZQ_ERR_INVALID_ARG, "NULL folder");
    CHECK(zq_quantize_model(tiny, NULL, &qp, &report) == ZQ_ERR_INVALID_ARG, "NULL output");
    CHECK(zq_quantize_model(tiny, out, NULL, &report) == ZQ_ERR_INVALID_ARG, "NULL params");
    CHECK(zq_quantize_model(tiny, out, &qp, NULL) == ZQ_ERR_INVALID_ARG, "NULL report");
    CHECK(zq_quantize_model("", out, &qp, &report) == ZQ_ERR_INVALID_ARG, "empty folder");
    qp.n_keep_f16 = 1;
    CHECK(zq_quantize_model(tiny, out, &qp, &report) == ZQ_ERR_INVALID_ARG, "NULL patterns");
    const char *const no_pattern[] = {NULL};
    qp.keep_f16 = no_pattern;
    CHECK(zq_quantize_model(tiny, out, &qp, &report) == ZQ_ERR_INVALID_ARG, "NULL pattern");
    qp.n_keep_f16 = 0;
    qp.n_added = 1;
    CHECK(zq_quantize_model(tiny, out, &qp, &report) == ZQ_ERR_INVALID_ARG, "NULL tokens");
    CHECK(!file_exists(out), "%s was written", out);
    zq_quantize_params_default(NULL);
    zq_quant_report_free(NULL);

    zq_file f;
    CHECK(zq_file_read(NULL, 1, &f) == ZQ_ERR_INVALID_ARG, "zq_file_read: NULL path");
    CHECK(f.tensors == NULL, "zq_file_read: output not cleared");
    CHECK(zq_file_read(out, 1, NULL) == ZQ_ERR_INVALID_ARG, "zq_file_read: NULL output");
    CHECK(zq_file_write(NULL, &f, 3, 1) == ZQ_ERR_INVALID_ARG, "zq_file_write: NULL path");
    CHECK(zq_file_find(NULL, "wte.weight") == NULL, "zq_file_find: NULL file");
    zq_file_free(NULL);
}

int main(void)
{
    snprintf(tiny, sizeof tiny, "%s/tiny-random", zq_test_fixtures());
    ZQ_RUN(quantize_rejects_non_finite_weights);
    ZQ_RUN(quantize_keeps_metadata_utf8);
    ZQ_RUN(quantize_rejects_vocab_without_cls);
    ZQ_RUN(quantize_rejects_group_not_dividing);
    ZQ_RUN(quantize_warns_unused_options);
    ZQ_RUN(quantize_rejects_null_arguments);
    ZQ_CHECK_EXIT();
}
