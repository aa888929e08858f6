/*
 * test_sampler.c - properties of zq_sampler: greedy ties, seeded repeatability, the top-k and
 * top-p sets, empirical frequencies against softmax, masking, the repetition penalty and the
 * parameter checks. Random inputs come from a fixed seed that is printed.
 */
#include "../runtime/zq.h"

#include "support/check.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define TEST_SEED 20240611u

static uint64_t test_rng = TEST_SEED;

/* splitmix64, so the test inputs are the same on every machine. */
static uint64_t test_next(void)
{
    uint64_t z = (test_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float test_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(test_next() >> 11) * 0x1.0p-53);
}

static zq_sampler *make_sampler(float temperature, int top_k, float top_p, float penalty,
                                uint64_t seed, int n_vocab)
{
    zq_sampler_params params;
    zq_sampler_params_default(&params);
    params.temperature = temperature;
    params.top_k = top_k;
    params.top_p = top_p;
    params.repetition_penalty = penalty;
    params.seed = seed;
    zq_sampler *sampler = NULL;
    zq_status status = zq_sampler_create(&params, n_vocab, &sampler);
    CHECK(status == ZQ_OK, "create: %s", zq_last_error());
    return sampler;
}

/* Samples once from a copy of logits, so the caller's array stays intact. */
static int32_t sample_copy(zq_sampler *sampler, const float *logits, int n, float *scratch)
{
    memcpy(scratch, logits, (size_t)n * sizeof *logits);
    return zq_sampler_sample(sampler, scratch, NULL, 0);
}

static int rank_of(const float *logits, int n, int id)
{
    int rank = 0;
    for (int i = 0; i < n; i++) {
        if (logits[i] > logits[id] || (logits[i] == logits[id] && i < id))
            rank++;
    }
    return rank;
}

static void test_greedy_argmax_and_ties(void)
{
    enum { N = 300 };
    float logits[N], scratch[N];
    zq_sampler *sampler = make_sampler(0.0f, 50, 0.95f, 1.0f, 1, N);
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++)
            logits[i] = test_uniform(-5.0f, 5.0f);
        int32_t id = sample_copy(sampler, logits, N, scratch);
        CHECK(id >= 0, "id %d", id);
        CHECK(id < N, "id %d", id);
        CHECK_EQ_INT(rank_of(logits, N, id), 0);
    }
    zq_sampler_free(sampler);

    const float tied[6] = {1.0f, 5.0f, -2.0f, 5.0f, 5.0f, 0.0f};
    sampler = make_sampler(0.0f, 50, 0.95f, 1.0f, 1, 6);
    CHECK_EQ_INT(sample_copy(sampler, tied, 6, scratch), 1);
    zq_sampler_free(sampler);

    const float nan_first[4] = {NAN, 3.0f, 3.0f, -INFINITY};
    sampler = make_sampler(0.0f, 50, 0.95f, 1.0f, 1, 4);
    CHECK_EQ_INT(sample_copy(sampler, nan_first, 4, scratch), 1);
    zq_sampler_free(sampler);
}

static void draw_sequence(uint64_t seed, const float *logits, int n, int32_t *out, int count)
{
    float *scratch = malloc((size_t)n * sizeof *scratch);
    zq_sampler *sampler = make_sampler(1.0f, 0, 1.0f, 1.0f, seed, n);
    for (int i = 0; i < count; i++)
        out[i] = sample_copy(sampler, logits, n, scratch);
    zq_sampler_free(sampler);
    free(scratch);
}

static void test_seed_repeats_sequence(void)
{
    enum { N = 100, DRAWS = 1000 };
    float logits[N];
    for (int i = 0; i < N; i++)
        logits[i] = test_uniform(-1.0f, 1.0f);
    static int32_t first[DRAWS], second[DRAWS], other[DRAWS];
    draw_sequence(42, logits, N, first, DRAWS);
    draw_sequence(42, logits, N, second, DRAWS);
    draw_sequence(43, logits, N, other, DRAWS);

    int same = 0, differ = 0;
    for (int i = 0; i < DRAWS; i++) {
        same += first[i] == second[i];
        differ += first[i] != other[i];
    }
    CHECK_EQ_INT(same, DRAWS);
    CHECK(differ > DRAWS / 2, "seeds 42 and 43 differ in only %d of %d draws", differ, DRAWS);
}

