/*
 * wordfilter.h - the server's view of the sensitive-word filter (runtime/filter.h): a word
 * list loaded from a file, a check for input text, and a streaming masker for output text.
 */
#ifndef ZQ_SERVER_WORDFILTER_H
#define ZQ_SERVER_WORDFILTER_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct zq_word_filter zq_word_filter;

/* Loads a word list (one word per line, UTF-8). On failure returns NULL and writes the
 * reason to err. */
zq_word_filter *zq_word_filter_load(const char *path, char *err, size_t err_cap);
void zq_word_filter_free(zq_word_filter *filter);

/* Returns whether text contains a listed word (after the filter's normalisation). */
bool zq_word_filter_matches(const zq_word_filter *filter, const char *text);

/* Returns a hash of the word list, so cached replies are keyed by the list that masked
 * them. */
uint64_t zq_word_filter_fingerprint(const zq_word_filter *filter);

typedef struct zq_word_masker zq_word_masker;

/* Creates a masker for one output stream, or NULL when out of memory. */
zq_word_masker *zq_word_masker_create(const zq_word_filter *filter);
void zq_word_masker_free(zq_word_masker *masker);

/* Feeds len bytes of generated text and appends to out the text that can no longer become
 * part of a listed word, with listed words masked. Returns false when out of memory. */
bool zq_word_masker_push(zq_word_masker *masker, const char *text, size_t len, zq_buf *out);

/* Appends the held-back rest of the stream to out at its end. */
bool zq_word_masker_finish(zq_word_masker *masker, zq_buf *out);

/* Returns whether the masker has masked a word so far (in the emitted text, or in the
 * held-back tail once finished). */
bool zq_word_masker_masked(const zq_word_masker *masker);

#endif /* ZQ_SERVER_WORDFILTER_H */
