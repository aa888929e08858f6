/*
 * zqfile_meta.c - parses the metadata JSON of a .zq file and checks every field; the keys and
 * ranges are those of formats/ZQ_FORMAT.md. zqfile_json.c builds the same JSON for the writer.
 */
#include "zqfile_internal.h"

#include "../runtime/internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2^53: above it a JSON number (a double) cannot represent every integer exactly. */
#define MAX_EXACT_INT ((int64_t)1 << 53)

static const cJSON *get(const cJSON *obj, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* Describes a JSON value for an error message. */
static const char *describe(const cJSON *item, char *buf, size_t cap)
{
    if (!item)
        return "nothing (the key is missing)";
    if (cJSON_IsNumber(item)) {
        snprintf(buf, cap, "%.17g", item->valuedouble);
        return buf;
    }
    if (cJSON_IsString(item)) {
        snprintf(buf, cap, "the string \"%.40s\"", item->valuestring);
        return buf;
    }
    if (cJSON_IsBool(item))
        return cJSON_IsTrue(item) ? "true" : "false";
    if (cJSON_IsNull(item))
        return "null";
    return cJSON_IsArray(item) ? "an array" : "an object";
}

/* Fails with "metadata field WHERE.KEY: expected WHAT, found ...". where may be "", and a key
 * such as "[3]" is an array index. */
static zq_status expected(const char *path, const char *where, const char *key, const char *what,
                          const cJSON *found)
{
    const char *dot = where[0] && key[0] != '[' ? "." : "";
    char buf[80];
    return zq_fail(ZQ_ERR_FORMAT, "%s: metadata field %s%s%s: expected %s, found %s", path, where,
                   dot, key, what, describe(found, buf, sizeof buf));
}

static int compare_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Fails if two members of obj have the same key: cJSON would keep both and find the first,
 * while other JSON parsers keep the last. where names obj in the message. */
static zq_status check_unique_keys(const char *path, const char *where, const cJSON *obj)
{
    const int n = cJSON_GetArraySize(obj);
    if (n < 2)
        return ZQ_OK;
    const char **keys = malloc((size_t)n * sizeof *keys);
    if (!keys)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    int k = 0;
    for (const cJSON *it = obj->child; it; it = it->next)
        keys[k++] = it->string;
    qsort(keys, (size_t)n, sizeof *keys, compare_keys);
    zq_status st = ZQ_OK;
    for (int i = 1; i < n && st == ZQ_OK; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            st = zq_fail(ZQ_ERR_FORMAT, "%s: metadata object %s has the key \"%.40s\" twice",
                         path, where, keys[i]);
    free(keys);
    return st;
}

static zq_status get_object(const char *path, const cJSON *obj, const char *key,
                            const cJSON **out)
{
    *out = get(obj, key);
    if (!cJSON_IsObject(*out))
        return expected(path, "", key, "an object", *out);
    return check_unique_keys(path, key, *out);
}

static zq_status get_int(const char *path, const cJSON *obj, const char *where, const char *key,
                         int64_t min, int64_t max, int64_t *out)
{
    const cJSON *item = get(obj, key);
    if (cJSON_IsNumber(item)) {
        const double v = item->valuedouble;
        if (v == floor(v) && v >= (double)min && v <= (double)max) {
            *out = (int64_t)v;
            return ZQ_OK;
        }
    }
    char what[96];
    snprintf(what, sizeof what, "an integer in [%lld, %lld]", (long long)min, (long long)max);
    return expected(path, where, key, what, item);
}

static zq_status get_string(const char *path, const cJSON *obj, const char *where,
                            const char *key, const char **out)
{
    const cJSON *item = get(obj, key);
    if (!cJSON_IsString(item))
        return expected(path, where, key, "a string", item);
    *out = item->valuestring;
    return ZQ_OK;
}

/* Copies a string field into a fixed array of cap bytes. */
static zq_status get_text(const char *path, const cJSON *obj, const char *where, const char *key,
                          char *dst, size_t cap)
{
    const char *s = "";
    ZQ_TRY(get_string(path, obj, where, key, &s));
    const size_t n = strlen(s);
    if (n >= cap)
        return zq_fail(ZQ_ERR_FORMAT, "%s: metadata field %s.%s has %zu bytes, at most %zu allowed",
                       path, where, key, n, cap - 1);
    memcpy(dst, s, n + 1);
    return ZQ_OK;
}

/* ---- hparams --------------------------------------------------------------------------- */

static zq_status parse_hparams(const char *path, const cJSON *root, zq_hparams *hp)
{
    const cJSON *obj;
    ZQ_TRY(get_object(path, root, "hparams", &obj));
    for (size_t i = 0; i < ZQ_HPARAM_INT_COUNT; i++) {
        const zq_hparam_int *field = &zq_hparam_ints[i];
        int64_t v = 0;
        ZQ_TRY(get_int(path, obj, "hparams", field->key, 1, field->max, &v));
        *zq_hparam_int_ptr(hp, field) = (int32_t)v;
    }

    const cJSON *eps = get(obj, "ln_eps");
    if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0.0 && eps->valuedouble <= 1.0))
        return expected(path, "hparams", "ln_eps", "a number in (0, 1]", eps);
    hp->ln_eps = (float)eps->valuedouble;

    const char *act = "";
    ZQ_TRY(get_string(path, obj, "hparams", "activation", &act));
    const int a = zq_activation_from_name(act);
    if (a < 0)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: metadata field hparams.activation: unknown activation \"%s\", "
                       "expected gelu_tanh, gelu_erf or relu",
                       path, act);
    hp->activation = (zq_activation)a;
    return zq_check_hparams(path, ZQ_ERR_FORMAT, "metadata field hparams", hp);
}

