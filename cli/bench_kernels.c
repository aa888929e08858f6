/*
 * bench_kernels.c - `zq bench kernels`: times zq_linear, the path every matrix product of the
 * forward pass takes, at the shapes of a 768-wide, 3072-inner, 21128-token GPT-2
 * (gpt2-distil-chinese-cluecorpussmall), for one token (decode, M = 1) and for a 512-token
 * prompt (prefill, M = 512). int8 runs with every kernel table this CPU supports and, in builds
 * with oneDNN, through oneDNN; f16 and f32 run with the fastest table. The int8 time includes
 * quantizing the activations.
 *
 * As in bench/kernel_bench.c, decode cycles through copies of the weight that together exceed
 * the last-level cache, because generation streams every weight from memory once per token.
 * Prefill reuses one copy, as a prompt does.
 */
#include "bench.h"
#include "common.h"

#include "../runtime/internal.h"
#include "../runtime/kernels.h"
#include "../runtime/linear_dnnl.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMD "bench kernels"
#define PREFILL_M 512
#define MAX_K 3072
/* The portable reference is only timed where one call stays short. */
#define REF_MAX_MACS 2e7
#define MAX_COPIES 64

typedef struct {
    int K, N;
    const char *matrix; /* the GPT-2 weight with this shape */
} bench_shape;

static const bench_shape shapes[] = {
    {768, 2304, "attn.c_attn"}, {768, 768, "attn.c_proj"},  {768, 3072, "mlp.c_fc"},
    {3072, 768, "mlp.c_proj"},  {768, 21128, "output head"},
};

static const char *const table_names[] = {"ref", "avx2", "avx512vnni", "neon", "neondot"};

typedef struct {
    int threads;
    bool json;
    double min_seconds; /* time spent per case, at least 3 calls */
    size_t pool_bytes;  /* decode cycles through weight copies of at least this total size */
    zq_linear_scratch scratch;
    float *x; /* [PREFILL_M][MAX_K] */
    float *y; /* [PREFILL_M][max N] */
} bench_state;

static void help(void)
{
    printf("usage: zq bench kernels [--threads N] [--quick] [--json]\n\n"
           "Times y = x W^T through zq_linear at the matrix shapes of a 768-wide GPT-2 with a\n"
           "21128-token vocabulary, for M = 1 (decode) and M = %d (prefill). int8 is timed\n"
           "with each kernel table this CPU supports (ref only where a call is short), f16\n"
           "and f32 with the fastest table. Prints the best time of repeated calls, the\n"
           "weight bytes read per second, and the arithmetic rate (2 M N K operations).\n\n"
           "options:\n"
           "  --threads N   threads (default: the number of physical cores)\n"
           "  --quick       spend about 0.03 s per case instead of 0.3 s, and cycle decode\n"
           "                through 64 MiB of weight copies instead of 256 MiB\n"
           "  --json        print one JSON record per case instead of a table\n"
           "  -h, --help    show this help\n",
           PREFILL_M);
}

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint32_t rng_next(void)
{
    /* xorshift64*: fixed seed, enough for benchmark operands */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dULL) >> 32);
}

static float rng_float(void) /* [-1, 1) */
{
    return (float)rng_next() / 2147483648.0f - 1.0f;
}

/* Allocates a random [N][K] weight of the given type; returns false when out of memory. */
static bool make_weight(zq_type type, int N, int K, zq_weight *w)
{
    const size_t count = (size_t)N * K;
    size_t elem = 1;
    if (type == ZQ_TYPE_F32)
        elem = 4;
    else if (type == ZQ_TYPE_F16)
        elem = 2;
    void *data = zq_aligned_alloc(count * elem);
    float *scales = type == ZQ_TYPE_Q8 ? zq_aligned_alloc((size_t)N * sizeof(float)) : NULL;
    if (!data || (type == ZQ_TYPE_Q8 && !scales)) {
        zq_aligned_free(data);
        zq_aligned_free(scales);
        return false;
    }
    for (size_t i = 0; i < count; i++) {
        const float v = rng_float();
        if (type == ZQ_TYPE_F32)
            ((float *)data)[i] = 0.05f * v;
        else if (type == ZQ_TYPE_F16)
            ((uint16_t *)data)[i] = zq_f32_to_f16(0.05f * v);
        else
            ((int8_t *)data)[i] = (int8_t)(v * 127.0f);
    }
    for (int n = 0; scales && n < N; n++)
        scales[n] = 0.05f / 127.0f;
    *w = (zq_weight){.type = type, .rows = N, .cols = K, .group = 0, .data = data,
                     .scales = scales};
    return true;
}

