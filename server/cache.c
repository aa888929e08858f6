/*
 * cache.c - the response cache of cache.h. Redis entries are "zq:cache:KEY" holding
 * {"text", "tokens", "finish", "masked"} as JSON.
 */
#include "cache.h"

#include "lru.h"

#include <cjson/cJSON.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct zq_cache {
    pthread_mutex_t lock;
    zq_lru *map; /* key -> zq_cached_reply*, when redis is NULL */
    zq_redis *redis;
    long ttl_seconds;
};

typedef unsigned __int128 u128;

typedef struct {
    u128 h;
} fnv128;

static void fnv_init(fnv128 *f)
{
    f->h = ((u128)0x6c62272e07bb0142ULL << 64) | 0x62b821756295c58dULL;
}

static void fnv_bytes(fnv128 *f, const void *data, size_t len)
{
    const u128 prime = ((u128)1 << 88) | 0x13b;
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        f->h ^= p[i];
        f->h *= prime;
    }
}

/* Hashes a length before the bytes, so adjacent fields cannot run into each other. */
static void fnv_field(fnv128 *f, const void *data, size_t len)
{
    const uint64_t n = len;
    fnv_bytes(f, &n, sizeof n);
    fnv_bytes(f, data, len);
}

void zq_cache_key(const zq_cache_key_input *in, char out[ZQ_CACHE_KEY_LEN + 1])
{
    const zq_sampler_params *sp = in->sampling;
    const uint64_t seed = sp->temperature == 0.0f ? 0 : sp->seed;
    const int32_t ints[] = {sp->top_k, sp->repeat_last_n, in->max_new_tokens, in->ignore_eos};
    const float floats[] = {sp->temperature, sp->top_p, sp->repetition_penalty};

    fnv128 f;
    fnv_init(&f);
    fnv_field(&f, "zq-cache-v1", 11);
    fnv_field(&f, in->model_id, strlen(in->model_id));
    fnv_field(&f, in->prompt, (size_t)in->n_prompt * sizeof *in->prompt);
    fnv_field(&f, ints, sizeof ints);
    fnv_field(&f, floats, sizeof floats);
    fnv_field(&f, &seed, sizeof seed);
    fnv_field(&f, &in->filter_fingerprint, sizeof in->filter_fingerprint);

    snprintf(out, ZQ_CACHE_KEY_LEN + 1, "%016llx%016llx", (unsigned long long)(f.h >> 64),
             (unsigned long long)f.h);
}

void zq_cached_reply_free(zq_cached_reply *reply)
{
    if (!reply)
        return;
    free(reply->text);
    reply->text = NULL;
}

static void free_cached_entry(void *value)
{
    zq_cached_reply_free(value);
    free(value);
}

zq_cache *zq_cache_create(size_t capacity, zq_redis *redis, long ttl_seconds)
{
    zq_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->redis = redis;
    c->ttl_seconds = ttl_seconds;
    if (!redis) {
        c->map = zq_lru_create(capacity ? capacity : 1, free_cached_entry);
        if (!c->map) {
            free(c);
            return NULL;
        }
    }
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void zq_cache_free(zq_cache *c)
{
    if (!c)
        return;
    zq_lru_free(c->map);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static bool copy_reply(const zq_cached_reply *src, zq_cached_reply *dst)
{
    *dst = *src;
    dst->text = strdup(src->text ? src->text : "");
    return dst->text != NULL;
}

static bool parse_reply(const char *json, zq_cached_reply *out)
{
    cJSON *root = cJSON_Parse(json);
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text");
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    const cJSON *finish = cJSON_GetObjectItemCaseSensitive(root, "finish");
    const cJSON *masked = cJSON_GetObjectItemCaseSensitive(root, "masked");
    bool ok = cJSON_IsString(text) && cJSON_IsNumber(tokens) && cJSON_IsString(finish);
    if (ok) {
        out->text = strdup(text->valuestring);
        out->n_tokens = tokens->valueint;
        out->finish = strcmp(finish->valuestring, "length") == 0 ? ZQ_FINISH_LENGTH
                                                                  : ZQ_FINISH_STOP;
        out->output_masked = cJSON_IsTrue(masked);
        ok = out->text != NULL;
    }
    cJSON_Delete(root);
    return ok;
}

static char *cache_redis_key(const char *key)
{
    char *k = malloc(strlen(key) + 16);
    if (k)
        sprintf(k, "zq:cache:%s", key);
    return k;
}

bool zq_cache_get(zq_cache *c, const char *key, zq_cached_reply *out)
{
    memset(out, 0, sizeof *out);
    if (c->redis) {
        char *k = cache_redis_key(key), *json = NULL;
        bool hit = k && zq_redis_get(c->redis, k, &json) && json && parse_reply(json, out);
        free(k);
        free(json);
        return hit;
    }
    pthread_mutex_lock(&c->lock);
    const zq_cached_reply *found = zq_lru_get(c->map, key);
    bool hit = found && copy_reply(found, out);
    pthread_mutex_unlock(&c->lock);
    return hit;
}

static void put_redis(zq_cache *c, const char *key, const zq_cached_reply *reply)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "text", reply->text ? reply->text : "");
    cJSON_AddNumberToObject(root, "tokens", reply->n_tokens);
    cJSON_AddStringToObject(root, "finish", zq_finish_reason(reply->finish));
    cJSON_AddBoolToObject(root, "masked", reply->output_masked);
    char *json = cJSON_PrintUnformatted(root);
    char *k = cache_redis_key(key);
    if (json && k)
        zq_redis_set(c->redis, k, json, c->ttl_seconds);
    free(k);
    free(json);
    cJSON_Delete(root);
}

void zq_cache_put(zq_cache *c, const char *key, const zq_cached_reply *reply)
{
    if (c->redis) {
        put_redis(c, key, reply);
        return;
    }
    zq_cached_reply *copy = malloc(sizeof *copy);
    if (!copy)
        return;
    if (!copy_reply(reply, copy)) {
        free(copy);
        return;
    }
    pthread_mutex_lock(&c->lock);
    if (!zq_lru_put(c->map, key, copy, 0))
        free_cached_entry(copy);
    pthread_mutex_unlock(&c->lock);
}
