/*
 * kernels_dispatch.c - chooses a kernel table from CPU features, once per process.
 *
 * A table is usable only if the CPU has its instructions and, on x86, the OS saves the wider
 * registers on context switches (XCR0, read with xgetbv). ZQ_KERNELS=name forces a table.
 */
#include "internal.h"
#include "kernels_impl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define ZQ_X86 1
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

enum {
    FEAT_AVX2 = 1 << 0,   /* AVX2 + FMA + F16C, with YMM state enabled by the OS */
    FEAT_AVX512 = 1 << 1, /* AVX-512 F/BW/VL/VNNI, with ZMM and opmask state enabled */
    FEAT_NEON = 1 << 2,
    FEAT_NEONDOT = 1 << 3, /* ARMv8.2 dot product (sdot) */
};

#ifdef ZQ_X86
static unsigned long long read_xcr0(void)
{
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static int detect_features(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    const int fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx)
        return 0;
    const unsigned long long xcr0 = read_xcr0();
    const int ymm_ok = (xcr0 & 0x6) == 0x6;    /* SSE and AVX state */
    const int zmm_ok = (xcr0 & 0xe6) == 0xe6;  /* plus opmask and both ZMM halves */
    if (!ymm_ok || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;

    int feats = 0;
    const int avx2 = (b >> 5) & 1;
    if (avx2 && fma && f16c)
        feats |= FEAT_AVX2;
    const int avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    const int vnni = (c >> 11) & 1;
    if ((feats & FEAT_AVX2) && zmm_ok && avx512f && avx512bw && avx512vl && vnni)
        feats |= FEAT_AVX512;
    return feats;
}
#elif defined(__aarch64__) && defined(__linux__)
static int detect_features(void)
{
    const unsigned long hwcap = getauxval(AT_HWCAP);
    int feats = 0;
    if (hwcap & HWCAP_ASIMD)
        feats |= FEAT_NEON;
    if ((hwcap & HWCAP_ASIMD) && (hwcap & HWCAP_ASIMDDP))
        feats |= FEAT_NEONDOT;
    return feats;
}
#elif defined(__aarch64__)
/* Advanced SIMD is part of every AArch64 CPU; the dot product needs an OS query that only the
 * Linux path implements. */
static int detect_features(void)
{
    return FEAT_NEON;
}
#else
static int detect_features(void)
{
    return 0;
}
#endif

typedef struct {
    const zq_kernels *table;
    int required; /* FEAT_* bits */
} kernel_entry;

/* Fastest first. Tables for other architectures are not linked in. */
static const kernel_entry entries[] = {
#ifdef ZQ_X86
    {&zq_kernels_avx512_table, FEAT_AVX512},
    {&zq_kernels_avx2_table, FEAT_AVX2},
#endif
#ifdef __aarch64__
    {&zq_kernels_neondot_table, FEAT_NEONDOT},
    {&zq_kernels_neon_table, FEAT_NEON},
#endif
    {&zq_kernels_ref_table, 0},
};

static int features;
static const zq_kernels *best;

static void detect_once(void)
{
    features = detect_features();
}

static int cpu_features(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)pthread_once(&once, detect_once);
    return features;
}

const zq_kernels *zq_kernels_ref(void)
{
    return &zq_kernels_ref_table;
}

const zq_kernels *zq_kernels_by_name(const char *name)
{
    if (!name)
        return NULL;
    const int feats = cpu_features();
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        const kernel_entry *e = &entries[i];
        if (strcmp(e->table->name, name) == 0)
            return (feats & e->required) == e->required ? e->table : NULL;
    }
    return NULL;
}

static const zq_kernels *fastest_supported(void)
{
    const int feats = cpu_features();
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        if ((feats & entries[i].required) == entries[i].required)
            return entries[i].table;
    return &zq_kernels_ref_table;
}

const zq_kernels *zq_kernels_select(const char *forced)
{
    const zq_kernels *fastest = fastest_supported();
    if (!forced || !*forced || strcmp(forced, "auto") == 0)
        return fastest;
    const zq_kernels *k = zq_kernels_by_name(forced);
    if (k)
        return k;
    ZQ_WARN("ZQ_KERNELS=%s is unknown or not supported by this CPU; using %s", forced,
            fastest->name);
    return fastest;
}

static void choose_once(void)
{
    best = zq_kernels_select(getenv("ZQ_KERNELS"));
    ZQ_INFO("kernels: %s", best->name);
}

const zq_kernels *zq_kernels_best(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)pthread_once(&once, choose_once);
    return best;
}
