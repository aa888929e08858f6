/*
 * params.c - request parsing for both APIs. The query form of /chat is first turned into a
 * JSON object, so both forms go through the same field checks. Unknown fields are ignored,
 * as most OpenAI-compatible servers do, except "n", which must be 1 when present.
 */
#include "params.h"

#include "session.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define MAX_TEMPERATURE 2.0 /* the OpenAI range */
#define MAX_TOP_K 1000000
#define MAX_PENALTY 10.0
#define MAX_SEED 9007199254740991.0 /* 2^53 - 1: larger JSON numbers lose digits */

static bool fail(zq_param_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool fail(zq_param_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return false;
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

bool zq_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        const unsigned c = *p;
        int n;
        unsigned min, cp;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, min = 0x80, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, min = 0x800, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return false;
        }
        if (end - p <= n)
            return false;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

size_t zq_utf8_length(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p & 0xC0) != 0x80;
    return n;
}

/* ---- typed field access ----------------------------------------------------------------- */

/* Each getter leaves *out unchanged when the field is absent or null, and fails with a
 * message naming the field when it has the wrong type or range. */

static bool get_string(const cJSON *obj, const char *name, const char **out, zq_param_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!item || cJSON_IsNull(item))
        return true;
    if (!cJSON_IsString(item))
        return fail(err, "%s must be a string", name);
    *out = item->valuestring;
    return true;
}

static bool get_bool(const cJSON *obj, const char *name, bool *out, zq_param_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!item || cJSON_IsNull(item))
        return true;
    if (!cJSON_IsBool(item))
        return fail(err, "%s must be true or false", name);
    *out = cJSON_IsTrue(item);
    return true;
}

static bool get_int(const cJSON *obj, const char *name, double min, double max, long long *out,
                    zq_param_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!item || cJSON_IsNull(item))
        return true;
    const double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!cJSON_IsNumber(item) || v != floor(v))
        return fail(err, "%s must be an integer", name);
    if (v < min || v > max)
        return fail(err, "%s must be in [%.0f, %.0f], got %.0f", name, min, max, v);
    *out = (long long)v;
    return true;
}

/* Checks a number in [min, max], or (min, max] when min_open. */
static bool get_number(const cJSON *obj, const char *name, double min, bool min_open, double max,
                       float *out, zq_param_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!item || cJSON_IsNull(item))
        return true;
    if (!cJSON_IsNumber(item))
        return fail(err, "%s must be a number", name);
    const double v = item->valuedouble;
    if (!(min_open ? v > min : v >= min) || !(v <= max))
        return fail(err, "%s must be in %c%g, %g], got %g", name, min_open ? '(' : '[', min,
                    max, v);
    *out = v == 0 ? 0.0f : (float)v; /* -0 becomes 0, so it hashes like 0 in the cache key */
    return true;
}

/* ---- shared fields ---------------------------------------------------------------------- */

static bool parse_sampling(const cJSON *obj, const char *max_tokens_name,
                           const zq_request_limits *limits, zq_gen_request *out,
                           zq_param_error *err)
{
    long long max_new = -1, top_k = limits->sampling.top_k;
    long long seed = -1;
    out->sampling = limits->sampling;
    zq_sampler_params *sp = &out->sampling;
    if (!get_int(obj, max_tokens_name, 1, limits->max_new_tokens_cap, &max_new, err) ||
        !get_number(obj, "temperature", 0, false, MAX_TEMPERATURE, &sp->temperature, err) ||
        !get_int(obj, "top_k", 0, MAX_TOP_K, &top_k, err) ||
        !get_number(obj, "top_p", 0, true, 1, &sp->top_p, err) ||
        !get_number(obj, "repetition_penalty", 0, true, MAX_PENALTY, &sp->repetition_penalty,
                    err) ||
        !get_int(obj, "seed", 0, MAX_SEED, &seed, err) ||
        !get_bool(obj, "stream", &out->stream, err) ||
        !get_bool(obj, "ignore_eos", &out->ignore_eos, err))
        return false;
    out->max_new_tokens_given = max_new > 0;
    out->max_new_tokens = max_new > 0 ? (int)max_new : limits->default_max_new_tokens;
    sp->top_k = (int)top_k;
    out->seed_given = seed >= 0 || limits->fixed_seed;
    if (seed >= 0) {
        sp->seed = (uint64_t)seed;
    } else if (!limits->fixed_seed &&
               getrandom(&sp->seed, sizeof sp->seed, 0) != (ssize_t)sizeof sp->seed) {
        return fail(err, "cannot draw a random seed; pass \"seed\"");
    }
    return true;
}