static void free_weight(zq_weight *w)
{
    zq_aligned_free((void *)w->data);
    zq_aligned_free((void *)w->scales);
}

static size_t weight_bytes(const zq_weight *w)
{
    const size_t count = (size_t)w->rows * w->cols;
    if (w->type == ZQ_TYPE_Q8)
        return count + (size_t)w->rows * sizeof(float);
    return count * (w->type == ZQ_TYPE_F16 ? 2 : 4);
}

/* Returns the best seconds per call of zq_linear over repeated calls that cycle through the
 * n copies of one weight. */
static double time_linear(bench_state *st, const zq_kernels *k, const zq_weight *copies, int n,
                          int M)
{
    zq_linear(k, &copies[0], NULL, st->x, M, st->y, &st->scratch, st->threads); /* warm-up */
    double best = 1e30, spent = 0;
    for (int call = 0; call < 3 || spent < st->min_seconds; call++) {
        const zq_weight *w = &copies[(call + 1) % n];
        const double start = zq_now_seconds();
        zq_linear(k, w, NULL, st->x, M, st->y, &st->scratch, st->threads);
        const double t = zq_now_seconds() - start;
        best = t < best ? t : best;
        spent += t;
    }
    return best;
}

static void print_case(const bench_state *st, const char *kernel, const zq_weight *w,
                       const bench_shape *shape, int M, double seconds)
{
    const double gb_s = (double)weight_bytes(w) / seconds / 1e9;
    const double gops = 2.0 * M * w->rows * w->cols / seconds / 1e9;
    const char *type = zq_type_name(w->type);
    if (!st->json) {
        printf("%-11s %-5s %4d %5d %6d %-12s %10.1f %8.2f %8.1f\n", kernel, type, M, w->cols,
               w->rows, shape->matrix, seconds * 1e6, gb_s, gops);
        fflush(stdout);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "bench", "kernels");
    cJSON_AddStringToObject(r, "kernel", kernel);
    cJSON_AddStringToObject(r, "type", type);
    cJSON_AddNumberToObject(r, "threads", st->threads);
    cJSON_AddNumberToObject(r, "M", M);
    cJSON_AddNumberToObject(r, "K", w->cols);
    cJSON_AddNumberToObject(r, "N", w->rows);
    cJSON_AddStringToObject(r, "matrix", shape->matrix);
    cJSON_AddNumberToObject(r, "us", cli_bench_round(seconds * 1e6, 1));
    cJSON_AddNumberToObject(r, "weight_gb_s", cli_bench_round(gb_s, 2));
    cJSON_AddNumberToObject(r, "gops", cli_bench_round(gops, 1));
    cli_bench_print_json(r);
}

/* Times the copies with each applicable kernel table, and through oneDNN for int8. */
static void bench_copies(bench_state *st, const bench_shape *shape, const zq_weight *copies,
                         int n, int M)
{
    const zq_type type = copies[0].type;
    zq_linear_set_dnnl(ZQ_DNNL_OFF);
    for (size_t ti = 0; ti < sizeof table_names / sizeof table_names[0]; ti++) {
        const zq_kernels *k = zq_kernels_by_name(table_names[ti]);
        if (!k || (type != ZQ_TYPE_Q8 && k != zq_kernels_best()))
            continue;
        if (k == zq_kernels_ref() && (double)M * shape->N * shape->K > REF_MAX_MACS)
            continue;
        print_case(st, k->name, &copies[0], shape, M, time_linear(st, k, copies, n, M));
    }
    if (type == ZQ_TYPE_Q8 && zq_linear_dnnl_available()) {
        zq_linear_set_dnnl(ZQ_DNNL_ON);
        print_case(st, "onednn", &copies[0], shape, M,
                   time_linear(st, zq_kernels_best(), copies, n, M));
    }
    zq_linear_set_dnnl(ZQ_DNNL_AUTO);
}

