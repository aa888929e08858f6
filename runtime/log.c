/*
 * log.c - the library's only output channel. Messages go to a callback, by default a line on
 * stderr; the level filter is checked before formatting so disabled levels cost one load.
 */
#include "internal.h"

#include <stdio.h>

static zq_log_level max_level = ZQ_LOG_WARN;
static zq_log_fn sink;
static void *sink_user;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

void zq_log_set_level(zq_log_level level)
{
    max_level = level;
}

void zq_log_set_callback(zq_log_fn fn, void *user)
{
    sink = fn;
    sink_user = user;
}

int zq_log_enabled(zq_log_level level)
{
    return level <= max_level;
}

void zq_log_write(zq_log_level level, const char *func, const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);

    if (sink) {
        sink(level, func, message, sink_user);
        return;
    }
    /* One fprintf per line keeps lines from different threads whole. */
    fprintf(stderr, "zq: %s: %s: %s\n", level_names[level], func, message);
}
