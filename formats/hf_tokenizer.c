/*
 * hf_tokenizer.c - reads the BERT tokenizer files of a Hugging Face model folder: vocab.txt,
 * tokenizer_config.json (do_lower_case, added_tokens_decoder) and added_tokens.json.
 */
#include "hf_internal.h"

#include "../runtime/internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_VOCAB_BYTES ((size_t)256 << 20)

/* An added token as a file lists it: its text and id. */
typedef struct {
    char *token;
    int64_t id;
} added_token;

typedef struct {
    added_token *items;
    size_t n, cap;
} added_list;

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static void join(char *buf, size_t cap, const char *dir, const char *file)
{
    snprintf(buf, cap, "%s/%s", dir, file);
}

/* vocab.txt: token i is line i. A final newline ends the last line; "\r\n" also ends a line. */
static zq_status read_vocab(const char *path, int32_t vocab_size, zq_hf_model *m)
{
    char *text;
    size_t len;
    ZQ_TRY(zq_hf_read_file(path, MAX_VOCAB_BYTES, &text, &len));
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += text[i] == '\n';
    n += len > 0 && text[len - 1] != '\n';

    zq_status st = ZQ_OK;
    if (memchr(text, 0, len))
        st = zq_fail(ZQ_ERR_FORMAT, "%s: contains a NUL byte", path);
    if (st == ZQ_OK)
        st = zq_hf_check_utf8(path, text, len);
    if (st == ZQ_OK && n == 0)
        st = zq_fail(ZQ_ERR_FORMAT, "%s: empty, expected one token per line", path);
    if (st == ZQ_OK && n > (size_t)vocab_size)
        st = zq_fail(ZQ_ERR_FORMAT, "%s: %zu tokens, more than vocab_size %d in config.json",
                     path, n, vocab_size);
    if (st == ZQ_OK && !(m->vocab = calloc(n, sizeof *m->vocab)))
        st = zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    for (char *line = text; st == ZQ_OK && m->n_vocab_lines < (int32_t)n;) {
        char *nl = strchr(line, '\n');
        size_t line_len = nl ? (size_t)(nl - line) : strlen(line);
        if (line_len > 0 && line[line_len - 1] == '\r')
            line_len--;
        if (!(m->vocab[m->n_vocab_lines] = strndup(line, line_len)))
            st = zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
        else
            m->n_vocab_lines++;
        line = nl ? nl + 1 : line + line_len;
    }
    free(text);
    return st;
}

static zq_status add_token(added_list *list, const char *path, const char *token, double id)
{
    if (!(id >= 0 && id <= INT32_MAX && id == floor(id)))
        return zq_fail(ZQ_ERR_FORMAT, "%s: added token '%.40s' has id %g, expected an integer id",
                       path, token, id);
    if (!token[0])
        return zq_fail(ZQ_ERR_FORMAT, "%s: the added token with id %.0f is empty", path, id);
    if (list->n == list->cap) {
        const size_t cap = list->cap ? 2 * list->cap : 16;
        added_token *grown = realloc(list->items, cap * sizeof *grown);
        if (!grown)
            return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
        list->items = grown;
        list->cap = cap;
    }
    char *copy = strdup(token);
    if (!copy)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    list->items[list->n++] = (added_token){copy, (int64_t)id};
    return ZQ_OK;
}

/* added_tokens_decoder: {"<id>": {"content": "<token>", ...}, ...}, as newer transformers
 * versions write it into tokenizer_config.json. */
static zq_status read_added_decoder(const char *path, const cJSON *decoder, added_list *list)
{
    if (!cJSON_IsObject(decoder))
        return zq_fail(ZQ_ERR_FORMAT, "%s: \"added_tokens_decoder\" must be an object", path);
    for (const cJSON *e = decoder->child; e; e = e->next) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        char *end = NULL;
        const double id = strtod(e->string, &end);
        if (!cJSON_IsString(content) || end == e->string || *end)
            return zq_fail(ZQ_ERR_FORMAT,
                           "%s: added_tokens_decoder entry \"%.20s\" needs a numeric id and a "
                           "\"content\" string",
                           path, e->string);
        ZQ_TRY(add_token(list, path, content->valuestring, id));
    }
    return ZQ_OK;
}

