/*
 * metrics.h - the server's counters, gauges and histograms, rendered in the Prometheus text
 * exposition format (version 0.0.4) for GET /metrics. All functions are thread-safe.
 */
#ifndef ZQ_SERVER_METRICS_H
#define ZQ_SERVER_METRICS_H

#include <stdbool.h>

/* Endpoints as metric labels; unknown paths share ZQ_EP_OTHER so a scan of random URLs
 * cannot grow the label set. */
typedef enum {
    ZQ_EP_CHAT,
    ZQ_EP_CHAT_RESET,
    ZQ_EP_CHAT_HISTORY,
    ZQ_EP_COMPLETIONS,
    ZQ_EP_MODELS,
    ZQ_EP_HEALTH,
    ZQ_EP_METRICS,
    ZQ_EP_OTHER,
    ZQ_EP_COUNT
} zq_endpoint;

/* Returns the path of an endpoint ("/chat"), or "other". */
const char *zq_endpoint_label(zq_endpoint endpoint);

typedef struct zq_metrics zq_metrics;

zq_metrics *zq_metrics_create(void);
void zq_metrics_free(zq_metrics *metrics);

/* Records a finished HTTP request: its status code and its latency in seconds. */
void zq_metrics_request(zq_metrics *metrics, zq_endpoint endpoint, int status, double seconds);

/* Records the seconds from a generation request's arrival to its first token. */
void zq_metrics_first_token(zq_metrics *metrics, double seconds);

void zq_metrics_add_tokens(zq_metrics *metrics, long tokens);
void zq_metrics_batch(zq_metrics *metrics, int batch_size); /* one decode step */
void zq_metrics_cache(zq_metrics *metrics, bool hit);
void zq_metrics_filter_hit(zq_metrics *metrics, bool input);
void zq_metrics_cancelled(zq_metrics *metrics); /* generation stopped because the client left */

/* Sets the gauges of requests being generated and requests waiting for a slot. */
void zq_metrics_set_load(zq_metrics *metrics, int active, int queued);
void zq_metrics_set_sessions(zq_metrics *metrics, long sessions);

/* Returns the exposition text (malloc'd, the caller frees it), or NULL when out of memory. */
char *zq_metrics_render(zq_metrics *metrics);

#endif /* ZQ_SERVER_METRICS_H */
