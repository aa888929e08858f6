/*
 * http.c - the libmicrohttpd daemon: routing, the checks every request passes (method,
 * shutdown, API key, readiness, body size), response helpers and the access log.
 *
 * libmicrohttpd calls the access handler first with the headers (*con_cls still NULL),
 * then once per piece of the body, then once with *upload_data_size == 0. Errors that the
 * headers decide get their response at the first call, so an oversized or unauthorised
 * body is never read.
 */
#include "http.h"

#include "log.h"

#include <cjson/cJSON.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    const char *path;
    zq_endpoint endpoint;
    const char *method; /* GET routes also accept HEAD */
    zq_route_fn handler;
    bool needs_model;
    bool public_route; /* served without the API key */
} route;

static const route routes[] = {
    {"/chat", ZQ_EP_CHAT, "POST", zq_route_chat, true, false},
    {"/chat/reset", ZQ_EP_CHAT_RESET, "POST", zq_route_chat_reset, false, false},
    {"/chat/history", ZQ_EP_CHAT_HISTORY, "GET", zq_route_chat_history, false, false},
    {"/v1/chat/completions", ZQ_EP_COMPLETIONS, "POST", zq_route_completions, true, false},
    {"/v1/models", ZQ_EP_MODELS, "GET", zq_route_models, true, false},
    {"/health", ZQ_EP_HEALTH, "GET", zq_route_health, false, true},
    {"/metrics", ZQ_EP_METRICS, "GET", zq_route_metrics, false, false},
};

/* ---- responses -------------------------------------------------------------------------- */

enum MHD_Result zq_http_send(zq_http_req *req, int status, const char *content_type, char *body,
                             size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body ? body : "", body ? MHD_RESPMEM_MUST_FREE
                                                                    : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    if (status == 405) {
        for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
            if (routes[i].endpoint == req->endpoint)
                MHD_add_response_header(resp, "Allow", !strcmp(routes[i].method, "GET")
                                                           ? "GET, HEAD"
                                                           : routes[i].method);
    }
    if (status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    if (status == 503)
        MHD_add_response_header(resp, "Retry-After", "1");
    if (atomic_load(&req->srv->draining))
        MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(req->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    req->status = status;
    req->responded = true;
    return ret;
}

enum MHD_Result zq_http_send_json(zq_http_req *req, int status, cJSON *object)
{
    char *text = object ? cJSON_PrintUnformatted(object) : NULL;
    cJSON_Delete(object);
    if (!text)
        return zq_http_send(req, 500, "application/json",
                            strdup("{\"error\":{\"message\":\"out of memory\","
                                   "\"type\":\"server_error\"}}"),
                            60);
    size_t len = strlen(text);
    return zq_http_send(req, status, "application/json", text, len);
}

enum MHD_Result zq_http_send_error(zq_http_req *req, int status, const char *type,
                                   const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);

    cJSON *root = cJSON_CreateObject();
    cJSON *error = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(error, "message", message);
    cJSON_AddStringToObject(error, "type", type);
    cJSON_AddNumberToObject(error, "code", status);
    return zq_http_send_json(req, status, root);
}

/* NOTE: a client that half-closes its sending side after the request (shutdown(SHUT_WR))
 * counts as gone; HTTP clients do not do that while they wait for a response. */
bool zq_http_client_gone(const zq_http_req *req)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!info)
        return false;
    struct pollfd p = {.fd = info->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

void zq_http_log_prompt(zq_http_req *req, const char *prompt)
{
    if (!req->srv->cfg.log_prompts || req->log_prompt)
        return;
    cJSON *s = cJSON_CreateString(prompt);
    req->log_prompt = s ? cJSON_PrintUnformatted(s) : NULL;
    cJSON_Delete(s);
}

/* ---- the checks before the body --------------------------------------------------------- */

/* Compares in time that depends only on the expected key's length. */
static bool secret_equal(const char *given, const char *expected)
{
    const size_t n = strlen(given), m = strlen(expected);
    unsigned diff = n != m;
    for (size_t i = 0; i < m; i++)
        diff |= (unsigned char)expected[i] ^ (unsigned char)(i < n ? given[i] : 0);
    return diff == 0;
}

static bool authorized(const zq_server *srv, struct MHD_Connection *conn)
{
    if (!srv->cfg.api_key)
        return true;
    const char *header = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return false;
    const char *token = header + 7;
    while (*token == ' ')
        token++;
    return secret_equal(token, srv->cfg.api_key);
}

static bool body_too_large(const zq_server *srv, struct MHD_Connection *conn)
{
    const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (!length)
        return false;
    char *end = NULL;
    unsigned long long n = strtoull(length, &end, 10);
    return end != length && n > srv->cfg.max_body;
}

static const route *find_route(const char *url)
{
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        if (!strcmp(url, routes[i].path))
            return &routes[i];
    return NULL;
}

/* Runs the checks that the headers decide; returns MHD_YES with nothing queued when the
 * request may go on to its body. */
static enum MHD_Result begin_request(zq_server *srv, zq_http_req *req, const route *r)
{
    if (!r)
        return zq_http_send_error(req, 404, "not_found_error", "no endpoint at %s", req->path);
    const bool is_get = !strcmp(r->method, "GET");
    if (strcmp(req->method, r->method) && !(is_get && !strcmp(req->method, "HEAD")))
        return zq_http_send_error(req, 405, "invalid_request_error", "%s needs %s, not %s",
                                  r->path, r->method, req->method);
    if (atomic_load(&srv->draining) && r->endpoint != ZQ_EP_HEALTH)
        return zq_http_send_error(req, 503, "unavailable_error", "the server is shutting down");
    if (!r->public_route && !authorized(srv, req->conn))
        return zq_http_send_error(req, 401, "authentication_error",
                                  "missing or invalid API key: send Authorization: Bearer KEY");
    if (r->needs_model && !atomic_load(&srv->ready))
        return zq_http_send_error(req, 503, "unavailable_error", "the model is still loading");
    if (body_too_large(srv, req->conn))
        return zq_http_send_error(req, 413, "invalid_request_error",
                                  "the request body is larger than %zu bytes",
                                  srv->cfg.max_body);
    req->handler = r->handler;
    return MHD_YES;
}

static zq_http_req *new_request(zq_server *srv, struct MHD_Connection *conn, const char *url,
                                const char *method)
{
    zq_http_req *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->srv = srv;
    req->conn = conn;
    req->t_start = zq_now();
    snprintf(req->method, sizeof req->method, "%s", method);
    snprintf(req->path, sizeof req->path, "%s", url);
    const route *r = find_route(url);
    req->endpoint = r ? r->endpoint : ZQ_EP_OTHER;
    atomic_fetch_add(&srv->in_flight, 1);
    return req;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    zq_server *srv = cls;
    zq_http_req *req = *con_cls;
    if (!req) {
        req = new_request(srv, conn, url, method);
        if (!req)
            return MHD_NO;
        *con_cls = req;
        return begin_request(srv, req, find_route(url));
    }
    if (req->responded) {
        *upload_data_size = 0; /* discard the rest of a rejected body */
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (req->body.len + *upload_data_size > srv->cfg.max_body)
            req->body_too_large = true;
        else
            zq_buf_append(&req->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->body_too_large)
        return zq_http_send_error(req, 413, "invalid_request_error",
                                  "the request body is larger than %zu bytes",
                                  srv->cfg.max_body);
    if (req->body.failed)
        return zq_http_send_error(req, 500, "server_error", "out of memory for the body");
    return req->handler(srv, req);
}

/* ---- completion: metrics and the access log --------------------------------------------- */

static void client_address(struct MHD_Connection *conn, char *out, size_t cap)
{
    snprintf(out, cap, "-");
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!info || !info->client_addr)
        return;
    const struct sockaddr *sa = info->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
}

/* Returns the status the client received. libmicrohttpd sends its own response to some
 * requests after the access handler has seen their headers (a 400 for a malformed chunked
 * body), so its queued status counts when no handler queued one. */
static int final_status(const zq_http_req *req, struct MHD_Connection *conn)
{
    if (req->status)
        return req->status;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);
    if (info && info->http_status)
        return (int)info->http_status;
    return 499; /* nginx's "client closed request" */
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    zq_server *srv = cls;
    zq_http_req *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    const double seconds = zq_now() - req->t_start;
    const bool aborted = code != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    const int status = final_status(req, conn);
    zq_metrics_request(srv->metrics, req->endpoint, status, seconds);

    if (srv->cfg.access_log) {
        char addr[64];
        client_address(conn, addr, sizeof addr);
        char line[1024];
        snprintf(line, sizeof line, "zq serve: access: %s \"%s %s\" %d %.1f ms tokens=%d%s%s%s%s\n",
                 addr, req->method, req->path, status, seconds * 1e3, req->tokens,
                 req->cache_hit ? " cache=hit" : "", aborted ? " aborted" : "",
                 req->log_prompt ? " prompt=" : "", req->log_prompt ? req->log_prompt : "");
        fputs(line, stderr);
    }
    zq_buf_free(&req->body);
    free(req->log_prompt);
    free(req);
    atomic_fetch_sub(&srv->in_flight, 1);
}

