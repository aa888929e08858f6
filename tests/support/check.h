/*
 * check.h - a minimal test harness. Each test is a function registered in main with
 * ZQ_RUN(fn); each CHECK that fails prints its file, line, condition and a message, and marks
 * the current test failed. Every test prints "PASS name" or "FAIL name", which
 * scripts/run-tests.sh counts.
 */
#ifndef ZQ_CHECK_H
#define ZQ_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

extern int zq_check_failed;    /* failures in the running test */
extern int zq_check_tests_run; /* tests run by this program */
extern int zq_check_tests_bad; /* tests that failed */

/* Returns the directory that holds the test fixtures: $ZQ_FIXTURES or tests/fixtures. */
const char *zq_test_fixtures(void);

/* Returns a scratch directory for this test program (created on first use, under $TMPDIR). */
const char *zq_test_tmpdir(void);

/* Reads a whole file into a malloc'd buffer (NUL-terminated); NULL on failure. */
char *zq_test_read_file(const char *path, size_t *size);

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            zq_check_failed++;                                                                     \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    CHECK((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a), (long long)(b))

#define CHECK_NEAR(a, b, tol)                                                                      \
    CHECK(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tolerance %g)", (double)(a),    \
          (double)(b), (double)(tol))

#define ZQ_RUN(fn)                                                                                 \
    do {                                                                                           \
        zq_check_failed = 0;                                                                       \
        fn();                                                                                      \
        zq_check_tests_run++;                                                                      \
        if (zq_check_failed)                                                                       \
            zq_check_tests_bad++;                                                                  \
        printf("%s %s\n", zq_check_failed ? "FAIL" : "PASS", #fn);                                 \
        fflush(stdout);                                                                            \
    } while (0)

#define ZQ_CHECK_EXIT() return zq_check_tests_bad ? 1 : 0

#endif /* ZQ_CHECK_H */