static void test_top_k_one_is_greedy(void)
{
    enum { N = 500 };
    float logits[N], scratch[N];
    zq_sampler *sampler = make_sampler(1.5f, 1, 1.0f, 1.0f, 7, N);
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < N; i++)
            logits[i] = test_uniform(-3.0f, 3.0f);
        CHECK_EQ_INT(rank_of(logits, N, sample_copy(sampler, logits, N, scratch)), 0);
    }
    zq_sampler_free(sampler);
}

static void test_top_k_stays_in_top_set(void)
{
    enum { N = 1000, K = 10 };
    static float logits[N], scratch[N];
    for (int i = 0; i < N; i++)
        logits[i] = test_uniform(-2.0f, 2.0f); /* flat enough that outsiders would show up */
    zq_sampler *sampler = make_sampler(2.0f, K, 1.0f, 1.0f, 9, N);
    int outside = 0, seen[K] = {0};
    for (int draw = 0; draw < 4000; draw++) {
        int rank = rank_of(logits, N, sample_copy(sampler, logits, N, scratch));
        if (rank >= K)
            outside++;
        else
            seen[rank] = 1;
    }
    CHECK_EQ_INT(outside, 0);
    for (int r = 0; r < K; r++)
        CHECK(seen[r], "rank %d of the top %d never drawn", r, K);
    zq_sampler_free(sampler);
}

static void test_top_k_above_vocab_is_off(void)
{
    enum { N = 64, DRAWS = 500 };
    float logits[N], scratch[N];
    for (int i = 0; i < N; i++)
        logits[i] = test_uniform(-1.0f, 1.0f);
    zq_sampler *off = make_sampler(1.0f, 0, 1.0f, 1.0f, 5, N);
    zq_sampler *large = make_sampler(1.0f, 5000, 1.0f, 1.0f, 5, N);
    int same = 0;
    for (int i = 0; i < DRAWS; i++)
        same += sample_copy(off, logits, N, scratch) == sample_copy(large, logits, N, scratch);
    CHECK_EQ_INT(same, DRAWS);
    zq_sampler_free(off);
    zq_sampler_free(large);
}

/* Probabilities 0.30, 0.25, 0.20, 0.15, 0.10 (shuffled): top_p 0.5 keeps exactly the first
 * two (0.30 + 0.25 = 0.55), renormalised to 6/11 and 5/11. */
static void test_top_p_keeps_mass(void)
{
    enum { DRAWS = 20000 };
    const float probs[5] = {0.15f, 0.30f, 0.10f, 0.25f, 0.20f};
    float logits[5], scratch[5];
    for (int i = 0; i < 5; i++)
        logits[i] = logf(probs[i]);
    zq_sampler *sampler = make_sampler(1.0f, 0, 0.5f, 1.0f, 11, 5);
    int counts[5] = {0};
    for (int i = 0; i < DRAWS; i++)
        counts[sample_copy(sampler, logits, 5, scratch)]++;
    zq_sampler_free(sampler);

    CHECK_EQ_INT(counts[0] + counts[2] + counts[4], 0);
    const double expected = 6.0 / 11.0;
    const double sigma = sqrt(expected * (1.0 - expected) / DRAWS);
    const double observed = (double)counts[1] / DRAWS;
    CHECK(fabs(observed - expected) < 5.0 * sigma, "P(id 1) = %.4f, expected %.4f +- %.4f",
          observed, expected, 5.0 * sigma);

    sampler = make_sampler(1.0f, 0, 0.01f, 1.0f, 11, 5); /* always keeps at least one */
    for (int i = 0; i < 100; i++)
        CHECK_EQ_INT(sample_copy(sampler, logits, 5, scratch), 1);
    zq_sampler_free(sampler);
}

