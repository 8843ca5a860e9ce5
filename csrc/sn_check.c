#include <string.h>

#include "scratchnet.h"
#include "sn_internal.h"

/* A float is NaN or infinite exactly when its 8 exponent bits are all ones;
 * adding one to the exponent field then carries into the sign bit, and only
 * then. Testing the bits (not x - x == 0) keeps the loop in integer vector
 * instructions (and, add, or: three per vector) and free of floating-point
 * exceptions. Returns the OR of the carries: bit 31 set iff one is not
 * finite. LANES carries side by side (several vector registers: one chain
 * of ORs held the loop to one vector a cycle or less, 4 floats a cycle from
 * L1 or L2 with AVX2 on an AMD EPYC Zen 5). Compiled for the baseline (SSE2
 * on x86-64), and on x86-64 with GCC or clang for AVX2 and AVX-512 too (the
 * same answer: it is integer arithmetic). */
#define SN_FINITE_LOOP(name, target, LANES)                                        \
    target static uint32_t name(const float *x, int64_t n)                         \
    {                                                                              \
        uint32_t lane[LANES] = {0};                                                \
        int64_t i = 0;                                                             \
        for (; i + LANES <= n; i += LANES)                                         \
            for (int j = 0; j < LANES; ++j) {                                      \
                uint32_t bits;                                                     \
                memcpy(&bits, x + i + j, sizeof bits);                             \
                lane[j] |= (bits & 0x7F800000u) + 0x00800000u;                     \
            }                                                                      \
        uint32_t carry = 0;                                                        \
        for (int j = 0; j < LANES; ++j) carry |= lane[j];                          \
        for (; i < n; ++i) {                                                       \
            uint32_t bits;                                                         \
            memcpy(&bits, x + i, sizeof bits);                                     \
            carry |= (bits & 0x7F800000u) + 0x00800000u;                           \
        }                                                                          \
        return carry;                                                              \
    }

SN_FINITE_LOOP(finite_carry_baseline, , 16)
#if defined(SN_X86_64) && (defined(__GNUC__) || defined(__clang__))
SN_FINITE_LOOP(finite_carry_avx2, __attribute__((target("avx2"))), 32)
SN_FINITE_LOOP(finite_carry_avx512, __attribute__((target("avx512f"))), 64)
static uint32_t finite_carry(const float *x, int64_t n)
{
    const int isa = sn_get_isa();
    return isa >= SN_ISA_AVX512   ? finite_carry_avx512(x, n)
           : isa >= SN_ISA_AVX2 ? finite_carry_avx2(x, n)
                                : finite_carry_baseline(x, n);
}
#else
#define finite_carry(x, n) finite_carry_baseline(x, n)
#endif

/* Arrays of at least two pieces of this size are checked by the library's
 * threads: a data set (60,000 MNIST images are 47 million floats, 188 MB)
 * is read at the memory's speed, which one core does not reach (AMD EPYC
 * Zen 3: 15 ms on one thread, 7 ms on two). */
#define SN_FINITE_PIECE ((int64_t)1 << 20)

typedef struct {
    const float *x;
    int64_t n, piece;
} finite_job;

static int finite_piece(const void *ctx, int64_t u)
{
    const finite_job *job = ctx;
    const int64_t lo = u * job->piece;
    const int64_t len = job->n - lo < job->piece ? job->n - lo : job->piece;
    return finite_carry(job->x + lo, len) & 0x80000000u ? SN_ENONFINITE : SN_OK;
}

int sn_all_finite_serial_f32(const float *x, int64_t n)
{
    return !(finite_carry(x, n) & 0x80000000u);
}

int sn_all_finite_pieces_f32(const float *x, int64_t n, int64_t piece, int flags)
{
    const finite_job job = {x, n, piece};
    const int64_t pieces = (n + piece - 1) / piece;
    /* integer arithmetic only: the floating-point mode is left as it is */
    return sn_run_units(finite_piece, &job, pieces, pieces > 1 ? sn_parallel_threads() : 1,
                        flags | SN_UNITS_FP_AS_IS) == SN_OK;
}

int sn_all_finite_f32(const float *x, int64_t n)
{
    if (n < 2 * SN_FINITE_PIECE) return sn_all_finite_serial_f32(x, n);
    /* pieces to whichever thread is free: one the OS has descheduled leaves
     * its share to the other */
    return sn_all_finite_pieces_f32(x, n, SN_FINITE_PIECE, 0);
}
