/*
 * test_context.c - inference contexts: chunked prompts, batched decoding, thread counts, the
 * context limit, and chat history handling, on the embedded zh-chat-tiny model in int8.
 */
#include "../quantize/quantize.h"
#include "../runtime/zq.h"
#include "support/check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static zq_model *model;     /* int8 */
static zq_model *model_f32; /* for comparisons that must hold within float rounding */
static int vocab;

static zq_model *load_model(zq_type type)
{
    char out[512];
    snprintf(out, sizeof out, "%s/zh-%s.zq", zq_test_tmpdir(), zq_type_name(type));
    zq_quantize_params qp;
    zq_quantize_params_default(&qp);
    qp.type = type;
    qp.zstd_level = 1;
    zq_quant_report report;
    if (zq_quantize_model("models/zh-chat-tiny", out, &qp, &report) != ZQ_OK) {
        fprintf(stderr, "quantize: %s\n", zq_last_error());
        return NULL;
    }
    zq_quant_report_free(&report);
    zq_model *m = NULL;
    if (zq_model_load(out, NULL, &m) != ZQ_OK)
        fprintf(stderr, "load: %s\n", zq_last_error());
    return m;
}

static zq_context *new_context_kv(zq_model *m, int threads, int n_batch, zq_kv_type kv)
{
    zq_context *ctx = NULL;
    const zq_context_params p = {.n_threads = threads, .n_batch = n_batch, .kv_type = kv};
    CHECK(zq_context_create(m, &p, &ctx) == ZQ_OK, "%s", zq_last_error());
    return ctx;
}

static zq_context *new_context(int threads, int n_batch)
{
    return new_context_kv(model, threads, n_batch, ZQ_KV_AUTO);
}

static const int32_t prompt[] = {2, 136, 149, 73, 605, 764, 75, 3, 134, 141, 146, 142, 201};
#define PROMPT_LEN ((int)(sizeof prompt / sizeof prompt[0]))

/* Logits of the prompt's last token, evaluated in chunks of n_batch on threads threads. */
static float *last_logits_of(zq_model *m, zq_kv_type kv, int threads, int n_batch, bool one_by_one)
{
    zq_context *ctx = new_context_kv(m, threads, n_batch, kv);
    if (one_by_one)
        for (int i = 0; i < PROMPT_LEN; i++)
            zq_context_eval(ctx, &prompt[i], 1, NULL);
    else
        CHECK(zq_context_eval(ctx, prompt, PROMPT_LEN, NULL) == ZQ_OK, "%s", zq_last_error());
    float *out = malloc((size_t)vocab * sizeof(float));
    memcpy(out, zq_context_logits(ctx), (size_t)vocab * sizeof(float));
    zq_context_free(ctx);
    return out;
}

static float *last_logits(int threads, int n_batch, bool one_by_one)
{
    return last_logits_of(model, ZQ_KV_AUTO, threads, n_batch, one_by_one);
}

static double max_diff(const float *a, const float *b)
{
    double worst = 0;
    for (int i = 0; i < vocab; i++)
        worst = fabs(a[i] - b[i]) > worst ? fabs(a[i] - b[i]) : worst;
    return worst;
}

static void threads_give_identical_logits(void)
{
    float *one = last_logits(1, 0, false);
    float *two = last_logits(2, 0, false);
    CHECK(memcmp(one, two, (size_t)vocab * sizeof(float)) == 0, "max diff %g",
          max_diff(one, two));
    free(one);
    free(two);
}

/* Fills ids [n] with a fixed sequence of ordinary token ids. */
static void fill_ids(int32_t *ids, int n)
{
    for (int i = 0; i < n; i++)
        ids[i] = 100 + (int32_t)((i * 7919u) % (unsigned)(vocab - 100));
}

/* Greedy decoding of 24 tokens one at a time (the single-token kernels and attention path) must
 * give bit-identical logits on 1, 2 and 3 threads at every step, with int8 and f32 weights and
 * each cache type. On more than one thread a decoded token runs on one team for the whole pass
 * (forward_one_team). The 100-token prompt puts the steps past the first chunk of ZQ_ATT_CHUNK
 * (64) positions, so the threads split the chunks. */
