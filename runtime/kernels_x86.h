/*
 * kernels_x86.h - private to the x86 kernel files (AVX2, AVX-512): the software prefetch of
 * weight rows that their tiles share.
 */
#ifndef ZQ_KERNELS_X86_H
#define ZQ_KERNELS_X86_H

#include <immintrin.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Rows of a few hundred bytes are too short for the hardware prefetcher to ramp up, which
 * starves decode (M = 1 streams each weight row once) and small M. So while a tile runs, this
 * fetches the rows of the next tile, which follow in memory when rows are contiguous. Each step
 * of step_bytes per row prefetches the next nr * step_bytes bytes, so the whole next tile is
 * requested by the end of this one. Prefetches past the matrix, or of repeated edge rows, do no
 * harm. A next tile larger than PREFETCH_L1_BYTES goes to L2 only: with the tile being read it
 * would not fit in L1, and the evictions cost a third of the speed of 3072-wide rows. */
#define PREFETCH_L1_BYTES 8192

static inline __attribute__((always_inline)) void prefetch_next_rows(int nr, const void *const *w,
                                                                     size_t k_bytes,
                                                                     size_t step_bytes,
                                                                     size_t row_bytes)
{
    /* Integer arithmetic: the address may lie past the matrix, where a pointer may not point. */
    const uintptr_t stride = (uintptr_t)w[1] - (uintptr_t)w[0];
    const uintptr_t next = (uintptr_t)w[nr - 1] + stride + k_bytes * (size_t)nr;
    const bool to_l1 = (size_t)nr * row_bytes <= PREFETCH_L1_BYTES;
    for (size_t line = 0; line < (size_t)nr * step_bytes; line += 64) {
        if (to_l1)
            _mm_prefetch((const char *)(next + line), _MM_HINT_T0);
        else
            _mm_prefetch((const char *)(next + line), _MM_HINT_T1);
    }
}

#endif /* ZQ_KERNELS_X86_H */
