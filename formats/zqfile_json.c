/*
 * zqfile_json.c - the metadata fields of a .zq file that the reader and the writer share (name
 * maps, range checks, frame sizes), the checks of a zq_file before writing, and the JSON
 * builder of the writer.
 */
#include "zqfile_internal.h"

#include "../runtime/internal.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

const zq_hparam_int zq_hparam_ints[ZQ_HPARAM_INT_COUNT] = {
    {"n_vocab", offsetof(zq_hparams, n_vocab), 1 << 24},
    {"n_ctx", offsetof(zq_hparams, n_ctx), 1 << 20},
    {"n_embd", offsetof(zq_hparams, n_embd), 1 << 16},
    {"n_layer", offsetof(zq_hparams, n_layer), 1024},
    {"n_head", offsetof(zq_hparams, n_head), 1 << 16},
    {"n_inner", offsetof(zq_hparams, n_inner), 1 << 20},
};

const char *const zq_special_keys[ZQ_SPECIAL_COUNT] = {"pad", "unk", "cls", "sep", "mask"};
const char *const zq_special_tokens_text[ZQ_SPECIAL_COUNT] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                              "[MASK]"};

/* Indexed by zq_activation. */
static const char *const activation_names[] = {"gelu_tanh", "gelu_erf", "relu"};
#define N_ACTIVATIONS (int)(sizeof activation_names / sizeof activation_names[0])

/* Above 2^50 elements a size in bytes could overflow later arithmetic; no model comes close. */
#define MAX_ELEMENTS ((uint64_t)1 << 50)

const char *zq_activation_name(zq_activation activation)
{
    const int a = (int)activation;
    return a >= 0 && a < N_ACTIVATIONS ? activation_names[a] : NULL;
}

int zq_activation_from_name(const char *name)
{
    for (int a = 0; a < N_ACTIVATIONS; a++)
        if (strcmp(name, activation_names[a]) == 0)
            return a;
    return -1;
}

static bool type_valid(zq_type type)
{
    return type == ZQ_TYPE_F32 || type == ZQ_TYPE_F16 || type == ZQ_TYPE_Q8;
}

int zq_type_from_name(const char *name)
{
    const zq_type types[] = {ZQ_TYPE_F32, ZQ_TYPE_F16, ZQ_TYPE_Q8};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(name, zq_type_name(types[i])) == 0)
            return (int)types[i];
    return -1;
}

size_t zq_utf8_invalid_at(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        const utf8proc_ssize_t step = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
                                                       (utf8proc_ssize_t)(n - i), &cp);
        if (step <= 0)
            return i;
        i += (size_t)step;
    }
    return n;
}

static bool utf8_valid(const char *s)
{
    const size_t n = strlen(s);
    return zq_utf8_invalid_at(s, n) == n;
}

int32_t zq_file_find_token(const zq_file *f, const char *token)
{
    for (int32_t i = 0; i < f->n_vocab_base; i++)
        if (strcmp(f->vocab[i], token) == 0)
            return i;
    for (int32_t j = 0; j < f->n_added; j++)
        if (strcmp(f->added[j], token) == 0)
            return f->n_vocab_base + j;
    return -1;
}

uint64_t zq_frame_scale_bytes(const zq_file_tensor *t)
{
    if (t->type != ZQ_TYPE_Q8 || t->rows < 1 || t->group < 0)
        return 0;
    const uint64_t groups = t->group ? (uint64_t)(t->cols / t->group) : 1;
    return 4 * (uint64_t)t->rows * groups;
}

uint64_t zq_frame_content_bytes(const zq_file_tensor *t)
{
    if (t->rows < 1 || t->cols < 1)
        return 0;
    const uint64_t n = (uint64_t)t->rows * (uint64_t)t->cols;
    if (n > MAX_ELEMENTS)
        return 0;
    switch (t->type) {
    case ZQ_TYPE_F32: return 4 * n;
    case ZQ_TYPE_F16: return 2 * n;
    case ZQ_TYPE_Q8:
        if (t->group < 0 || (t->group > 0 && t->cols % t->group != 0))
            return 0;
        return ZQ_ALIGN_UP(zq_frame_scale_bytes(t)) + n;
    }
    return 0;
}

