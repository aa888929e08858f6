/*
 * test_linear.c - zq_linear for f32, f16 and int8 weights against double-precision sums, and
 * its determinism: the same output for any thread count, any kernel table and any scratch
 * size. The seed is printed and can be set with ZQ_TEST_SEED.
 */
#include "../runtime/internal.h"
#include "../runtime/kernels.h"
#include "../runtime/linear_dnnl.h"
#include "support/check.h"

#include <stdint.h>
#include <string.h>

/* A float linear may differ from the exact double sum by this fraction of sum |x_k * w_k|. */
#define FLOAT_REL_TOL 1e-5
/* An int8 linear may differ from the double sum of its own quantized operands (q_x * q_w *
 * scales) by this fraction of the sum of magnitudes: float rounding of the rescale only. */
#define Q8_RESCALE_REL_TOL 1e-5

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static float rng_float(void) /* [-1, 1) */
{
    return (float)((double)(rng_next() >> 11) * 0x1.0p-52 - 1.0);
}

/* A weight matrix in every storage type, built from the same f32 values. */
typedef struct {
    int rows, cols, group;
    float *f32;
    uint16_t *f16;
    int8_t *q8;
    float *scales; /* [rows][cols / group] or [rows] */
    zq_weight w_f32, w_f16, w_q8;
} test_weights;

/* Quantizes each row, or each group of a row, with the reference kernel's rule. */
static void make_weights(test_weights *t, int rows, int cols, int group, float outlier)
{
    const int per_row = group ? cols / group : 1, span = group ? group : cols;
    t->rows = rows;
    t->cols = cols;
    t->group = group;
    t->f32 = zq_aligned_alloc((size_t)rows * cols * sizeof *t->f32);
    t->f16 = zq_aligned_alloc((size_t)rows * cols * sizeof *t->f16);
    t->q8 = zq_aligned_alloc((size_t)rows * cols);
    t->scales = zq_aligned_alloc((size_t)rows * per_row * sizeof *t->scales);
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        t->f32[i] = rng_float() * 0.1f;
    for (int r = 0; r < rows && outlier != 0; r++)
        t->f32[(size_t)r * cols + (r * 7) % cols] = outlier; /* one large weight per row */
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        t->f16[i] = zq_f32_to_f16(t->f32[i]);
    for (size_t s = 0; s < (size_t)rows * per_row; s++)
        zq_kernels_ref()->quantize_row_s8(t->f32 + s * span, span, t->q8 + s * span,
                                          &t->scales[s]);
    t->w_f32 = (zq_weight){ZQ_TYPE_F32, rows, cols, 0, t->f32, NULL};
    t->w_f16 = (zq_weight){ZQ_TYPE_F16, rows, cols, 0, t->f16, NULL};
    t->w_q8 = (zq_weight){ZQ_TYPE_Q8, rows, cols, group, t->q8, t->scales};
}

static void free_weights(test_weights *t)
{
    zq_aligned_free(t->f32);
    zq_aligned_free(t->f16);
    zq_aligned_free(t->q8);
    zq_aligned_free(t->scales);
}

static float *random_floats(size_t n, float magnitude)
{
    float *p = zq_aligned_alloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = rng_float() * magnitude;
    return p;
}

/* Runs zq_linear with its own scratch of max_m rows; returns a new [M][rows] buffer. */
static float *run_linear(const zq_kernels *k, const zq_weight *w, const float *bias,
                         const float *x, int M, int max_m, int threads)
{
    zq_linear_scratch s;
    float *y = zq_aligned_alloc((size_t)M * w->rows * sizeof *y);
    CHECK(zq_linear_scratch_init(&s, max_m, w->cols) == ZQ_OK, "scratch: %s", zq_last_error());
    zq_linear(k, w, bias, x, M, y, &s, threads);
    zq_linear_scratch_free(&s);
    return y;
}

/* ---- accuracy ---------------------------------------------------------------------------- */

static float half_value(const test_weights *t, size_t i)
{
    return zq_f16_to_f32(t->f16[i]);
}