static const float *sort_logits; /* the array compare_by_rank orders */

static int compare_by_rank(const void *a, const void *b)
{
    const int i = *(const int *)a, j = *(const int *)b;
    if (sort_logits[i] != sort_logits[j])
        return sort_logits[i] > sort_logits[j] ? -1 : 1;
    return i < j ? -1 : 1;
}

/* Fills rank[id] with each id's position in (logit descending, id ascending) order, and
 * returns how many of the best-ranked ids a full sort needs to reach mass top_p after top_k
 * (T = 1). */
static int reference_top_p_size(const float *logits, int n, int top_k, float top_p, int *rank)
{
    int *order = malloc((size_t)n * sizeof *order);
    for (int i = 0; i < n; i++)
        order[i] = i;
    sort_logits = logits;
    qsort(order, (size_t)n, sizeof *order, compare_by_rank);
    for (int r = 0; r < n; r++)
        rank[order[r]] = r;

    const int kept = top_k > 0 && top_k < n ? top_k : n;
    double total = 0.0;
    for (int r = 0; r < kept; r++)
        total += exp((double)(logits[order[r]] - logits[order[0]]));
    double cum = 0.0;
    int size = 0;
    while (size < kept && cum < top_p * total)
        cum += exp((double)(logits[order[size++]] - logits[order[0]]));
    free(order);
    return size;
}