static void threads_give_identical_decode(void)
{
    static const zq_kv_type kv_types[] = {ZQ_KV_F32, ZQ_KV_F16, ZQ_KV_Q8};
    int32_t ids[100];
    fill_ids(ids, 100);
    for (int i = 0; i < 6; i++) {
        zq_model *m = i < 3 ? model : model_f32;
        const zq_kv_type kv = kv_types[i % 3];
        for (int threads = 2; threads <= 3; threads++) {
            zq_context *serial = new_context_kv(m, 1, 0, kv);
            zq_context *threaded = new_context_kv(m, threads, 0, kv);
            zq_context_eval(serial, ids, 100, NULL);
            zq_context_eval(threaded, ids, 100, NULL);
            for (int step = 0; step < 24; step++) {
                const float *a = zq_context_logits(serial);
                const float *b = zq_context_logits(threaded);
                CHECK(memcmp(a, b, (size_t)vocab * sizeof(float)) == 0,
                      "%s weights, %s cache, %d threads, step %d: max diff %g",
                      i < 3 ? "int8" : "f32", zq_kv_type_name(kv), threads, step, max_diff(a, b));
                int32_t next = 0;
                for (int j = 1; j < vocab; j++)
                    next = a[j] > a[next] ? j : next;
                CHECK(zq_context_eval(serial, &next, 1, NULL) == ZQ_OK, "%s", zq_last_error());
                CHECK(zq_context_eval(threaded, &next, 1, NULL) == ZQ_OK, "%s", zq_last_error());
            }
            zq_context_free(serial);
            zq_context_free(threaded);
        }
    }
}

static void chunked_prompt_matches_whole(void)
{
    /* Prefill rows and decode rows take different attention and kernel paths, so equality is
     * within float rounding, not bitwise. The f32 model keeps it there: in int8, a rounding
     * difference can move an activation across a quantization step and the logits by ~0.01.
     * The int8 cache quantizes keys, values and queries the same way, so a rounding difference
     * can move one of them a step: 0.0008 with the reference kernels. */
    static const zq_kv_type kv_types[] = {ZQ_KV_F32, ZQ_KV_F16, ZQ_KV_Q8};
    for (int i = 0; i < 3; i++) {
        const zq_kv_type kv = kv_types[i];
        const double tolerance = kv == ZQ_KV_Q8 ? 4e-3 : 1e-4;
        float *whole = last_logits_of(model_f32, kv, 2, 0, false);
        float *chunked = last_logits_of(model_f32, kv, 2, 4, false);
        float *single = last_logits_of(model_f32, kv, 2, 0, true);
        CHECK(max_diff(whole, chunked) < tolerance, "%s cache: chunked differs by %g",
              zq_kv_type_name(kv), max_diff(whole, chunked));
        CHECK(max_diff(whole, single) < tolerance, "%s cache: token by token differs by %g",
              zq_kv_type_name(kv), max_diff(whole, single));
        free(whole);
        free(chunked);
        free(single);
    }
}

/* A 150-token stream is fed one token at a time (the decode path, over three chunks of
 * positions and three reallocations of the cache). Its last logits must equal those of the
 * same stream evaluated at once (the prefill path), within float rounding for f32 and f16
 * caches. With an int8 cache a
 * rounding difference can move a quantized key, value or query by a step, which moves the
 * logits by up to about 0.002 on this model (0.00007 at the end of this stream). */
static void long_decode_matches_prefill(void)
{
    enum { LEN = 150 };
    int32_t ids[LEN];
    fill_ids(ids, LEN);
    static const zq_kv_type kv_types[] = {ZQ_KV_F32, ZQ_KV_F16, ZQ_KV_Q8};
    for (int t = 0; t < 3; t++) {
        zq_context *whole = new_context_kv(model_f32, 2, 0, kv_types[t]);
        zq_context *steps = new_context_kv(model_f32, 2, 0, kv_types[t]);
        CHECK(zq_context_eval(whole, ids, LEN, NULL) == ZQ_OK, "%s", zq_last_error());
        for (int i = 0; i < LEN; i++)
            CHECK(zq_context_eval(steps, &ids[i], 1, NULL) == ZQ_OK, "%s", zq_last_error());
        const double d = max_diff(zq_context_logits(whole), zq_context_logits(steps));
        CHECK(d < (kv_types[t] == ZQ_KV_Q8 ? 0.005 : 1e-4), "%s cache: decode differs by %g",
              zq_kv_type_name(kv_types[t]), d);
        zq_context_free(whole);
        zq_context_free(steps);
    }
}

/* One batched step over sequences of different lengths gives each sequence the bits it gets
 * decoded alone: the linear layers compute every row alike whatever the batch, and attention
 * runs each decoded row through the single-row path. */
