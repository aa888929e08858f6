/*
 * detok.c - the model-level tokenizer API of zq.h: encoding, token strings, and decoding to
 * clean text, whole or streamed.
 */
#include "internal.h"
#include "model.h"

#include <string.h>

zq_status zq_tokenize(const zq_model *model, const char *text, int32_t *ids, int cap,
                      int *n_out)
{
    if (!text)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_tokenize: text is NULL");
    return zq_tokenizer_encode(model->tok, text, strlen(text), ids, cap, n_out);
}

const char *zq_token_str(const zq_model *model, int32_t id)
{
    return zq_tokenizer_str(model->tok, id);
}

size_t zq_detokenize(const zq_model *model, const int32_t *ids, int n, char *buf, size_t cap)
{
    size_t len = 0;
    int32_t prev = -1;
    char piece[256];
    for (int i = 0; i < n; i++) {
        const size_t k = zq_tokenizer_piece(model->tok, prev, ids[i], piece, sizeof piece);
        const size_t take = k < sizeof piece ? k : sizeof piece - 1;
        if (cap > 0 && len < cap - 1) {
            const size_t room = cap - 1 - len;
            memcpy(buf + len, piece, take < room ? take : room);
        }
        len += take;
        if (take > 0)
            prev = ids[i];
    }
    if (cap > 0)
        buf[len < cap ? len : cap - 1] = '\0';
    return len;
}

void zq_detok_stream_init(zq_detok_stream *stream, const zq_model *model)
{
    memset(stream, 0, sizeof *stream);
    stream->model = model;
    stream->prev = -1;
}

/* Returns how many bytes at the end of s[0..n) form an incomplete UTF-8 character. */
static int incomplete_tail(const char *s, size_t n)
{
    for (int back = 1; back <= 4 && (size_t)back <= n; back++) {
        const unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80)
            continue; /* continuation byte: keep looking for the lead */
        int need = 1;
        if (c >= 0xF0)
            need = 4;
        else if (c >= 0xE0)
            need = 3;
        else if (c >= 0xC0)
            need = 2;
        return need > back ? back : 0;
    }
    return 0;
}

size_t zq_detok_stream_push(zq_detok_stream *stream, int32_t id, char *buf, size_t cap)
{
    char text[256 + sizeof stream->pending];
    size_t n = (size_t)stream->n_pending;
    memcpy(text, stream->pending, n);
    const size_t k = zq_tokenizer_piece(stream->model->tok, stream->prev, id, text + n, 256);
    n += k < 256 ? k : 255;
    if (k > 0)
        stream->prev = id;

    const int hold = incomplete_tail(text, n);
    memcpy(stream->pending, text + n - hold, (size_t)hold);
    stream->n_pending = hold;
    n -= (size_t)hold;

    if (cap == 0)
        return 0;
    const size_t out = n < cap - 1 ? n : cap - 1;
    memcpy(buf, text, out);
    buf[out] = '\0';
    return out;
}
