/*
 * main.c - the zq program: dispatches to a subcommand.
 */
#include "commands.h"
#include "common.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"quantize", zq_cmd_quantize, "convert a Hugging Face GPT-2 folder into a .zq file"},
    {"run", zq_cmd_run, "reply to one prompt and print the reply"},
    {"chat", zq_cmd_chat, "interactive chat (one user turn per input line)"},
    {"tokenize", zq_cmd_tokenize, "print the token ids (or strings) of a text"},
    {"serve", zq_cmd_serve, "HTTP chat server with batching, sessions and an OpenAI API"},
    {"eval", zq_cmd_eval, "perplexity and KL divergence of models over a text"},
    {"bench", zq_cmd_bench, "measure memory bandwidth, kernels and model speed"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: zq COMMAND [OPTIONS]\n\n"
                 "ZQ %s runs GPT-2 chat models on the CPU in int8.\n\ncommands:\n",
            ZQ_VERSION_STRING);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun 'zq COMMAND --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return ZQ_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return ZQ_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("zq %s\n", ZQ_VERSION_STRING);
        return ZQ_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        /* getopt prints argv[0] in front of its messages ("zq run: unrecognized option"). */
        char name[64];
        snprintf(name, sizeof name, "zq %s", commands[i].name);
        argv[1] = name;
        return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "zq: error: unknown command '%s'; run 'zq --help' for the list\n", argv[1]);
    return ZQ_EXIT_USAGE;
}
