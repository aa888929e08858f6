/*
 * quantize_check.c - checks of the zq_quantize_model options: on their own before the
 * checkpoint is loaded, then against it before any conversion, with a warning for each option
 * that would change nothing.
 */
#include "../formats/zqfile_internal.h"
#include "../runtime/internal.h"
#include "quantize_internal.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

/* Checks the requested added tokens; zq_hf_load has checked the checkpoint's own. */
static zq_status check_added_tokens(const zq_quantize_params *p)
{
    if (p->n_added < 0 || (p->n_added > 0 && !p->added_tokens))
        return zq_fail(ZQ_ERR_INVALID_ARG, "%d added tokens but no list", p->n_added);
    for (int i = 0; i < p->n_added; i++) {
        const char *tok = p->added_tokens[i];
        if (!tok || !tok[0])
            return zq_fail(ZQ_ERR_INVALID_ARG, "added token %d is empty", i);
        const size_t len = strlen(tok);
        const size_t bad = zq_utf8_invalid_at(tok, len);
        if (bad < len)
            return zq_fail(ZQ_ERR_INVALID_ARG,
                           "added token %d is not valid UTF-8 (byte %zu is 0x%02x); the .zq "
                           "metadata is UTF-8",
                           i, bad, (unsigned)(unsigned char)tok[bad]);
    }
    return ZQ_OK;
}

zq_status zq_quant_check_params(const zq_quantize_params *p)
{
    if (p->type != ZQ_TYPE_F32 && p->type != ZQ_TYPE_F16 && p->type != ZQ_TYPE_Q8)
        return zq_fail(ZQ_ERR_INVALID_ARG, "unknown weight type %d", (int)p->type);
    if (p->group < 0 || (p->group && p->group % 4 != 0))
        return zq_fail(ZQ_ERR_INVALID_ARG, "scale group %d must be a positive multiple of 4",
                       p->group);
    if (p->zstd_level < 1 || p->zstd_level > 22)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zstd level %d is outside 1..22", p->zstd_level);
    if (p->calibrate && !(p->alpha >= 0 && p->alpha <= 1))
        return zq_fail(ZQ_ERR_INVALID_ARG, "migration strength alpha %g is outside [0, 1]",
                       (double)p->alpha);
    if (p->calibrate_tokens < 0)
        return zq_fail(ZQ_ERR_INVALID_ARG, "calibration token limit %d is negative",
                       p->calibrate_tokens);
    if (p->n_keep_f16 < 0 || (p->n_keep_f16 > 0 && !p->keep_f16))
        return zq_fail(ZQ_ERR_INVALID_ARG, "%d --keep-f16 patterns but no list", p->n_keep_f16);
    for (int i = 0; i < p->n_keep_f16; i++)
        if (!p->keep_f16[i])
            return zq_fail(ZQ_ERR_INVALID_ARG, "--keep-f16 pattern %d is NULL", i);
    return check_added_tokens(p);
}

