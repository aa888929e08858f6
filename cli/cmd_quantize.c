/*
 * cmd_quantize.c - `zq quantize`: converts a Hugging Face GPT-2 folder into a .zq file and
 * prints the quantization error of each tensor.
 */
#include "../quantize/quantize.h"
#include "commands.h"
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "quantize"
#define MAX_LIST 256

static void help(void)
{
    printf("usage: zq quantize MODEL_DIR -o OUT.zq [options]\n\n"
           "Converts a Hugging Face GPT-2 folder (config.json, model.safetensors or\n"
           "pytorch_model.bin, vocab.txt) into one self-contained .zq file.\n\n"
           "options:\n"
           "  -o, --output FILE      the .zq file to write (required)\n"
           "  --type T               int8 (default), f16 or f32: storage of the large matrices\n"
           "  --group N              int8 scale per N input columns (multiple of 4);\n"
           "                         default one scale per output row\n"
           "  --keep-f16 PATTERN     keep tensors whose name matches the glob PATTERN in f16,\n"
           "                         e.g. 'wte.weight' for the output head (repeatable)\n"
           "  --add-token TOKEN      add a token that is never split, e.g. 人工智能 (repeatable)\n"
           "  --calibrate FILE       run the f32 model over FILE (text as for 'zq eval') and move\n"
           "                         the activation outliers of the c_attn and c_fc inputs into\n"
           "                         their weights before quantizing (SmoothQuant-style)\n"
           "  --alpha A              migration strength in [0, 1] for --calibrate (default 0.5)\n"
           "  --calibrate-tokens N   use at most the first N tokens of FILE (default: all)\n"
           "  --zstd-level N         zstd compression level 1..22 (default 10)\n"
           "  --threads N            threads, default the number of physical cores\n"
           "  -q, --quiet            no progress bar and no error table\n"
           "  -h, --help             show this help\n");
}

static void progress_bar(int done, int total, const char *name, void *user)
{
    const int width = 30;
    const int filled = total ? done * width / total : width;
    fprintf(stderr, "\r[%.*s%*s] %3d/%d %-28.28s", filled, "==============================",
            width - filled, "", done, total, name);
    if (done == total)
        fputc('\n', stderr);
}

static void print_table(const zq_quant_report *r)
{
    printf("%-28s %-5s %13s %11s %11s\n", "tensor", "type", "shape", "rel_rms", "max_abs");
    for (int i = 0; i < r->n_stats; i++) {
        const zq_quant_stat *s = &r->stats[i];
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%d", s->rows, s->cols);
        printf("%-28s %-5s %13s %11.3e %11.3e\n", s->name, zq_type_name(s->type), shape,
               s->rel_rms, s->max_abs);
    }
}

typedef struct {
    const char *dir;
    const char *out;
    bool quiet;
    const char *added[MAX_LIST];
    const char *keep[MAX_LIST];
    zq_quantize_params p;
} options;

static bool parse_type(const char *text, zq_type *type)
{
    if (!strcmp(text, "int8") || !strcmp(text, "q8"))
        *type = ZQ_TYPE_Q8;
    else if (!strcmp(text, "f16") || !strcmp(text, "fp16"))
        *type = ZQ_TYPE_F16;
    else if (!strcmp(text, "f32") || !strcmp(text, "fp32"))
        *type = ZQ_TYPE_F32;
    else
        return false;
    return true;
}

