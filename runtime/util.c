/*
 * util.c - aligned allocation, core counting, clocks and half-precision conversion.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Allocations from this size on are aligned to, and ask the kernel for, 2 MiB pages. */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)
#define HUGE_PAGE_MIN_BYTES ((size_t)8 << 20)

void *zq_huge_alloc(size_t size)
{
    /* Streaming the weights once per token walks the page tables every 4 KB and misses the
     * TLB beyond a few MB; 2 MiB pages cover a model's weights with a few dozen entries. With
     * transparent huge pages off, madvise fails and 4 KB pages stay. */
    void *ptr = NULL;
    if (posix_memalign(&ptr, HUGE_PAGE_BYTES, ZQ_ALIGN_UP(size)) != 0)
        return NULL;
    madvise(ptr, size / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES, MADV_HUGEPAGE);
    return ptr;
}

void *zq_aligned_alloc(size_t size)
{
    if (size >= HUGE_PAGE_MIN_BYTES)
        return zq_huge_alloc(size);
    void *ptr = NULL;
    if (posix_memalign(&ptr, ZQ_ALIGN, size ? ZQ_ALIGN_UP(size) : ZQ_ALIGN) != 0)
        return NULL;
    return ptr;
}

void zq_aligned_free(void *ptr)
{
    free(ptr);
}

/* Counts distinct (physical id, core id) pairs in /proc/cpuinfo; falls back to the online CPU
 * count where the file lacks them (some ARM kernels). */
static int count_cpuinfo_cores(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return 0;
    long seen[1024];
    int n_seen = 0;
    long physical = 0;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        long value;
        if (sscanf(line, "physical id : %ld", &value) == 1)
            physical = value;
        if (sscanf(line, "core id : %ld", &value) == 1) {
            long key = physical * 65536 + value;
            int known = 0;
            for (int i = 0; i < n_seen; i++)
                known |= seen[i] == key;
            if (!known && n_seen < 1024)
                seen[n_seen++] = key;
        }
    }
    fclose(f);
    return n_seen;
}

int zq_physical_cores(void)
{
    static int cached;
    if (cached)
        return cached;
    int cores = count_cpuinfo_cores();
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores <= 0 || cores > online)
        cores = online > 0 ? (int)online : 1;
    cached = cores;
    return cached;
}

int zq_resolve_threads(int n)
{
    return n > 0 ? n : zq_physical_cores();
}

double zq_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

float zq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        /* A NaN comes back quiet, as vcvtph2ps and NEON's fcvtl return it. */
        bits = sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0);
    } else if (exp == 0) {
        /* Subnormal or zero: value = man * 2^-24, exact in float. */
        float v = (float)man * (1.0f / 16777216.0f);
        memcpy(&bits, &v, 4);
        bits |= sign;
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t zq_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t exp = (x >> 23) & 0xff;
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) /* inf stays inf; NaN stays NaN, quiet, with its top payload bits */
        return (uint16_t)(sign | 0x7c00 | (man ? 0x200 | (man >> 13) : 0));

    int32_t half_exp = (int32_t)exp - 127 + 15;
    if (half_exp >= 0x1f)
        return (uint16_t)(sign | 0x7c00);
    if (half_exp <= 0) {
        /* Subnormal half: the value in units of 2^-24 is man24 >> (14 - half_exp). */
        if (half_exp < -10)
            return (uint16_t)sign;
        uint32_t man24 = man | 0x800000;
        int shift = 14 - half_exp;
        uint32_t h = man24 >> shift;
        uint32_t rem = man24 & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = sign | ((uint32_t)half_exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    /* Round to nearest even; a carry out of the mantissa correctly bumps the exponent. */
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)h;
}

float zq_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
