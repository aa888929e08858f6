/*
 * cache.h - the response cache for deterministic requests (temperature 0 or a fixed seed):
 * an LRU map in this process, or Redis shared by several processes. Thread-safe.
 */
#ifndef ZQ_SERVER_CACHE_H
#define ZQ_SERVER_CACHE_H

#include "redis.h"
#include "sched.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZQ_CACHE_KEY_LEN 32 /* hex digits of a 128-bit hash */

typedef struct {
    char *text;
    int n_tokens;
    zq_finish finish; /* ZQ_FINISH_STOP or ZQ_FINISH_LENGTH */
    bool output_masked;
} zq_cached_reply;

void zq_cached_reply_free(zq_cached_reply *reply);

/* Everything that changes a reply. */
typedef struct {
    const char *model_id;
    const int32_t *prompt; /* the full prompt ids, history included */
    int n_prompt;
    const zq_sampler_params *sampling;
    int max_new_tokens;
    bool ignore_eos;
    uint64_t filter_fingerprint; /* 0 without an output filter */
} zq_cache_key_input;

/* Writes the key of a request: FNV-1a 128 over its fields, as 32 hex digits and a NUL.
 * With temperature 0 the seed is left out, because greedy decoding never draws from it. */
void zq_cache_key(const zq_cache_key_input *input, char out[ZQ_CACHE_KEY_LEN + 1]);

typedef struct zq_cache zq_cache;

/* Creates a cache of at most capacity replies in this process, or (when redis is not NULL)
 * one that stores replies in Redis with the given time-to-live (0 = none). The cache does
 * not own redis. Returns NULL when out of memory. */
zq_cache *zq_cache_create(size_t capacity, zq_redis *redis, long ttl_seconds);
void zq_cache_free(zq_cache *cache);

/* Looks key up; on a hit fills *out (free it with zq_cached_reply_free) and returns true.
 * A Redis failure counts as a miss. */
bool zq_cache_get(zq_cache *cache, const char *key, zq_cached_reply *out);

/* Stores a reply under key; failures are logged by the Redis layer and otherwise ignored. */
void zq_cache_put(zq_cache *cache, const char *key, const zq_cached_reply *reply);

#endif /* ZQ_SERVER_CACHE_H */
