/*
 * cmd_run.c - `zq run`: replies to one prompt and prints only the reply on stdout.
 */
#include "commands.h"
#include "common.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#define CMD "run"

static void help(void)
{
    printf("usage: zq run [-m MODEL.zq] -p PROMPT [options]\n\n"
           "Generates the model's reply to PROMPT, in the chat format [CLS] PROMPT [SEP], and\n"
           "prints it on stdout as it is generated.\n\n"
           "options:\n"
           "  -m, --model FILE         the .zq model (default: the embedded zh-chat-tiny)\n"
           "  -p, --prompt TEXT        the prompt (required)\n" CLI_GEN_HELP
           "  -v, --verbose            more log output on stderr (repeatable)\n"
           "  -h, --help               show this help\n");
}

static bool print_piece(const char *piece, size_t len, void *user)
{
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

int zq_cmd_run(int argc, char **argv)
{
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, 'p'},
        {"verbose", no_argument, 0, 'v'},     {"help", no_argument, 0, 'h'},
        CLI_GEN_LONG_OPTIONS,                 {0, 0, 0, 0},
    };
    zq_chat_params params;
    zq_chat_params_default(&params);
    params.max_exchanges = 0;
    const char *model_path = NULL;
    const char *prompt = NULL;
    int verbosity = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:p:vh", longs, NULL)) != -1) {
        if (c == 'm')
            model_path = optarg;
        else if (c == 'p')
            prompt = optarg;
        else if (c == 'v')
            verbosity++;
        else if (c == 'h')
            return help(), ZQ_EXIT_OK;
        else if (cli_gen_option(CMD, c, optarg, &params) != 1)
            return ZQ_EXIT_USAGE;
    }
    if (!prompt || optind != argc) {
        cli_error(CMD, "expected -p PROMPT and no other arguments; run 'zq run --help'");
        return ZQ_EXIT_USAGE;
    }
    if (!prompt[0]) {
        cli_error(CMD, "the prompt given with -p is empty");
        return ZQ_EXIT_USAGE;
    }
    if (!cli_check_text(CMD, "the prompt", prompt))
        return ZQ_EXIT_USAGE;
    cli_set_verbosity(verbosity);

    zq_model *model = cli_load_model(CMD, cli_model_path(model_path), params.n_threads);
    if (!model)
        return ZQ_EXIT_FAIL;
    zq_chat *chat = NULL;
    zq_status st = zq_chat_create(model, &params, &chat);
    if (st == ZQ_OK)
        st = zq_chat_reply(chat, prompt, print_piece, NULL, NULL, 0);
    if (st == ZQ_OK)
        putchar('\n');
    else
        cli_error_status(CMD, st);
    zq_chat_free(chat);
    zq_model_free(model);
    return st == ZQ_OK ? ZQ_EXIT_OK : ZQ_EXIT_FAIL;
}
