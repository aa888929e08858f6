/*
 * server.h - `zq serve`: the HTTP chat server. The configuration comes from the command
 * line (cli/cmd_serve.c); zq_serve_run runs until SIGINT or SIGTERM.
 */
#ifndef ZQ_SERVER_H
#define ZQ_SERVER_H

#include "params.h"

#include <stdbool.h>
#include <stddef.h>

/* The smallest context a slot may have: [CLS], one prompt token, [SEP] and one reply
 * token. */
#define ZQ_SERVE_MIN_CTX 4

typedef struct {
    const char *model_path;
    const char *model_name; /* id in responses; NULL = file name without ".zq" */
    const char *host;       /* bind address, numeric IPv4 or IPv6 */
    int port;               /* 0 = any free port (logged at startup) */
    int parallel;           /* decoding slots */
    int queue;              /* requests that may wait for a busy slot */
    int threads;            /* threads per forward pass; 0 = physical cores */
    int ctx_size;           /* KV positions per slot, >= ZQ_SERVE_MIN_CTX; 0 = the model's */
    zq_kv_type kv_type;     /* element type of the KV caches; 0 = auto */
    int history;            /* exchanges kept per session */
    long session_ttl;       /* seconds after last use */
    long max_sessions;      /* in-process sessions before LRU eviction */
    long cache_size;        /* in-process cached replies; 0 = no cache, also with Redis */
    const char *cache_url;  /* redis://...: cache and sessions in Redis */
    long cache_ttl;         /* seconds a Redis cache entry lives; 0 = no expiry */
    const char *filter_words;
    const char *filter_reply;
    const char *api_key; /* NULL = no authentication */
    size_t max_body;     /* bytes */
    int max_connections;
    zq_request_limits limits;
    bool log_prompts;
    bool access_log; /* one line per request on stderr */
    double shutdown_timeout; /* seconds to finish in-flight requests after SIGTERM */
    int step_delay_ms;       /* test hook: sleep after each decoding step */
} zq_serve_config;

/* Fills the defaults that docs/SERVING.md lists. */
void zq_serve_config_default(zq_serve_config *config);

/* Starts listening, loads the model, serves until SIGINT or SIGTERM, then finishes
 * in-flight requests and returns 0. Returns 1 when startup fails, after logging why. */
int zq_serve_run(const zq_serve_config *config);

#endif /* ZQ_SERVER_H */
