#include "check.h"

#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int zq_check_failed;
int zq_check_tests_run;
int zq_check_tests_bad;

const char *zq_test_fixtures(void)
{
    const char *dir = getenv("ZQ_FIXTURES");
    return dir && *dir ? dir : "tests/fixtures";
}

const char *zq_test_tmpdir(void)
{
    static char path[512];
    if (path[0])
        return path;
    const char *base = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/zq-test-%ld", base && *base ? base : "/tmp", (long)getpid());
    mkdir(path, 0700);
    return path;
}

char *zq_test_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (size)
            *size = (size_t)n;
    }
    return buf;
}
