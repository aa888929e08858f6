/*
 * cmd_chat.c - `zq chat`: an interactive chat loop. Each input line is one user turn, so it
 * works the same on a terminal and with piped input. Replies stream to stdout, one per line.
 */
#include "../runtime/filter.h"
#include "commands.h"
#include "common.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CMD "chat"
#define DEFAULT_REFUSAL "抱歉，这个问题我无法回答。"

/* State of the output side: an optional sensitive-word filter that masks the streamed reply. */
typedef struct {
    const zq_filter *filter;
    zq_filter_stream *stream;
    const char *refusal;
} output;

static void help(void)
{
    printf("usage: zq chat [-m MODEL.zq] [options]\n\n"
           "Reads one user turn per line from standard input and prints each reply on its own\n"
           "line. The last exchanges are kept as context; the oldest are dropped when the\n"
           "context window would overflow. Commands: /reset clears the history, /quit exits,\n"
           "/help lists them; any other line that starts with '/' is not sent to the model.\n\n"
           "options:\n"
           "  -m, --model FILE         the .zq model (default: the embedded zh-chat-tiny)\n"
           "  --history N              exchanges kept as context, 0..%d (default 3)\n"
           "  --filter-words FILE      sensitive words, one per line (UTF-8): a message that\n"
           "                           contains one gets the refusal, and replies are masked\n"
           "  --filter-reply TEXT      the refusal (default: %s)\n" CLI_GEN_HELP
           "  -v, --verbose            more log output on stderr (repeatable); -v logs each\n"
           "                           turn's prompt size and history\n"
           "  -h, --help               show this help\n",
           ZQ_CHAT_MAX_EXCHANGES, DEFAULT_REFUSAL);
}

static bool print_piece(const char *piece, size_t len, void *user)
{
    output *out = user;
    if (out->stream) {
        const char *text = NULL;
        size_t n = 0;
        if (zq_filter_stream_push(out->stream, piece, len, &text, &n) != ZQ_OK)
            return false;
        piece = text;
        len = n;
    }
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

/* Prints what the filter still holds back at the end of a reply. */
static void finish_reply(output *out)
{
    if (out->stream) {
        const char *text = NULL;
        size_t n = 0;
        if (zq_filter_stream_finish(out->stream, &text, &n) == ZQ_OK)
            fwrite(text, 1, n, stdout);
        zq_filter_stream_reset(out->stream);
    }
    putchar('\n');
    fflush(stdout);
}

/* Strips the line ending and surrounding ASCII whitespace in place. */
static char *trim(char *line)
{
    size_t n = strlen(line);
    while (n > 0 && strchr(" \t\r\n", line[n - 1]))
        line[--n] = '\0';
    while (*line == ' ' || *line == '\t')
        line++;
    return line;
}

/* Handles a line that starts with '/'. Returns -1 for /quit, 0 otherwise. */
static int run_command(zq_chat *chat, const char *text, int verbosity)
{
    if (!strcasecmp(text, "/quit") || !strcasecmp(text, "/exit"))
        return -1;
    if (!strcasecmp(text, "/reset")) {
        zq_chat_reset(chat);
        if (verbosity > 0)
            fprintf(stderr, "zq chat: history cleared\n");
    } else if (!strcasecmp(text, "/help")) {
        fprintf(stderr, "commands: /reset clears the history, /quit exits, /help shows this\n");
    } else {
        fprintf(stderr, "zq chat: unknown command '%s'; /help lists the commands\n", text);
    }
    return 0;
}

static int chat_loop(zq_chat *chat, output *out, int verbosity)
{
    const bool interactive = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    int turn = 0;
    int rc = ZQ_EXIT_OK;
    for (;;) {
        if (interactive)
            fputs("> ", stderr);
        if (getline(&line, &cap, stdin) < 0)
            break;
        char *text = trim(line);
        if (!*text)
            continue;
        if (text[0] == '/') {
            const int cmd = run_command(chat, text, verbosity);
            if (cmd < 0)
                break;
            continue;
        }
        if (!cli_check_text(CMD, "the message", text)) {
            rc = ZQ_EXIT_FAIL;
            continue;
        }
        if (out->filter && zq_filter_match(out->filter, text, strlen(text))) {
            /* Refused messages never reach the model or the history. */
            printf("%s\n", out->refusal);
            fflush(stdout);
            continue;
        }
        const zq_status st = zq_chat_reply(chat, text, print_piece, out, NULL, 0);
        if (st != ZQ_OK) {
            /* The reply is empty on failure; one bad turn (e.g. too long) ends nothing. */
            cli_error_status(CMD, st);
            rc = ZQ_EXIT_FAIL;
            continue;
        }
        finish_reply(out);
        if (verbosity > 0)
            fprintf(stderr, "zq chat: turn %d: history %d exchanges\n", ++turn,
                    zq_chat_exchanges(chat));
    }
    free(line);
    return rc;
}

int zq_cmd_chat(int argc, char **argv)
{
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'},
        {"history", required_argument, 0, CLI_OPT_HISTORY},
        {"filter-words", required_argument, 0, CLI_OPT_FIRST_FREE},
        {"filter-reply", required_argument, 0, CLI_OPT_FIRST_FREE + 1},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        CLI_GEN_LONG_OPTIONS,
        {0, 0, 0, 0},
    };
    zq_chat_params params;
    zq_chat_params_default(&params);
    const char *model_path = NULL;
    const char *filter_path = NULL;
    output out = {.refusal = DEFAULT_REFUSAL};
    int verbosity = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:vh", longs, NULL)) != -1) {
        if (c == 'm')
            model_path = optarg;
        else if (c == CLI_OPT_FIRST_FREE)
            filter_path = optarg;
        else if (c == CLI_OPT_FIRST_FREE + 1)
            out.refusal = optarg;
        else if (c == 'v')
            verbosity++;
        else if (c == 'h')
            return help(), ZQ_EXIT_OK;
        else if (cli_gen_option(CMD, c, optarg, &params) != 1)
            return ZQ_EXIT_USAGE;
    }
    if (optind != argc) {
        cli_error(CMD, "unexpected argument '%s'; run 'zq chat --help'", argv[optind]);
        return ZQ_EXIT_USAGE;
    }
    cli_set_verbosity(verbosity);

    zq_filter *filter = NULL;
    if (filter_path) {
        zq_status fst = zq_filter_load(filter_path, &filter);
        if (fst == ZQ_OK)
            fst = zq_filter_stream_create(filter, &out.stream);
        if (fst != ZQ_OK) {
            cli_error_status(CMD, fst);
            zq_filter_free(filter);
            return ZQ_EXIT_FAIL;
        }
        out.filter = filter;
    }

    zq_model *model = cli_load_model(CMD, cli_model_path(model_path), params.n_threads);
    zq_chat *chat = NULL;
    int rc = ZQ_EXIT_FAIL;
    if (model) {
        const zq_status st = zq_chat_create(model, &params, &chat);
        if (st == ZQ_OK)
            rc = chat_loop(chat, &out, verbosity);
        else
            cli_error_status(CMD, st);
    }
    zq_chat_free(chat);
    zq_model_free(model);
    zq_filter_stream_free(out.stream);
    zq_filter_free(filter);
    return rc;
}
