/* Internal to csrc/ (not part of the API in scratchnet.h): the GEMM
 * micro-kernels and their blocking parameters, the GEMM epilogue, fused
 * activation helpers and the threads back-off.
 *
 *
 * A micro-kernel multiplies one packed MR x kc panel of op(A) by one packed
 * kc x NR panel of op(B) and writes the MR x NR tile
 *     C = alpha * (A_panel @ B_panel) + beta * C      (beta == 0: C not read).
 * The A panel holds, for each k, MR consecutive values (a column of the
 * panel), a_ks floats after those of k - 1; the B panel holds, for each k,
 * NR consecutive values (a row of the panel), b_ks floats apart. Packed
 * panels have a_ks = MR and b_ks = NR; a panel read in place from the matrix
 * (B not transposed, or A transposed) has its leading dimension.
 * Panels at the matrix edge are zero-padded by the packing routines, so the
 * kernel always computes a full tile; the driver redirects edge tiles to a
 * scratch tile and copies the valid part. */
#ifndef SN_INTERNAL_H
#define SN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "scratchnet.h"
#include "sn_atomic.h"

typedef void (*sn_ukernel_fn)(int64_t kc, const float *a, int64_t a_ks, const float *b,
                              int64_t b_ks, float *c, int64_t ldc, float alpha, float beta);

#if defined(_MSC_VER)
#define SN_THREAD_LOCAL __declspec(thread)
#else
#define SN_THREAD_LOCAL _Thread_local
#endif

/* restrict (C99), as MSVC spells it too */
#define SN_RESTRICT __restrict

/* a hint to bring the line holding p into the caches; never changes a result.
 * SN_PREFETCH_WRITE: the same, owned to be written (x86's PREFETCHW, where
 * the function's target has it: taken from other cores' caches now, not
 * when the store comes) */
#if defined(__GNUC__) || defined(__clang__)
#define SN_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#define SN_PREFETCH_WRITE(p) __builtin_prefetch((p), 1, 3)
#else
#define SN_PREFETCH(p) ((void)(p))
#define SN_PREFETCH_WRITE(p) ((void)(p))
#endif

#if defined(_MSC_VER)
#define SN_ALWAYS_INLINE __forceinline
#elif defined(__GNUC__) || defined(__clang__)
#define SN_ALWAYS_INLINE __attribute__((always_inline))
#else
#define SN_ALWAYS_INLINE
#endif

/* GEMM of a few rows without packing (sn_gemm_small.h), summing over k in
 * blocks of kc as the blocked path does */
typedef void (*sn_small_gemm_fn)(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                                 float alpha, const float *A, int64_t lda, const float *B,
                                 int64_t ldb, float beta, float *C, int64_t ldc, int64_t kc);

/* C with at most this many rows skips packing */
#define SN_SMALL_M 4

/* n floats rounded up to whole 64-byte lines (16 floats): a buffer cut
 * there starts its next part on a line, so two threads writing the parts
 * share none */
static inline int64_t sn_whole_lines(int64_t n) { return (n + 15) / 16 * 16; }

/* The median of n timings, n <= SN_MEDIAN_MAX (the mean of the middle two
 * when n is even), by an insertion sort of a copy: the trainer's thread
 * probe (sn_mlp.c) and the threads' round trip (sn_runtime.c). */
#define SN_MEDIAN_MAX 16
static inline double sn_median(const double *v, int n)
{
    double s[SN_MEDIAN_MAX];
    for (int i = 0; i < n; ++i) {
        int j = i;
        for (; j > 0 && s[j - 1] > v[i]; --j) s[j] = s[j - 1];
        s[j] = v[i];
    }
    return 0.5 * (s[(n - 1) / 2] + s[n / 2]);
}

/* GEMM of a few columns (N <= SN_NARROW_N), B not transposed, without
 * packing: each row of C one masked vector (a classifier's 10 logits, the
 * last layer's weight gradient). Sums over k in blocks of kc, each element
 * stored as the blocked path stores an edge tile: the same bits. */
typedef void (*sn_narrow_gemm_fn)(int trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                                  const float *A, int64_t lda, const float *B, int64_t ldb,
                                  float beta, float *C, int64_t ldc, int64_t kc);
#define SN_NARROW_N 16

/* Below these many multiply-adds a second thread costs more than it saves
 * (waking it, and each strip packing its own copy of an operand). */
