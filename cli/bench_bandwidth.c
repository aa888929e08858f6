/*
 * bench_bandwidth.c - `zq bench bandwidth`: a STREAM-like read of a large buffer, split evenly
 * over OpenMP threads, best of several passes. Decoding one token reads every weight once, so
 * this rate divided into the bytes of weights per token bounds the decode speed.
 */
#include "bench.h"
#include "common.h"

#include "../runtime/internal.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

#define CMD "bench bandwidth"
#define DEFAULT_PASSES 5
#define MAX_PASSES 1000

enum { OPT_THREADS = 1000, OPT_MB, OPT_PASSES, OPT_JSON };

static void help(void)
{
    printf("usage: zq bench bandwidth [--threads N] [--mb MB] [--passes P] [--json]\n\n"
           "Reads a buffer of MB MiB with N threads, best of P passes, and prints the rate\n"
           "in GB/s (10^9 bytes per second). AVX2 loads are used when the CPU has them.\n\n"
           "options:\n"
           "  --threads N   threads (default: the number of physical cores)\n"
           "  --mb MB       buffer size in MiB, at least 1 (default 512); use a size far above\n"
           "                the last-level cache so that the rate is memory's\n"
           "  --passes P    timed passes, 1 to %d (default %d); more passes give a busy\n"
           "                machine more chances of an undisturbed one\n"
           "  --json        print one JSON record instead of text\n"
           "  -h, --help    show this help\n",
           MAX_PASSES, DEFAULT_PASSES);
}

#ifdef HAVE_X86
/* XOR-folds n bytes (a multiple of 128) with four independent 32-byte loads per step. The
 * result is returned so that the compiler cannot drop the loads. */
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 128) {
        a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    const __m256i a = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, a);
    return lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3];
}
#endif

static uint64_t read_scalar(const uint8_t *p, size_t n)
{
    const uint64_t *q = (const uint64_t *)p;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (size_t i = 0; i < n / 8; i += 4) {
        a0 ^= q[i];
        a1 ^= q[i + 1];
        a2 ^= q[i + 2];
        a3 ^= q[i + 3];
    }
    return a0 ^ a1 ^ a2 ^ a3;
}

static bool use_avx2(void)
{
#ifdef HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return false;
#endif
}

/* Reads the whole buffer once with n_threads threads; returns the seconds it took. Each thread
 * reads one contiguous slice, a multiple of 128 bytes, the same slice in every pass. */
static double read_pass(const uint8_t *buf, size_t bytes, int n_threads, bool avx2,
                        uint64_t *sink)
{
    const size_t slices = bytes / 128;
    uint64_t acc = 0;
    const double start = zq_now_seconds();
#pragma omp parallel for num_threads(n_threads) schedule(static) reduction(^ : acc)
    for (int t = 0; t < n_threads; t++) {
        const size_t lo = slices * (size_t)t / (size_t)n_threads * 128;
        const size_t hi = slices * (size_t)(t + 1) / (size_t)n_threads * 128;
#ifdef HAVE_X86
        if (avx2) {
            acc ^= read_avx2(buf + lo, hi - lo);
            continue;
        }
#endif
        acc ^= read_scalar(buf + lo, hi - lo);
    }
    const double seconds = zq_now_seconds() - start;
    *sink ^= acc;
    return seconds;
}

static void fill_buffer(uint8_t *buf, size_t bytes, int n_threads)
{
    /* Each thread first touches the pages it will read. */
    const size_t pages = bytes / 4096;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (size_t i = 0; i < pages; i++)
        memset(buf + i * 4096, (int)(i & 0xff), 4096);
}

static void report(int threads, long mb, bool avx2, const double *gbs, int passes, double best,
                   bool json)
{
    if (!json) {
        printf("read bandwidth: %.2f GB/s (%d thread%s, %ld MiB, %s loads, best of %d)\n", best,
               threads, threads == 1 ? "" : "s", mb, avx2 ? "AVX2" : "64-bit", passes);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "bench", "bandwidth");
    cJSON_AddNumberToObject(r, "threads", threads);
    cJSON_AddNumberToObject(r, "mb", (double)mb);
    cJSON_AddStringToObject(r, "loads", avx2 ? "avx2" : "scalar");
    cJSON_AddNumberToObject(r, "gb_s", cli_bench_round(best, 2));
    cJSON *list = cJSON_AddArrayToObject(r, "passes_gb_s");
    for (int i = 0; i < passes; i++)
        cJSON_AddItemToArray(list, cJSON_CreateNumber(cli_bench_round(gbs[i], 2)));
    cli_bench_print_json(r);
}

/* Parses one option into the settings; returns -1 to continue, else the exit status. */
static int parse_option(int c, const char *arg, long *threads, long *mb, long *passes, bool *json)
{
    switch (c) {
    case OPT_THREADS:
        return cli_parse_int(CMD, "threads", arg, 1, 1024, threads) ? -1 : ZQ_EXIT_USAGE;
    case OPT_MB:
        return cli_parse_int(CMD, "mb", arg, 1, 1 << 20, mb) ? -1 : ZQ_EXIT_USAGE;
    case OPT_PASSES:
        return cli_parse_int(CMD, "passes", arg, 1, MAX_PASSES, passes) ? -1 : ZQ_EXIT_USAGE;
    case OPT_JSON:
        *json = true;
        return -1;
    case 'h':
        help();
        return ZQ_EXIT_OK;
    }
    return ZQ_EXIT_USAGE;
}

int cli_bench_bandwidth(int argc, char **argv)
{
    static const struct option longs[] = {
        {"threads", required_argument, 0, OPT_THREADS}, {"mb", required_argument, 0, OPT_MB},
        {"passes", required_argument, 0, OPT_PASSES},   {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'},                  {0, 0, 0, 0},
    };
    long threads = 0, mb = 512, passes = DEFAULT_PASSES;
    bool json = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        const int rc = parse_option(c, optarg, &threads, &mb, &passes, &json);
        if (rc >= 0)
            return rc;
    }
    if (optind != argc) {
        cli_error(CMD, "unexpected argument '%s'; run 'zq bench bandwidth --help'", argv[optind]);
        return ZQ_EXIT_USAGE;
    }

    const int n_threads = cli_bench_set_threads(zq_resolve_threads((int)threads));
    double gbs[MAX_PASSES];
    const double best = cli_bench_read_bandwidth(mb, n_threads, (int)passes, gbs);
    if (best < 0) {
        cli_error(CMD, "cannot allocate %ld MiB; pass a smaller --mb", mb);
        return ZQ_EXIT_FAIL;
    }
    report(n_threads, mb, use_avx2(), gbs, (int)passes, best, json);
    return ZQ_EXIT_OK;
}

double cli_bench_read_bandwidth(long mb, int n_threads, int passes, double *gbs)
{
    const size_t bytes = (size_t)mb << 20;
    uint8_t *buf = zq_aligned_alloc(bytes);
    if (!buf)
        return -1;
    fill_buffer(buf, bytes, n_threads);

    const bool avx2 = use_avx2();
    uint64_t sink = 0;
    double best = 0;
    read_pass(buf, bytes, n_threads, avx2, &sink); /* warm-up: TLB and thread start */
    for (int i = 0; i < passes; i++) {
        const double rate = (double)bytes / read_pass(buf, bytes, n_threads, avx2, &sink) / 1e9;
        if (gbs)
            gbs[i] = rate;
        best = rate > best ? rate : best;
    }
    zq_aligned_free(buf);
    if (sink == 0x5a5a5a5a5a5a5a5aULL) /* keeps the reads observable; practically never true */
        fputc('\n', stderr);
    return best;
}
