/*
 * redis.c - the hiredis connection of redis.h. hiredis's synchronous context is not
 * thread-safe, so every command runs under the mutex; loopback round trips are short.
 */
#include "redis.h"

#include "log.h"

#include <hiredis/hiredis.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REDIS_TIMEOUT_MS 2000

struct zq_redis {
    pthread_mutex_t lock;
    redisContext *ctx; /* NULL after a failure until the next reconnect */
    char host[128];
    int port;
    int db;
    bool failing;        /* the last command failed; repeats are counted, not logged */
    unsigned long fails; /* failed commands since the last success */
};

/* Splits redis://HOST[:PORT][/DB]; IPv6 hosts go in brackets. */
static bool parse_url(const char *url, zq_redis *r, char *err, size_t err_cap)
{
    const char *prefix = "redis://";
    if (strncmp(url, prefix, strlen(prefix)) != 0) {
        snprintf(err, err_cap, "invalid Redis URL '%s': expected redis://HOST[:PORT][/DB]",
                 url);
        return false;
    }
    const char *p = url + strlen(prefix);
    const char *host_end;
    if (*p == '[') {
        host_end = strchr(p, ']');
        if (!host_end) {
            snprintf(err, err_cap, "invalid Redis URL '%s': unclosed '['", url);
            return false;
        }
        p++;
    } else {
        host_end = p + strcspn(p, ":/");
    }
    size_t host_len = (size_t)(host_end - p);
    if (host_len == 0 || host_len >= sizeof r->host) {
        snprintf(err, err_cap, "invalid Redis URL '%s': missing or overlong host", url);
        return false;
    }
    memcpy(r->host, p, host_len);
    r->host[host_len] = '\0';
    p = host_end + (*host_end == ']');

    r->port = 6379;
    r->db = 0;
    char *end = NULL;
    if (*p == ':') {
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535) {
            snprintf(err, err_cap, "invalid Redis URL '%s': port must be 1-65535", url);
            return false;
        }
        r->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 1000000) {
            snprintf(err, err_cap, "invalid Redis URL '%s': database must be a number", url);
            return false;
        }
        r->db = (int)db;
        p = end;
    }
    if (*p && strcmp(p, "/") != 0) {
        snprintf(err, err_cap, "invalid Redis URL '%s': unexpected '%s'", url, p);
        return false;
    }
    return true;
}

/* Logs the first failure of a run of failures; the run's length is logged on recovery. */
static void report_failure(zq_redis *r, const char *what, const char *detail)
{
    r->fails++;
    if (r->failing)
        return;
    r->failing = true;
    ZQ_SRV_LOG_ERROR("redis %s:%d: %s: %s", r->host, r->port, what, detail);
}

static void report_success(zq_redis *r)
{
    if (r->failing)
        ZQ_SRV_LOG_INFO("redis %s:%d: working again after %lu failed commands", r->host,
                        r->port, r->fails);
    r->failing = false;
    r->fails = 0;
}

static void set_error(zq_redis *r, const char *what)
{
    report_failure(r, what, r->ctx && r->ctx->err ? r->ctx->errstr : strerror(errno));
}

static void drop_connection(zq_redis *r)
{
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
}

/* Opens the connection and selects the database; the caller holds the lock. */
static bool reconnect(zq_redis *r)
{
    drop_connection(r);
    struct timeval timeout = {REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000};
    r->ctx = redisConnectWithTimeout(r->host, r->port, timeout);
    if (!r->ctx || r->ctx->err) {
        set_error(r, "connect failed");
        drop_connection(r);
        return false;
    }
    redisSetTimeout(r->ctx, timeout);
    if (r->db == 0)
        return true;
    redisReply *reply = redisCommand(r->ctx, "SELECT %d", r->db);
    bool ok = reply && reply->type == REDIS_REPLY_STATUS;
    if (!ok)
        set_error(r, "SELECT failed");
    if (reply)
        freeReplyObject(reply);
    if (!ok)
        drop_connection(r);
    return ok;
}

zq_redis *zq_redis_connect(const char *url, char *err, size_t err_cap)
{
    zq_redis *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    if (!parse_url(url, r, err, err_cap)) {
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    if (!reconnect(r)) {
        snprintf(err, err_cap, "cannot connect to Redis at %s:%d", r->host, r->port);
        zq_redis_free(r);
        return NULL;
    }
    r->failing = false;
    r->fails = 0;
    return r;
}

void zq_redis_free(zq_redis *r)
{
    if (!r)
        return;
    drop_connection(r);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Runs one command given as argv, retrying once on a fresh connection when the first
 * attempt hits a connection error. The caller holds the lock and frees the reply. */
static redisReply *run_command(zq_redis *r, int argc, const char **argv, const size_t *lens)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!r->ctx && !reconnect(r))
            return NULL;
        redisReply *reply = redisCommandArgv(r->ctx, argc, argv, lens);
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            report_failure(r, argv[0], reply->str);
            freeReplyObject(reply);
            return NULL;
        }
        if (reply) {
            report_success(r);
            return reply;
        }
        set_error(r, argv[0]);
        drop_connection(r);
    }
    return NULL;
}

bool zq_redis_get(zq_redis *r, const char *key, char **value)
{
    const char *argv[] = {"GET", key};
    const size_t lens[] = {3, strlen(key)};
    *value = NULL;
    pthread_mutex_lock(&r->lock);
    redisReply *reply = run_command(r, 2, argv, lens);
    bool ok = reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_NIL);
    if (reply && reply->type == REDIS_REPLY_STRING) {
        *value = malloc(reply->len + 1);
        if (*value) {
            memcpy(*value, reply->str, reply->len);
            (*value)[reply->len] = '\0';
        }
        ok = *value != NULL;
    }
    pthread_mutex_unlock(&r->lock);
    if (reply)
        freeReplyObject(reply);
    return ok;
}

bool zq_redis_set(zq_redis *r, const char *key, const char *value, long ttl_seconds)
{
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%ld", ttl_seconds);
    const char *argv[] = {"SET", key, value, "EX", ttl};
    const size_t lens[] = {3, strlen(key), strlen(value), 2, strlen(ttl)};
    pthread_mutex_lock(&r->lock);
    redisReply *reply = run_command(r, ttl_seconds > 0 ? 5 : 3, argv, lens);
    pthread_mutex_unlock(&r->lock);
    if (reply)
        freeReplyObject(reply);
    return reply != NULL;
}

bool zq_redis_del(zq_redis *r, const char *key)
{
    const char *argv[] = {"DEL", key};
    const size_t lens[] = {3, strlen(key)};
    pthread_mutex_lock(&r->lock);
    redisReply *reply = run_command(r, 2, argv, lens);
    pthread_mutex_unlock(&r->lock);
    if (reply)
        freeReplyObject(reply);
    return reply != NULL;
}
