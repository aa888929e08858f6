/*
 * test_kernels.c - every kernel table this CPU supports against the portable reference:
 * int8 GEMM and quantization exactly, f32/f16 GEMM and dot products within named tolerances
 * of a double-precision sum. Random data comes from a seeded generator; the seed is printed
 * and can be set with ZQ_TEST_SEED.
 */
#include "../runtime/internal.h"
#include "../runtime/kernels_impl.h"
#include "support/check.h"

#include <float.h>
#include <stdint.h>
#include <string.h>

/* A float GEMM element may differ from the exact sum by this fraction of sum |a_k * w_k|: a
 * few units of float rounding (6e-8) times sqrt(K) for K up to 3072, with margin. */
#define GEMM_FLOAT_REL_TOL 1e-5
/* axpy multiplies and adds like the reference, so only an FMA-contracting build differs. */
#define AXPY_REL_TOL 1e-6

static const char *const variant_names[] = {"avx2", "avx512vnni", "neon", "neondot"};

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int rng_int(int lo, int hi) /* inclusive */
{
    return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1));
}

static float rng_float(void) /* [-1, 1) */
{
    return (float)((double)(rng_next() >> 11) * 0x1.0p-52 - 1.0);
}

static void fill_s8(int8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (int8_t)rng_int(-127, 127);
}

static void fill_f32(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = rng_float();
}

/* Calls fn for every supported variant other than the reference. */
static void for_each_variant(void (*fn)(const zq_kernels *k))
{
    for (size_t i = 0; i < sizeof variant_names / sizeof variant_names[0]; i++) {
        const zq_kernels *k = zq_kernels_by_name(variant_names[i]);
        if (k)
            fn(k);
    }
}

/* ---- int8 GEMM --------------------------------------------------------------------------- */

#define GUARD 0x5a5a5a5a

/* Runs gemm_s8 of k and of the reference on the same operands, with row strides larger than
 * K and N, and checks that C matches exactly and that the padding of C is left alone. */
static int compare_gemm_s8(const zq_kernels *k, int M, int N, int K, const int8_t *A,
                           const int8_t *W, size_t lda, size_t ldw)
{
    const size_t ldc = (size_t)N + 3;
    int32_t *got = malloc((size_t)M * ldc * sizeof *got);
    int32_t *want = malloc((size_t)M * ldc * sizeof *want);
    for (size_t i = 0; i < (size_t)M * ldc; i++)
        got[i] = want[i] = GUARD;
    zq_kernels_ref()->gemm_s8(M, N, K, A, lda, W, ldw, want, ldc);
    k->gemm_s8(M, N, K, A, lda, W, ldw, got, ldc);

    int bad = 0;
    for (size_t i = 0; i < (size_t)M * ldc && !bad; i++) {
        if (got[i] != want[i]) {
            CHECK(got[i] == want[i], "%s gemm_s8 M=%d N=%d K=%d: C[%zu][%zu] = %d, want %d",
                  k->name, M, N, K, i / ldc, i % ldc, got[i], want[i]);
            bad = 1;
        }
    }
    free(got);
    free(want);
    return bad;
}

static void gemm_s8_random_variant(const zq_kernels *k)
{
    static const int ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 64};
    static const int ns[] = {1, 3, 7, 9, 17, 33, 67};
    int ks[71];
    int n_ks = 0;
    for (int K = 1; K <= 67; K++)
        ks[n_ks++] = K;
    ks[n_ks++] = 768;
    ks[n_ks++] = 3072;
    /* Either side of the row length from which the AVX2 one-row tile reads rows one by one,
     * with a tail after the last 32 bytes. */
    ks[n_ks++] = 2047;
    ks[n_ks++] = 2065;

    const size_t max_k = 3072 + 5, max_m = 64, max_n = 67;
    int8_t *A = malloc(max_m * max_k), *W = malloc(max_n * max_k);
    fill_s8(A, max_m * max_k);
    fill_s8(W, max_n * max_k);
    int failures = 0;
    for (int ik = 0; ik < n_ks; ik++) {
        const int K = ks[ik];
        /* Large K runs every M but fewer N, to keep the reference's work small. */
        const int n_count = K > 67 ? 3 : (int)(sizeof ns / sizeof ns[0]);
        for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++)
            for (int in = 0; in < n_count; in++)
                failures += compare_gemm_s8(k, ms[im], ns[in], K, A, W, (size_t)K + 5,
                                            (size_t)K + 1);
    }
    CHECK(failures == 0, "%s: %d gemm_s8 shapes differ from the reference", k->name, failures);
    free(A);
    free(W);
}

