/*
 * eval_text.c - turns an evaluation text (plain lines or TAB-separated dialogues) into the one
 * token stream that eval.c scores. The framing is specified in eval.h.
 */
#include "../formats/hf_internal.h"
#include "eval.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* A growing id array. */
typedef struct {
    int32_t *ids;
    int n;
    int cap;
} stream;

static zq_status push(stream *s, int32_t id)
{
    if (s->n == s->cap) {
        const int cap = s->cap ? s->cap * 2 : 4096;
        int32_t *grown = realloc(s->ids, (size_t)cap * sizeof *grown);
        if (!grown)
            return zq_fail(ZQ_ERR_NOMEM, "out of memory for %d token ids", cap);
        s->ids = grown;
        s->cap = cap;
    }
    s->ids[s->n++] = id;
    return ZQ_OK;
}

/* Checks that text contains no NUL byte and only valid UTF-8, naming the first bad line. */
static zq_status check_utf8(const char *name, const char *text, size_t len)
{
    int line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < len;) {
        if (text[i] == '\n') {
            line++;
            line_start = ++i;
            continue;
        }
        if (text[i] == '\0')
            return zq_fail(ZQ_ERR_FORMAT, "%s line %d: contains a NUL byte (column %zu)", name,
                           line, i - line_start + 1);
        utf8proc_int32_t cp;
        const utf8proc_ssize_t step = utf8proc_iterate((const utf8proc_uint8_t *)text + i,
                                                       (utf8proc_ssize_t)(len - i), &cp);
        if (step <= 0)
            return zq_fail(ZQ_ERR_FORMAT,
                           "%s line %d: invalid UTF-8 at byte %zu of the line; convert the file "
                           "to UTF-8",
                           name, line, i - line_start + 1);
        i += (size_t)step;
    }
    return ZQ_OK;
}

/* Appends the tokens of one NUL-terminated piece of text; *added receives their count. */
static zq_status push_text(const zq_model *model, const char *name, int line, const char *text,
                           stream *s, int *added)
{
    int cap = (int)strlen(text) + 1; /* every token covers at least one byte */
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory tokenizing %s line %d", name, line);
    int n = 0;
    zq_status st = zq_tokenize(model, text, ids, cap, &n);
    if (st != ZQ_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", zq_last_error());
        free(ids);
        return zq_fail(st, "%s line %d: %s", name, line, why);
    }
    for (int i = 0; i < n && st == ZQ_OK; i++)
        st = push(s, ids[i]);
    free(ids);
    *added = n;
    return st;
}

/* Appends one dialogue: [CLS] turn [SEP] turn [SEP] ...; turns are TAB-separated and line is
 * modified (TABs become NULs). Nothing is added when no turn has tokens. */
static zq_status push_dialogue(const zq_model *model, const char *name, int line_no, char *line,
                               stream *s)
{
    const zq_special_tokens *sp = zq_model_special(model);
    const int start = s->n;
    ZQ_TRY(push(s, sp->cls));
    bool any = false;
    for (char *turn = line; turn;) {
        char *tab = strchr(turn, '\t');
        if (tab)
            *tab = '\0';
        int n = 0;
        ZQ_TRY(push_text(model, name, line_no, turn, s, &n));
        if (n > 0) {
            ZQ_TRY(push(s, sp->sep));
            any = true;
        }
        turn = tab ? tab + 1 : NULL;
    }
    if (!any)
        s->n = start;
    return ZQ_OK;
}

/* Appends one plain line followed by [SEP]; the stream's [CLS] is added by the caller. */
static zq_status push_plain(const zq_model *model, const char *name, int line_no, char *line,
                            stream *s)
{
    int n = 0;
    ZQ_TRY(push_text(model, name, line_no, line, s, &n));
    if (n > 0)
        ZQ_TRY(push(s, zq_model_special(model)->sep));
    return ZQ_OK;
}

static zq_status frame_lines(const zq_model *model, const char *name, char *text, bool chat,
                             stream *s)
{
    if (!chat)
        ZQ_TRY(push(s, zq_model_special(model)->cls));
    int line_no = 0;
    for (char *line = text; line;) {
        line_no++;
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        const size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\r')
            line[len - 1] = '\0';
        if (chat)
            ZQ_TRY(push_dialogue(model, name, line_no, line, s));
        else
            ZQ_TRY(push_plain(model, name, line_no, line, s));
        line = nl ? nl + 1 : NULL;
    }
    return ZQ_OK;
}

zq_status zq_eval_tokenize(const zq_model *model, const char *name, const char *text,
                           size_t len, zq_text_format format, zq_text_format *used,
                           int32_t **ids, int *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    const zq_special_tokens *sp = zq_model_special(model);
    if (sp->cls < 0 || sp->sep < 0)
        return zq_fail(ZQ_ERR_UNSUPPORTED,
                       "the model's vocabulary lacks [CLS] or [SEP], which frame the text");
    if (len == 0)
        return zq_fail(ZQ_ERR_FORMAT, "'%s' is empty: expected UTF-8 text", name);
    ZQ_TRY(check_utf8(name, text, len));

    char *copy = malloc(len + 1);
    if (!copy)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory for %s (%zu bytes)", name, len);
    memcpy(copy, text, len);
    copy[len] = '\0';
    const bool chat = format == ZQ_TEXT_CHAT || (format == ZQ_TEXT_AUTO && memchr(text, '\t', len));

    stream s = {0};
    zq_status st = frame_lines(model, name, copy, chat, &s);
    free(copy);
    if (st == ZQ_OK && s.n < 2)
        st = zq_fail(ZQ_ERR_FORMAT,
                     "'%s' gives %d token(s) with its framing; at least 2 are needed to score one",
                     name, s.n);
    if (st != ZQ_OK) {
        free(s.ids);
        return st;
    }
    *ids = s.ids;
    *n_ids = s.n;
    if (used)
        *used = chat ? ZQ_TEXT_CHAT : ZQ_TEXT_PLAIN;
    return ZQ_OK;
}

/* Reads a whole file into a malloc'd buffer. */
static zq_status read_file(const char *path, char **out, size_t *len)
{
    /* zq_hf_fopen rejects FIFOs and devices before opening, so a wrong path cannot hang. */
    FILE *f = zq_hf_fopen(path);
    if (!f)
        return ZQ_ERR_IO;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *grown = realloc(buf, cap * 2);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    const int failed = ferror(f);
    const int err = errno;
    fclose(f);
    if (!buf)
        return zq_fail(ZQ_ERR_NOMEM, "out of memory reading '%s'", path);
    if (failed) {
        free(buf);
        return zq_fail(ZQ_ERR_IO, "cannot read text file '%s': %s", path, strerror(err));
    }
    *out = buf;
    *len = n;
    return ZQ_OK;
}

zq_status zq_eval_tokenize_file(const zq_model *model, const char *path, zq_text_format format,
                                zq_text_format *used, int32_t **ids, int *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    char *text = NULL;
    size_t len = 0;
    ZQ_TRY(read_file(path, &text, &len));
    const zq_status st = zq_eval_tokenize(model, path, text, len, format, used, ids, n_ids);
    free(text);
    return st;
}
