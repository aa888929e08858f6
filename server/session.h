/*
 * session.h - chat histories by session id, held in this process (an LRU map with a
 * time-to-live) or, when a Redis connection is given, in Redis as JSON so that every server
 * process sharing that Redis can continue any conversation. Thread-safe.
 */
#ifndef ZQ_SERVER_SESSION_H
#define ZQ_SERVER_SESSION_H

#include "redis.h"

#include <stdbool.h>
#include <stddef.h>

#define ZQ_SESSION_ID_MAX 64 /* characters; ids are [A-Za-z0-9_-] */

/* The turns of a conversation, oldest first: user, reply, user, reply, ... (even count). */
typedef struct {
    char **turns;
    int n_turns;
} zq_history;

void zq_history_free(zq_history *history);

typedef struct zq_sessions zq_sessions;

/* Creates a store that keeps the last max_exchanges exchanges of each session and deletes a
 * session ttl_seconds after its last use. In process it keeps at most max_sessions and
 * evicts the least recently used. redis may be NULL; the store does not own it. */
zq_sessions *zq_sessions_create(int max_exchanges, long ttl_seconds, size_t max_sessions,
                                zq_redis *redis);
void zq_sessions_free(zq_sessions *sessions);

/* Replaces the clock (monotonic seconds) used for expiry, for tests. */
void zq_sessions_set_clock(zq_sessions *sessions, double (*now)(void));

/* Copies the history of id into *out (empty when the session is unknown or expired, and
 * when its Redis value is not a history, which is logged). Returns false when the store
 * failed (Redis unreachable, out of memory). */
bool zq_sessions_load(zq_sessions *sessions, const char *id, zq_history *out);

/* Drops the oldest n_drop exchanges of id's history, because they no longer fit the
 * context. Then appends one exchange and keeps at most max_exchanges. Creates the session if
 * needed, and returns false when the store failed. */
bool zq_sessions_append(zq_sessions *sessions, const char *id, int n_drop, const char *user,
                        const char *reply);

/* Forgets a session. Returns false when the store failed. */
bool zq_sessions_reset(zq_sessions *sessions, const char *id);

/* Returns the sessions held in this process, or -1 when they live in Redis. */
long zq_sessions_count(zq_sessions *sessions);

/* Returns whether id is 1-64 characters of [A-Za-z0-9_-]. */
bool zq_session_id_valid(const char *id);

/* Writes a new random id of 32 hex digits (128 bits from getrandom) and a NUL. */
bool zq_session_id_generate(char out[33]);

/* Encodes a history as {"exchanges": [{"user": ..., "assistant": ...}, ...]} (malloc'd). */
char *zq_history_to_json(const zq_history *history);

/* Parses the encoding of zq_history_to_json. Returns false on a malformed document and
 * writes the reason to err. */
bool zq_history_from_json(const char *json, zq_history *out, char *err, size_t err_cap);

#endif /* ZQ_SERVER_SESSION_H */