static void test_gemm_s8_random(void)
{
    for_each_variant(gemm_s8_random_variant);
}

/* Fills A and W with one extreme pattern: value a (or -a on odd k when alternate is set). */
static void fill_pattern(int8_t *p, size_t n, int value, int alternate)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (int8_t)(alternate && (i & 1) ? -value : value);
}

/* All-extreme operands push every vpmaddubsw pair sum to +-2 * 127 * 127, the case where an
 * unsigned x signed scheme without the sign trick saturates. */
static void gemm_s8_extremes_variant(const zq_kernels *k)
{
    static const int patterns[][4] = {
        /* a value, a alternates, w value, w alternates */
        {127, 0, 127, 0},  {127, 0, -127, 0}, {-127, 0, -127, 0}, {-127, 0, 127, 0},
        {127, 1, 127, 1},  {127, 1, -127, 1}, {127, 1, 127, 0},   {0, 0, -127, 0},
    };
    static const int ks[] = {1, 31, 32, 33, 63, 64, 65, 768, 3072};
    const int M = 5, N = 9;
    for (size_t ip = 0; ip < sizeof patterns / sizeof patterns[0]; ip++) {
        const int *p = patterns[ip];
        for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++) {
            const int K = ks[ik];
            int8_t *A = malloc((size_t)M * K), *W = malloc((size_t)N * K);
            fill_pattern(A, (size_t)M * K, p[0], p[1]);
            fill_pattern(W, (size_t)N * K, p[2], p[3]);
            int32_t C[5 * 9];
            k->gemm_s8(M, N, K, A, (size_t)K, W, (size_t)K, C, N);
            /* Every row has the same pattern, so the exact sum has a closed form. */
            long long want = 0;
            for (int i = 0; i < K; i++)
                want += (long long)A[i] * W[i];
            CHECK_EQ_INT(C[0], want);
            CHECK_EQ_INT(C[M * N - 1], want);
            compare_gemm_s8(k, M, N, K, A, W, (size_t)K, (size_t)K);
            free(A);
            free(W);
        }
    }
}

static void test_gemm_s8_extremes(void)
{
    for_each_variant(gemm_s8_extremes_variant);
}

/* ---- quantization ------------------------------------------------------------------------ */

static void check_quantized(const zq_kernels *k, const float *x, int K, const char *what)
{
    int8_t *got = malloc((size_t)K + 1), *want = malloc((size_t)K + 1);
    float got_scale = -1, want_scale = -1;
    zq_kernels_ref()->quantize_row_s8(x, K, want, &want_scale);
    k->quantize_row_s8(x, K, got, &got_scale);

    CHECK(memcmp(&got_scale, &want_scale, sizeof got_scale) == 0,
          "%s quantize %s K=%d: scale %.9g, want %.9g", k->name, what, K, got_scale, want_scale);
    int first_diff = -1, out_of_range = 0;
    for (int i = 0; i < K; i++) {
        if (got[i] != want[i] && first_diff < 0)
            first_diff = i;
        out_of_range += got[i] < -127 || want[i] < -127;
    }
    CHECK(first_diff < 0, "%s quantize %s K=%d: q[%d] = %d, want %d", k->name, what, K, first_diff,
          first_diff < 0 ? 0 : got[first_diff], first_diff < 0 ? 0 : want[first_diff]);
    CHECK(out_of_range == 0, "%s quantize %s K=%d: %d values are -128", k->name, what, K,
          out_of_range);
    free(got);
    free(want);
}