static float float_value(const test_weights *t, size_t i)
{
    return t->f32[i];
}

/* Checks y against double sums over the weights that value() returns. */
static void check_float_linear(const char *what, const test_weights *t,
                               float (*value)(const test_weights *, size_t), const float *bias,
                               const float *x, int M, const float *y)
{
    int bad = 0;
    for (int m = 0; m < M && !bad; m++) {
        for (int n = 0; n < t->rows && !bad; n++) {
            double exact = bias ? bias[n] : 0, mag = bias ? fabs(bias[n]) : 0;
            for (int k = 0; k < t->cols; k++) {
                const double p = (double)x[(size_t)m * t->cols + k] *
                                 value(t, (size_t)n * t->cols + k);
                exact += p;
                mag += fabs(p);
            }
            const double got = y[(size_t)m * t->rows + n];
            if (!(fabs(got - exact) <= FLOAT_REL_TOL * mag + 1e-30)) {
                CHECK(0, "%s: y[%d][%d] = %.9g, exact %.9g", what, m, n, got, exact);
                bad = 1;
            }
        }
    }
}

static void test_linear_float(void)
{
    const int M = 5, N = 70, K = 45;
    test_weights t;
    make_weights(&t, N, K, 0, 0);
    float *x = random_floats((size_t)M * K, 2.0f), *bias = random_floats(N, 1.0f);
    const zq_kernels *best = zq_kernels_best();

    float *y = run_linear(best, &t.w_f32, bias, x, M, M, 2);
    check_float_linear("f32", &t, float_value, bias, x, M, y);
    zq_aligned_free(y);
    y = run_linear(best, &t.w_f16, bias, x, M, M, 2);
    check_float_linear("f16", &t, half_value, bias, x, M, y);
    zq_aligned_free(y);
    y = run_linear(best, &t.w_f32, NULL, x, M, M, 1);
    check_float_linear("f32 without bias", &t, float_value, NULL, x, M, y);
    zq_aligned_free(y);
    free_weights(&t);
    zq_aligned_free(x);
    zq_aligned_free(bias);
}

/* Returns w_scale for element (n, k) of a Q8 weight. */
static double q8_scale(const test_weights *t, int n, int k)
{
    if (!t->group)
        return t->scales[n];
    return t->scales[(size_t)n * (t->cols / t->group) + (size_t)(k / t->group)];
}

/* Checks an int8 linear two ways. Against the double sum of its own quantized operands it must
 * agree to float rounding. Against the f32 weights and activations it must stay within the
 * worst-case quantization error: |x| dw + |w| dx + dx dw per term, with dx, dw half a step. */
/* Quantizes a row to [-act_max, act_max] the way zq_linear does: scale = max|x| / act_max,
 * q = round half to even of x * (1 / scale). */
static void quantize_activations(const float *x, int K, int act_max, int8_t *q, float *scale)
{
    float amax = 0;
    for (int k = 0; k < K; k++)
        amax = fabsf(x[k]) > amax ? fabsf(x[k]) : amax;
    *scale = amax >= 1e-30f ? amax / (float)act_max : 0.0f;
    const float inv = *scale > 0 ? 1.0f / *scale : 0.0f;
    for (int k = 0; k < K; k++) {
        float r = nearbyintf(x[k] * inv);
        if (r > act_max)
            r = (float)act_max;
        if (r < -act_max)
            r = (float)-act_max;
        q[k] = (int8_t)r;
    }
}

