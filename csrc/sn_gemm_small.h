/* Internal: GEMM without packing, for a few rows of C (M <= SN_SMALL_M),
 * such as inference on one image. Packing B would copy all of it for one
 * pass over it; here each row of C is computed straight from A and B.
 *
 * Included by each per-ISA file with SN_SMALL_NAME (the function's name),
 * SN_SMALL_TARGET (its target attribute), SN_SMALL_NB (columns of C kept
 * in registers at once: 128 floats = 8 zmm, 64 = 8 ymm) and SN_SMALL_FMA
 * (1 where the ISA's micro-kernel uses fused multiply-adds) defined, so the
 * same plain loops are compiled for SSE2, AVX2, AVX-512 and NEON. A file
 * may define SN_SMALL_HAVE_ROW and its own SN_SMALL_ROW (one row of C, one kc
 * block, as below) where the compiler's code for the plain loops is slow.
 *
 * With B not transposed, each element is summed exactly as the blocked path
 * (sn_gemm.c with the ISA's micro-kernel) sums it: over each kc block of
 * the shared dimension a fresh sum in k order (fused multiply-adds where
 * the micro-kernel fuses them), then c = alpha * sum + beta_k * c, where
 * beta_k is beta for the first block and 1 after. So a row of C does not
 * depend on how many rows are computed with it: one image gives the bits it
 * gets in a batch. */

#include <math.h>

#if SN_SMALL_FMA
#define SN_SMALL_MADD(a, b, acc) fmaf(a, b, acc)
#define SN_SMALL_SCALE(alpha, acc, beta, c) fmaf(beta, c, (alpha) * (acc))
#else
#define SN_SMALL_MADD(a, b, acc) ((acc) + (a) * (b))
#define SN_SMALL_SCALE(alpha, acc, beta, c) ((alpha) * (acc) + (beta) * (c))
#endif
/* c = alpha * sum (+ beta * c), as the micro-kernels store a tile */
#define SN_SMALL_STORE(c, alpha, acc, beta)                                       \
    ((c) = (beta) == 0.0f ? (alpha) * (acc) : SN_SMALL_SCALE(alpha, acc, beta, c))

#ifndef SN_SMALL_HAVE_ROW
/* c[j0 : j0 + w) for as many whole blocks of w columns as fit from j0, over
 * the kc values of k from a (a_step apart) and rows of B from B (ldb
 * apart); returns the first column left over. Always inlined with a
 * constant w, so acc has a fixed length and lives in registers. */
SN_SMALL_TARGET SN_ALWAYS_INLINE
static inline int64_t SN_SMALL_BLOCKS(const int w, int64_t j0, int64_t N, int64_t kc, float alpha,
                                      const float *a, int64_t a_step, const float *B,
                                      int64_t ldb, float beta, float *c)
{
    for (; j0 + w <= N; j0 += w) {
        float acc[SN_SMALL_NB] = {0};
        for (int64_t k = 0; k < kc; ++k) {
            const float aik = a[k * a_step];
            const float *b = B + k * ldb + j0;
            for (int j = 0; j < w; ++j) acc[j] = SN_SMALL_MADD(aik, b[j], acc[j]);
        }
        for (int j = 0; j < w; ++j) SN_SMALL_STORE(c[j0 + j], alpha, acc[j], beta);
    }
    return j0;
}

/* c[0 : N) += (or =, beta 0) one kc block's sums, as above */
SN_SMALL_TARGET
static void SN_SMALL_ROW(int64_t N, int64_t kc, float alpha, const float *a, int64_t a_step,
                         const float *B, int64_t ldb, float beta, float *c)
{
    /* blocks of SN_SMALL_NB columns, then of 64 and 16: fixed-length loops
     * the compiler keeps in registers */
    int64_t j0 = 0;
    j0 = SN_SMALL_BLOCKS(SN_SMALL_NB, j0, N, kc, alpha, a, a_step, B, ldb, beta, c);
    j0 = SN_SMALL_BLOCKS(64, j0, N, kc, alpha, a, a_step, B, ldb, beta, c);
    j0 = SN_SMALL_BLOCKS(16, j0, N, kc, alpha, a, a_step, B, ldb, beta, c);
    if (j0 < N) {
        /* fewer than 16 left: one short block, its columns summed side by
         * side (one column at a time would be a chain of kc dependent adds) */
        const int64_t nb = N - j0;
        float acc[16] = {0};
        for (int64_t k = 0; k < kc; ++k) {
            const float aik = a[k * a_step];
            const float *b = B + k * ldb + j0;
            for (int64_t j = 0; j < nb; ++j) acc[j] = SN_SMALL_MADD(aik, b[j], acc[j]);
        }
        for (int64_t j = 0; j < nb; ++j) SN_SMALL_STORE(c[j0 + j], alpha, acc[j], beta);
    }
}
#endif /* SN_SMALL_HAVE_ROW: the ISA's file has its own, with intrinsics */

SN_SMALL_TARGET
static void SN_SMALL_NAME(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                          float alpha, const float *A, int64_t lda, const float *B,
                          int64_t ldb, float beta, float *C, int64_t ldc, int64_t kc)
{
    for (int64_t i = 0; i < M; ++i) {
        float *c = C + i * ldc;
        /* a_ik = op(A)(i, k) */
        const float *a = trans_a ? A + i : A + i * lda;
        const int64_t a_step = trans_a ? lda : 1;
        if (!trans_b) {
            /* c[j] = sum_k a_ik B[k, j]: rows of B scaled and added, in
             * the blocked path's kc blocks */
            for (int64_t pc = 0; pc < K;) {
                const int64_t kn = K - pc < kc ? K - pc : kc;
                const float beta_k = pc == 0 ? beta : 1.0f;
#ifdef SN_SMALL_ROW2
                if (pc + kc < K) { /* this block and the next side by side */
                    const int64_t kn1 = K - pc - kc < kc ? K - pc - kc : kc;
                    SN_SMALL_ROW2(N, kn, kn1, alpha, a + pc * a_step, a + (pc + kc) * a_step,
                                  a_step, B + pc * ldb, B + (pc + kc) * ldb, ldb, beta_k, c);
                    pc += 2 * kc;
                    continue;
                }
#endif
                SN_SMALL_ROW(N, kn, alpha, a + pc * a_step, a_step, B + pc * ldb, ldb, beta_k, c);
                pc += kc;
            }
        } else {
            /* c[j] = dot(op(A) row i, B row j): 16 partial sums, added in a
             * fixed order at the end */
            for (int64_t j = 0; j < N; ++j) {
                const float *b = B + j * ldb;
                float part[16] = {0};
                int64_t k = 0;
                if (a_step == 1)
                    for (; k + 16 <= K; k += 16)
                        for (int l = 0; l < 16; ++l) part[l] += a[k + l] * b[k + l];
                for (; k < K; ++k) part[k % 16] += a[k * a_step] * b[k];
                float sum = 0.0f;
                for (int l = 0; l < 16; ++l) sum += part[l];
                c[j] = beta == 0.0f ? alpha * sum : alpha * sum + beta * c[j];
            }
        }
    }
}

#undef SN_SMALL_NB
#undef SN_SMALL_BLOCKS
#undef SN_SMALL_ROW
#undef SN_SMALL_HAVE_ROW
#undef SN_SMALL_ROW2
#undef SN_SMALL_FMA
#undef SN_SMALL_MADD
#undef SN_SMALL_SCALE
#undef SN_SMALL_STORE
