/*
 * log.c - diagnostic lines of the server. Each line is formatted first and written with one
 * fputs call, so lines from connection threads do not interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static int verbose_info = 1;

void zq_srv_log_set_verbose(int verbose)
{
    verbose_info = verbose;
}

void zq_srv_log(zq_srv_level level, const char *func, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info"};
    if (level == ZQ_SRV_INFO && !verbose_info)
        return;
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);

    char line[1200];
    snprintf(line, sizeof line, "zq serve: %s: %s: %s\n", names[level], func, message);
    fputs(line, stderr);
}
