/*
 * linear.c - y = x · W^T + bias for f32, f16 and int8 (W8A8) weights, split over OpenMP
 * threads by output rows.
 *
 * Threads own disjoint ranges of output features in units of LINEAR_ROW_UNIT rows, and every
 * output element is computed by the same sequence of operations whichever thread or tile it
 * falls in, so y does not depend on the thread count.
 */
#include "internal.h"
#include "kernels.h"
#include "linear_dnnl.h"

#include <assert.h>
#include <stdatomic.h>
#include <string.h>

#ifdef ZQ_USE_OPENMP
#include <omp.h>
#define OMP_BARRIER _Pragma("omp barrier")
#else
#define OMP_BARRIER
#endif

#define LINEAR_ROW_UNIT  16  /* granularity of the split of output rows across threads */
#define LINEAR_NC        32  /* output features per int32 tile */
#define LINEAR_MC        64  /* tokens per int32 tile */
#define LINEAR_POST_SPAN 256 /* features per work item of a post-op after oneDNN */
#define LINEAR_CLAIM     64  /* units a thread takes at a time from the front of its span */
/* Below this many multiply-adds a linear runs on one thread: waking the others costs more. */
#define LINEAR_MIN_PARALLEL_MACS 65536.0

zq_status zq_linear_scratch_init(zq_linear_scratch *s, int max_m, int max_k)
{
    memset(s, 0, sizeof *s);
    if (max_m < 1 || max_k < 1)
        return zq_fail(ZQ_ERR_INVALID_ARG,
                       "linear scratch: max_m = %d and max_k = %d must both be positive", max_m,
                       max_k);
    s->q = zq_aligned_alloc((size_t)max_m * (size_t)max_k);
    s->scales = zq_aligned_alloc((size_t)max_m * sizeof *s->scales);
    if (!s->q || !s->scales) {
        zq_linear_scratch_free(s);
        return zq_fail(ZQ_ERR_NOMEM, "linear scratch: cannot allocate %d x %d int8 activations",
                       max_m, max_k);
    }
    s->max_m = max_m;
    s->max_k = max_k;
    return ZQ_OK;
}

zq_linear_scratch zq_linear_scratch_row(const zq_linear_scratch *s, int r)
{
    const zq_linear_scratch row = {s->q + (size_t)r * s->max_k, s->scales + r, 1, s->max_k};
    return row;
}

void zq_linear_scratch_free(zq_linear_scratch *s)
{
    if (!s)
        return;
    zq_aligned_free(s->q);
    zq_aligned_free(s->scales);
    memset(s, 0, sizeof *s);
}

/* Returns [*begin, *end), the part of [0, count) that thread t of nt owns, in whole units. */
static void thread_range(int count, int unit, int t, int nt, int *begin, int *end)
{
    const long long units = (count + unit - 1) / unit;
    const long long b = units * t / nt * unit, e = units * (t + 1) / nt * unit;
    *begin = (int)(b < count ? b : count);
    *end = (int)(e < count ? e : count);
}

static unsigned long long span_pack(unsigned front, unsigned back)
{
    return (unsigned long long)back << 32 | front;
}

/* Returns the number of LINEAR_ROW_UNIT units that cover n output rows. */
static int row_units(int n)
{
    return n / LINEAR_ROW_UNIT + (n % LINEAR_ROW_UNIT != 0);
}

/* The work that every thread of one zq_linear call shares. */
typedef struct {
    const zq_kernels *k;
    const zq_weight *w;
    const float *bias;
    const float *x; /* [M][K] */
    float *y;       /* [M][N] */
    int M, N, K;
    zq_linear_scratch *s;
    bool quantized; /* the activations are already in s, quantized before the threads start */
    zq_row_span *spans; /* one per thread that claims rows */
    int n_spans;
    const zq_post_op *post; /* NULL for none */
} linear_job;

/* Applies the job's post-op, if any, to output features [n0, n1). */
static void post_rows(const linear_job *job, int n0, int n1)
{
    if (job->post && n0 < n1)
        job->post->fn(job->y, (size_t)job->N, job->M, n0, n1, job->post->user);
}

