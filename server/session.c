/*
 * session.c - the session store of session.h. In process, an LRU map stamped with the time
 * of last use gives both limits: the least recently used end is also the oldest, so expiry
 * scans from there and the capacity evicts from there. In Redis, each session is one key
 * "zq:session:ID" whose value is the history as JSON and whose EX is the time-to-live.
 */
#include "session.h"

#include "log.h"
#include "lru.h"

#include <cjson/cJSON.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct zq_sessions {
    pthread_mutex_t lock;
    zq_lru *map; /* id -> zq_history*, used when redis is NULL */
    zq_redis *redis;
    int max_exchanges;
    long ttl_seconds;
    double (*now)(void);
};

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void zq_history_free(zq_history *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->n_turns; i++)
        free(h->turns[i]);
    free(h->turns);
    h->turns = NULL;
    h->n_turns = 0;
}

static void free_history_value(void *value)
{
    zq_history_free(value);
    free(value);
}

zq_sessions *zq_sessions_create(int max_exchanges, long ttl_seconds, size_t max_sessions,
                                zq_redis *redis)
{
    zq_sessions *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->redis = redis;
    s->max_exchanges = max_exchanges;
    s->ttl_seconds = ttl_seconds;
    s->now = monotonic_seconds;
    if (!redis) {
        s->map = zq_lru_create(max_sessions ? max_sessions : 1, free_history_value);
        if (!s->map) {
            free(s);
            return NULL;
        }
    }
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

void zq_sessions_free(zq_sessions *s)
{
    if (!s)
        return;
    zq_lru_free(s->map);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void zq_sessions_set_clock(zq_sessions *s, double (*now)(void))
{
    s->now = now;
}

static bool history_copy(const zq_history *src, zq_history *dst)
{
    dst->n_turns = 0;
    dst->turns = calloc((size_t)src->n_turns + 1, sizeof *dst->turns);
    if (!dst->turns)
        return false;
    for (int i = 0; i < src->n_turns; i++) {
        dst->turns[i] = strdup(src->turns[i]);
        if (!dst->turns[i]) {
            zq_history_free(dst);
            return false;
        }
        dst->n_turns++;
    }
    return true;
}

static void history_drop(zq_history *h, int n_turns)
{
    if (n_turns > h->n_turns)
        n_turns = h->n_turns;
    if (n_turns <= 0)
        return;
    for (int i = 0; i < n_turns; i++)
        free(h->turns[i]);
    memmove(h->turns, h->turns + n_turns, (size_t)(h->n_turns - n_turns) * sizeof *h->turns);
    h->n_turns -= n_turns;
}

/* Appends user and reply, then drops the oldest exchanges beyond max_exchanges. */
static bool history_push(zq_history *h, const char *user, const char *reply, int max_exchanges)
{
    char **turns = realloc(h->turns, ((size_t)h->n_turns + 2) * sizeof *turns);
    if (!turns)
        return false;
    h->turns = turns;
    char *u = strdup(user), *r = strdup(reply);
    if (!u || !r) {
        free(u);
        free(r);
        return false;
    }
    h->turns[h->n_turns++] = u;
    h->turns[h->n_turns++] = r;
    history_drop(h, h->n_turns - 2 * max_exchanges);
    return true;
}

char *zq_history_to_json(const zq_history *h)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(root, "exchanges");
    for (int i = 0; list && i + 1 < h->n_turns; i += 2) {
        cJSON *exchange = cJSON_CreateObject();
        cJSON_AddStringToObject(exchange, "user", h->turns[i]);
        cJSON_AddStringToObject(exchange, "assistant", h->turns[i + 1]);
        cJSON_AddItemToArray(list, exchange);
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return json;
}

/* Checks one stored exchange and appends it; writes the reason to err on failure. */
static bool push_stored_exchange(zq_history *out, const cJSON *exchange, int index, char *err,
                                 size_t err_cap)
{
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(exchange, "user");
    const cJSON *reply = cJSON_GetObjectItemCaseSensitive(exchange, "assistant");
    if (!cJSON_IsString(user) || !cJSON_IsString(reply)) {
        snprintf(err, err_cap, "exchanges[%d] is not {\"user\": string, \"assistant\": string}",
                 index);
        return false;
    }
    if (!history_push(out, user->valuestring, reply->valuestring, 1 << 20)) {
        snprintf(err, err_cap, "out of memory");
        return false;
    }
    return true;
}

bool zq_history_from_json(const char *json, zq_history *out, char *err, size_t err_cap)
{
    out->turns = NULL;
    out->n_turns = 0;
    cJSON *root = cJSON_Parse(json);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "exchanges");
    bool ok = cJSON_IsArray(list);
    if (!root)
        snprintf(err, err_cap, "not valid JSON");
    else if (!ok)
        snprintf(err, err_cap, "no \"exchanges\" array");
    int index = 0;
    const cJSON *exchange;
    cJSON_ArrayForEach(exchange, list)
    {
        ok = ok && push_stored_exchange(out, exchange, index, err, err_cap);
        index++;
    }
    cJSON_Delete(root);
    if (!ok)
        zq_history_free(out);
    return ok;
}

static void session_redis_key(char *key, size_t cap, const char *id)
{
    snprintf(key, cap, "zq:session:%s", id);
}

static bool load_redis(zq_sessions *s, const char *id, zq_history *out)
{
    out->turns = NULL;
    out->n_turns = 0;
    char key[ZQ_SESSION_ID_MAX + 32], *json = NULL;
    session_redis_key(key, sizeof key, id);
    if (!zq_redis_get(s->redis, key, &json))
        return false;
    /* A value that is not a history (written by another program, or damaged) must not make
     * the session unusable: it is logged and read as empty, and the next stored exchange
     * replaces it. */
    char reason[160];
    if (json && !zq_history_from_json(json, out, reason, sizeof reason))
        ZQ_SRV_LOG_WARN("session %s: the value of Redis key %s is not a session history (%s); "
                        "treating the session as empty",
                        id, key, reason);
    free(json);
    return true;
}

bool zq_sessions_load(zq_sessions *s, const char *id, zq_history *out)
{
    out->turns = NULL;
    out->n_turns = 0;
    if (s->redis)
        return load_redis(s, id, out);

    pthread_mutex_lock(&s->lock);
    double now = s->now();
    zq_lru_expire(s->map, now - (double)s->ttl_seconds);
    const zq_history *h = zq_lru_peek(s->map, id);
    bool ok = true;
    if (h) {
        zq_lru_touch(s->map, id, now);
        ok = history_copy(h, out);
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* Read-modify-write on Redis. NOTE: when two processes append to one session at the same
 * moment, the last SET wins and one exchange is lost. A chat client sends one turn at a time. */
static bool append_redis(zq_sessions *s, const char *id, int n_drop, const char *user,
                         const char *reply)
{
    zq_history h;
    if (!load_redis(s, id, &h))
        return false;
    history_drop(&h, 2 * n_drop);
    bool ok = history_push(&h, user, reply, s->max_exchanges);
    char *json = ok ? zq_history_to_json(&h) : NULL;
    char key[ZQ_SESSION_ID_MAX + 32];
    session_redis_key(key, sizeof key, id);
    ok = json && zq_redis_set(s->redis, key, json, s->ttl_seconds);
    free(json);
    zq_history_free(&h);
    return ok;
}

bool zq_sessions_append(zq_sessions *s, const char *id, int n_drop, const char *user,
                        const char *reply)
{
    if (s->redis)
        return append_redis(s, id, n_drop, user, reply);

    pthread_mutex_lock(&s->lock);
    double now = s->now();
    zq_lru_expire(s->map, now - (double)s->ttl_seconds);
    zq_history *h = zq_lru_peek(s->map, id);
    bool ok;
    if (h) {
        history_drop(h, 2 * n_drop);
        ok = history_push(h, user, reply, s->max_exchanges);
        zq_lru_touch(s->map, id, now);
    } else {
        h = calloc(1, sizeof *h);
        ok = h && history_push(h, user, reply, s->max_exchanges) &&
             zq_lru_put(s->map, id, h, now);
        if (!ok && h)
            free_history_value(h);
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

bool zq_sessions_reset(zq_sessions *s, const char *id)
{
    if (s->redis) {
        char key[ZQ_SESSION_ID_MAX + 32];
        session_redis_key(key, sizeof key, id);
        return zq_redis_del(s->redis, key);
    }
    pthread_mutex_lock(&s->lock);
    zq_lru_remove(s->map, id);
    pthread_mutex_unlock(&s->lock);
    return true;
}

long zq_sessions_count(zq_sessions *s)
{
    if (s->redis)
        return -1;
    pthread_mutex_lock(&s->lock);
    zq_lru_expire(s->map, s->now() - (double)s->ttl_seconds);
    long n = (long)zq_lru_count(s->map);
    pthread_mutex_unlock(&s->lock);
    return n;
}

bool zq_session_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > ZQ_SESSION_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok)
            return false;
    }
    return true;
}

bool zq_session_id_generate(char out[33])
{
    unsigned char bytes[16];
    if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes)
        return false;
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
    return true;
}
