/* Portable C micro-kernel: a 6 x 8 tile. Plain loops of fixed length that
 * compilers turn into SSE2 / NEON vector code: 12 accumulator registers of
 * 4 floats, 2 for the B row, 1 for the broadcast, within SSE2's 16 (a wider
 * tile spills and runs 3x slower). */
#include "sn_internal.h"

#define MR 6
#define NR 8

static void ukernel_generic(int64_t kc, const float *a, int64_t a_ks, const float *b,
                             int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    float acc[MR][NR] = {{0}};
    for (int64_t k = 0; k < kc; ++k) {
        for (int i = 0; i < MR; ++i) {
            const float ai = a[i];
            for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
        }
        a += a_ks;
        b += b_ks;
    }
    for (int i = 0; i < MR; ++i) {
        float *ci = c + i * ldc;
        if (beta == 0.0f) {
            for (int j = 0; j < NR; ++j) ci[j] = alpha * acc[i][j];
        } else {
            for (int j = 0; j < NR; ++j) ci[j] = alpha * acc[i][j] + beta * ci[j];
        }
    }
}


#define SN_SMALL_NAME small_gemm_generic
#define SN_SMALL_BLOCKS small_blocks_generic
#define SN_SMALL_ROW small_row_generic
#define SN_SMALL_FMA 0 /* plain multiply, add */
#define SN_SMALL_NB 64
#define SN_SMALL_TARGET 
#include "sn_gemm_small.h"

const sn_gemm_kernel_info sn_gemm_kernel_generic = {
    .name = "generic",
    .mr = MR, /* 6 rows x 2 vectors of 4: 12 of SSE2's 16 registers */
    .nr = NR, /* 8 columns */
    .kernel = ukernel_generic,
    .small = small_gemm_generic,
    .kernel_rows = NULL, /* A is always packed */
    .fused_beta = 0,     /* alpha * acc + beta * c, rounded twice (no contraction) */
};