/* The reference itself: |x - q * scale| <= scale / 2 for finite rows, max maps to +-127. */
static void test_quantize_ref_bounds(void)
{
    const zq_kernels *ref = zq_kernels_ref();
    for (int trial = 0; trial < 200; trial++) {
        const int K = rng_int(1, 300);
        float x[300];
        int8_t q[300];
        float scale;
        const float magnitude = (float)rng_int(1, 1000) * 0.01f;
        for (int i = 0; i < K; i++)
            x[i] = rng_float() * magnitude;
        ref->quantize_row_s8(x, K, q, &scale);
        float amax = 0;
        for (int i = 0; i < K; i++)
            amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        CHECK(scale == amax / 127.0f, "K=%d: scale %.9g, want %.9g", K, scale, amax / 127.0f);
        for (int i = 0; i < K; i++) {
            CHECK(q[i] >= -127, "q[%d] = %d", i, q[i]);
            CHECK(q[i] <= 127, "q[%d] = %d", i, q[i]);
            CHECK(fabsf(x[i] - q[i] * scale) <= scale * 0.5f * (1 + 1e-5f) + FLT_MIN,
                  "K=%d x[%d] = %.9g q = %d scale %.9g", K, i, x[i], q[i], scale);
            if (fabsf(x[i]) == amax)
                CHECK(abs(q[i]) == 127, "max element %.9g quantized to %d", x[i], q[i]);
        }
    }
}

static void quantize_variant(const zq_kernels *k)
{
    static const int ks[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 768, 3072};
    float *x = malloc(3072 * sizeof *x);
    for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++) {
        const int K = ks[ik];
        fill_f32(x, (size_t)K);
        check_quantized(k, x, K, "random");
        /* The largest magnitude on the negative side must give -127, not -128. */
        x[K / 2] = -3.0f;
        check_quantized(k, x, K, "negative max");
        x[K / 2] = -1e30f;
        check_quantized(k, x, K, "-1e30");
        x[K - 1] = 1e30f;
        check_quantized(k, x, K, "+-1e30");
        /* Exact ties: with max 127, x = i + 0.5 lands halfway and must round to even. */
        for (int i = 0; i < K; i++)
            x[i] = (float)(i % 255 - 127) + (i % 3 == 0 ? 0.5f : 0.0f);
        x[0] = 127.0f;
        check_quantized(k, x, K, "ties");
        fill_f32(x, (size_t)K);
        x[K / 3] = NAN; /* skipped by the max, quantized to -127 */
        check_quantized(k, x, K, "nan among random");
        memset(x, 0, (size_t)K * sizeof *x);
        check_quantized(k, x, K, "zeros");
        x[K - 1] = 1e-38f;
        check_quantized(k, x, K, "tiny");
        x[0] = INFINITY;
        check_quantized(k, x, K, "inf");
        x[0] = NAN;
        check_quantized(k, x, K, "nan");
    }
    free(x);
}

static void test_quantize_variants(void)
{
    for_each_variant(quantize_variant);
}

static void test_quantize_extremes_ref(void)
{
    const zq_kernels *ref = zq_kernels_ref();
    float x[5] = {-1e30f, 1.0f, 0.0f, -1.0f, 1e20f};
    int8_t q[5];
    float scale;
    ref->quantize_row_s8(x, 5, q, &scale);
    CHECK_EQ_INT(q[0], -127);
    CHECK_EQ_INT(q[2], 0);
    CHECK(scale > 0, "scale %.9g", scale);
    CHECK(isfinite(scale), "scale %.9g", scale);

    float zeros[4] = {0};
    ref->quantize_row_s8(zeros, 4, q, &scale);
    CHECK(scale == 0.0f, "all-zero row: scale %.9g, want 0", scale);
    CHECK_EQ_INT(q[0], 0);
    CHECK_EQ_INT(q[3], 0);

    float nan_row[3] = {NAN, 2.0f, -2.0f};
    ref->quantize_row_s8(nan_row, 3, q, &scale);
    CHECK_EQ_INT(q[0], -127);
    CHECK_EQ_INT(q[1], 127);
    CHECK_EQ_INT(q[2], -127);
}

/* ---- float GEMMs ------------------------------------------------------------------------- */

/* Checks C (from k->gemm_f32 or gemm_f16) against double sums: finite and within
 * GEMM_FLOAT_REL_TOL of sum |a_k * w_k|. wf contains the weights as floats. */
