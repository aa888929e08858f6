/*
 * model.h - the in-memory GPT-2 model, the KV cache and the forward pass (internal).
 *
 * Tensor naming and layout inside a .zq file (written by quantize/, read by model_load.c):
 * Hugging Face names without the "transformer." prefix. Matrices are stored [out][in], so the
 * Conv1D weights of a checkpoint ([in][out]) are transposed by the quantizer:
 *   wte.weight              [n_vocab][n_embd]   f32 | f16 | int8   (also the tied output head)
 *   wpe.weight              [n_ctx][n_embd]     f32
 *   h.L.ln_1.weight/bias    [n_embd]            f32
 *   h.L.attn.c_attn.weight  [3*n_embd][n_embd]  f32 | f16 | int8, bias [3*n_embd] f32
 *   h.L.attn.c_proj.weight  [n_embd][n_embd]    ...,              bias [n_embd] f32
 *   h.L.ln_2.weight/bias    [n_embd]            f32
 *   h.L.mlp.c_fc.weight     [n_inner][n_embd]   ...,              bias [n_inner] f32
 *   h.L.mlp.c_proj.weight   [n_embd][n_inner]   ...,              bias [n_embd] f32
 *   ln_f.weight/bias        [n_embd]            f32
 *   lm_head.weight          [n_vocab][n_embd]   optional, only when not tied to wte
 */
#ifndef ZQ_MODEL_H
#define ZQ_MODEL_H

#include "../formats/zqfile.h"
#include "kernels.h"
#include "tokenizer.h"
#include "zq.h"

typedef struct {
    const float *ln1_g, *ln1_b; /* [n_embd] */
    zq_weight attn;             /* [3 n_embd][n_embd] */
    const float *attn_b;        /* [3 n_embd] */
    zq_weight proj;             /* [n_embd][n_embd] */
    const float *proj_b;        /* [n_embd] */
    const float *ln2_g, *ln2_b; /* [n_embd] */
    zq_weight fc;               /* [n_inner][n_embd] */
    const float *fc_b;          /* [n_inner] */
    zq_weight fc2;              /* [n_embd][n_inner] */
    const float *fc2_b;         /* [n_embd] */
} zq_layer;

struct zq_model {
    zq_hparams hp;
    zq_type type;
    zq_file file; /* owns every tensor's memory */
    zq_tokenizer *tok;
    zq_special_tokens special;
    zq_weight wte;       /* [n_vocab][n_embd] token embedding */
    zq_weight head;      /* [n_vocab][n_embd] output head: wte when tied */
    const float *wpe;    /* [n_ctx][n_embd] */
    zq_layer *layers;    /* [n_layer] */
    const float *lnf_g;  /* [n_embd] */
    const float *lnf_b;  /* [n_embd] */
    const zq_kernels *kernels;
    double load_seconds;
    char desc[192];
};

/* KV cache of one sequence: per layer, keys and values [cap][n_embd] of f32, IEEE half or
 * int8 (type), grown on demand up to max positions so memory follows the context actually
 * used. An int8 cache also keeps one scale per row and head, ks and vs [cap][n_head]: a row's
 * head slice is quantized like an activation row (zq_kernels.quantize_row_s8). All of it lies
 * in one allocation, arena. */
typedef struct {
    void *arena;
    void **k;        /* [n_layer], into arena */
    void **v;        /* [n_layer], into arena */
    float **ks;      /* [n_layer] for an int8 cache, else NULL */
    float **vs;      /* [n_layer] for an int8 cache, else NULL */
    zq_kv_type type; /* ZQ_KV_F32, ZQ_KV_F16 or ZQ_KV_Q8 */
    int cap;
    int max;
    int n_layer;
    int n_embd;
    int n_head;
} zq_kv;

/* Returns the bytes of one cached element of the given type (scales not included). */
static inline size_t zq_kv_elem_size(zq_kv_type type)
{
    switch (type) {
    case ZQ_KV_Q8:
        return 1;
    case ZQ_KV_F16:
        return sizeof(uint16_t);
    default:
        return sizeof(float);
    }
}

/* Returns the bytes of the scales of one cached row of one tensor: n_head floats for an int8
 * cache, none otherwise. */
static inline size_t zq_kv_scale_size(zq_kv_type type, int n_head)
{
    return type == ZQ_KV_Q8 ? (size_t)n_head * sizeof(float) : 0;
}

/* Returns the cache type that auto stands for with weights of the given type. */
zq_kv_type zq_kv_resolve(zq_kv_type requested, zq_type weights);

