/*
 * metrics.c - Prometheus counters and histograms behind one mutex. Histograms are
 * cumulative on output only: each bucket stores its own count and rendering sums them.
 */
#include "metrics.h"

#include "buf.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 16
#define MAX_STATUSES 16 /* distinct status codes kept per endpoint; the server uses about 8 */

typedef struct {
    const double *bounds; /* upper bounds, increasing; +Inf is implicit */
    int n_bounds;
    unsigned long counts[MAX_BUCKETS + 1];
    double sum;
    unsigned long count;
} histogram;

typedef struct {
    int status;
    unsigned long count;
} status_count;

static const double seconds_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128};

struct zq_metrics {
    pthread_mutex_t lock;
    status_count statuses[ZQ_EP_COUNT][MAX_STATUSES];
    histogram latency[ZQ_EP_COUNT];
    histogram first_token;
    histogram batch;
    unsigned long tokens, cache_hits, cache_misses, filter_input, filter_output, cancelled;
    int active, queued;
    long sessions;
};

static const char *const endpoint_labels[ZQ_EP_COUNT] = {
    "/chat",     "/chat/reset", "/chat/history", "/v1/chat/completions",
    "/v1/models", "/health",    "/metrics",      "other",
};

const char *zq_endpoint_label(zq_endpoint endpoint)
{
    return endpoint < ZQ_EP_COUNT ? endpoint_labels[endpoint] : "other";
}

static void histogram_init(histogram *h, const double *bounds, int n_bounds)
{
    h->bounds = bounds;
    h->n_bounds = n_bounds;
}

