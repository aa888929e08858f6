/*
 * wordfilter.c - the server's glue over runtime/filter.h. The masker also keeps the raw
 * reply, because zq_filter_stream_finish resets the stream's hit count: whether a reply was
 * masked is decided by matching the whole raw reply once it ends.
 */
#include "wordfilter.h"

#include "../runtime/filter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct zq_word_filter {
    zq_filter *filter;
    uint64_t fingerprint;
};

struct zq_word_masker {
    const zq_word_filter *owner;
    zq_filter_stream *stream;
    zq_buf raw; /* the unmasked text pushed so far */
    bool masked;
    bool finished;
};

/* FNV-1a 64 of the file's bytes; 0 when it cannot be read (zq_filter_load reports that). */
static uint64_t hash_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    uint64_t h = 0xcbf29ce484222325ULL;
    int c;
    while ((c = getc(f)) != EOF) {
        h ^= (uint64_t)(unsigned char)c;
        h *= 0x100000001b3ULL;
    }
    fclose(f);
    return h;
}

zq_word_filter *zq_word_filter_load(const char *path, char *err, size_t err_cap)
{
    zq_word_filter *wf = calloc(1, sizeof *wf);
    if (!wf) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    if (zq_filter_load(path, &wf->filter) != ZQ_OK) {
        snprintf(err, err_cap, "%s", zq_last_error());
        free(wf);
        return NULL;
    }
    wf->fingerprint = hash_file(path);
    return wf;
}

void zq_word_filter_free(zq_word_filter *wf)
{
    if (!wf)
        return;
    zq_filter_free(wf->filter);
    free(wf);
}

bool zq_word_filter_matches(const zq_word_filter *wf, const char *text)
{
    return zq_filter_match(wf->filter, text, strlen(text));
}

uint64_t zq_word_filter_fingerprint(const zq_word_filter *wf)
{
    return wf->fingerprint;
}

zq_word_masker *zq_word_masker_create(const zq_word_filter *wf)
{
    zq_word_masker *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->owner = wf;
    if (zq_filter_stream_create(wf->filter, &m->stream) != ZQ_OK) {
        free(m);
        return NULL;
    }
    return m;
}

void zq_word_masker_free(zq_word_masker *m)
{
    if (!m)
        return;
    zq_filter_stream_free(m->stream);
    zq_buf_free(&m->raw);
    free(m);
}

bool zq_word_masker_push(zq_word_masker *m, const char *text, size_t len, zq_buf *out)
{
    const char *safe = NULL;
    size_t safe_len = 0;
    if (m->finished || !zq_buf_append(&m->raw, text, len))
        return false;
    if (zq_filter_stream_push(m->stream, text, len, &safe, &safe_len) != ZQ_OK)
        return false;
    m->masked = m->masked || zq_filter_stream_hits(m->stream) > 0;
    return zq_buf_append(out, safe, safe_len);
}

bool zq_word_masker_finish(zq_word_masker *m, zq_buf *out)
{
    const char *rest = NULL;
    size_t rest_len = 0;
    if (m->finished)
        return true;
    m->finished = true;
    if (m->raw.len > 0 && !m->masked)
        m->masked = zq_filter_match(m->owner->filter, m->raw.data, m->raw.len);
    if (zq_filter_stream_finish(m->stream, &rest, &rest_len) != ZQ_OK)
        return false;
    return zq_buf_append(out, rest, rest_len);
}

bool zq_word_masker_masked(const zq_word_masker *m)
{
    return m->masked;
}
