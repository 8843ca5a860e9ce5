/* AVX2 + FMA micro-kernel: a 6 x 16 tile held in 12 ymm accumulators
 * (6 rows x 2 vectors of 8), plus 2 registers for the B row and 1 for the
 * broadcast A value: 15 of the 16 ymm registers.
 * Compiled for AVX2 through a function attribute, never with -mavx2 for the
 * whole file, so the rest of the library runs on any x86-64. */
#include "sn_internal.h"

#ifdef SN_X86_64
#include <immintrin.h>

#if defined(__GNUC__) || defined(__clang__)
#define SN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define SN_TARGET_AVX2
#endif

#define MR 6
#define NR 16

/* The twelve accumulators are named variables, not an array: with 16 ymm
 * registers in all there is no room for the compiler to spill. */
#define SN_DECLARE_ACC                                                            \
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();                  \
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();                  \
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();                  \
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();                  \
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();                  \
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps()

/* one k step: row i of the tile += a_i * (b0, b1), a_i read at p0 ... p5 */
#define SN_K_STEP(p0, p1, p2, p3, p4, p5)                                         \
    do {                                                                          \
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);        \
        __m256 ai;                                                                \
        ai = _mm256_broadcast_ss(p0);                                             \
        c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);   \
        ai = _mm256_broadcast_ss(p1);                                             \
        c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);   \
        ai = _mm256_broadcast_ss(p2);                                             \
        c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);   \
        ai = _mm256_broadcast_ss(p3);                                             \
        c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);   \
        ai = _mm256_broadcast_ss(p4);                                             \
        c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);   \
        ai = _mm256_broadcast_ss(p5);                                             \
        c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);   \
    } while (0)

#define SN_STORE_ROW(i, r0, r1)                                                   \
    do {                                                                          \
        float *ci = c + (i) * ldc;                                                \
        __m256 v0 = _mm256_mul_ps(va, r0), v1 = _mm256_mul_ps(va, r1);            \
        if (beta != 0.0f) {                                                       \
            const __m256 vb = _mm256_set1_ps(beta);                               \
            v0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), v0);                    \
            v1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), v1);                \
        }                                                                         \
        _mm256_storeu_ps(ci, v0);                                                 \
        _mm256_storeu_ps(ci + 8, v1);                                             \
    } while (0)

#define SN_STORE_TILE                                                             \
    do {                                                                          \
        const __m256 va = _mm256_set1_ps(alpha);                                  \
        SN_STORE_ROW(0, c00, c01);                                                \
        SN_STORE_ROW(1, c10, c11);                                                \
        SN_STORE_ROW(2, c20, c21);                                                \
        SN_STORE_ROW(3, c30, c31);                                                \
        SN_STORE_ROW(4, c40, c41);                                                \
        SN_STORE_ROW(5, c50, c51);                                                \
    } while (0)

SN_TARGET_AVX2
static void ukernel_avx2(int64_t kc, const float *a, int64_t a_ks, const float *b,
                         int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    SN_DECLARE_ACC;
    for (int64_t k = 0; k < kc; ++k) {
        SN_K_STEP(a, a + 1, a + 2, a + 3, a + 4, a + 5);
        a += a_ks;
        b += b_ks;
    }
    SN_STORE_TILE;
}

/* A read in place: row i of the tile at a + i * lda, consecutive in k */
SN_TARGET_AVX2
static void ukernel_rows_avx2(int64_t kc, const float *a, int64_t lda, const float *b,
                              int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    SN_DECLARE_ACC;
    const float *a0 = a, *a3 = a + 3 * lda;
    const int64_t l1 = lda, l2 = 2 * lda;
    for (int64_t k = 0; k < kc; ++k) {
        SN_K_STEP(a0, a0 + l1, a0 + l2, a3, a3 + l1, a3 + l2);
        ++a0;
        ++a3;
        b += b_ks;
    }
    SN_STORE_TILE;
}
#undef SN_DECLARE_ACC
#undef SN_K_STEP
#undef SN_STORE_ROW
#undef SN_STORE_TILE

#define SN_SMALL_NAME small_gemm_avx2
#define SN_SMALL_BLOCKS small_blocks_avx2
#define SN_SMALL_NB 64
#define SN_SMALL_TARGET SN_TARGET_AVX2
#include "sn_gemm_small.h"

const sn_gemm_kernel_info sn_gemm_kernel_avx2 = {
    .name = "avx2",
    .mr = MR, /* 6 rows x 2 ymm per row: 12 accumulators, see the top */
    .nr = NR, /* 16 columns: 2 ymm of 8 floats */
    .kernel = ukernel_avx2,
    .small = small_gemm_avx2,     /* up to SN_SMALL_M rows, columns in blocks of 64 */
    .kernel_rows = ukernel_rows_avx2,
};
#endif
