/* AVX-512F micro-kernel: a 12 x 32 tile held in 24 zmm accumulators
 * (12 rows x 2 vectors of 16), plus 2 registers for the B row and 1 for the
 * broadcast A value: 27 of the 32 zmm registers. Each k step does 24 FMAs
 * for 2 vector loads and 12 broadcasts. */
#include "sn_internal.h"

#ifdef SN_X86_64
#include <immintrin.h>

#if defined(__GNUC__) || defined(__clang__)
#define SN_TARGET_AVX512 __attribute__((target("avx512f,fma,prfchw")))
#else
#define SN_TARGET_AVX512
#endif

#define MR 12
#define NR 32
#define MR_TAIL 8 /* the tail kernel's rows (ukernel_tail_avx512) */

/* The first `rows` rows of a C tile = alpha * acc + beta * C (beta == 0: C
 * not read). Always inlined with a constant rows. */
SN_TARGET_AVX512 SN_ALWAYS_INLINE
static inline void store_tile(const int rows, __m512 acc[][2], float *c, int64_t ldc, float alpha,
                              float beta)
{
    const __m512 va = _mm512_set1_ps(alpha);
    for (int i = 0; i < rows; ++i) {
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

/* The tile's 2 x rows lines of C (2 MR, or 2 MR_TAIL in the tail kernel),
 * asked for to be written, one every c_prefetch_every(kc, rows) k steps of
 * its loop: in a training step another core
 * last read or wrote them (the product's output, the other part's finish or
 * gradient), and a store that must first take the line from that core waits
 * for it. All at once at the start, 24 outstanding misses held up the loads
 * of A and B (784-512-256-10's C trainer steps 0.84x); spread over the loop
 * and owned for writing, those steps 1.004x-1.010x with the two vCPUs
 * close, 1.017x-1.044x with them far apart (AMD EPYC Zen 5; 784-128-10 Adam
 * 1.007x close, 1.033x far; SGD 1.024x far). */
static inline int64_t c_prefetch_every(int64_t kc, int rows)
{
    return kc >= 2 * rows ? kc / (2 * rows) : 1;
}
/* at step k of the loop: the next line of the first `rows` rows, when its
 * turn has come (line and next count the lines asked for and the step of
 * the next) */
#define SN_PREFETCH_C_STEP(k, rows)                                                    \
    do {                                                                               \
        if ((k) == next && line < 2 * (rows)) {                                        \
            SN_PREFETCH_WRITE(c + (line >> 1) * ldc + (line & 1) * (NR / 2));          \
            ++line;                                                                    \
            next += every;                                                             \
        }                                                                              \
    } while (0)

/* acc[i] += a_i * (b0, b1) */
#define SN_FMA_ROW(i, ai_ptr)                                              \
    do {                                                                   \
        const __m512 ai = _mm512_set1_ps(*(ai_ptr));                       \
        acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);                    \
        acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);                    \
    } while (0)

#if defined(__GNUC__) || defined(__clang__)
#define SN_UNROLL_ROWS _Pragma("GCC unroll 12")
#else
#define SN_UNROLL_ROWS
#endif

/* A tile of `rows` rows (MR, or MR_TAIL for the tail kernel), A packed
 * `rows` values a step (or transposed in place: a_ks = lda). Always inlined
 * with a constant rows: the accumulators stay in registers. */