size_t zq_file_tensor_bytes(const zq_file_tensor *t)
{
    const uint64_t scales = zq_frame_scale_bytes(t);
    const uint64_t content = zq_frame_content_bytes(t);
    if (t->type == ZQ_TYPE_Q8 && content > 0)
        return (size_t)(content - ZQ_ALIGN_UP(scales) + scales);
    return (size_t)content;
}

/* ---- checks ---------------------------------------------------------------------------- */

zq_status zq_check_hparams(const char *path, zq_status status, const char *what,
                           const zq_hparams *hp)
{
    for (int i = 0; i < ZQ_HPARAM_INT_COUNT; i++) {
        const zq_hparam_int *field = &zq_hparam_ints[i];
        const int32_t v = *zq_hparam_int_ptr((zq_hparams *)hp, field);
        if (v < 1 || v > field->max)
            return zq_fail(status, "%s: %s.%s is %d, expected 1 to %d", path, what, field->key, v,
                           field->max);
    }
    if (hp->n_embd % hp->n_head != 0)
        return zq_fail(status, "%s: %s: n_embd %d is not a multiple of n_head %d", path, what,
                       hp->n_embd, hp->n_head);
    if (!(hp->ln_eps > 0.0f && hp->ln_eps <= 1.0f))
        return zq_fail(status, "%s: %s.ln_eps is %g, expected a number in (0, 1]", path, what,
                       (double)hp->ln_eps);
    if (!zq_activation_name(hp->activation))
        return zq_fail(status, "%s: %s.activation is %d, not a known activation", path, what,
                       (int)hp->activation);
    return ZQ_OK;
}

zq_status zq_check_tensor_shape(const char *path, zq_status status, const zq_file_tensor *t)
{
    if (!type_valid(t->type))
        return zq_fail(status, "%s: tensor '%s' has unknown type %d", path, t->name, (int)t->type);
    if (t->rows < 1 || t->cols < 1)
        return zq_fail(status, "%s: tensor '%s' has shape [%d, %d], expected positive sizes", path,
                       t->name, t->rows, t->cols);
    if (t->type == ZQ_TYPE_Q8 && (t->group < 0 || (t->group > 0 && t->cols % t->group != 0)))
        return zq_fail(status, "%s: tensor '%s': scale group %d does not divide cols %d", path,
                       t->name, t->group, t->cols);
    if (t->type != ZQ_TYPE_Q8 && t->group != 0)
        return zq_fail(status, "%s: tensor '%s' is %s but has scale group %d; only int8 has groups",
                       path, t->name, zq_type_name(t->type), t->group);
    if (zq_frame_content_bytes(t) == 0)
        return zq_fail(status, "%s: tensor '%s' of shape [%d, %d] is too large", path, t->name,
                       t->rows, t->cols);
    return ZQ_OK;
}

/* Returns whether any byte of p[0, n) is 0x80 (int8 -128). It tests 8 bytes per step with
 * the "has a zero byte" bit trick on p ^ 0x80..80, because GCC 12 does not vectorize a plain
 * byte loop at -O2, which made this check cost as much as decompressing the tensor. */
static bool has_byte_0x80(const uint8_t *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        const uint64_t x = v ^ highs;
        acc |= (x - ones) & ~x & highs;
    }
    bool found = acc != 0;
    for (; i < n; i++)
        found |= p[i] == 0x80;
    return found;
}

/* Checks what the int8 kernels rely on: values in [-127, 127], scales finite and >= 0. */
zq_status zq_check_q8_values(const char *path, zq_status status, const zq_file_tensor *t)
{
    const size_t n_scales = (size_t)(zq_frame_scale_bytes(t) / 4);
    for (size_t i = 0; i < n_scales; i++)
        if (!(t->scales[i] >= 0.0f && isfinite(t->scales[i])))
            return zq_fail(status,
                           "%s: tensor '%s': scale %zu is %g, expected a finite value >= 0", path,
                           t->name, i, (double)t->scales[i]);

    const int8_t *q = t->data;
    const size_t n = (size_t)t->rows * (size_t)t->cols;
    if (!has_byte_0x80((const uint8_t *)q, n))
        return ZQ_OK;
    size_t at = 0;
    while (q[at] != -128)
        at++;
    return zq_fail(status,
                   "%s: tensor '%s': int8 value -128 at row %zu, column %zu; the format allows "
                   "[-127, 127]",
                   path, t->name, at / (size_t)t->cols, at % (size_t)t->cols);
}