static void batched_decode_matches_single_kv(zq_model *m, zq_kv_type kv)
{
    enum { SEQS = 5 };
    zq_context *ctxs[SEQS];
    int32_t next[SEQS];
    for (int s = 0; s < SEQS; s++) {
        ctxs[s] = new_context_kv(m, 2, 0, kv);
        /* Sequences of different lengths: prompt prefixes of 3..7 tokens. */
        zq_context_eval(ctxs[s], prompt, 3 + s, NULL);
        next[s] = prompt[3 + s];
    }
    CHECK(zq_decode_batch(ctxs, next, SEQS) == ZQ_OK, "%s", zq_last_error());
    for (int s = 0; s < SEQS; s++) {
        zq_context *alone = new_context_kv(m, 2, 0, kv);
        zq_context_eval(alone, prompt, 3 + s, NULL);
        zq_context_eval(alone, &next[s], 1, NULL);
        const float *a = zq_context_logits(alone), *b = zq_context_logits(ctxs[s]);
        CHECK(memcmp(a, b, (size_t)vocab * sizeof(float)) == 0,
              "%s weights, %s cache, sequence %d: batched logits differ by %g",
              zq_type_name(zq_model_type(m)), zq_kv_type_name(kv), s, max_diff(a, b));
        CHECK_EQ_INT(zq_context_pos(ctxs[s]), 4 + s);
        zq_context_free(alone);
        zq_context_free(ctxs[s]);
    }
}

static void batched_decode_matches_single(void)
{
    static const zq_kv_type kv_types[] = {ZQ_KV_F32, ZQ_KV_F16, ZQ_KV_Q8};
    for (int t = 0; t < 3; t++) {
        batched_decode_matches_single_kv(model_f32, kv_types[t]);
        batched_decode_matches_single_kv(model, kv_types[t]);
    }
}

/* auto gives a model a cache of the type of its weights, so that the f32 model stays the exact
 * comparison path. Rounding keys and values to half moves the logits by far less than int8
 * weights do, but it does move them. An int8 cache moves them more. */
static void kv_cache_types(void)
{
    zq_context *ctx = new_context_kv(model_f32, 1, 0, ZQ_KV_AUTO);
    CHECK(zq_context_kv_type(ctx) == ZQ_KV_F32, "f32 model: auto gives %s",
          zq_kv_type_name(zq_context_kv_type(ctx)));
    zq_context_free(ctx);
    ctx = new_context(1, 0);
    CHECK(zq_context_kv_type(ctx) == ZQ_KV_Q8, "int8 model: auto gives %s",
          zq_kv_type_name(zq_context_kv_type(ctx)));
    zq_context_free(ctx);
    ctx = new_context_kv(model, 1, 0, ZQ_KV_F32);
    CHECK(zq_context_kv_type(ctx) == ZQ_KV_F32, "int8 model: f32 requested, got %s",
          zq_kv_type_name(zq_context_kv_type(ctx)));
    zq_context_free(ctx);

    float *f32 = last_logits_of(model_f32, ZQ_KV_F32, 2, 0, false);
    float *f16 = last_logits_of(model_f32, ZQ_KV_F16, 2, 0, false);
    float *q8 = last_logits_of(model_f32, ZQ_KV_Q8, 2, 0, false);
    double d = max_diff(f32, f16);
    CHECK(d > 0, "f16 cache leaves the logits unchanged");
    CHECK(d < 0.01, "f16 cache moves the logits by %g", d);
    d = max_diff(f32, q8);
    CHECK(d > max_diff(f32, f16), "int8 cache moves the logits less than f16 (%g)", d);
    CHECK(d < 0.05, "int8 cache moves the logits by %g", d); /* measured: 0.013 */
    free(f32);
    free(f16);
    free(q8);

    zq_kv_type parsed = ZQ_KV_AUTO;
    CHECK(zq_kv_type_parse("f16", &parsed) == ZQ_OK, "parse f16");
    CHECK(parsed == ZQ_KV_F16, "f16 parsed as %s", zq_kv_type_name(parsed));
    CHECK(zq_kv_type_parse("f32", &parsed) == ZQ_OK, "parse f32");
    CHECK(parsed == ZQ_KV_F32, "f32 parsed as %s", zq_kv_type_name(parsed));
    CHECK(zq_kv_type_parse("int8", &parsed) == ZQ_OK, "parse int8");
    CHECK(parsed == ZQ_KV_Q8, "int8 parsed as %s", zq_kv_type_name(parsed));
    CHECK(zq_kv_type_parse("q4", &parsed) == ZQ_ERR_INVALID_ARG, "parse q4");
    ctx = NULL;
    CHECK(zq_context_create(model, &(zq_context_params){.kv_type = (zq_kv_type)7}, &ctx) ==
              ZQ_ERR_INVALID_ARG,
          "an unknown cache type is accepted");
    CHECK(ctx == NULL, "context left behind");
}

