/*
 * quantize.c - converts a Hugging Face GPT-2 folder into a .zq file: reads the checkpoint,
 * extends the vocabulary with added tokens, converts each tensor to its stored type and layout,
 * measures the error, and writes the file atomically.
 */
#include "quantize.h"

#include "../formats/hf.h"
#include "../formats/zqfile.h"
#include "../formats/zqfile_internal.h"
#include "../runtime/eval.h"
#include "../runtime/internal.h"
#include "quantize_internal.h"
#include "smooth.h"

#include <fnmatch.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void zq_quantize_params_default(zq_quantize_params *params)
{
    if (!params)
        return;
    memset(params, 0, sizeof *params);
    params->type = ZQ_TYPE_Q8;
    params->zstd_level = 10;
    params->alpha = ZQ_QUANT_DEFAULT_ALPHA;
}

void zq_quantize_q8(const float *w, int rows, int cols, int group, int8_t *q, float *scales)
{
    const int glen = group ? group : cols;
    const int groups = cols / glen;
    for (int r = 0; r < rows; r++) {
        for (int g = 0; g < groups; g++) {
            const float *src = w + (size_t)r * cols + (size_t)g * glen;
            int8_t *dst = q + (size_t)r * cols + (size_t)g * glen;
            float max = 0;
            for (int i = 0; i < glen; i++)
                max = fabsf(src[i]) > max ? fabsf(src[i]) : max;
            const float scale = max / 127.0f;
            const float inv = scale > 0 ? 1.0f / scale : 0;
            for (int i = 0; i < glen; i++) {
                /* |src| <= max, so the rounded value is within [-127, 127]; -128 never occurs. */
                long v = lroundf(src[i] * inv);
                if (v > 127)
                    v = 127;
                if (v < -127)
                    v = -127;
                dst[i] = (int8_t)v;
            }
            scales[(size_t)r * groups + g] = scale;
        }
    }
}

/* Returns the f32 source of a job as [rows][cols] in stored layout (malloc'd). */
static float *stored_layout(const zq_quant_job *j, int *rows, int *cols)
{
    const zq_hf_tensor *t = j->src;
    const int r0 = t->ndim == 2 ? (int)t->shape[0] : 1;
    const int c0 = t->ndim == 2 ? (int)t->shape[1] : (int)t->shape[0];
    *rows = (j->transpose ? c0 : r0) + j->extra_rows;
    *cols = j->transpose ? r0 : c0;
    float *out = malloc((size_t)*rows * (size_t)*cols * sizeof(float));
    if (!out)
        return NULL;
    if (j->transpose) {
        for (int i = 0; i < r0; i++)
            for (int k = 0; k < c0; k++)
                out[(size_t)k * r0 + i] = t->data[(size_t)i * c0 + k];
    } else {
        memcpy(out, t->data, (size_t)r0 * c0 * sizeof(float));
    }
    /* New token rows start at the mean of the trained rows, so their logits are ordinary
     * rather than extreme until the model is fine-tuned. */
    const int base = *rows - j->extra_rows;
    for (int r = base; r < *rows; r++) {
        float *row = out + (size_t)r * *cols;
        for (int k = 0; k < *cols; k++) {
            double sum = 0;
            for (int i = 0; i < base; i++)
                sum += out[(size_t)i * *cols + k];
            row[k] = (float)(sum / base);
        }
    }
    return out;
}

zq_type zq_quant_job_type(const zq_quant_job *j, const zq_quantize_params *p)
{
    if (!j->large)
        return ZQ_TYPE_F32;
    for (int i = 0; i < p->n_keep_f16; i++)
        if (fnmatch(p->keep_f16[i], j->name, 0) == 0)
            return p->type == ZQ_TYPE_F32 ? ZQ_TYPE_F32 : ZQ_TYPE_F16;
    return p->type;
}

int zq_quant_job_cols(const zq_quant_job *j)
{
    const zq_hf_tensor *t = j->src;
    if (j->transpose)
        return (int)t->shape[0];
    return (int)(t->ndim == 2 ? t->shape[1] : t->shape[0]);
}

