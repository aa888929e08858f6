/*
 * linear_dnnl.c - int8 linear layers through oneDNN's matmul (C API of oneDNN 2.6), used by
 * zq_linear where it is faster than ZQ's own kernels. The exactness scheme is described in
 * linear_dnnl.h.
 *
 * One primitive per weight shape (N, K) and thread count, with a run-time M, is created on
 * first use and kept in a process-wide cache, so prompts of any length reuse it. A full cache
 * (more than CACHE_MAX shapes) sends further shapes to ZQ's kernels. oneDNN computes
 * f32(sum_k (u[m][k] - zp) * w[n][k]) * w_scale[n] into y. This file then applies the token
 * scale and the bias in the same order as ZQ's own path, ((acc * w_scale) * x_scale) + bias.
 */
#include "linear_dnnl.h"

#include "internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(ZQ_USE_DNNL) && defined(__x86_64__)
#define ZQ_DNNL_PATH 1
#endif

static atomic_int dnnl_mode = ATOMIC_VAR_INIT(-2); /* -2: not read from ZQ_DNNL yet */

void zq_linear_set_dnnl(zq_dnnl_mode mode)
{
    atomic_store(&dnnl_mode, (int)mode);
}

static zq_dnnl_mode current_mode(void)
{
    int mode = atomic_load(&dnnl_mode);
    if (mode != -2)
        return (zq_dnnl_mode)mode;
    const char *env = getenv("ZQ_DNNL");
    mode = ZQ_DNNL_AUTO;
    if (env && strcmp(env, "0") == 0)
        mode = ZQ_DNNL_OFF;
    else if (env && strcmp(env, "1") == 0)
        mode = ZQ_DNNL_ON;
    else if (env && *env)
        ZQ_WARN("ZQ_DNNL=%s is not 0 or 1; choosing per shape", env);
    int unset = -2;
    atomic_compare_exchange_strong(&dnnl_mode, &unset, mode);
    return (zq_dnnl_mode)atomic_load(&dnnl_mode);
}

#ifndef ZQ_DNNL_PATH

bool zq_linear_dnnl_available(void)
{
    return false;
}

bool zq_linear_uses_dnnl(const zq_weight *w, int M, int n_threads)
{
    (void)current_mode;
    return false;
}

int zq_linear_dnnl_activation_max(void)
{
    return 127;
}

bool zq_linear_dnnl(const zq_weight *w, const float *bias, const float *x, int M, float *y,
                    zq_linear_scratch *s, int n_threads)
{
    return false;
}

#else /* ZQ_DNNL_PATH */

#include <emmintrin.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>

#ifdef ZQ_USE_OPENMP
#include <omp.h>
#endif

#define CACHE_MAX 64 /* distinct (N, K, threads); a GPT-2 has five shapes */

typedef struct {
    int N, K, threads;
    dnnl_primitive_t primitive;
} cached_primitive;

static struct {
    pthread_once_t once;
    dnnl_engine_t engine; /* NULL if oneDNN could not start */
    int act_max;          /* 127 or 63 */
    int zero_point;       /* act_max + 1: activations become u8 in [1, 2 * act_max + 1] */
    pthread_mutex_t lock;
    cached_primitive cache[CACHE_MAX];
    int n_cached;
    atomic_int failed; /* set after the first failure, which is logged */
} dnnl_state = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER};

/* Reports a oneDNN failure once per process and makes every later call use ZQ's kernels. */
static bool dnnl_failed(const char *what, dnnl_status_t status)
{
    if (!atomic_exchange(&dnnl_state.failed, 1))
        ZQ_WARN("oneDNN %s failed (status %d); using ZQ's own int8 kernels", what, (int)status);
    return false;
}

/* VNNI adds u8 x s8 products straight into int32; without it oneDNN's AVX2 kernels sum pairs
 * in int16 with saturation. NOTE: only avx512_core_bf16 was tested for exactness (extreme
 * values in test_linear). AVX-VNNI CPUs (avx2_vnni) take the safe 7-bit path because none was
 * available to check oneDNN 2.6's int8 kernels on. */