/* ---- tokenizer ------------------------------------------------------------------------- */

/* Copies an array of strings. *n_out counts the copies made so far, so zq_file_free releases
 * a partial list after a failure. */
static zq_status parse_strings(const char *path, const cJSON *tok, const char *key, int32_t max,
                               char ***out, int32_t *n_out)
{
    const cJSON *arr = get(tok, key);
    if (!cJSON_IsArray(arr))
        return expected(path, "tokenizer", key, "an array of strings", arr);
    const int n = cJSON_GetArraySize(arr);
    if (n > max)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: metadata field tokenizer.%s has %d entries, more than n_vocab %d", path,
                       key, n, max);
    *out = calloc(n > 0 ? (size_t)n : 1, sizeof **out);
    if (!*out)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory for the tokenizer", path);

    int i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it)) {
            char where[48];
            snprintf(where, sizeof where, "tokenizer.%s", key);
            char index[24];
            snprintf(index, sizeof index, "[%d]", i);
            return expected(path, where, index, "a string", it);
        }
        (*out)[i] = strdup(it->valuestring);
        if (!(*out)[i])
            return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory for the tokenizer", path);
        *n_out = i + 1;
    }
    return ZQ_OK;
}

static zq_status parse_special(const char *path, const cJSON *tok, const zq_file *f)
{
    const cJSON *obj = get(tok, "special");
    if (!cJSON_IsObject(obj))
        return expected(path, "tokenizer", "special", "an object", obj);
    ZQ_TRY(check_unique_keys(path, "tokenizer.special", obj));
    for (int i = 0; i < ZQ_SPECIAL_COUNT; i++) {
        int64_t id = 0;
        ZQ_TRY(get_int(path, obj, "tokenizer.special", zq_special_keys[i], -1, INT32_MAX, &id));
        const int32_t actual = zq_file_find_token(f, zq_special_tokens_text[i]);
        if (id != actual)
            return zq_fail(ZQ_ERR_FORMAT,
                           "%s: metadata field tokenizer.special.%s is %lld, but the vocabulary "
                           "has %s at id %d",
                           path, zq_special_keys[i], (long long)id, zq_special_tokens_text[i],
                           actual);
    }
    return ZQ_OK;
}

static zq_status parse_tokenizer(const char *path, const cJSON *root, zq_file *f)
{
    const cJSON *tok;
    ZQ_TRY(get_object(path, root, "tokenizer", &tok));

    const char *kind = "";
    ZQ_TRY(get_string(path, tok, "tokenizer", "kind", &kind));
    if (strcmp(kind, "wordpiece") != 0)
        return zq_fail(ZQ_ERR_UNSUPPORTED,
                       "%s: tokenizer kind \"%.32s\" is not supported; this zq reads \"wordpiece\"",
                       path, kind);
    snprintf(f->tokenizer_kind, sizeof f->tokenizer_kind, "%s", kind);

    const cJSON *lower = get(tok, "lower_case");
    if (!cJSON_IsBool(lower))
        return expected(path, "tokenizer", "lower_case", "true or false", lower);
    f->lower_case = cJSON_IsTrue(lower);

    const int32_t n_vocab = f->hparams.n_vocab;
    ZQ_TRY(parse_strings(path, tok, "vocab", n_vocab, &f->vocab, &f->n_vocab_base));
    if (f->n_vocab_base < 1)
        return zq_fail(ZQ_ERR_FORMAT, "%s: metadata field tokenizer.vocab is empty", path);
    ZQ_TRY(parse_strings(path, tok, "added", n_vocab, &f->added, &f->n_added));
    if (f->n_vocab_base + f->n_added > n_vocab)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: the tokenizer has %d + %d added tokens, more than n_vocab %d", path,
                       f->n_vocab_base, f->n_added, n_vocab);
    ZQ_TRY(parse_special(path, tok, f));
    return zq_check_tokens(path, ZQ_ERR_FORMAT, f);
}