#define SN_SMALL_PARALLEL_MIN_FLOPS (1 << 18)
/* From these many up to the one above, by default, a GEMM of a few rows is
 * cut in two halves, the second for a helper thread (sn_run_pair): 1 x 784
 * x 128 (one image through 784-128-10's first layer, 100,352) is 7 us on
 * one thread of an AMD EPYC Zen 3. sn_set_pair_min_flops moves it (the
 * tuner does, where handing a half to another core costs more than it saves). */
#define SN_SMALL_PAIR_MIN_FLOPS (1 << 15)
#define SN_GEMM_PARALLEL_MIN_FLOPS (1 << 20)
/* A GEMM's epilogue goes over each tile as it is made from this K on, else
 * once over each block of C of at most this many bytes (sn_gemm.c) */
#define SN_EPILOGUE_TILE_MIN_K 64
#define SN_EPILOGUE_BLOCK_MAX_BYTES (64 * 1024)

typedef struct {
    const char *name;
    int mr, nr;          /* register tile (the cache blocks: sn_blocking.c) */
    sn_ukernel_fn kernel;
    sn_small_gemm_fn small;
    /* the kernel with A read in place from mr rows: a_ks is then the row
     * stride lda and consecutive k are adjacent (NULL: always pack A) */
    sn_ukernel_fn kernel_rows;
    /* a kernel of the same nr and mr_tail < mr rows (0, NULL: none), A packed
     * mr_tail values a step or transposed in place: the blocks' last rows go
     * through it where that wastes fewer rows than mr-row panels would
     * (sn_gemm.c, row_panels_of) */
    int mr_tail;
    sn_ukernel_fn kernel_tail;
    /* C of at most SN_NARROW_N columns, B not transposed (NULL: the blocked
     * path, whose tiles are then mostly padding) */
    sn_narrow_gemm_fn narrow;
    /* 1: the kernels store c = beta * c + alpha * acc rounded once (a fused
     * multiply-add), else twice; an edge tile's copy (sn_gemm.c) rounds the
     * same way, so that a row's bits do not depend on where it falls */
    int fused_beta;
} sn_gemm_kernel_info;

#define SN_MAX_MR 16
#define SN_MAX_NR 32

extern const sn_gemm_kernel_info sn_gemm_kernel_generic;
#if defined(__aarch64__) || defined(_M_ARM64)
#define SN_ARM64 1
extern const sn_gemm_kernel_info sn_gemm_kernel_neon; /* arm64's generic kernel */
#endif
#if defined(__x86_64__) || defined(_M_X64)
#define SN_X86_64 1
extern const sn_gemm_kernel_info sn_gemm_kernel_avx2;
extern const sn_gemm_kernel_info sn_gemm_kernel_avx512;
#endif

/* What the GEMM does to each finished tile of C while it is still in L1,
 * instead of another pass over C in memory (offsets are those of C):
 *   SN_EPI_BIAS_ACT: c = act(c + bias[j])                   (dense forward)
 *   SN_EPI_DACT:     c = c * act'(y[i, j]) * mask[i, j]     (dense backward:
 *                    the gradient reaching the layer below, with the
 *                    derivative of its activation taken from its output y) */
#define SN_EPI_NONE 0
#define SN_EPI_BIAS_ACT 1
#define SN_EPI_DACT 2

typedef struct {
    int kind;
    int act;
    float act_param;
    const float *bias;   /* SN_EPI_BIAS_ACT: N values, or NULL */
    const float *y;      /* SN_EPI_DACT: M x N, leading dimension ldy */
    const float *mask;   /* SN_EPI_DACT: M x N (ldy) or NULL */
    int64_t ldy;
} sn_epilogue;

/* C = alpha op(A) op(B) + beta C, then the epilogue (NULL: none) */
typedef int (*sn_gemm_epi_fn)(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                              float alpha, const float *A, int64_t lda, const float *B,
                              int64_t ldb, float beta, float *C, int64_t ldc,
                              const sn_epilogue *ep);
int sn_gemm_epi_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                    float *C, int64_t ldc, const sn_epilogue *ep);

/* the same, computed in the calling thread alone: for callers that split
 * their own work over threads (sn_conv.c) */
int sn_gemm_serial_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc, const sn_epilogue *ep);


/* softmax of one row of N into p; returns its log-sum-exp (sn_act.c) */
double sn_softmax_row_f32(float *p, const float *z, int64_t N);

/* act(v) and act'(y) from the output y, for the SN_ACT_* codes (sn_act.c) */
void sn_act_rows_f32(float *c, int64_t ldc, int64_t rows, int64_t cols, const float *bias,
                     int act, float act_param);
