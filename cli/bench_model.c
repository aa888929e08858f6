/*
 * bench_model.c - `zq bench model`: end-to-end speed of one .zq model in this process. It loads
 * the model, evaluates a fixed prompt of random ordinary tokens in one batch (prefill), picks
 * the first token greedily, then decodes tokens one at a time without stopping at [SEP]. Each
 * metric is the median over the repeats; the peak RSS is the process's, so one process should
 * measure one configuration. The context holds exactly the prompt and the decoded tokens.
 */
#include "bench.h"
#include "common.h"

#include "../runtime/internal.h"
#include "../runtime/model.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#define CMD              "bench model"
#define WARMUP_PROMPT    32
#define WARMUP_DECODE    4
#define MAX_REPEATS      100
#define BANDWIDTH_PASSES 4 /* passes of each read of the bandwidth, after each timed run */

typedef struct {
    const char *model_path;
    char name[128]; /* label in the record; default: the file name without ".zq" */
    int threads;
    int prompt_len;
    int decode;
    int repeats;
    uint64_t seed;
    zq_kv_type kv_type;
    long bandwidth_mb; /* MiB to read after each timed run, 0 for none */
    bool json;
} model_options;

typedef struct {
    double prefill_s; /* zq_context_eval of the whole prompt */
    double ttft_s;    /* prefill plus sampling the first token */
    double decode_s;  /* all single-token steps after the first token */
} run_times;

typedef struct {
    zq_model *model;
    zq_context *ctx;
    zq_sampler *sampler;
    float *logits; /* [n_vocab] copy, because the sampler overwrites its input */
    int32_t *prompt;
    int32_t first_tokens[8];
} bench_session;

static void help(void)
{
    printf("usage: zq bench model [-m MODEL.zq] [options]\n\n"
           "Measures load time, prefill speed, time to first token, decode speed and peak\n"
           "memory of a model. The prompt is --prompt-len token ids drawn by a seeded\n"
           "generator from the vocabulary without bracketed special tokens; it is evaluated in\n"
           "one batch. Decoding is greedy and runs --decode steps without stopping at [SEP].\n"
           "The KV cache holds exactly the prompt and the decoded tokens.\n"
           "If the prompt and the decoded tokens exceed the model's positions, the prompt is\n"
           "shortened and a note says so.\n\n"
           "options:\n"
           "  -m, --model FILE    the .zq model (default: the embedded zh-chat-tiny)\n"
           "  --name NAME         model label in the output (default: the file name)\n"
           "  --threads N         threads (default: the number of physical cores)\n"
           "  --kv-type T         KV cache: auto (the type of the weights), f32, f16 or int8\n"
           "                      (default auto)\n"
           "  --bandwidth-mb MB   after each timed run, read a buffer of MB MiB as 'zq bench\n"
           "                      bandwidth' does; the best rate gives the decode limit of\n"
           "                      this process. 0 = skip (default 512). Use a size far above\n"
           "                      the last-level cache. Peak RSS is taken before the first read.\n"
           "  --prompt-len N      prompt tokens (default 512)\n"
           "  --decode N          tokens decoded after the first one (default 128)\n"
           "  --repeats N         timed runs after a warm-up; medians are reported (default 3)\n"
           "  --seed N            seed of the prompt's token ids (default 1)\n"
           "  --json              print one JSON record instead of text\n"
           "  -h, --help          show this help\n");
}

static int parse_option(int c, const char *arg, model_options *o)
{
    long v;
    switch (c) {
    case 'm':
        o->model_path = arg;
        return 0;
    case 'n':
        snprintf(o->name, sizeof o->name, "%s", arg);
        return 0;
    case 't':
        return cli_parse_int(CMD, "threads", arg, 1, 1024, &v) ? (o->threads = (int)v, 0) : -1;
    case 'p':
        return cli_parse_int(CMD, "prompt-len", arg, 1, 1 << 20, &v) ? (o->prompt_len = (int)v, 0)
                                                                      : -1;
    case 'd':
        return cli_parse_int(CMD, "decode", arg, 1, 1 << 20, &v) ? (o->decode = (int)v, 0) : -1;
    case 'r':
        return cli_parse_int(CMD, "repeats", arg, 1, MAX_REPEATS, &v) ? (o->repeats = (int)v, 0)
                                                                       : -1;
    case 's':
        return cli_parse_u64(CMD, "seed", arg, &o->seed) ? 0 : -1;
    case 'j':
        o->json = true;
        return 0;
    case 'k':
        return cli_parse_kv_type(CMD, "--kv-type", arg, &o->kv_type) ? 0 : -1;
    case 'b':
        return cli_parse_int(CMD, "bandwidth-mb", arg, 0, 1 << 20, &o->bandwidth_mb) ? 0 : -1;
    }
    return -1;
}