static int check_float_gemm(const char *name, const char *type, int M, int N, int K,
                            const float *A, const float *wf, const float *C, size_t ldc)
{
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            double exact = 0, mag = 0;
            for (int i = 0; i < K; i++) {
                exact += (double)A[(size_t)m * K + i] * wf[(size_t)n * K + i];
                mag += fabs((double)A[(size_t)m * K + i] * wf[(size_t)n * K + i]);
            }
            const double got = C[(size_t)m * ldc + n];
            if (!isfinite(got) || fabs(got - exact) > GEMM_FLOAT_REL_TOL * mag + 1e-30) {
                CHECK(0, "%s gemm_%s M=%d N=%d K=%d C[%d][%d] = %.9g, exact %.9g", name, type, M,
                      N, K, m, n, got, exact);
                return 1;
            }
        }
    }
    return 0;
}

static void float_gemm_shape(const zq_kernels *k, int M, int N, int K)
{
    float *A = malloc((size_t)M * K * sizeof *A), *W = malloc((size_t)N * K * sizeof *W);
    uint16_t *Wh = malloc((size_t)N * K * sizeof *Wh);
    float *Whf = malloc((size_t)N * K * sizeof *Whf);
    float *C = malloc((size_t)M * N * sizeof *C);
    fill_f32(A, (size_t)M * K);
    fill_f32(W, (size_t)N * K);
    for (size_t i = 0; i < (size_t)N * K; i++) {
        Wh[i] = zq_f32_to_f16(W[i]);
        Whf[i] = zq_f16_to_f32(Wh[i]);
    }

    k->gemm_f32(M, N, K, A, (size_t)K, W, (size_t)K, C, (size_t)N);
    check_float_gemm(k->name, "f32", M, N, K, A, W, C, (size_t)N);
    k->gemm_f16(M, N, K, A, (size_t)K, Wh, (size_t)K, C, (size_t)N);
    check_float_gemm(k->name, "f16", M, N, K, A, Whf, C, (size_t)N);
    free(A);
    free(W);
    free(Wh);
    free(Whf);
    free(C);
}

static void float_gemm_variant(const zq_kernels *k)
{
    static const int ms[] = {1, 2, 3, 4, 5, 9, 17};
    static const int ns[] = {1, 3, 9, 17};
    static const int ks[] = {1, 2, 7, 8, 9, 15, 16, 17, 33, 67, 768, 3072};
    for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++)
        for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++)
            for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
                float_gemm_shape(k, ms[im], ns[in], ks[ik]);
}

static void test_gemm_float(void)
{
    float_gemm_variant(zq_kernels_ref());
    for_each_variant(float_gemm_variant);
}

/* An element that is one weight times 1.0 equals that weight, so this checks the hardware
 * half-to-float conversion against zq_f16_to_f32 on all finite halfs. */
static void f16_convert_variant(const zq_kernels *k)
{
    uint16_t *W = malloc(65536 * sizeof *W);
    float *C = malloc(65536 * sizeof *C);
    const float one = 1.0f;
    for (int i = 0; i < 65536; i++)
        W[i] = (uint16_t)i;
    k->gemm_f16(1, 65536, 1, &one, 1, W, 1, C, 65536);
    int bad = 0;
    for (int i = 0; i < 65536 && bad < 3; i++) {
        const float want = zq_f16_to_f32((uint16_t)i);
        if (isnan(want))
            continue;
        if (C[i] != want) {
            CHECK(C[i] == want, "%s: half 0x%04x -> %.9g, want %.9g", k->name, i, C[i], want);
            bad++;
        }
    }
    free(W);
    free(C);
}

static void test_gemm_f16_conversion(void)
{
    for_each_variant(f16_convert_variant);
}

/* The row conversions of the f16 KV cache must give the reference's bits in every table, NaN
 * included. The cases are all 65536 halfs to f32, then f32 values around every half (midpoints,
 * which round to even, and their neighbours), out-of-range values, and lengths with tails. */