static void check_q8_linear_bits(const char *what, const test_weights *t, const float *bias,
                                 const float *x, int M, const float *y, int act_max)
{
    int8_t *qx = malloc((size_t)t->cols);
    int bad = 0;
    for (int m = 0; m < M && !bad; m++) {
        float x_scale;
        const float *xr = x + (size_t)m * t->cols;
        quantize_activations(xr, t->cols, act_max, qx, &x_scale);
        for (int n = 0; n < t->rows && !bad; n++) {
            const double b = bias ? bias[n] : 0;
            double from_q = b, from_f = b, mag = fabs(b), bound = 0;
            for (int k = 0; k < t->cols; k++) {
                const size_t i = (size_t)n * t->cols + k;
                const double ws = q8_scale(t, n, k), xs = x_scale;
                const double p = (double)qx[k] * t->q8[i] * ws * xs;
                from_q += p;
                mag += fabs(p);
                from_f += (double)xr[k] * t->f32[i];
                bound += fabs(xr[k]) * ws / 2 + fabs(t->f32[i]) * xs / 2 + ws * xs / 4;
            }
            const double got = y[(size_t)m * t->rows + n];
            if (!(fabs(got - from_q) <= Q8_RESCALE_REL_TOL * mag + 1e-30)) {
                CHECK(0, "%s: y[%d][%d] = %.9g, quantized sum %.9g", what, m, n, got, from_q);
                bad = 1;
            }
            if (!(fabs(got - from_f) <= bound * 1.001 + Q8_RESCALE_REL_TOL * mag)) {
                CHECK(0, "%s: y[%d][%d] = %.9g, f32 sum %.9g, error bound %.3g", what, m, n, got,
                      from_f, bound);
                bad = 1;
            }
        }
    }
    free(qx);
}

/* Checks the output of ZQ's own int8 path, which quantizes activations to [-127, 127]. */
static void check_q8_linear(const char *what, const test_weights *t, const float *bias,
                            const float *x, int M, const float *y)
{
    check_q8_linear_bits(what, t, bias, x, M, y, 127);
}

static void test_linear_q8_row_scales(void)
{
    /* 1 x 4500 spans several of the wide tiles that one-row products use. */
    static const int shapes[][3] = {
        {1, 70, 45}, {1, 4500, 96}, {3, 33, 768}, {17, 100, 67}, {70, 48, 130}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        test_weights t;
        make_weights(&t, N, K, 0, 0);
        float *x = random_floats((size_t)M * K, 3.0f), *bias = random_floats(N, 1.0f);
        float *y = run_linear(zq_kernels_best(), &t.w_q8, bias, x, M, M, 2);
        char what[64];
        snprintf(what, sizeof what, "q8 rows M=%d N=%d K=%d", M, N, K);
        check_q8_linear(what, &t, bias, x, M, y);
        zq_aligned_free(y);
        zq_aligned_free(x);
        zq_aligned_free(bias);
        free_weights(&t);
    }
}

static void test_linear_q8_group_scales(void)
{
    static const int groups[] = {32, 64, 128};
    const int M = 9, N = 40, K = 256;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        test_weights t;
        make_weights(&t, N, K, groups[i], 0);
        float *x = random_floats((size_t)M * K, 3.0f), *bias = random_floats(N, 1.0f);
        float *y = run_linear(zq_kernels_best(), &t.w_q8, bias, x, M, M, 2);
        char what[64];
        snprintf(what, sizeof what, "q8 group %d", groups[i]);
        check_q8_linear(what, &t, bias, x, M, y);
        zq_aligned_free(y);
        zq_aligned_free(x);
        zq_aligned_free(bias);
        free_weights(&t);
    }
}

/* One group spanning the whole row takes the group code path but must give exactly the row
 * scale result: 0 + acc * w_scale equals acc * w_scale. */
static void test_linear_q8_one_group_equals_rows(void)
{
    const int M = 6, N = 35, K = 96;
    test_weights rows, one_group;
    const uint64_t seed = rng_state;
    make_weights(&rows, N, K, 0, 0);
    rng_state = seed;
    make_weights(&one_group, N, K, K, 0);
    float *x = random_floats((size_t)M * K, 1.0f), *bias = random_floats(N, 1.0f);
    float *y1 = run_linear(zq_kernels_best(), &rows.w_q8, bias, x, M, M, 1);
    float *y2 = run_linear(zq_kernels_best(), &one_group.w_q8, bias, x, M, M, 1);
    CHECK(memcmp(y1, y2, (size_t)M * N * sizeof *y1) == 0, "group = K differs from row scales");
    zq_aligned_free(y1);
    zq_aligned_free(y2);
    zq_aligned_free(x);
    zq_aligned_free(bias);
    free_weights(&rows);
    free_weights(&one_group);
}

