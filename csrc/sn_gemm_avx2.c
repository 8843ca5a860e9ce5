/* AVX2 + FMA micro-kernel: a 6 x 16 tile held in 12 ymm accumulators
 * (6 rows x 2 vectors of 8), plus 2 registers for the B row and 1 or 2 for
 * the broadcast A values (the assembly takes turns between two): all 16
 * ymm registers.
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
/* The tile of C is read (beta != 0) and written once at the end: fetch its
 * rows (each 64 bytes, possibly over two lines) now, so that misses to
 * L3 or memory overlap with the k loop instead of stalling the stores. */
#define SN_PREFETCH_C(rows)                                                       \
    do {                                                                          \
        for (int i_ = 0; i_ < (rows); ++i_) {                                      \
            _mm_prefetch((const char *)(c + i_ * ldc), _MM_HINT_T0);               \
            _mm_prefetch((const char *)(c + i_ * ldc + NR - 1), _MM_HINT_T0);      \
        }                                                                         \
    } while (0)

#define SN_DECLARE_ACC                                                            \
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();                  \
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();                  \
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();                  \
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();                  \
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();                  \
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps()

/* one k step: row i of the tile += a_i * (b0, b1), a_i read at p0 ... p5,
 * the B row at bk */
#define SN_K_STEP(p0, p1, p2, p3, p4, p5, bk)                                     \
    do {                                                                          \
        const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps((bk) + 8);    \
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

/* a packed A panel: the six values of step k side by side at ak */
#define SN_K_STEP_AT(ak, bk) SN_K_STEP(ak, (ak) + 1, (ak) + 2, (ak) + 3, (ak) + 4, (ak) + 5, bk)
/* A in place: rows 0-2 at r0 + i * lda, rows 3-5 at r3 + i * lda */
#define SN_K_STEP_ROWS(r0, r3, bk) SN_K_STEP(r0, (r0) + l1, (r0) + l2, r3, (r3) + l1, (r3) + l2, bk)

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

/* The same k steps written out in assembly (GCC and Clang), registers
 * fixed: accumulators ymm0-11 (whatever the compiler picks for the twelve
 * named variables), the B row in ymm12-13, the broadcast A value in ymm14
 * and ymm15 by turns. GCC's own allocation of the intrinsics kept copies of
 * accumulators on the stack and moved registers about inside the loop. On
 * an AMD EPYC Zen 3 core (12 independent FMA chains: 94-98 GFLOPS), kc 256
 * in L1, alternating builds: packed 82-86 GFLOPS with GCC 12's code, 91-96
 * with this; A in place (lda 392) 69-78 and 88-99; the whole GEMM
 * 392 x 512 x 128 with A transposed in place (a dense layer's dW) 66-67 and
 * 78-83 once the strided loop too was written so. An FMA is rounded once,
 * so a_i * b + c here gives the bits of _mm256_fmadd_ps(a_i, b, c). MSVC
 * has no inline assembly: it compiles the intrinsics. */
/* Not for x32 (__ILP32__): its 32-bit pointers would make the addressing
 * mix 32- and 64-bit registers. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(SN_GEMM_NO_ASM) && !defined(__ILP32__)
#define SN_AVX2_ASM 1
#define SN_ASM_ROW(a_at, bcast, acc0, acc1)                                       \
    "vbroadcastss " a_at ", %%" bcast "\n\t"                                    \
    "vfmadd231ps %%ymm12, %%" bcast ", %[" acc0 "]\n\t"                          \
    "vfmadd231ps %%ymm13, %%" bcast ", %[" acc1 "]\n\t"
/* one k step: the B row at b_at0 / b_at1, a_0 ... a_5 at the six a_at */
#define SN_ASM_K_STEP(b_at0, b_at1, a0, a1, a2, a3, a4, a5)                      \
    "vmovups " b_at0 ", %%ymm12\n\t"                                             \
    "vmovups " b_at1 ", %%ymm13\n\t"                                             \
    SN_ASM_ROW(a0, "ymm14", "c00", "c01") SN_ASM_ROW(a1, "ymm15", "c10", "c11")   \
    SN_ASM_ROW(a2, "ymm14", "c20", "c21") SN_ASM_ROW(a3, "ymm15", "c30", "c31")   \
    SN_ASM_ROW(a4, "ymm14", "c40", "c41") SN_ASM_ROW(a5, "ymm15", "c50", "c51")
/* The accumulators are outputs only (an asm statement takes 30 operands,
 * an in-out one counts twice): the loop starts by zeroing them. */
#define SN_ASM_ZERO_ACC                                                           \
    "vxorps %[c00], %[c00], %[c00]\n\t" "vxorps %[c01], %[c01], %[c01]\n\t"       \
    "vxorps %[c10], %[c10], %[c10]\n\t" "vxorps %[c11], %[c11], %[c11]\n\t"       \
    "vxorps %[c20], %[c20], %[c20]\n\t" "vxorps %[c21], %[c21], %[c21]\n\t"       \
    "vxorps %[c30], %[c30], %[c30]\n\t" "vxorps %[c31], %[c31], %[c31]\n\t"       \
    "vxorps %[c40], %[c40], %[c40]\n\t" "vxorps %[c41], %[c41], %[c41]\n\t"       \
    "vxorps %[c50], %[c50], %[c50]\n\t" "vxorps %[c51], %[c51], %[c51]\n\t"
#define SN_ASM_ACC_OPERANDS                                                       \
    [c00] "=&x"(c00), [c01] "=&x"(c01), [c10] "=&x"(c10), [c11] "=&x"(c11),      \
    [c20] "=&x"(c20), [c21] "=&x"(c21), [c30] "=&x"(c30), [c31] "=&x"(c31),      \
    [c40] "=&x"(c40), [c41] "=&x"(c41), [c50] "=&x"(c50), [c51] "=&x"(c51)
#define SN_ASM_CLOBBERS "ymm12", "ymm13", "ymm14", "ymm15", "cc", "memory"
#endif

/* The k loop of a kernel whose A step k is at a + k a_ks and B's at b + k
 * b_ks, for a STEP(ak, bk) macro: four steps a trip, then the rest one by
 * one; and the same four-step trip in assembly for an ASM_STEP(ai, bi)
 * (ai, bi one of "", ",%[as]", ",%[as],2", ",%[as3]"; a, b, trips,
 * as, bs, as3, bs3 the asm operands). */
#define SN_K_TRIPS(STEP)                                                          \
    for (; k + 4 <= kc; k += 4) {                                                 \
        STEP(a, b);                                                               \
        STEP(a + a_ks, b + b_ks);                                                 \
        STEP(a + 2 * a_ks, b + 2 * b_ks);                                         \
        STEP(a + 3 * a_ks, b + 3 * b_ks);                                         \
        a += 4 * a_ks;                                                            \
        b += 4 * b_ks;                                                            \
    }
#define SN_K_REST(STEP)                                                           \
    for (; k < kc; ++k) {                                                         \
        STEP(a, b);                                                               \
        a += a_ks;                                                                \
        b += b_ks;                                                                \
    }
#define SN_ASM_TRIPS(ASM_STEP)                                                    \
    "1:\n\t"                                                                     \
    ASM_STEP("", "") ASM_STEP(",%[as]", ",%[bs]")                                 \
    ASM_STEP(",%[as],2", ",%[bs],2") ASM_STEP(",%[as3]", ",%[bs3]")               \
    "leaq (%[a],%[as],4), %[a]\n\t"                                              \
    "leaq (%[b],%[bs],4), %[b]\n\t"                                              \
    "decq %[trips]\n\t"                                                          \
    "jnz 1b\n\t"

/* A step k of A at a + k a_ks (mr values side by side: a packed panel, or
 * a transposed A read in place), of B at b + k b_ks: four steps per trip
 * (the assembly, or the intrinsics with every offset from one pointer).
 * The sums are the same, in the same order. */
SN_TARGET_AVX2
static void ukernel_avx2(int64_t kc, const float *a, int64_t a_ks, const float *b,
                         int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    SN_PREFETCH_C(MR);
    SN_DECLARE_ACC;
    int64_t k = 0;
    if (kc >= 4) {
#ifdef SN_AVX2_ASM
        int64_t trips = kc / 4;
        const int64_t as = a_ks * (int64_t)sizeof(float), bs = b_ks * (int64_t)sizeof(float);
        const int64_t as3 = 3 * as, bs3 = 3 * bs;
/* step k at a + ai, b + bi: ai, bi one of "", ",%[as]", ",%[as],2", ",%[as3]" */
#define SN_ASM_K_STEP_AT(ai, bi)                                                            \
    SN_ASM_K_STEP("(%[b]" bi ")", "32(%[b]" bi ")", "(%[a]" ai ")", "4(%[a]" ai ")",        \
                  "8(%[a]" ai ")", "12(%[a]" ai ")", "16(%[a]" ai ")", "20(%[a]" ai ")")
        __asm__ volatile(
            SN_ASM_ZERO_ACC
            SN_ASM_TRIPS(SN_ASM_K_STEP_AT)
            : SN_ASM_ACC_OPERANDS, [a] "+r"(a), [b] "+r"(b), [trips] "+r"(trips)
            : [as] "r"(as), [bs] "r"(bs), [as3] "r"(as3), [bs3] "r"(bs3)
            : SN_ASM_CLOBBERS);
#undef SN_ASM_K_STEP_AT
        k = kc / 4 * 4;
#else
        SN_K_TRIPS(SN_K_STEP_AT)
#endif
    }
    SN_K_REST(SN_K_STEP_AT)
    SN_STORE_TILE;
}

/* A read in place: row i of the tile at a + i * lda, consecutive in k */
SN_TARGET_AVX2
static void ukernel_rows_avx2(int64_t kc, const float *a, int64_t lda, const float *b,
                              int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    SN_PREFETCH_C(MR);
    SN_DECLARE_ACC;
    const float *a0 = a, *a3 = a + 3 * lda;
    const int64_t l1 = lda, l2 = 2 * lda;
    int64_t k = 0;
    if (kc >= 4) { /* four steps per trip, as above */
#ifdef SN_AVX2_ASM
        int64_t trips = kc / 4;
        const int64_t l1_bytes = l1 * (int64_t)sizeof(float);
        const int64_t bs = b_ks * (int64_t)sizeof(float), bs3 = 3 * bs;
/* step k: rows 0-2 at a0, a0 + l1, a0 + 2 l1 and 3-5 likewise at a3, o bytes
 * on; B at b + bi (bi as in ukernel_avx2) */
#define SN_ASM_K_STEP_ROWS(o, bi)                                                           \
    SN_ASM_K_STEP("(%[b]" bi ")", "32(%[b]" bi ")", o "(%[a0])", o "(%[a0],%[l1])",         \
                  o "(%[a0],%[l1],2)", o "(%[a3])", o "(%[a3],%[l1])", o "(%[a3],%[l1],2)")
        __asm__ volatile(
            SN_ASM_ZERO_ACC
            "1:\n\t"
            SN_ASM_K_STEP_ROWS("", "")
            SN_ASM_K_STEP_ROWS("4", ",%[bs]")
            SN_ASM_K_STEP_ROWS("8", ",%[bs],2")
            SN_ASM_K_STEP_ROWS("12", ",%[bs3]")
            "addq $16, %[a0]\n\t"
            "addq $16, %[a3]\n\t"
            "leaq (%[b],%[bs],4), %[b]\n\t"
            "decq %[trips]\n\t"
            "jnz 1b\n\t"
            : SN_ASM_ACC_OPERANDS, [a0] "+r"(a0), [a3] "+r"(a3), [b] "+r"(b),
              [trips] "+r"(trips)
            : [l1] "r"(l1_bytes), [bs] "r"(bs), [bs3] "r"(bs3)
            : SN_ASM_CLOBBERS);
#undef SN_ASM_K_STEP_ROWS
        k = kc / 4 * 4;
#else
        for (; k + 4 <= kc; k += 4) {
            SN_K_STEP_ROWS(a0, a3, b);
            SN_K_STEP_ROWS(a0 + 1, a3 + 1, b + b_ks);
            SN_K_STEP_ROWS(a0 + 2, a3 + 2, b + 2 * b_ks);
            SN_K_STEP_ROWS(a0 + 3, a3 + 3, b + 3 * b_ks);
            a0 += 4;
            a3 += 4;
            b += 4 * b_ks;
        }
#endif
    }
    for (; k < kc; ++k) {
        SN_K_STEP_ROWS(a0, a3, b);
        ++a0;
        ++a3;
        b += b_ks;
    }
    SN_STORE_TILE;
}

/* The 4 x 16 tail kernel: four rows (8 accumulators: 8 FMA chains, enough
 * for 2 FMA units of latency 4), A packed 4 values a step or transposed in
 * place. Each element is the same chain of FMAs in k order as in the 6-row
 * kernel, stored the same way: the same bits. M = 128 rows as 20 panels of
 * 6 and 2 of 4, instead of 21 of 6 and one of 6 computing 2 rows. */
SN_TARGET_AVX2
static void ukernel_tail_avx2(int64_t kc, const float *a, int64_t a_ks, const float *b,
                              int64_t b_ks, float *c, int64_t ldc, float alpha, float beta)
{
    SN_PREFETCH_C(4);
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
#define SN_K_STEP4(ak, bk)                                                        \
    do {                                                                          \
        const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps((bk) + 8);    \
        __m256 ai;                                                                \
        ai = _mm256_broadcast_ss(ak);                                             \
        c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);   \
        ai = _mm256_broadcast_ss((ak) + 1);                                       \
        c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);   \
        ai = _mm256_broadcast_ss((ak) + 2);                                       \
        c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);   \
        ai = _mm256_broadcast_ss((ak) + 3);                                       \
        c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);   \
    } while (0)
    int64_t k = 0;
    if (kc >= 4) { /* four steps per trip, as in ukernel_avx2 */
#ifdef SN_AVX2_ASM
        int64_t trips = kc / 4;
        const int64_t as = a_ks * (int64_t)sizeof(float), bs = b_ks * (int64_t)sizeof(float);
        const int64_t as3 = 3 * as, bs3 = 3 * bs;
#define SN_ASM_K_STEP4_AT(ai, bi)                                                 \
    "vmovups (%[b]" bi "), %%ymm12\n\t"                                          \
    "vmovups 32(%[b]" bi "), %%ymm13\n\t"                                        \
    SN_ASM_ROW("(%[a]" ai ")", "ymm14", "c00", "c01")                             \
    SN_ASM_ROW("4(%[a]" ai ")", "ymm15", "c10", "c11")                            \
    SN_ASM_ROW("8(%[a]" ai ")", "ymm14", "c20", "c21")                            \
    SN_ASM_ROW("12(%[a]" ai ")", "ymm15", "c30", "c31")
        __asm__ volatile(
            "vxorps %[c00], %[c00], %[c00]\n\t" "vxorps %[c01], %[c01], %[c01]\n\t"
            "vxorps %[c10], %[c10], %[c10]\n\t" "vxorps %[c11], %[c11], %[c11]\n\t"
            "vxorps %[c20], %[c20], %[c20]\n\t" "vxorps %[c21], %[c21], %[c21]\n\t"
            "vxorps %[c30], %[c30], %[c30]\n\t" "vxorps %[c31], %[c31], %[c31]\n\t"
            SN_ASM_TRIPS(SN_ASM_K_STEP4_AT)
            : [c00] "=&x"(c00), [c01] "=&x"(c01), [c10] "=&x"(c10), [c11] "=&x"(c11),
              [c20] "=&x"(c20), [c21] "=&x"(c21), [c30] "=&x"(c30), [c31] "=&x"(c31),
              [a] "+r"(a), [b] "+r"(b), [trips] "+r"(trips)
            : [as] "r"(as), [bs] "r"(bs), [as3] "r"(as3), [bs3] "r"(bs3)
            : SN_ASM_CLOBBERS);
#undef SN_ASM_K_STEP4_AT
        k = kc / 4 * 4;
#else
        SN_K_TRIPS(SN_K_STEP4)
#endif
    }
    SN_K_REST(SN_K_STEP4)
