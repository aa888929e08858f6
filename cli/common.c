/*
 * common.c - option parsing, model lookup and error printing for the zq subcommands.
 */
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

void cli_error(const char *cmd, const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    fprintf(stderr, "zq %s: error: %s\n", cmd, message);
}

void cli_error_status(const char *cmd, zq_status status)
{
    const char *detail = zq_last_error();
    cli_error(cmd, "%s", detail[0] ? detail : zq_status_str(status));
}

bool cli_parse_kv_type(const char *cmd, const char *option, const char *arg, zq_kv_type *out)
{
    if (zq_kv_type_parse(arg, out) == ZQ_OK)
        return true;
    cli_error(cmd, "invalid value '%s' for %s: expected auto, f32, f16 or int8", arg, option);
    return false;
}

bool cli_parse_int(const char *cmd, const char *option, const char *text, long min, long max,
                   long *out)
{
    char *end = NULL;
    errno = 0;
    const long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        cli_error(cmd, "invalid value '%s' for --%s: expected an integer in [%ld, %ld]", text,
                  option, min, max);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_float(const char *cmd, const char *option, const char *text, double min,
                     double max, double *out)
{
    char *end = NULL;
    errno = 0;
    const double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < min || v > max) {
        cli_error(cmd, "invalid value '%s' for --%s: expected a number in [%g, %g]", text,
                  option, min, max);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_u64(const char *cmd, const char *option, const char *text, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    const unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-') {
        cli_error(cmd, "invalid value '%s' for --%s: expected a non-negative integer", text,
                  option);
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

const char *cli_model_path(const char *given)
{
    if (given)
        return given;
    const char *env = getenv("ZQ_MODEL");
    if (env && *env)
        return env;
    static char path[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
    if (n <= 0)
        return "zh-chat-tiny.zq";
    path[n] = '\0';
    char *slash = strrchr(path, '/');
    snprintf(slash ? slash + 1 : path, 32, "zh-chat-tiny.zq");
    return path;
}

/* Returns the length of the valid UTF-8 sequence at s (1..4), or 0 if it is invalid. */
static int utf8_sequence(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    int n = 0; /* 0x80..0xC1 and 0xF5..0xFF never start a sequence */
    if (s[0] >= 0xF0 && s[0] <= 0xF4)
        n = 4;
    else if (s[0] >= 0xE0 && s[0] < 0xF0)
        n = 3;
    else if (s[0] >= 0xC2 && s[0] < 0xE0)
        n = 2;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    /* The leading bits of the code point reject overlong forms, surrogates and > U+10FFFF. */
    const unsigned top3 = ((s[0] & 0x0Fu) << 6) | (s[1] & 0x3Fu); /* code point >> 6 */
    const unsigned top4 = ((s[0] & 0x07u) << 6) | (s[1] & 0x3Fu); /* code point >> 12 */
    if (n == 3 && (top3 < 0x20 || (top3 >= 0x360 && top3 < 0x380)))
        return 0;
    if (n == 4 && (top4 < 0x10 || top4 > 0x10F))
        return 0;
    return n;
}

bool cli_check_text(const char *cmd, const char *what, const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; s[i];) {
        const int n = utf8_sequence(s + i);
        if (n == 0) {
            cli_error(cmd, "invalid UTF-8 in %s at byte %zu; give the text in UTF-8", what, i);
            return false;
        }
        i += (size_t)n;
    }
    return true;
}

zq_model *cli_load_model(const char *cmd, const char *path, int n_threads)
{
    struct stat sb;
    if (stat(path, &sb) != 0 && errno == ENOENT) {
        const bool is_default = strcmp(path, cli_model_path(NULL)) == 0;
        cli_error(cmd, "model file '%s' not found%s", path,
                  is_default ? ": pass -m MODEL.zq, or run make to build the default model" : "");
        return NULL;
    }
    const zq_load_params lp = {.n_threads = n_threads};
    zq_model *model = NULL;
    const zq_status st = zq_model_load(path, &lp, &model);
    if (st != ZQ_OK) {
        cli_error_status(cmd, st);
        return NULL;
    }
    return model;
}

void cli_set_verbosity(int verbosity)
{
    int level = ZQ_LOG_WARN + verbosity;
    if (level < ZQ_LOG_ERROR)
        level = ZQ_LOG_ERROR;
    if (level > ZQ_LOG_TRACE)
        level = ZQ_LOG_TRACE;
    zq_log_set_level((zq_log_level)level);
}

int cli_gen_option(const char *cmd, int opt, const char *arg, zq_chat_params *p)
{
    long l;
    double d;
    zq_sampler_params *s = &p->sampling;
    switch (opt) {
    case CLI_OPT_SEED:
        return cli_parse_u64(cmd, "seed", arg, &s->seed) ? 1 : -1;
    case CLI_OPT_TEMPERATURE:
        if (!cli_parse_float(cmd, "temperature", arg, 0, 100, &d))
            return -1;
        s->temperature = (float)d;
        return 1;
    case CLI_OPT_TOP_K:
        if (!cli_parse_int(cmd, "top-k", arg, 0, INT_MAX, &l))
            return -1;
        s->top_k = (int)l;
        return 1;
    case CLI_OPT_TOP_P:
        if (!cli_parse_float(cmd, "top-p", arg, 1e-6, 1, &d))
            return -1;
        s->top_p = (float)d;
        return 1;
    case CLI_OPT_PENALTY:
        if (!cli_parse_float(cmd, "repetition-penalty", arg, 1e-3, 100, &d))
            return -1;
        s->repetition_penalty = (float)d;
        return 1;
    case CLI_OPT_MAX_NEW:
        if (!cli_parse_int(cmd, "max-new-tokens", arg, 1, 1 << 20, &l))
            return -1;
        p->max_new_tokens = (int)l;
        return 1;
    case CLI_OPT_THREADS:
        if (!cli_parse_int(cmd, "threads", arg, 1, 1024, &l))
            return -1;
        p->n_threads = (int)l;
        return 1;
    case CLI_OPT_KV_TYPE:
        return cli_parse_kv_type(cmd, "--kv-type", arg, &p->kv_type) ? 1 : -1;
    case CLI_OPT_HISTORY:
        if (!cli_parse_int(cmd, "history", arg, 0, ZQ_CHAT_MAX_EXCHANGES, &l))
            return -1;
        p->max_exchanges = (int)l;
        return 1;
    }
    return 0;
}