static void histogram_observe(histogram *h, double value)
{
    int i = 0;
    while (i < h->n_bounds && value > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += value;
    h->count++;
}

zq_metrics *zq_metrics_create(void)
{
    zq_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    const int n_seconds = (int)(sizeof seconds_bounds / sizeof *seconds_bounds);
    for (int e = 0; e < ZQ_EP_COUNT; e++)
        histogram_init(&m->latency[e], seconds_bounds, n_seconds);
    histogram_init(&m->first_token, seconds_bounds, n_seconds);
    histogram_init(&m->batch, batch_bounds, (int)(sizeof batch_bounds / sizeof *batch_bounds));
    return m;
}

void zq_metrics_free(zq_metrics *metrics)
{
    if (!metrics)
        return;
    pthread_mutex_destroy(&metrics->lock);
    free(metrics);
}

static void count_status(status_count *row, int status)
{
    for (int i = 0; i < MAX_STATUSES; i++) {
        if (row[i].count == 0 || row[i].status == status) {
            row[i].status = status;
            row[i].count++;
            return;
        }
    }
    /* NOTE: a seventeenth distinct status on one endpoint is not counted. */
}

void zq_metrics_request(zq_metrics *m, zq_endpoint endpoint, int status, double seconds)
{
    if (endpoint >= ZQ_EP_COUNT)
        endpoint = ZQ_EP_OTHER;
    pthread_mutex_lock(&m->lock);
    count_status(m->statuses[endpoint], status);
    histogram_observe(&m->latency[endpoint], seconds);
    pthread_mutex_unlock(&m->lock);
}

void zq_metrics_first_token(zq_metrics *m, double seconds)
{
    pthread_mutex_lock(&m->lock);
    histogram_observe(&m->first_token, seconds);
    pthread_mutex_unlock(&m->lock);
}

void zq_metrics_add_tokens(zq_metrics *m, long tokens)
{
    pthread_mutex_lock(&m->lock);
    m->tokens += (unsigned long)tokens;
    pthread_mutex_unlock(&m->lock);
}

void zq_metrics_batch(zq_metrics *m, int batch_size)
{
    pthread_mutex_lock(&m->lock);
    histogram_observe(&m->batch, batch_size);
    pthread_mutex_unlock(&m->lock);
}

void zq_metrics_cache(zq_metrics *m, bool hit)
{
    pthread_mutex_lock(&m->lock);
    if (hit)
        m->cache_hits++;
    else
        m->cache_misses++;
    pthread_mutex_unlock(&m->lock);
}

void zq_metrics_filter_hit(zq_metrics *m, bool input)
{
    pthread_mutex_lock(&m->lock);
    if (input)
        m->filter_input++;
    else
        m->filter_output++;
    pthread_mutex_unlock(&m->lock);
}

void zq_metrics_cancelled(zq_metrics *m)
{
    pthread_mutex_lock(&m->lock);
    m->cancelled++;
    pthread_mutex_unlock(&m->lock);
}

void zq_metrics_set_load(zq_metrics *m, int active, int queued)
{
    pthread_mutex_lock(&m->lock);
    m->active = active;
    m->queued = queued;
    pthread_mutex_unlock(&m->lock);
}

void zq_metrics_set_sessions(zq_metrics *m, long sessions)
{
    pthread_mutex_lock(&m->lock);
    m->sessions = sessions;
    pthread_mutex_unlock(&m->lock);
}

static void render_header(zq_buf *out, const char *name, const char *type, const char *help)
{
    zq_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Writes the _bucket, _sum and _count lines; labels is "" or `key="value",`. */
static void render_histogram(zq_buf *out, const char *name, const char *labels,
                             const histogram *h)
{
    unsigned long cumulative = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cumulative += h->counts[i];
        zq_buf_printf(out, "%s_bucket{%sle=\"%g\"} %lu\n", name, labels, h->bounds[i],
                      cumulative);
    }
    zq_buf_printf(out, "%s_bucket{%sle=\"+Inf\"} %lu\n", name, labels, h->count);

    /* Drop the trailing comma for _sum and _count, which have no "le" label. */
    char trimmed[128];
    snprintf(trimmed, sizeof trimmed, "%s", labels);
    size_t n = strlen(trimmed);
    if (n && trimmed[n - 1] == ',')
        trimmed[n - 1] = '\0';
    const char *open = n ? "{" : "", *close = n ? "}" : "";
    zq_buf_printf(out, "%s_sum%s%s%s %.6f\n", name, open, trimmed, close, h->sum);
    zq_buf_printf(out, "%s_count%s%s%s %lu\n", name, open, trimmed, close, h->count);
}

static void render_requests(zq_buf *out, const zq_metrics *m)
{
    render_header(out, "zq_requests_total", "counter", "HTTP requests by endpoint and status.");
    for (int e = 0; e < ZQ_EP_COUNT; e++)
        for (int i = 0; i < MAX_STATUSES && m->statuses[e][i].count; i++)
            zq_buf_printf(out, "zq_requests_total{endpoint=\"%s\",status=\"%d\"} %lu\n",
                          endpoint_labels[e], m->statuses[e][i].status,
                          m->statuses[e][i].count);

    render_header(out, "zq_request_duration_seconds", "histogram",
                  "Time from request arrival to the last byte of the response.");
    for (int e = 0; e < ZQ_EP_COUNT; e++) {
        if (m->latency[e].count == 0)
            continue;
        char labels[64];
        snprintf(labels, sizeof labels, "endpoint=\"%s\",", endpoint_labels[e]);
        render_histogram(out, "zq_request_duration_seconds", labels, &m->latency[e]);
    }
}

static void render_counter(zq_buf *out, const char *name, const char *help, unsigned long v)
{
    render_header(out, name, "counter", help);
    zq_buf_printf(out, "%s %lu\n", name, v);
}

static void render_gauge(zq_buf *out, const char *name, const char *help, long v)
{
    render_header(out, name, "gauge", help);
    zq_buf_printf(out, "%s %ld\n", name, v);
}

static void render_generation(zq_buf *out, const zq_metrics *m)
{
    render_header(out, "zq_time_to_first_token_seconds", "histogram",
                  "Time from request arrival to the first generated token.");
    render_histogram(out, "zq_time_to_first_token_seconds", "", &m->first_token);
    render_header(out, "zq_batch_size", "histogram", "Sequences decoded per batched step.");
    render_histogram(out, "zq_batch_size", "", &m->batch);
    render_counter(out, "zq_tokens_generated_total", "Tokens generated by the model.",
                   m->tokens);
    render_counter(out, "zq_generations_cancelled_total",
                   "Generations stopped because the client disconnected.", m->cancelled);
    render_gauge(out, "zq_requests_active", "Requests holding a decoding slot.", m->active);
    render_gauge(out, "zq_requests_queued", "Requests waiting for a decoding slot.", m->queued);
    render_gauge(out, "zq_sessions", "Chat sessions held in this process.", m->sessions);
}

static void render_cache_filter(zq_buf *out, const zq_metrics *m)
{
    render_counter(out, "zq_cache_hits_total", "Deterministic requests answered from the cache.",
                   m->cache_hits);
    render_counter(out, "zq_cache_misses_total",
                   "Deterministic requests not found in the cache.", m->cache_misses);
    render_header(out, "zq_filter_hits_total", "counter",
                  "Texts that matched the sensitive-word list, by direction.");
    zq_buf_printf(out, "zq_filter_hits_total{direction=\"input\"} %lu\n", m->filter_input);
    zq_buf_printf(out, "zq_filter_hits_total{direction=\"output\"} %lu\n", m->filter_output);
}

char *zq_metrics_render(zq_metrics *m)
{
    zq_buf out = {0};
    pthread_mutex_lock(&m->lock);
    render_requests(&out, m);
    render_generation(&out, m);
    render_cache_filter(&out, m);
    pthread_mutex_unlock(&m->lock);
    return zq_buf_take(&out);
}
