/*
 * cmd_serve.c - `zq serve`: parses the options into a zq_serve_config and runs the HTTP
 * server (server/). docs/SERVING.md describes the endpoints and the deployment.
 */
#include "../server/server.h"
#include "commands.h"
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMD "serve"

static void help(const zq_serve_config *d)
{
    const zq_sampler_params *sp = &d->limits.sampling;
    printf("usage: zq serve [-m MODEL.zq] [options]\n\n"
           "Serves the model over HTTP: POST /chat (sessions), POST /v1/chat/completions\n"
           "(OpenAI-compatible, streaming with \"stream\": true), GET /v1/models, GET /health,\n"
           "GET /metrics. Stops gracefully on SIGINT or SIGTERM. See docs/SERVING.md.\n\n"
           "options:\n"
           "  -m, --model FILE         the .zq model (default: the embedded zh-chat-tiny)\n"
           "  --model-name NAME        model id in responses (default: the file name)\n"
           "  --host ADDR              numeric address to bind (default %s)\n"
           "  --port N                 TCP port, 0 = any free port (default %d)\n"
           "  --parallel N             sequences decoded together in one batch (default %d)\n"
           "  --no-batching            decode one request at a time (same as --parallel 1)\n"
           "  --queue N                requests waiting for a busy slot before 503 (default %d)\n"
           "  --threads N              threads per forward pass (default: the physical cores)\n"
           "  --ctx-size N             KV cache positions per slot, at least %d\n"
           "                           (default: the model's)\n" CLI_KV_TYPE_HELP
           "  --history N              exchanges kept per /chat session (default %d)\n",
           d->host, d->port, d->parallel, d->queue, ZQ_SERVE_MIN_CTX, d->history);
    printf("  --session-ttl SECONDS    forget a session this long after its last use\n"
           "                           (default %ld)\n"
           "  --max-sessions N         sessions kept in memory, least recently used evicted\n"
           "                           (default %ld)\n"
           "  --cache-size N           replies kept in the in-memory cache, 0 = no cache\n"
           "                           (also with --cache) (default %ld)\n"
           "  --cache redis://HOST:PORT  keep the cache and the sessions in Redis instead,\n"
           "                           shared by every server using it\n"
           "  --cache-ttl SECONDS      lifetime of a Redis cache entry, 0 = none (default %ld)\n"
           "  --filter-words FILE      sensitive words, one per line (UTF-8): input that\n"
           "                           contains one gets the refusal, output is masked\n"
           "  --filter-reply TEXT      the refusal (default: %s)\n"
           "  --api-key KEY            require Authorization: Bearer KEY (or set ZQ_API_KEY);\n"
           "                           not empty, no spaces\n"
           "  --max-body BYTES         largest request body (default %zu)\n"
           "  --max-prompt-chars N     longest prompt or message, in characters (default %d)\n"
           "  --max-new-tokens-cap N   largest max_new_tokens a request may ask for\n"
           "                           (default %d)\n"
           "  --max-connections N      simultaneous connections (default %d)\n"
           "  --shutdown-timeout SECONDS  time in-flight requests get to finish after\n"
           "                           SIGTERM before they are aborted (default %g)\n"
           "  --log-prompts            include prompts in the access log\n"
           "  --no-access-log          no access-log lines on stderr\n"
           "  --step-delay-ms N        sleep N ms after each decoding step (for tests)\n"
           "  -v, --verbose            more library log output on stderr (repeatable)\n"
           "  -h, --help               show this help\n",
           d->session_ttl, d->max_sessions, d->cache_size, d->cache_ttl, d->filter_reply,
           d->max_body, d->limits.max_prompt_chars, d->limits.max_new_tokens_cap,
           d->max_connections, d->shutdown_timeout);
    printf("\nDefaults for requests that do not set them:\n"
           "  --seed N                 seed for every request without one (default: a random\n"
           "                           seed per request)\n"
           "  --temperature T          sampling temperature, 0 = greedy (default %g)\n"
           "  --top-k K                keep the K most likely tokens, 0 = all (default %d)\n"
           "  --top-p P                keep the smallest set with probability mass >= P, in\n"
           "                           (0, 1] (default %g)\n"
           "  --repetition-penalty R   divide the logits of recent tokens by R, 1 = off\n"
           "                           (default %g)\n"
           "  --max-new-tokens N       maximum reply length in tokens (default %d)\n",
           sp->temperature, sp->top_k, sp->top_p, sp->repetition_penalty,
           d->limits.default_max_new_tokens);
}

typedef enum { OPT_INT, OPT_LONG, OPT_SIZE, OPT_SECONDS, OPT_TEXT, OPT_FLAG, OPT_UNSET } kind;

/* One server option: its name, where its value goes and its range. */
typedef struct {
    const char *name;
    kind type;
    void *target;
    long min, max;
} serve_option;