/* Applies the job's post-op, if any, to all of y, split over the threads by features. */
static void post_all(const linear_job *job, int n_threads)
{
    if (!job->post)
        return;
    const int spans = (job->N + LINEAR_POST_SPAN - 1) / LINEAR_POST_SPAN;
#pragma omp parallel for num_threads(zq_resolve_threads(n_threads)) if (job->M > 1)
    for (int i = 0; i < spans; i++) {
        const int n0 = i * LINEAR_POST_SPAN;
        post_rows(job, n0, n0 + LINEAR_POST_SPAN < job->N ? n0 + LINEAR_POST_SPAN : job->N);
    }
}

static void add_bias(const linear_job *job, int n0, int n1)
{
    if (!job->bias)
        return;
    for (int m = 0; m < job->M; m++) {
        float *row = job->y + (size_t)m * job->N;
        for (int n = n0; n < n1; n++)
            row[n] += job->bias[n];
    }
}

static void float_rows(const linear_job *job, int n0, int n1)
{
    if (n0 >= n1)
        return;
    const size_t K = (size_t)job->K;
    if (job->w->type == ZQ_TYPE_F32) {
        const float *W = (const float *)job->w->data + (size_t)n0 * K;
        job->k->gemm_f32(job->M, n1 - n0, job->K, job->x, K, W, K, job->y + n0, job->N);
    } else {
        const uint16_t *W = (const uint16_t *)job->w->data + (size_t)n0 * K;
        job->k->gemm_f16(job->M, n1 - n0, job->K, job->x, K, W, K, job->y + n0, job->N);
    }
    add_bias(job, n0, n1);
}

/* ---- int8 weights (W8A8) ----------------------------------------------------------------- */

/* row[n] = acc[n] * w_scale[n] * x_scale + bias[n] for n < nc, rounded in that order; bias may
 * be NULL. Vectorized: one scalar pass took 3% of a decoded token's time on two threads. The
 * Makefile's -std=c11 keeps the compiler from fusing the last multiply and the add into an FMA
 * (-ffp-contract=off), which would change the last bit of some results. */
VECTOR_CLONES static void scale_row(const int32_t *acc, const float *w_scale, float x_scale,
                                    const float *bias, int nc, float *row)
{
    if (bias) {
        SIMD_LOOP
        for (int n = 0; n < nc; n++)
            row[n] = (float)acc[n] * w_scale[n] * x_scale + bias[n];
    } else {
        SIMD_LOOP
        for (int n = 0; n < nc; n++)
            row[n] = (float)acc[n] * w_scale[n] * x_scale;
    }
}

/* y rows [m0, m0 + mc) x features [n0, n0 + nc) from one scale per weight row:
 * y = acc * w_scale[n] * x_scale[m] + bias[n], in that order. The int32 tile is mc rows of ldc,
 * and mc * ldc must not exceed LINEAR_MC * LINEAR_NC. */
static void q8_tile_row_scales(const linear_job *job, int m0, int mc, int n0, int nc, int ldc)
{
    int32_t acc[LINEAR_MC * LINEAR_NC];
    const size_t K = (size_t)job->K;
    const int8_t *W = (const int8_t *)job->w->data + (size_t)n0 * K;
    job->k->gemm_s8(mc, nc, job->K, job->s->q + (size_t)m0 * K, K, W, K, acc, (size_t)ldc);

    const float *w_scale = job->w->scales + n0;
    const float *bias = job->bias ? job->bias + n0 : NULL;
    for (int m = 0; m < mc; m++)
        scale_row(acc + (size_t)m * ldc, w_scale, job->s->scales[m0 + m], bias, nc,
                  job->y + (size_t)(m0 + m) * job->N + n0);
}

/* As q8_tile_row_scales with one scale per group of columns: the int32 sum of each group is
 * scaled by its weight scale and the groups are added in float, in group order. */