static bool isa_has_vnni(dnnl_cpu_isa_t isa)
{
    return isa == dnnl_cpu_isa_avx512_core_vnni || isa == dnnl_cpu_isa_avx512_core_bf16 ||
           isa == dnnl_cpu_isa_avx512_core_amx;
}

static void dnnl_init_once(void)
{
    dnnl_status_t st = dnnl_engine_create(&dnnl_state.engine, dnnl_cpu, 0);
    if (st != dnnl_success) {
        dnnl_state.engine = NULL;
        dnnl_failed("engine creation", st);
        return;
    }
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    dnnl_state.act_max = isa_has_vnni(isa) ? 127 : 63;
    dnnl_state.zero_point = dnnl_state.act_max + 1;
    ZQ_INFO("oneDNN int8 matmul: ISA 0x%x, activations quantized to [-%d, %d]", (unsigned)isa,
            dnnl_state.act_max, dnnl_state.act_max);
}

static bool dnnl_ready(void)
{
    pthread_once(&dnnl_state.once, dnnl_init_once);
    return dnnl_state.engine && !atomic_load(&dnnl_state.failed);
}

bool zq_linear_dnnl_available(void)
{
    return dnnl_ready();
}

int zq_linear_dnnl_activation_max(void)
{
    return dnnl_ready() ? dnnl_state.act_max : 127;
}

/* The automatic choice (see bench/KERNEL_CHOICE.md). With VNNI, oneDNN computes the same
 * numbers as ZQ's kernels and is faster from about 16 tokens on. Without VNNI it is faster
 * from about 32 tokens but only with 7-bit activations, which doubles their quantization error
 * and makes prefill disagree with decode, so it is left to ZQ_DNNL=1.
 * NOTE: the threshold was measured on one AMD EPYC (Zen 4) machine; other CPUs may differ. */
#define DNNL_MIN_M_VNNI 16

bool zq_linear_uses_dnnl(const zq_weight *w, int M, int n_threads)
{
    (void)n_threads;
    if (w->type != ZQ_TYPE_Q8 || w->group != 0)
        return false;
    const zq_dnnl_mode mode = current_mode();
    if (mode == ZQ_DNNL_OFF || !dnnl_ready())
        return false;
    if (mode == ZQ_DNNL_ON)
        return true;
    return dnnl_state.act_max == 127 && M >= DNNL_MIN_M_VNNI;
}

/* ---- primitives -------------------------------------------------------------------------- */

static dnnl_status_t create_primitive(int N, int K, dnnl_primitive_t *out)
{
    dnnl_memory_desc_t src, weights, dst;
    const dnnl_dims_t src_dims = {DNNL_RUNTIME_DIM_VAL, K}, w_dims = {K, N};
    const dnnl_dims_t dst_dims = {DNNL_RUNTIME_DIM_VAL, N};
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(&src, 2, src_dims, dnnl_u8, dnnl_ab);
    if (st == dnnl_success) /* ba: element (k, n) at n * K + k, i.e. ZQ's [N][K] rows */
        st = dnnl_memory_desc_init_by_tag(&weights, 2, w_dims, dnnl_s8, dnnl_ba);
    if (st == dnnl_success)
        st = dnnl_memory_desc_init_by_tag(&dst, 2, dst_dims, dnnl_f32, dnnl_ab);
    dnnl_matmul_desc_t desc;
    if (st == dnnl_success)
        st = dnnl_matmul_desc_init(&desc, &src, &weights, NULL, &dst);

    dnnl_primitive_attr_t attr = NULL;
    if (st == dnnl_success)
        st = dnnl_primitive_attr_create(&attr);
    const float runtime_scale = DNNL_RUNTIME_F32_VAL;
    if (st == dnnl_success) /* one scale per output column n, given at execution */
        st = dnnl_primitive_attr_set_output_scales(attr, 1, 1 << 1, &runtime_scale);
    const int32_t zero_point = dnnl_state.zero_point;
    if (st == dnnl_success)
        st = dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_SRC, 1, 0, &zero_point);

    dnnl_primitive_desc_t pd = NULL;
    if (st == dnnl_success)
        st = dnnl_primitive_desc_create(&pd, &desc, attr, dnnl_state.engine, NULL);
    if (st == dnnl_success)
        st = dnnl_primitive_create(out, pd);
    if (pd) {
        const char *impl = "?";
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        ZQ_DEBUG("oneDNN matmul N=%d K=%d: %s", N, K, impl);
        dnnl_primitive_desc_destroy(pd);
    }
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Returns the cached primitive for (N, K) on this many threads, creating it on first use;
 * NULL on failure. oneDNN's OpenMP build fixes a primitive's thread count when it creates
 * it (from omp_get_max_threads), so the count is part of the key and the caller must have
 * set it with omp_set_num_threads. */
