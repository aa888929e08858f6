/*
 * test_alloc.c - the aligned allocators of runtime/util.c: alignment, whole blocks usable,
 * blocks of either kind released by zq_aligned_free, and impossible sizes rejected.
 */
#include "../runtime/internal.h"
#include "support/check.h"

#include <stdint.h>
#include <string.h>

#define MIB ((size_t)1 << 20)

/* Writes every byte of a block of size bytes and reads the ends back. */
static bool block_usable(unsigned char *p, size_t size)
{
    memset(p, 0xa5, size);
    return p[0] == 0xa5 && p[size - 1] == 0xa5;
}

static void small_blocks_align_to_64(void)
{
    static const size_t sizes[] = {0, 1, 63, 64, 65, 4096, 3 * MIB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = zq_aligned_alloc(sizes[i]);
        CHECK(p != NULL, "%zu bytes: allocation failed", sizes[i]);
        if (!p)
            continue;
        CHECK((uintptr_t)p % ZQ_ALIGN == 0, "%zu bytes: %p not 64-byte aligned", sizes[i],
              (void *)p);
        CHECK(block_usable(p, sizes[i] ? sizes[i] : 1), "%zu bytes: block not usable", sizes[i]);
        zq_aligned_free(p);
    }
}

static void huge_blocks_align_to_2mib(void)
{
    /* From 8 MiB on, zq_aligned_alloc takes the 2 MiB-page path too. */
    static const size_t sizes[] = {1, 2 * MIB, 2 * MIB + 1, 8 * MIB, 9 * MIB + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = zq_huge_alloc(sizes[i]);
        unsigned char *q = zq_aligned_alloc(sizes[i]);
        CHECK(p != NULL, "%zu bytes: zq_huge_alloc failed", sizes[i]);
        CHECK(q != NULL, "%zu bytes: zq_aligned_alloc failed", sizes[i]);
        if (p) {
            CHECK((uintptr_t)p % (2 * MIB) == 0, "%zu bytes: %p not 2 MiB aligned", sizes[i],
                  (void *)p);
            CHECK(block_usable(p, sizes[i]), "%zu bytes: huge block not usable", sizes[i]);
        }
        if (q) {
            const size_t align = sizes[i] >= 8 * MIB ? 2 * MIB : ZQ_ALIGN;
            CHECK((uintptr_t)q % align == 0, "%zu bytes: %p not aligned to %zu", sizes[i],
                  (void *)q, align);
            CHECK(block_usable(q, sizes[i]), "%zu bytes: block not usable", sizes[i]);
        }
        zq_aligned_free(p);
        zq_aligned_free(q);
    }
}

static void impossible_sizes_fail(void)
{
    CHECK(zq_huge_alloc(SIZE_MAX) == NULL, "SIZE_MAX bytes: zq_huge_alloc returned a block");
    CHECK(zq_aligned_alloc(SIZE_MAX - 100) == NULL,
          "SIZE_MAX - 100 bytes: zq_aligned_alloc returned a block");
    zq_aligned_free(NULL);
}

int main(void)
{
    ZQ_RUN(small_blocks_align_to_64);
    ZQ_RUN(huge_blocks_align_to_2mib);
    ZQ_RUN(impossible_sizes_fail);
    ZQ_CHECK_EXIT();
}
