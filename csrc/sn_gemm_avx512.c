/* AVX-512F micro-kernel: a 12 x 32 tile held in 24 zmm accumulators
 * (12 rows x 2 vectors of 16), plus 2 registers for the B row and 1 for the
 * broadcast A value: 27 of the 32 zmm registers. Each k step does 24 FMAs
 * for 2 vector loads and 12 broadcasts. */
#include "sn_gemm_kernels.h"

#ifdef SN_X86_64
#include <immintrin.h>

#if defined(__GNUC__) || defined(__clang__)
#define SN_TARGET_AVX512 __attribute__((target("avx512f,fma")))
#else
#define SN_TARGET_AVX512
#endif

#define MR 12
#define NR 32

SN_TARGET_AVX512
static void ukernel_avx512(int64_t kc, const float *a, int64_t a_ks, const float *b,
                         int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    __m512 acc[MR][2];
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; ++k) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 12
#endif
        for (int i = 0; i < MR; ++i) {
            const __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += a_ks;
        b += b_ks;
    }
    const __m512 va = _mm512_set1_ps(alpha);
    for (int i = 0; i < MR; ++i) {
        float *ci = c + i * ldc;
        __m512 v0 = _mm512_mul_ps(va, acc[i][0]), v1 = _mm512_mul_ps(va, acc[i][1]);
        if (beta != 0.0f) {
            const __m512 vb = _mm512_set1_ps(beta);
            v0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), v0);
            v1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), v1);
        }
        _mm512_storeu_ps(ci, v0);
        _mm512_storeu_ps(ci + 16, v1);
    }
}


#define SN_SMALL_NAME small_gemm_avx512
#define SN_SMALL_BLOCKS small_blocks_avx512
#define SN_SMALL_NB 128
#define SN_SMALL_TARGET SN_TARGET_AVX512
#include "sn_gemm_small.h"

const sn_gemm_kernel_info sn_gemm_kernel_avx512 = {
    "avx512", MR, NR, 256, 144, 2048, ukernel_avx512, small_gemm_avx512};
#endif