/* Returns the RMS of y - x · W^T over the f32 weights. */
static double rms_error(const test_weights *t, const float *x, int M, const float *y)
{
    double sq = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < t->rows; n++) {
            double exact = 0;
            for (int k = 0; k < t->cols; k++)
                exact += (double)x[(size_t)m * t->cols + k] * t->f32[(size_t)n * t->cols + k];
            const double d = y[(size_t)m * t->rows + n] - exact;
            sq += d * d;
        }
    return sqrt(sq / ((double)M * t->rows));
}

/* With one large weight per row, a row scale spends most of the int8 range on it. Group scales
 * confine the loss to one group, so their error must be clearly smaller. */
static void test_linear_group_beats_rows_on_outliers(void)
{
    const int M = 8, N = 32, K = 256;
    test_weights rows, groups;
    const uint64_t seed = rng_state;
    make_weights(&rows, N, K, 0, 4.0f);
    rng_state = seed;
    make_weights(&groups, N, K, 32, 4.0f);
    float *x = random_floats((size_t)M * K, 1.0f);
    float *y_rows = run_linear(zq_kernels_best(), &rows.w_q8, NULL, x, M, M, 1);
    float *y_groups = run_linear(zq_kernels_best(), &groups.w_q8, NULL, x, M, M, 1);
    const double e_rows = rms_error(&rows, x, M, y_rows);
    const double e_groups = rms_error(&groups, x, M, y_groups);
    printf("# outlier rows: rms error %.3g with row scales, %.3g with groups of 32\n", e_rows,
           e_groups);
    CHECK(e_groups < 0.5 * e_rows, "group error %.3g not below half the row error %.3g",
          e_groups, e_rows);
    zq_aligned_free(y_rows);
    zq_aligned_free(y_groups);
    zq_aligned_free(x);
    free_weights(&rows);
    free_weights(&groups);
}

/* ---- determinism ------------------------------------------------------------------------- */

static const char *type_label(const zq_weight *w)
{
    if (w->type != ZQ_TYPE_Q8)
        return zq_type_name(w->type);
    return w->group ? "q8 group" : "q8 row";
}

/* Every weight type and several shapes: 1, 2 and 3 threads give the same bytes. */
static void test_linear_threads_bit_identical(void)
{
    static const int shapes[][3] = {
        {1, 100, 67}, {1, 768, 768}, {1, 4500, 96}, {37, 130, 96}, {70, 33, 64}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        test_weights t, tg;
        make_weights(&t, N, K, 0, 0);
        make_weights(&tg, N, K, K % 32 == 0 ? 32 : K, 0);
        float *x = random_floats((size_t)M * K, 2.0f), *bias = random_floats(N, 1.0f);
        const zq_weight *ws[] = {&t.w_f32, &t.w_f16, &t.w_q8, &tg.w_q8};
        for (size_t j = 0; j < 4; j++) {
            float *y1 = run_linear(zq_kernels_best(), ws[j], bias, x, M, M, 1);
            for (int threads = 2; threads <= 3; threads++) {
                float *yt = run_linear(zq_kernels_best(), ws[j], bias, x, M, M, threads);
                CHECK(memcmp(y1, yt, (size_t)M * N * sizeof *y1) == 0,
                      "%s M=%d N=%d K=%d: %d threads differ from 1", type_label(ws[j]), M, N, K,
                      threads);
                zq_aligned_free(yt);
            }
            zq_aligned_free(y1);
        }
        zq_aligned_free(x);
        zq_aligned_free(bias);
        free_weights(&t);
        free_weights(&tg);
    }
}

/* A scratch smaller than M makes zq_linear work in chunks of tokens. The int8 kernels are
 * exact and the rescale is the same, so every kernel table and every chunking gives the same
 * bytes. */