/* type must not be ZQ_KV_AUTO (see zq_kv_resolve). */
zq_status zq_kv_init(zq_kv *kv, const zq_hparams *hp, int max_positions, zq_kv_type type);
zq_status zq_kv_reserve(zq_kv *kv, int positions);
void zq_kv_free(zq_kv *kv);

/* Activations for up to max_rows tokens per forward call. */
typedef struct {
    int max_rows;
    float *x;      /* [rows][n_embd] residual stream */
    float *h;      /* [rows][n_embd] layer-norm output */
    float *qkv;    /* [rows][3 n_embd] */
    float *att;    /* [rows][n_embd] attention output */
    float *mlp;    /* [rows][n_inner] */
    float *scores; /* attention scratch, zq_attention_scratch() floats */
    float *kv_rows; /* per thread: f32 copies of cache rows, zq_kv_row_scratch() floats */
    int score_threads;
    float *head_in;  /* [ZQ_HEAD_ROWS][n_embd] rows gathered for the output head */
    float *head_out; /* [ZQ_HEAD_ROWS][n_vocab] */
    zq_linear_scratch lin;
    /* Per thread of a decode team (zq_forward of one row): its own layer-norm output [n_embd]
     * and one row of quantized activations. */
    float *row_h;
    zq_linear_scratch row_q;
} zq_workspace;

#define ZQ_HEAD_ROWS 16
/* Rows of one sequence whose attention scores are one matrix product (prefill). */
#define ZQ_ATT_ROWS 4
/* Positions per work item of the attention of a single token (decode). */
#define ZQ_ATT_CHUNK 64

/* Returns the floats of scratch that the attention of one row over its whole cache (decode)
 * needs: the scores [n_head][n_ctx], then per chunk of ZQ_ATT_CHUNK positions a partial output
 * [n_embd] and a max and a sum per head, then the row's query quantized per head ([n_embd]
 * int8 and [n_head] scales). */
static inline size_t zq_single_attention_scratch(const zq_hparams *hp)
{
    const size_t heads = (size_t)hp->n_head, d = (size_t)hp->n_embd;
    const size_t chunks = ((size_t)hp->n_ctx + ZQ_ATT_CHUNK - 1) / ZQ_ATT_CHUNK;
    const size_t query = (d + sizeof(float) - 1) / sizeof(float) + heads;
    return heads * hp->n_ctx + chunks * (d + 2 * heads) + query;
}

/* Returns the floats of attention scratch a workspace needs: per thread, ZQ_ATT_ROWS rows of
 * weights for prefill, or the scratch of one decoded row. */
static inline size_t zq_attention_scratch(const zq_hparams *hp, int threads)
{
    const size_t rows = ZQ_ATT_ROWS * (size_t)hp->n_ctx;
    const size_t single = zq_single_attention_scratch(hp);
    return (size_t)threads * (rows > single ? rows : single);
}

/* Returns the floats per thread that the attention of several rows (prefill) needs to read an
 * f16 or int8 cache as f32: the keys and values of one head over the whole context, and for
 * int8 the ZQ_ATT_ROWS queries of the head after quantization plus room for one in int8. */
static inline size_t zq_kv_row_scratch(const zq_hparams *hp)
{
    return (2 * (size_t)hp->n_ctx + ZQ_ATT_ROWS + 1) * (size_t)(hp->n_embd / hp->n_head);
}

zq_status zq_workspace_init(zq_workspace *ws, const zq_hparams *hp, int max_rows, int threads);
void zq_workspace_free(zq_workspace *ws);

/* Called with the LayerNorm output that is the input of a layer's c_attn (site 0) or c_fc
 * (site 1), h [n][n_embd]; the quantizer's activation calibration reads it. */
typedef void (*zq_norm_fn)(int layer, int site, const float *h, int n, int n_embd, void *user);

/* One forward call over n token rows. Row i is token ids[i] at position pos[i] of the sequence
 * whose cache is kvs[i] (rows of one sequence must be in position order; different rows may
 * belong to different sequences). Each row's k/v is written to its cache. When logits[i] is not
 * NULL it receives that row's [n_vocab] logits. n <= ws->max_rows, and each cache must already
 * hold room (zq_kv_reserve) for its positions. */
typedef struct {
    zq_layer_fn layer_fn;
    void *layer_user;
    zq_norm_fn norm_fn; /* NULL = off */
    void *norm_user;
} zq_forward_hooks;

void zq_forward(const zq_model *m, zq_workspace *ws, zq_kv *const *kvs, const int *pos,
                const int32_t *ids, int n, float *const *logits, int n_threads,
                const zq_forward_hooks *hooks);

#endif /* ZQ_MODEL_H */