static dnnl_primitive_t primitive_for(int N, int K, int threads)
{
    dnnl_primitive_t found = NULL;
    pthread_mutex_lock(&dnnl_state.lock);
    for (int i = 0; i < dnnl_state.n_cached && !found; i++) {
        const cached_primitive *c = &dnnl_state.cache[i];
        if (c->N == N && c->K == K && c->threads == threads)
            found = c->primitive;
    }
    if (!found && dnnl_state.n_cached < CACHE_MAX) {
        const dnnl_status_t st = create_primitive(N, K, &found);
        if (st == dnnl_success) {
            dnnl_state.cache[dnnl_state.n_cached++] = (cached_primitive){N, K, threads, found};
        } else {
            dnnl_failed("matmul creation", st);
            found = NULL;
        }
    }
    pthread_mutex_unlock(&dnnl_state.lock);
    return found;
}

/* ---- execution --------------------------------------------------------------------------- */

/* Quantizes one row to u8 = round(x / scale) + zero_point with scale = max|x| / act_max.
 * SSE2 is part of x86-64; cvtps2dq rounds half to even like the kernels' quantize_row_s8, and
 * with act_max = 127 the result is that function's output plus 128. */
static void quantize_row_u8(const float *x, int K, uint8_t *q, float *scale)
{
    const int act_max = dnnl_state.act_max;
    __m128 vmax = _mm_setzero_ps();
    const __m128 abs_mask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    int k = 0;
    for (; k + 4 <= K; k += 4)
        vmax = _mm_max_ps(_mm_and_ps(_mm_loadu_ps(x + k), abs_mask), vmax);
    float lanes[4], amax = 0.0f;
    _mm_storeu_ps(lanes, vmax);
    for (int i = 0; i < 4; i++)
        amax = lanes[i] > amax ? lanes[i] : amax;
    for (; k < K; k++)
        amax = fabsf(x[k]) > amax ? fabsf(x[k]) : amax;

    *scale = amax >= 1e-30f ? amax / (float)act_max : 0.0f;
    const float inv = *scale > 0.0f ? 1.0f / *scale : 0.0f;
    const __m128 vinv = _mm_set1_ps(inv);
    const __m128i lo = _mm_set1_epi16((short)-act_max), hi = _mm_set1_epi16((short)act_max);
    const __m128i zp = _mm_set1_epi16((short)dnnl_state.zero_point);
    for (k = 0; k + 8 <= K; k += 8) {
        __m128i a = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(x + k), vinv));
        __m128i b = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(x + k + 4), vinv));
        __m128i v = _mm_min_epi16(_mm_max_epi16(_mm_packs_epi32(a, b), lo), hi);
        _mm_storel_epi64((__m128i *)(q + k), _mm_packus_epi16(_mm_add_epi16(v, zp), v));
    }
    for (; k < K; k++) {
        float r = nearbyintf(x[k] * inv);
        r = r >= (float)act_max ? (float)act_max : r > (float)-act_max ? r : (float)-act_max;
        q[k] = (uint8_t)((int)r + dnnl_state.zero_point);
    }
}

static dnnl_status_t make_memory(dnnl_memory_t *mem, int rows, int cols, dnnl_data_type_t type,
                                 dnnl_format_tag_t tag, const void *data)
{
    const dnnl_dims_t dims = {rows, cols};
    dnnl_memory_desc_t md;
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(&md, cols ? 2 : 1, dims, type, tag);
    if (st != dnnl_success)
        return st;
    return dnnl_memory_create(mem, &md, dnnl_state.engine, (void *)data);
}