SN_TARGET_AVX512 SN_ALWAYS_INLINE
static inline void packed_tile(const int rows, int64_t kc, const float *a, int64_t a_ks,
                               const float *b, int64_t b_ks, float *c, int64_t ldc, float alpha,
                               float beta)
{
    __m512 acc[MR][2];
    SN_UNROLL_ROWS
    for (int i = 0; i < rows; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const int64_t every = c_prefetch_every(kc, rows);
    for (int64_t k = 0, next = 0, line = 0; k < kc; ++k) {
        SN_PREFETCH_C_STEP(k, rows);
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        SN_UNROLL_ROWS
        for (int i = 0; i < rows; ++i) SN_FMA_ROW(i, a + i);
        a += a_ks;
        b += b_ks;
    }
    store_tile(rows, acc, c, ldc, alpha, beta);
}

SN_TARGET_AVX512
static void ukernel_avx512(int64_t kc, const float *a, int64_t a_ks, const float *b,
                           int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    packed_tile(MR, kc, a, a_ks, b, b_ks, c, ldc, alpha, beta);
}

/* The 8 x 32 tail kernel: 16 accumulators (16 FMA chains: enough for 2
 * FMA units of latency 4). Each element is the same chain of FMAs in k
 * order as in the 12-row kernel, stored the same way: the same bits. A
 * block's last rows go through it where 12-row panels would compute rows
 * for nothing (row_panels_of, sn_gemm.c, in each mc block): the training
 * step's 128 rows as 10 x 12 + 8 instead of 11 x 12, 64 as 4 x 12 + 2 x 8,
 * 32 as 2 x 12 + 8; 392 (a part of 784 inputs, in mc blocks of 252 and
 * 140) as 21 x 12 and 11 x 12 + 8. (256 rows are blocks of 252 and 4: the
 * last 4 rows in one 8-row panel, an edge tile, as before in a 12-row one.) */
SN_TARGET_AVX512
static void ukernel_tail_avx512(int64_t kc, const float *a, int64_t a_ks, const float *b,
                                int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    packed_tile(MR_TAIL, kc, a, a_ks, b, b_ks, c, ldc, alpha, beta);
}
#undef SN_UNROLL_ROWS

/* The same tile with A read in place from 12 rows lda apart (A not
 * transposed), instead of from a packed panel: row i of the tile at
 * a + i * lda, consecutive in k. Four base pointers and three multiples of
 * lda address the twelve rows. */
SN_TARGET_AVX512
static void ukernel_rows_avx512(int64_t kc, const float *a, int64_t lda, const float *b,
                                int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    __m512 acc[MR][2];
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const float *a0 = a, *a4 = a + 4 * lda, *a8 = a + 8 * lda;
    const int64_t l1 = lda, l2 = 2 * lda, l3 = 3 * lda;
    const int64_t every = c_prefetch_every(kc, MR);
    for (int64_t k = 0, next = 0, line = 0; k < kc; ++k) {
        SN_PREFETCH_C_STEP(k, MR);
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        SN_FMA_ROW(0, a0); SN_FMA_ROW(1, a0 + l1); SN_FMA_ROW(2, a0 + l2);
        SN_FMA_ROW(3, a0 + l3); SN_FMA_ROW(4, a4); SN_FMA_ROW(5, a4 + l1);
        SN_FMA_ROW(6, a4 + l2); SN_FMA_ROW(7, a4 + l3); SN_FMA_ROW(8, a8);
        SN_FMA_ROW(9, a8 + l1); SN_FMA_ROW(10, a8 + l2); SN_FMA_ROW(11, a8 + l3);
        ++a0;
        ++a4;
        ++a8;
        b += b_ks;
    }
    store_tile(MR, acc, c, ldc, alpha, beta);
}
#undef SN_FMA_ROW
#undef SN_PREFETCH_C_STEP

/* One row of a few-rows GEMM (sn_gemm_small.h), B not transposed: c[0:N)
 * = alpha * sum over kc steps of a_k * B[k, :] (+ beta * c), 128 columns
 * (8 zmm) at a time, then the rest (its last vector masked), each sum a chain
 * of fused multiply-adds in k order, stored as store_tile stores a tile: the bits of
 * the blocked path. 1 x 784 x 128 on one core of an AMD EPYC Zen 5: GCC's
 * code for the plain loops 2.1 us at -O3 (3.6 us at -O2), this 2.0 us at
 * either: B read from L2 at about 48 bytes a cycle. */
SN_TARGET_AVX512
static inline __m512 small_scale_avx512(__m512 acc, float alpha, float beta, __m512 c_old)
{
    const __m512 v = _mm512_mul_ps(_mm512_set1_ps(alpha), acc);
    return beta == 0.0f ? v : _mm512_fmadd_ps(_mm512_set1_ps(beta), c_old, v);
}

/* c[j0 : j0 + 16 vecs), the last vector's columns through `last` (a mask:
 * all 16, or the 1-15 left at the end of a row), as vecs chains of fused
 * multiply-adds in k order, side by side. Always inlined with a constant
 * vecs: the accumulators stay in registers. */
#if defined(__GNUC__) || defined(__clang__)
/* GCC at -O2 left the loops over the accumulators rolled (in memory): 3.3 us */
#define SN_UNROLL_VECS _Pragma("GCC unroll 8")
#else
#define SN_UNROLL_VECS
#endif
SN_TARGET_AVX512 SN_ALWAYS_INLINE
static inline void small_block_avx512(const int vecs, __mmask16 last, int64_t j0, int64_t kc,
                                      float alpha, const float *a, int64_t a_step,
                                      const float *B, int64_t ldb, float beta, float *c)
{
    __m512 s[8];
    SN_UNROLL_VECS
    for (int v = 0; v < vecs; ++v) s[v] = _mm512_setzero_ps();
    const float *b = B + j0;
    for (int64_t k = 0; k < kc; ++k, b += ldb) {
        const __m512 ak = _mm512_set1_ps(a[k * a_step]);
        SN_UNROLL_VECS
        for (int v = 0; v < vecs - 1; ++v)
            s[v] = _mm512_fmadd_ps(ak, _mm512_loadu_ps(b + 16 * v), s[v]);
        s[vecs - 1] =
            _mm512_fmadd_ps(ak, _mm512_maskz_loadu_ps(last, b + 16 * (vecs - 1)), s[vecs - 1]);
    }
    SN_UNROLL_VECS
    for (int v = 0; v < vecs; ++v) {
        const __mmask16 m = v == vecs - 1 ? last : (__mmask16)0xFFFF;
        float *cv = c + j0 + 16 * v;
        const __m512 old = beta == 0.0f ? s[v] : _mm512_maskz_loadu_ps(m, cv);
        _mm512_mask_storeu_ps(cv, m, small_scale_avx512(s[v], alpha, beta, old));
    }
}

/* c[j0 : j0 + 128), 8 whole vectors, as small_block_avx512 with no mask
 * (there, GCC ordered the 8 loads of a row of B out of address order:
 * 1 x 784 x 128 took 2.8 us instead of 2.0), over one kc block (blocks 1:
 * kn0 steps from a0 and B0) or two side by side (blocks 2: also kn1 <= kn0
 * steps from a1 and B1, each block its own 8 chains in k order, their rows
 * of B read in turn; stored block 0 first (beta), block 1 after (beta 1),
 * as the blocks one after the other store them: the same bits). Always
 * inlined with a constant `blocks`. Two streams from L2 where there was
 * one: 1 x K x 128 on one core of an AMD EPYC Zen 5 (kc 512), one block
 * after the other (K 784: 512 + 272 rows) / side by side in equal blocks
 * (392 + 392, plan_for_k in sn_gemm.c): K 784 1.92 / 1.84-1.85 us, 850
 * 2.08-2.14 / 1.77-1.79, 900 2.15-2.18 / 1.83, 1024 and 1280 no
 * different (2.06-2.11, 2.6-2.7). (Prefetching each stream 3 rows ahead
 * gave 1.66 at K 784 in 512 + 272 but 1.83-1.94 at 850-900 and 2.2-2.3
 * at 1024: left out.) */
SN_TARGET_AVX512 SN_ALWAYS_INLINE
static inline void small_full_avx512(const int blocks, int64_t j0, int64_t kn0, int64_t kn1,
                                     float alpha, const float *a0, const float *a1,
                                     int64_t a_step, const float *B0, const float *B1,
                                     int64_t ldb, float beta, float *c)
{
    __m512 s[8], t[8];
    SN_UNROLL_VECS
    for (int v = 0; v < 8; ++v) s[v] = t[v] = _mm512_setzero_ps();
    const float *b0 = B0 + j0, *b1 = blocks == 2 ? B1 + j0 : NULL;
    int64_t k = 0;
    for (; blocks == 2 && k < kn1; ++k, b0 += ldb, b1 += ldb) {
        const __m512 ak = _mm512_set1_ps(a0[k * a_step]), bk = _mm512_set1_ps(a1[k * a_step]);
        SN_UNROLL_VECS
        for (int v = 0; v < 8; ++v) s[v] = _mm512_fmadd_ps(ak, _mm512_loadu_ps(b0 + 16 * v), s[v]);
        SN_UNROLL_VECS
        for (int v = 0; v < 8; ++v) t[v] = _mm512_fmadd_ps(bk, _mm512_loadu_ps(b1 + 16 * v), t[v]);
    }
    for (; k < kn0; ++k, b0 += ldb) {
        const __m512 ak = _mm512_set1_ps(a0[k * a_step]);
        SN_UNROLL_VECS
        for (int v = 0; v < 8; ++v) s[v] = _mm512_fmadd_ps(ak, _mm512_loadu_ps(b0 + 16 * v), s[v]);
    }
    SN_UNROLL_VECS
    for (int v = 0; v < 8; ++v) {
        float *cv = c + j0 + 16 * v;
        const __m512 old = beta == 0.0f ? s[v] : _mm512_loadu_ps(cv);
        __m512 out = small_scale_avx512(s[v], alpha, beta, old);
        if (blocks == 2) out = small_scale_avx512(t[v], alpha, 1.0f, out);
        _mm512_storeu_ps(cv, out);
    }
}

SN_TARGET_AVX512
static void small_row_avx512(int64_t N, int64_t kc, float alpha, const float *a,
                             int64_t a_step, const float *B, int64_t ldb, float beta, float *c)
{
    /* 128 columns (8 zmm) at a time, then the rest in one pass: its whole
     * vectors and a masked last one side by side (one vector at a time, a
     * chain of kc dependent multiply-adds each, took 0.75 us per 16 columns
     * of 1 x 784: a pair's unequal halves, 80 + 48 columns of 128, took
     * longer than 64 + 64) */
    int64_t j0 = 0;
    for (; j0 + 128 <= N; j0 += 128)
        small_full_avx512(1, j0, kc, 0, alpha, a, NULL, a_step, B, NULL, ldb, beta, c);
    const int64_t rest = N - j0;
    if (rest == 0) return;
    const __mmask16 last = rest % 16 ? (__mmask16)((1u << rest % 16) - 1u) : (__mmask16)0xFFFF;
    switch ((rest + 15) / 16) {
    case 1: small_block_avx512(1, last, j0, kc, alpha, a, a_step, B, ldb, beta, c); break;
    case 2: small_block_avx512(2, last, j0, kc, alpha, a, a_step, B, ldb, beta, c); break;
    case 3: small_block_avx512(3, last, j0, kc, alpha, a, a_step, B, ldb, beta, c); break;
    case 4: small_block_avx512(4, last, j0, kc, alpha, a, a_step, B, ldb, beta, c); break;
    case 5: small_block_avx512(5, last, j0, kc, alpha, a, a_step, B, ldb, beta, c); break;
    case 6: small_block_avx512(6, last, j0, kc, alpha, a, a_step, B, ldb, beta, c); break;
    case 7: small_block_avx512(7, last, j0, kc, alpha, a, a_step, B, ldb, beta, c); break;
    default: small_block_avx512(8, last, j0, kc, alpha, a, a_step, B, ldb, beta, c); break;
    }
}

/* Rows of a GEMM of at most 16 columns (sn_narrow_gemm_fn), R rows at a
 * time: R fused multiply-add chains in k order, one masked vector a row,
 * each B row loaded once for the R rows. The blocked path computes such a C
 * in edge tiles, 12 x 32 with 10 columns of 32 used (a classifier's
 * logits), then copies the valid part as c = v (beta_k 0) or beta_k * c + v
 * rounded once (sn_gemm.c's copy_edge, as the whole tiles store it), v =
 * alpha * sum; stored the same way here, so the bits are the same (with
 * A transposed, beta 0 and 32 rows or more it took C^T in whole tiles: the
 * same chains, stored as v).
 * A(r, k) is a[r * a_row + k * a_k]. 64 x 10 x 128 on one core of an AMD
 * EPYC Zen 5: blocked 3.6 us, this 1.4 us (16 rows at a time: no faster). */
SN_TARGET_AVX512 SN_ALWAYS_INLINE
static inline void narrow_rows_avx512(const int R, int64_t kc, const float *a, int64_t a_row,
                                      int64_t a_k, const float *b, int64_t ldb, __mmask16 mask,
                                      float alpha, float beta, float *c, int64_t ldc)
{
    __m512 s[8];
    SN_UNROLL_VECS
    for (int r = 0; r < R; ++r) s[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; ++k) {
        const __m512 bk = _mm512_maskz_loadu_ps(mask, b + k * ldb);
        const float *ak = a + k * a_k;
        SN_UNROLL_VECS
        for (int r = 0; r < R; ++r) s[r] = _mm512_fmadd_ps(_mm512_set1_ps(ak[r * a_row]), bk, s[r]);
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    SN_UNROLL_VECS
    for (int r = 0; r < R; ++r) {
        __m512 v = _mm512_mul_ps(va, s[r]);
        if (beta != 0.0f) /* one rounding, as the tiles and the edge tile's copy */
            v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask, c + r * ldc), v);
        _mm512_mask_storeu_ps(c + r * ldc, mask, v);
    }
}

