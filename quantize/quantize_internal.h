/*
 * quantize_internal.h - the conversion plan that quantize.c (conversion) and quantize_check.c
 * (option checks) share. Not part of any API.
 */
#ifndef ZQ_QUANTIZE_INTERNAL_H
#define ZQ_QUANTIZE_INTERNAL_H

#include "../formats/hf.h"
#include "quantize.h"

#include <stdbool.h>

#define ZQ_QUANT_DEFAULT_ALPHA 0.5f

/* The conversion job of one stored tensor. */
typedef struct {
    char name[96];
    const zq_hf_tensor *src;
    bool transpose;    /* Conv1D [in][out] -> [out][in] */
    int extra_rows;    /* rows appended for added tokens, filled with the mean row */
    bool large;        /* a matrix that takes the requested type */
} zq_quant_job;

/* Returns the most jobs zq_quant_plan_jobs lists: wte, wpe, ln_f (2), lm_head and 12 per
 * layer. */
int zq_quant_max_jobs(const zq_hf_model *hf);

/* Lists the tensors of hf in file order into jobs (zq_quant_max_jobs entries) and returns
 * their number; zq_hf_load has checked that they exist. extra_rows is the number of rows
 * added to the token embedding and the output head for added tokens. */
int zq_quant_plan_jobs(const zq_hf_model *hf, int extra_rows, zq_quant_job *jobs);

/* Returns the type a job is stored as under p. */
zq_type zq_quant_job_type(const zq_quant_job *j, const zq_quantize_params *p);

/* Returns the input width of a job's matrix: the columns of its stored layout. */
int zq_quant_job_cols(const zq_quant_job *j);

/* Returns whether s is one of list[0, n). */
bool zq_quant_in_list(char *const *list, int n, const char *s);

/* Checks the options on their own: ranges, and the added tokens and --keep-f16 lists. */
zq_status zq_quant_check_params(const zq_quantize_params *p);

/* Checks the options against the loaded checkpoint before any conversion (the [CLS] and [SEP]
 * tokens, the scale group), and warns about options that change nothing. */
zq_status zq_quant_check_plan(const zq_hf_model *hf, const char *model_dir,
                              const zq_quantize_params *p);

#endif /* ZQ_QUANTIZE_INTERNAL_H */