/* Checks a text field: valid UTF-8 and at most max_chars code points. */
static bool check_text(const char *name, const char *text, int max_chars, zq_param_error *err)
{
    if (!zq_utf8_valid(text, strlen(text)))
        return fail(err, "%s is not valid UTF-8", name);
    size_t chars = zq_utf8_length(text);
    if (chars > (size_t)max_chars)
        return fail(err, "%s has %zu characters; the limit is %d", name, chars, max_chars);
    return true;
}

static bool push_turn(zq_gen_request *out, const char *text)
{
    char **turns = realloc(out->turns, ((size_t)out->n_turns + 1) * sizeof *turns);
    if (!turns)
        return false;
    out->turns = turns;
    out->turns[out->n_turns] = strdup(text);
    return out->turns[out->n_turns++] != NULL;
}

void zq_gen_request_free(zq_gen_request *r)
{
    for (int i = 0; i < r->n_turns; i++)
        free(r->turns[i]);
    free(r->turns);
    free(r->session_id);
    free(r->model);
    memset(r, 0, sizeof *r);
}

bool zq_gen_request_deterministic(const zq_gen_request *r)
{
    return r->sampling.temperature == 0.0f || r->seed_given;
}

/* ---- /chat ------------------------------------------------------------------------------ */

static bool parse_chat_object(const cJSON *obj, const zq_request_limits *limits,
                              zq_gen_request *out, zq_param_error *err)
{
    const char *prompt = NULL, *session = NULL;
    if (!get_string(obj, "prompt", &prompt, err) || !get_string(obj, "session_id", &session, err) ||
        !get_bool(obj, "reset", &out->reset, err) ||
        !parse_sampling(obj, "max_new_tokens", limits, out, err))
        return false;
    if (session && !zq_session_id_valid(session))
        return fail(err, "session_id must be 1-%d characters of A-Z, a-z, 0-9, '-' and '_'",
                    ZQ_SESSION_ID_MAX);
    if (!prompt && !out->reset)
        return fail(err, "missing prompt: send {\"prompt\": \"...\"} or /chat?prompt=...");
    if (prompt && !prompt[0])
        return fail(err, "prompt must not be empty");
    if (prompt && !check_text("prompt", prompt, limits->max_prompt_chars, err))
        return false;
    if ((prompt && !push_turn(out, prompt)) || (session && !(out->session_id = strdup(session))))
        return fail(err, "out of memory");
    return true;
}

/* ---- NUL characters --------------------------------------------------------------------- */

/* cJSON decodes the escape \u0000 (and copies a raw NUL byte) into its NUL-terminated
 * strings, so the text after the NUL would be dropped without a trace. These helpers find
 * such a string to reject the request instead. */

/* Returns the document-order index, keys included, of the first string token of a JSON
 * text that contains \u0000 or a raw NUL byte, or -1 when there is none. */
static int nul_string_index(const char *body, size_t len)
{
    int index = -1;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        const char c = body[i];
        if (!in_string) {
            if (c == '"') {
                in_string = true;
                index++;
            }
        } else if (c == '"') {
            in_string = false;
        } else if (c == '\0') {
            return index;
        } else if (c == '\\') {
            if (len - i > 5 && !memcmp(body + i + 1, "u0000", 5))
                return index;
            i++; /* the escaped character cannot end the string */
        }
    }
    return -1;
}

typedef struct {
    int remaining; /* string tokens to pass before the one that contains the NUL */
    bool is_key;
    char path[128]; /* e.g. messages[1].content */
} nul_search;

/* Walks the parsed tree in document order, counting keys and string values as the text
 * scanner does, and records the path of the string token number search->remaining. */
static bool find_string_token(const cJSON *item, const char *path, nul_search *search)
{
    if (cJSON_IsString(item) && search->remaining-- == 0) {
        snprintf(search->path, sizeof search->path, "%s", path);
        return true;
    }
    const bool in_object = cJSON_IsObject(item);
    int index = 0;
    const cJSON *child;
    cJSON_ArrayForEach(child, item)
    {
        char sub[128];
        if (in_object)
            snprintf(sub, sizeof sub, "%s%s%s", path, path[0] ? "." : "", child->string);
        else
            snprintf(sub, sizeof sub, "%s[%d]", path, index);
        if (in_object && search->remaining-- == 0) {
            search->is_key = true;
            snprintf(search->path, sizeof search->path, "%s", sub);
            return true;
        }
        if (find_string_token(child, sub, search))
            return true;
        index++;
    }
    return false;
}

