/*
 * server.c - the life of `zq serve`. It listens first, so that /health reports "loading",
 * then loads the model and starts the scheduler. On SIGINT or SIGTERM it shuts down
 * gracefully: it stops accepting, lets queued and running requests finish until the
 * deadline, aborts the rest, and returns 0.
 *
 * The signals are blocked in every thread and taken with sigwait in the main thread, so no
 * code runs in a signal handler.
 */
#include "http.h"

#include "log.h"

#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void zq_serve_config_default(zq_serve_config *c)
{
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8080;
    c->parallel = 8;
    c->queue = 64;
    c->history = 3;
    c->session_ttl = 1800;
    c->max_sessions = 10000;
    c->cache_size = 1024;
    c->cache_ttl = 86400;
    c->filter_reply = "抱歉，这个问题我无法回答。";
    c->max_body = 1 << 20;
    c->max_connections = 256;
    c->limits.max_prompt_chars = 2000;
    c->limits.max_new_tokens_cap = 1024;
    c->limits.default_max_new_tokens = 64;
    zq_sampler_params_default(&c->limits.sampling);
    c->access_log = true;
    c->shutdown_timeout = 10;
}

/* The model id is the file name without its directory and ".zq". */
static void set_model_id(zq_server *srv)
{
    if (srv->cfg.model_name) {
        snprintf(srv->model_id, sizeof srv->model_id, "%s", srv->cfg.model_name);
        return;
    }
    char *copy = strdup(srv->cfg.model_path);
    const char *base = copy ? basename(copy) : "model";
    snprintf(srv->model_id, sizeof srv->model_id, "%s", base);
    free(copy);
    size_t n = strlen(srv->model_id);
    if (n > 3 && !strcmp(srv->model_id + n - 3, ".zq"))
        srv->model_id[n - 3] = '\0';
}

/* Creates the parts that need no model: metrics, Redis, sessions, cache, filter. */
static bool open_stores(zq_server *srv)
{
    const zq_serve_config *cfg = &srv->cfg;
    char err[512];
    srv->metrics = zq_metrics_create();
    if (!srv->metrics)
        return false;
    if (cfg->cache_url) {
        srv->redis = zq_redis_connect(cfg->cache_url, err, sizeof err);
        if (!srv->redis) {
            ZQ_SRV_LOG_ERROR("--cache %s: %s", cfg->cache_url, err);
            return false;
        }
    }
    srv->sessions = zq_sessions_create(cfg->history, cfg->session_ttl,
                                       (size_t)cfg->max_sessions, srv->redis);
    if (cfg->cache_size > 0)
        srv->cache = zq_cache_create((size_t)cfg->cache_size, srv->redis, cfg->cache_ttl);
    if (!srv->sessions || (cfg->cache_size > 0 && !srv->cache)) {
        ZQ_SRV_LOG_ERROR("out of memory for the session store or the cache");
        return false;
    }
    if (cfg->filter_words) {
        srv->filter = zq_word_filter_load(cfg->filter_words, err, sizeof err);
        if (!srv->filter) {
            ZQ_SRV_LOG_ERROR("--filter-words %s: %s", cfg->filter_words, err);
            return false;
        }
    }
    return true;
}

static bool load_model(zq_server *srv)
{
    const zq_load_params lp = {.n_threads = srv->cfg.threads};
    if (zq_model_load(srv->cfg.model_path, &lp, &srv->model) != ZQ_OK) {
        ZQ_SRV_LOG_ERROR("cannot load the model: %s", zq_last_error());
        return false;
    }
    const int model_ctx = zq_model_hparams(srv->model)->n_ctx;
    if (srv->cfg.ctx_size > model_ctx) {
        ZQ_SRV_LOG_ERROR("--ctx-size %d is larger than the model's context of %d tokens",
                         srv->cfg.ctx_size, model_ctx);
        return false;
    }
    if ((srv->cfg.ctx_size ? srv->cfg.ctx_size : model_ctx) < ZQ_SERVE_MIN_CTX) {
        ZQ_SRV_LOG_ERROR("a context of %d tokens is too small: a request needs at least %d",
                         srv->cfg.ctx_size ? srv->cfg.ctx_size : model_ctx, ZQ_SERVE_MIN_CTX);
        return false;
    }
    const zq_sched_params sp = {
        .n_slots = srv->cfg.parallel,
        .queue_cap = srv->cfg.queue,
        .n_threads = srv->cfg.threads,
        .n_ctx = srv->cfg.ctx_size,
        .kv_type = srv->cfg.kv_type,
        .step_delay_ms = srv->cfg.step_delay_ms,
    };
    char err[512];
    srv->sched = zq_sched_create(srv->model, &sp, srv->metrics, err, sizeof err);
    if (!srv->sched) {
        ZQ_SRV_LOG_ERROR("cannot start the scheduler: %s", err);
        return false;
    }
    srv->n_ctx = zq_sched_n_ctx(srv->sched);
    srv->created = (long)time(NULL);
    const zq_kv_type kv = zq_model_kv_type(srv->model, srv->cfg.kv_type);
    ZQ_SRV_LOG_INFO("model %s loaded in %.2f s: %s; %d slot%s of %d tokens, %s KV cache, "
                    "queue %d",
                    srv->model_id, zq_model_load_seconds(srv->model), zq_model_desc(srv->model),
                    srv->cfg.parallel, srv->cfg.parallel == 1 ? "" : "s", srv->n_ctx,
                    zq_kv_type_name(kv), srv->cfg.queue);
    return true;
}

