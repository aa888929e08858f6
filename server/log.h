/*
 * log.h - the server's diagnostic lines on stderr: "zq serve: LEVEL: function: message".
 * Access-log lines are written by http.c in their own format.
 */
#ifndef ZQ_SERVER_LOG_H
#define ZQ_SERVER_LOG_H

typedef enum { ZQ_SRV_ERROR, ZQ_SRV_WARN, ZQ_SRV_INFO } zq_srv_level;

void zq_srv_log(zq_srv_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets whether info lines are written (errors and warnings always are). */
void zq_srv_log_set_verbose(int verbose);

#define ZQ_SRV_LOG_ERROR(...) zq_srv_log(ZQ_SRV_ERROR, __func__, __VA_ARGS__)
#define ZQ_SRV_LOG_WARN(...) zq_srv_log(ZQ_SRV_WARN, __func__, __VA_ARGS__)
#define ZQ_SRV_LOG_INFO(...) zq_srv_log(ZQ_SRV_INFO, __func__, __VA_ARGS__)

#endif /* ZQ_SERVER_LOG_H */