/* Fails with the path of the first string of the body that contains a NUL character. */
static bool check_no_nul(const cJSON *root, const char *body, size_t len, zq_param_error *err)
{
    nul_search search = {.remaining = nul_string_index(body, len)};
    if (search.remaining < 0)
        return true;
    if (!find_string_token(root, "", &search))
        return fail(err, "a string of the request body contains a NUL character (\\u0000)");
    if (search.is_key)
        return fail(err, "the name of the field at %s contains a NUL character (\\u0000)",
                    search.path);
    return fail(err, "%s contains a NUL character (\\u0000), which is not supported",
                search.path);
}

static cJSON *parse_json_object(const char *body, size_t len, zq_param_error *err)
{
    if (!zq_utf8_valid(body, len)) {
        fail(err, "the request body is not valid UTF-8");
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!root) {
        fail(err, "malformed JSON near byte %td of the body", end ? end - body : (ptrdiff_t)0);
        return NULL;
    }
    while (end && (size_t)(end - body) < len && strchr(" \t\r\n", *end))
        end++;
    if (end && (size_t)(end - body) < len) {
        fail(err, "unexpected data after the JSON value at byte %td", end - body);
    } else if (!cJSON_IsObject(root)) {
        fail(err, "the request body must be a JSON object");
    } else if (check_no_nul(root, body, len, err)) {
        return root;
    }
    cJSON_Delete(root);
    return NULL;
}

bool zq_parse_chat_body(const char *body, size_t len, const zq_request_limits *limits,
                        zq_gen_request *out, zq_param_error *err)
{
    memset(out, 0, sizeof *out);
    err->message[0] = '\0';
    cJSON *root = parse_json_object(body, len, err);
    bool ok = root && parse_chat_object(root, limits, out, err);
    cJSON_Delete(root);
    if (!ok)
        zq_gen_request_free(out);
    return ok;
}

bool zq_parse_session_body(const char *body, size_t len, char **session_id,
                           zq_param_error *err)
{
    *session_id = NULL;
    err->message[0] = '\0';
    cJSON *root = parse_json_object(body, len, err);
    const char *id = NULL;
    bool ok = root && get_string(root, "session_id", &id, err);
    if (ok && id && !(*session_id = strdup(id)))
        ok = fail(err, "out of memory");
    cJSON_Delete(root);
    return ok;
}

typedef enum { FIELD_STRING, FIELD_NUMBER, FIELD_BOOL } field_kind;

/* Converts one query argument into a JSON value of the field's kind. */
static cJSON *query_value(const char *name, const char *text, field_kind kind,
                          zq_param_error *err)
{
    if (kind == FIELD_STRING)
        return cJSON_CreateString(text);
    if (kind == FIELD_BOOL) {
        if (!strcmp(text, "true") || !strcmp(text, "1"))
            return cJSON_CreateTrue();
        if (!strcmp(text, "false") || !strcmp(text, "0"))
            return cJSON_CreateFalse();
        fail(err, "%s must be true or false, got '%.40s'", name, text);
        return NULL;
    }
    char *end = NULL;
    const double v = strtod(text, &end);
    if (!text[0] || *end || !isfinite(v)) {
        fail(err, "%s must be a number, got '%.40s'", name, text);
        return NULL;
    }
    return cJSON_CreateNumber(v);
}

bool zq_parse_chat_query(zq_query_lookup lookup, void *user, const zq_request_limits *limits,
                         zq_gen_request *out, zq_param_error *err)
{
    static const struct {
        const char *name;
        field_kind kind;
    } fields[] = {
        {"prompt", FIELD_STRING},
        {"session_id", FIELD_STRING},
        {"reset", FIELD_BOOL},
        {"stream", FIELD_BOOL},
        {"ignore_eos", FIELD_BOOL},
        {"max_new_tokens", FIELD_NUMBER},
        {"temperature", FIELD_NUMBER},
        {"top_k", FIELD_NUMBER},
        {"top_p", FIELD_NUMBER},
        {"seed", FIELD_NUMBER},
        {"repetition_penalty", FIELD_NUMBER},
    };
    memset(out, 0, sizeof *out);
    err->message[0] = '\0';
    cJSON *obj = cJSON_CreateObject();
    bool ok = obj != NULL;
    for (size_t i = 0; ok && i < sizeof fields / sizeof *fields; i++) {
        size_t len = 0;
        const char *text = lookup(user, fields[i].name, &len);
        if (!text)
            continue;
        if (strlen(text) != len) {
            ok = fail(err, "%s contains a NUL character (%%00), which is not supported",
                      fields[i].name);
            break;
        }
        cJSON *value = query_value(fields[i].name, text, fields[i].kind, err);
        ok = value != NULL;
        if (ok)
            cJSON_AddItemToObject(obj, fields[i].name, value);
    }
    ok = ok && parse_chat_object(obj, limits, out, err);
    cJSON_Delete(obj);
    if (!ok)
        zq_gen_request_free(out);
    return ok;
}