static void q8_tile_group_scales(const linear_job *job, int m0, int mc, int n0, int nc)
{
    int32_t acc[LINEAR_MC * LINEAR_NC];
    float sum[LINEAR_MC * LINEAR_NC];
    const size_t K = (size_t)job->K, G = (size_t)job->w->group, n_groups = K / G;
    const int8_t *W = (const int8_t *)job->w->data + (size_t)n0 * K;
    const int8_t *Q = job->s->q + (size_t)m0 * K;
    memset(sum, 0, sizeof sum);

    for (size_t g = 0; g < n_groups; g++) {
        job->k->gemm_s8(mc, nc, (int)G, Q + g * G, K, W + g * G, K, acc, LINEAR_NC);
        for (int n = 0; n < nc; n++) {
            const float w_scale = job->w->scales[(size_t)(n0 + n) * n_groups + g];
            for (int m = 0; m < mc; m++)
                sum[m * LINEAR_NC + n] += (float)acc[m * LINEAR_NC + n] * w_scale;
        }
    }
    for (int m = 0; m < mc; m++) {
        const float x_scale = job->s->scales[m0 + m];
        float *row = job->y + (size_t)(m0 + m) * job->N + n0;
        for (int n = 0; n < nc; n++)
            row[n] = sum[m * LINEAR_NC + n] * x_scale;
        if (job->bias)
            for (int n = 0; n < nc; n++)
                row[n] += job->bias[n0 + n];
    }
}

static void q8_rows(const linear_job *job, int n0, int n1)
{
    if (job->M == 1 && job->w->group == 0) {
        /* One row fills the whole int32 tile, so each call covers LINEAR_MC * LINEAR_NC
         * features: the output head of a 21128-token vocabulary then takes 11 calls per
         * thread instead of 331. */
        const int wide = LINEAR_MC * LINEAR_NC;
        for (int nc0 = n0; nc0 < n1; nc0 += wide)
            q8_tile_row_scales(job, 0, 1, nc0, n1 - nc0 < wide ? n1 - nc0 : wide, wide);
        return;
    }
    for (int nc0 = n0; nc0 < n1; nc0 += LINEAR_NC) {
        const int nc = n1 - nc0 < LINEAR_NC ? n1 - nc0 : LINEAR_NC;
        for (int mc0 = 0; mc0 < job->M; mc0 += LINEAR_MC) {
            const int mc = job->M - mc0 < LINEAR_MC ? job->M - mc0 : LINEAR_MC;
            if (job->w->group > 0)
                q8_tile_group_scales(job, mc0, mc, nc0, nc);
            else
                q8_tile_row_scales(job, mc0, mc, nc0, nc, LINEAR_NC);
        }
    }
}

/* Splits the units that cover a product's output rows evenly over spans, one span per thread.
 * Returns the number of spans filled, which is below threads when there are fewer units. */
static int fill_spans(zq_row_span *spans, int rows, int threads)
{
    const int units = row_units(rows);
    int n = threads < units ? threads : units;
    if (n > ZQ_LINEAR_MAX_THREADS)
        n = ZQ_LINEAR_MAX_THREADS;
    for (int i = 0; i < n; i++) {
        int b, e;
        thread_range(units, 1, i, n, &b, &e);
        atomic_store_explicit(&spans[i].ends, span_pack((unsigned)b, (unsigned)e),
                              memory_order_relaxed);
    }
    return n;
}

/* Takes up to LINEAR_CLAIM units from the front of span sp into [*u0, *u1). Returns false if
 * the span is empty. */
