/*
 * cmd_tokenize.c - `zq tokenize`: prints the token ids (or token strings) of a text.
 */
#include "commands.h"
#include "common.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMD "tokenize"

static void help(void)
{
    printf("usage: zq tokenize [-m MODEL.zq] [--tokens] TEXT\n\n"
           "Prints the ids of TEXT's tokens, space-separated, with the model's tokenizer (no\n"
           "[CLS] or [SEP] is added).\n\n"
           "options:\n"
           "  -m, --model FILE   the .zq model (default: the embedded zh-chat-tiny)\n"
           "  -t, --tokens       print the token strings instead of the ids\n"
           "  -h, --help         show this help\n");
}

static int print_tokens(const zq_model *model, const char *text, bool strings)
{
    int n = 0;
    zq_status st = zq_tokenize(model, text, NULL, 0, &n);
    if (st != ZQ_OK && st != ZQ_ERR_CONTEXT_FULL) {
        cli_error_status(CMD, st);
        return ZQ_EXIT_FAIL;
    }
    int32_t *ids = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!ids) {
        cli_error(CMD, "out of memory for %d tokens", n);
        return ZQ_EXIT_FAIL;
    }
    st = zq_tokenize(model, text, ids, n, &n);
    if (st != ZQ_OK) {
        free(ids);
        cli_error_status(CMD, st);
        return ZQ_EXIT_FAIL;
    }
    for (int i = 0; i < n; i++) {
        if (i)
            putchar(' ');
        if (strings)
            fputs(zq_token_str(model, ids[i]), stdout);
        else
            printf("%d", ids[i]);
    }
    putchar('\n');
    free(ids);
    return ZQ_EXIT_OK;
}

int zq_cmd_tokenize(int argc, char **argv)
{
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'},
        {"tokens", no_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model_path = NULL;
    bool strings = false;
    int c;
    while ((c = getopt_long(argc, argv, "m:th", longs, NULL)) != -1) {
        if (c == 'm')
            model_path = optarg;
        else if (c == 't')
            strings = true;
        else if (c == 'h')
            return help(), ZQ_EXIT_OK;
        else
            return ZQ_EXIT_USAGE;
    }
    if (optind != argc - 1) {
        cli_error(CMD, "expected one TEXT argument; run 'zq tokenize --help'");
        return ZQ_EXIT_USAGE;
    }
    if (!cli_check_text(CMD, "the text", argv[optind]))
        return ZQ_EXIT_USAGE;
    zq_model *model = cli_load_model(CMD, cli_model_path(model_path), 1);
    if (!model)
        return ZQ_EXIT_FAIL;
    const int rc = print_tokens(model, argv[optind], strings);
    zq_model_free(model);
    return rc;
}
