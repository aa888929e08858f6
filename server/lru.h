/*
 * lru.h - a string-keyed map that keeps its entries in least-recently-used order, used by
 * the session store and the response cache. Not thread-safe: the owner holds a lock.
 */
#ifndef ZQ_SERVER_LRU_H
#define ZQ_SERVER_LRU_H

#include <stdbool.h>
#include <stddef.h>

typedef struct zq_lru zq_lru;

/* Called when an entry's value is replaced, evicted or removed, and for each entry at free. */
typedef void (*zq_lru_free_fn)(void *value);

/* Creates a map that keeps at most capacity entries (capacity >= 1) and evicts the least
 * recently used entry beyond that. Returns NULL when out of memory. */
zq_lru *zq_lru_create(size_t capacity, zq_lru_free_fn free_value);
void zq_lru_free(zq_lru *lru);

/* Returns the value stored under key and marks it most recently used, or NULL. */
void *zq_lru_get(zq_lru *lru, const char *key);

/* Returns the value stored under key without changing the order, or NULL. */
void *zq_lru_peek(const zq_lru *lru, const char *key);

/* Stores value under key (the key is copied), replacing and freeing an old value, and marks
 * it most recently used. Returns false, with nothing changed and value not freed, when out
 * of memory. */
bool zq_lru_put(zq_lru *lru, const char *key, void *value, double now);

/* Removes key and frees its value; returns whether it was present. */
bool zq_lru_remove(zq_lru *lru, const char *key);

/* Removes entries last used before cutoff, scanning from the least recently used end, and
 * returns the count. Entries are stamped with `now` by zq_lru_put and zq_lru_touch; a map
 * that also uses zq_lru_get (which reorders without a stamp) may keep some stale entries. */
size_t zq_lru_expire(zq_lru *lru, double cutoff);

/* Marks key most recently used at time now; returns whether it was present. */
bool zq_lru_touch(zq_lru *lru, const char *key, double now);

size_t zq_lru_count(const zq_lru *lru);

/* Returns how many entries were evicted for capacity since creation. */
size_t zq_lru_evictions(const zq_lru *lru);

#endif /* ZQ_SERVER_LRU_H */