/* A large flat vocabulary makes the top-p selection partition many times. */
static void test_top_p_large_vocab_set(void)
{
    enum { N = 3000, DRAWS = 3000 };
    static float logits[N], scratch[N];
    static int rank[N];
    for (int i = 0; i < N; i++)
        logits[i] = test_uniform(-1.0f, 1.0f);
    const struct {
        int top_k;
        float top_p;
    } cases[] = {{0, 0.9f}, {0, 0.3f}, {500, 0.8f}, {40, 0.95f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int allowed = reference_top_p_size(logits, N, cases[c].top_k, cases[c].top_p, rank);
        zq_sampler *sampler = make_sampler(1.0f, cases[c].top_k, cases[c].top_p, 1.0f, 3, N);
        int outside = 0, worst = 0;
        for (int i = 0; i < DRAWS; i++) {
            int r = rank[sample_copy(sampler, logits, N, scratch)];
            outside += r >= allowed;
            worst = r > worst ? r : worst;
        }
        CHECK(outside == 0, "top_k %d top_p %.2f: %d draws at rank >= %d (worst %d)",
              cases[c].top_k, (double)cases[c].top_p, outside, allowed, worst);
        CHECK(worst > allowed / 2, "top_k %d top_p %.2f: worst rank %d of %d allowed",
              cases[c].top_k, (double)cases[c].top_p, worst, allowed);
        zq_sampler_free(sampler);
    }
}

/* Checks the Pearson chi-square of DRAWS draws against softmax(logits / T). With 7 degrees of
 * freedom, 24.3 is the 0.999 quantile. */
static void check_frequencies(float temperature, uint64_t seed)
{
    enum { N = 8, DRAWS = 40000 };
    float logits[N], scratch[N];
    for (int i = 0; i < N; i++)
        logits[i] = test_uniform(-2.0f, 2.0f);
    double expected[N], total = 0.0;
    for (int i = 0; i < N; i++)
        total += expected[i] = exp((double)logits[i] / temperature);

    zq_sampler *sampler = make_sampler(temperature, 0, 1.0f, 1.0f, seed, N);
    int counts[N] = {0};
    for (int i = 0; i < DRAWS; i++)
        counts[sample_copy(sampler, logits, N, scratch)]++;
    zq_sampler_free(sampler);

    double chi2 = 0.0;
    for (int i = 0; i < N; i++) {
        double e = expected[i] / total * DRAWS;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    CHECK(chi2 < 24.3, "T=%.2f seed %llu: chi-square %.2f over %d draws", (double)temperature,
          (unsigned long long)seed, chi2, DRAWS);
}

static void test_frequencies_match_softmax(void)
{
    check_frequencies(1.0f, 101);
    check_frequencies(0.6f, 102);
}

static void test_nan_never_chosen(void)
{
    enum { N = 50 };
    float logits[N], scratch[N];
    for (int i = 0; i < N; i++)
        logits[i] = i % 3 == 0 ? NAN : test_uniform(-1.0f, 1.0f);
    const float temperatures[2] = {0.0f, 1.0f};
    for (int t = 0; t < 2; t++) {
        zq_sampler *sampler = make_sampler(temperatures[t], 0, 1.0f, 1.0f, 13, N);
        int nan_drawn = 0;
        for (int i = 0; i < 2000; i++)
            nan_drawn += sample_copy(sampler, logits, N, scratch) % 3 == 0;
        CHECK(nan_drawn == 0, "T=%.0f: %d NaN entries drawn", (double)temperatures[t],
              nan_drawn);
        zq_sampler_free(sampler);
    }
}

static void test_all_masked_returns_minus_one(void)
{
    float logits[4], scratch[4];
    const float fills[3][4] = {
        {-INFINITY, -INFINITY, -INFINITY, -INFINITY},
        {NAN, NAN, NAN, NAN},
        {NAN, -INFINITY, NAN, -INFINITY},
    };
    const float temperatures[2] = {0.0f, 0.8f};
    for (int t = 0; t < 2; t++) {
        zq_sampler *sampler = make_sampler(temperatures[t], 50, 0.95f, 1.1f, 1, 4);
        for (int f = 0; f < 3; f++) {
            memcpy(logits, fills[f], sizeof logits);
            CHECK_EQ_INT(sample_copy(sampler, logits, 4, scratch), -1);
        }
        zq_sampler_free(sampler);
    }
}

static void test_penalty_values(void)
{
    float logits[6] = {2.0f, 2.0f, -1.0f, -1.0f, 3.0f, 0.5f};
    zq_sampler_params params;
    zq_sampler_params_default(&params);
    params.temperature = 0.0f;
    params.repetition_penalty = 2.0f;
    params.repeat_last_n = 6;
    zq_sampler *sampler = NULL;
    CHECK(zq_sampler_create(&params, 6, &sampler) == ZQ_OK, "%s", zq_last_error());

    /* Id 5 is outside the last 6. Id 0 repeats but is penalised once. The out-of-range ids 99
     * and -3 are ignored. */
    const int32_t history[7] = {5, 0, 2, 99, 0, -3, 0};
    CHECK_EQ_INT(zq_sampler_sample(sampler, logits, history, 7), 4);
    CHECK_NEAR(logits[0], 1.0, 0.0);
    CHECK_NEAR(logits[1], 2.0, 0.0);
    CHECK_NEAR(logits[2], -2.0, 0.0);
    CHECK_NEAR(logits[3], -1.0, 0.0);
    CHECK_NEAR(logits[5], 0.5, 0.0);

    /* the marks are cleared: the same call again penalises id 0 once more, from 1 to 0.5 */
    CHECK_EQ_INT(zq_sampler_sample(sampler, logits, history, 7), 4);
    CHECK_NEAR(logits[0], 0.5, 0.0);
    zq_sampler_free(sampler);
}

static void test_penalty_lowers_probability(void)
{
    enum { N = 4, DRAWS = 10000 };
    const float logits[N] = {1.0f, 1.0f, 0.5f, -0.5f};
    float scratch[N];
    const int32_t history[2] = {0, 3};
    int counts[2] = {0};
    for (int with = 0; with < 2; with++) {
        zq_sampler *sampler = make_sampler(1.0f, 0, 1.0f, 1.5f, 21, N);
        for (int i = 0; i < DRAWS; i++) {
            memcpy(scratch, logits, sizeof scratch);
            counts[with] += zq_sampler_sample(sampler, scratch, history, with ? 2 : 0) == 0;
        }
        zq_sampler_free(sampler);
    }
    /* P(0) falls from about 0.35 to about 0.27; 10,000 draws resolve that easily */
    CHECK(counts[1] < counts[0] - 400, "id 0 drawn %d times with the penalty, %d without",
          counts[1], counts[0]);
}

static void check_rejected(const zq_sampler_params *params, const char *field)
{
    CHECK(zq_sampler_params_check(params) == ZQ_ERR_INVALID_ARG, "%s accepted", field);
    CHECK(strstr(zq_last_error(), field) != NULL, "message '%s' lacks '%s'", zq_last_error(),
          field);
    zq_sampler *sampler = (zq_sampler *)1;
    CHECK(zq_sampler_create(params, 10, &sampler) == ZQ_ERR_INVALID_ARG, "create accepted %s",
          field);
    CHECK(sampler == NULL, "create left a sampler for a bad %s", field);
}

static void test_params_check(void)
{
    zq_sampler_params good;
    zq_sampler_params_default(&good);
    CHECK(zq_sampler_params_check(&good) == ZQ_OK, "%s", zq_last_error());
    CHECK_NEAR(good.temperature, 0.7, 1e-6);
    CHECK_EQ_INT(good.top_k, 50);
    CHECK_NEAR(good.top_p, 0.95, 1e-6);
    CHECK_NEAR(good.repetition_penalty, 1.1, 1e-6);
    CHECK_EQ_INT(good.repeat_last_n, 64);
    CHECK_EQ_INT(good.seed, 0);

    const float bad_temperature[] = {-0.1f, NAN, INFINITY};
    const float bad_top_p[] = {0.0f, -0.5f, 1.01f, NAN};
    const float bad_penalty[] = {0.0f, -1.0f, INFINITY, NAN};
    for (size_t i = 0; i < sizeof bad_temperature / sizeof(float); i++) {
        zq_sampler_params p = good;
        p.temperature = bad_temperature[i];
        check_rejected(&p, "temperature");
    }
    for (size_t i = 0; i < sizeof bad_top_p / sizeof(float); i++) {
        zq_sampler_params p = good;
        p.top_p = bad_top_p[i];
        check_rejected(&p, "top_p");
    }
    for (size_t i = 0; i < sizeof bad_penalty / sizeof(float); i++) {
        zq_sampler_params p = good;
        p.repetition_penalty = bad_penalty[i];
        check_rejected(&p, "repetition_penalty");
    }
    zq_sampler_params p = good;
    p.top_k = -1;
    check_rejected(&p, "top_k");
    p = good;
    p.repeat_last_n = -1;
    check_rejected(&p, "repeat_last_n");

    zq_sampler *sampler = NULL;
    CHECK(zq_sampler_create(&good, 0, &sampler) == ZQ_ERR_INVALID_ARG, "n_vocab 0 accepted");
    CHECK(strstr(zq_last_error(), "n_vocab") != NULL, "message '%s'", zq_last_error());
    zq_sampler_free(NULL);
}

int main(void)
{
    printf("# test_sampler seed %u\n", TEST_SEED);
    ZQ_RUN(test_greedy_argmax_and_ties);
    ZQ_RUN(test_seed_repeats_sequence);
    ZQ_RUN(test_top_k_one_is_greedy);
    ZQ_RUN(test_top_k_stays_in_top_set);
    ZQ_RUN(test_top_k_above_vocab_is_off);
    ZQ_RUN(test_top_p_keeps_mass);
    ZQ_RUN(test_top_p_large_vocab_set);
    ZQ_RUN(test_frequencies_match_softmax);
    ZQ_RUN(test_nan_never_chosen);
    ZQ_RUN(test_all_masked_returns_minus_one);
    ZQ_RUN(test_penalty_values);
    ZQ_RUN(test_penalty_lowers_probability);
    ZQ_RUN(test_params_check);
    ZQ_CHECK_EXIT();
}
