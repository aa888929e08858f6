/*
 * quantize.h - offline conversion of a Hugging Face GPT-2 folder into a .zq file.
 *
 * The large matrices (attention, MLP, token embedding / output head) are stored as the chosen
 * type; layer norms, biases and position embeddings stay f32. Conv1D weights are transposed to
 * [out][in] (layout in runtime/model.h).
 */
#ifndef ZQ_QUANTIZE_H
#define ZQ_QUANTIZE_H

#include "../runtime/zq.h"

#include <stdbool.h>

typedef struct {
    zq_type type;   /* type of the large matrices */
    int group;      /* ZQ_TYPE_Q8: scale group length along the input; 0 = one scale per row */
    int zstd_level; /* 1..22 */
    int n_threads;  /* 0 = physical cores */
    const char *const *added_tokens; /* tokens appended to the vocabulary, never split */
    int n_added;
    const char *const *keep_f16; /* fnmatch patterns of tensor names kept in f16 */
    int n_keep_f16;
    /* SmoothQuant-style migration (quantize/smooth.h): when calibrate names a text file, the
     * f32 model is run over it (framed as by zq eval, at most calibrate_tokens tokens; 0 = all)
     * and the activation outliers of the inputs of c_attn and c_fc move into their weights with
     * strength alpha in [0, 1] before conversion. */
    const char *calibrate;
    float alpha; /* default 0.5 */
    int calibrate_tokens;
    /* Called after each tensor is converted (done of total); may be NULL. */
    void (*progress)(int done, int total, const char *name, void *user);
    void *progress_user;
} zq_quantize_params;

void zq_quantize_params_default(zq_quantize_params *params);

/* Quantization error of one tensor against its f32 source. */
typedef struct {
    char name[96];
    zq_type type;
    int rows;
    int cols;
    double rel_rms; /* sqrt(sum (w - w')^2 / sum w^2) */
    double max_abs; /* max |w - w'| */
} zq_quant_stat;

typedef struct {
    zq_quant_stat *stats; /* one per stored tensor, in file order; owned, free with _free */
    int n_stats;
    long long params_total; /* parameters written */
    long long bytes_out;    /* size of the .zq file */
    long long calibration_tokens; /* tokens run for the migration; 0 without calibrate */
    char source_format[64];
} zq_quant_report;

/* Converts model_dir to out_path. The file appears only when complete. */
zq_status zq_quantize_model(const char *model_dir, const char *out_path,
                            const zq_quantize_params *params, zq_quant_report *report);
void zq_quant_report_free(zq_quant_report *report);

/* Quantizes one row-major matrix [rows][cols] to int8 in [-127, 127] with one scale per row or
 * per group of `group` columns. scales has rows * (group ? cols / group : 1) entries. */
void zq_quantize_q8(const float *w, int rows, int cols, int group, int8_t *q, float *scales);

#endif /* ZQ_QUANTIZE_H */