SN_TARGET_AVX512
static void narrow_gemm_avx512(int trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                               const float *A, int64_t lda, const float *B, int64_t ldb,
                               float beta, float *C, int64_t ldc, int64_t kc)
{
    const __mmask16 mask = (__mmask16)((1u << N) - 1u);
    const int64_t a_row = trans_a ? 1 : lda, a_k = trans_a ? lda : 1;
    for (int64_t pc = 0; pc < K; pc += kc) {
        const int64_t kn = K - pc < kc ? K - pc : kc;
        const float beta_k = pc == 0 ? beta : 1.0f;
        const float *a = A + pc * a_k, *b = B + pc * ldb;
        int64_t i = 0;
        /* 8 chains keep both FMA units busy (4 cycles each, 2 a cycle) */
        for (; i + 8 <= M; i += 8)
            narrow_rows_avx512(8, kn, a + i * a_row, a_row, a_k, b, ldb, mask, alpha, beta_k,
                               C + i * ldc, ldc);
        for (; i + 4 <= M; i += 4)
            narrow_rows_avx512(4, kn, a + i * a_row, a_row, a_k, b, ldb, mask, alpha, beta_k,
                               C + i * ldc, ldc);
        for (; i < M; ++i)
            narrow_rows_avx512(1, kn, a + i * a_row, a_row, a_k, b, ldb, mask, alpha, beta_k,
                               C + i * ldc, ldc);
    }
}
/* Two kc blocks of one row (sn_gemm_small.h's SN_SMALL_ROW2): their
 * 128-column blocks side by side (small_full_avx512), the rest of the
 * columns one block after the other. */
