/*
 * lru.c - a chained hash table whose entries are also linked in a list, most recently used
 * at the head. The table doubles when it has more entries than buckets, so lookups stay
 * O(1) whatever the capacity is.
 */
#include "lru.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct zq_lru_entry {
    struct zq_lru_entry *next_in_bucket;
    struct zq_lru_entry *prev, *next; /* usage list: prev is more recently used */
    uint64_t hash;
    double last_used;
    void *value;
    char key[];
} zq_lru_entry;

struct zq_lru {
    zq_lru_entry **buckets;
    size_t n_buckets; /* a power of two */
    size_t count, capacity, evictions;
    zq_lru_entry *head, *tail;
    zq_lru_free_fn free_value;
};

static uint64_t hash_key(const char *key)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64 */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return h;
}

zq_lru *zq_lru_create(size_t capacity, zq_lru_free_fn free_value)
{
    if (capacity == 0)
        return NULL;
    zq_lru *lru = calloc(1, sizeof *lru);
    if (!lru)
        return NULL;
    lru->n_buckets = 16;
    lru->buckets = calloc(lru->n_buckets, sizeof *lru->buckets);
    if (!lru->buckets) {
        free(lru);
        return NULL;
    }
    lru->capacity = capacity;
    lru->free_value = free_value;
    return lru;
}

static void free_entry(zq_lru *lru, zq_lru_entry *e)
{
    if (lru->free_value)
        lru->free_value(e->value);
    free(e);
}

void zq_lru_free(zq_lru *lru)
{
    if (!lru)
        return;
    zq_lru_entry *e = lru->head;
    while (e) {
        zq_lru_entry *next = e->next;
        free_entry(lru, e);
        e = next;
    }
    free(lru->buckets);
    free(lru);
}

static zq_lru_entry **find_slot(const zq_lru *lru, const char *key, uint64_t hash)
{
    zq_lru_entry **slot = &lru->buckets[hash & (lru->n_buckets - 1)];
    while (*slot && ((*slot)->hash != hash || strcmp((*slot)->key, key) != 0))
        slot = &(*slot)->next_in_bucket;
    return slot;
}

static void list_unlink(zq_lru *lru, zq_lru_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        lru->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        lru->tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_front(zq_lru *lru, zq_lru_entry *e)
{
    e->prev = NULL;
    e->next = lru->head;
    if (lru->head)
        lru->head->prev = e;
    lru->head = e;
    if (!lru->tail)
        lru->tail = e;
}

/* Unlinks e from its bucket and the list, and frees it. */
static void remove_entry(zq_lru *lru, zq_lru_entry *e)
{
    zq_lru_entry **slot = find_slot(lru, e->key, e->hash);
    *slot = e->next_in_bucket;
    list_unlink(lru, e);
    lru->count--;
    free_entry(lru, e);
}

/* Doubles the bucket array; a failed allocation only leaves the chains longer. */
static void grow(zq_lru *lru)
{
    size_t n = lru->n_buckets * 2;
    zq_lru_entry **buckets = calloc(n, sizeof *buckets);
    if (!buckets)
        return;
    for (zq_lru_entry *e = lru->head; e; e = e->next) {
        zq_lru_entry **slot = &buckets[e->hash & (n - 1)];
        e->next_in_bucket = *slot;
        *slot = e;
    }
    free(lru->buckets);
    lru->buckets = buckets;
    lru->n_buckets = n;
}

void *zq_lru_peek(const zq_lru *lru, const char *key)
{
    zq_lru_entry *e = *find_slot(lru, key, hash_key(key));
    return e ? e->value : NULL;
}

void *zq_lru_get(zq_lru *lru, const char *key)
{
    zq_lru_entry *e = *find_slot(lru, key, hash_key(key));
    if (!e)
        return NULL;
    list_unlink(lru, e);
    list_push_front(lru, e);
    return e->value;
}

bool zq_lru_touch(zq_lru *lru, const char *key, double now)
{
    zq_lru_entry *e = *find_slot(lru, key, hash_key(key));
    if (!e)
        return false;
    list_unlink(lru, e);
    list_push_front(lru, e);
    e->last_used = now;
    return true;
}

bool zq_lru_put(zq_lru *lru, const char *key, void *value, double now)
{
    uint64_t hash = hash_key(key);
    zq_lru_entry **slot = find_slot(lru, key, hash);
    zq_lru_entry *e = *slot;
    if (e) {
        if (lru->free_value && e->value != value)
            lru->free_value(e->value);
        e->value = value;
        e->last_used = now;
        list_unlink(lru, e);
        list_push_front(lru, e);
        return true;
    }

    size_t key_len = strlen(key);
    e = calloc(1, sizeof *e + key_len + 1);
    if (!e)
        return false;
    memcpy(e->key, key, key_len + 1);
    e->hash = hash;
    e->value = value;
    e->last_used = now;
    *slot = e;
    list_push_front(lru, e);
    lru->count++;

    while (lru->count > lru->capacity) {
        remove_entry(lru, lru->tail);
        lru->evictions++;
    }
    if (lru->count > lru->n_buckets)
        grow(lru);
    return true;
}

bool zq_lru_remove(zq_lru *lru, const char *key)
{
    zq_lru_entry *e = *find_slot(lru, key, hash_key(key));
    if (!e)
        return false;
    remove_entry(lru, e);
    return true;
}

size_t zq_lru_expire(zq_lru *lru, double cutoff)
{
    size_t removed = 0;
    while (lru->tail && lru->tail->last_used < cutoff) {
        remove_entry(lru, lru->tail);
        removed++;
    }
    return removed;
}

size_t zq_lru_count(const zq_lru *lru)
{
    return lru->count;
}

size_t zq_lru_evictions(const zq_lru *lru)
{
    return lru->evictions;
}
