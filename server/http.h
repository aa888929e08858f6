/*
 * http.h - what the route handlers share: the server state, the per-request record, and
 * the response helpers over libmicrohttpd. The daemon runs one thread per connection, so a
 * handler may block while its request is generated.
 */
#ifndef ZQ_SERVER_HTTP_H
#define ZQ_SERVER_HTTP_H

#include "cache.h"
#include "metrics.h"
#include "sched.h"
#include "server.h"
#include "session.h"
#include "wordfilter.h"

#include <microhttpd.h>

#include <stdatomic.h>
#include <stdbool.h>

typedef struct {
    zq_serve_config cfg;
    char model_id[128];
    zq_model *model; /* NULL until loaded */
    int n_ctx;
    long created; /* Unix time the model finished loading */
    zq_sched *sched;
    zq_sessions *sessions;
    zq_cache *cache; /* NULL when caching is off */
    zq_redis *redis; /* NULL without --cache redis://... */
    zq_word_filter *filter;
    zq_metrics *metrics;
    struct MHD_Daemon *daemon;
    atomic_bool ready;    /* the model is loaded and the scheduler runs */
    atomic_bool draining; /* shutting down: new requests get 503 */
    atomic_int in_flight; /* requests between arrival and their last byte */
} zq_server;

typedef struct zq_http_req zq_http_req;
typedef enum MHD_Result (*zq_route_fn)(zq_server *srv, zq_http_req *req);

struct zq_http_req {
    zq_server *srv;
    struct MHD_Connection *conn;
    zq_endpoint endpoint;
    zq_route_fn handler;
    double t_start; /* monotonic seconds */
    char method[8];
    char path[96]; /* truncated copy for the access log */
    zq_buf body;
    bool body_too_large;
    bool responded; /* a response was queued */
    int status;
    int tokens;        /* generated tokens, for the access log */
    bool cache_hit;
    char *log_prompt; /* the prompt as a JSON string, only with --log-prompts */
};

/* Starts the daemon on cfg.host:cfg.port; writes the bound port to *port. Returns false
 * (logged) when it cannot listen. */
bool zq_http_start(zq_server *srv, int *port);

/* Queues a response that takes ownership of body (malloc'd, may be NULL when len is 0). */
enum MHD_Result zq_http_send(zq_http_req *req, int status, const char *content_type, char *body,
                             size_t len);

/* Queues a JSON response and deletes the object. */
struct cJSON;
enum MHD_Result zq_http_send_json(zq_http_req *req, int status, struct cJSON *object);

/* Queues {"error": {"message", "type", "code"}} with the given status. */
enum MHD_Result zq_http_send_error(zq_http_req *req, int status, const char *type,
                                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Returns whether the client closed its end of the connection. */
bool zq_http_client_gone(const zq_http_req *req);

/* Records the prompt for the access log when --log-prompts is on. */
void zq_http_log_prompt(zq_http_req *req, const char *prompt);

/* Route handlers. */
enum MHD_Result zq_route_chat(zq_server *srv, zq_http_req *req);
enum MHD_Result zq_route_chat_reset(zq_server *srv, zq_http_req *req);
enum MHD_Result zq_route_chat_history(zq_server *srv, zq_http_req *req);
enum MHD_Result zq_route_completions(zq_server *srv, zq_http_req *req);
enum MHD_Result zq_route_models(zq_server *srv, zq_http_req *req);
enum MHD_Result zq_route_health(zq_server *srv, zq_http_req *req);
enum MHD_Result zq_route_metrics(zq_server *srv, zq_http_req *req);

#endif /* ZQ_SERVER_HTTP_H */
