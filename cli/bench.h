/*
 * bench.h - the parts of `zq bench`: memory read bandwidth (bench_bandwidth.c), kernel timings
 * (bench_kernels.c) and the end-to-end model benchmark (bench_model.c). Each measures in the
 * process it runs in and takes the arguments after "zq bench" (argv[0] is the part's name).
 */
#ifndef ZQ_CLI_BENCH_H
#define ZQ_CLI_BENCH_H

#include <cjson/cJSON.h>

int cli_bench_bandwidth(int argc, char **argv);
int cli_bench_kernels(int argc, char **argv);
int cli_bench_model(int argc, char **argv);

/* Makes requested the default OpenMP thread count of this process, so that libraries which
 * size their own thread teams (oneDNN) use it too. Returns the number of threads a parallel
 * region then gets (1 in a build without OpenMP), so that records state what actually ran. */
int cli_bench_set_threads(int requested);

/* Reads a fresh buffer of mb MiB with n_threads threads, as `zq bench bandwidth` does. Returns
 * the best rate of the passes in GB/s, or -1 when the buffer cannot be allocated. When gbs is
 * not NULL, gbs[passes] receives the rate of each pass. */
double cli_bench_read_bandwidth(long mb, int n_threads, int passes, double *gbs);

/* Prints a JSON record on one line of stdout and frees it. */
void cli_bench_print_json(cJSON *record);

/* Rounds x to the given number of decimals, so that records do not carry timer noise. */
double cli_bench_round(double x, int decimals);

#endif /* ZQ_CLI_BENCH_H */
