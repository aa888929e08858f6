/*
 * cmd_eval.c - `zq eval`: perplexity of one or more models over a text and the KL divergence of
 * their next-token distributions from a reference model's, as a table or JSON. The numbers come
 * from runtime/eval.c.
 */
#include "../runtime/eval.h"
#include "commands.h"
#include "common.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMD "eval"
#define MAX_MODELS 32

static void help(void)
{
    printf(
        "usage: zq eval -m MODEL.zq [-m MODEL.zq ...] --text FILE [options]\n\n"
        "Scores FILE with every model: perplexity, and against the reference model the KL\n"
        "divergence KL(ref || model) of the next-token distributions (mean, median, 99th\n"
        "percentile, max), the rate of the same top-1 token, and the mean and RMS change of the\n"
        "correct token's probability (model minus reference).\n\n"
        "FILE is UTF-8. With TABs it holds one dialogue per line, turns separated by TAB, each\n"
        "scored as [CLS] turn [SEP] turn [SEP] ...; without, it is plain text: [CLS] line [SEP]\n"
        "line [SEP] ... The token stream is cut into windows; each window scores the tokens\n"
        "that no earlier window scored.\n\n"
        "options:\n"
        "  -m, --model FILE    a .zq model to score (repeatable, at most %d; default: the\n"
        "                      embedded zh-chat-tiny)\n"
        "  --text FILE         the text to score (required)\n"
        "  --ref FILE          the reference model (default: the first -m); added to the\n"
        "                      table when it is not one of the -m models\n"
        "  --format F          auto (default), chat or plain\n"
        "  --window N          tokens per window (default %d, at most the model context)\n"
        "  --stride N          tokens between window starts, 1..window (default: the window)\n"
        "  --max-tokens N      score only the first N tokens of the stream (default: all)\n"
        "  --per-layer         compare each layer's hidden states with the reference's\n"
        "  --json              print JSON instead of the table\n"
        "  --threads N         threads, default the number of physical cores\n"
        "  --kv-type T         KV cache of every model: auto (the type of its weights), f32,\n"
        "                      f16 or int8 (default auto)\n"
        "  --ref-kv-type T     KV cache of the reference instead (default: as --kv-type), to\n"
        "                      score a cache type against an exact reference\n"
        "  -q, --quiet         no progress bar\n"
        "  -h, --help          show this help\n",
        MAX_MODELS, ZQ_EVAL_DEFAULT_WINDOW);
}

typedef struct {
    const char *paths[MAX_MODELS + 1];
    int n_paths;
    const char *text;
    const char *ref;
    zq_text_format format;
    int max_tokens;
    bool json;
    bool quiet;
    zq_eval_params p;
} options;

static bool parse_format(const char *text, zq_text_format *format)
{
    if (!strcmp(text, "auto"))
        *format = ZQ_TEXT_AUTO;
    else if (!strcmp(text, "chat"))
        *format = ZQ_TEXT_CHAT;
    else if (!strcmp(text, "plain"))
        *format = ZQ_TEXT_PLAIN;
    else
        return false;
    return true;
}

