/*
 * buf.h - a growable byte buffer that stays NUL-terminated, for response bodies, SSE events
 * and generated text.
 */
#ifndef ZQ_SERVER_BUF_H
#define ZQ_SERVER_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *data; /* NUL-terminated when not NULL */
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed; later appends are ignored */
} zq_buf;

/* Appends len bytes. Returns false (and sets failed) when out of memory. */
bool zq_buf_append(zq_buf *buf, const void *bytes, size_t len);
bool zq_buf_puts(zq_buf *buf, const char *text);
bool zq_buf_printf(zq_buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Hands the contents to the caller (NULL if empty or failed) and empties the buffer. */
char *zq_buf_take(zq_buf *buf);
void zq_buf_free(zq_buf *buf);

#endif /* ZQ_SERVER_BUF_H */
