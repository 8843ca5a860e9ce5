/* arm64 micro-kernel: an 8 x 12 tile held in 24 NEON accumulators (8 rows x
 * 3 vectors of 4), with the B row in 3 registers and the A column in 2: 29 of
 * the 32 vector registers. Each k step does 24 FMAs, each taking its A value
 * from a lane (vfmaq_laneq_f32), for 5 vector loads. NEON is part of every
 * arm64 CPU, so this is the "generic" kernel of arm64 builds. */
#include "sn_internal.h"

#if defined(__aarch64__) || defined(_M_ARM64)
#include <arm_neon.h>

#define MR 8
#define NR 12

static void ukernel_neon(int64_t kc, const float *a, int64_t a_ks, const float *b,
                         int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    float32x4_t acc[MR][3];
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = acc[i][2] = vdupq_n_f32(0.0f);
    for (int64_t k = 0; k < kc; ++k) {
        const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
        const float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
#define SN_ROW(i, av, lane)                                             \
        acc[i][0] = vfmaq_laneq_f32(acc[i][0], b0, av, lane);           \
        acc[i][1] = vfmaq_laneq_f32(acc[i][1], b1, av, lane);           \
        acc[i][2] = vfmaq_laneq_f32(acc[i][2], b2, av, lane)
        SN_ROW(0, a0, 0); SN_ROW(1, a0, 1); SN_ROW(2, a0, 2); SN_ROW(3, a0, 3);
        SN_ROW(4, a1, 0); SN_ROW(5, a1, 1); SN_ROW(6, a1, 2); SN_ROW(7, a1, 3);
#undef SN_ROW
        a += a_ks;
        b += b_ks;
    }
    const float32x4_t va = vdupq_n_f32(alpha), vb = vdupq_n_f32(beta);
    for (int i = 0; i < MR; ++i) {
        float *ci = c + i * ldc;
        for (int v = 0; v < 3; ++v) {
            float32x4_t r = vmulq_f32(va, acc[i][v]);
            if (beta != 0.0f) r = vfmaq_f32(r, vb, vld1q_f32(ci + 4 * v));
            vst1q_f32(ci + 4 * v, r);
        }
    }
}

#define SN_SMALL_NAME small_gemm_neon
#define SN_SMALL_BLOCKS small_blocks_neon
#define SN_SMALL_ROW small_row_neon
#define SN_SMALL_FMA 1 /* the micro-kernel fuses */
#define SN_SMALL_NB 64
#define SN_SMALL_TARGET
#include "sn_gemm_small.h"

const sn_gemm_kernel_info sn_gemm_kernel_neon = {
    .name = "neon",
    .mr = MR, /* 8 rows x 3 vectors of 4: 24 of the 32 registers, see the top */
    .nr = NR, /* 12 columns */
    .kernel = ukernel_neon,
    .small = small_gemm_neon,
    .kernel_rows = NULL, /* A is always packed */
    .fused_beta = 1,     /* vfmaq_f32: beta * c + alpha * acc rounded once */
};
#endif
