/*
 * test_server_units.c - the parts of `zq serve` that need no model and no network: the LRU
 * map, UTF-8 checks, request parsing and validation of both APIs, the session store, cache
 * keys and the in-process cache, and the Prometheus rendering.
 *
 * The server's sources are linked into build/zq, not into libzq, so this test compiles the
 * ones it needs into itself.
 */
#include "../server/buf.c"
#include "../server/cache.c"
#include "../server/job.c"
#include "../server/log.c"
#include "../server/lru.c"
#include "../server/metrics.c"
#include "../server/params.c"
#include "../server/redis.c"
#include "../server/session.c"
#include "../server/wordfilter.c"

#include "support/check.h"

#include <string.h>

/* ---- LRU -------------------------------------------------------------------------------- */

static int freed_values;

static void count_free(void *value)
{
    freed_values++;
    free(value);
}

static char *dup_text(const char *s)
{
    return strdup(s);
}

static void test_lru_evicts_least_recent(void)
{
    freed_values = 0;
    zq_lru *lru = zq_lru_create(2, count_free);
    CHECK(zq_lru_put(lru, "a", dup_text("1"), 0), "put a");
    CHECK(zq_lru_put(lru, "b", dup_text("2"), 0), "put b");
    CHECK(zq_lru_get(lru, "a") != NULL, "a present");
    CHECK(zq_lru_put(lru, "c", dup_text("3"), 0), "put c");
    CHECK(zq_lru_peek(lru, "b") == NULL, "b (least recent) evicted");
    CHECK(zq_lru_peek(lru, "a") != NULL, "a kept");
    CHECK(zq_lru_peek(lru, "c") != NULL, "c kept");
    CHECK_EQ_INT(zq_lru_count(lru), 2);
    CHECK_EQ_INT(zq_lru_evictions(lru), 1);
    CHECK_EQ_INT(freed_values, 1);
    zq_lru_free(lru);
    CHECK_EQ_INT(freed_values, 3);
}

static void test_lru_replace_and_remove(void)
{
    freed_values = 0;
    zq_lru *lru = zq_lru_create(4, count_free);
    zq_lru_put(lru, "k", dup_text("old"), 0);
    zq_lru_put(lru, "k", dup_text("new"), 0);
    CHECK_EQ_INT(freed_values, 1);
    CHECK(!strcmp(zq_lru_peek(lru, "k"), "new"), "replaced value");
    CHECK_EQ_INT(zq_lru_count(lru), 1);
    CHECK(zq_lru_remove(lru, "k"), "remove present key");
    CHECK(!zq_lru_remove(lru, "k"), "remove absent key");
    CHECK_EQ_INT(zq_lru_count(lru), 0);
    zq_lru_free(lru);
}

static void test_lru_expire_by_last_use(void)
{
    zq_lru *lru = zq_lru_create(10, free);
    zq_lru_put(lru, "old", dup_text("x"), 1.0);
    zq_lru_put(lru, "mid", dup_text("x"), 2.0);
    zq_lru_put(lru, "new", dup_text("x"), 3.0);
    CHECK(zq_lru_touch(lru, "old", 4.0), "touch old");
    CHECK_EQ_INT(zq_lru_expire(lru, 2.5), 1); /* only "mid" was last used before 2.5 */
    CHECK(zq_lru_peek(lru, "mid") == NULL, "mid expired");
    CHECK(zq_lru_peek(lru, "old") != NULL, "touched entry kept");
    CHECK_EQ_INT(zq_lru_expire(lru, 10.0), 2);
    zq_lru_free(lru);
}