static void test_linear_q8_same_across_kernels_and_chunks(void)
{
    static const char *const names[] = {"ref", "avx2", "avx512vnni", "neon", "neondot"};
    const int M = 21, N = 50, K = 200;
    test_weights t, tg;
    make_weights(&t, N, K, 0, 0);
    make_weights(&tg, N, K, 40, 0);
    float *x = random_floats((size_t)M * K, 2.0f), *bias = random_floats(N, 1.0f);
    const zq_weight *ws[] = {&t.w_q8, &tg.w_q8};
    for (size_t j = 0; j < 2; j++) {
        float *want = run_linear(zq_kernels_ref(), ws[j], bias, x, M, M, 1);
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            const zq_kernels *k = zq_kernels_by_name(names[i]);
            if (!k)
                continue;
            float *y = run_linear(k, ws[j], bias, x, M, 4, 2);
            CHECK(memcmp(want, y, (size_t)M * N * sizeof *y) == 0,
                  "%s with kernels %s and 4-row scratch differs from ref", type_label(ws[j]),
                  names[i]);
            zq_aligned_free(y);
        }
        zq_aligned_free(want);
    }
    zq_aligned_free(x);
    zq_aligned_free(bias);
    free_weights(&t);
    free_weights(&tg);
}

static void test_linear_scratch_errors(void)
{
    zq_linear_scratch s;
    CHECK(zq_linear_scratch_init(&s, 0, 10) == ZQ_ERR_INVALID_ARG, "max_m 0 accepted");
    CHECK(s.q == NULL, "failed init left a buffer");
    CHECK(zq_linear_scratch_init(&s, 4, -1) == ZQ_ERR_INVALID_ARG, "max_k -1 accepted");
    zq_linear_scratch_free(&s);
    zq_linear_scratch_free(NULL);
}

/* ---- oneDNN path -------------------------------------------------------------------------- */

/* Runs zq_linear with the oneDNN path forced on, then restores ZQ's own path. */
static float *run_dnnl(const zq_weight *w, const float *bias, const float *x, int M, int threads)
{
    zq_linear_set_dnnl(ZQ_DNNL_ON);
    float *y = run_linear(zq_kernels_best(), w, bias, x, M, M, threads);
    zq_linear_set_dnnl(ZQ_DNNL_OFF);
    return y;
}

/* The test's activation quantizer must be the kernels' one, or the checks below prove
 * nothing about the oneDNN path. */
static void test_linear_quantizer_matches_kernels(void)
{
    const int K = 300;
    float *x = random_floats(K, 5.0f);
    int8_t q1[300], q2[300];
    float s1, s2;
    quantize_activations(x, K, 127, q1, &s1);
    zq_kernels_best()->quantize_row_s8(x, K, q2, &s2);
    CHECK(s1 == s2, "scale %.9g vs kernels %.9g", s1, s2);
    CHECK(memcmp(q1, q2, K) == 0, "test quantizer differs from quantize_row_s8");
    zq_aligned_free(x);
}

/* oneDNN's outputs against the double sum of its quantized operands and against f32. */
static void test_linear_dnnl_accuracy(void)
{
    if (!zq_linear_dnnl_available()) {
        printf("# oneDNN path not built; skipped\n");
        return;
    }
    const int act_max = zq_linear_dnnl_activation_max();
    printf("# oneDNN activations quantized to [-%d, %d]\n", act_max, act_max);
    static const int shapes[][3] = {{1, 70, 45}, {3, 33, 768}, {17, 100, 67}, {70, 48, 3072}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        test_weights t;
        make_weights(&t, N, K, 0, 0);
        float *x = random_floats((size_t)M * K, 3.0f), *bias = random_floats(N, 1.0f);
        float *y = run_dnnl(&t.w_q8, bias, x, M, 2);
        char what[64];
        snprintf(what, sizeof what, "oneDNN M=%d N=%d K=%d", M, N, K);
        check_q8_linear_bits(what, &t, bias, x, M, y, act_max);
        zq_aligned_free(y);
        zq_aligned_free(x);
        zq_aligned_free(bias);
        free_weights(&t);
    }
}

