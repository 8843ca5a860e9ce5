/* Internal: flush-to-zero / denormals-are-zero for the duration of a kernel.
 *
 * Subnormal floats (|x| < 1.2e-38) take a slow microcode path on x86: after a
 * few epochs a fair share of a network's weights, gradients and optimizer
 * state are subnormal and a training step can run several times slower.
 * Flushing them to zero changes no result that matters at float32 precision.
 * The kernels that run over weights, gradients and optimizer state, in the
 * hot loop of training, wrap their body in
 *     unsigned saved = sn_fp_enter(); ... sn_fp_leave(saved);
 * in each thread that computes (OpenMP workers included), so the caller's
 * own floating-point mode is restored on return: the GEMM with its
 * epilogue (sn_gemm.c, so the dense kernels), the optimizer steps
 * (sn_optim.c) and the MLP trainer and inference (sn_mlp.c, so everything
 * they call). The element-wise activations, softmax, dropout, bias and
 * loss kernels do not: called on their own they run in the caller's mode. */
#ifndef SN_FPMODE_H
#define SN_FPMODE_H

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define SN_MXCSR_FTZ_DAZ 0x8040u /* bit 15 flush-to-zero, bit 6 denormals-are-zero */
static inline unsigned sn_fp_enter(void)
{
    const unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | SN_MXCSR_FTZ_DAZ);
    return saved;
}
static inline void sn_fp_leave(unsigned saved) { _mm_setcsr(saved); }
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define SN_FPCR_FZ (1ull << 24) /* FPCR.FZ: flush subnormal inputs and outputs to zero */
static inline unsigned sn_fp_enter(void)
{
    unsigned long long fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr | SN_FPCR_FZ));
    return (unsigned)((fpcr & SN_FPCR_FZ) != 0);
}
static inline void sn_fp_leave(unsigned saved)
{
    unsigned long long fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    fpcr = saved ? (fpcr | SN_FPCR_FZ) : (fpcr & ~SN_FPCR_FZ);
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr));
}
#else
static inline unsigned sn_fp_enter(void) { return 0; }
static inline void sn_fp_leave(unsigned saved) { (void)saved; }
#endif

#endif
