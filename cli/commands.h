/*
 * commands.h - the zq subcommands. Each takes the arguments after "zq" (argv[0] is the
 * subcommand name) and returns the exit status.
 */
#ifndef ZQ_CLI_COMMANDS_H
#define ZQ_CLI_COMMANDS_H

int zq_cmd_quantize(int argc, char **argv);
int zq_cmd_run(int argc, char **argv);
int zq_cmd_chat(int argc, char **argv);
int zq_cmd_tokenize(int argc, char **argv);
int zq_cmd_serve(int argc, char **argv);
int zq_cmd_eval(int argc, char **argv);
int zq_cmd_bench(int argc, char **argv);

#endif /* ZQ_CLI_COMMANDS_H */