static void measure(const float *w, const zq_file_tensor *t, zq_quant_stat *stat)
{
    const size_t n = (size_t)t->rows * t->cols;
    const int glen = t->group ? t->group : t->cols;
    const int groups = t->cols / glen;
    double err2 = 0, ref2 = 0, max_abs = 0;
    for (size_t i = 0; i < n; i++) {
        double deq = w[i];
        if (t->type == ZQ_TYPE_F16) {
            deq = zq_f16_to_f32(((const uint16_t *)t->data)[i]);
        } else if (t->type == ZQ_TYPE_Q8) {
            const size_t r = i / t->cols, c = i % t->cols;
            deq = ((const int8_t *)t->data)[i] * (double)t->scales[r * groups + c / glen];
        }
        const double e = fabs(deq - w[i]);
        err2 += e * e;
        ref2 += (double)w[i] * w[i];
        max_abs = e > max_abs ? e : max_abs;
    }
    snprintf(stat->name, sizeof stat->name, "%s", t->name);
    stat->type = t->type;
    stat->rows = t->rows;
    stat->cols = t->cols;
    stat->rel_rms = ref2 > 0 ? sqrt(err2 / ref2) : 0;
    stat->max_abs = max_abs;
}

static const char *non_finite_name(float x)
{
    if (isnan(x))
        return "NaN";
    return x > 0 ? "inf" : "-inf";
}

/* zq_hf_load rejects non-finite weights, so this catches only a migrated weight that
 * overflowed, which needs activation maxima near FLT_MAX; no test reaches it. */
static zq_status check_finite(const zq_quant_job *j, const zq_quantize_params *p,
                              const float *w, int rows, int cols)
{
    const size_t n = (size_t)rows * cols;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(w[i]))
            continue;
        return zq_fail(ZQ_ERR_INVALID_ARG,
                       "tensor '%s' has a non-finite value (%s) at row %zu, column %zu after %s",
                       j->name, non_finite_name(w[i]), i / (size_t)cols, i % (size_t)cols,
                       p->calibrate ? "the SmoothQuant migration; try a smaller --alpha"
                                    : "conversion");
    }
    return ZQ_OK;
}

/* Converts one job into t (data malloc'd) and fills its error statistics. */
static zq_status convert(const zq_quant_job *j, const zq_quantize_params *p, zq_file_tensor *t,
                         zq_quant_stat *stat)
{
    int rows, cols;
    float *w = stored_layout(j, &rows, &cols);
    if (!w)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory converting '%s'", j->name);
    if (check_finite(j, p, w, rows, cols) != ZQ_OK) {
        free(w);
        return ZQ_ERR_INVALID_ARG;
    }
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", j->name);
    t->type = zq_quant_job_type(j, p);
    t->rows = rows;
    t->cols = cols;
    const size_t n = (size_t)rows * cols;

    zq_status st = ZQ_OK;
    if (t->type == ZQ_TYPE_Q8) {
        t->group = p->group; /* check_group has checked that it divides cols */
        const int groups = t->group ? cols / t->group : 1;
        t->data = malloc(n);
        t->scales = malloc((size_t)rows * groups * sizeof(float));
        if (t->data && t->scales)
            zq_quantize_q8(w, rows, cols, t->group, t->data, t->scales);
    } else if (t->type == ZQ_TYPE_F16) {
        uint16_t *h = malloc(n * sizeof(uint16_t));
        for (size_t i = 0; h && i < n; i++)
            h[i] = zq_f32_to_f16(w[i]);
        t->data = h;
    } else {
        t->data = w;
        w = NULL;
    }
    if (!t->data || (t->type == ZQ_TYPE_Q8 && !t->scales))
        st = zq_fail(ZQ_ERR_NOMEM, "out of memory converting '%s'", j->name);
    else
        measure(w ? w : t->data, t, stat);
    free(w);
    return st;
}

static void add_job(zq_quant_job *jobs, int *n, const zq_hf_model *hf, const char *name,
                    bool transpose, bool large, int extra_rows)
{
    zq_quant_job *j = &jobs[(*n)++];
    memset(j, 0, sizeof *j);
    snprintf(j->name, sizeof j->name, "%s", name);
    j->src = zq_hf_find(hf, name);
    j->transpose = transpose;
    j->large = large;
    j->extra_rows = extra_rows;
}

