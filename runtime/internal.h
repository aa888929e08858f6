/*
 * internal.h - helpers shared by every ZQ source file: error reporting, logging, aligned
 * allocation. Not installed; programs use zq.h only.
 */
#ifndef ZQ_INTERNAL_H
#define ZQ_INTERNAL_H

#include "zq.h"

#include <stdarg.h>
#include <stddef.h>

/* Records a printf-style message for zq_last_error() and returns status, so a failing path
 * reads `return zq_fail(ZQ_ERR_FORMAT, "%s: truncated", path);`. */
zq_status zq_fail(zq_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns status from the enclosing function when expr fails; the message is already set. */
#define ZQ_TRY(expr)                                                                               \
    do {                                                                                           \
        zq_status zq_try_status_ = (expr);                                                         \
        if (zq_try_status_ != ZQ_OK)                                                               \
            return zq_try_status_;                                                                 \
    } while (0)

void zq_log_write(zq_log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int zq_log_enabled(zq_log_level level);

#define ZQ_LOG(level, ...)                                                                         \
    do {                                                                                           \
        if (zq_log_enabled(level))                                                                 \
            zq_log_write(level, __func__, __VA_ARGS__);                                            \
    } while (0)
#define ZQ_ERROR(...) ZQ_LOG(ZQ_LOG_ERROR, __VA_ARGS__)
#define ZQ_WARN(...) ZQ_LOG(ZQ_LOG_WARN, __VA_ARGS__)
#define ZQ_INFO(...) ZQ_LOG(ZQ_LOG_INFO, __VA_ARGS__)
#define ZQ_DEBUG(...) ZQ_LOG(ZQ_LOG_DEBUG, __VA_ARGS__)
#define ZQ_TRACE(...) ZQ_LOG(ZQ_LOG_TRACE, __VA_ARGS__)

/* 64-byte aligned allocation (cache line and AVX-512 width); size 0 allocates 64 bytes.
 * Returns NULL on failure. Free with zq_aligned_free. */
void *zq_aligned_alloc(size_t size);
/* As zq_aligned_alloc, but aligned to 2 MiB, rounded up to whole 2 MiB pages and mapped fresh,
 * so that the kernel can back it with 2 MiB pages. zq_aligned_alloc does this from 8 MiB on.
 * Free with zq_aligned_free. */
void *zq_huge_alloc(size_t size);
void zq_aligned_free(void *ptr);

#define ZQ_ALIGN 64
#define ZQ_ALIGN_UP(x) (((x) + (size_t)ZQ_ALIGN - 1) & ~((size_t)ZQ_ALIGN - 1))

/* Returns the number of physical cores (logical CPUs / threads per core), at least 1. */
int zq_physical_cores(void);

/* Resolves a thread count request: n > 0 is kept, 0 becomes zq_physical_cores(). */
int zq_resolve_threads(int n);

/* Returns a monotonic clock in seconds. */
double zq_now_seconds(void);

/* Converts between IEEE binary16 and float (portable, round to nearest even). */
float zq_f16_to_f32(uint16_t h);
uint16_t zq_f32_to_f16(float f);
float zq_bf16_to_f32(uint16_t h);

/* Marks a loop whose iterations are independent so that it is vectorized. With OpenMP off the
 * compiler decides alone. */
#ifdef ZQ_USE_OPENMP
#define SIMD_LOOP _Pragma("omp simd")
#else
#define SIMD_LOOP
#endif

/* Compiles a function a second time for AVX2 and picks the copy when the program loads, from
 * the CPU. The AVX2 copy is built without FMA, so both copies round every operation alike and
 * give the same results on every CPU. */
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef VECTOR_CLONES
#define VECTOR_CLONES
#endif

#endif /* ZQ_INTERNAL_H */