static bool take_front(zq_row_span *sp, unsigned *u0, unsigned *u1)
{
    unsigned long long v = atomic_load_explicit(&sp->ends, memory_order_relaxed);
    for (;;) {
        const unsigned front = (unsigned)v, back = (unsigned)(v >> 32);
        if (front >= back)
            return false;
        const unsigned take = back - front < LINEAR_CLAIM ? back - front : LINEAR_CLAIM;
        if (atomic_compare_exchange_weak_explicit(&sp->ends, &v, span_pack(front + take, back),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            *u0 = front;
            *u1 = front + take;
            return true;
        }
    }
}

/* Moves the back half of the fullest span into span self, which is empty; false if every span
 * is. fill_spans writes a set of spans only before its product starts. During the product only
 * the owner stores to its span, and only while the span is empty, so no other thread takes from
 * it then. A compare-and-swap takes units only while the span's word equals the one the thread
 * read. The word alone gives the units in the span, so every unit goes to one thread, even when
 * a word comes back to an earlier value. */
static bool steal_half(const linear_job *job, int self)
{
    for (;;) {
        int victim = -1;
        unsigned largest = 0;
        unsigned long long seen = 0;
        for (int i = 0; i < job->n_spans; i++) {
            const unsigned long long v =
                atomic_load_explicit(&job->spans[i].ends, memory_order_relaxed);
            const unsigned front = (unsigned)v, back = (unsigned)(v >> 32);
            if (front < back && back - front > largest) {
                victim = i;
                largest = back - front;
                seen = v;
            }
        }
        if (victim < 0)
            return false;
        const unsigned front = (unsigned)seen, back = (unsigned)(seen >> 32);
        const unsigned half = (back - front + 1) / 2;
        if (atomic_compare_exchange_weak_explicit(&job->spans[victim].ends, &seen,
                                                  span_pack(front, back - half),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            atomic_store_explicit(&job->spans[self].ends, span_pack(back - half, back),
                                  memory_order_relaxed);
            return true;
        }
    }
}

/* Claims the next rows [*begin, *end) of the output for thread t, or returns false when none
 * are left. Each thread starts with an even share of the rows as its span. It walks the span
 * from the front, LINEAR_CLAIM units at a time, so that its reads stay one sequential stream.
 * When the span is empty, the thread takes the back half of the fullest one. With one claim of
 * a whole share per thread, one thread sat idle for up to a fifth of a decode product, because
 * the two cores of a 2-vCPU VM do not stream memory equally fast. Claims of 1/(2 nt) of what
 * was left interleaved the threads' rows and made decode 10% slower. */
static bool claim_rows(const linear_job *job, int t, int *begin, int *end)
{
    if (t >= job->n_spans)
        return false; /* a thread beyond the number of units */
    unsigned u0, u1;
    while (!take_front(&job->spans[t], &u0, &u1))
        if (!steal_half(job, t))
            return false;
    const long long stop = (long long)u1 * LINEAR_ROW_UNIT;
    *begin = (int)((long long)u0 * LINEAR_ROW_UNIT);
    *end = stop < job->N ? (int)stop : job->N;
    return true;
}

/* Runs on every thread of the team: quantize a share of the tokens, wait for all of them,
 * then compute output features until none are left. */
static void linear_thread(const linear_job *job, int t, int nt)
{
    int b, e;
    if (job->w->type == ZQ_TYPE_Q8 && !job->quantized) {
        thread_range(job->M, 1, t, nt, &b, &e);
        for (int m = b; m < e; m++)
            job->k->quantize_row_s8(job->x + (size_t)m * job->K, job->K,
                                    job->s->q + (size_t)m * job->K, &job->s->scales[m]);
        OMP_BARRIER
    }
    while (claim_rows(job, t, &b, &e)) {
        if (job->w->type == ZQ_TYPE_Q8)
            q8_rows(job, b, e);
        else
            float_rows(job, b, e);
        post_rows(job, b, e);
    }
}

static void linear_run(linear_job *job, int n_threads)
{
    const double macs = (double)job->M * job->N * job->K;
    const int units = row_units(job->N);
    int threads = macs < LINEAR_MIN_PARALLEL_MACS ? 1 : zq_resolve_threads(n_threads);
    if (threads > units)
        threads = units;
    if (threads > ZQ_LINEAR_MAX_THREADS)
        threads = ZQ_LINEAR_MAX_THREADS;
#ifndef ZQ_USE_OPENMP
    threads = 1;
#endif
    zq_row_span spans[ZQ_LINEAR_MAX_THREADS];
    job->spans = spans;
    job->n_spans = fill_spans(spans, job->N, threads);
#ifdef ZQ_USE_OPENMP
    if (threads <= 1) {
        /* Without a parallel region: even one that its if clause makes serial costs
         * microseconds. */
        linear_thread(job, 0, 1);
        return;
    }
#pragma omp parallel num_threads(threads)
    linear_thread(job, omp_get_thread_num(), omp_get_num_threads());
#else
    linear_thread(job, 0, 1);
#endif
}

/* Returns the table for int8 products of one row. The AVX-512 VNNI kernels decode a single
 * token about 25% slower than the AVX2 ones on AMD EPYC with AVX-512 (measured with zq bench
 * model, 1 thread, gpt2-distil shape: 150 vs 202 tokens/s), so one-row products use AVX2 there.
 * Both are exact in int32, so the choice never changes a result. */
static const zq_kernels *single_row_kernels(const zq_kernels *k)
{
    if (strcmp(k->name, "avx512vnni") != 0)
        return k;
    const zq_kernels *avx2 = zq_kernels_by_name("avx2");
    return avx2 ? avx2 : k;
}

void zq_linear(const zq_kernels *k, const zq_weight *w, const float *bias, const float *x, int M,
               float *y, zq_linear_scratch *s, int n_threads)
{
    zq_linear_post(k, w, bias, x, M, y, s, n_threads, NULL);
}

void zq_linear_post(const zq_kernels *k, const zq_weight *w, const float *bias, const float *x,
                    int M, float *y, zq_linear_scratch *s, int n_threads, const zq_post_op *post)
{
    if (M <= 0 || w->rows <= 0)
        return;
    linear_job job = {k, w, bias, x, y, M, w->rows, w->cols, s, false, NULL, 0, post};
    if (w->type == ZQ_TYPE_Q8 && M == 1)
        job.k = single_row_kernels(k);
    if (w->type != ZQ_TYPE_Q8) {
        linear_run(&job, n_threads);
        return;
    }

    /* The caller sizes the scratch; a smaller one is a bug in the caller, not bad input. */
    assert(s != NULL);
    assert(s->q != NULL);
    assert(w->cols <= s->max_k);
    assert(w->group == 0 || w->cols % w->group == 0);
    for (int m0 = 0; m0 < M; m0 += s->max_m) {
        job.M = M - m0 < s->max_m ? M - m0 : s->max_m;
        job.x = x + (size_t)m0 * w->cols;
        job.y = y + (size_t)m0 * w->rows;
        if (zq_linear_uses_dnnl(w, job.M, n_threads) &&
            zq_linear_dnnl(w, bias, job.x, job.M, job.y, s, n_threads)) {
            post_all(&job, n_threads);
            continue;
        }
        /* One row (decode) is quantized before the threads start: that costs a microsecond
         * and saves the barrier every thread would wait at. */
        job.quantized = job.M == 1;
        if (job.quantized)
            job.k->quantize_row_s8(job.x, job.K, s->q, &s->scales[0]);
        linear_run(&job, n_threads);
    }
}

void zq_linear_team_init(zq_linear_team *team, int step, int rows, int threads)
{
    team->n_spans[step & 1] = fill_spans(team->spans[step & 1], rows, threads);
}

#ifdef ZQ_USE_OPENMP
void zq_linear_team_run(zq_linear_team *team, int step, const zq_kernels *k, const zq_weight *w,
                        const float *bias, const float *x, float *y, zq_linear_scratch *own,
                        const zq_post_op *post, int next_rows)
{
    linear_job job = {.k = k,
                      .w = w,
                      .bias = bias,
                      .x = x,
                      .y = y,
                      .M = 1,
                      .N = w->rows,
                      .K = w->cols,
                      .s = own,
                      .spans = team->spans[step & 1],
                      .n_spans = team->n_spans[step & 1],
                      .post = post};
    if (w->type == ZQ_TYPE_Q8) {
        job.k = single_row_kernels(k);
        job.k->quantize_row_s8(x, w->cols, own->q, &own->scales[0]);
        job.quantized = true;
    }
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    linear_thread(&job, t, nt);
    /* The other set of spans is free: every thread passed the barrier after step - 1. */
    if (t == 0 && next_rows > 0)
        zq_linear_team_init(team, step + 1, next_rows, nt);
    OMP_BARRIER
}
#endif
