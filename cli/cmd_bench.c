/*
 * cmd_bench.c - `zq bench PART`: dispatches to the bandwidth, kernel and model benchmarks and
 * contains the helpers they share. bench/run.sh runs one process per configuration, because the
 * peak RSS it reports is per process.
 */
#include "bench.h"
#include "commands.h"
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef ZQ_USE_OPENMP
#include <omp.h>
#endif

#define CMD "bench"

static void help(FILE *out)
{
    fprintf(out,
            "usage: zq bench PART [options]\n\n"
            "Measures the speed of this machine and of ZQ in this process.\n\n"
            "parts:\n"
            "  bandwidth  streaming read bandwidth of memory, GB/s\n"
            "  kernels    int8/f16/f32 matrix products at the shapes of a 768-wide GPT-2\n"
            "  model      load time, prefill, time to first token, decode and peak RSS of a\n"
            "             .zq model\n\n"
            "Run 'zq bench PART --help' for the options of a part.\n");
}

int cli_bench_set_threads(int requested)
{
#ifdef ZQ_USE_OPENMP
    /* oneDNN sizes its thread team from omp_get_max_threads() when it creates a primitive, so
     * without this a 1-thread run would use every core in oneDNN's matrix products. */
    omp_set_num_threads(requested);
    int used = 1;
#pragma omp parallel num_threads(requested)
    {
#pragma omp single
        used = omp_get_num_threads();
    }
    return used;
#else
    (void)requested;
    return 1;
#endif
}

void cli_bench_print_json(cJSON *record)
{
    char *text = cJSON_PrintUnformatted(record);
    if (text) {
        puts(text);
        fflush(stdout);
    }
    free(text);
    cJSON_Delete(record);
}

double cli_bench_round(double x, int decimals)
{
    const double scale = pow(10.0, decimals);
    return round(x * scale) / scale;
}

int zq_cmd_bench(int argc, char **argv)
{
    if (argc < 2) {
        help(stderr);
        return ZQ_EXIT_USAGE;
    }
    const char *part = argv[1];
    if (!strcmp(part, "--help") || !strcmp(part, "-h")) {
        help(stdout);
        return ZQ_EXIT_OK;
    }
    if (!strcmp(part, "bandwidth"))
        return cli_bench_bandwidth(argc - 1, argv + 1);
    if (!strcmp(part, "kernels"))
        return cli_bench_kernels(argc - 1, argv + 1);
    if (!strcmp(part, "model"))
        return cli_bench_model(argc - 1, argv + 1);
    cli_error(CMD, "unknown part '%s': expected bandwidth, kernels or model", part);
    return ZQ_EXIT_USAGE;
}