void sn_dact_rows_f32(float *c, int64_t ldc, int64_t rows, int64_t cols, const float *y,
                      const float *mask, int64_t ldy, int act, float act_param);

/* sn_all_finite_f32 on the calling thread alone, for work units that
 * already run in parallel; and over the threads in pieces of `piece`
 * floats, handed out as sn_run_units' flags say (sn_check.c) */
int sn_all_finite_serial_f32(const float *x, int64_t n);
int sn_all_finite_pieces_f32(const float *x, int64_t n, int64_t piece, int flags);

/* Threads for the next parallel region (1 while backing off under
 * contention), and the report of how it went: its wall time and the summed
 * busy time of its work items, in seconds (sn_runtime.c). */
int sn_parallel_threads(void);
void sn_parallel_done(double wall, double work, int nthreads);
/* fn(ctx, u) for u in [0, units) over nthreads threads, the region timed
 * and reported to sn_parallel_done. Units are handed out one at a time to
 * whichever thread is free, or with SN_UNITS_STATIC the same ones to the
 * same thread every call; each runs in the flush-to-zero mode
 * (sn_fpmode.h) unless SN_UNITS_FP_AS_IS. Returns the first status other
 * than SN_OK (serially, stops there). */
#define SN_UNITS_STATIC 1
#define SN_UNITS_FP_AS_IS 2
typedef int (*sn_unit_fn)(const void *ctx, int64_t u);
int sn_run_units(sn_unit_fn fn, const void *ctx, int64_t units, int nthreads, int flags);
/* the threads running the caller's parallel region (1 outside one) */
int sn_team_size(void);
/* one turn of a loop that waits for another thread */
static inline void sn_spin_pause(void)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
/* fn(ctx, 0) in the calling thread and fn(ctx, 1) in a helper thread if it
 * is free to begin before the caller is done with the first, else in the
 * calling thread too: for work of a few microseconds, where waking an
 * OpenMP team costs what it saves (sn_helper.c). Both in the flush-to-zero
 * mode; returns the first status other than SN_OK. */
int sn_run_pair(sn_unit_fn fn, const void *ctx);
/* sn_run_pair where ctx is a flat value of ctx_size bytes: no pointer in it
 * is followed into ctx itself, and the halves write only through pointers
 * it holds.
 * Up to SN_PAIR_COPY_MAX bytes, the helper runs fn on a copy sent with the
 * offer (sn_helper.c), the caller on ctx itself; larger, as sn_run_pair. */
#define SN_PAIR_COPY_MAX 128
int sn_run_pair_copy(sn_unit_fn fn, const void *ctx, size_t ctx_size);
/* For tests: forget the contention seen so far (its back-off; 0 if a call
 * was in progress and nothing was done), and the halves the helper ran. */
int sn_pair_forget(void);
int sn_pair_halves_helped(void);
/* For tests: whether a thread holds the pair (is making a pair call). */
int sn_pair_flag_taken(void);
/* Wakes the helper if it sleeps (a pair is about to be timed). */
void sn_pair_wake(void);
/* Whether a GEMM of M x N x K worth a pair offers its second half now
 * (sn_pair_choice.c: each shape timed both ways now and then); after the
 * call, sn_pair_end with the same record. */
typedef struct {
    int shape, paired, timed, decide, helped;
    double start;
} sn_pair_call;
int sn_pair_begin(int64_t M, int64_t N, int64_t K, sn_pair_call *call);
void sn_pair_end(const sn_pair_call *call);
int sn_pair_timed_calls(void); /* calls timed so far (tests) */
/* The run-time choice's rule (sn_pair_choice.c), on a cycle's timed calls
 * in nanoseconds (sorted in place): 1 if the rest of the cycle goes paired */
int sn_pair_prefers_paired(int *alone_ns, int n_alone, int *paired_ns, int n_paired);
/* seconds on a monotonic clock (0 where there is none) */
double sn_seconds_now(void);

/* At most cap threads for the parallel regions the calling thread starts
 * (0: no cap), until changed: a caller that has found its steps faster
 * alone (sn_mlp.c) runs them alone without changing the thread count other
 * threads see. */
void sn_cap_threads(int cap);

/* One step of the fused trainer, every layer split by its inputs into
 * SN_STEP_PARTS parts (sn_mlp_step.c). begin picks the strips; forward
 * first makes pending's update from the gradients the step before left (if
 * pending is not NULL: as optimize does, counters advanced), then gathers
 * the batch's rows (order[0..M)) of X and labels, runs the forward
 * pass and the loss (each part's sum in loss[p], correct[p]; finite[p] = 0
 * if its logits were not finite, and then no loss gradient); backward makes
 * every gradient (check: then SN_ENONFINITE if one is not finite); optimize
 * steps every parameter once and advances the optimizer's counters. */