static int build_options(zq_serve_config *c, bool *no_batching, serve_option *opts)
{
    const serve_option table[] = {
        {"model-name", OPT_TEXT, &c->model_name, 0, 0},
        {"host", OPT_TEXT, &c->host, 0, 0},
        {"port", OPT_INT, &c->port, 0, 65535},
        {"parallel", OPT_INT, &c->parallel, 1, 256},
        {"no-batching", OPT_FLAG, no_batching, 0, 0},
        {"queue", OPT_INT, &c->queue, 1, 1000000},
        {"ctx-size", OPT_INT, &c->ctx_size, 1, 1 << 20},
        {"session-ttl", OPT_LONG, &c->session_ttl, 1, 100L * 365 * 86400},
        {"max-sessions", OPT_LONG, &c->max_sessions, 1, 100000000},
        {"cache-size", OPT_LONG, &c->cache_size, 0, 100000000},
        {"cache", OPT_TEXT, &c->cache_url, 0, 0},
        {"cache-ttl", OPT_LONG, &c->cache_ttl, 0, 100L * 365 * 86400},
        {"filter-words", OPT_TEXT, &c->filter_words, 0, 0},
        {"filter-reply", OPT_TEXT, &c->filter_reply, 0, 0},
        {"api-key", OPT_TEXT, &c->api_key, 0, 0},
        {"max-body", OPT_SIZE, &c->max_body, 1, 1L << 30},
        {"max-prompt-chars", OPT_INT, &c->limits.max_prompt_chars, 1, 1 << 20},
        {"max-new-tokens-cap", OPT_INT, &c->limits.max_new_tokens_cap, 1, 1 << 20},
        {"max-connections", OPT_INT, &c->max_connections, 1, 65536},
        {"shutdown-timeout", OPT_SECONDS, &c->shutdown_timeout, 0, 3600},
        {"log-prompts", OPT_FLAG, &c->log_prompts, 0, 0},
        {"no-access-log", OPT_UNSET, &c->access_log, 0, 0},
        {"step-delay-ms", OPT_INT, &c->step_delay_ms, 0, 10000},
    };
    const int n = (int)(sizeof table / sizeof *table);
    memcpy(opts, table, sizeof table);
    return n;
}

/* Stores one option value; returns false (after printing why) on an invalid value. */
static bool apply_option(const serve_option *o, const char *arg)
{
    long l = 0;
    double d = 0;
    switch (o->type) {
    case OPT_TEXT:
        *(const char **)o->target = arg;
        return true;
    case OPT_FLAG:
        *(bool *)o->target = true;
        return true;
    case OPT_UNSET:
        *(bool *)o->target = false;
        return true;
    case OPT_SECONDS:
        if (!cli_parse_float(CMD, o->name, arg, (double)o->min, (double)o->max, &d))
            return false;
        *(double *)o->target = d;
        return true;
    default:
        break;
    }
    if (!cli_parse_int(CMD, o->name, arg, o->min, o->max, &l))
        return false;
    if (o->type == OPT_INT)
        *(int *)o->target = (int)l;
    else if (o->type == OPT_LONG)
        *(long *)o->target = l;
    else
        *(size_t *)o->target = (size_t)l;
    return true;
}

/* Prints the error for what getopt_long returned as '?' (an unknown or ambiguous option,
 * or a value given to a flag) or ':' (a missing value). optopt is the unknown short option,
 * or the value of the long option at fault, or 0 for an unknown long option. */
static void report_bad_option(int c, char *const *argv)
{
    const bool unknown_short = optopt > 0 && optopt < 128 && !strchr("mvh", optopt);
    const char *arg = argv[optind - 1];
    char name[64];
    if (unknown_short)
        snprintf(name, sizeof name, "-%c", optopt);
    else
        snprintf(name, sizeof name, "%.*s", (int)strcspn(arg, "="), arg);
    if (c == ':')
        cli_error(CMD, "option '%s' needs a value; run 'zq serve --help'", name);
    else if (unknown_short)
        cli_error(CMD, "unknown option '%s'; run 'zq serve --help'", name);
    else if (optopt == 0)
        cli_error(CMD, "unknown or ambiguous option '%s'; run 'zq serve --help'", name);
    else
        cli_error(CMD, "option '%s' takes no value; run 'zq serve --help'", name);
}

