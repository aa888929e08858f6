/*
 * model_load.c - builds a zq_model from a .zq file: checks that every tensor the GPT-2 graph
 * needs is present with the right shape and type (layout in model.h), then points the model's
 * weights into the file's arena, so a loaded model keeps one copy of each tensor.
 */
#include "internal.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const zq_file *file;
    const char *path;
} loader;

static const zq_file_tensor *find_tensor(const loader *ld, const char *name, int rows, int cols,
                                         zq_status *st)
{
    if (*st != ZQ_OK)
        return NULL;
    const zq_file_tensor *t = zq_file_find(ld->file, name);
    if (!t) {
        *st = zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' is missing", ld->path, name);
        return NULL;
    }
    if (t->rows != rows || t->cols != cols) {
        *st = zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' has shape [%d, %d], expected [%d, %d]",
                      ld->path, name, t->rows, t->cols, rows, cols);
        return NULL;
    }
    return t;
}

static const float *vector_f32(const loader *ld, const char *name, int n, zq_status *st)
{
    const zq_file_tensor *t = find_tensor(ld, name, 1, n, st);
    if (t && t->type != ZQ_TYPE_F32) {
        *st = zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' is %s, expected f32", ld->path, name,
                      zq_type_name(t->type));
        return NULL;
    }
    return t ? t->data : NULL;
}

static zq_weight matrix(const loader *ld, const char *name, int rows, int cols, zq_status *st)
{
    zq_weight w = {0};
    const zq_file_tensor *t = find_tensor(ld, name, rows, cols, st);
    if (!t)
        return w;
    if (t->type == ZQ_TYPE_Q8 && t->group && (t->group % 4 != 0 || cols % t->group != 0)) {
        *st = zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' has scale group %d, which must divide %d",
                      ld->path, name, t->group, cols);
        return w;
    }
    w.type = t->type;
    w.rows = t->rows;
    w.cols = t->cols;
    w.group = t->type == ZQ_TYPE_Q8 ? t->group : 0;
    w.data = t->data;
    w.scales = t->scales;
    return w;
}

static zq_status load_layer(const loader *ld, const zq_hparams *hp, int l, zq_layer *L)
{
    const int d = hp->n_embd;
    const int ff = hp->n_inner;
    zq_status st = ZQ_OK;
    char name[96];
#define NAME(suffix) (snprintf(name, sizeof name, "h.%d.%s", l, suffix), name)
    L->ln1_g = vector_f32(ld, NAME("ln_1.weight"), d, &st);
    L->ln1_b = vector_f32(ld, NAME("ln_1.bias"), d, &st);
    L->attn = matrix(ld, NAME("attn.c_attn.weight"), 3 * d, d, &st);
    L->attn_b = vector_f32(ld, NAME("attn.c_attn.bias"), 3 * d, &st);
    L->proj = matrix(ld, NAME("attn.c_proj.weight"), d, d, &st);
    L->proj_b = vector_f32(ld, NAME("attn.c_proj.bias"), d, &st);
    L->ln2_g = vector_f32(ld, NAME("ln_2.weight"), d, &st);
    L->ln2_b = vector_f32(ld, NAME("ln_2.bias"), d, &st);
    L->fc = matrix(ld, NAME("mlp.c_fc.weight"), ff, d, &st);
    L->fc_b = vector_f32(ld, NAME("mlp.c_fc.bias"), ff, &st);
    L->fc2 = matrix(ld, NAME("mlp.c_proj.weight"), d, ff, &st);
    L->fc2_b = vector_f32(ld, NAME("mlp.c_proj.bias"), d, &st);
#undef NAME
    return st;
}

static zq_status check_hparams(const char *path, const zq_hparams *hp)
{
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_head < 1 || hp->n_ctx < 1 ||
        hp->n_vocab < 1 || hp->n_inner < 1 || hp->n_embd % hp->n_head != 0)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: invalid hyper-parameters (layers %d, width %d, heads %d, context %d, "
                       "vocab %d, inner %d)",
                       path, hp->n_layer, hp->n_embd, hp->n_head, hp->n_ctx, hp->n_vocab,
                       hp->n_inner);
    return ZQ_OK;
}