#undef SN_K_STEP4
    const __m256 va = _mm256_set1_ps(alpha);
    SN_STORE_ROW(0, c00, c01);
    SN_STORE_ROW(1, c10, c11);
    SN_STORE_ROW(2, c20, c21);
    SN_STORE_ROW(3, c30, c31);
}
#undef SN_K_TRIPS
#undef SN_K_REST
#undef SN_ASM_TRIPS
#undef SN_DECLARE_ACC
#undef SN_PREFETCH_C
#undef SN_K_STEP
#undef SN_K_STEP_AT
#undef SN_K_STEP_ROWS
#undef SN_STORE_ROW
#undef SN_STORE_TILE

/* One row of a few-rows GEMM (sn_gemm_small.h), B not transposed: c[0:N)
 * = alpha * sum over kc steps of a_k * B[k, :] (+ beta * c), 64 columns
 * (8 ymm) at a time, then 8 and a masked rest, each sum a chain of fused
 * multiply-adds in k order, stored as SN_STORE_ROW stores a tile: the
 * bits of the blocked path. GCC's code for the plain loops kept the
 * broadcast on the stack and read B at about 40 GB/s on an AMD EPYC Zen 3
 * (1 x 784 x 128: 10 us); this reads it at about 55 GB/s (7.5 us). */
