/*
 * kernel_bench.c - times the int8 linear layer (W8A8, one scale per weight row) at the shapes
 * of gpt2-distil (768 wide, 3072 inner, 21128-token head) through ZQ's own kernels and, in
 * builds with oneDNN, through oneDNN's int8 matmul, for M = 1 (decode) and M = 512 (prefill).
 * Its numbers decide which path zq_linear takes per shape; see bench/KERNEL_CHOICE.md.
 *
 * Build (from the repository root):
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -DZQ_USE_OPENMP=1 -DZQ_USE_DNNL=1 -Iruntime \
 *       -mavx2 -mfma -mf16c -c runtime/kernels_avx2.c -o /tmp/kernels_avx2.o
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -DZQ_USE_OPENMP=1 -DZQ_USE_DNNL=1 -Iruntime \
 *       -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx2 -mfma -mf16c \
 *       -c runtime/kernels_avx512.c -o /tmp/kernels_avx512.o
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -DZQ_USE_OPENMP=1 -DZQ_USE_DNNL=1 -Iruntime \
 *       bench/kernel_bench.c runtime/kernels_ref.c runtime/kernels_tiled.c \
 *       runtime/kernels_dispatch.c runtime/linear.c runtime/linear_dnnl.c runtime/util.c \
 *       runtime/log.c runtime/status.c /tmp/kernels_avx2.o /tmp/kernels_avx512.o \
 *       -o /tmp/kernel_bench -ldnnl -lm -lpthread
 *   (drop -DZQ_USE_DNNL=1, linear_dnnl.c and -ldnnl to build without oneDNN)
 * Run: /tmp/kernel_bench [--kernels avx2] [--quick] [--prefill-m M] [--threads 1|2]
 * (both thread counts by default)
 *
 * Decode (M = 1) cycles through enough copies of the weights to exceed the last-level cache,
 * so it measures the memory-bound case that generation is. Prefill reuses one copy. Each row
 * gives the best wall time per call and, with one thread, the best CPU time of the calling
 * thread, which stays steady when other processes share the machine.
 */
#include "internal.h"
#include "kernels.h"
#include "linear_dnnl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PREFILL_M 512 /* default; --prefill-m changes it */
#define DECODE_POOL_BYTES (256u << 20) /* weights cycled through for M = 1 */

typedef struct {
    int K, N;
    const char *what;
} shape;

static const shape shapes[] = {
    {768, 2304, "attn.c_attn"}, {768, 768, "attn.c_proj"},  {768, 3072, "mlp.c_fc"},
    {3072, 768, "mlp.c_proj"},  {768, 21128, "lm head"},
};

typedef struct {
    zq_weight *copies;
    int n_copies;
    int next;
} weight_pool;

static uint64_t rng = 88172645463325252ULL;

static int8_t random_s8(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (int8_t)((int)(rng % 255) - 127);
}

static void pool_init(weight_pool *p, int K, int N, int n_copies)
{
    p->copies = calloc((size_t)n_copies, sizeof *p->copies);
    p->n_copies = n_copies;
    p->next = 0;
    for (int c = 0; c < n_copies; c++) {
        int8_t *data = zq_aligned_alloc((size_t)N * K);
        float *scales = zq_aligned_alloc((size_t)N * sizeof *scales);
        for (size_t i = 0; i < (size_t)N * K; i++)
            data[i] = random_s8();
        for (int n = 0; n < N; n++)
            scales[n] = 0.01f;
        p->copies[c] = (zq_weight){ZQ_TYPE_Q8, N, K, 0, data, scales};
    }
}

static void pool_free(weight_pool *p)
{
    for (int c = 0; c < p->n_copies; c++) {
        zq_aligned_free((void *)p->copies[c].data);
        zq_aligned_free((void *)p->copies[c].scales);
    }
    free(p->copies);
}

typedef struct {
    double wall; /* best wall-clock seconds per call */
    double cpu;  /* best CPU seconds of the calling thread per call */
} timing;

static double thread_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Times zq_linear over at least 3 calls and min_seconds in total. With one thread, the CPU time
 * of the calling thread is the whole cost of a call. Unlike wall time it does not grow when
 * other processes share the core, so it is the steadier number on a busy machine. */
