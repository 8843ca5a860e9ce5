/* AVX2 + FMA micro-kernel: a 6 x 16 tile held in 12 ymm accumulators
 * (6 rows x 2 vectors of 8), plus 2 registers for the B row and 1 for the
 * broadcast A value: 15 of the 16 ymm registers.
 * Compiled for AVX2 through a function attribute, never with -mavx2 for the
 * whole file, so the rest of the library runs on any x86-64. */
#include "sn_gemm_kernels.h"

#ifdef SN_X86_64
#include <immintrin.h>

#if defined(__GNUC__) || defined(__clang__)
#define SN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define SN_TARGET_AVX2
#endif

#define MR 6
#define NR 16

SN_TARGET_AVX2
static void ukernel_avx2(int64_t kc, const float *a, int64_t a_ks, const float *b,
                         int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; ++k) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        __m256 ai;
        ai = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);
        a += a_ks;
        b += b_ks;
    }
    const __m256 va = _mm256_set1_ps(alpha);
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
    SN_STORE_ROW(0, c00, c01);
    SN_STORE_ROW(1, c10, c11);
    SN_STORE_ROW(2, c20, c21);
    SN_STORE_ROW(3, c30, c31);
    SN_STORE_ROW(4, c40, c41);
    SN_STORE_ROW(5, c50, c51);
#undef SN_STORE_ROW
}


#define SN_SMALL_NAME small_gemm_avx2
#define SN_SMALL_BLOCKS small_blocks_avx2
#define SN_SMALL_NB 64
#define SN_SMALL_TARGET SN_TARGET_AVX2
#include "sn_gemm_small.h"

const sn_gemm_kernel_info sn_gemm_kernel_avx2 = {
    "avx2", MR, NR, 256, 96, 2048, ukernel_avx2, small_gemm_avx2};
#endif