SN_TARGET_AVX2
static inline __m256 small_scale_avx2(__m256 acc, float alpha, float beta, __m256 c_old)
{
    const __m256 v = _mm256_mul_ps(_mm256_set1_ps(alpha), acc);
    return beta == 0.0f ? v : _mm256_fmadd_ps(_mm256_set1_ps(beta), c_old, v);
}

SN_TARGET_AVX2
static void small_row_avx2(int64_t N, int64_t kc, float alpha, const float *a, int64_t a_step,
                           const float *B, int64_t ldb, float beta, float *c)
{
    int64_t j0 = 0;
    for (; j0 + 64 <= N; j0 += 64) {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0,
               s7 = s0;
        const float *b = B + j0;
        for (int64_t k = 0; k < kc; ++k, b += ldb) {
            const __m256 ak = _mm256_broadcast_ss(a + k * a_step);
            s0 = _mm256_fmadd_ps(ak, _mm256_loadu_ps(b), s0);
            s1 = _mm256_fmadd_ps(ak, _mm256_loadu_ps(b + 8), s1);
            s2 = _mm256_fmadd_ps(ak, _mm256_loadu_ps(b + 16), s2);
            s3 = _mm256_fmadd_ps(ak, _mm256_loadu_ps(b + 24), s3);
            s4 = _mm256_fmadd_ps(ak, _mm256_loadu_ps(b + 32), s4);
            s5 = _mm256_fmadd_ps(ak, _mm256_loadu_ps(b + 40), s5);
            s6 = _mm256_fmadd_ps(ak, _mm256_loadu_ps(b + 48), s6);
            s7 = _mm256_fmadd_ps(ak, _mm256_loadu_ps(b + 56), s7);
        }
        const __m256 sums[8] = {s0, s1, s2, s3, s4, s5, s6, s7};
        for (int v = 0; v < 8; ++v) {
            float *cv = c + j0 + 8 * v;
            const __m256 old = beta == 0.0f ? sums[v] : _mm256_loadu_ps(cv);
            _mm256_storeu_ps(cv, small_scale_avx2(sums[v], alpha, beta, old));
        }
    }
    /* then 8 columns, then the last 1-7 through a mask */
    for (; j0 < N; j0 += 8) {
        const int64_t w = N - j0 < 8 ? N - j0 : 8;
        const __m256i mask =
            _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 s = _mm256_setzero_ps();
        const float *b = B + j0;
        for (int64_t k = 0; k < kc; ++k, b += ldb)
            s = _mm256_fmadd_ps(_mm256_broadcast_ss(a + k * a_step), _mm256_maskload_ps(b, mask), s);
        const __m256 old = beta == 0.0f ? s : _mm256_maskload_ps(c + j0, mask);
        _mm256_maskstore_ps(c + j0, mask, small_scale_avx2(s, alpha, beta, old));
    }
}
#define SN_SMALL_HAVE_ROW 1

#define SN_SMALL_NAME small_gemm_avx2
#define SN_SMALL_BLOCKS small_blocks_avx2
#define SN_SMALL_ROW small_row_avx2
#define SN_SMALL_FMA 1 /* the micro-kernel fuses */
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
    .mr_tail = 4, /* 4 rows x 2 ymm: 8 accumulators, 8 FMA chains */
    .kernel_tail = ukernel_tail_avx2,
    .fused_beta = 1, /* SN_STORE_ROW: beta * c + alpha * acc in one FMA */
};
#endif
