/* Run-time choices: which GEMM micro-kernel this CPU can run, and how many
 * threads the kernels use.
 *
 * An ISA is usable only if the CPU has the instructions (CPUID) AND the OS
 * saves the wider registers on a context switch (XGETBV reads XCR0): a CPU
 * with AVX-512 under an OS that does not enable it must not run it. */
#include "scratchnet.h"
#include "sn_atomic.h"
#include "sn_fpmode.h"
#include "sn_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
#include <pthread.h>
#include <sched.h>
#define SN_FORK_HANDLER 1 /* fork() exists, and OpenMP threads do not survive it */
#else
#define SN_FORK_HANDLER 0
#endif

#ifdef SN_X86_64
#if defined(_MSC_VER)
#include <intrin.h>
void sn_cpuid(unsigned leaf, unsigned sub, unsigned r[4])
{
    int regs[4];
    __cpuidex(regs, (int)leaf, (int)sub);
    for (int i = 0; i < 4; ++i) r[i] = (unsigned)regs[i];
}
static unsigned long long xgetbv0(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
void sn_cpuid(unsigned leaf, unsigned sub, unsigned r[4])
{
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static unsigned long long xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

static int detect_x86(void)
{
    unsigned r[4];
    sn_cpuid(0, 0, r);
    const unsigned max_leaf = r[0];
    if (max_leaf < 7) return SN_ISA_GENERIC;
    sn_cpuid(1, 0, r);
    const int osxsave = (r[2] >> 27) & 1, avx = (r[2] >> 28) & 1, fma = (r[2] >> 12) & 1;
    if (!(osxsave && avx)) return SN_ISA_GENERIC;
    const unsigned long long xcr0 = xgetbv0();
    /* XCR0 bits 1-2: SSE and AVX state; bits 5-7: opmask and the upper zmm */
    const int os_avx = (xcr0 & 0x6) == 0x6, os_avx512 = (xcr0 & 0xE6) == 0xE6;
    sn_cpuid(7, 0, r);
    const int avx2 = (r[1] >> 5) & 1, avx512f = (r[1] >> 16) & 1;
    if (avx512f && fma && os_avx512) return SN_ISA_AVX512;
    if (avx2 && fma && os_avx) return SN_ISA_AVX2;
    return SN_ISA_GENERIC;
}
#endif

/* Settings read by every kernel call, from any thread, and changed by the
 * setters from any thread: atomics (relaxed: nothing else hangs on them).
 * A kernel reads each once per call, so a change made during a call is seen
 * by the next one. -1 and 0 mean "not set yet": sn_runtime_init fills them
 * in, from compare-and-swap so that it never overwrites a value set first. */
static sn_atomic_int g_best_isa = -1;
static sn_atomic_int g_isa = -1;
static sn_atomic_int g_num_threads = 0; /* 0: not set yet, use sn_max_threads() */

void sn_runtime_init(void)
{
    if (sn_atomic_load(&g_best_isa) < 0) {
#ifdef SN_X86_64
        sn_atomic_cas(&g_best_isa, -1, detect_x86());
#else
        sn_atomic_cas(&g_best_isa, -1, SN_ISA_GENERIC);
#endif
    }
    sn_atomic_cas(&g_isa, -1, sn_atomic_load(&g_best_isa));
    /* OMP_NUM_THREADS may ask for more than SN_MAX_THREADS: capped as
     * sn_set_num_threads caps (5000 started 5000 threads) */
    const int omp = sn_max_threads();
    sn_atomic_cas(&g_num_threads, 0, omp > SN_MAX_THREADS ? SN_MAX_THREADS : omp);
}

/* A setting, after sn_runtime_init if the program has not called it (a C
 * program may not: the Python module does at import). */
static int setting(sn_atomic_int *v, int unset)
{
    int value = sn_atomic_load(v);
    if (value == unset) {
        sn_runtime_init();
        value = sn_atomic_load(v);
    }
    return value;
}

int sn_isa_best(void) { return setting(&g_best_isa, -1); }

int sn_isa_supported(int isa) { return isa >= SN_ISA_GENERIC && isa <= sn_isa_best(); }

int sn_set_isa(int isa)
{
    if (!sn_isa_supported(isa)) return SN_EINVAL;
    sn_atomic_store(&g_isa, isa);
    return SN_OK;
}

int sn_get_isa(void) { return setting(&g_isa, -1); }

const char *sn_isa_name(int isa)
{
    switch (isa) {
    case SN_ISA_GENERIC: return "generic";
    case SN_ISA_AVX2: return "avx2";
    case SN_ISA_AVX512: return "avx512";
    default: return "unknown";
    }
}

const sn_gemm_kernel_info *sn_gemm_kernel_for(int isa)
{
    switch (isa) {
#ifdef SN_ARM64
    case SN_ISA_GENERIC: return &sn_gemm_kernel_neon;
#else
    case SN_ISA_GENERIC: return &sn_gemm_kernel_generic;
#endif
#ifdef SN_X86_64
    case SN_ISA_AVX2: return &sn_gemm_kernel_avx2;
    case SN_ISA_AVX512: return &sn_gemm_kernel_avx512;
#endif
    default: return NULL;
    }
}

int sn_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int sn_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void sn_set_num_threads(int n)
{
    sn_atomic_store(&g_num_threads, n < 1 ? 1 : n > SN_MAX_THREADS ? SN_MAX_THREADS : n);
}

/* ---- fork() after threads ----
 * GNU OpenMP keeps its team of threads across regions; a child of fork()
 * has the team's bookkeeping but none of its threads, and its next parallel
 * region waits for them forever (multiprocessing's default start method on
 * Linux forks). The first region that starts threads registers a handler
 * that marks such a child, and the child runs every region in the calling
 * thread. A process forked before any region starts its own team. */
static sn_atomic_int g_threads_started = 0, g_forked_after_threads = 0;

#if SN_FORK_HANDLER
static void mark_forked_child(void)
{
    if (sn_atomic_load(&g_threads_started)) sn_atomic_store(&g_forked_after_threads, 1);
}
static void register_fork_handler(void) { pthread_atfork(NULL, NULL, mark_forked_child); }
static void note_threads_started(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handler);
    sn_atomic_store(&g_threads_started, 1);
}
#else
static void note_threads_started(void) { sn_atomic_store(&g_threads_started, 1); }
#endif

int sn_forked_after_threads(void) { return sn_atomic_load(&g_forked_after_threads); }

int sn_get_num_threads(void)
{
    return sn_forked_after_threads() ? 1 : setting(&g_num_threads, 0);
}

/* ---- how far apart the threads are ----
 * A cache line's round trip between two of the library's threads, in
 * nanoseconds: they pass a counter back and forth, each waiting (spinning,
 * no pause, which would add its own tens of nanoseconds) for the other's
 * increment, `rounds` times a run; the median of SN_ROUND_TRIP_RUNS runs
 * after an untimed one, over rounds. Benchmarks print it beside their
 * figures: the project's 2-vCPU virtual machine has its vCPUs close (80-140
 * ns) or far apart (350-430 ns) by the host's placement, which changes from
 * minute to minute, and a 784-512-256-10 training step took 750 or 930 us
 * accordingly (README, "The late afternoon of 2026-11-28"). A wait that
 * lasts SN_ROUND_TRIP_YIELD_SPINS spins yields the CPU: with more busy
 * threads than CPUs the other side may need this one to run, and a round
 * trip then costs a switch between threads (microseconds) instead of the
 * OS's time slice (milliseconds: 20000 rounds took minutes). So it is the
 * round trip the threads see: on a busy machine a higher one than the
 * placement alone gives (the benchmarks also print how busy other
 * processes kept the CPUs). The counter carries no data: relaxed loads and
 * stores, the same plain instructions on every compiler (MSVC's acquire
 * load is a locked instruction that would take the line from the sender).
 * -1 when it cannot be measured: fewer than two threads (a build without
 * OpenMP, a thread count of 1, a process forked after the threads started,
 * a team OpenMP gave fewer), one side waited over SN_ROUND_TRIP_PATIENCE
 * seconds for the other (the OS ran something else on its CPU), the whole
 * took over SN_ROUND_TRIP_BUDGET seconds, or rounds is outside
 * [SN_ROUND_TRIP_MIN_ROUNDS, SN_ROUND_TRIP_MAX_ROUNDS] (fewer rounds would
 * count the clock's own readings in the figure). */
#define SN_ROUND_TRIP_RUNS 5
#define SN_ROUND_TRIP_PATIENCE 0.1
#define SN_ROUND_TRIP_BUDGET 1.0
#define SN_ROUND_TRIP_MIN_ROUNDS 100
#define SN_ROUND_TRIP_MAX_ROUNDS (1 << 20)
#define SN_ROUND_TRIP_YIELD_SPINS 4096 /* a few microseconds: never in a true round trip */

typedef struct {
    _Alignas(64) sn_atomic_int ball; /* thread 0 makes it odd, thread 1 even */
    _Alignas(64) sn_atomic_int gave_up;
    double deadline; /* the clock's reading past which both give up */
} round_trip_court;

static void give_the_cpu_away(void)
{
#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
    sched_yield();
#endif
}

/* 1 once the ball is `value`; 0 if either side gave up waiting */
static int wait_for_ball(round_trip_court *c, int value)
{
    /* the clock is read only once the wait has lasted 1024 spins (reading it
     * each time added its own time to every round trip) */
    double start = -1.0;
    for (unsigned spins = 1; sn_atomic_load(&c->ball) != value; ++spins) {
        if (spins % 1024) continue;
        if (sn_atomic_load(&c->gave_up)) return 0;
        const double now = SN_NOW();
        if (start < 0.0) start = now;
        if (now - start > SN_ROUND_TRIP_PATIENCE || now > c->deadline) {
            sn_atomic_store(&c->gave_up, 1);
            return 0;
        }
        if (spins >= SN_ROUND_TRIP_YIELD_SPINS) give_the_cpu_away();
    }
    return 1;
}

double sn_thread_round_trip_ns(int64_t rounds)
{
#ifdef _OPENMP
    if (rounds < SN_ROUND_TRIP_MIN_ROUNDS || rounds > SN_ROUND_TRIP_MAX_ROUNDS ||
        sn_get_num_threads() < 2)
        return -1.0;
    note_threads_started();
    round_trip_court court = {0, 0, SN_NOW() + SN_ROUND_TRIP_BUDGET};
    double seconds[SN_ROUND_TRIP_RUNS + 1];
    int teamed = 0;
#pragma omp parallel num_threads(2)
    if (omp_get_num_threads() == 2) {
        const int first = omp_get_thread_num() == 0;
        if (first) teamed = 1;
        int value = 0; /* the ball's next values, the same sequence on both sides */
        for (int run = 0; run <= SN_ROUND_TRIP_RUNS && !sn_atomic_load(&court.gave_up); ++run) {
            const double t0 = SN_NOW();
            for (int64_t r = 0; r < rounds; ++r) {
                /* thread 0 serves 2r + 1 and waits for 2r + 2; thread 1 the other way */
                if (first) sn_atomic_store(&court.ball, ++value);
                if (!wait_for_ball(&court, ++value)) break;
                if (!first) sn_atomic_store(&court.ball, ++value);
            }
            if (first) seconds[run] = SN_NOW() - t0;
            if (first && SN_NOW() > court.deadline) sn_atomic_store(&court.gave_up, 1);
        }
    }
    if (!teamed || sn_atomic_load(&court.gave_up)) return -1.0;
    /* the timed runs: all but the first */
    return sn_median(seconds + 1, SN_ROUND_TRIP_RUNS) / (double)rounds * 1e9;
#else
    (void)rounds;
    return -1.0;
#endif
}

/* ---- back-off under contention ----
 * A parallel region ends when every thread of the team has arrived. If the
 * OS has given another program the second core, the caller waits for a
 * thread that is not running, once per region: a training step of a few
 * hundred microseconds can take milliseconds. The regions here hand work
 * out dynamically, so a thread that runs does the work of one that does not;
 * what is left is the wait at the end. When a region's wall time is far
 * above what its work needed spread over the team, the next regions run in
 * the calling thread alone for a while (longer after each repeat), then
 * threads are tried again. The thread count never changes a result.
 * Calls from several threads share the two counters (atomics, relaxed): a
 * lost update only makes a back-off a little longer or shorter. */
static sn_atomic_int g_serial_left = 0;   /* regions still to run serially */
static sn_atomic_int g_backoff = 16;      /* the length of the next back-off */
static sn_atomic_int g_backoff_on = 1;    /* 0: never back off (sn_parallel_backoff) */

static SN_THREAD_LOCAL int g_thread_cap; /* sn_cap_threads: 0, no cap */

void sn_cap_threads(int cap) { g_thread_cap = cap > 0 ? cap : 0; }

int sn_parallel_threads(void)
{
    /* decremented only when seen positive, so racing callers take it below
     * 0 by at most their number, and it never wraps around */
    if (sn_atomic_load(&g_serial_left) > 0 && sn_atomic_fetch_sub(&g_serial_left, 1) > 0)
        return 1;
    const int n = sn_get_num_threads();
    return g_thread_cap > 0 && n > g_thread_cap ? g_thread_cap : n;
}

void sn_parallel_done(double wall, double work, int nthreads)
{
    if (nthreads < 2 || !sn_atomic_load(&g_backoff_on)) return;
    const int backoff = sn_atomic_load(&g_backoff);
    /* a thread the OS has descheduled costs a time slice (milliseconds);
     * waking one that slept costs tens of microseconds, and is no reason */
    if (wall > 2.0 * work / nthreads + 250e-6) {
        sn_atomic_store(&g_serial_left, backoff);
        if (backoff < 4096) sn_atomic_store(&g_backoff, 2 * backoff);
    } else if (backoff > 16) {
        sn_atomic_store(&g_backoff, backoff / 2);
    }
}

/* unit u, timed into *work; a failure kept in *failed */
static void run_unit(sn_unit_fn fn, const void *ctx, int64_t u, int flags, double *work,
                     int *failed)
{
    const double t0 = SN_NOW();
    const unsigned fp = flags & SN_UNITS_FP_AS_IS ? 0 : sn_fp_enter();
    const int status = fn(ctx, u);
    if (!(flags & SN_UNITS_FP_AS_IS)) sn_fp_leave(fp);
    *work += SN_NOW() - t0;
    if (status != SN_OK) {
#ifdef _OPENMP
#pragma omp critical(sn_run_units_status)
#endif
        *failed = status;
    }
}

int sn_run_units(sn_unit_fn fn, const void *ctx, int64_t units, int nthreads, int flags)
{
    int failed = SN_OK;
    if (nthreads > units) nthreads = units > 1 ? (int)units : 1;
    if (sn_forked_after_threads()) nthreads = 1;
    if (nthreads < 2) {
        const unsigned fp = flags & SN_UNITS_FP_AS_IS ? 0 : sn_fp_enter();
        for (int64_t u = 0; u < units && failed == SN_OK; ++u) failed = fn(ctx, u);
        if (!(flags & SN_UNITS_FP_AS_IS)) sn_fp_leave(fp);
        return failed;
    }
    if (!sn_atomic_load(&g_threads_started)) note_threads_started();
    double work = 0.0;
    const double t_start = SN_NOW();
    (void)t_start;
    /* static: thread t takes the same units call after call (its data stays
     * in its core's cache, and every thread of the team computes); dynamic:
     * units go to whichever thread is free, so one that runs does the work
     * of one the OS has descheduled */
    if (flags & SN_UNITS_STATIC) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) reduction(+ : work)
#endif
        for (int64_t u = 0; u < units; ++u) run_unit(fn, ctx, u, flags, &work, &failed);
    } else {
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) reduction(+ : work)
#endif
        for (int64_t u = 0; u < units; ++u) run_unit(fn, ctx, u, flags, &work, &failed);
    }
    sn_parallel_done(SN_NOW() - t_start, work, nthreads);
    return failed;
}

int sn_team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

void sn_parallel_backoff(int on)
{
    sn_atomic_store(&g_backoff_on, on != 0);
    sn_atomic_store(&g_serial_left, 0);
    sn_atomic_store(&g_backoff, 16);
}

const char *sn_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
#define SN_STR2(x) #x
#define SN_STR(x) SN_STR2(x)
    return "msvc " SN_STR(_MSC_VER);
#else
    return "unknown";
#endif
}