static void log_mhd(void *cls, const char *fmt, va_list ap)
{
    char message[512];
    vsnprintf(message, sizeof message, fmt, ap);
    size_t n = strlen(message);
    while (n > 0 && message[n - 1] == '\n')
        message[--n] = '\0';
    ZQ_SRV_LOG_WARN("libmicrohttpd: %s", message);
}

/* ---- start ------------------------------------------------------------------------------ */

bool zq_http_start(zq_server *srv, int *port)
{
    char service[16];
    snprintf(service, sizeof service, "%d", srv->cfg.port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_PASSIVE};
    struct addrinfo *addr = NULL;
    int rc = getaddrinfo(srv->cfg.host, service, &hints, &addr);
    if (rc != 0) {
        ZQ_SRV_LOG_ERROR("invalid --host '%s': %s (expected a numeric IPv4 or IPv6 address)",
                         srv->cfg.host, gai_strerror(rc));
        return false;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (addr->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The logger goes first so that libmicrohttpd reports option errors through it. */
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)srv->cfg.port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER,
        log_mhd, srv, MHD_OPTION_SOCK_ADDR, addr->ai_addr, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv, MHD_OPTION_CONNECTION_LIMIT, (unsigned)srv->cfg.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
    freeaddrinfo(addr);
    if (!srv->daemon) {
        ZQ_SRV_LOG_ERROR("cannot listen on %s port %d (in use, or not an address of this host)",
                         srv->cfg.host, srv->cfg.port);
        return false;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    *port = info ? info->port : srv->cfg.port;
    return true;
}