int zq_quant_max_jobs(const zq_hf_model *hf)
{
    return 5 + 12 * hf->hparams.n_layer;
}

int zq_quant_plan_jobs(const zq_hf_model *hf, int extra_rows, zq_quant_job *jobs)
{
    static const struct {
        const char *suffix;
        bool matrix;
    } per_layer[] = {
        {"ln_1.weight", false},        {"ln_1.bias", false},       {"attn.c_attn.weight", true},
        {"attn.c_attn.bias", false},   {"attn.c_proj.weight", true}, {"attn.c_proj.bias", false},
        {"ln_2.weight", false},        {"ln_2.bias", false},       {"mlp.c_fc.weight", true},
        {"mlp.c_fc.bias", false},      {"mlp.c_proj.weight", true}, {"mlp.c_proj.bias", false},
    };
    int n = 0;
    add_job(jobs, &n, hf, "wte.weight", false, true, extra_rows);
    add_job(jobs, &n, hf, "wpe.weight", false, false, 0);
    for (int l = 0; l < hf->hparams.n_layer; l++) {
        for (size_t i = 0; i < sizeof per_layer / sizeof per_layer[0]; i++) {
            char name[96];
            snprintf(name, sizeof name, "h.%d.%s", l, per_layer[i].suffix);
            add_job(jobs, &n, hf, name, per_layer[i].matrix, per_layer[i].matrix, 0);
        }
    }
    add_job(jobs, &n, hf, "ln_f.weight", false, false, 0);
    add_job(jobs, &n, hf, "ln_f.bias", false, false, 0);
    if (!hf->lm_head_tied && zq_hf_find(hf, "lm_head.weight"))
        add_job(jobs, &n, hf, "lm_head.weight", false, true, extra_rows);
    return n;
}