/* Parses argv into cfg. Returns -1 to go on, or an exit status. */
static int parse_args(int argc, char **argv, zq_serve_config *cfg, const char **model_path)
{
    serve_option opts[32];
    bool no_batching = false;
    const int n_opts = build_options(cfg, &no_batching, opts);
    struct option longs[48];
    int n = 0;
    for (int i = 0; i < n_opts; i++) {
        const bool has_arg = opts[i].type != OPT_FLAG && opts[i].type != OPT_UNSET;
        longs[n++] = (struct option){opts[i].name, has_arg ? required_argument : no_argument, 0,
                                     CLI_OPT_FIRST_FREE + i};
    }
    const struct option fixed[] = {
        {"model", required_argument, 0, 'm'}, {"history", required_argument, 0, CLI_OPT_HISTORY},
        {"verbose", no_argument, 0, 'v'},     {"help", no_argument, 0, 'h'},
        CLI_GEN_LONG_OPTIONS,                 {0, 0, 0, 0},
    };
    memcpy(longs + n, fixed, sizeof fixed);

    zq_chat_params gen;
    zq_chat_params_default(&gen);
    gen.sampling = cfg->limits.sampling;
    gen.max_new_tokens = cfg->limits.default_max_new_tokens;
    gen.max_exchanges = cfg->history;
    int verbosity = 0, c;
    opterr = 0; /* report_bad_option prints the errors in the form of the other ones */
    while ((c = getopt_long(argc, argv, ":m:vh", longs, NULL)) != -1) {
        if (c == '?' || c == ':')
            return report_bad_option(c, argv), ZQ_EXIT_USAGE;
        if (c == 'm')
            *model_path = optarg;
        else if (c == 'v')
            verbosity++;
        else if (c == 'h')
            return help(cfg), ZQ_EXIT_OK;
        else if (c == CLI_OPT_SEED && cli_gen_option(CMD, c, optarg, &gen) == 1)
            cfg->limits.fixed_seed = true;
        else if (c == CLI_OPT_SEED)
            return ZQ_EXIT_USAGE;
        else if (c >= CLI_OPT_FIRST_FREE && c < CLI_OPT_FIRST_FREE + n_opts) {
            if (!apply_option(&opts[c - CLI_OPT_FIRST_FREE], optarg))
                return ZQ_EXIT_USAGE;
        } else if (cli_gen_option(CMD, c, optarg, &gen) != 1)
            return ZQ_EXIT_USAGE;
    }
    if (optind != argc) {
        cli_error(CMD, "unexpected argument '%s'; run 'zq serve --help'", argv[optind]);
        return ZQ_EXIT_USAGE;
    }
    cfg->limits.sampling = gen.sampling;
    cfg->limits.default_max_new_tokens = gen.max_new_tokens;
    cfg->threads = gen.n_threads;
    cfg->kv_type = gen.kv_type;
    cfg->history = gen.max_exchanges;
    if (no_batching)
        cfg->parallel = 1;
    cli_set_verbosity(verbosity);
    return -1;
}

/* Returns whether the key has no spaces or control characters: HTTP trims the spaces around
 * a header value and forbids control characters, so such a key could never match. */
static bool api_key_valid(const char *key)
{
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        if (*p <= ' ' || *p == 0x7F)
            return false;
    return true;
}

/* Checks what the options cannot check one by one; prints the error and returns false. */
static bool check_config(const zq_serve_config *cfg, bool key_from_env)
{
    if (cfg->limits.default_max_new_tokens > cfg->limits.max_new_tokens_cap) {
        cli_error(CMD, "--max-new-tokens %d is above --max-new-tokens-cap %d",
                  cfg->limits.default_max_new_tokens, cfg->limits.max_new_tokens_cap);
        return false;
    }
    if (cfg->cache_url && strncmp(cfg->cache_url, "redis://", 8) != 0) {
        cli_error(CMD, "invalid value '%s' for --cache: expected redis://HOST[:PORT]",
                  cfg->cache_url);
        return false;
    }
    const char *key_source = key_from_env ? "ZQ_API_KEY" : "--api-key";
    if (cfg->api_key && !cfg->api_key[0]) {
        cli_error(CMD, "%s is empty: give a key, or unset ZQ_API_KEY and omit --api-key to "
                  "serve without one", key_source);
        return false;
    }
    if (cfg->api_key && !api_key_valid(cfg->api_key)) {
        cli_error(CMD, "%s contains a space or a control character, which a client cannot "
                  "send in an Authorization header", key_source);
        return false;
    }
    if (cfg->ctx_size > 0 && cfg->ctx_size < ZQ_SERVE_MIN_CTX) {
        cli_error(CMD, "--ctx-size %d is too small: a request needs at least %d positions "
                  "([CLS], one prompt token, [SEP] and one reply token)",
                  cfg->ctx_size, ZQ_SERVE_MIN_CTX);
        return false;
    }
    return true;
}

int zq_cmd_serve(int argc, char **argv)
{
    zq_serve_config cfg;
    zq_serve_config_default(&cfg);
    const char *env_key = getenv("ZQ_API_KEY");
    cfg.api_key = env_key; /* an empty value is rejected, not taken as "no key" */
    const char *model_path = NULL;
    const int rc = parse_args(argc, argv, &cfg, &model_path);
    if (rc >= 0)
        return rc;
    if (!check_config(&cfg, env_key && cfg.api_key == env_key))
        return ZQ_EXIT_USAGE;
    cfg.model_path = cli_model_path(model_path);
    /* A missing model is a runtime failure, as in `zq run`, not a usage error. */
    if (access(cfg.model_path, R_OK) != 0) {
        cli_error(CMD, "cannot read the model file '%s': %s; pass -m MODEL.zq, or run make to "
                  "build the default model",
                  cfg.model_path, strerror(errno));
        return ZQ_EXIT_FAIL;
    }
    return zq_serve_run(&cfg) == 0 ? ZQ_EXIT_OK : ZQ_EXIT_FAIL;
}