/* Returns -1 to continue, else the exit status. */
static int parse_args(int argc, char **argv, model_options *o)
{
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'},      {"name", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'},    {"prompt-len", required_argument, 0, 'p'},
        {"decode", required_argument, 0, 'd'},     {"repeats", required_argument, 0, 'r'},
        {"seed", required_argument, 0, 's'},       {"json", no_argument, 0, 'j'},
        {"kv-type", required_argument, 0, 'k'},    {"bandwidth-mb", required_argument, 0, 'b'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *o = (model_options){
        .prompt_len = 512, .decode = 128, .repeats = 3, .seed = 1, .bandwidth_mb = 512};
    int c;
    while ((c = getopt_long(argc, argv, "m:h", longs, NULL)) != -1) {
        if (c == 'h')
            return help(), ZQ_EXIT_OK;
        if (c == '?' || parse_option(c, optarg, o) != 0)
            return ZQ_EXIT_USAGE;
    }
    if (optind != argc) {
        cli_error(CMD, "unexpected argument '%s'; run 'zq bench model --help'", argv[optind]);
        return ZQ_EXIT_USAGE;
    }
    o->model_path = cli_model_path(o->model_path);
    if (!o->name[0]) {
        const char *slash = strrchr(o->model_path, '/');
        snprintf(o->name, sizeof o->name, "%s", slash ? slash + 1 : o->model_path);
        const size_t len = strlen(o->name);
        if (len > 3 && !strcmp(o->name + len - 3, ".zq"))
            o->name[len - 3] = '\0';
    }
    return -1;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Fills ids with tokens drawn uniformly from the vocabulary entries that are not bracketed
 * specials such as [CLS] or [unused5]. Returns false if there are none. */
static bool make_prompt(const zq_model *model, uint64_t seed, int32_t *ids, int n)
{
    const int n_vocab = zq_model_hparams(model)->n_vocab;
    int32_t *ordinary = malloc((size_t)n_vocab * sizeof *ordinary);
    int count = 0;
    for (int32_t id = 0; ordinary && id < n_vocab; id++) {
        const char *s = zq_token_str(model, id);
        const size_t len = s ? strlen(s) : 0;
        if (len > 0 && !(s[0] == '[' && s[len - 1] == ']'))
            ordinary[count++] = id;
    }
    uint64_t state = seed;
    for (int i = 0; i < n && count > 0; i++)
        ids[i] = ordinary[splitmix64(&state) % (uint64_t)count];
    free(ordinary);
    return count > 0;
}

/* Bytes of weights that one decoded token reads: every matrix with its scales, the biases and
 * layer norms, one row of each embedding, and the output head in full. */
static double weight_bytes_per_token(const zq_model *m)
{
    const zq_hparams *hp = &m->hp;
    double bytes = 0;
    const zq_weight *mats[5];
    for (int l = 0; l <= hp->n_layer; l++) {
        int n_mats = 0;
        if (l < hp->n_layer) {
            const zq_layer *L = &m->layers[l];
            mats[n_mats++] = &L->attn;
            mats[n_mats++] = &L->proj;
            mats[n_mats++] = &L->fc;
            mats[n_mats++] = &L->fc2;
            bytes += 4.0 * (9 * hp->n_embd + hp->n_inner); /* biases and layer norms */
        } else {
            mats[n_mats++] = &m->head;
        }
        for (int i = 0; i < n_mats; i++) {
            const zq_weight *w = mats[i];
            const double count = (double)w->rows * w->cols;
            if (w->type == ZQ_TYPE_Q8)
                bytes += count + 4.0 * w->rows * (w->group ? w->cols / w->group : 1);
            else
                bytes += count * (w->type == ZQ_TYPE_F16 ? 2 : 4);
        }
    }
    return bytes + 4.0 * 3 * hp->n_embd; /* wpe row, ln_f */
}

static int argmax_token(bench_session *s)
{
    const int n_vocab = zq_model_hparams(s->model)->n_vocab;
    memcpy(s->logits, zq_context_logits(s->ctx), (size_t)n_vocab * sizeof(float));
    return zq_sampler_sample(s->sampler, s->logits, NULL, 0);
}

/* Runs prefill, first token and n_decode decoding steps from an empty cache. */
static zq_status generate(bench_session *s, int n_prompt, int n_decode, run_times *t)
{
    zq_context_truncate(s->ctx, 0);
    const double start = zq_now_seconds();
    ZQ_TRY(zq_context_eval(s->ctx, s->prompt, n_prompt, NULL));
    const double prefilled = zq_now_seconds();
    int32_t token = argmax_token(s);
    const double first = zq_now_seconds();
    s->first_tokens[0] = token;
    for (int i = 0; i < n_decode; i++) {
        ZQ_TRY(zq_context_eval(s->ctx, &token, 1, NULL));
        token = argmax_token(s);
        if (i + 1 < 8)
            s->first_tokens[i + 1] = token;
    }
    const double done = zq_now_seconds();
    *t = (run_times){prefilled - start, first - start, done - first};
    return ZQ_OK;
}

static int compare_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    double prefill_tok_s, decode_tok_s, ttft_ms;
    double peak_rss_mb, file_mb, load_s, weights_mb_per_token;
    double bandwidth_gb_s;        /* best rate read after the timed runs, 0 for none */
    double run_gb_s[MAX_REPEATS]; /* read right after each timed run */
    int prompt_len;
    bool clipped;
} model_result;