bool zq_quant_in_list(char *const *list, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

/* Collects the checkpoint's added tokens and the requested ones, skipping duplicates and tokens
 * that vocab.txt already has (as transformers' add_tokens does). The strings are borrowed. */
static zq_status merge_added(const zq_hf_model *hf, const zq_quantize_params *p, char ***out,
                             int *n_out)
{
    const int cap = hf->n_added + p->n_added;
    char **added = calloc((size_t)cap + 1, sizeof(char *));
    if (!added)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory");
    int n = 0;
    for (int i = 0; i < cap; i++) {
        char *tok = i < hf->n_added ? hf->added[i] : (char *)p->added_tokens[i - hf->n_added];
        if (!zq_quant_in_list(added, n, tok) &&
            !zq_quant_in_list(hf->vocab, hf->n_vocab_lines, tok))
            added[n++] = tok;
    }
    *out = added;
    *n_out = n;
    return ZQ_OK;
}

/* Replaces each byte that does not start a valid UTF-8 sequence with '?', so that a folder
 * name in another encoding, or a multi-byte character cut by a field's size limit, cannot
 * make the metadata invalid. */
static void replace_invalid_utf8(char *s)
{
    const size_t len = strlen(s);
    size_t at = 0;
    while ((at += zq_utf8_invalid_at(s + at, len - at)) < len)
        s[at++] = '?';
}

static void describe(zq_file *f, const zq_hf_model *hf, const char *dir,
                     const zq_quantize_params *p)
{
    char copy[256];
    snprintf(copy, sizeof copy, "%s", dir);
    size_t len = strlen(copy);
    while (len > 1 && copy[len - 1] == '/')
        copy[--len] = '\0';
    snprintf(f->name, sizeof f->name, "%s", basename(copy));
    snprintf(f->tool, sizeof f->tool, "zq quantize %s", ZQ_VERSION_STRING);
    snprintf(f->source, sizeof f->source, "%s", dir);
    snprintf(f->source_format, sizeof f->source_format, "%s", hf->source_format);
    snprintf(f->tokenizer_kind, sizeof f->tokenizer_kind, "wordpiece");
    if (p->type == ZQ_TYPE_Q8 && p->group)
        snprintf(f->quant_desc, sizeof f->quant_desc, "int8 weights, scales per %d inputs",
                 p->group);
    else if (p->type == ZQ_TYPE_Q8)
        snprintf(f->quant_desc, sizeof f->quant_desc, "int8 weights, one scale per row");
    else
        snprintf(f->quant_desc, sizeof f->quant_desc, "%s weights", zq_type_name(p->type));
    if (p->calibrate) {
        snprintf(copy, sizeof copy, "%s", p->calibrate);
        len = strlen(f->quant_desc);
        snprintf(f->quant_desc + len, sizeof f->quant_desc - len, "; SmoothQuant alpha %.2f on %s",
                 (double)p->alpha, basename(copy));
    }
    if (p->n_keep_f16 > 0) {
        len = strlen(f->quant_desc);
        snprintf(f->quant_desc + len, sizeof f->quant_desc - len, "; f16 for %s%s",
                 p->keep_f16[0], p->n_keep_f16 > 1 ? ", ..." : "");
    }
    replace_invalid_utf8(f->name);
    replace_invalid_utf8(f->source);
    replace_invalid_utf8(f->quant_desc);
}

/* Converts every job in parallel. zq_last_error() is per thread, so the message of the failed
 * job with the lowest index is copied back to the calling thread. */
static zq_status convert_all(const zq_quant_job *jobs, int n_jobs, const zq_quantize_params *p,
                             zq_file *f, zq_quant_report *report)
{
    zq_status st = ZQ_OK;
    int done = 0;
    int failed = n_jobs;
    char message[512] = "";
#pragma omp parallel for schedule(dynamic, 1) num_threads(zq_resolve_threads(p->n_threads))
    for (int i = 0; i < n_jobs; i++) {
        zq_status s = convert(&jobs[i], p, &f->tensors[i], &report->stats[i]);
#pragma omp critical
        {
            if (s != ZQ_OK && i < failed) {
                st = s;
                failed = i;
                snprintf(message, sizeof message, "%s", zq_last_error());
            }
            done++;
            if (p->progress)
                p->progress(done, n_jobs, jobs[i].name, p->progress_user);
        }
    }
    for (int i = 0; i < n_jobs; i++)
        report->params_total += (long long)f->tensors[i].rows * f->tensors[i].cols;
    return st == ZQ_OK ? ZQ_OK : zq_fail(st, "%s", message);
}

static void free_tensors(zq_file *f)
{
    for (int i = 0; f->tensors && i < f->n_tensors; i++) {
        free(f->tensors[i].data);
        free(f->tensors[i].scales);
    }
    free(f->tensors);
}

/* Converts the loaded checkpoint hf and writes out_path. */
static zq_status write_model(const zq_hf_model *hf, const char *model_dir, const char *out_path,
                             const zq_quantize_params *params, zq_quant_report *report)
{
    zq_file f;
    memset(&f, 0, sizeof f);
    char **added = NULL;
    int n_added = 0;
    zq_quant_job *jobs = NULL;
    zq_status st = merge_added(hf, params, &added, &n_added);
    if (st != ZQ_OK)
        goto done;

    const int needed = hf->n_vocab_lines + n_added;
    const int extra = needed > hf->hparams.n_vocab ? needed - hf->hparams.n_vocab : 0;
    f.hparams = hf->hparams;
    f.hparams.n_vocab += extra;
    f.vocab = hf->vocab;
    f.n_vocab_base = hf->n_vocab_lines;
    f.added = added;
    f.n_added = n_added;
    f.lower_case = hf->lower_case;
    describe(&f, hf, model_dir, params);
    snprintf(report->source_format, sizeof report->source_format, "%s", hf->source_format);

    jobs = calloc((size_t)zq_quant_max_jobs(hf), sizeof(zq_quant_job));
    if (!jobs) {
        st = zq_fail(ZQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    f.n_tensors = zq_quant_plan_jobs(hf, extra, jobs);
    f.tensors = calloc((size_t)f.n_tensors, sizeof(zq_file_tensor));
    report->stats = calloc((size_t)f.n_tensors, sizeof(zq_quant_stat));
    report->n_stats = f.n_tensors;
    if (!f.tensors || !report->stats) {
        st = zq_fail(ZQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    st = convert_all(jobs, f.n_tensors, params, &f, report);
    if (st == ZQ_OK)
        st = zq_file_write(out_path, &f, params->zstd_level,
                           zq_resolve_threads(params->n_threads));
    if (st == ZQ_OK) {
        struct stat sb;
        report->bytes_out = stat(out_path, &sb) == 0 ? (long long)sb.st_size : 0;
    }

done:
    free_tensors(&f);
    free(added);
    free(jobs);
    return st;
}

/* Tokenizes the calibration text with the f32 model at f32_path and collects the activation
 * maxima. */
static zq_status calibrate(const char *f32_path, const zq_quantize_params *p, zq_act_max *act)
{
    const zq_load_params lp = {.n_threads = p->n_threads};
    zq_model *model = NULL;
    ZQ_TRY(zq_model_load(f32_path, &lp, &model));
    int32_t *ids = NULL;
    int n_ids = 0;
    zq_status st = zq_eval_tokenize_file(model, p->calibrate, ZQ_TEXT_AUTO, NULL, &ids, &n_ids);
    if (st == ZQ_OK) {
        if (p->calibrate_tokens > 0 && n_ids > p->calibrate_tokens)
            n_ids = p->calibrate_tokens;
        st = zq_smooth_calibrate(model, ids, n_ids, p->n_threads, act);
    }
    free(ids);
    zq_model_free(model);
    return st;
}

/* Writes hf as a temporary f32 .zq, runs it over the calibration text and migrates the
 * activation outliers into hf's weights (quantize/smooth.h). */
static zq_status smooth_outliers(zq_hf_model *hf, const char *model_dir,
                                 const zq_quantize_params *params, long long *tokens)
{
    const char *tmp = getenv("TMPDIR");
    char dir[512], path[560];
    snprintf(dir, sizeof dir, "%s/zq-calibrate-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return zq_fail(ZQ_ERR_IO, "cannot create a temporary folder %s for calibration", dir);
    snprintf(path, sizeof path, "%s/f32.zq", dir);

    zq_quantize_params f32 = *params;
    f32.type = ZQ_TYPE_F32;
    f32.group = 0;
    f32.n_keep_f16 = 0;
    f32.zstd_level = 1;
    f32.calibrate = NULL;
    f32.progress = NULL;
    zq_quant_report scratch;
    memset(&scratch, 0, sizeof scratch);
    zq_act_max act;
    memset(&act, 0, sizeof act);
    zq_status st = write_model(hf, model_dir, path, &f32, &scratch);
    zq_quant_report_free(&scratch);
    if (st == ZQ_OK)
        st = calibrate(path, params, &act);
    unlink(path);
    rmdir(dir);
    if (st == ZQ_OK)
        st = zq_smooth_apply(hf, &act, params->alpha);
    if (st == ZQ_OK)
        ZQ_INFO("migrated activation outliers with alpha %.2f after %lld calibration tokens",
                (double)params->alpha, act.tokens);
    *tokens = act.tokens;
    zq_act_max_free(&act);
    return st;
}

zq_status zq_quantize_model(const char *model_dir, const char *out_path,
                            const zq_quantize_params *params, zq_quant_report *report)
{
    if (!report)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_quantize_model: report is NULL");
    memset(report, 0, sizeof *report);
    if (!model_dir || !model_dir[0] || !out_path || !out_path[0])
        return zq_fail(ZQ_ERR_INVALID_ARG,
                       "zq_quantize_model: the model folder and the output path are required");
    if (!params)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_quantize_model: params is NULL");
    ZQ_TRY(zq_quant_check_params(params));
    zq_hf_model hf;
    ZQ_TRY(zq_hf_load(model_dir, &hf));
    zq_status st = zq_quant_check_plan(&hf, model_dir, params);
    long long tokens = 0;
    if (st == ZQ_OK && params->calibrate)
        st = smooth_outliers(&hf, model_dir, params, &tokens);
    if (st == ZQ_OK)
        st = write_model(&hf, model_dir, out_path, params, report);
    report->calibration_tokens = tokens;
    zq_hf_free(&hf);
    if (st != ZQ_OK)
        zq_quant_report_free(report);
    return st;
}

void zq_quant_report_free(zq_quant_report *report)
{
    if (!report)
        return;
    free(report->stats);
    memset(report, 0, sizeof *report);
}
