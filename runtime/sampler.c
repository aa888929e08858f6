/*
 * sampler.c - next-token sampling: repetition penalty, temperature, top-k, top-p and a seeded
 * draw.
 *
 * Candidates are ordered by (value descending, id ascending), a strict total order, so the
 * kept set and the draw depend only on the logits, the history and the seed. Top-k and top-p
 * both use quickselect (expected O(n)) and never sort the vocabulary. Every buffer is
 * allocated in zq_sampler_create.
 *
 * NOTE: the PRNG is our own and portable, but the probabilities come from the C library's
 * expf, so two libm versions that differ in the last bit can, rarely, change a draw.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float value; /* logit, later probability */
    int32_t id;
} candidate;

struct zq_sampler {
    zq_sampler_params params;
    int n_vocab;
    candidate *cands;   /* [n_vocab] */
    uint8_t *penalized; /* [n_vocab], all zero between calls */
    uint64_t rng[4];    /* xoshiro256** state */
};

/* ---- PRNG: xoshiro256**, its state seeded through splitmix64 ----------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Returns a uniform double in [0, 1) built from the top 53 bits. */
static double rng_uniform(uint64_t s[4])
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

/* ---- parameters --------------------------------------------------------------------------- */

void zq_sampler_params_default(zq_sampler_params *params)
{
    params->temperature = 0.7f;
    params->top_k = 50;
    params->top_p = 0.95f;
    params->repetition_penalty = 1.1f;
    params->repeat_last_n = 64;
    params->seed = 0;
}

zq_status zq_sampler_params_check(const zq_sampler_params *params)
{
    if (!params)
        return zq_fail(ZQ_ERR_INVALID_ARG, "sampler: params is NULL");
    if (!(params->temperature >= 0.0f) || !isfinite(params->temperature))
        return zq_fail(ZQ_ERR_INVALID_ARG,
                       "sampler: temperature is %g, expected a finite value >= 0",
                       (double)params->temperature);
    if (params->top_k < 0)
        return zq_fail(ZQ_ERR_INVALID_ARG, "sampler: top_k is %d, expected >= 0 (0 = off)",
                       params->top_k);
    if (!(params->top_p > 0.0f && params->top_p <= 1.0f))
        return zq_fail(ZQ_ERR_INVALID_ARG, "sampler: top_p is %g, expected a value in (0, 1]",
                       (double)params->top_p);
    if (!(params->repetition_penalty > 0.0f) || !isfinite(params->repetition_penalty))
        return zq_fail(ZQ_ERR_INVALID_ARG,
                       "sampler: repetition_penalty is %g, expected a finite value > 0",
                       (double)params->repetition_penalty);
    if (params->repeat_last_n < 0)
        return zq_fail(ZQ_ERR_INVALID_ARG, "sampler: repeat_last_n is %d, expected >= 0",
                       params->repeat_last_n);
    return ZQ_OK;
}

/* ---- create / free ------------------------------------------------------------------------ */

zq_status zq_sampler_create(const zq_sampler_params *params, int n_vocab, zq_sampler **out)
{
    *out = NULL;
    ZQ_TRY(zq_sampler_params_check(params));
    if (n_vocab <= 0)
        return zq_fail(ZQ_ERR_INVALID_ARG, "sampler: n_vocab is %d, expected > 0", n_vocab);

    zq_sampler *sampler = calloc(1, sizeof *sampler);
    if (!sampler)
        return zq_fail(ZQ_ERR_NOMEM, "sampler: out of memory");
    sampler->params = *params;
    sampler->n_vocab = n_vocab;
    sampler->cands = malloc((size_t)n_vocab * sizeof *sampler->cands);
    sampler->penalized = calloc((size_t)n_vocab, 1);
    if (!sampler->cands || !sampler->penalized) {
        zq_sampler_free(sampler);
        return zq_fail(ZQ_ERR_NOMEM, "sampler: out of memory for %d vocabulary entries",
                       n_vocab);
    }
    uint64_t seed_state = params->seed;
    for (int i = 0; i < 4; i++)
        sampler->rng[i] = splitmix64(&seed_state);
    *out = sampler;
    return ZQ_OK;
}

void zq_sampler_free(zq_sampler *sampler)
{
    if (!sampler)
        return;
    free(sampler->cands);
    free(sampler->penalized);
    free(sampler);
}

/* ---- ordering and selection --------------------------------------------------------------- */

/* True when a ranks before b: larger value first, lower id on ties. */
static inline int ranks_before(const candidate *a, const candidate *b)
{
    return a->value > b->value || (a->value == b->value && a->id < b->id);
}

static inline void swap_cands(candidate *a, candidate *b)
{
    candidate t = *a;
    *a = *b;
    *b = t;
}

/* Moves the median of c[lo], c[mid], c[hi] (by rank) to c[hi] as the pivot. */
static void place_pivot(candidate *c, size_t lo, size_t hi)
{
    size_t mid = lo + (hi - lo) / 2;
    if (ranks_before(&c[mid], &c[lo]))
        swap_cands(&c[mid], &c[lo]);
    if (ranks_before(&c[hi], &c[lo]))
        swap_cands(&c[hi], &c[lo]);
    if (ranks_before(&c[mid], &c[hi]))
        swap_cands(&c[mid], &c[hi]);
}

/* Partitions c[lo..hi] around a median-of-three pivot and returns the pivot's final index:
 * entries before it rank before it, entries after it rank after it. */