/* Waits until the scheduler is idle and no request is in flight, until the deadline, or
 * until a second signal requests an immediate stop. Returns whether everything finished. */
static bool wait_until_idle(zq_server *srv, double deadline, const sigset_t *signals)
{
    const struct timespec tick = {0, 50 * 1000000L};
    for (;;) {
        const bool sched_idle = zq_sched_drain(srv->sched, 0);
        if (sched_idle && atomic_load(&srv->in_flight) == 0)
            return true;
        if (zq_now() >= deadline)
            return false;
        if (sigtimedwait(signals, NULL, &tick) > 0) {
            ZQ_SRV_LOG_WARN("second signal: stopping without waiting for in-flight requests");
            return false;
        }
    }
}

static void shut_down(zq_server *srv, const sigset_t *signals)
{
    atomic_store(&srv->draining, true);
    const MHD_socket listener = MHD_quiesce_daemon(srv->daemon);
    if (listener != MHD_INVALID_SOCKET)
        close(listener);
    ZQ_SRV_LOG_INFO("shutting down: waiting up to %.1f s for %d in-flight requests",
                    srv->cfg.shutdown_timeout, atomic_load(&srv->in_flight));

    const double deadline = zq_now() + srv->cfg.shutdown_timeout;
    if (!wait_until_idle(srv, deadline, signals)) {
        ZQ_SRV_LOG_WARN("aborting %d requests still in flight", atomic_load(&srv->in_flight));
        /* Failing the remaining jobs wakes their connection threads, which send 503 or
         * end their streams with an error event. The scheduler stays allocated because
         * connection threads may still submit to it (and get ZQ_SUBMIT_CLOSED) until
         * MHD_stop_daemon has joined them. */
        zq_sched_stop(srv->sched);
        wait_until_idle(srv, zq_now() + 1.0, signals);
    }
    MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
}

static void free_server(zq_server *srv)
{
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    zq_sched_free(srv->sched);
    zq_model_free(srv->model);
    zq_cache_free(srv->cache);
    zq_sessions_free(srv->sessions);
    zq_redis_free(srv->redis);
    zq_word_filter_free(srv->filter);
    zq_metrics_free(srv->metrics);
}

static void log_listening(const zq_server *srv, int port)
{
    const bool v6 = strchr(srv->cfg.host, ':') != NULL;
    ZQ_SRV_LOG_INFO("listening on http://%s%s%s:%d", v6 ? "[" : "", srv->cfg.host,
                    v6 ? "]" : "", port);
}

int zq_serve_run(const zq_serve_config *cfg)
{
    static zq_server srv; /* connection threads point at it until MHD_stop_daemon returns */
    memset(&srv, 0, sizeof srv);
    srv.cfg = *cfg;
    set_model_id(&srv);
    zq_srv_log_set_verbose(1);

    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    int port = 0;
    if (!open_stores(&srv) || !zq_http_start(&srv, &port)) {
        free_server(&srv);
        return 1;
    }
    log_listening(&srv, port);
    if (!load_model(&srv)) {
        free_server(&srv);
        return 1;
    }
    atomic_store(&srv.ready, true);

    int sig = 0;
    while (sigwait(&signals, &sig) != 0)
        ;
    ZQ_SRV_LOG_INFO("received %s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    shut_down(&srv, &signals);
    free_server(&srv);
    ZQ_SRV_LOG_INFO("stopped");
    return 0;
}
