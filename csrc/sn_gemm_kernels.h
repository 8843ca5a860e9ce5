/* Internal: the GEMM micro-kernels and their blocking parameters.
 *
 * A micro-kernel multiplies one packed MR x kc panel of op(A) by one packed
 * kc x NR panel of op(B) and writes the MR x NR tile
 *     C = alpha * (A_panel @ B_panel) + beta * C      (beta == 0: C not read).
 * Packed A holds, for each k, MR consecutive values (a column of the panel);
 * packed B holds, for each k, NR consecutive values (a row of the panel).
 * Panels at the matrix edge are zero-padded by the packing routines, so the
 * kernel always computes a full tile; the driver redirects edge tiles to a
 * scratch tile and copies the valid part. */
#ifndef SN_GEMM_KERNELS_H
#define SN_GEMM_KERNELS_H

#include <stdint.h>

typedef void (*sn_ukernel_fn)(int64_t kc, const float *a, const float *b, float *c,
                              int64_t ldc, float alpha, float beta);

typedef struct {
    const char *name;
    int mr, nr;          /* register tile */
    int64_t kc, mc, nc;  /* cache blocks: kc x nr panel of B in L1, mc x kc of A in L2 */
    sn_ukernel_fn kernel;
} sn_gemm_kernel_info;

#define SN_MAX_MR 16
#define SN_MAX_NR 32

extern const sn_gemm_kernel_info sn_gemm_kernel_generic;
#if defined(__x86_64__) || defined(_M_X64)
#define SN_X86_64 1
extern const sn_gemm_kernel_info sn_gemm_kernel_avx2;
extern const sn_gemm_kernel_info sn_gemm_kernel_avx512;
#endif

/* the kernel of the ISA chosen at run time (sn_runtime.c) */
const sn_gemm_kernel_info *sn_active_gemm_kernel(void);

#endif