SN_TARGET_AVX512
static void small_row2_avx512(int64_t N, int64_t kn0, int64_t kn1, float alpha,
                              const float *a0, const float *a1, int64_t a_step,
                              const float *B0, const float *B1, int64_t ldb, float beta,
                              float *c)
{
    int64_t j0 = 0;
    for (; j0 + 128 <= N; j0 += 128)
        small_full_avx512(2, j0, kn0, kn1, alpha, a0, a1, a_step, B0, B1, ldb, beta, c);
    if (j0 < N) {
        small_row_avx512(N - j0, kn0, alpha, a0, a_step, B0 + j0, ldb, beta, c + j0);
        small_row_avx512(N - j0, kn1, alpha, a1, a_step, B1 + j0, ldb, 1.0f, c + j0);
    }
}
#undef SN_UNROLL_VECS
#define SN_SMALL_HAVE_ROW 1
#define SN_SMALL_ROW2 small_row2_avx512

#define SN_SMALL_NAME small_gemm_avx512
#define SN_SMALL_BLOCKS small_blocks_avx512
#define SN_SMALL_ROW small_row_avx512
#define SN_SMALL_FMA 1 /* the micro-kernel fuses */
#define SN_SMALL_NB 128
#define SN_SMALL_TARGET SN_TARGET_AVX512
#include "sn_gemm_small.h"

const sn_gemm_kernel_info sn_gemm_kernel_avx512 = {
    .name = "avx512",
    .mr = MR, /* 12 rows x 2 zmm per row: 24 accumulators, see the top */
    .nr = NR, /* 32 columns: 2 zmm of 16 floats */
    .kernel = ukernel_avx512,
    .small = small_gemm_avx512,   /* up to SN_SMALL_M rows, columns in blocks of 128 */
    .kernel_rows = ukernel_rows_avx512,
    .mr_tail = MR_TAIL, /* 8 rows x 2 zmm: 16 accumulators, 16 FMA chains */
    .kernel_tail = ukernel_tail_avx512,
    .narrow = narrow_gemm_avx512, /* up to 16 columns: one masked zmm a row */
    .fused_beta = 1,              /* store_tile: beta * c + alpha * acc in one FMA */
};
#endif