/* ---- OpenAI chat completions ------------------------------------------------------------ */

/* Reads a message's content: a string, or an array of {"type": "text", "text": ...} parts,
 * which are joined. Returns a malloc'd string. */
static char *message_content(const cJSON *msg, int index, zq_param_error *err)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (cJSON_IsString(content))
        return strdup(content->valuestring);
    if (!cJSON_IsArray(content)) {
        fail(err, "messages[%d].content must be a string or an array of text parts", index);
        return NULL;
    }
    size_t total = 1;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text)) {
            fail(err, "messages[%d].content parts must be {\"type\": \"text\", \"text\": ...}",
                 index);
            return NULL;
        }
        total += strlen(text->valuestring);
    }
    char *joined = malloc(total);
    if (!joined)
        return NULL;
    joined[0] = '\0';
    cJSON_ArrayForEach(part, content)
        strcat(joined, cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring);
    return joined;
}

/* Appends a message as a turn, joining it to the previous turn when the role repeats. */
static bool add_message(zq_gen_request *out, bool is_user, const char *text, int index,
                        zq_param_error *err)
{
    const bool last_is_user = out->n_turns % 2 == 1;
    if (out->n_turns == 0 && !is_user)
        return fail(err, "messages[%d]: the first non-system message must be from the user",
                    index);
    if (out->n_turns > 0 && is_user == last_is_user) {
        char **last = &out->turns[out->n_turns - 1];
        char *joined = malloc(strlen(*last) + strlen(text) + 2);
        if (!joined)
            return fail(err, "out of memory");
        sprintf(joined, "%s\n%s", *last, text);
        free(*last);
        *last = joined;
        return true;
    }
    return push_turn(out, text) || fail(err, "out of memory");
}

static bool parse_messages(const cJSON *messages, const zq_request_limits *limits,
                           zq_gen_request *out, zq_param_error *err)
{
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0)
        return fail(err, "messages must be a non-empty array of {\"role\", \"content\"}");
    int index = 0;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, messages)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        if (!cJSON_IsObject(msg) || !cJSON_IsString(role))
            return fail(err, "messages[%d] must be an object with a string role", index);
        const char *r = role->valuestring;
        const bool is_user = !strcmp(r, "user");
        const bool is_system = !strcmp(r, "system") || !strcmp(r, "developer");
        if (!is_user && !is_system && strcmp(r, "assistant"))
            return fail(err, "messages[%d].role must be system, user or assistant, got '%.40s'",
                        index, r);
        char *text = message_content(msg, index, err);
        char name[48];
        snprintf(name, sizeof name, "messages[%d].content", index);
        bool ok = text && check_text(name, text, limits->max_prompt_chars, err) &&
                  (is_system || add_message(out, is_user, text, index, err));
        free(text);
        if (!ok)
            return err->message[0] ? false : fail(err, "out of memory");
        index++;
    }
    if (out->n_turns % 2 == 0)
        return fail(err, "the last non-system message must be from the user");
    return true;
}

static bool parse_openai_object(const cJSON *obj, const zq_request_limits *limits,
                                zq_gen_request *out, zq_param_error *err)
{
    const char *model = NULL;
    long long n = 1;
    const char *max_name = cJSON_GetObjectItemCaseSensitive(obj, "max_completion_tokens")
                               ? "max_completion_tokens"
                               : "max_tokens";
    if (!get_string(obj, "model", &model, err) || !get_int(obj, "n", 1, 1, &n, err) ||
        !parse_sampling(obj, max_name, limits, out, err))
        return false;
    const cJSON *options = cJSON_GetObjectItemCaseSensitive(obj, "stream_options");
    if (options && !cJSON_IsNull(options) && !cJSON_IsObject(options))
        return fail(err, "stream_options must be an object");
    if (options && !get_bool(options, "include_usage", &out->include_usage, err))
        return false;
    if (model && !(out->model = strdup(model)))
        return fail(err, "out of memory");
    return parse_messages(cJSON_GetObjectItemCaseSensitive(obj, "messages"), limits, out, err);
}

bool zq_parse_openai_body(const char *body, size_t len, const zq_request_limits *limits,
                          zq_gen_request *out, zq_param_error *err)
{
    memset(out, 0, sizeof *out);
    err->message[0] = '\0';
    cJSON *root = parse_json_object(body, len, err);
    bool ok = root && parse_openai_object(root, limits, out, err);
    cJSON_Delete(root);
    if (!ok)
        zq_gen_request_free(out);
    return ok;
}