/* Weights of +-127 and activations at +-max make every product extreme: the case where
 * oneDNN's AVX2 kernels saturate int16 pair sums unless activations have 7 bits. */
static void test_linear_dnnl_extremes(void)
{
    if (!zq_linear_dnnl_available())
        return;
    const int act_max = zq_linear_dnnl_activation_max();
    static const int ks[] = {2, 33, 768, 3072};
    const int M = 3, N = 4;
    for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++) {
        const int K = ks[ik];
        int8_t *W = zq_aligned_alloc((size_t)N * K);
        float scales[4] = {1, 1, 1, 1}, *x = zq_aligned_alloc((size_t)M * K * sizeof *x);
        for (int k = 0; k < K; k++) {
            W[k] = 127;                               /* row 0: all +127 */
            W[K + k] = -127;                          /* row 1: all -127 */
            W[2 * K + k] = (int8_t)(k & 1 ? -127 : 127); /* row 2: alternating */
            W[3 * K + k] = (int8_t)(k & 2 ? -127 : 127); /* row 3: pairs of each sign */
            x[k] = 1.0f;                              /* token 0: all +max */
            x[K + k] = -1.0f;                         /* token 1: all -max */
            x[2 * K + k] = k & 1 ? -1.0f : 1.0f;      /* token 2: alternating */
        }
        const zq_weight w = {ZQ_TYPE_Q8, N, K, 0, W, scales};
        float *y = run_dnnl(&w, NULL, x, M, 1);
        for (int m = 0; m < M; m++) {
            for (int n = 0; n < N; n++) {
                long long acc = 0;
                for (int k = 0; k < K; k++)
                    acc += (long long)(x[(size_t)m * K + k] > 0 ? act_max : -act_max) *
                           W[(size_t)n * K + k];
                const double want = (double)acc / act_max;
                CHECK_NEAR(y[m * N + n], want, fabs(want) * 1e-6 + 1e-6);
            }
        }
        zq_aligned_free(y);
        zq_aligned_free(W);
        zq_aligned_free(x);
    }
}

/* Both paths against each other: equal within float rounding where oneDNN quantizes
 * activations to 8 bits like ZQ's kernels, within the sum of both quantization error bounds
 * where it uses 7 bits. */
static void test_linear_dnnl_matches_own_path(void)
{
    if (!zq_linear_dnnl_available())
        return;
    const int act_max = zq_linear_dnnl_activation_max();
    const int M = 40, N = 96, K = 768;
    test_weights t;
    make_weights(&t, N, K, 0, 0);
    float *x = random_floats((size_t)M * K, 3.0f), *bias = random_floats(N, 1.0f);
    float *own = run_linear(zq_kernels_best(), &t.w_q8, bias, x, M, M, 2);
    float *dnnl = run_dnnl(&t.w_q8, bias, x, M, 2);
    double worst = 0;
    for (int m = 0; m < M; m++) {
        float amax = 0;
        for (int k = 0; k < K; k++)
            amax = fmaxf(amax, fabsf(x[(size_t)m * K + k]));
        for (int n = 0; n < N; n++) {
            double mag = fabs(bias[n]), bound = 0;
            for (int k = 0; k < K; k++) {
                const double xv = x[(size_t)m * K + k], wv = t.f32[(size_t)n * K + k];
                mag += fabs(xv * wv);
                bound += fabs(wv) * (amax / 127.0 + amax / act_max) / 2;
            }
            const double tol = act_max == 127 ? Q8_RESCALE_REL_TOL * mag : bound;
            const double d = fabs((double)own[m * N + n] - dnnl[m * N + n]);
            worst = d / (tol + 1e-30) > worst ? d / (tol + 1e-30) : worst;
            CHECK(d <= tol, "y[%d][%d]: own %.9g, oneDNN %.9g, tolerance %.3g", m, n,
                  own[m * N + n], dnnl[m * N + n], tol);
        }
    }
    printf("# oneDNN vs own path: worst difference %.3g of the tolerance\n", worst);
    zq_aligned_free(own);
    zq_aligned_free(dnnl);
    zq_aligned_free(x);
    zq_aligned_free(bias);
    free_weights(&t);
}