static zq_status parse_provenance(const char *path, const cJSON *root, zq_file *f)
{
    const cJSON *obj;
    ZQ_TRY(get_object(path, root, "provenance", &obj));
    const char *w = "provenance";
    ZQ_TRY(get_text(path, obj, w, "name", f->name, sizeof f->name));
    ZQ_TRY(get_text(path, obj, w, "tool", f->tool, sizeof f->tool));
    ZQ_TRY(get_text(path, obj, w, "source", f->source, sizeof f->source));
    ZQ_TRY(get_text(path, obj, w, "source_format", f->source_format, sizeof f->source_format));
    return get_text(path, obj, w, "quant_desc", f->quant_desc, sizeof f->quant_desc);
}

/* ---- tensor directory ------------------------------------------------------------------ */

/* Reads name, type and shape of one directory entry. */
static zq_status parse_tensor_shape(const char *path, const cJSON *e, const char *where,
                                    zq_file_tensor *t)
{
    const char *name = "";
    ZQ_TRY(get_string(path, e, where, "name", &name));
    const size_t len = strlen(name);
    if (len == 0 || len >= sizeof t->name)
        return zq_fail(ZQ_ERR_FORMAT, "%s: metadata field %s.name has %zu bytes, expected 1 to %zu",
                       path, where, len, sizeof t->name - 1);
    memcpy(t->name, name, len + 1);

    const char *type = "";
    ZQ_TRY(get_string(path, e, where, "type", &type));
    const int ty = zq_type_from_name(type);
    if (ty < 0)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: tensor '%s': unknown type \"%.16s\", expected f32, f16 or int8", path,
                       t->name, type);
    t->type = (zq_type)ty;

    int64_t rows = 0, cols = 0, group = 0;
    ZQ_TRY(get_int(path, e, where, "rows", 1, INT32_MAX, &rows));
    ZQ_TRY(get_int(path, e, where, "cols", 1, INT32_MAX, &cols));
    ZQ_TRY(get_int(path, e, where, "group", 0, INT32_MAX, &group));
    t->rows = (int32_t)rows;
    t->cols = (int32_t)cols;
    t->group = (int32_t)group;
    return zq_check_tensor_shape(path, ZQ_ERR_FORMAT, t);
}

/* Where the tensor frames may lie: from data_start (the end of the metadata frame) to the
 * end of the file. Directory offsets count from data_start. */
typedef struct {
    uint64_t data_start;
    uint64_t file_size;
} frame_area;

/* Reads the frame record of one entry and checks it against the end of the frame before it
 * (*next_offset) and the end of the file. */