static int parse_option(int c, options *o)
{
    long v;
    switch (c) {
    case 'm':
        if (o->n_paths == MAX_MODELS) {
            cli_error(CMD, "too many -m options (at most %d)", MAX_MODELS);
            return ZQ_EXIT_USAGE;
        }
        o->paths[o->n_paths++] = optarg;
        return ZQ_EXIT_OK;
    case 'q': o->quiet = true; return ZQ_EXIT_OK;
    case 't': o->text = optarg; return ZQ_EXIT_OK;
    case 'r': o->ref = optarg; return ZQ_EXIT_OK;
    case 'l': o->p.per_layer = true; return ZQ_EXIT_OK;
    case 'j': o->json = true; return ZQ_EXIT_OK;
    case 'f':
        if (parse_format(optarg, &o->format))
            return ZQ_EXIT_OK;
        cli_error(CMD, "invalid value '%s' for --format: expected auto, chat or plain", optarg);
        return ZQ_EXIT_USAGE;
    case 'w':
    case 's':
        if (!cli_parse_int(CMD, c == 'w' ? "window" : "stride", optarg, c == 'w' ? 2 : 1,
                           1 << 20, &v))
            return ZQ_EXIT_USAGE;
        *(c == 'w' ? &o->p.window : &o->p.stride) = (int)v;
        return ZQ_EXIT_OK;
    case 'T':
        if (!cli_parse_int(CMD, "threads", optarg, 1, 1024, &v))
            return ZQ_EXIT_USAGE;
        o->p.n_threads = (int)v;
        return ZQ_EXIT_OK;
    case 'k':
        return cli_parse_kv_type(CMD, "--kv-type", optarg, &o->p.kv_type) ? ZQ_EXIT_OK
                                                                           : ZQ_EXIT_USAGE;
    case 'K':
        o->p.ref_kv_set = true;
        return cli_parse_kv_type(CMD, "--ref-kv-type", optarg, &o->p.ref_kv_type)
                   ? ZQ_EXIT_OK
                   : ZQ_EXIT_USAGE;
    case 'n':
        if (!cli_parse_int(CMD, "max-tokens", optarg, 2, 1 << 30, &v))
            return ZQ_EXIT_USAGE;
        o->max_tokens = (int)v;
        return ZQ_EXIT_OK;
    }
    return ZQ_EXIT_USAGE;
}

/* Returns ZQ_EXIT_OK, ZQ_EXIT_USAGE, or -1 after printing the help. */
static int parse_options(int argc, char **argv, options *o)
{
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'},  {"text", required_argument, 0, 't'},
        {"ref", required_argument, 0, 'r'},    {"format", required_argument, 0, 'f'},
        {"window", required_argument, 0, 'w'}, {"stride", required_argument, 0, 's'},
        {"per-layer", no_argument, 0, 'l'},    {"json", no_argument, 0, 'j'},
        {"threads", required_argument, 0, 'T'}, {"quiet", no_argument, 0, 'q'},
        {"max-tokens", required_argument, 0, 'n'}, {"kv-type", required_argument, 0, 'k'},
        {"ref-kv-type", required_argument, 0, 'K'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "m:qh", longs, NULL)) != -1) {
        if (c == 'h')
            return help(), -1;
        const int rc = c == '?' ? ZQ_EXIT_USAGE : parse_option(c, o);
        if (rc != ZQ_EXIT_OK)
            return rc;
    }
    if (optind != argc || !o->text) {
        cli_error(CMD, "expected --text FILE and no other arguments; run 'zq eval --help'");
        return ZQ_EXIT_USAGE;
    }
    if (o->p.window && o->p.stride > o->p.window) {
        cli_error(CMD, "invalid value '%d' for --stride: expected at most the window (%d)",
                  o->p.stride, o->p.window);
        return ZQ_EXIT_USAGE;
    }
    if (o->n_paths == 0)
        o->paths[o->n_paths++] = cli_model_path(NULL);
    return ZQ_EXIT_OK;
}

/* Puts the reference in the list (first, when it is not one of the -m models) and returns its
 * index. */
static int place_reference(options *o)
{
    if (!o->ref)
        return 0;
    for (int i = 0; i < o->n_paths; i++)
        if (!strcmp(o->paths[i], o->ref))
            return i;
    memmove(&o->paths[1], &o->paths[0], (size_t)o->n_paths * sizeof o->paths[0]);
    o->paths[0] = o->ref;
    o->n_paths++;
    return 0;
}

static void progress_bar(int done, int total, void *user)
{
    const int width = 30;
    const int filled = total ? done * width / total : width;
    fprintf(stderr, "\r[%.*s%*s] %d/%d windows", filled, "==============================",
            width - filled, "", done, total);
    if (done == total)
        fputc('\n', stderr);
}