static zq_status build_graph(zq_model *m, const char *path)
{
    const loader ld = {&m->file, path};
    const zq_hparams *hp = &m->hp;
    zq_status st = check_hparams(path, hp);

    m->wte = matrix(&ld, "wte.weight", hp->n_vocab, hp->n_embd, &st);
    const zq_weight wpe = matrix(&ld, "wpe.weight", hp->n_ctx, hp->n_embd, &st);
    if (st == ZQ_OK && wpe.type != ZQ_TYPE_F32)
        st = zq_fail(ZQ_ERR_FORMAT, "%s: tensor 'wpe.weight' is %s, expected f32", path,
                     zq_type_name(wpe.type));
    m->wpe = wpe.data;
    m->lnf_g = vector_f32(&ld, "ln_f.weight", hp->n_embd, &st);
    m->lnf_b = vector_f32(&ld, "ln_f.bias", hp->n_embd, &st);
    if (st != ZQ_OK)
        return st;

    m->head = m->wte;
    if (zq_file_find(&m->file, "lm_head.weight"))
        m->head = matrix(&ld, "lm_head.weight", hp->n_vocab, hp->n_embd, &st);

    m->layers = calloc((size_t)hp->n_layer, sizeof(zq_layer));
    if (!m->layers)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    for (int l = 0; l < hp->n_layer && st == ZQ_OK; l++)
        st = load_layer(&ld, hp, l, &m->layers[l]);
    if (st == ZQ_OK)
        m->type = m->layers[0].fc.type;
    return st;
}

static zq_status build_tokenizer(zq_model *m, const char *path)
{
    const zq_file *f = &m->file;
    ZQ_TRY(zq_tokenizer_create((const char *const *)f->vocab, f->n_vocab_base,
                               (const char *const *)f->added, f->n_added, f->lower_case,
                               &m->tok));
    if (zq_tokenizer_size(m->tok) > m->hp.n_vocab)
        return zq_fail(ZQ_ERR_FORMAT, "%s: the tokenizer has %d tokens but the model only %d",
                       path, zq_tokenizer_size(m->tok), m->hp.n_vocab);
    m->special = zq_tokenizer_special(m->tok);
    return ZQ_OK;
}

zq_status zq_model_load(const char *path, const zq_load_params *params, zq_model **out)
{
    if (!out)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_model_load: out is NULL");
    *out = NULL;
    if (!path)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_model_load: path is NULL");
    const double start = zq_now_seconds();
    zq_model *m = calloc(1, sizeof *m);
    if (!m)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);

    const int threads = zq_resolve_threads(params ? params->n_threads : 0);
    zq_status st = zq_file_read(path, threads, &m->file);
    if (st == ZQ_OK) {
        m->hp = m->file.hparams;
        st = build_graph(m, path);
    }
    if (st == ZQ_OK)
        st = build_tokenizer(m, path);
    if (st != ZQ_OK) {
        zq_model_free(m);
        return st;
    }

    m->kernels = zq_kernels_best();
    m->load_seconds = zq_now_seconds() - start;
    snprintf(m->desc, sizeof m->desc, "%s %s (%d layers, %d wide, %d heads, vocab %d)",
             m->file.name[0] ? m->file.name : "model", zq_type_name(m->type), m->hp.n_layer,
             m->hp.n_embd, m->hp.n_head, m->hp.n_vocab);
    ZQ_INFO("loaded %s from %s in %.3f s, kernels %s", m->desc, path, m->load_seconds,
            m->kernels->name);
    *out = m;
    return ZQ_OK;
}

void zq_model_free(zq_model *model)
{
    if (!model)
        return;
    zq_tokenizer_free(model->tok);
    free(model->layers);
    zq_file_free(&model->file);
    free(model);
}

const zq_hparams *zq_model_hparams(const zq_model *model)
{
    return &model->hp;
}

zq_type zq_model_type(const zq_model *model)
{
    return model->type;
}

double zq_model_load_seconds(const zq_model *model)
{
    return model->load_seconds;
}

size_t zq_model_weight_bytes(const zq_model *model)
{
    return model->file.arena_bytes;
}

const char *zq_model_desc(const zq_model *model)
{
    return model->desc;
}

const zq_special_tokens *zq_model_special(const zq_model *model)
{
    return &model->special;
}