/* Times one weight type at one shape for decode and prefill; false when out of memory. */
static bool bench_type(bench_state *st, const bench_shape *shape, zq_type type)
{
    zq_weight copies[MAX_COPIES];
    int n = 0;
    bool ok = make_weight(type, shape->N, shape->K, &copies[n++]);
    size_t total = ok ? weight_bytes(&copies[0]) : 0;
    while (ok && total < st->pool_bytes && n < MAX_COPIES) {
        ok = make_weight(type, shape->N, shape->K, &copies[n]);
        total += ok ? weight_bytes(&copies[n++]) : 0;
    }
    if (ok) {
        bench_copies(st, shape, copies, n, 1);
        bench_copies(st, shape, copies, 1, PREFILL_M);
    }
    for (int i = 0; i < n; i++)
        free_weight(&copies[i]);
    return ok;
}

static int run_all(bench_state *st)
{
    if (!st->json)
        printf("%-11s %-5s %4s %5s %6s %-12s %10s %8s %8s\n", "kernel", "type", "M", "K", "N",
               "matrix", "us", "GB/s", "GOPS");
    const zq_type types[] = {ZQ_TYPE_Q8, ZQ_TYPE_F16, ZQ_TYPE_F32};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
            if (!bench_type(st, &shapes[s], types[t])) {
                cli_error(CMD, "cannot allocate a %d x %d weight", shapes[s].N, shapes[s].K);
                return ZQ_EXIT_FAIL;
            }
    return ZQ_EXIT_OK;
}

static int parse_args(int argc, char **argv, bench_state *st)
{
    enum { OPT_THREADS = 1000, OPT_QUICK, OPT_JSON };
    static const struct option longs[] = {
        {"threads", required_argument, 0, OPT_THREADS}, {"quick", no_argument, 0, OPT_QUICK},
        {"json", no_argument, 0, OPT_JSON},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    long threads = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case OPT_THREADS:
            if (!cli_parse_int(CMD, "threads", optarg, 1, 1024, &threads))
                return ZQ_EXIT_USAGE;
            break;
        case OPT_QUICK:
            st->min_seconds = 0.03;
            st->pool_bytes = (size_t)64 << 20;
            break;
        case OPT_JSON:
            st->json = true;
            break;
        case 'h':
            help();
            return ZQ_EXIT_OK;
        default:
            return ZQ_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        cli_error(CMD, "unexpected argument '%s'; run 'zq bench kernels --help'", argv[optind]);
        return ZQ_EXIT_USAGE;
    }
    st->threads = cli_bench_set_threads(zq_resolve_threads((int)threads));
    return -1;
}

int cli_bench_kernels(int argc, char **argv)
{
    bench_state st = {.min_seconds = 0.3, .pool_bytes = (size_t)256 << 20};
    const int parsed = parse_args(argc, argv, &st);
    if (parsed >= 0)
        return parsed;

    int max_n = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        max_n = shapes[s].N > max_n ? shapes[s].N : max_n;
    st.x = zq_aligned_alloc((size_t)PREFILL_M * MAX_K * sizeof(float));
    st.y = zq_aligned_alloc((size_t)PREFILL_M * max_n * sizeof(float));
    int rc = ZQ_EXIT_FAIL;
    if (!st.x || !st.y) {
        cli_error(CMD, "cannot allocate the activations");
    } else if (zq_linear_scratch_init(&st.scratch, PREFILL_M, MAX_K) != ZQ_OK) {
        cli_error_status(CMD, ZQ_ERR_NOMEM);
    } else {
        for (size_t i = 0; i < (size_t)PREFILL_M * MAX_K; i++)
            st.x[i] = rng_float();
        rc = run_all(&st);
    }
    zq_linear_scratch_free(&st.scratch);
    zq_aligned_free(st.x);
    zq_aligned_free(st.y);
    return rc;
}