static void test_linear_dnnl_threads_bit_identical(void)
{
    if (!zq_linear_dnnl_available())
        return;
    const int M = 33, N = 200, K = 768;
    test_weights t;
    make_weights(&t, N, K, 0, 0);
    float *x = random_floats((size_t)M * K, 2.0f), *bias = random_floats(N, 1.0f);
    float *y1 = run_dnnl(&t.w_q8, bias, x, M, 1);
    float *y2 = run_dnnl(&t.w_q8, bias, x, M, 2);
    CHECK(memcmp(y1, y2, (size_t)M * N * sizeof *y1) == 0, "oneDNN: 2 threads differ from 1");
    zq_aligned_free(y1);
    zq_aligned_free(y2);
    zq_aligned_free(x);
    zq_aligned_free(bias);
    free_weights(&t);
}

/* ZQ_DNNL modes: off never, on for every row-scale int8 weight, auto only where oneDNN keeps
 * 8-bit activations and M is large. Group scales and float weights never go to oneDNN. */
static void test_linear_dnnl_choice(void)
{
    test_weights t, tg;
    make_weights(&t, 16, 64, 0, 0);
    make_weights(&tg, 16, 64, 32, 0);
    const bool have = zq_linear_dnnl_available();
    const bool eight_bits = have && zq_linear_dnnl_activation_max() == 127;

    zq_linear_set_dnnl(ZQ_DNNL_OFF);
    CHECK(!zq_linear_uses_dnnl(&t.w_q8, 512, 1), "off: oneDNN chosen");
    zq_linear_set_dnnl(ZQ_DNNL_ON);
    CHECK(zq_linear_uses_dnnl(&t.w_q8, 1, 1) == have, "on: M = 1 not sent to oneDNN");
    CHECK(!zq_linear_uses_dnnl(&tg.w_q8, 512, 1), "on: group scales sent to oneDNN");
    CHECK(!zq_linear_uses_dnnl(&t.w_f32, 512, 1), "on: f32 weights sent to oneDNN");
    zq_linear_set_dnnl(ZQ_DNNL_AUTO);
    CHECK(!zq_linear_uses_dnnl(&t.w_q8, 1, 1), "auto: decode sent to oneDNN");
    CHECK(zq_linear_uses_dnnl(&t.w_q8, 512, 1) == eight_bits,
          "auto: prefill choice should be %s", eight_bits ? "oneDNN" : "own kernels");
    zq_linear_set_dnnl(ZQ_DNNL_OFF);
    free_weights(&t);
    free_weights(&tg);
}

/* ---- post-ops ---------------------------------------------------------------------------- */

/* A post-op that depends on the row and the feature: y[m][n] = y[m][n] * 0.5 + z[m][n], where
 * user is z [M][ld]. A post-op given the wrong rows or features leaves different values. */
static void halve_and_add(float *y, size_t ld, int M, int n0, int n1, void *user)
{
    const float *z = user;
    for (int m = 0; m < M; m++)
        for (int n = n0; n < n1; n++)
            y[(size_t)m * ld + n] = y[(size_t)m * ld + n] * 0.5f + z[(size_t)m * ld + n];
}

/* zq_linear_post with a post-op on threads gives what zq_linear then the post-op over all of y
 * gives, bit for bit. */