static void test_lru_many_keys(void)
{
    zq_lru *lru = zq_lru_create(5000, free);
    char key[32];
    for (int i = 0; i < 6000; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        zq_lru_put(lru, key, dup_text(key), i);
    }
    CHECK_EQ_INT(zq_lru_count(lru), 5000);
    CHECK(zq_lru_peek(lru, "key-999") == NULL, "first keys evicted");
    CHECK(!strcmp(zq_lru_peek(lru, "key-1000"), "key-1000"), "oldest kept key");
    CHECK(!strcmp(zq_lru_peek(lru, "key-5999"), "key-5999"), "newest key");
    zq_lru_free(lru);
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

static void test_utf8_validation(void)
{
    static const struct {
        const char *bytes;
        bool valid;
    } cases[] = {
        {"plain ascii", true},
        {"你好，世界", true},
        {"\xF0\x9F\x98\x80 emoji", true},
        {"\xC0\x80", false},         /* overlong NUL */
        {"\xE0\x80\xAF", false},     /* overlong '/' */
        {"\xED\xA0\x80", false},     /* UTF-16 surrogate */
        {"\xF4\x90\x80\x80", false}, /* above U+10FFFF */
        {"\xE4\xBD", false},         /* truncated */
        {"\x80", false},             /* lone continuation byte */
        {"\xFF", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        CHECK(zq_utf8_valid(cases[i].bytes, strlen(cases[i].bytes)) == cases[i].valid,
              "case %zu expected %s", i, cases[i].valid ? "valid" : "invalid");
    CHECK_EQ_INT(zq_utf8_length("a你b"), 3);
}

/* ---- /chat parsing ---------------------------------------------------------------------- */

static zq_request_limits test_limits(void)
{
    zq_request_limits limits = {
        .max_prompt_chars = 10, .max_new_tokens_cap = 100, .default_max_new_tokens = 32};
    zq_sampler_params_default(&limits.sampling);
    return limits;
}

static bool parse_chat(const char *json, zq_gen_request *out, zq_param_error *err)
{
    const zq_request_limits limits = test_limits();
    return zq_parse_chat_body(json, strlen(json), &limits, out, err);
}

static void test_chat_body_fields(void)
{
    zq_gen_request r;
    zq_param_error err;
    CHECK(parse_chat("{\"prompt\":\"你好\",\"session_id\":\"s-1\",\"max_new_tokens\":5,"
                     "\"temperature\":0.5,\"top_k\":7,\"top_p\":0.9,\"seed\":42,\"stream\":true}",
                     &r, &err),
          "%s", err.message);
    CHECK_EQ_INT(r.n_turns, 1);
    CHECK(!strcmp(r.turns[0], "你好"), "prompt");
    CHECK(!strcmp(r.session_id, "s-1"), "session id");
    CHECK_EQ_INT(r.max_new_tokens, 5);
    CHECK(r.max_new_tokens_given, "max_new_tokens given");
    CHECK_NEAR(r.sampling.temperature, 0.5, 1e-6);
    CHECK_EQ_INT(r.sampling.top_k, 7);
    CHECK_NEAR(r.sampling.top_p, 0.9, 1e-6);
    CHECK_EQ_INT(r.sampling.seed, 42);
    CHECK(r.seed_given, "seed_given");
    CHECK(r.stream, "stream");
    CHECK(zq_gen_request_deterministic(&r), "a seeded request is deterministic");
    zq_gen_request_free(&r);
}

static void test_chat_body_defaults(void)
{
    zq_gen_request r;
    zq_param_error err;
    CHECK(parse_chat("{\"prompt\":\"hi\"}", &r, &err), "%s", err.message);
    CHECK_EQ_INT(r.max_new_tokens, 32);
    CHECK(!r.max_new_tokens_given, "default max_new_tokens");
    CHECK(r.session_id == NULL, "no session id");
    CHECK(!zq_gen_request_deterministic(&r), "unseeded sampling is not deterministic");
    zq_gen_request_free(&r);

    CHECK(parse_chat("{\"prompt\":\"hi\",\"temperature\":0}", &r, &err), "%s", err.message);
    CHECK(zq_gen_request_deterministic(&r), "greedy is deterministic");
    zq_gen_request_free(&r);

    zq_request_limits fixed = test_limits();
    fixed.fixed_seed = true;
    fixed.sampling.seed = 5;
    const char *plain = "{\"prompt\":\"hi\"}";
    CHECK(zq_parse_chat_body(plain, strlen(plain), &fixed, &r, &err), "%s", err.message);
    CHECK_EQ_INT(r.sampling.seed, 5);
    CHECK(zq_gen_request_deterministic(&r), "the server's --seed makes requests deterministic");
    zq_gen_request_free(&r);

    CHECK(parse_chat("{\"reset\":true,\"session_id\":\"abc\"}", &r, &err), "%s", err.message);
    CHECK(r.reset, "reset");
    CHECK_EQ_INT(r.n_turns, 0);
    zq_gen_request_free(&r);
}

static void test_chat_body_rejections(void)
{
    static const struct {
        const char *body;
        const char *message_part;
    } cases[] = {
        {"{}", "missing prompt"},
        {"{\"prompt\":\"\"}", "must not be empty"},
        {"{\"prompt\":5}", "prompt must be a string"},
        {"{\"prompt\":\"0123456789A\"}", "limit is 10"},
        {"{\"prompt\":\"hi\",\"temperature\":-0.1}", "temperature must be in"},
        {"{\"prompt\":\"hi\",\"temperature\":\"hot\"}", "temperature must be a number"},
        {"{\"prompt\":\"hi\",\"top_p\":0}", "top_p must be in (0"},
        {"{\"prompt\":\"hi\",\"top_p\":1.5}", "top_p must be in (0"},
        {"{\"prompt\":\"hi\",\"top_k\":-1}", "top_k must be in"},
        {"{\"prompt\":\"hi\",\"max_new_tokens\":0}", "max_new_tokens must be in [1, 100]"},
        {"{\"prompt\":\"hi\",\"max_new_tokens\":101}", "max_new_tokens must be in [1, 100]"},
        {"{\"prompt\":\"hi\",\"max_new_tokens\":1.5}", "max_new_tokens must be an integer"},
        {"{\"prompt\":\"hi\",\"seed\":-3}", "seed must be in"},
        {"{\"prompt\":\"hi\",\"stream\":\"yes\"}", "stream must be true or false"},
        {"{\"prompt\":\"hi\",\"session_id\":\"a b\"}", "session_id must be"},
        {"{\"prompt\":\"hi\"", "malformed JSON"},
        {"{\"prompt\":\"hi\"} x", "unexpected data"},
        {"[1,2]", "must be a JSON object"},
        {"{\"prompt\":\"\xC3\x28\"}", "not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        zq_gen_request r;
        zq_param_error err;
        bool ok = parse_chat(cases[i].body, &r, &err);
        CHECK(!ok, "case %zu (%s) accepted", i, cases[i].body);
        if (!ok)
            CHECK(strstr(err.message, cases[i].message_part) != NULL,
                  "case %zu: message '%s' lacks '%s'", i, err.message, cases[i].message_part);
    }
}

typedef struct {
    const char *names[4];
    const char *values[4];
} query_table;

static const char *table_lookup(void *user, const char *name, size_t *len)
{
    const query_table *t = user;
    for (int i = 0; i < 4 && t->names[i]; i++) {
        if (!strcmp(t->names[i], name)) {
            *len = strlen(t->values[i]);
            return t->values[i];
        }
    }
    return NULL;
}

/* Returns "a" as the value of every name with a length of 3, as libmicrohttpd does for
 * the decoded query value "a%00b". */
static const char *nul_lookup(void *user, const char *name, size_t *len)
{
    if (strcmp(name, (const char *)user) != 0)
        return NULL;
    *len = 3;
    return "a\0b";
}

static void test_chat_query(void)
{
    const zq_request_limits limits = test_limits();
    zq_gen_request r;
    zq_param_error err;
    query_table ok_args = {{"prompt", "max_new_tokens", "stream", "temperature"},
                           {"你好", "8", "true", "0"}};
    CHECK(zq_parse_chat_query(table_lookup, &ok_args, &limits, &r, &err), "%s", err.message);
    CHECK_EQ_INT(r.n_turns, 1);
    if (r.n_turns == 1)
        CHECK(!strcmp(r.turns[0], "你好"), "query prompt");
    CHECK_EQ_INT(r.max_new_tokens, 8);
    CHECK(r.stream, "stream=true");
    CHECK(r.sampling.temperature == 0.0f, "temperature=0");
    zq_gen_request_free(&r);

    query_table bad_number = {{"prompt", "max_new_tokens"}, {"hi", "8x"}};
    CHECK(!zq_parse_chat_query(table_lookup, &bad_number, &limits, &r, &err), "8x accepted");
    CHECK(strstr(err.message, "must be a number") != NULL, "message: %s", err.message);

    query_table bad_bool = {{"prompt", "reset"}, {"hi", "maybe"}};
    CHECK(!zq_parse_chat_query(table_lookup, &bad_bool, &limits, &r, &err), "maybe accepted");
    CHECK(strstr(err.message, "true or false") != NULL, "message: %s", err.message);

    CHECK(!zq_parse_chat_query(nul_lookup, "prompt", &limits, &r, &err), "%%00 accepted");
    CHECK(strstr(err.message, "prompt contains a NUL character") != NULL, "message: %s",
          err.message);
}

/* cJSON ends its strings at a decoded \u0000, so a NUL anywhere in a string must be
 * rejected with the field's path instead of cutting the text short. */
static void test_nul_characters_rejected(void)
{
    static const struct {
        const char *body;
        const char *message_part;
    } cases[] = {
        {"{\"prompt\":\"a\\u0000b\"}", "prompt contains a NUL character"},
        {"{\"session_id\":\"s1\",\"prompt\":\"\\u0000\"}", "prompt contains a NUL"},
        {"{\"prompt\":\"a\",\"user\":\"x\\u0000\"}", "user contains a NUL"},
        {"{\"pro\\u0000mpt\":\"a\"}", "the name of the field at pro contains a NUL"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}",
         "messages[0].content contains a NUL"},
        {"{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\","
         "\"content\":[{\"type\":\"text\",\"text\":\"ok\"},{\"type\":\"text\","
         "\"text\":\"\\\"q\\\"\\u0000\"}]}]}",
         "messages[1].content[1].text contains a NUL"},
    };
    const zq_request_limits limits = test_limits();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        zq_gen_request r;
        zq_param_error err;
        const char *body = cases[i].body;
        const bool openai = strstr(body, "messages") != NULL;
        const bool ok = openai ? zq_parse_openai_body(body, strlen(body), &limits, &r, &err)
                               : zq_parse_chat_body(body, strlen(body), &limits, &r, &err);
        CHECK(!ok, "case %zu (%s) accepted", i, body);
        if (!ok)
            CHECK(strstr(err.message, cases[i].message_part) != NULL,
                  "case %zu: message '%s' lacks '%s'", i, err.message, cases[i].message_part);
    }

    /* A raw NUL byte inside a string, which strlen would not see. */
    static const char raw[] = "{\"prompt\":\"a\0b\"}";
    zq_gen_request r;
    zq_param_error err;
    CHECK(!zq_parse_chat_body(raw, sizeof raw - 1, &limits, &r, &err), "raw NUL accepted");
    CHECK(strstr(err.message, "prompt contains a NUL") != NULL, "message: %s", err.message);

    /* An escaped backslash followed by u0000 is the text \u0000, not a NUL. */
    const char *text = "{\"prompt\":\"a\\\\u0000\"}";
    CHECK(zq_parse_chat_body(text, strlen(text), &limits, &r, &err), "%s", err.message);
    if (r.n_turns == 1)
        CHECK(!strcmp(r.turns[0], "a\\u0000"), "text kept: %s", r.turns[0]);
    zq_gen_request_free(&r);

    char *id = NULL;
    const char *reset = "{\"session_id\":\"s\\u0000x\"}";
    CHECK(!zq_parse_session_body(reset, strlen(reset), &id, &err), "session_id NUL accepted");
    CHECK(strstr(err.message, "session_id contains a NUL") != NULL, "message: %s", err.message);
    CHECK(id == NULL, "no id on failure");
    const char *good = "{\"session_id\":\"s1\"}";
    CHECK(zq_parse_session_body(good, strlen(good), &id, &err), "%s", err.message);
    CHECK(id != NULL, "session_id read");
    if (id)
        CHECK(!strcmp(id, "s1"), "session_id value: %s", id);
    free(id);
}

/* ---- OpenAI parsing --------------------------------------------------------------------- */

static bool parse_openai(const char *json, zq_gen_request *out, zq_param_error *err)
{
    const zq_request_limits limits = test_limits();
    return zq_parse_openai_body(json, strlen(json), &limits, out, err);
}

static void test_openai_messages_to_turns(void)
{
    zq_gen_request r;
    zq_param_error err;
    CHECK(parse_openai("{\"model\":\"m\",\"max_tokens\":9,\"messages\":["
                       "{\"role\":\"system\",\"content\":\"be nice\"},"
                       "{\"role\":\"user\",\"content\":\"a\"},"
                       "{\"role\":\"assistant\",\"content\":\"b\"},"
                       "{\"role\":\"user\",\"content\":\"c\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"d\"}]}],"
                       "\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                       &r, &err),
          "%s", err.message);
    CHECK_EQ_INT(r.n_turns, 3);
    if (r.n_turns == 3) {
        CHECK(!strcmp(r.turns[0], "a"), "first turn");
        CHECK(!strcmp(r.turns[1], "b"), "assistant turn");
        CHECK(!strcmp(r.turns[2], "c\nd"), "joined user turns: %s", r.turns[2]);
    }
    CHECK(!strcmp(r.model, "m"), "model");
    CHECK_EQ_INT(r.max_new_tokens, 9);
    CHECK(r.stream && r.include_usage, "stream options");
    zq_gen_request_free(&r);

    CHECK(parse_openai("{\"max_completion_tokens\":3,\"messages\":"
                       "[{\"role\":\"user\",\"content\":\"x\"}]}",
                       &r, &err),
          "%s", err.message);
    CHECK_EQ_INT(r.max_new_tokens, 3);
    zq_gen_request_free(&r);
}

static void test_openai_rejections(void)
{
    static const struct {
        const char *body;
        const char *message_part;
    } cases[] = {
        {"{}", "messages must be a non-empty array"},
        {"{\"messages\":[]}", "messages must be a non-empty array"},
        {"{\"messages\":[{\"role\":\"assistant\",\"content\":\"a\"}]}", "first non-system"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
         "{\"role\":\"assistant\",\"content\":\"b\"}]}",
         "last non-system message must be from the user"},
        {"{\"messages\":[{\"role\":\"system\",\"content\":\"a\"}]}", "last non-system"},
        {"{\"messages\":[{\"role\":\"robot\",\"content\":\"a\"}]}", "role must be"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":7}]}", "content must be a string"},
        {"{\"messages\":[{\"role\":\"user\"}]}", "content must be a string"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"n\":2}", "n must be in [1, 1]"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_tokens\":0}",
         "max_tokens must be in"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"top_p\":2}", "top_p"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"model\":1}",
         "model must be a string"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"stream_options\":3}",
         "stream_options must be an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        zq_gen_request r;
        zq_param_error err;
        bool ok = parse_openai(cases[i].body, &r, &err);
        CHECK(!ok, "case %zu (%s) accepted", i, cases[i].body);
        if (!ok)
            CHECK(strstr(err.message, cases[i].message_part) != NULL,
                  "case %zu: message '%s' lacks '%s'", i, err.message, cases[i].message_part);
    }
}

/* ---- sessions --------------------------------------------------------------------------- */

static double fake_time;

static double fake_clock(void)
{
    return fake_time;
}

static void test_session_history_window(void)
{
    zq_sessions *s = zq_sessions_create(2, 100, 10, NULL);
    zq_sessions_set_clock(s, fake_clock);
    fake_time = 0;
    CHECK(zq_sessions_append(s, "a", 0, "u1", "r1"), "append 1");
    CHECK(zq_sessions_append(s, "a", 0, "u2", "r2"), "append 2");
    CHECK(zq_sessions_append(s, "a", 0, "u3", "r3"), "append 3");
    zq_history h;
    CHECK(zq_sessions_load(s, "a", &h), "load");
    CHECK_EQ_INT(h.n_turns, 4);
    if (h.n_turns == 4) {
        CHECK(!strcmp(h.turns[0], "u2"), "oldest kept turn");
        CHECK(!strcmp(h.turns[3], "r3"), "newest turn");
    }
    zq_history_free(&h);

    CHECK(zq_sessions_append(s, "a", 1, "u4", "r4"), "append with one dropped");
    CHECK(zq_sessions_load(s, "a", &h), "load");
    CHECK_EQ_INT(h.n_turns, 4);
    if (h.n_turns == 4)
        CHECK(!strcmp(h.turns[0], "u3"), "dropped exchange forgotten");
    zq_history_free(&h);

    CHECK(zq_sessions_reset(s, "a"), "reset");
    CHECK(zq_sessions_load(s, "a", &h), "load after reset");
    CHECK_EQ_INT(h.n_turns, 0);
    zq_history_free(&h);
    zq_sessions_free(s);
}

static void test_session_ttl_and_cap(void)
{
    zq_sessions *s = zq_sessions_create(3, 10, 2, NULL);
    zq_sessions_set_clock(s, fake_clock);
    fake_time = 100;
    zq_sessions_append(s, "a", 0, "u", "r");
    fake_time = 105;
    zq_sessions_append(s, "b", 0, "u", "r");
    CHECK_EQ_INT(zq_sessions_count(s), 2);

    fake_time = 112; /* a: 12 s idle, b: 7 s idle */
    zq_history h;
    zq_sessions_load(s, "a", &h);
    CHECK_EQ_INT(h.n_turns, 0);
    zq_history_free(&h);
    zq_sessions_load(s, "b", &h);
    CHECK_EQ_INT(h.n_turns, 2);
    zq_history_free(&h);

    zq_sessions_append(s, "c", 0, "u", "r");
    zq_sessions_append(s, "d", 0, "u", "r"); /* cap 2: b is least recently used */
    CHECK_EQ_INT(zq_sessions_count(s), 2);
    zq_sessions_load(s, "b", &h);
    CHECK_EQ_INT(h.n_turns, 0);
    zq_history_free(&h);
    zq_sessions_free(s);
}

static void test_session_ids_and_json(void)
{
    CHECK(zq_session_id_valid("abc-DEF_123"), "valid id");
    CHECK(!zq_session_id_valid(""), "empty id");
    CHECK(!zq_session_id_valid("a/b"), "slash");
    CHECK(!zq_session_id_valid("zq:x"), "colon");
    char long_id[80];
    memset(long_id, 'x', 65);
    long_id[65] = '\0';
    CHECK(!zq_session_id_valid(long_id), "65 characters");

    char id[33], other[33];
    CHECK(zq_session_id_generate(id), "generate");
    CHECK(zq_session_id_generate(other), "generate again");
    CHECK_EQ_INT(strlen(id), 32);
    CHECK(zq_session_id_valid(id), "generated id is valid");
    CHECK(strcmp(id, other) != 0, "two ids differ");

    char *turns[] = {"你好", "嗨 \"quoted\"", "again", "ok"};
    const zq_history h = {turns, 4};
    char *json = zq_history_to_json(&h);
    zq_history back;
    CHECK(json != NULL, "encode");
    char reason[160] = "";
    CHECK(json && zq_history_from_json(json, &back, reason, sizeof reason), "decode: %s",
          reason);
    CHECK_EQ_INT(back.n_turns, 4);
    if (back.n_turns == 4)
        CHECK(!strcmp(back.turns[1], "嗨 \"quoted\""), "escaped turn");
    zq_history_free(&back);
    free(json);
    static const struct {
        const char *json;
        const char *reason_part;
    } bad[] = {
        {"{\"exchanges\":[{\"user\":1}]}", "exchanges[0] is not"},
        {"{\"exchanges\":[{\"user\":\"a\",\"assistant\":\"b\"},{\"user\":5}]}",
         "exchanges[1] is not"},
        {"{\"exchanges\":[\"a\"]}", "exchanges[0] is not"},
        {"{\"exchanges\":{}}", "no \"exchanges\" array"},
        {"[]", "no \"exchanges\" array"},
        {"not json", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        reason[0] = '\0';
        CHECK(!zq_history_from_json(bad[i].json, &back, reason, sizeof reason), "case %zu", i);
        CHECK(strstr(reason, bad[i].reason_part) != NULL, "case %zu: reason '%s' lacks '%s'", i,
              reason, bad[i].reason_part);
        CHECK_EQ_INT(back.n_turns, 0);
    }
}

/* ---- cache ------------------------------------------------------------------------------ */

static void key_of(const zq_cache_key_input *in, char *out)
{
    zq_cache_key(in, out);
}

static void test_cache_key_fields(void)
{
    const int32_t prompt[] = {2, 100, 200, 3};
    const int32_t other_prompt[] = {2, 100, 201, 3};
    zq_sampler_params sp;
    zq_sampler_params_default(&sp);
    sp.seed = 7;
    zq_cache_key_input in = {"zh-chat-tiny", prompt, 4, &sp, 16, false, 0};
    char base[33], k[33];
    key_of(&in, base);
    CHECK_EQ_INT(strlen(base), 32);
    key_of(&in, k);
    CHECK(!strcmp(base, k), "same input, same key");

    zq_cache_key_input changed = in;
    changed.prompt = other_prompt;
    key_of(&changed, k);
    CHECK(strcmp(base, k) != 0, "prompt changes the key");
    changed = in;
    changed.n_prompt = 3;
    key_of(&changed, k);
    CHECK(strcmp(base, k) != 0, "prompt length changes the key");
    changed = in;
    changed.max_new_tokens = 17;
    key_of(&changed, k);
    CHECK(strcmp(base, k) != 0, "max tokens change the key");
    changed = in;
    changed.model_id = "other";
    key_of(&changed, k);
    CHECK(strcmp(base, k) != 0, "model changes the key");
    changed = in;
    changed.filter_fingerprint = 1;
    key_of(&changed, k);
    CHECK(strcmp(base, k) != 0, "filter list changes the key");

    zq_sampler_params sp2 = sp;
    sp2.seed = 8;
    changed = in;
    changed.sampling = &sp2;
    key_of(&changed, k);
    CHECK(strcmp(base, k) != 0, "seed changes a sampled key");
    sp2 = sp;
    sp2.top_p = 0.5f;
    key_of(&changed, k);
    CHECK(strcmp(base, k) != 0, "top_p changes the key");

    zq_sampler_params greedy_a = sp, greedy_b = sp;
    greedy_a.temperature = greedy_b.temperature = 0;
    greedy_b.seed = 99;
    char ka[33], kb[33];
    changed.sampling = &greedy_a;
    key_of(&changed, ka);
    changed.sampling = &greedy_b;
    key_of(&changed, kb);
    CHECK(!strcmp(ka, kb), "the seed does not matter when greedy");
}

static void test_cache_lru_roundtrip(void)
{
    zq_cache *c = zq_cache_create(2, NULL, 0);
    zq_cached_reply reply = {.text = "你好", .n_tokens = 2, .finish = ZQ_FINISH_LENGTH};
    zq_cached_reply got;
    CHECK(!zq_cache_get(c, "k1", &got), "miss before put");
    zq_cache_put(c, "k1", &reply);
    CHECK(zq_cache_get(c, "k1", &got), "hit after put");
    CHECK(got.text != NULL, "text");
    if (got.text)
        CHECK(!strcmp(got.text, "你好"), "text is %s", got.text);
    CHECK_EQ_INT(got.n_tokens, 2);
    CHECK_EQ_INT(got.finish, ZQ_FINISH_LENGTH);
    zq_cached_reply_free(&got);
    zq_cache_put(c, "k2", &reply);
    zq_cache_put(c, "k3", &reply);
    CHECK(!zq_cache_get(c, "k1", &got), "capacity evicts the oldest");
    zq_cache_free(c);
}

/* ---- metrics ---------------------------------------------------------------------------- */

static void test_metrics_render(void)
{
    zq_metrics *m = zq_metrics_create();
    zq_metrics_request(m, ZQ_EP_CHAT, 200, 0.02);
    zq_metrics_request(m, ZQ_EP_CHAT, 200, 3.0);
    zq_metrics_request(m, ZQ_EP_CHAT, 400, 0.001);
    zq_metrics_request(m, ZQ_EP_OTHER, 404, 0.001);
    zq_metrics_first_token(m, 0.2);
    zq_metrics_add_tokens(m, 12);
    zq_metrics_batch(m, 3);
    zq_metrics_cache(m, true);
    zq_metrics_cache(m, false);
    zq_metrics_filter_hit(m, true);
    zq_metrics_set_load(m, 2, 5);
    char *text = zq_metrics_render(m);
    CHECK(text != NULL, "render");
    const char *expected[] = {
        "zq_requests_total{endpoint=\"/chat\",status=\"200\"} 2\n",
        "zq_requests_total{endpoint=\"/chat\",status=\"400\"} 1\n",
        "zq_requests_total{endpoint=\"other\",status=\"404\"} 1\n",
        "zq_request_duration_seconds_bucket{endpoint=\"/chat\",le=\"0.025\"} 2\n",
        "zq_request_duration_seconds_bucket{endpoint=\"/chat\",le=\"2.5\"} 2\n",
        "zq_request_duration_seconds_bucket{endpoint=\"/chat\",le=\"5\"} 3\n",
        "zq_request_duration_seconds_bucket{endpoint=\"/chat\",le=\"+Inf\"} 3\n",
        "zq_request_duration_seconds_count{endpoint=\"/chat\"} 3\n",
        "zq_time_to_first_token_seconds_count 1\n",
        "zq_batch_size_bucket{le=\"2\"} 0\n",
        "zq_batch_size_bucket{le=\"4\"} 1\n",
        "zq_tokens_generated_total 12\n",
        "zq_requests_active 2\n",
        "zq_requests_queued 5\n",
        "zq_cache_hits_total 1\n",
        "zq_cache_misses_total 1\n",
        "zq_filter_hits_total{direction=\"input\"} 1\n",
        "zq_filter_hits_total{direction=\"output\"} 0\n",
        "# TYPE zq_request_duration_seconds histogram\n",
    };
    for (size_t i = 0; text && i < sizeof expected / sizeof *expected; i++)
        CHECK(strstr(text, expected[i]) != NULL, "missing line: %s", expected[i]);
    free(text);
    zq_metrics_free(m);
}

int main(void)
{
    ZQ_RUN(test_lru_evicts_least_recent);
    ZQ_RUN(test_lru_replace_and_remove);
    ZQ_RUN(test_lru_expire_by_last_use);
    ZQ_RUN(test_lru_many_keys);
    ZQ_RUN(test_utf8_validation);
    ZQ_RUN(test_chat_body_fields);
    ZQ_RUN(test_chat_body_defaults);
    ZQ_RUN(test_chat_body_rejections);
    ZQ_RUN(test_chat_query);
    ZQ_RUN(test_nul_characters_rejected);
    ZQ_RUN(test_openai_messages_to_turns);
    ZQ_RUN(test_openai_rejections);
    ZQ_RUN(test_session_history_window);
    ZQ_RUN(test_session_ttl_and_cap);
    ZQ_RUN(test_session_ids_and_json);
    ZQ_RUN(test_cache_key_fields);
    ZQ_RUN(test_cache_lru_roundtrip);
    ZQ_RUN(test_metrics_render);
    ZQ_CHECK_EXIT();
}