/* The cache starts small and is reallocated as it fills, keeping the rows it holds. A long
 * prompt fed in chunks that cross several reallocations must give the logits of the same prompt
 * evaluated into a cache sized for it at once (within float rounding: chunks take the prefill
 * path over rows already cached). */
static void cache_growth_keeps_rows(void)
{
    enum { LEN = 200 };
    int32_t ids[LEN];
    fill_ids(ids, LEN);
    static const zq_kv_type kv_types[] = {ZQ_KV_F32, ZQ_KV_F16, ZQ_KV_Q8};
    for (int t = 0; t < 3; t++) {
        zq_context *whole = new_context_kv(model_f32, 2, 0, kv_types[t]);
        zq_context *grown = new_context_kv(model_f32, 2, 0, kv_types[t]);
        CHECK(zq_context_eval(whole, ids, LEN, NULL) == ZQ_OK, "%s", zq_last_error());
        for (int i = 0; i < LEN; i += 37) {
            const int n = LEN - i < 37 ? LEN - i : 37;
            CHECK(zq_context_eval(grown, ids + i, n, NULL) == ZQ_OK, "%s", zq_last_error());
        }
        const double d = max_diff(zq_context_logits(whole), zq_context_logits(grown));
        CHECK(d < 1e-4, "%s cache: logits after growing differ by %g", zq_kv_type_name(kv_types[t]),
              d);
        zq_context_free(whole);
        zq_context_free(grown);
    }
}

static void context_limit_is_reported(void)
{
    zq_context *ctx = NULL;
    CHECK(zq_context_create(model, &(zq_context_params){.n_ctx = 8}, &ctx) == ZQ_OK, "create");
    CHECK(zq_context_eval(ctx, prompt, PROMPT_LEN, NULL) == ZQ_ERR_CONTEXT_FULL, "no error");
    CHECK_EQ_INT(zq_context_pos(ctx), 0);
    CHECK(zq_context_eval(ctx, prompt, 8, NULL) == ZQ_OK, "%s", zq_last_error());
    CHECK(zq_context_eval(ctx, prompt, 1, NULL) == ZQ_ERR_CONTEXT_FULL, "no error when full");
    const int32_t bad = vocab;
    zq_context_truncate(ctx, 2);
    CHECK(zq_context_eval(ctx, &bad, 1, NULL) == ZQ_ERR_INVALID_ARG, "bad id accepted");
    zq_context_free(ctx);
    CHECK(zq_context_create(model, &(zq_context_params){.n_ctx = 100000}, &ctx) ==
              ZQ_ERR_INVALID_ARG,
          "oversized context accepted");
    CHECK(ctx == NULL, "a failed create returned a context");
}

static void chat_prompt_drops_oldest(void)
{
    const char *turns[] = {"你好", "你好啊", "今天天气怎么样", "很好", "我们去吃饭吧"};
    int32_t ids[256];
    int n = 0, dropped = 0;
    CHECK(zq_chat_build_prompt(model, turns, 5, 256, 10, ids, 256, &n, &dropped) == ZQ_OK,
          "%s", zq_last_error());
    CHECK_EQ_INT(dropped, 0);
    /* [CLS] 你好 [SEP] 你好啊 [SEP] 今天天气怎么样 [SEP] 很好 [SEP] 我们去吃饭吧 [SEP] */
    CHECK_EQ_INT(n, 1 + 3 + 4 + 8 + 3 + 7);
    CHECK_EQ_INT(ids[0], zq_model_special(model)->cls);
    CHECK_EQ_INT(ids[n - 1], zq_model_special(model)->sep);
    /* A context of 24 with 4 reserved (room for 20) fits the last exchange and the new turn. */
    CHECK(zq_chat_build_prompt(model, turns, 5, 24, 4, ids, 256, &n, &dropped) == ZQ_OK, "%s",
          zq_last_error());
    CHECK_EQ_INT(dropped, 1);
    CHECK_EQ_INT(n, 1 + 8 + 3 + 7);
    CHECK(zq_chat_build_prompt(model, turns, 5, 6, 2, ids, 256, &n, &dropped) ==
              ZQ_ERR_CONTEXT_FULL,
          "too long a turn accepted");
}