/* Runs the primitive on M rows with oneDNN's threads. */
static dnnl_status_t execute(dnnl_primitive_t prim, const zq_weight *w, const uint8_t *u, int M,
                             float *y)
{
    const int N = w->rows, K = w->cols;
    dnnl_memory_t mem[4] = {NULL, NULL, NULL, NULL};
    dnnl_status_t st = make_memory(&mem[0], M, K, dnnl_u8, dnnl_ab, u);
    if (st == dnnl_success)
        st = make_memory(&mem[1], K, N, dnnl_s8, dnnl_ba, w->data);
    if (st == dnnl_success)
        st = make_memory(&mem[2], M, N, dnnl_f32, dnnl_ab, y);
    if (st == dnnl_success)
        st = make_memory(&mem[3], N, 0, dnnl_f32, dnnl_a, w->scales);
    dnnl_stream_t stream = NULL;
    if (st == dnnl_success)
        st = dnnl_stream_create(&stream, dnnl_state.engine, dnnl_stream_default_flags);
    if (st == dnnl_success) {
        const dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, mem[0]},
                                         {DNNL_ARG_WEIGHTS, mem[1]},
                                         {DNNL_ARG_DST, mem[2]},
                                         {DNNL_ARG_ATTR_OUTPUT_SCALES, mem[3]}};
        st = dnnl_primitive_execute(prim, stream, 4, args);
        if (st == dnnl_success)
            st = dnnl_stream_wait(stream);
    }
    if (stream)
        dnnl_stream_destroy(stream);
    for (int i = 0; i < 4; i++)
        if (mem[i])
            dnnl_memory_destroy(mem[i]);
    return st;
}

/* y = y * x_scale[m] + bias[n], the part of the rescale that oneDNN did not do. */
static void finish_rows(const float *x_scale, const float *bias, int M, int N, float *y,
                        int n_threads)
{
#ifdef ZQ_USE_OPENMP
#pragma omp parallel for num_threads(zq_resolve_threads(n_threads)) schedule(static)
#endif
    for (int m = 0; m < M; m++) {
        float *row = y + (size_t)m * N;
        for (int n = 0; n < N; n++)
            row[n] *= x_scale[m];
        if (bias)
            for (int n = 0; n < N; n++)
                row[n] += bias[n];
    }
}

/* These two set omp_get_max_threads() of the calling thread, the value that oneDNN's OpenMP
 * build reads, to threads around the oneDNN call and restore it afterwards. */
static dnnl_primitive_t primitive_with_threads(const zq_weight *w, int threads)
{
#ifdef ZQ_USE_OPENMP
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    dnnl_primitive_t prim = primitive_for(w->rows, w->cols, threads);
    omp_set_num_threads(saved);
    return prim;
#else
    return primitive_for(w->rows, w->cols, threads);
#endif
}

static dnnl_status_t execute_with_threads(dnnl_primitive_t prim, const zq_weight *w,
                                          const uint8_t *u, int M, float *y, int threads)
{
#ifdef ZQ_USE_OPENMP
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    const dnnl_status_t st = execute(prim, w, u, M, y);
    omp_set_num_threads(saved);
    return st;
#else
    (void)threads;
    return execute(prim, w, u, M, y);
#endif
}

bool zq_linear_dnnl(const zq_weight *w, const float *bias, const float *x, int M, float *y,
                    zq_linear_scratch *s, int n_threads)
{
    if (!dnnl_ready() || M > s->max_m || w->cols > s->max_k)
        return false;
    const int threads = zq_resolve_threads(n_threads);
    dnnl_primitive_t prim = primitive_with_threads(w, threads);
    if (!prim)
        return false;

    uint8_t *u = (uint8_t *)s->q;
    for (int m = 0; m < M; m++)
        quantize_row_u8(x + (size_t)m * w->cols, w->cols, u + (size_t)m * w->cols,
                        &s->scales[m]);
    const dnnl_status_t st = execute_with_threads(prim, w, u, M, y, threads);
    if (st != dnnl_success)
        return dnnl_failed("matmul execution", st);
    finish_rows(s->scales, bias, M, w->rows, y, threads);
    return true;
}

#endif /* ZQ_DNNL_PATH */