static timing time_path(weight_pool *p, const zq_kernels *k, zq_dnnl_mode mode, const float *x,
                        int M, float *y, zq_linear_scratch *s, int threads, double min_seconds)
{
    zq_linear_set_dnnl(mode);
    timing best = {1e30, 1e30};
    double total = 0;
    for (int call = 0; call < 3 || total < min_seconds; call++) {
        const zq_weight *w = &p->copies[p->next];
        p->next = (p->next + 1) % p->n_copies;
        const double t0 = zq_now_seconds(), c0 = thread_cpu_seconds();
        zq_linear(k, w, NULL, x, M, y, s, threads);
        const double dt = zq_now_seconds() - t0, dc = thread_cpu_seconds() - c0;
        best.wall = dt < best.wall ? dt : best.wall;
        best.cpu = dc < best.cpu ? dc : best.cpu;
        total += dt;
    }
    return best;
}

static void print_row(const shape *sh, int M, int threads, const char *path, timing t)
{
    const double weight_bytes = (double)sh->K * sh->N;
    const double seconds = threads == 1 ? t.cpu : t.wall;
    char cpu[32] = "-";
    if (threads == 1)
        snprintf(cpu, sizeof cpu, "%.1f", t.cpu * 1e6);
    printf("| %-11s | %5d x %-5d | %3d | %d | %-10s | %9.1f | %9s | %7.1f | %6.1f |\n", sh->what,
           sh->K, sh->N, M, threads, path, t.wall * 1e6, cpu,
           2.0 * M * weight_bytes / seconds / 1e9, weight_bytes / seconds / 1e9);
}

static void bench_shape(const shape *sh, const zq_kernels *k, int M, int only_threads,
                        double min_seconds, zq_linear_scratch *s)
{
    const size_t bytes = (size_t)sh->K * sh->N;
    const int n_copies = M == 1 ? (int)(DECODE_POOL_BYTES / bytes) + 1 : 1;
    weight_pool pool;
    pool_init(&pool, sh->K, sh->N, n_copies);
    float *x = zq_aligned_alloc((size_t)M * sh->K * sizeof *x);
    float *y = zq_aligned_alloc((size_t)M * sh->N * sizeof *y);
    for (size_t i = 0; i < (size_t)M * sh->K; i++)
        x[i] = (float)random_s8() / 64.0f;

    for (int threads = 1; threads <= 2; threads++) {
        if (only_threads && threads != only_threads)
            continue;
        print_row(sh, M, threads, k->name,
                  time_path(&pool, k, ZQ_DNNL_OFF, x, M, y, s, threads, min_seconds));
        if (zq_linear_dnnl_available())
            print_row(sh, M, threads, "onednn",
                      time_path(&pool, k, ZQ_DNNL_ON, x, M, y, s, threads, min_seconds));
    }
    zq_aligned_free(x);
    zq_aligned_free(y);
    pool_free(&pool);
}

int main(int argc, char **argv)
{
    const zq_kernels *k = zq_kernels_best();
    double min_seconds = 0.3;
    int prefill_m = PREFILL_M, only_threads = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--kernels") == 0 && i + 1 < argc) {
            k = zq_kernels_by_name(argv[++i]);
            if (!k) {
                fprintf(stderr, "kernel_bench: kernels '%s' unknown or unsupported\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--quick") == 0) {
            min_seconds = 0.05;
        } else if (strcmp(argv[i], "--prefill-m") == 0 && i + 1 < argc) {
            prefill_m = atoi(argv[++i]);
            if (prefill_m < 2) {
                fprintf(stderr, "kernel_bench: --prefill-m must be at least 2\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            only_threads = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: kernel_bench [--kernels NAME] [--quick] [--prefill-m M] "
                            "[--threads 1|2]\n");
            return 2;
        }
    }

    zq_linear_scratch s;
    if (zq_linear_scratch_init(&s, prefill_m, 3072) != ZQ_OK) {
        fprintf(stderr, "kernel_bench: %s\n", zq_last_error());
        return 1;
    }
    printf("# kernels %s; oneDNN %s (activations in [-%d, %d]); GOPS and GB/s of weights from\n"
           "# CPU time with 1 thread, wall time with 2\n",
           k->name, zq_linear_dnnl_available() ? "on" : "not built",
           zq_linear_dnnl_activation_max(), zq_linear_dnnl_activation_max());
    printf("| matrix      | K x N         |   M | T | path       | wall us   |    cpu us |    GOPS "
           "| GB/s W |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        bench_shape(&shapes[i], k, 1, only_threads, min_seconds, &s);
        bench_shape(&shapes[i], k, prefill_m, only_threads, min_seconds, &s);
    }
    zq_linear_scratch_free(&s);
    return 0;
}