static zq_status parse_frame(const char *path, const cJSON *e, const char *where,
                             const zq_file_tensor *t, const frame_area *area,
                             uint64_t *next_offset, zq_frame_ref *fr)
{
    int64_t offset = 0, size = 0, raw = 0, crc = 0;
    ZQ_TRY(get_int(path, e, where, "offset", 0, MAX_EXACT_INT, &offset));
    ZQ_TRY(get_int(path, e, where, "size", 1, MAX_EXACT_INT, &size));
    ZQ_TRY(get_int(path, e, where, "raw_size", 1, MAX_EXACT_INT, &raw));
    ZQ_TRY(get_int(path, e, where, "crc32c", 0, UINT32_MAX, &crc));
    fr->offset = (uint64_t)offset;
    fr->size = (uint64_t)size;
    fr->raw_size = (uint64_t)raw;
    fr->crc32c = (uint32_t)crc;

    const uint64_t want = zq_frame_content_bytes(t);
    if (fr->raw_size != want)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: tensor '%s': raw_size %llu, expected %llu for %s [%d, %d] group %d",
                       path, t->name, (unsigned long long)fr->raw_size, (unsigned long long)want,
                       zq_type_name(t->type), t->rows, t->cols, t->group);
    if (fr->offset != *next_offset)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: tensor '%s': frame offset %llu, expected %llu where the previous "
                       "frame ends",
                       path, t->name, (unsigned long long)fr->offset,
                       (unsigned long long)*next_offset);
    const uint64_t room = area->file_size - area->data_start - fr->offset;
    if (fr->size > room)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: truncated: tensor '%s' frame ends at byte %llu but the file has %llu "
                       "bytes",
                       path, t->name,
                       (unsigned long long)(area->data_start + fr->offset + fr->size),
                       (unsigned long long)area->file_size);
    if (fr->raw_size / ZQ_FILE_MAX_RATIO > fr->size)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: tensor '%s': raw_size %llu cannot come from a %llu-byte zstd frame",
                       path, t->name, (unsigned long long)fr->raw_size,
                       (unsigned long long)fr->size);
    *next_offset = fr->offset + fr->size;
    return ZQ_OK;
}

static zq_status parse_tensors(const char *path, const cJSON *root, const frame_area *area,
                               zq_file *f, zq_frame_ref **frames)
{
    const cJSON *arr = get(root, "tensors");
    if (!cJSON_IsArray(arr))
        return expected(path, "", "tensors", "an array", arr);
    const int n = cJSON_GetArraySize(arr);
    if (n > ZQ_FILE_MAX_TENSORS)
        return zq_fail(ZQ_ERR_FORMAT, "%s: %d tensors, at most %d allowed", path, n,
                       ZQ_FILE_MAX_TENSORS);
    f->tensors = calloc(n > 0 ? (size_t)n : 1, sizeof *f->tensors);
    *frames = calloc(n > 0 ? (size_t)n : 1, sizeof **frames);
    if (!f->tensors || !*frames)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory for %d tensors", path, n);
    f->n_tensors = n;

    uint64_t next_offset = 0;
    int i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        char index[24], where[32];
        snprintf(index, sizeof index, "[%d]", i);
        snprintf(where, sizeof where, "tensors%s", index);
        if (!cJSON_IsObject(e))
            return expected(path, "tensors", index, "an object", e);
        ZQ_TRY(check_unique_keys(path, where, e));
        ZQ_TRY(parse_tensor_shape(path, e, where, &f->tensors[i]));
        ZQ_TRY(zq_check_tensor_name(path, ZQ_ERR_FORMAT, f->tensors[i].name, f->hparams.n_layer));
        ZQ_TRY(parse_frame(path, e, where, &f->tensors[i], area, &next_offset, &(*frames)[i]));
    }
    const uint64_t end = area->data_start + next_offset;
    if (end != area->file_size)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: %llu unexpected bytes after the last frame, which ends at byte %llu",
                       path, (unsigned long long)(area->file_size - end), (unsigned long long)end);
    return zq_check_unique_names(path, ZQ_ERR_FORMAT, f);
}

zq_status zq_meta_parse(const char *path, const char *json, size_t len, uint64_t data_start,
                        uint64_t file_size, zq_file *f, zq_frame_ref **frames)
{
    *frames = NULL;
    const frame_area area = {data_start, file_size};
    const size_t bad = zq_utf8_invalid_at(json, len);
    if (bad < len)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: the metadata is not valid UTF-8 at byte %zu of the JSON text; the "
                       "format requires UTF-8",
                       path, bad);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return zq_fail(ZQ_ERR_FORMAT, "%s: the metadata is not a JSON object", path);
    }
    while (end < json + len && strchr(" \t\r\n", *end) && *end)
        end++;
    zq_status st = ZQ_OK;
    if (end != json + len)
        st = zq_fail(ZQ_ERR_FORMAT,
                     "%s: %zu unexpected bytes after the metadata JSON object, from byte %zu",
                     path, (size_t)(json + len - end), (size_t)(end - json));
    if (st == ZQ_OK)
        st = check_unique_keys(path, "at the top level", root);
    if (st == ZQ_OK)
        st = parse_hparams(path, root, &f->hparams);
    if (st == ZQ_OK)
        st = parse_tokenizer(path, root, f);
    if (st == ZQ_OK)
        st = parse_provenance(path, root, f);
    if (st == ZQ_OK)
        st = parse_tensors(path, root, &area, f, frames);
    cJSON_Delete(root);
    return st;
}
