/*
 * params.h - parsing and validation of generation requests: the JSON body or query string
 * of POST /chat and the JSON body of POST /v1/chat/completions. Every rejection names the
 * field, the expected type or range, and becomes a 400 response.
 */
#ifndef ZQ_SERVER_PARAMS_H
#define ZQ_SERVER_PARAMS_H

#include "../runtime/zq.h"

#include <stdbool.h>
#include <stddef.h>

/* Limits and defaults from the command line. */
typedef struct {
    int max_prompt_chars;       /* per message, in code points */
    int max_new_tokens_cap;     /* upper bound for max_new_tokens / max_tokens */
    int default_max_new_tokens; /* used when a request does not set it */
    zq_sampler_params sampling; /* defaults for fields a request does not set */
    bool fixed_seed; /* requests without a seed use sampling.seed, else a random one */
} zq_request_limits;

/* A parsed generation request of either API. */
typedef struct {
    char **turns; /* user, assistant, ..., user (odd count); /chat has only the prompt */
    int n_turns;
    char *session_id; /* /chat only; NULL when not given */
    char *model;      /* OpenAI only; NULL when not given */
    bool reset;       /* /chat: clear the session first */
    bool stream;
    bool include_usage; /* OpenAI stream_options.include_usage */
    bool ignore_eos;    /* extension: generate until max tokens, ignoring [SEP] */
    bool seed_given;
    bool max_new_tokens_given;
    int max_new_tokens;
    zq_sampler_params sampling;
} zq_gen_request;

void zq_gen_request_free(zq_gen_request *request);

/* Whether a request's reply depends only on its inputs: greedy, or seeded by the client. */
bool zq_gen_request_deterministic(const zq_gen_request *request);

/* The reason a request was rejected; the caller sends it with status 400. */
typedef struct {
    char message[300];
} zq_param_error;

/* Parses a /chat body (a JSON object). A prompt is required unless reset is true. */
bool zq_parse_chat_body(const char *body, size_t len, const zq_request_limits *limits,
                        zq_gen_request *out, zq_param_error *err);

/* Parses /chat query arguments, given by a lookup function that returns the URL-decoded
 * value of a name, or NULL. It also sets *len to the value's length in bytes, which exceeds
 * strlen when the value contains a decoded %00. Numbers and booleans ("true", "false", "1",
 * "0") are parsed from their text and checked like the JSON fields. */
typedef const char *(*zq_query_lookup)(void *user, const char *name, size_t *len);
bool zq_parse_chat_query(zq_query_lookup lookup, void *user, const zq_request_limits *limits,
                         zq_gen_request *out, zq_param_error *err);

/* Parses the body of /chat/reset or /chat/history, a JSON object whose session_id names the
 * session. Sets *session_id to a malloc'd copy, or to NULL when the field is absent. */
bool zq_parse_session_body(const char *body, size_t len, char **session_id,
                           zq_param_error *err);

/* Parses an OpenAI chat completions body. System (and developer) messages are skipped,
 * consecutive messages of one role are joined with a newline, and the remaining turns must
 * start and end with a user message. */
bool zq_parse_openai_body(const char *body, size_t len, const zq_request_limits *limits,
                          zq_gen_request *out, zq_param_error *err);

/* Returns whether s[0..len) is valid UTF-8 (no overlong forms, surrogates or values above
 * U+10FFFF). */
bool zq_utf8_valid(const char *s, size_t len);

/* Returns the number of code points in a valid UTF-8 string. */
size_t zq_utf8_length(const char *s);

#endif /* ZQ_SERVER_PARAMS_H */