static void summarize(const run_times *runs, const model_options *o, model_result *r)
{
    double prefill[MAX_REPEATS], decode[MAX_REPEATS], ttft[MAX_REPEATS];
    for (int i = 0; i < o->repeats; i++) {
        prefill[i] = r->prompt_len / runs[i].prefill_s;
        decode[i] = o->decode / runs[i].decode_s;
        ttft[i] = 1e3 * runs[i].ttft_s;
    }
    r->prefill_tok_s = median(prefill, o->repeats);
    r->decode_tok_s = median(decode, o->repeats);
    r->ttft_ms = median(ttft, o->repeats);
}

/* Returns the peak resident memory of this process so far, in MiB. */
static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

static void add_runs(cJSON *rec, const run_times *runs, const model_options *o,
                     const model_result *r)
{
    cJSON *list = cJSON_AddArrayToObject(rec, "runs");
    for (int i = 0; i < o->repeats; i++) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddNumberToObject(item, "prefill_tok_s",
                                cli_bench_round(r->prompt_len / runs[i].prefill_s, 2));
        cJSON_AddNumberToObject(item, "decode_tok_s",
                                cli_bench_round(o->decode / runs[i].decode_s, 2));
        cJSON_AddNumberToObject(item, "ttft_ms", cli_bench_round(1e3 * runs[i].ttft_s, 2));
        if (r->bandwidth_gb_s > 0)
            cJSON_AddNumberToObject(item, "bandwidth_gb_s", cli_bench_round(r->run_gb_s[i], 2));
        cJSON_AddItemToArray(list, item);
    }
}

/* Returns the MB of keys and values that one decoding step reads on average: every layer's
 * cache up to the step's position, over positions prompt_len .. prompt_len + decode - 1. */
static double kv_mb_per_token(const bench_session *s, const model_options *o,
                              const model_result *r)
{
    const double mean_positions = r->prompt_len + (o->decode + 1) / 2.0;
    const zq_kv_type type = zq_context_kv_type(s->ctx);
    return mean_positions * (double)zq_model_kv_bytes_per_position(s->model, type) / 1e6;
}

static void print_json(const bench_session *s, const model_options *o, const run_times *runs,
                       const model_result *r, int threads)
{
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "engine", "zq");
    cJSON_AddStringToObject(rec, "type", zq_type_name(zq_model_type(s->model)));
    cJSON_AddNumberToObject(rec, "threads", threads);
    cJSON_AddStringToObject(rec, "model", o->name);
    cJSON_AddNumberToObject(rec, "prefill_tok_s", cli_bench_round(r->prefill_tok_s, 2));
    cJSON_AddNumberToObject(rec, "decode_tok_s", cli_bench_round(r->decode_tok_s, 2));
    cJSON_AddNumberToObject(rec, "ttft_ms", cli_bench_round(r->ttft_ms, 2));
    cJSON_AddNumberToObject(rec, "peak_rss_mb", cli_bench_round(r->peak_rss_mb, 1));
    cJSON_AddNumberToObject(rec, "file_mb", cli_bench_round(r->file_mb, 1));
    cJSON_AddNumberToObject(rec, "load_s", cli_bench_round(r->load_s, 3));
    cJSON_AddNumberToObject(rec, "prompt_len", r->prompt_len);
    cJSON_AddBoolToObject(rec, "prompt_clipped", r->clipped);
    cJSON_AddNumberToObject(rec, "decode", o->decode);
    cJSON_AddNumberToObject(rec, "repeats", o->repeats);
    cJSON_AddNumberToObject(rec, "n_ctx", zq_model_hparams(s->model)->n_ctx);
    cJSON_AddNumberToObject(rec, "context", zq_context_size(s->ctx));
    cJSON_AddNumberToObject(rec, "weights_mb_per_token",
                            cli_bench_round(r->weights_mb_per_token, 3));
    if (r->bandwidth_gb_s > 0)
        cJSON_AddNumberToObject(rec, "bandwidth_gb_s", cli_bench_round(r->bandwidth_gb_s, 2));
    cJSON_AddNumberToObject(rec, "kv_mb_per_token", cli_bench_round(kv_mb_per_token(s, o, r), 3));
    cJSON_AddStringToObject(rec, "kv_type", zq_kv_type_name(zq_context_kv_type(s->ctx)));
    cJSON_AddStringToObject(rec, "kernels", s->model->kernels->name);
    cJSON *first = cJSON_AddArrayToObject(rec, "first_tokens");
    const int n_first = o->decode + 1 < 8 ? o->decode + 1 : 8;
    for (int i = 0; i < n_first; i++)
        cJSON_AddItemToArray(first, cJSON_CreateNumber(s->first_tokens[i]));
    add_runs(rec, runs, o, r);
    cli_bench_print_json(rec);
}

