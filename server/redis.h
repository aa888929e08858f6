/*
 * redis.h - a thread-safe wrapper over one synchronous hiredis connection, shared by the
 * session store and the response cache. Each call holds a mutex for one round trip and
 * reconnects once when the connection was lost. Failures are logged (the first of a run, and
 * the count when it ends), so callers only decide how to degrade.
 */
#ifndef ZQ_SERVER_REDIS_H
#define ZQ_SERVER_REDIS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct zq_redis zq_redis;

/* Connects to a URL of the form redis://HOST[:PORT][/DB] (port 6379 and db 0 by default).
 * On failure returns NULL and writes a message to err. */
zq_redis *zq_redis_connect(const char *url, char *err, size_t err_cap);
void zq_redis_free(zq_redis *redis);

/* Fetches key. Returns false on a connection or protocol error. Otherwise returns true and
 * sets *value to a malloc'd copy of the string, or to NULL when the key does not exist. */
bool zq_redis_get(zq_redis *redis, const char *key, char **value);

/* Stores value under key with an expiry in seconds (0 = none). Returns false on error. */
bool zq_redis_set(zq_redis *redis, const char *key, const char *value, long ttl_seconds);

/* Deletes key. Returns false on error (a missing key is not an error). */
bool zq_redis_del(zq_redis *redis, const char *key);

#endif /* ZQ_SERVER_REDIS_H */
