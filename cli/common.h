/*
 * common.h - helpers shared by the zq subcommands: option values, the default model, errors.
 * Every subcommand is `int zq_cmd_NAME(int argc, char **argv)` (argv[0] is the subcommand
 * name) returning the process exit status: 0 success, 1 failure, 2 usage error.
 */
#ifndef ZQ_CLI_COMMON_H
#define ZQ_CLI_COMMON_H

#include "../runtime/zq.h"

#include <stdbool.h>
#include <stdint.h>

#define ZQ_EXIT_OK 0
#define ZQ_EXIT_FAIL 1
#define ZQ_EXIT_USAGE 2

/* Prints "zq CMD: error: MESSAGE" on stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints the message of a failed library call: "zq CMD: error: <zq_last_error()>". */
void cli_error_status(const char *cmd, zq_status status);

/* Parse an option value; on failure print "invalid value 'X' for --NAME: expected ..." and
 * return false. */
bool cli_parse_int(const char *cmd, const char *option, const char *text, long min, long max,
                   long *out);
bool cli_parse_float(const char *cmd, const char *option, const char *text, double min,
                     double max, double *out);
bool cli_parse_u64(const char *cmd, const char *option, const char *text, uint64_t *out);

/* Returns the model path to use: the -m value if given, else $ZQ_MODEL, else the default model
 * built by make next to the zq executable (zh-chat-tiny.zq). */
const char *cli_model_path(const char *given);

/* Returns true if text is valid UTF-8 without NUL; otherwise prints "invalid UTF-8 in WHAT at
 * byte N" and returns false. */
bool cli_check_text(const char *cmd, const char *what, const char *text);

/* Loads a model, printing the error and returning NULL on failure. */
zq_model *cli_load_model(const char *cmd, const char *path, int n_threads);

/* Sets the library log level from -v/-q counts and routes it to stderr. */
void cli_set_verbosity(int verbosity);

#endif /* ZQ_CLI_COMMON_H */

/* Long options shared by the generating commands (run, chat), as getopt_long values. */
enum {
    CLI_OPT_SEED = 1000,
    CLI_OPT_TEMPERATURE,
    CLI_OPT_TOP_K,
    CLI_OPT_TOP_P,
    CLI_OPT_PENALTY,
    CLI_OPT_MAX_NEW,
    CLI_OPT_THREADS,
    CLI_OPT_HISTORY,
    CLI_OPT_KV_TYPE,
    CLI_OPT_FIRST_FREE, /* commands number their own options from here */
};

#define CLI_GEN_LONG_OPTIONS                                                                       \
    {"seed", required_argument, 0, CLI_OPT_SEED},                                                  \
        {"temperature", required_argument, 0, CLI_OPT_TEMPERATURE},                                \
        {"top-k", required_argument, 0, CLI_OPT_TOP_K},                                            \
        {"top-p", required_argument, 0, CLI_OPT_TOP_P},                                            \
        {"repetition-penalty", required_argument, 0, CLI_OPT_PENALTY},                             \
        {"max-new-tokens", required_argument, 0, CLI_OPT_MAX_NEW},                                 \
        {"threads", required_argument, 0, CLI_OPT_THREADS},                                        \
        {"kv-type", required_argument, 0, CLI_OPT_KV_TYPE}

#define CLI_GEN_HELP                                                                               \
    "  --seed N                 random seed for sampling (default 0)\n"                            \
    "  --temperature T          sampling temperature, 0 = greedy (default 0.7)\n"                 \
    "  --top-k K                keep the K most likely tokens, 0 = all (default 50)\n"            \
    "  --top-p P                keep the smallest set with probability mass >= P, in (0, 1]\n"   \
    "                           (default 0.95)\n"                                                  \
    "  --repetition-penalty R   divide the logits of recent tokens by R, 1 = off (default 1.1)\n" \
    "  --max-new-tokens N       maximum reply length in tokens (default 64)\n"                    \
    "  --threads N              threads, default the number of physical cores\n"                \
    CLI_KV_TYPE_HELP

#define CLI_KV_TYPE_HELP                                                                           \
    "  --kv-type T              KV cache: auto (the type of the weights), f32, f16 or int8\n"  \
    "                           (default auto)\n"

/* Parses the value of option (e.g. "--kv-type") into *out; prints the error and returns false
 * if invalid. */
bool cli_parse_kv_type(const char *cmd, const char *option, const char *arg, zq_kv_type *out);

/* Applies one of the shared generation options to p. Returns 1 if opt was one of them, 0 if
 * not, -1 on an invalid value (already printed). */
int cli_gen_option(const char *cmd, int opt, const char *arg, zq_chat_params *p);