static int gcd(int a, int b)
{
    while (b) {
        const int r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* Checks that the scale group divides the input width of every matrix stored as int8, so
 * that the provenance's "scales per N inputs" holds for all of them. */
static zq_status check_group(const zq_quant_job *jobs, int n_jobs, const zq_quantize_params *p)
{
    if (!p->group)
        return ZQ_OK;
    int widths = 0; /* gcd of the int8 widths, the largest group that divides them all */
    const zq_quant_job *bad = NULL;
    for (int i = 0; i < n_jobs; i++) {
        if (zq_quant_job_type(&jobs[i], p) != ZQ_TYPE_Q8)
            continue;
        widths = gcd(widths, zq_quant_job_cols(&jobs[i]));
        if (!bad && zq_quant_job_cols(&jobs[i]) % p->group != 0)
            bad = &jobs[i];
    }
    if (!bad)
        return ZQ_OK;
    return zq_fail(ZQ_ERR_INVALID_ARG,
                   "--group %d does not divide the %d inputs of '%s'; choose a multiple of 4 "
                   "that divides %d, or 0 for one scale per row",
                   p->group, zq_quant_job_cols(bad), bad->name, widths);
}

/* Warns about each --keep-f16 pattern that matches no matrix, since only the matrices are
 * stored as --type and the other tensors stay f32 anyway. */
static void warn_unused_keep(const zq_quant_job *jobs, int n_jobs, const zq_quantize_params *p)
{
    if (p->n_keep_f16 > 0 && p->type != ZQ_TYPE_Q8)
        ZQ_WARN("--keep-f16 has no effect with --type %s", zq_type_name(p->type));
    for (int k = 0; k < p->n_keep_f16; k++) {
        bool used = false;
        for (int i = 0; i < n_jobs && !used; i++)
            used = jobs[i].large && fnmatch(p->keep_f16[k], jobs[i].name, 0) == 0;
        if (!used)
            ZQ_WARN("--keep-f16 pattern '%s' matches no matrix, so it has no effect (matrix "
                    "names look like 'wte.weight' or 'h.0.mlp.c_fc.weight')",
                    p->keep_f16[k]);
    }
}

/* Warns about each requested added token that vocab.txt or the checkpoint already has, or
 * that the list repeats: none of them adds a token. */
static void warn_unused_added(const zq_hf_model *hf, const zq_quantize_params *p)
{
    for (int i = 0; i < p->n_added; i++) {
        const char *tok = p->added_tokens[i];
        if (zq_quant_in_list(hf->vocab, hf->n_vocab_lines, tok))
            ZQ_WARN("--add-token '%s' is already in vocab.txt, so it adds nothing", tok);
        else if (zq_quant_in_list(hf->added, hf->n_added, tok))
            ZQ_WARN("--add-token '%s' is already an added token of the model, so it adds "
                    "nothing", tok);
        else if (zq_quant_in_list((char *const *)p->added_tokens, i, tok))
            ZQ_WARN("--add-token '%s' is given more than once", tok);
    }
}

/* Checks that the tokenizer has the [CLS] and [SEP] tokens that a .zq file needs, before any
 * conversion rather than in the writer at the end. */
static zq_status check_framing_tokens(const zq_hf_model *hf, const char *model_dir,
                                      const zq_quantize_params *p)
{
    const char *const framing[] = {"[CLS]", "[SEP]"};
    for (int i = 0; i < 2; i++) {
        if (zq_quant_in_list(hf->vocab, hf->n_vocab_lines, framing[i]) ||
            zq_quant_in_list(hf->added, hf->n_added, framing[i]) ||
            zq_quant_in_list((char *const *)p->added_tokens, p->n_added, framing[i]))
            continue;
        return zq_fail(ZQ_ERR_UNSUPPORTED,
                       "%s/vocab.txt has no %s token, which zq needs to frame prompts as [CLS] "
                       "text [SEP]",
                       model_dir, framing[i]);
    }
    return ZQ_OK;
}

zq_status zq_quant_check_plan(const zq_hf_model *hf, const char *model_dir,
                            const zq_quantize_params *p)
{
    ZQ_TRY(check_framing_tokens(hf, model_dir, p));
    zq_quant_job *jobs = calloc((size_t)zq_quant_max_jobs(hf), sizeof(zq_quant_job));
    if (!jobs)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory");
    const int n_jobs = zq_quant_plan_jobs(hf, 0, jobs);
    const zq_status st = check_group(jobs, n_jobs, p);
    if (st == ZQ_OK) {
        if (p->group && p->type != ZQ_TYPE_Q8)
            ZQ_WARN("--group %d has no effect with --type %s", p->group, zq_type_name(p->type));
        if (!p->calibrate && p->alpha != ZQ_QUANT_DEFAULT_ALPHA)
            ZQ_WARN("--alpha %.2f has no effect without --calibrate", (double)p->alpha);
        warn_unused_keep(jobs, n_jobs, p);
        warn_unused_added(hf, p);
    }
    free(jobs);
    return st;
}
