/*
 * serve_load.c - a closed-loop load generator for `zq serve`, used by bench/serve_bench.sh.
 *
 * C client threads each send one streaming POST /v1/chat/completions at a time until N
 * requests have been sent. Each request is for exactly max_tokens tokens (ignore_eos),
 * with temperature 0.8 and its index as the seed, over a fixed list of prompts. Per request
 * it records the latency (send to end of stream), the time to first token (send to the
 * first event with non-empty content) and completion_tokens from the usage chunk. It prints
 * one JSON object with throughput and p50/p99 of both times.
 *
 * Requests use HTTP/1.0 on a new connection each, so the response ends when the server
 * closes the connection and no chunked decoding is needed.
 *
 * Build: cc -O2 -pthread -o serve_load bench/serve_load.c -lm
 * Usage: serve_load PORT CONCURRENCY REQUESTS MAX_TOKENS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *const prompts[] = {
    "你好", "你是谁", "早上好", "我们走吧", "这是什么", "你去哪儿了", "我很抱歉", "谢谢你",
};

typedef struct {
    double latency, ttft;
    int tokens;
    int ok;
} result;

static int port, max_tokens, n_requests;
static atomic_int next_request;
static result *results;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int connect_local(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Returns whether the buffer contains an event whose delta has non-empty content. */
static int has_first_token(const char *buf)
{
    const char *pattern = "\"delta\":{\"content\":\"";
    for (const char *p = strstr(buf, pattern); p; p = strstr(p + 1, pattern))
        if (p[strlen(pattern)] != '"')
            return 1;
    return 0;
}

static void run_one(int index, result *r)
{
    char body[512], request[1024];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":%d,"
             "\"temperature\":0.8,\"seed\":%d,\"ignore_eos\":true,\"stream\":true,"
             "\"stream_options\":{\"include_usage\":true}}",
             prompts[index % (int)(sizeof prompts / sizeof *prompts)], max_tokens, index);
    int n = snprintf(request, sizeof request,
                     "POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);

    const double start = now_seconds();
    int fd = connect_local();
    if (fd < 0 || write(fd, request, (size_t)n) != n) {
        if (fd >= 0)
            close(fd);
        return;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t got;
    while (buf && (got = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)got;
        buf[len] = '\0';
        if (r->ttft == 0 && has_first_token(buf))
            r->ttft = now_seconds() - start;
        if (len + 1 == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger)
                break;
            buf = bigger;
            cap *= 2;
        }
    }
    r->latency = now_seconds() - start;
    close(fd);
    const char *usage = buf ? strstr(buf, "\"completion_tokens\":") : NULL;
    r->ok = buf && !strncmp(buf, "HTTP/1.", 7) && !strncmp(buf + 9, "200", 3) && usage &&
            strstr(buf, "data: [DONE]");
    r->tokens = usage ? atoi(usage + strlen("\"completion_tokens\":")) : 0;
    free(buf);
}

static void *worker(void *arg)
{
    int i;
    while ((i = atomic_fetch_add(&next_request, 1)) < n_requests)
        run_one(i, &results[i]);
    return arg;
}

static int compare_doubles(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of the sorted values. */
static double percentile(const double *sorted, int n, double p)
{
    if (n == 0)
        return 0;
    int rank = (int)ceil(p / 100.0 * n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: serve_load PORT CONCURRENCY REQUESTS MAX_TOKENS\n");
        return 2;
    }
    port = atoi(argv[1]);
    const int concurrency = atoi(argv[2]);
    n_requests = atoi(argv[3]);
    max_tokens = atoi(argv[4]);
    if (port <= 0 || concurrency <= 0 || n_requests <= 0 || max_tokens <= 0) {
        fprintf(stderr, "serve_load: every argument must be a positive integer\n");
        return 2;
    }
    results = calloc((size_t)n_requests, sizeof *results);
    pthread_t *threads = calloc((size_t)concurrency, sizeof *threads);

    const double start = now_seconds();
    for (int t = 0; t < concurrency; t++)
        pthread_create(&threads[t], NULL, worker, NULL);
    for (int t = 0; t < concurrency; t++)
        pthread_join(threads[t], NULL);
    const double seconds = now_seconds() - start;

    double *latency = calloc((size_t)n_requests, sizeof *latency);
    double *ttft = calloc((size_t)n_requests, sizeof *ttft);
    int ok = 0;
    long tokens = 0;
    for (int i = 0; i < n_requests; i++) {
        if (!results[i].ok)
            continue;
        latency[ok] = results[i].latency;
        ttft[ok] = results[i].ttft;
        tokens += results[i].tokens;
        ok++;
    }
    qsort(latency, (size_t)ok, sizeof *latency, compare_doubles);
    qsort(ttft, (size_t)ok, sizeof *ttft, compare_doubles);
    printf("{\"concurrency\":%d,\"requests\":%d,\"errors\":%d,\"seconds\":%.3f,"
           "\"requests_per_s\":%.2f,\"tokens_per_s\":%.1f,\"latency_p50_ms\":%.1f,"
           "\"latency_p99_ms\":%.1f,\"ttft_p50_ms\":%.1f,\"ttft_p99_ms\":%.1f}\n",
           concurrency, n_requests, n_requests - ok, seconds, ok / seconds, tokens / seconds,
           percentile(latency, ok, 50) * 1e3, percentile(latency, ok, 99) * 1e3,
           percentile(ttft, ok, 50) * 1e3, percentile(ttft, ok, 99) * 1e3);
    free(latency);
    free(ttft);
    free(results);
    free(threads);
    return ok == n_requests ? 0 : 1;
}