static void check_post_op(const char *what, const zq_weight *w, const float *bias, int M,
                          int threads, bool dnnl)
{
    float *x = random_floats((size_t)M * w->cols, 2.0f);
    float *z = random_floats((size_t)M * w->rows, 1.0f);
    float *want = run_linear(zq_kernels_best(), w, bias, x, M, M, 1);
    halve_and_add(want, (size_t)w->rows, M, 0, w->rows, z);

    float *got = zq_aligned_alloc((size_t)M * w->rows * sizeof *got);
    zq_linear_scratch s;
    CHECK(zq_linear_scratch_init(&s, M, w->cols) == ZQ_OK, "scratch: %s", zq_last_error());
    const zq_post_op post = {halve_and_add, z};
    zq_linear_set_dnnl(dnnl ? ZQ_DNNL_ON : ZQ_DNNL_OFF);
    zq_linear_post(zq_kernels_best(), w, bias, x, M, got, &s, threads, &post);
    zq_linear_set_dnnl(ZQ_DNNL_OFF);
    CHECK(memcmp(got, want, (size_t)M * w->rows * sizeof *got) == 0,
          "%s, M = %d, %d threads%s: post-op result differs", what, M, threads,
          dnnl ? ", oneDNN" : "");
    zq_linear_scratch_free(&s);
    zq_aligned_free(x);
    zq_aligned_free(z);
    zq_aligned_free(want);
    zq_aligned_free(got);
}

static void test_linear_post_op_every_feature_once(void)
{
    test_weights t;
    make_weights(&t, 600, 96, 0, 0);
    float *bias = random_floats(600, 0.5f);
    static const int ms[] = {1, 3, 40};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        for (int threads = 1; threads <= 3; threads++) {
            check_post_op("f32", &t.w_f32, bias, ms[i], threads, false);
            check_post_op("f16", &t.w_f16, bias, ms[i], threads, false);
            check_post_op("int8", &t.w_q8, bias, ms[i], threads, false);
            if (zq_linear_dnnl_available())
                check_post_op("int8", &t.w_q8, bias, ms[i], threads, true);
        }
    }
    zq_aligned_free(bias);
    free_weights(&t);

    /* A tall matrix: each thread's share takes several claims, and threads that finish first
     * take halves of the others' shares, down to single units of 16 rows. */
    test_weights tall;
    make_weights(&tall, 5000, 32, 0, 0);
    bias = random_floats(5000, 0.5f);
    for (int threads = 2; threads <= 5; threads++) {
        check_post_op("tall int8", &tall.w_q8, bias, 1, threads, false);
        check_post_op("tall f32", &tall.w_f32, bias, 2, threads, false);
    }
    zq_aligned_free(bias);
    free_weights(&tall);
}

int main(void)
{
    const char *env = getenv("ZQ_TEST_SEED");
    const uint64_t seed = env && *env ? strtoull(env, NULL, 0) : 20240612;
    rng_state = seed;
    printf("# test_linear seed %llu (set ZQ_TEST_SEED to repeat), kernels %s\n",
           (unsigned long long)seed, zq_kernels_best()->name);

    /* Tests use ZQ's own kernels unless they select oneDNN themselves, whatever ZQ_DNNL is. */
    zq_linear_set_dnnl(ZQ_DNNL_OFF);
    ZQ_RUN(test_linear_scratch_errors);
    ZQ_RUN(test_linear_float);
    ZQ_RUN(test_linear_q8_row_scales);
    ZQ_RUN(test_linear_q8_group_scales);
    ZQ_RUN(test_linear_q8_one_group_equals_rows);
    ZQ_RUN(test_linear_group_beats_rows_on_outliers);
    ZQ_RUN(test_linear_threads_bit_identical);
    ZQ_RUN(test_linear_q8_same_across_kernels_and_chunks);
    ZQ_RUN(test_linear_quantizer_matches_kernels);
    ZQ_RUN(test_linear_dnnl_accuracy);
    ZQ_RUN(test_linear_dnnl_extremes);
    ZQ_RUN(test_linear_dnnl_matches_own_path);
    ZQ_RUN(test_linear_dnnl_threads_bit_identical);
    ZQ_RUN(test_linear_dnnl_choice);
    ZQ_RUN(test_linear_post_op_every_feature_once);
    ZQ_CHECK_EXIT();
}