static size_t partition(candidate *c, size_t lo, size_t hi)
{
    place_pivot(c, lo, hi);
    const candidate pivot = c[hi];
    size_t store = lo;
    for (size_t i = lo; i < hi; i++) {
        if (ranks_before(&c[i], &pivot))
            swap_cands(&c[i], &c[store++]);
    }
    swap_cands(&c[store], &c[hi]);
    return store;
}

/* Rearranges c[0..n) so that its first k entries are its k best, in no particular order.
 * No two entries compare equal, so the result depends only on the input. */
static void select_best(candidate *c, size_t n, size_t k)
{
    const size_t target = k - 1; /* last index that must hold one of the k best */
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t store = partition(c, lo, hi);
        if (store == target)
            return;
        if (store < target)
            lo = store + 1;
        else
            hi = store - 1;
    }
}

/* ---- the pipeline steps ------------------------------------------------------------------- */

/* Applies the CTRL penalty once to each distinct in-range id of the last repeat_last_n. */
static void apply_penalty(zq_sampler *s, float *logits, const int32_t *history, int n_history)
{
    const float penalty = s->params.repetition_penalty;
    if (penalty == 1.0f || !history || n_history <= 0 || s->params.repeat_last_n == 0)
        return;
    int first = n_history > s->params.repeat_last_n ? n_history - s->params.repeat_last_n : 0;
    for (int i = first; i < n_history; i++) {
        const int32_t id = history[i];
        if (id < 0 || id >= s->n_vocab || s->penalized[id])
            continue;
        s->penalized[id] = 1;
        logits[id] = logits[id] > 0.0f ? logits[id] / penalty : logits[id] * penalty;
    }
    for (int i = first; i < n_history; i++) {
        if (history[i] >= 0 && history[i] < s->n_vocab)
            s->penalized[history[i]] = 0;
    }
}

/* Copies the entries that can be picked (neither NaN nor -inf) and returns their count. */
static size_t gather_candidates(zq_sampler *s, const float *logits)
{
    size_t n = 0;
    for (int32_t i = 0; i < s->n_vocab; i++) {
        if (logits[i] > -INFINITY) { /* false for NaN too */
            s->cands[n].value = logits[i];
            s->cands[n].id = i;
            n++;
        }
    }
    return n;
}

/* Returns the id of the largest logit, the lowest id on ties, or -1 when all are masked. */
static int32_t argmax_logit(const float *logits, int32_t n)
{
    int32_t best = -1;
    float best_value = -INFINITY;
    for (int32_t i = 0; i < n; i++) {
        if (logits[i] > best_value) { /* strict, and false for NaN */
            best_value = logits[i];
            best = i;
        }
    }
    return best;
}

/* Replaces logits by unnormalised probabilities exp(x - max) and returns their sum. An entry
 * equal to the maximum gets exactly 1, which keeps +inf logits from turning into NaN. */
static double softmax_unnormalised(candidate *c, size_t n)
{
    float max = c[0].value;
    for (size_t i = 1; i < n; i++)
        max = c[i].value > max ? c[i].value : max;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        c[i].value = c[i].value == max ? 1.0f : expf(c[i].value - max);
        sum += c[i].value;
    }
    return sum;
}

/* Moves the smallest set of best-ranked entries of c[0..n) whose mass reaches top_p * sum to
 * the front, in no particular order, and returns its size (at least 1). *mass receives the
 * set's mass. This is quickselect on cumulative mass: each partition either keeps its better
 * half whole or discards its worse half, so the expected cost is O(n) with no sort. */
static size_t top_p_select(candidate *c, size_t n, double sum, float top_p, double *mass)
{
    const double target = (double)top_p * sum;
    double kept = 0.0; /* mass of c[0..lo), all in the set */
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t store = partition(c, lo, hi);
        double better = 0.0;
        for (size_t i = lo; i < store; i++)
            better += c[i].value;
        if (kept + better >= target) {
            hi = store - 1; /* store > lo here, because kept < target */
        } else if (kept + better + c[store].value >= target) {
            *mass = kept + better + c[store].value;
            return store + 1;
        } else {
            kept += better + c[store].value;
            lo = store + 1;
        }
    }
    if (lo > hi) { /* rounding left the total just under the target: keep everything */
        *mass = kept;
        return n;
    }
    *mass = kept + c[lo].value;
    return lo + 1;
}

/* Draws one entry of c[0..n) with probability value / mass. */
static int32_t draw(uint64_t rng[4], const candidate *c, size_t n, double mass)
{
    const double r = rng_uniform(rng) * mass;
    double cum = 0.0;
    size_t last_positive = 0;
    for (size_t i = 0; i < n; i++) {
        if (c[i].value <= 0.0f)
            continue;
        cum += c[i].value;
        last_positive = i;
        if (r < cum)
            return c[i].id;
    }
    return c[last_positive].id;
}

int32_t zq_sampler_sample(zq_sampler *sampler, float *logits, const int32_t *history,
                          int n_history)
{
    if (!sampler || !logits)
        return -1;
    const zq_sampler_params *p = &sampler->params;

    apply_penalty(sampler, logits, history, n_history);
    if (p->temperature == 0.0f)
        return argmax_logit(logits, sampler->n_vocab);
    size_t n = gather_candidates(sampler, logits);
    if (n == 0)
        return -1;

    candidate *c = sampler->cands;
    for (size_t i = 0; i < n; i++)
        c[i].value /= p->temperature;

    if (p->top_k > 0 && (size_t)p->top_k < n) {
        select_best(c, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
    }

    double mass = softmax_unnormalised(c, n);
    if (p->top_p < 1.0f)
        n = top_p_select(c, n, mass, p->top_p, &mass);
    return draw(sampler->rng, c, n, mass);
}