/* tokenizer_config.json is optional; BertTokenizer lower-cases by default. */
static zq_status read_tokenizer_config(const char *path, zq_hf_model *m, added_list *list)
{
    m->lower_case = true;
    if (!file_exists(path))
        return ZQ_OK;
    cJSON *root;
    ZQ_TRY(zq_hf_read_json(path, &root));
    zq_status st = ZQ_OK;
    const cJSON *lower = cJSON_GetObjectItemCaseSensitive(root, "do_lower_case");
    const cJSON *decoder = cJSON_GetObjectItemCaseSensitive(root, "added_tokens_decoder");
    if (!cJSON_IsObject(root))
        st = zq_fail(ZQ_ERR_FORMAT, "%s: expected a JSON object", path);
    else if (lower && !cJSON_IsBool(lower))
        st = zq_fail(ZQ_ERR_FORMAT, "%s: \"do_lower_case\" must be true or false", path);
    else if (lower)
        m->lower_case = cJSON_IsTrue(lower);
    if (st == ZQ_OK && decoder)
        st = read_added_decoder(path, decoder, list);
    cJSON_Delete(root);
    return st;
}

/* added_tokens.json: {"<token>": id, ...}. */
static zq_status read_added_tokens(const char *path, added_list *list)
{
    if (!file_exists(path))
        return ZQ_OK;
    cJSON *root;
    ZQ_TRY(zq_hf_read_json(path, &root));
    zq_status st = cJSON_IsObject(root)
                       ? ZQ_OK
                       : zq_fail(ZQ_ERR_FORMAT, "%s: expected a JSON object", path);
    for (const cJSON *e = root->child; e && st == ZQ_OK; e = e->next)
        st = cJSON_IsNumber(e) ? add_token(list, path, e->string, e->valuedouble)
                               : zq_fail(ZQ_ERR_FORMAT, "%s: the id of '%.40s' is not a number",
                                         path, e->string);
    cJSON_Delete(root);
    return st;
}

static int compare_ids(const void *a, const void *b)
{
    const added_token *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Keeps the tokens past vocab.txt, which must have the ids that follow it without a gap. Tokens
 * with an id inside vocab.txt must match the line they name and add nothing. */
static zq_status resolve_added(const char *dir, added_list *list, zq_hf_model *m)
{
    if (list->n > 1)
        qsort(list->items, list->n, sizeof *list->items, compare_ids);
    m->added = calloc(list->n ? list->n : 1, sizeof *m->added);
    if (!m->added)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", dir);
    for (size_t i = 0; i < list->n; i++) {
        const added_token *t = &list->items[i];
        const int64_t next = (int64_t)m->n_vocab_lines + m->n_added;
        if (t->id < m->n_vocab_lines && strcmp(m->vocab[t->id], t->token) == 0)
            continue;
        if (t->id == next - 1 && m->n_added > 0 && !strcmp(m->added[m->n_added - 1], t->token))
            continue; /* listed in both files */
        if (t->id != next)
            return zq_fail(ZQ_ERR_FORMAT,
                           "%s: added token '%.40s' has id %lld, expected %lld (the ids must "
                           "follow vocab.txt's %d lines without gaps or conflicts)",
                           dir, t->token, (long long)t->id, (long long)next, m->n_vocab_lines);
        m->added[m->n_added++] = t->token;
        list->items[i].token = NULL; /* now owned by m */
    }
    return ZQ_OK;
}

zq_status zq_hf_read_tokenizer(const char *dir, zq_hf_model *m)
{
    char path[PATH_MAX];
    join(path, sizeof path, dir, "vocab.txt");
    ZQ_TRY(read_vocab(path, m->hparams.n_vocab, m));

    added_list list = {0};
    join(path, sizeof path, dir, "tokenizer_config.json");
    zq_status st = read_tokenizer_config(path, m, &list);
    join(path, sizeof path, dir, "added_tokens.json");
    if (st == ZQ_OK)
        st = read_added_tokens(path, &list);
    if (st == ZQ_OK)
        st = resolve_added(dir, &list, m);
    for (size_t i = 0; i < list.n; i++)
        free(list.items[i].token);
    free(list.items);
    return st;
}