static void row_convert_variant(const zq_kernels *k)
{
    enum { N = 65536 };
    uint16_t *h = malloc(N * sizeof *h), *got16 = malloc(4 * N * sizeof *got16);
    float *want = malloc(N * sizeof *want), *got = malloc(N * sizeof *got);
    float *x = malloc(4 * N * sizeof *x);
    for (int i = 0; i < N; i++)
        h[i] = (uint16_t)i;
    zq_kernels_ref()->f16_to_f32(h, want, N);
    k->f16_to_f32(h, got, N);
    CHECK(memcmp(got, want, N * sizeof *got) == 0, "%s: f16_to_f32 differs from the reference",
          k->name);

    for (int i = 0; i < N; i++) {
        float lo = want[i], hi = want[(i + 1) % N];
        uint32_t bits;
        memcpy(&bits, &lo, sizeof bits);
        bits += i % 3 == 0 ? 1 : 0;
        memcpy(&x[4 * i], &bits, sizeof bits);
        x[4 * i + 1] = (lo + hi) / 2; /* a tie when both are finite and of one sign */
        x[4 * i + 2] = lo * 65536.0f; /* overflows to infinity */
        x[4 * i + 3] = lo * 1e-9f;    /* underflows to a subnormal half or zero */
    }
    static const size_t lengths[] = {4 * N, 1, 7, 15, 17, 33};
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        const size_t n = lengths[l];
        uint16_t want16[4 * N > 64 ? 64 : 1];
        if (n > 64) {
            uint16_t *ref16 = malloc(n * sizeof *ref16);
            zq_kernels_ref()->f32_to_f16(x, ref16, n);
            k->f32_to_f16(x, got16, n);
            size_t i = 0;
            while (i < n && got16[i] == ref16[i])
                i++;
            CHECK(i == n, "%s: f32_to_f16(%.9g) = 0x%04x, want 0x%04x", k->name, x[i < n ? i : 0],
                  got16[i < n ? i : 0], ref16[i < n ? i : 0]);
            free(ref16);
            continue;
        }
        memset(got16, 0xab, 64 * sizeof *got16);
        zq_kernels_ref()->f32_to_f16(x + 8, want16, n);
        k->f32_to_f16(x + 8, got16, n);
        CHECK(memcmp(got16, want16, n * sizeof *got16) == 0, "%s: f32_to_f16 n=%zu differs",
              k->name, n);
        CHECK(got16[n] == 0xabab, "%s: f32_to_f16 n=%zu wrote past the end", k->name, n);
    }
    free(h);
    free(got16);
    free(want);
    free(got);
    free(x);
}

static void test_row_conversions(void)
{
    for_each_variant(row_convert_variant);
}

/* The attention kernels of an f16 cache must give the reference's bits. The cases cover head
 * sizes that take the vector path (64, 8) and one that falls back (12), head counts that do not
 * fill a group of eight, and from 1 to 70 rows. */
static void attn_f16_variant(const zq_kernels *k)
{
    static const int shapes[][3] = {{12, 64, 70}, {3, 8, 5}, {9, 64, 1}, {5, 12, 9}, {1, 64, 4}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int heads = shapes[s][0], hd = shapes[s][1], n = shapes[s][2];
        const size_t d = (size_t)heads * hd, ld = (size_t)n + 3;
        float *q = malloc(d * sizeof *q), *w = malloc(heads * ld * sizeof *w);
        float *x = malloc(n * d * sizeof *x);
        uint16_t *rows = malloc(n * d * sizeof *rows);
        float *want = calloc(heads * ld + d, sizeof *want),
              *got = calloc(heads * ld + d, sizeof *got);
        fill_f32(q, d);
        fill_f32(w, heads * ld);
        fill_f32(x, n * d);
        zq_kernels_ref()->f32_to_f16(x, rows, n * d);

        zq_kernels_ref()->attn_scores_f16(q, rows, n, heads, hd, want, ld);
        k->attn_scores_f16(q, rows, n, heads, hd, got, ld);
        CHECK(memcmp(got, want, heads * ld * sizeof *got) == 0,
              "%s: attention scores differ, %d heads of %d, %d rows", k->name, heads, hd, n);
        fill_f32(want + heads * ld, d);
        memcpy(got + heads * ld, want + heads * ld, d * sizeof *got);
        zq_kernels_ref()->attn_values_f16(w, ld, rows, n, heads, hd, want + heads * ld);
        k->attn_values_f16(w, ld, rows, n, heads, hd, got + heads * ld);
        CHECK(memcmp(got + heads * ld, want + heads * ld, d * sizeof *got) == 0,
              "%s: attention values differ, %d heads of %d, %d rows", k->name, heads, hd, n);
        free(q);
        free(w);
        free(x);
        free(rows);
        free(want);
        free(got);
    }
}