static const char *const top_tensors[] = {"wte.weight", "wpe.weight", "ln_f.weight",
                                           "ln_f.bias", "lm_head.weight"};
static const char *const layer_tensors[] = {
    "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
    "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias",
};

static bool in_names(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* Parses "h.<layer>.<suffix>" with a layer number in canonical decimal form (no sign, no
 * leading zero) and returns the layer, or -1 if name has another form or a layer above 2^20,
 * far past the format's limit of 1024 layers. */
static long layer_of(const char *name)
{
    if (strncmp(name, "h.", 2) != 0 || !isdigit((unsigned char)name[2]))
        return -1;
    const char *p = name + 2;
    if (p[0] == '0' && isdigit((unsigned char)p[1]))
        return -1;
    long layer = 0;
    for (; isdigit((unsigned char)*p); p++) {
        layer = 10 * layer + (*p - '0');
        if (layer > 1 << 20)
            return -1;
    }
    const size_t n_suffixes = sizeof layer_tensors / sizeof layer_tensors[0];
    if (*p != '.' || !in_names(layer_tensors, n_suffixes, p + 1))
        return -1;
    return layer;
}

zq_status zq_check_tensor_name(const char *path, zq_status status, const char *name,
                               int32_t n_layer)
{
    if (in_names(top_tensors, sizeof top_tensors / sizeof top_tensors[0], name))
        return ZQ_OK;
    const long layer = layer_of(name);
    if (layer >= n_layer)
        return zq_fail(status, "%s: tensor '%s' belongs to layer %ld, but hparams.n_layer is %d",
                       path, name, layer, n_layer);
    if (layer < 0)
        return zq_fail(status,
                       "%s: unknown tensor '%.96s'; a GPT-2 model has wte, wpe, ln_f, lm_head "
                       "and h.<layer>.* weights",
                       path, name);
    return ZQ_OK;
}

static int compare_names(const void *a, const void *b)
{
    const zq_file_tensor *const *x = a;
    const zq_file_tensor *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

zq_status zq_check_unique_names(const char *path, zq_status status, const zq_file *f)
{
    if (f->n_tensors < 2)
        return ZQ_OK;
    const zq_file_tensor **sorted = malloc((size_t)f->n_tensors * sizeof *sorted);
    if (!sorted)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    for (int32_t i = 0; i < f->n_tensors; i++)
        sorted[i] = &f->tensors[i];
    qsort(sorted, (size_t)f->n_tensors, sizeof *sorted, compare_names);
    zq_status st = ZQ_OK;
    for (int32_t i = 1; i < f->n_tensors && st == ZQ_OK; i++)
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
            st = zq_fail(status, "%s: tensor '%s' appears more than once", path, sorted[i]->name);
    free(sorted);
    return st;
}

zq_status zq_check_tokens(const char *path, zq_status status, const zq_file *f)
{
    for (int32_t j = 0; j < f->n_added; j++)
        if (!f->added[j][0])
            return zq_fail(status, "%s: added token %d (id %d) is empty", path, j,
                           f->n_vocab_base + j);
    const char *const framing[] = {"[CLS]", "[SEP]"};
    for (int i = 0; i < 2; i++)
        if (zq_file_find_token(f, framing[i]) < 0)
            return zq_fail(status,
                           "%s: the vocabulary has no %s token, which zq needs to frame prompts "
                           "as [CLS] text [SEP]",
                           path, framing[i]);
    return ZQ_OK;
}

static bool string_fits(const char *s, size_t cap)
{
    return strnlen(s, cap) < cap;
}

static zq_status check_tokenizer_input(const char *path, const zq_file *f)
{
    if (f->tokenizer_kind[0] && strcmp(f->tokenizer_kind, "wordpiece") != 0)
        return zq_fail(ZQ_ERR_INVALID_ARG, "%s: tokenizer kind \"%.16s\" cannot be written",
                       path, f->tokenizer_kind);
    if (f->n_vocab_base < 1 || !f->vocab || f->n_added < 0 || (f->n_added > 0 && !f->added))
        return zq_fail(ZQ_ERR_INVALID_ARG, "%s: the tokenizer has no vocabulary", path);
    if ((int64_t)f->n_vocab_base + f->n_added > f->hparams.n_vocab)
        return zq_fail(ZQ_ERR_INVALID_ARG,
                       "%s: the tokenizer has %d + %d added tokens, more than n_vocab %d", path,
                       f->n_vocab_base, f->n_added, f->hparams.n_vocab);
    for (int32_t i = 0; i < f->n_vocab_base; i++) {
        if (!f->vocab[i])
            return zq_fail(ZQ_ERR_INVALID_ARG, "%s: vocabulary entry %d is NULL", path, i);
        if (!utf8_valid(f->vocab[i]))
            return zq_fail(ZQ_ERR_INVALID_ARG, "%s: vocabulary entry %d is not valid UTF-8",
                           path, i);
    }
    for (int32_t j = 0; j < f->n_added; j++) {
        if (!f->added[j])
            return zq_fail(ZQ_ERR_INVALID_ARG, "%s: added token %d is NULL", path, j);
        if (!utf8_valid(f->added[j]))
            return zq_fail(ZQ_ERR_INVALID_ARG, "%s: added token %d is not valid UTF-8", path, j);
    }
    return zq_check_tokens(path, ZQ_ERR_INVALID_ARG, f);
}

static zq_status check_tensor_input(const char *path, const zq_file_tensor *t, int32_t n_layer)
{
    if (t->name[0] == 0 || !string_fits(t->name, sizeof t->name))
        return zq_fail(ZQ_ERR_INVALID_ARG, "%s: a tensor name is empty or not NUL-terminated",
                       path);
    if (!utf8_valid(t->name))
        return zq_fail(ZQ_ERR_INVALID_ARG, "%s: a tensor name is not valid UTF-8", path);
    ZQ_TRY(zq_check_tensor_name(path, ZQ_ERR_INVALID_ARG, t->name, n_layer));
    ZQ_TRY(zq_check_tensor_shape(path, ZQ_ERR_INVALID_ARG, t));
    if (!t->data || (t->type == ZQ_TYPE_Q8 && !t->scales))
        return zq_fail(ZQ_ERR_INVALID_ARG, "%s: tensor '%s' has no %s", path, t->name,
                       t->data ? "scales" : "data");
    return ZQ_OK;
}

static zq_status check_provenance_input(const char *path, const zq_file *f)
{
    const struct {
        const char *key;
        const char *text;
        size_t cap;
    } fields[] = {
        {"name", f->name, sizeof f->name},
        {"tool", f->tool, sizeof f->tool},
        {"source", f->source, sizeof f->source},
        {"source_format", f->source_format, sizeof f->source_format},
        {"quant_desc", f->quant_desc, sizeof f->quant_desc},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (!string_fits(fields[i].text, fields[i].cap))
            return zq_fail(ZQ_ERR_INVALID_ARG, "%s: provenance %s is not NUL-terminated", path,
                           fields[i].key);
        if (!utf8_valid(fields[i].text))
            return zq_fail(ZQ_ERR_INVALID_ARG, "%s: provenance %s is not valid UTF-8", path,
                           fields[i].key);
    }
    return ZQ_OK;
}

zq_status zq_meta_check_input(const char *path, const zq_file *f)
{
    ZQ_TRY(zq_check_hparams(path, ZQ_ERR_INVALID_ARG, "hparams", &f->hparams));
    ZQ_TRY(check_tokenizer_input(path, f));
    ZQ_TRY(check_provenance_input(path, f));
    if (f->n_tensors < 0 || f->n_tensors > ZQ_FILE_MAX_TENSORS || (f->n_tensors > 0 && !f->tensors))
        return zq_fail(ZQ_ERR_INVALID_ARG, "%s: %d tensors, expected 0 to %d", path, f->n_tensors,
                       ZQ_FILE_MAX_TENSORS);
    for (int32_t i = 0; i < f->n_tensors; i++)
        ZQ_TRY(check_tensor_input(path, &f->tensors[i], f->hparams.n_layer));
    return zq_check_unique_names(path, ZQ_ERR_INVALID_ARG, f);
}

/* ---- JSON builder ---------------------------------------------------------------------- */

static bool add_number(cJSON *obj, const char *key, double value)
{
    return cJSON_AddNumberToObject(obj, key, value) != NULL;
}

static bool add_hparams(cJSON *root, const zq_hparams *hp)
{
    cJSON *obj = cJSON_AddObjectToObject(root, "hparams");
    bool ok = obj != NULL;
    for (int i = 0; i < ZQ_HPARAM_INT_COUNT && ok; i++)
        ok = add_number(obj, zq_hparam_ints[i].key,
                        *zq_hparam_int_ptr((zq_hparams *)hp, &zq_hparam_ints[i]));
    return ok && add_number(obj, "ln_eps", hp->ln_eps) &&
           cJSON_AddStringToObject(obj, "activation", zq_activation_name(hp->activation));
}

static bool add_strings(cJSON *obj, const char *key, char *const *list, int32_t n)
{
    cJSON *arr = cJSON_AddArrayToObject(obj, key);
    if (!arr)
        return false;
    for (int32_t i = 0; i < n; i++) {
        cJSON *s = cJSON_CreateString(list[i]);
        if (!s || !cJSON_AddItemToArray(arr, s)) {
            cJSON_Delete(s);
            return false;
        }
    }
    return true;
}

static bool add_tokenizer(cJSON *root, const zq_file *f)
{
    cJSON *obj = cJSON_AddObjectToObject(root, "tokenizer");
    bool ok = obj && cJSON_AddStringToObject(obj, "kind", "wordpiece") &&
              cJSON_AddBoolToObject(obj, "lower_case", f->lower_case) &&
              add_strings(obj, "vocab", f->vocab, f->n_vocab_base) &&
              add_strings(obj, "added", f->added, f->n_added);
    cJSON *special = ok ? cJSON_AddObjectToObject(obj, "special") : NULL;
    ok = special != NULL;
    for (int i = 0; i < ZQ_SPECIAL_COUNT && ok; i++)
        ok = add_number(special, zq_special_keys[i],
                        zq_file_find_token(f, zq_special_tokens_text[i]));
    return ok;
}

static bool add_provenance(cJSON *root, const zq_file *f)
{
    cJSON *obj = cJSON_AddObjectToObject(root, "provenance");
    return obj && cJSON_AddStringToObject(obj, "name", f->name) &&
           cJSON_AddStringToObject(obj, "tool", f->tool) &&
           cJSON_AddStringToObject(obj, "source", f->source) &&
           cJSON_AddStringToObject(obj, "source_format", f->source_format) &&
           cJSON_AddStringToObject(obj, "quant_desc", f->quant_desc);
}

static bool add_tensor(cJSON *arr, const zq_file_tensor *t, const zq_frame_ref *fr)
{
    cJSON *e = cJSON_CreateObject();
    if (!e || !cJSON_AddItemToArray(arr, e)) {
        cJSON_Delete(e);
        return false;
    }
    return cJSON_AddStringToObject(e, "name", t->name) &&
           cJSON_AddStringToObject(e, "type", zq_type_name(t->type)) &&
           add_number(e, "rows", t->rows) && add_number(e, "cols", t->cols) &&
           add_number(e, "group", t->type == ZQ_TYPE_Q8 ? t->group : 0) &&
           add_number(e, "offset", (double)fr->offset) && add_number(e, "size", (double)fr->size) &&
           add_number(e, "raw_size", (double)fr->raw_size) && add_number(e, "crc32c", fr->crc32c);
}

char *zq_meta_build(const zq_file *f, const zq_frame_ref *frames)
{
    cJSON *root = cJSON_CreateObject();
    bool ok = root && add_hparams(root, &f->hparams) && add_tokenizer(root, f) &&
              add_provenance(root, f);
    cJSON *arr = ok ? cJSON_AddArrayToObject(root, "tensors") : NULL;
    ok = arr != NULL;
    for (int32_t i = 0; i < f->n_tensors && ok; i++)
        ok = add_tensor(arr, &f->tensors[i], &frames[i]);
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json)
        zq_fail(ZQ_ERR_NOMEM, "out of memory while building the metadata JSON");
    return json;
}
