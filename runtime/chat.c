/*
 * chat.c - dialogue state for BERT-vocabulary chat GPT-2 models.
 *
 * A prompt is [CLS] user [SEP] reply [SEP] ... user [SEP]; the model then writes the reply and
 * ends it with [SEP]. The history keeps the last max_exchanges (user, reply) pairs, and older
 * ones are also dropped when the prompt plus max_new_tokens would overflow the context. Between
 * turns the KV cache keeps the longest prefix that the new prompt shares with the old one.
 */
#include "internal.h"
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct zq_chat {
    const zq_model *model;
    zq_chat_params params;
    zq_context *ctx;
    zq_sampler *sampler;
    char **turns; /* [2 * max_exchanges + 1]: user, reply, user, reply, ... */
    int n_turns;
    int32_t *cached; /* ids now in the KV cache, [n_ctx] */
    int n_cached;
    int32_t *ids; /* prompt and reply ids, [n_ctx] */
};

void zq_chat_params_default(zq_chat_params *params)
{
    memset(params, 0, sizeof *params);
    params->max_exchanges = 3;
    params->max_new_tokens = 64;
    zq_sampler_params_default(&params->sampling);
}

zq_status zq_chat_create(const zq_model *model, const zq_chat_params *params, zq_chat **out)
{
    *out = NULL;
    if (params->max_exchanges < 0 || params->max_exchanges > ZQ_CHAT_MAX_EXCHANGES)
        return zq_fail(ZQ_ERR_INVALID_ARG, "chat: history of %d exchanges is outside [0, %d]",
                       params->max_exchanges, ZQ_CHAT_MAX_EXCHANGES);
    if (params->max_new_tokens < 1)
        return zq_fail(ZQ_ERR_INVALID_ARG, "chat: max_new_tokens %d must be at least 1",
                       params->max_new_tokens);
    ZQ_TRY(zq_sampler_params_check(&params->sampling));

    zq_chat *c = calloc(1, sizeof *c);
    if (!c)
        return zq_fail(ZQ_ERR_NOMEM, "chat: out of memory");
    c->model = model;
    c->params = *params;
    const int n_ctx = model->hp.n_ctx;
    const zq_context_params cp = {
        .n_ctx = n_ctx, .n_threads = params->n_threads, .kv_type = params->kv_type};
    zq_status st = zq_context_create(model, &cp, &c->ctx);
    if (st == ZQ_OK)
        st = zq_sampler_create(&params->sampling, model->hp.n_vocab, &c->sampler);
    c->turns = calloc((size_t)(2 * params->max_exchanges + 2), sizeof(char *));
    c->cached = malloc((size_t)n_ctx * sizeof(int32_t));
    c->ids = malloc((size_t)n_ctx * sizeof(int32_t));
    if (st == ZQ_OK && (!c->turns || !c->cached || !c->ids))
        st = zq_fail(ZQ_ERR_NOMEM, "chat: out of memory");
    if (st != ZQ_OK) {
        zq_chat_free(c);
        return st;
    }
    *out = c;
    return ZQ_OK;
}

void zq_chat_reset(zq_chat *chat)
{
    for (int i = 0; i < chat->n_turns; i++)
        free(chat->turns[i]);
    chat->n_turns = 0;
}

void zq_chat_free(zq_chat *chat)
{
    if (!chat)
        return;
    if (chat->turns)
        zq_chat_reset(chat);
    free(chat->turns);
    free(chat->cached);
    free(chat->ids);
    zq_sampler_free(chat->sampler);
    zq_context_free(chat->ctx);
    free(chat);
}

int zq_chat_exchanges(const zq_chat *chat)
{
    return chat->n_turns / 2;
}

void zq_chat_mask_logits(const zq_model *model, float *logits)
{
    const zq_special_tokens *s = &model->special;
    const int32_t banned[] = {s->pad, s->unk, s->cls, s->mask};
    for (size_t i = 0; i < sizeof banned / sizeof banned[0]; i++)
        if (banned[i] >= 0 && banned[i] < model->hp.n_vocab)
            logits[banned[i]] = -INFINITY;
}