static void test_attn_f16(void)
{
    for_each_variant(attn_f16_variant);
}

/* Fills scales [n] with positive values like those of quantized rows (max|x| / 127). */
static void fill_scales(float *p, size_t n)
{
    fill_f32(p, n);
    for (size_t i = 0; i < n; i++)
        p[i] = (fabsf(p[i]) + 0.01f) / 127.0f;
}

/* The attention kernels of an int8 cache must give the reference's bits, with random rows and
 * rows of only -127 and 127 (the largest int16 pair sums of the AVX2 sign trick). Head sizes
 * 64 and 32 take every vector path, 16 only NEON's scores, 12 none. */
static void attn_q8_variant(const zq_kernels *k)
{
    /* n = 70 and 17 leave rows after the kernels' blocks of 8; hd = 96 takes three steps. */
    static const int shapes[][3] = {{12, 64, 70}, {3, 32, 5}, {9, 64, 1},  {2, 16, 7},
                                    {5, 12, 9},   {1, 64, 4}, {4, 96, 17}, {3, 32, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int heads = shapes[s][0], hd = shapes[s][1], n = shapes[s][2];
        const size_t d = (size_t)heads * hd, ld = (size_t)n + 3;
        for (int extreme = 0; extreme < 2; extreme++) {
            int8_t *q = malloc(d), *rows = malloc(n * d);
            float *qs = malloc(heads * sizeof *qs), *rs = malloc(n * heads * sizeof *rs);
            float *w = malloc(heads * ld * sizeof *w);
            float *want = calloc(heads * ld + d, sizeof *want);
            float *got = calloc(heads * ld + d, sizeof *got);
            fill_s8(q, d);
            fill_s8(rows, n * d);
            for (size_t i = 0; extreme && i < n * d; i++)
                rows[i] = (int8_t)(i % 3 == 0 ? -127 : 127);
            for (size_t i = 0; extreme && i < d; i++)
                q[i] = (int8_t)(i % 2 ? -127 : 127);
            fill_scales(qs, heads);
            fill_scales(rs, n * heads);
            fill_f32(w, heads * ld);

            zq_kernels_ref()->attn_scores_q8(q, qs, rows, rs, n, heads, hd, want, ld);
            k->attn_scores_q8(q, qs, rows, rs, n, heads, hd, got, ld);
            CHECK(memcmp(got, want, heads * ld * sizeof *got) == 0,
                  "%s: int8 attention scores differ, %d heads of %d, %d rows", k->name, heads,
                  hd, n);
            fill_f32(want + heads * ld, d);
            memcpy(got + heads * ld, want + heads * ld, d * sizeof *got);
            zq_kernels_ref()->attn_values_q8(w, ld, rows, rs, n, heads, hd, want + heads * ld);
            k->attn_values_q8(w, ld, rows, rs, n, heads, hd, got + heads * ld);
            CHECK(memcmp(got + heads * ld, want + heads * ld, d * sizeof *got) == 0,
                  "%s: int8 attention values differ, %d heads of %d, %d rows", k->name, heads,
                  hd, n);
            free(q);
            free(rows);
            free(qs);
            free(rs);
            free(w);
            free(want);
            free(got);
        }
    }
}

static void test_attn_q8(void)
{
    for_each_variant(attn_q8_variant);
}

/* ---- dot and axpy ------------------------------------------------------------------------ */

static void vector_variant(const zq_kernels *k)
{
    static const int ns[] = {0, 1, 5, 8, 15, 16, 17, 31, 32, 33, 64, 100, 768, 3072};
    float *a = malloc(3072 * sizeof *a), *b = malloc(3072 * sizeof *b);
    float *y1 = malloc(3072 * sizeof *y1), *y2 = malloc(3072 * sizeof *y2);
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        const int n = ns[i];
        fill_f32(a, (size_t)n);
        fill_f32(b, (size_t)n);
        double exact = 0, mag = 0;
        for (int j = 0; j < n; j++) {
            exact += (double)a[j] * b[j];
            mag += fabs((double)a[j] * b[j]);
        }
        const float got = k->dot_f32(a, b, n);
        CHECK(fabs(got - exact) <= GEMM_FLOAT_REL_TOL * mag, "%s dot n=%d: %.9g, exact %.9g",
              k->name, n, got, exact);

        memcpy(y1, b, (size_t)n * sizeof *b);
        memcpy(y2, b, (size_t)n * sizeof *b);
        const float alpha = rng_float();
        zq_kernels_ref()->axpy_f32(alpha, a, y1, n);
        k->axpy_f32(alpha, a, y2, n);
        for (int j = 0; j < n; j++) {
            if (fabsf(y1[j] - y2[j]) > AXPY_REL_TOL * (fabsf(alpha * a[j]) + fabsf(b[j]))) {
                CHECK(0, "%s axpy n=%d: y[%d] = %.9g, want %.9g", k->name, n, j, y2[j], y1[j]);
                break;
            }
        }
    }
    free(a);
    free(b);
    free(y1);
    free(y2);
}