static void print_table(const options *o, zq_model *const *models, int ref,
                        const zq_eval_result *res, int n_ids, const char *framing)
{
    printf("text %s: %d tokens (%s framing), %lld scored, window %d, stride %d\n", o->text,
           n_ids, framing, res[ref].stats.tokens, o->p.window, o->p.stride);
    printf("reference: %s\n\n", o->paths[ref]);
    int width = 5;
    for (int i = 0; i < o->n_paths; i++)
        width = (int)strlen(o->paths[i]) > width ? (int)strlen(o->paths[i]) : width;
    printf("%-*s %-5s %-4s %9s %7s %9s %9s %9s %9s %7s %10s %9s\n", width, "model", "type", "kv",
           "ppl", "ratio", "kld_mean", "kld_med", "kld_p99", "kld_max", "top1_%", "dp_mean",
           "dp_rms");
    for (int i = 0; i < o->n_paths; i++) {
        const zq_eval_stats *s = &res[i].stats;
        const zq_kv_type kv = zq_eval_kv_type(models[i], i == ref, &o->p);
        /* Random-weight test models reach perplexities beyond the fixed-point column. */
        printf(s->ppl < 1e5 ? "%-*s %-5s %-4s %9.4f" : "%-*s %-5s %-4s %9.3e", width,
               o->paths[i], zq_type_name(zq_model_type(models[i])), zq_kv_type_name(kv), s->ppl);
        printf(" %7.4f %9.3e %9.3e %9.3e %9.3e %7.3f %+10.3e %9.3e\n", s->ppl_ratio,
               s->kld_mean, s->kld_median, s->kld_p99, s->kld_max, 100 * s->same_top1,
               s->dp_mean, s->dp_rms);
    }
    if (!o->p.per_layer)
        return;
    printf("\nper layer, mean over scored tokens, against the reference:\n");
    printf("%-*s %-6s %10s %10s\n", width, "model", "layer", "cos_sim", "rel_err");
    for (int i = 0; i < o->n_paths; i++) {
        if (i == ref)
            continue;
        for (int l = 0; l < res[i].n_layers; l++) {
            char name[16];
            if (l == res[i].n_layers - 1)
                snprintf(name, sizeof name, "ln_f");
            else
                snprintf(name, sizeof name, "h.%d", l);
            printf("%-*s %-6s %10.6f %10.3e\n", width, o->paths[i], name, res[i].layer_cos[l],
                   res[i].layer_rel[l]);
        }
    }
}

static cJSON *json_layers(const zq_eval_result *r)
{
    cJSON *layers = cJSON_CreateArray();
    for (int l = 0; l < r->n_layers; l++) {
        cJSON *item = cJSON_CreateObject();
        char name[16];
        if (l == r->n_layers - 1)
            snprintf(name, sizeof name, "ln_f");
        else
            snprintf(name, sizeof name, "h.%d", l);
        cJSON_AddStringToObject(item, "layer", name);
        cJSON_AddNumberToObject(item, "cos", r->layer_cos[l]);
        cJSON_AddNumberToObject(item, "rel_err", r->layer_rel[l]);
        cJSON_AddItemToArray(layers, item);
    }
    return layers;
}

static cJSON *json_model(const char *path, const zq_model *m, const zq_eval_result *r,
                         bool is_ref, const zq_eval_params *p)
{
    const zq_eval_stats *s = &r->stats;
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "path", path);
    cJSON_AddStringToObject(item, "type", zq_type_name(zq_model_type(m)));
    cJSON_AddStringToObject(item, "desc", zq_model_desc(m));
    cJSON_AddBoolToObject(item, "reference", is_ref);
    cJSON_AddStringToObject(item, "kv_type", zq_kv_type_name(zq_eval_kv_type(m, is_ref, p)));
    cJSON_AddNumberToObject(item, "ppl", s->ppl);
    cJSON_AddNumberToObject(item, "ppl_ratio", s->ppl_ratio);
    cJSON_AddNumberToObject(item, "kld_mean", s->kld_mean);
    cJSON_AddNumberToObject(item, "kld_median", s->kld_median);
    cJSON_AddNumberToObject(item, "kld_p99", s->kld_p99);
    cJSON_AddNumberToObject(item, "kld_max", s->kld_max);
    cJSON_AddNumberToObject(item, "same_top1", s->same_top1);
    cJSON_AddNumberToObject(item, "dp_mean", s->dp_mean);
    cJSON_AddNumberToObject(item, "dp_rms", s->dp_rms);
    if (p->per_layer)
        cJSON_AddItemToObject(item, "layers", json_layers(r));
    return item;
}

