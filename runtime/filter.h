/*
 * filter.h - a sensitive-word filter. It rejects input that contains a listed word, and masks
 * listed words in output with '*', also while the output is streamed.
 *
 * Matching works on a normalised form of the text, built one code point at a time:
 * - full-width ASCII (U+FF01..U+FF5E) becomes ASCII and U+3000 becomes a space;
 * - a code point with a one-code-point compatibility case folding (utf8proc, NFKC_Casefold
 *   style) takes it, and any other is lower-cased;
 * - noise is skipped: separators (Z*), punctuation (P*), symbols (S*), control and format
 *   characters (Cc, Cf: zero-width space, joiners, BOM) and invalid UTF-8 bytes.
 * So "ＢＡＤ", "B a-d" and "b\u200Bad" all contain the word "bad", and "坏*词" contains "坏词".
 * Words are normalised the same way, so a listed "b a d" is the word "bad".
 *
 * A masked match covers the original bytes from its first to its last matched code point,
 * noise inside included, and each code point of that span (each invalid byte) becomes one
 * '*'. Matches may overlap; their spans are joined. Other bytes, invalid UTF-8 included, are
 * copied unchanged, so the masked text is never longer than the input.
 *
 * A zq_filter is read-only after creation and may be shared by threads. A zq_filter_stream
 * belongs to one thread at a time.
 */
#ifndef ZQ_FILTER_H
#define ZQ_FILTER_H

#include "zq.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct zq_filter zq_filter;

/* Loads a word list: UTF-8, one word per line, LF or CRLF line ends, an optional leading BOM.
 * Blank lines and lines that start with '#' are skipped, and so, with a warning, are words
 * made only of noise. ZQ_ERR_IO if the file cannot be read, ZQ_ERR_FORMAT naming the line if
 * a line is not valid UTF-8. An empty list is valid and matches nothing. */
zq_status zq_filter_load(const char *path, zq_filter **out);

/* Builds a filter from n NUL-terminated words (copied; noise-only words are skipped).
 * ZQ_ERR_INVALID_ARG naming the index if a word is not valid UTF-8. */
zq_status zq_filter_create(const char *const *words, int n, zq_filter **out);
void zq_filter_free(zq_filter *filter);

int zq_filter_word_count(const zq_filter *filter);   /* distinct normalised words */
int zq_filter_max_word_chars(const zq_filter *filter); /* longest word, in code points */

/* Returns true if text[0..len) contains a listed word. Allocates nothing. */
bool zq_filter_match(const zq_filter *filter, const char *text, size_t len);

/* Writes text[0..len) with every match masked to out, which must have room for len + 1
 * bytes, NUL-terminates it and sets *out_len. *hits (if not NULL) receives the number of
 * word occurrences, overlapping ones included. ZQ_ERR_NOMEM if scratch memory fails. */
zq_status zq_filter_mask(const zq_filter *filter, const char *text, size_t len, char *out,
                         size_t *out_len, int64_t *hits);

/* Masks text that arrives in pieces, such as generated tokens. Each push returns the text
 * that can no longer change, holding back only the shortest tail that could still start a
 * listed word (at most max_word_chars - 1 normalised code points, plus noise after them) and
 * any incomplete UTF-8 character. Everything emitted by the pushes and the finish, joined,
 * equals zq_filter_mask of the joined pieces. */
typedef struct zq_filter_stream zq_filter_stream;

zq_status zq_filter_stream_create(const zq_filter *filter, zq_filter_stream **out);
void zq_filter_stream_free(zq_filter_stream *stream);

/* Starts a new text, dropping anything held back and zeroing the hit count. */
void zq_filter_stream_reset(zq_filter_stream *stream);

/* Appends piece[0..len) and sets *text / *text_len to the text now safe to emit. The text is
 * NUL-terminated, owned by the stream and valid until its next call. ZQ_ERR_NOMEM leaves the
 * stream unusable until reset. */
zq_status zq_filter_stream_push(zq_filter_stream *stream, const char *piece, size_t len,
                                const char **text, size_t *text_len);

/* Ends the text and returns everything still held back, like push. The stream is then empty
 * and takes a new text, but the hit count keeps adding up until reset. */
zq_status zq_filter_stream_finish(zq_filter_stream *stream, const char **text,
                                  size_t *text_len);

size_t zq_filter_stream_pending(const zq_filter_stream *stream); /* bytes held back */
int64_t zq_filter_stream_hits(const zq_filter_stream *stream);   /* occurrences so far */

#endif /* ZQ_FILTER_H */