static void test_dot_axpy(void)
{
    vector_variant(zq_kernels_ref());
    for_each_variant(vector_variant);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static void test_dispatch_names(void)
{
    CHECK(zq_kernels_by_name("ref") == zq_kernels_ref(), "by_name(ref) is not the reference");
    CHECK(zq_kernels_by_name("no-such-isa") == NULL, "unknown name accepted");
    CHECK(zq_kernels_by_name(NULL) == NULL, "NULL name accepted");
    const zq_kernels *best = zq_kernels_best();
    CHECK(best != NULL, "no best table");
    CHECK(best == zq_kernels_best(), "best changed between calls");
    CHECK(zq_kernels_by_name(best->name) == best, "best table %s not found by name", best->name);
    for (size_t i = 0; i < sizeof variant_names / sizeof variant_names[0]; i++) {
        const zq_kernels *k = zq_kernels_by_name(variant_names[i]);
        printf("# kernels %s: %s\n", variant_names[i], k ? "supported" : "not supported");
    }
}

static void test_dispatch_override(void)
{
    const zq_kernels *fastest = zq_kernels_select(NULL);
    CHECK(zq_kernels_select("ref") == zq_kernels_ref(), "ZQ_KERNELS=ref not honoured");
    CHECK(zq_kernels_select("") == fastest, "empty ZQ_KERNELS is not the fastest table");
    CHECK(zq_kernels_select("auto") == fastest, "ZQ_KERNELS=auto is not the fastest table");
    zq_log_set_level(ZQ_LOG_ERROR); /* the next call warns on purpose */
    CHECK(zq_kernels_select("no-such-isa") == fastest, "unknown name did not fall back");
    zq_log_set_level(ZQ_LOG_WARN);
    for (size_t i = 0; i < sizeof variant_names / sizeof variant_names[0]; i++) {
        const zq_kernels *k = zq_kernels_by_name(variant_names[i]);
        if (k)
            CHECK(zq_kernels_select(variant_names[i]) == k, "ZQ_KERNELS=%s not honoured",
                  variant_names[i]);
    }
}

int main(void)
{
    const char *env = getenv("ZQ_TEST_SEED");
    const uint64_t seed = env && *env ? strtoull(env, NULL, 0) : 20240611;
    rng_state = seed;
    printf("# test_kernels seed %llu (set ZQ_TEST_SEED to repeat)\n", (unsigned long long)seed);

    ZQ_RUN(test_dispatch_names);
    ZQ_RUN(test_dispatch_override);
    ZQ_RUN(test_gemm_s8_random);
    ZQ_RUN(test_gemm_s8_extremes);
    ZQ_RUN(test_quantize_ref_bounds);
    ZQ_RUN(test_quantize_extremes_ref);
    ZQ_RUN(test_quantize_variants);
    ZQ_RUN(test_gemm_float);
    ZQ_RUN(test_gemm_f16_conversion);
    ZQ_RUN(test_row_conversions);
    ZQ_RUN(test_attn_f16);
    ZQ_RUN(test_attn_q8);
    ZQ_RUN(test_dot_axpy);
    ZQ_CHECK_EXIT();
}