static void print_text(const bench_session *s, const model_options *o, const model_result *r,
                       int threads)
{
    printf("model:    %s (%s), %.1f MiB file, kernels %s, %d thread%s\n",
           zq_model_desc(s->model), o->name, r->file_mb, s->model->kernels->name, threads,
           threads == 1 ? "" : "s");
    printf("load:     %.3f s\n", r->load_s);
    printf("prefill:  %.1f tokens/s (%d-token prompt)\n", r->prefill_tok_s, r->prompt_len);
    printf("ttft:     %.2f ms\n", r->ttft_ms);
    printf("decode:   %.2f tokens/s (%d token%s, greedy)\n", r->decode_tok_s, o->decode,
           o->decode == 1 ? "" : "s");
    printf("KV cache: %s\n", zq_kv_type_name(zq_context_kv_type(s->ctx)));
    printf("peak RSS: %.1f MiB\n", r->peak_rss_mb);
    const double kv_mb = kv_mb_per_token(s, o, r);
    printf("read per token: %.2f MB of weights, %.2f MB of KV cache on average; speeds are "
           "medians of %d runs\n",
           r->weights_mb_per_token, kv_mb, o->repeats);
    if (r->bandwidth_gb_s > 0) {
        const double limit = r->bandwidth_gb_s * 1e3 / r->weights_mb_per_token;
        const double with_kv = r->bandwidth_gb_s * 1e3 / (r->weights_mb_per_token + kv_mb);
        printf("read bandwidth, best after each run: %.2f GB/s; decode limit %.1f tokens/s for the "
               "weights alone, %.1f with the KV cache; decode reached %.2f and %.2f of them\n",
               r->bandwidth_gb_s, limit, with_kv, r->decode_tok_s / limit,
               r->decode_tok_s / with_kv);
    }
}

/* Shortens the prompt when prompt and decoded tokens exceed the model's positions. */
static int fit_prompt(const zq_model *model, const model_options *o, model_result *r)
{
    const int n_ctx = zq_model_hparams(model)->n_ctx;
    r->prompt_len = o->prompt_len;
    if (o->decode >= n_ctx) {
        cli_error(CMD, "--decode %d leaves no room for a prompt in %s's %d positions", o->decode,
                  o->name, n_ctx);
        return ZQ_EXIT_USAGE;
    }
    if ((long)o->prompt_len + o->decode > n_ctx) {
        r->prompt_len = n_ctx - o->decode;
        r->clipped = true;
        fprintf(stderr,
                "zq %s: note: %s has %d positions, so the prompt is shortened from %d to %d "
                "tokens to leave room for %d decoded tokens\n",
                CMD, o->name, n_ctx, o->prompt_len, r->prompt_len, o->decode);
    }
    return -1;
}

