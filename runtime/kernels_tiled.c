/*
 * kernels_tiled.c - the loop nest shared by the SIMD GEMMs: cache blocks of W, panels of A,
 * register tiles. The ISA files supply only the tiles, so the blocking lives in one place.
 */
#include "kernels_impl.h"


/* Computes rows [m0, m0 + mr) of C against W rows [n0, n1). An edge tile repeats the last W
 * row and drops the extra results, so every call runs a full tile shape. */
static void gemm_panel(const zq_tile_set *tiles, int m0, int mr, int n0, int n1, int K,
                       const char *A, size_t lda, const char *W, size_t ldw, char *C, size_t ldc)
{
    const int nr = tiles->nr[mr];
    const void *a[ZQ_TILE_MR_MAX], *w[ZQ_TILE_NR_MAX];
    for (int m = 0; m < mr; m++)
        a[m] = A + (size_t)(m0 + m) * lda;

    for (int n = n0; n < n1; n += nr) {
        for (int j = 0; j < nr; j++)
            w[j] = W + (size_t)(n + j < n1 ? n + j : n1 - 1) * ldw;
        uint32_t out[ZQ_TILE_OUT_MAX];
        tiles->tile[mr](a, w, K, out);
        const int n_valid = n1 - n < nr ? n1 - n : nr;
        for (int m = 0; m < mr; m++) {
            uint32_t *c = (uint32_t *)(void *)(C + ((size_t)(m0 + m) * ldc + (size_t)n) * 4);
            for (int j = 0; j < n_valid; j++)
                c[j] = out[m * nr + j];
        }
    }
}

void zq_gemm_tiled(const zq_tile_set *tiles, int M, int N, int K, const void *A, size_t lda_bytes,
                   const void *W, size_t ldw_bytes, void *C, size_t ldc)
{
    for (int n0 = 0; n0 < N; n0 += tiles->nb) {
        const int n1 = n0 + tiles->nb < N ? n0 + tiles->nb : N;
        for (int m0 = 0; m0 < M; m0 += ZQ_TILE_MR_MAX) {
            const int mr = M - m0 < ZQ_TILE_MR_MAX ? M - m0 : ZQ_TILE_MR_MAX;
            gemm_panel(tiles, m0, mr, n0, n1, K, A, lda_bytes, W, ldw_bytes, C, ldc);
        }
    }
}
