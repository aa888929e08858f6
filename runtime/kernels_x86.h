/*
 * kernels_x86.h - private to the x86 kernel files (AVX2, AVX-512): the software prefetch of
 * weight rows that their tiles share, and the horizontal sums of 256-bit vectors.
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

/* Horizontal sums of eight 256-bit vectors (AVX2). */

/* Returns a vector whose lane i is the sum of the lanes of v[i]. */
static inline __attribute__((always_inline)) __m256i hsum8_epi32_ymm(const __m256i v[8])
{
    __m256i t0 = _mm256_hadd_epi32(v[0], v[1]);
    __m256i t1 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i t2 = _mm256_hadd_epi32(v[4], v[5]);
    __m256i t3 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i u0 = _mm256_hadd_epi32(t0, t1);
    __m256i u1 = _mm256_hadd_epi32(t2, t3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                            _mm256_permute2x128_si256(u0, u1, 0x31));
}

/* Float version of hsum8_epi32_ymm. Every lane is summed as ((0+1)+(2+3))+((4+5)+(6+7)), so
 * the result of a lane does not depend on its position. */
static inline __attribute__((always_inline)) __m256 hsum8_ps_ymm(const __m256 v[8])
{
    __m256 t0 = _mm256_hadd_ps(v[0], v[1]);
    __m256 t1 = _mm256_hadd_ps(v[2], v[3]);
    __m256 t2 = _mm256_hadd_ps(v[4], v[5]);
    __m256 t3 = _mm256_hadd_ps(v[6], v[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1);
    __m256 u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                         _mm256_permute2f128_ps(u0, u1, 0x31));
}

#endif /* ZQ_KERNELS_X86_H */