/* Appends the tokens of text followed by [SEP]; returns the new length or -1 when it would
 * pass cap (the message is set). */
static int append_turn(const zq_model *m, const char *text, int32_t *ids, int n, int cap)
{
    int count = 0;
    const zq_status st = zq_tokenize(m, text, ids + n, cap - n, &count);
    if (st != ZQ_OK || n + count + 1 > cap)
        return -1;
    ids[n + count] = m->special.sep;
    return n + count + 1;
}

zq_status zq_chat_build_prompt(const zq_model *model, const char *const *turns, int n_turns,
                               int n_ctx, int reserve, int32_t *ids, int cap, int *n_out,
                               int *n_dropped)
{
    if (n_turns < 1 || n_turns % 2 == 0)
        return zq_fail(ZQ_ERR_INVALID_ARG, "chat prompt needs an odd number of turns, got %d",
                       n_turns);
    if (model->special.cls < 0 || model->special.sep < 0)
        return zq_fail(ZQ_ERR_UNSUPPORTED, "the vocabulary has no [CLS] or [SEP] token");
    const int limit = (n_ctx - reserve < cap ? n_ctx - reserve : cap);

    /* Try the full history first, then drop one exchange at a time from the front. */
    for (int first = 0; first < n_turns; first += 2) {
        int n = 0;
        if (limit >= 1)
            ids[n++] = model->special.cls;
        for (int t = first; t < n_turns && n > 0; t++)
            n = append_turn(model, turns[t], ids, n, limit);
        if (n > 0) {
            *n_out = n;
            *n_dropped = first / 2;
            return ZQ_OK;
        }
    }
    int n_last = 0;
    zq_tokenize(model, turns[n_turns - 1], NULL, 0, &n_last);
    return zq_fail(ZQ_ERR_CONTEXT_FULL,
                   "the message has %d tokens, and with [CLS], [SEP] and room for %d new "
                   "token%s it does not fit in the context of %d tokens",
                   n_last, reserve, reserve == 1 ? "" : "s", n_ctx);
}

/* Evaluates the prompt, reusing the cached prefix it shares with the previous prompt. */
static zq_status prefill(zq_chat *c, int n)
{
    int common = 0;
    while (common < n && common < c->n_cached && c->cached[common] == c->ids[common])
        common++;
    if (common == n)
        common--; /* re-evaluate the last token to get its logits */
    zq_context_truncate(c->ctx, common);
    c->n_cached = common;
    ZQ_TRY(zq_context_eval(c->ctx, c->ids + common, n - common, NULL));
    memcpy(c->cached + common, c->ids + common, (size_t)(n - common) * sizeof(int32_t));
    c->n_cached = n;
    return ZQ_OK;
}

/* Keeps at most max_exchanges exchanges, then appends one. */
static zq_status remember(zq_chat *c, const char *user_text, const char *reply)
{
    while (c->n_turns >= 2 * c->params.max_exchanges && c->n_turns >= 2) {
        free(c->turns[0]);
        free(c->turns[1]);
        memmove(c->turns, c->turns + 2, (size_t)(c->n_turns - 2) * sizeof(char *));
        c->n_turns -= 2;
    }
    if (c->params.max_exchanges == 0)
        return ZQ_OK;
    char *u = strdup(user_text);
    char *r = strdup(reply);
    if (!u || !r) {
        free(u);
        free(r);
        return zq_fail(ZQ_ERR_NOMEM, "chat: out of memory");
    }
    c->turns[c->n_turns++] = u;
    c->turns[c->n_turns++] = r;
    return ZQ_OK;
}

typedef struct {
    char *text;
    size_t len;
    size_t cap;
} text_buf;

static bool text_append(text_buf *b, const char *piece, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->text, cap);
        if (!p)
            return false;
        b->text = p;
        b->cap = cap;
    }
    memcpy(b->text + b->len, piece, len);
    b->len += len;
    b->text[b->len] = '\0';
    return true;
}