static void print_json(const options *o, zq_model *const *models, int ref,
                       const zq_eval_result *res, int n_ids, const char *framing)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "text", o->text);
    cJSON_AddStringToObject(root, "format", framing);
    cJSON_AddNumberToObject(root, "tokens", n_ids);
    cJSON_AddNumberToObject(root, "scored", (double)res[ref].stats.tokens);
    cJSON_AddNumberToObject(root, "window", o->p.window);
    cJSON_AddNumberToObject(root, "stride", o->p.stride);
    cJSON_AddStringToObject(root, "ref", o->paths[ref]);
    cJSON *list = cJSON_AddArrayToObject(root, "models");
    for (int i = 0; i < o->n_paths; i++)
        cJSON_AddItemToArray(list, json_model(o->paths[i], models[i], &res[i], i == ref, &o->p));
    char *text = cJSON_Print(root);
    if (text)
        printf("%s\n", text);
    free(text);
    cJSON_Delete(root);
}

/* Resolves the window and stride the run will use, for printing. */
static void settle_window(options *o, zq_model *const *models)
{
    int n_ctx = zq_model_hparams(models[0])->n_ctx;
    for (int i = 1; i < o->n_paths; i++)
        if (zq_model_hparams(models[i])->n_ctx < n_ctx)
            n_ctx = zq_model_hparams(models[i])->n_ctx;
    if (!o->p.window)
        o->p.window = ZQ_EVAL_DEFAULT_WINDOW < n_ctx ? ZQ_EVAL_DEFAULT_WINDOW : n_ctx;
    if (!o->p.stride)
        o->p.stride = o->p.window;
}

static int evaluate(options *o, zq_model *const *models, int ref)
{
    int32_t *ids = NULL;
    int n_ids = 0;
    zq_text_format used = ZQ_TEXT_PLAIN;
    zq_status st = zq_eval_check_models((const zq_model *const *)models, o->n_paths,
                                        o->p.per_layer);
    if (st == ZQ_OK)
        st = zq_eval_tokenize_file(models[ref], o->text, o->format, &used, &ids, &n_ids);
    if (st != ZQ_OK) {
        cli_error_status(CMD, st);
        return ZQ_EXIT_FAIL;
    }
    if (o->max_tokens && n_ids > o->max_tokens)
        n_ids = o->max_tokens;
    settle_window(o, models);
    if (!o->quiet && isatty(STDERR_FILENO))
        o->p.progress = progress_bar;

    zq_eval_result res[MAX_MODELS + 1];
    st = zq_eval_run((const zq_model *const *)models, o->n_paths, ref, ids, n_ids, &o->p, res);
    if (st == ZQ_OK) {
        const char *framing = used == ZQ_TEXT_CHAT ? "chat" : "plain";
        if (o->json)
            print_json(o, models, ref, res, n_ids, framing);
        else
            print_table(o, models, ref, res, n_ids, framing);
        for (int i = 0; i < o->n_paths; i++)
            zq_eval_result_free(&res[i]);
    } else {
        cli_error_status(CMD, st);
    }
    free(ids);
    return st == ZQ_OK ? ZQ_EXIT_OK : ZQ_EXIT_FAIL;
}

int zq_cmd_eval(int argc, char **argv)
{
    static options o;
    memset(&o, 0, sizeof o);
    const int rc = parse_options(argc, argv, &o);
    if (rc != ZQ_EXIT_OK)
        return rc < 0 ? ZQ_EXIT_OK : rc;
    const int ref = place_reference(&o);

    zq_model *models[MAX_MODELS + 1] = {0};
    int status = ZQ_EXIT_OK;
    for (int i = 0; i < o.n_paths && status == ZQ_EXIT_OK; i++) {
        models[i] = cli_load_model(CMD, o.paths[i], o.p.n_threads);
        if (!models[i])
            status = ZQ_EXIT_FAIL;
    }
    if (status == ZQ_EXIT_OK)
        status = evaluate(&o, models, ref);
    for (int i = 0; i < o.n_paths; i++)
        zq_model_free(models[i]);
    return status;
}
