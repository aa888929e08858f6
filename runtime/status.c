/*
 * status.c - status names and the per-thread error message behind zq_last_error().
 */
#include "internal.h"

#include <stdio.h>

static _Thread_local char last_error[512];

const char *zq_status_str(zq_status status)
{
    switch (status) {
    case ZQ_OK: return "ok";
    case ZQ_ERR_IO: return "I/O error";
    case ZQ_ERR_FORMAT: return "format error";
    case ZQ_ERR_CHECKSUM: return "checksum error";
    case ZQ_ERR_VERSION: return "unsupported version";
    case ZQ_ERR_UNSUPPORTED: return "unsupported";
    case ZQ_ERR_INVALID_ARG: return "invalid argument";
    case ZQ_ERR_NOMEM: return "out of memory";
    case ZQ_ERR_CONTEXT_FULL: return "context full";
    case ZQ_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *zq_last_error(void)
{
    return last_error;
}

zq_status zq_fail(zq_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    ZQ_DEBUG("%s: %s", zq_status_str(status), last_error);
    return status;
}

const char *zq_type_name(zq_type type)
{
    switch (type) {
    case ZQ_TYPE_F32: return "f32";
    case ZQ_TYPE_F16: return "f16";
    case ZQ_TYPE_Q8: return "int8";
    }
    return "unknown";
}