/* Samples reply tokens until [SEP] or max_new_tokens; returns false if on_text stopped it. */
static zq_status generate(zq_chat *c, int n_prompt, zq_text_fn on_text, void *user,
                          text_buf *reply, bool *stopped)
{
    const zq_model *m = c->model;
    const int n_vocab = m->hp.n_vocab;
    float *logits = malloc((size_t)n_vocab * sizeof(float));
    if (!logits)
        return zq_fail(ZQ_ERR_NOMEM, "chat: out of memory");
    zq_detok_stream stream;
    zq_detok_stream_init(&stream, m);
    const int window = c->params.sampling.repeat_last_n;
    int n = n_prompt;
    zq_status st = ZQ_OK;
    *stopped = false;

    for (int step = 0; step < c->params.max_new_tokens && n < zq_context_size(c->ctx); step++) {
        memcpy(logits, zq_context_logits(c->ctx), (size_t)n_vocab * sizeof(float));
        zq_chat_mask_logits(m, logits);
        const int hist = n < window ? n : window;
        const int32_t id = zq_sampler_sample(c->sampler, logits, c->ids + n - hist, hist);
        if (id < 0 || id == m->special.sep)
            break;
        char piece[300];
        const size_t len = zq_detok_stream_push(&stream, id, piece, sizeof piece);
        if (!text_append(reply, piece, len)) {
            st = zq_fail(ZQ_ERR_NOMEM, "chat: out of memory");
            break;
        }
        if (len > 0 && on_text && !on_text(piece, len, user)) {
            *stopped = true;
            break;
        }
        c->ids[n++] = id;
        if (step + 1 < c->params.max_new_tokens && n < zq_context_size(c->ctx)) {
            st = zq_context_eval(c->ctx, &id, 1, NULL);
            if (st != ZQ_OK)
                break;
            c->cached[c->n_cached++] = id;
        }
    }
    free(logits);
    return st;
}

zq_status zq_chat_reply(zq_chat *chat, const char *user_text, zq_text_fn on_text, void *user,
                        char *reply, size_t cap)
{
    if (!user_text)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_chat_reply: the message is NULL");
    const char *turns[2 * ZQ_CHAT_MAX_EXCHANGES + 1];
    const int kept = chat->n_turns;
    for (int i = 0; i < kept; i++)
        turns[i] = chat->turns[i];
    turns[kept] = user_text;

    const int n_ctx = zq_context_size(chat->ctx);
    const int reserve = chat->params.max_new_tokens < n_ctx - 2 ? chat->params.max_new_tokens
                                                                : n_ctx - 2;
    int n = 0;
    int dropped = 0;
    zq_status st = zq_chat_build_prompt(chat->model, turns, kept + 1, n_ctx, reserve, chat->ids,
                                        n_ctx, &n, &dropped);
    if (st == ZQ_ERR_CONTEXT_FULL) {
        /* A message too long to leave max_new_tokens of room still gets a shorter reply: the
         * whole history goes, and the reply may use whatever room is left. */
        st = zq_chat_build_prompt(chat->model, &turns[kept], 1, n_ctx, 1, chat->ids, n_ctx, &n,
                                  &dropped);
        dropped = kept / 2;
    }
    ZQ_TRY(st);
    if (dropped > 0)
        ZQ_DEBUG("dropped %d oldest exchanges to fit the context", dropped);
    ZQ_TRY(prefill(chat, n));

    text_buf text = {0};
    bool stopped = false;
    st = generate(chat, n, on_text, user, &text, &stopped);
    const char *result = text.text ? text.text : "";
    if (st == ZQ_OK && !stopped) {
        /* History beyond what fitted was dropped from the prompt; forget it for good. */
        for (int i = 0; i < 2 * dropped && chat->n_turns > 0; i++) {
            free(chat->turns[0]);
            memmove(chat->turns, chat->turns + 1, (size_t)(chat->n_turns - 1) * sizeof(char *));
            chat->n_turns--;
        }
        st = remember(chat, user_text, result);
    }
    if (reply && cap > 0) {
        size_t len = strlen(result) < cap - 1 ? strlen(result) : cap - 1;
        while (len > 0 && ((unsigned char)result[len] & 0xC0) == 0x80)
            len--; /* never cut a UTF-8 character */
        memcpy(reply, result, len);
        reply[len] = '\0';
    }
    free(text.text);
    return st;
}