#define SN_STEP_PARTS 2
typedef struct {
    int strips;               /* units = SN_STEP_PARTS * strips */
    int parallel;             /* 0: the step is too small for the threads */
    double loss[SN_STEP_PARTS];
    int64_t correct[SN_STEP_PARTS];
    int finite[SN_STEP_PARTS];
} sn_mlp_step;
void sn_mlp_step_begin(sn_mlp_step *st, const sn_mlp *net, int64_t M);
int sn_mlp_step_forward(sn_mlp_step *st, const sn_mlp *net, sn_optim_cfg *pending,
                        const float *X, const int64_t *labels, const int64_t *order, int64_t M,
                        int64_t batch, uint64_t first_row, float scale);
int sn_mlp_step_backward(const sn_mlp_step *st, const sn_mlp *net, int64_t M, int check);
int sn_mlp_step_optimize(const sn_mlp_step *st, const sn_mlp *net, sn_optim_cfg *opt);
#ifdef SN_STEP_PROFILE
#include <stdio.h>
/* Built with -DSN_STEP_PROFILE only: prints to out (if not NULL) each
 * phase's region wall time and its units' busy times, per step, since the
 * last call, and starts over; returns the steps counted. */
int64_t sn_step_profile_report(FILE *out);
#endif

/* The trainer's choice of threads (sn_mlp.c): before a full step, caps the
 * calling thread's threads for it; after, records how long it took. */
void sn_team_before_step(const sn_team_choice *t);
void sn_team_after_step(sn_team_choice *t, double seconds);
#ifdef _OPENMP
#include <omp.h>
#define SN_NOW() omp_get_wtime()
#else
#define SN_NOW() 0.0
#endif

/* the kernel of the ISA chosen at run time (sn_runtime.c) */
/* the kernel of an ISA (NULL for one this build does not have) */
const sn_gemm_kernel_info *sn_gemm_kernel_for(int isa);

/* ---- cache blocks (sn_blocking.c) ---- */
typedef struct {
    int64_t l1d, l2, l3;        /* bytes (l3 0: none reported) */
    int l2_sharing, l3_sharing; /* logical CPUs sharing each */
    const char *source;         /* "cpuid", "sysconf" or "defaults" */
} sn_cache_info;
void sn_cache_sizes(sn_cache_info *out);

typedef struct {
    int64_t kc, mc, nc; /* kc x nr panel of B in L1, mc x kc of A in L2, kc x nc of B in L3 */
    int tuned;          /* mc and nc set by the tuner (else derived from the caches) */
    int panel_ways;     /* lines of a panel read in place that one L1 set may hold */
    int64_t l1d;        /* bytes of L1 data cache */
} sn_gemm_blocks;
/* a kernel and the blocks it runs with, read once per GEMM call */
typedef struct {
    const sn_gemm_kernel_info *ki;
    sn_gemm_blocks blocks;
} sn_gemm_plan;
sn_gemm_plan sn_gemm_plan_for(int isa);
sn_gemm_plan sn_active_gemm_plan(void); /* of sn_get_isa() */

/* sn_gemm_serial_f32 (with the plan given, the same for every caller) by
 * several threads at once: each that calls it with the same arguments and
 * counter (from 0) computes the column panels of C it claims from
 * claims->next and returns when none are left for it, so that a thread
 * done with its own work takes what another has not begun (sn_mlp_step.c).
 * Every element is computed as the serial call computes it. Panels are
 * claimed where the product is one block of rows, of columns and of the
 * shared dimension with B's panels packed as they are used; otherwise the
 * first claim takes the whole product. A helper (claims->helping) takes a
 * panel only while two or more are left, and never the whole product: the
 * product's own thread, on data in its own cache, makes the last (one
 * image's 32 x 128 x 392 at batch 32 was slower taken). A call that fails
 * (SN_ENOMEM) claims nothing. claims NULL: the whole product. */
typedef struct {
    sn_atomic_int *next;
    int helping;
} sn_claims;
int sn_gemm_claimed_f32(const sn_gemm_plan *plan, int trans_a, int trans_b, int64_t M,
                        int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                        const sn_epilogue *ep, const sn_claims *claims);

#ifdef SN_X86_64
void sn_cpuid(unsigned leaf, unsigned sub, unsigned r[4]);
#endif

#endif
