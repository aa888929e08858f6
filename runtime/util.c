/*
 * util.c - aligned allocation, core counting, clocks and half-precision conversion.
 */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Allocations from this size on are aligned to, and ask the kernel for, 2 MiB pages. */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)
#define HUGE_PAGE_MIN_BYTES ((size_t)8 << 20)

/* The record that zq_aligned_free needs to release a block, stored in the ZQ_ALIGN bytes
 * before the pointer that the allocation returned. */
typedef struct {
    void *base;    /* what malloc or mmap returned */
    size_t mapped; /* bytes mapped with mmap; 0 for a malloc block */
} block_header;

_Static_assert(sizeof(block_header) <= ZQ_ALIGN, "the header must fit before the block");

static void *with_header(void *base, unsigned char *ptr, size_t mapped)
{
    const block_header header = {base, mapped};
    memcpy(ptr - ZQ_ALIGN, &header, sizeof header);
    return ptr;
}

void *zq_huge_alloc(size_t size)
{
    /* Streaming the weights once per token walks the page tables every 4 KB and misses the
     * TLB beyond a few MB, and the hardware prefetchers stop at every 4 KB page. The block is
     * mapped fresh because madvise only acts on pages not yet touched. malloc reuses freed
     * memory whose 4 KB pages are already in place, so a KV cache that grew got none of the
     * 2 MiB pages it asked for. With transparent huge pages off, madvise fails and 4 KB pages
     * stay. The block is rounded up to whole 2 MiB pages, so that its last part gets one. */
    if (size > SIZE_MAX - 2 * HUGE_PAGE_BYTES)
        return NULL;
    const size_t bytes = (size + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1);
    const size_t mapped = (bytes ? bytes : HUGE_PAGE_BYTES) + HUGE_PAGE_BYTES;
    unsigned char *base =
        mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    /* The first 2 MiB boundary after room for the header. */
    const uintptr_t first = (uintptr_t)base + ZQ_ALIGN + HUGE_PAGE_BYTES - 1;
    unsigned char *ptr = (unsigned char *)(first & ~(HUGE_PAGE_BYTES - 1));
    madvise(ptr, bytes, MADV_HUGEPAGE);
    return with_header(base, ptr, mapped);
}

void *zq_aligned_alloc(size_t size)
{
    if (size >= HUGE_PAGE_MIN_BYTES)
        return zq_huge_alloc(size);
    void *base = NULL;
    if (posix_memalign(&base, ZQ_ALIGN, ZQ_ALIGN + ZQ_ALIGN_UP(size ? size : 1)) != 0)
        return NULL;
    return with_header(base, (unsigned char *)base + ZQ_ALIGN, 0);
}

void zq_aligned_free(void *ptr)
{
    if (!ptr)
        return;
    block_header header;
    memcpy(&header, (unsigned char *)ptr - ZQ_ALIGN, sizeof header);
    if (header.mapped)
        munmap(header.base, header.mapped);
    else
        free(header.base);
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