static zq_status open_session(bench_session *s, const model_options *o, int prompt_len)
{
    const zq_hparams *hp = zq_model_hparams(s->model);
    /* The KV cache gets the positions the run needs, as an application that knows its limits
     * would size it; by default it grows by doubling up to the model's n_ctx. */
    const zq_context_params cp = {
        .n_ctx = prompt_len + o->decode,
        .n_threads = o->threads,
        .n_batch = prompt_len,
        .kv_type = o->kv_type,
    };
    ZQ_TRY(zq_context_create(s->model, &cp, &s->ctx));
    zq_sampler_params sp;
    zq_sampler_params_default(&sp);
    sp.temperature = 0;
    sp.top_k = 0;
    sp.top_p = 1;
    sp.repetition_penalty = 1;
    ZQ_TRY(zq_sampler_create(&sp, hp->n_vocab, &s->sampler));
    s->logits = malloc((size_t)hp->n_vocab * sizeof(float));
    s->prompt = malloc((size_t)prompt_len * sizeof(int32_t));
    if (!s->logits || !s->prompt)
        return zq_fail(ZQ_ERR_NOMEM, "cannot allocate the prompt and logits buffers");
    if (!make_prompt(s->model, o->seed, s->prompt, prompt_len))
        return zq_fail(ZQ_ERR_UNSUPPORTED, "%s: the vocabulary has no ordinary tokens",
                       o->model_path);
    return ZQ_OK;
}

static void close_session(bench_session *s)
{
    free(s->logits);
    free(s->prompt);
    zq_sampler_free(s->sampler);
    zq_context_free(s->ctx);
    zq_model_free(s->model);
}

/* Reads the memory bandwidth after timed run i, if asked to, and returns 0, or -1 after an
 * error. The bandwidth of a shared or multi-socket machine depends on where the threads and
 * pages of a process land. On a 2-vCPU VM it also changed by a factor of two within one
 * process. So the process that decodes reads it after every run, and the best rate counts:
 * a run that decoded while memory was fast is then not compared with a slow read. */
static int read_bandwidth(const model_options *o, model_result *r, int i, int threads)
{
    if (o->bandwidth_mb <= 0)
        return 0;
    r->run_gb_s[i] = cli_bench_read_bandwidth(o->bandwidth_mb, threads, BANDWIDTH_PASSES, NULL);
    if (r->run_gb_s[i] < 0) {
        cli_error(CMD, "cannot allocate %ld MiB for --bandwidth-mb; pass a smaller value",
                  o->bandwidth_mb);
        return -1;
    }
    if (r->run_gb_s[i] > r->bandwidth_gb_s)
        r->bandwidth_gb_s = r->run_gb_s[i];
    return 0;
}

static int measure(bench_session *s, const model_options *o, model_result *r, int threads)
{
    zq_status st = open_session(s, o, r->prompt_len);
    run_times warm, runs[MAX_REPEATS];
    /* The warm-up stays within the context, which holds prompt_len + decode positions. */
    const int warm_prompt = r->prompt_len < WARMUP_PROMPT ? r->prompt_len : WARMUP_PROMPT;
    const int warm_decode = o->decode < WARMUP_DECODE ? o->decode : WARMUP_DECODE;
    if (st == ZQ_OK)
        st = generate(s, warm_prompt, warm_decode, &warm);
    for (int i = 0; st == ZQ_OK && i < o->repeats; i++) {
        st = generate(s, r->prompt_len, o->decode, &runs[i]);
        if (i == 0)
            r->peak_rss_mb = peak_rss_mb(); /* before the bandwidth buffer adds to it */
        if (st == ZQ_OK && read_bandwidth(o, r, i, threads) != 0)
            return ZQ_EXIT_FAIL;
    }
    if (st != ZQ_OK) {
        cli_error_status(CMD, st);
        return ZQ_EXIT_FAIL;
    }
    summarize(runs, o, r);
    if (o->json)
        print_json(s, o, runs, r, threads);
    else
        print_text(s, o, r, threads);
    return ZQ_EXIT_OK;
}

int cli_bench_model(int argc, char **argv)
{
    model_options o;
    const int parsed = parse_args(argc, argv, &o);
    if (parsed >= 0)
        return parsed;

    struct stat sb;
    if (stat(o.model_path, &sb) != 0) {
        cli_error(CMD, "model file '%s' not found: pass -m MODEL.zq", o.model_path);
        return ZQ_EXIT_FAIL;
    }
    bench_session s = {0};
    const int threads = cli_bench_set_threads(zq_resolve_threads(o.threads));
    s.model = cli_load_model(CMD, o.model_path, o.threads);
    if (!s.model)
        return ZQ_EXIT_FAIL;
    model_result r = {.file_mb = sb.st_size / 1048576.0,
                      .load_s = zq_model_load_seconds(s.model),
                      .weights_mb_per_token = weight_bytes_per_token(s.model) / 1e6};
    int rc = fit_prompt(s.model, &o, &r);
    if (rc < 0)
        rc = measure(&s, &o, &r, threads);
    close_session(&s);
    return rc;
}