static void chat_keeps_last_exchanges(void)
{
    zq_chat_params p;
    zq_chat_params_default(&p);
    p.max_exchanges = 2;
    p.max_new_tokens = 8;
    p.sampling.temperature = 0;
    zq_chat *chat = NULL;
    CHECK(zq_chat_create(model, &p, &chat) == ZQ_OK, "%s", zq_last_error());
    char reply[512];
    const char *lines[] = {"你好", "你是谁", "你去哪儿了", "我们需要谈谈"};
    for (int i = 0; i < 4; i++) {
        CHECK(zq_chat_reply(chat, lines[i], NULL, NULL, reply, sizeof reply) == ZQ_OK, "%s",
              zq_last_error());
        CHECK_EQ_INT(zq_chat_exchanges(chat), i + 1 < 2 ? i + 1 : 2);
    }
    zq_chat_reset(chat);
    CHECK_EQ_INT(zq_chat_exchanges(chat), 0);

    /* After a reset the same greedy turn gives the same reply as a fresh chat. */
    char again[512], fresh[512];
    zq_chat_reply(chat, "你好", NULL, NULL, again, sizeof again);
    zq_chat *other = NULL;
    zq_chat_create(model, &p, &other);
    zq_chat_reply(other, "你好", NULL, NULL, fresh, sizeof fresh);
    CHECK(strcmp(again, fresh) == 0, "'%s' vs '%s'", again, fresh);
    zq_chat_free(other);
    zq_chat_free(chat);
}

static bool stop_after_first(const char *piece, size_t len, void *user)
{
    (*(int *)user)++;
    return false;
}

static void stopped_reply_is_not_stored(void)
{
    zq_chat_params p;
    zq_chat_params_default(&p);
    p.sampling.temperature = 0;
    zq_chat *chat = NULL;
    zq_chat_create(model, &p, &chat);
    int calls = 0;
    CHECK(zq_chat_reply(chat, "你好", stop_after_first, &calls, NULL, 0) == ZQ_OK, "%s",
          zq_last_error());
    CHECK_EQ_INT(calls, 1);
    CHECK_EQ_INT(zq_chat_exchanges(chat), 0);
    zq_chat_free(chat);
}

static void detokenize_gives_clean_text(void)
{
    const char *text = "你好，世界！hello world";
    int32_t ids[64];
    int n = 0;
    CHECK(zq_tokenize(model, text, ids, 64, &n) == ZQ_OK, "%s", zq_last_error());
    char out[256];
    zq_detokenize(model, ids, n, out, sizeof out);
    CHECK(strcmp(out, text) == 0, "'%s'", out);

    zq_detok_stream stream;
    zq_detok_stream_init(&stream, model);
    char joined[256] = "";
    for (int i = 0; i < n; i++) {
        char piece[64];
        zq_detok_stream_push(&stream, ids[i], piece, sizeof piece);
        strcat(joined, piece);
    }
    CHECK(strcmp(joined, text) == 0, "streamed '%s'", joined);
}

static void null_arguments_are_rejected(void)
{
    zq_model *m = NULL;
    CHECK(zq_model_load(NULL, NULL, &m) == ZQ_ERR_INVALID_ARG, "NULL path accepted");
    int n = 0;
    CHECK(zq_tokenize(model, NULL, NULL, 0, &n) == ZQ_ERR_INVALID_ARG, "NULL text accepted");
    zq_context *ctx = new_context(1, 0);
    CHECK(zq_context_eval(ctx, NULL, 1, NULL) == ZQ_ERR_INVALID_ARG, "NULL ids accepted");
    zq_context_free(ctx);
    zq_chat_params p;
    zq_chat_params_default(&p);
    zq_chat *chat = NULL;
    zq_chat_create(model, &p, &chat);
    CHECK(zq_chat_reply(chat, NULL, NULL, NULL, NULL, 0) == ZQ_ERR_INVALID_ARG, "NULL text");
    zq_chat_free(chat);
}

int main(void)
{
    model = load_model(ZQ_TYPE_Q8);
    model_f32 = load_model(ZQ_TYPE_F32);
    if (!model || !model_f32) {
        printf("FAIL load_model\n");
        return 1;
    }
    vocab = zq_model_hparams(model)->n_vocab;
    ZQ_RUN(threads_give_identical_logits);
    ZQ_RUN(threads_give_identical_decode);
    ZQ_RUN(chunked_prompt_matches_whole);
    ZQ_RUN(batched_decode_matches_single);
    ZQ_RUN(kv_cache_types);
    ZQ_RUN(cache_growth_keeps_rows);
    ZQ_RUN(long_decode_matches_prefill);
    ZQ_RUN(context_limit_is_reported);
    ZQ_RUN(chat_prompt_drops_oldest);
    ZQ_RUN(chat_keeps_last_exchanges);
    ZQ_RUN(stopped_reply_is_not_stored);
    ZQ_RUN(detokenize_gives_clean_text);
    ZQ_RUN(null_arguments_are_rejected);
    zq_model_free(model);
    zq_model_free(model_f32);
    ZQ_CHECK_EXIT();
}