static int parse_options(int argc, char **argv, options *o)
{
    enum {
        OPT_TYPE = CLI_OPT_FIRST_FREE,
        OPT_GROUP,
        OPT_KEEP,
        OPT_ADD,
        OPT_LEVEL,
        OPT_THREADS,
        OPT_CALIBRATE,
        OPT_ALPHA,
        OPT_CALIBRATE_TOKENS,
    };
    static const struct option longs[] = {
        {"output", required_argument, 0, 'o'},  {"type", required_argument, 0, OPT_TYPE},
        {"group", required_argument, 0, OPT_GROUP}, {"keep-f16", required_argument, 0, OPT_KEEP},
        {"add-token", required_argument, 0, OPT_ADD},
        {"zstd-level", required_argument, 0, OPT_LEVEL},
        {"threads", required_argument, 0, OPT_THREADS}, {"quiet", no_argument, 0, 'q'},
        {"calibrate", required_argument, 0, OPT_CALIBRATE},
        {"alpha", required_argument, 0, OPT_ALPHA},
        {"calibrate-tokens", required_argument, 0, OPT_CALIBRATE_TOKENS},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    zq_quantize_params_default(&o->p);
    long v;
    double alpha;
    int c;
    while ((c = getopt_long(argc, argv, "o:qh", longs, NULL)) != -1) {
        switch (c) {
        case 'o': o->out = optarg; break;
        case 'q': o->quiet = true; break;
        case 'h': help(); return -1;
        case OPT_TYPE:
            if (!parse_type(optarg, &o->p.type)) {
                cli_error(CMD, "invalid value '%s' for --type: expected int8, f16 or f32", optarg);
                return ZQ_EXIT_USAGE;
            }
            break;
        case OPT_GROUP:
            if (!cli_parse_int(CMD, "group", optarg, 4, 1 << 16, &v))
                return ZQ_EXIT_USAGE;
            o->p.group = (int)v;
            break;
        case OPT_KEEP:
        case OPT_ADD: {
            const char **list = c == OPT_KEEP ? o->keep : o->added;
            int *n = c == OPT_KEEP ? &o->p.n_keep_f16 : &o->p.n_added;
            if (*n == MAX_LIST) {
                cli_error(CMD, "too many --%s options (at most %d)",
                          c == OPT_KEEP ? "keep-f16" : "add-token", MAX_LIST);
                return ZQ_EXIT_USAGE;
            }
            list[(*n)++] = optarg;
            break;
        }
        case OPT_LEVEL:
            if (!cli_parse_int(CMD, "zstd-level", optarg, 1, 22, &v))
                return ZQ_EXIT_USAGE;
            o->p.zstd_level = (int)v;
            break;
        case OPT_THREADS:
            if (!cli_parse_int(CMD, "threads", optarg, 1, 1024, &v))
                return ZQ_EXIT_USAGE;
            o->p.n_threads = (int)v;
            break;
        case OPT_CALIBRATE: o->p.calibrate = optarg; break;
        case OPT_ALPHA:
            if (!cli_parse_float(CMD, "alpha", optarg, 0, 1, &alpha))
                return ZQ_EXIT_USAGE;
            o->p.alpha = (float)alpha;
            break;
        case OPT_CALIBRATE_TOKENS:
            if (!cli_parse_int(CMD, "calibrate-tokens", optarg, 2, 1 << 30, &v))
                return ZQ_EXIT_USAGE;
            o->p.calibrate_tokens = (int)v;
            break;
        default: return ZQ_EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || !o->out) {
        cli_error(CMD, "expected one MODEL_DIR and -o OUT.zq; run 'zq quantize --help'");
        return ZQ_EXIT_USAGE;
    }
    if (o->p.group && o->p.group % 4) {
        cli_error(CMD, "invalid value '%d' for --group: expected a multiple of 4", o->p.group);
        return ZQ_EXIT_USAGE;
    }
    o->dir = argv[optind];
    o->p.added_tokens = o->added;
    o->p.keep_f16 = o->keep;
    return ZQ_EXIT_OK;
}

/* The writer's temporary file, "<out>.tmp-<pid>", removed if a signal ends the run. */
static char temp_path[PATH_MAX];

static void remove_temp_and_die(int sig)
{
    unlink(temp_path); /* async-signal-safe */
    signal(sig, SIG_DFL);
    raise(sig);
}

static void remove_temp_on_signals(const char *out)
{
    snprintf(temp_path, sizeof temp_path, "%s.tmp-%ld", out, (long)getpid());
    const int signals[] = {SIGINT, SIGTERM, SIGHUP, SIGXFSZ};
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        signal(signals[i], remove_temp_and_die);
}

/* Returns true if path names the same file as an entry of dir, so writing would destroy it. */
static bool is_source_file(const char *dir, const struct stat *out)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool same = false;
    const struct dirent *e;
    while (!same && (e = readdir(d)) != NULL) {
        char path[PATH_MAX];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        same = stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_dev == out->st_dev &&
               sb.st_ino == out->st_ino;
    }
    closedir(d);
    return same;
}

/* Checks the output path before any work: not empty, not a folder, not one of the source
 * files, and in a writable folder. Returns an exit status. */
static int check_output(const char *dir, const char *out)
{
    if (!out[0]) {
        cli_error(CMD, "the output path given with -o is empty");
        return ZQ_EXIT_USAGE;
    }
    struct stat sb;
    if (stat(out, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) {
            cli_error(CMD, "output '%s' is a folder; give a file name such as %s/model.zq", out,
                      out);
            return ZQ_EXIT_USAGE;
        }
        if (is_source_file(dir, &sb)) {
            cli_error(CMD, "output '%s' is one of the source files in '%s'; choose another "
                      "path", out, dir);
            return ZQ_EXIT_USAGE;
        }
    }
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", out);
    const char *folder = dirname(parent);
    if (access(folder, W_OK) != 0) {
        cli_error(CMD, "cannot write to folder '%s': %s", folder, strerror(errno));
        return ZQ_EXIT_FAIL;
    }
    return ZQ_EXIT_OK;
}

int zq_cmd_quantize(int argc, char **argv)
{
    static options o;
    memset(&o, 0, sizeof o);
    const int rc = parse_options(argc, argv, &o);
    if (rc != ZQ_EXIT_OK)
        return rc < 0 ? ZQ_EXIT_OK : rc;
    const int out_rc = check_output(o.dir, o.out);
    if (out_rc != ZQ_EXIT_OK)
        return out_rc;
    remove_temp_on_signals(o.out);
    if (!o.quiet && isatty(STDERR_FILENO))
        o.p.progress = progress_bar;

    zq_quant_report report;
    const zq_status st = zq_quantize_model(o.dir, o.out, &o.p, &report);
    if (st != ZQ_OK) {
        cli_error_status(CMD, st);
        return ZQ_EXIT_FAIL;
    }
    if (!o.quiet)
        print_table(&report);
    if (o.p.calibrate)
        fprintf(stderr, "zq quantize: migrated activation outliers (alpha %.2f) after %lld tokens "
                "of %s\n", (double)o.p.alpha, report.calibration_tokens, o.p.calibrate);
    fprintf(stderr, "zq quantize: wrote %s: %s, %.1fM parameters from %s, %.2f MB\n", o.out,
            zq_type_name(o.p.type), report.params_total / 1e6, report.source_format,
            report.bytes_out / 1e6);
    zq_quant_report_free(&report);
    return ZQ_EXIT_OK;
}
