/* Two halves of a short piece of work (a few microseconds: one image
 * through a layer), the second offered to one helper thread.
 *
 * Why not the OpenMP team: a parallel region ends when every thread of the
 * team has arrived, so when another program has the second core the caller
 * waits for a thread the OS is not running, up to a time slice (1 x 784 x 128
 * on two OpenMP threads: 1.15x faster idle, 0.81x with a busy loop on the
 * other core, AMD EPYC Zen 3). Here the caller computes the first half, then
 * takes the second back unless the helper has begun it: it never waits for a
 * helper that is asleep, descheduled or slow to notice, only for one that is
 * computing its half, which is as short as the caller's.
 *
 * The protocol, on one atomic int `state` = sequence << 2 | phase:
 *   the caller writes fn, ctx (and, from sn_run_pair_copy, a copy of ctx:
 *   below), then state = seq | OFFERED (release);
 *   the helper claims with compare-and-swap OFFERED -> BEGUN, only then reads
 *   fn, ctx, computes, writes status, then state = seq | IDLE (release);
 *   the caller, after its half, swaps OFFERED -> IDLE to take the half back;
 *   if that fails the helper has begun, and the caller waits for seq | IDLE.
 * So fn, ctx and the copy are read only by a helper that owns the offer,
 * and the caller writes the next ones only once no one does. A context
 * that is a flat value (sn_run_pair_copy) travels in the lines after the
 * offer's: the helper fetches them at once, where it followed pointers
 * into the caller's stack, two fetches one after the other of lines the
 * caller had just written (1 x 784 x 128 paired, AMD EPYC Zen 5, vCPUs far
 * apart: 2.25-2.54 us a call with the pointer, 1.87-1.90 with the copy,
 * about one core alone; close: 1.36-1.39 / 1.30-1.31). One caller at a
 * time (a flag); another thread's call meanwhile computes both halves
 * itself. A helper that has begun and is then descheduled would hold the
 * caller for a time slice: after such a wait the helper is left alone for
 * a while (longer after each repeat), as sn_parallel_done does for the
 * team. Results do not depend on who computes a half: both run in
 * flush-to-zero, with the default rounding (like the OpenMP workers, the
 * helper does not take up a rounding mode the caller set with fesetround).
 * Without POSIX threads: both halves in the calling thread. */
/* clock_gettime, CLOCK_MONOTONIC (POSIX 2008) and, on Linux, the CPU
 * affinity calls (GNU) under -std=c11; musl declares none of them without */
#if !defined(_GNU_SOURCE) && (defined(__linux__) || defined(__unix__))
#define _GNU_SOURCE
#endif
#include "sn_atomic.h"
#include "sn_fpmode.h"
#include "sn_internal.h"

/* a half, in the library's floating-point mode, as every kernel runs */
static int run_half(sn_unit_fn fn, const void *ctx, int64_t half)
{
    const unsigned fp = sn_fp_enter();
    const int status = fn(ctx, half);
    sn_fp_leave(fp);
    return status;
}

static int both_halves(sn_unit_fn fn, const void *ctx)
{
    const int first = run_half(fn, ctx, 0);
    const int second = run_half(fn, ctx, 1);
    return first != SN_OK ? first : second;
}

#if (defined(__unix__) || defined(__APPLE__)) && (defined(__GNUC__) || defined(__clang__))
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <time.h>

enum { IDLE = 0, OFFERED = 1, BEGUN = 2 }; /* the phase: state & 3 */
enum { NOT_STARTED = 0, STARTING, RUNNING, FAILED };

/* The helper spins this long after its last half before it sleeps: calls one
 * after another (a loop over images) find it awake. */
#define SN_HELPER_SPIN_SECONDS 200e-6
/* Spinning, the helper gives its core away every this many turns; a
 * caller waiting for its half, every this many (about 100 us: a half takes
 * a few, and a system call each time would cost a good part of one). */
#define SN_HELPER_YIELD_EVERY 64
#define SN_HELPER_WAIT_YIELD_EVERY 4096
/* A wait longer than this for a begun half means the helper was descheduled. */
#define SN_HELPER_LATE_SECONDS 100e-6
/* halves taken back in a row that mean the helper has no core of its own */
#define SN_HELPER_MISSES 32
/* halves done on time by the helper in a row before the back-off halves */
#define SN_HELPER_ON_TIME 512
/* halves offered to no one after either: at first, and at most */
#define SN_HELPER_BACKOFF_MIN 64
#define SN_HELPER_BACKOFF_MAX 65536

/* What the callers and the helper both touch, from a line of its own. */
static struct {
    _Alignas(64) sn_atomic_int state;
    sn_atomic_int sleeping, naps;
    sn_atomic_int helped;     /* halves the helper ran (tests) */
    sn_atomic_int caller_cpu; /* the CPU the last caller offered from, or -1 */
    sn_unit_fn fn;   /* the offered half: written by the caller before OFFERED, */
    const void *ctx; /* read by the helper after it took the offer */
    int copied;      /* 1: the helper's ctx is `copy`, not ctx */
    int status;      /* the helper's half's, written before IDLE */
    /* the copy of a flat context, in the lines after the offer's; the half
     * reads it as its context's type (the library is built with
     * -fno-strict-aliasing, and the read is in another file, through a
     * void pointer) */
    _Alignas(64) unsigned char copy[SN_PAIR_COPY_MAX];
    pthread_mutex_t lock;
    pthread_cond_t wake;
} g = {0, 0, 0, 0, -1, NULL, NULL, 0, SN_OK, {0}, PTHREAD_MUTEX_INITIALIZER,
       PTHREAD_COND_INITIALIZER};

/* The callers' own, on a line the helper never writes: taking in_use and
 * the bookkeeping stay in the calling core's cache from call to call (in
 * g, each call's compare-and-swap of in_use first fetched the line the
 * helper had written its half's end to). */
static struct {
    _Alignas(64) sn_atomic_int in_use;
    sn_atomic_int started;
    int skip, backoff, missed, on_time, woken_nap; /* only the holder of in_use */
} callers = {0, 0, 0, SN_HELPER_BACKOFF_MIN, 0, 0, -1};

/* 1 in the thread that holds callers.in_use: after a fork, the child's one
 * thread tells whether the holder came with it (after_fork_in_child) */
static __thread int holding_in_use;

static int take_in_use(void)
{
    if (!sn_atomic_cas(&callers.in_use, 0, 1)) return 0;
    holding_in_use = 1;
    return 1;
}

static void release_in_use(void)
{
    holding_in_use = 0;
    sn_atomic_release(&callers.in_use);
}

/* Sleeps until a half is offered (or a second has passed: a wake-up missed
 * would cost only this helper's turns, never a caller's time). The caller
 * checks `sleeping` after offering; both sides store, then load the other's
 * flag, sequentially consistent, so one of them sees the other. Each sleep
 * is numbered (naps), so a caller wakes each one once. */
static void sleep_until_offered(void)
{
    pthread_mutex_lock(&g.lock);
    /* the nap's number first: a caller that sees sleeping sees this nap */
    sn_atomic_store(&g.naps, (int)(((unsigned)sn_atomic_load(&g.naps) + 1u) & 0x7FFFFFFFu));
    __atomic_store_n(&g.sleeping, 1, __ATOMIC_SEQ_CST);
    if ((__atomic_load_n(&g.state, __ATOMIC_SEQ_CST) & 3) != OFFERED) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&g.wake, &g.lock, &until);
    }
    sn_atomic_store(&g.sleeping, 0);
    pthread_mutex_unlock(&g.lock);
}

/* The CPU this thread runs on, or -1 where that is not known. */
static int this_cpu(void)
{
#if defined(__linux__)
    return sched_getcpu();
#else
    return -1;
#endif
}

/* The helper off the caller's CPU. Placed by the OS, it can land on the
 * caller's: created while the other CPU was busy (another library's threads
 * spinning there), or woken by the caller and put beside it (Linux places
 * a thread woken by another near the waker). There it runs only when the
 * caller yields: the caller takes every half back, and its call is slower
 * than alone (1 x 784 x 128 then 784 x 10 on an AMD EPYC Zen 5, one image:
 * 3.4-3.8 us against 2.45 alone and 2.3 with the helper on the other CPU,
 * for the first ~200 ms after the helper started, until the OS moved it).
 * So when the helper finds itself on the CPU a caller last offered from, it
 * takes that CPU out of its affinity, which moves it to another at once,
 * then gives its affinity back as it was: it never keeps a narrowed mask,
 * so one the user sets later (taskset -a) is the user's. If the OS brings
 * it back beside the caller, it moves again. Linux only. */
#if defined(__linux__) && defined(CPU_COUNT)
static void keep_off_caller_cpu(void)
{
    const int caller = sn_atomic_load(&g.caller_cpu);
    if (caller < 0 || caller >= CPU_SETSIZE || caller != this_cpu()) return;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || !CPU_ISSET(caller, &allowed) ||
        CPU_COUNT(&allowed) < 2)
        return;
    cpu_set_t others = allowed;
    CPU_CLR(caller, &others);
    if (sched_setaffinity(0, sizeof others, &others) == 0)
        sched_setaffinity(0, sizeof allowed, &allowed);
}
#else
static void keep_off_caller_cpu(void) {}
#endif

static void *helper_main(void *unused)
{
    (void)unused;
    keep_off_caller_cpu();
    double idle_since = sn_seconds_now();
    for (unsigned turn = 1;; ++turn) {
        const int s = sn_atomic_load_acquire(&g.state);
        if ((s & 3) == OFFERED && sn_atomic_cas(&g.state, s, (s & ~3) | BEGUN)) {
            g.status = run_half(g.fn, g.copied ? (const void *)g.copy : g.ctx, 1);
            __atomic_fetch_add(&g.helped, 1, __ATOMIC_RELAXED);
            sn_atomic_publish(&g.state, s & ~3); /* IDLE, same sequence */
            idle_since = sn_seconds_now();
        } else if (sn_seconds_now() - idle_since > SN_HELPER_SPIN_SECONDS) {
            sleep_until_offered();
            keep_off_caller_cpu();
            idle_since = sn_seconds_now();
        } else if (turn % SN_HELPER_YIELD_EVERY == 0) {
            keep_off_caller_cpu();
            /* a caller the OS runs on this same core (another program has
             * the other) gets it back: returns at once otherwise */
            sched_yield();
        } else {
            sn_spin_pause();
        }
    }
    return NULL;
}

/* fork(): the lock is taken around it, so the child never holds a copy
 * locked by a thread it does not have. A child has no helper: it starts its
 * own when it needs one. A half offered at the fork (fork() from inside a
 * half, or from a signal handler) is taken back by its caller; one the
 * helper had begun is lost with it: its caller gets SN_ENOMEM, not a wait
 * for a thread that does not exist. Forked by another thread than the one
 * making a pair call, the child has no such caller: the call's offer is
 * dropped and the pair freed for the child's own calls. */
static void before_fork(void) { pthread_mutex_lock(&g.lock); }
static void after_fork_in_parent(void) { pthread_mutex_unlock(&g.lock); }

static void after_fork_in_child(void)
{
    const int s = sn_atomic_load(&g.state);
    if (sn_atomic_load(&callers.in_use) && !holding_in_use) {
        /* the caller that held the pair is not in the child (fork() from
         * another thread): its offer, taken or not, goes with it, or the
         * child's helper would run a half of a call no one makes here
         * (writing into that call's output), and no call here could pair */
        sn_atomic_publish(&g.state, s & ~3);
        sn_atomic_store(&callers.in_use, 0);
    } else if ((s & 3) == BEGUN) {
        g.status = SN_ENOMEM;
        sn_atomic_publish(&g.state, s & ~3);
    }
    sn_atomic_store(&g.sleeping, 0);
    sn_atomic_store(&callers.started, NOT_STARTED);
    pthread_mutex_unlock(&g.lock);
}

static void register_fork_handlers(void)
{
    pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

/* a second CPU this thread may run on (the helper inherits its affinity:
 * under OMP_PROC_BIND the caller is bound to one) */
static int another_cpu(void)
{
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set) > 1;
#endif
    return 1;
}

/* 1 once the helper runs; the first caller starts it */
static int helper_running(void)
{
    const int started = sn_atomic_load_acquire(&callers.started);
    if (started != NOT_STARTED) return started == RUNNING;
    if (!sn_atomic_cas(&callers.started, NOT_STARTED, STARTING)) return 0;
    sn_atomic_store(&g.caller_cpu, this_cpu()); /* the helper starts off it */
    static pthread_once_t fork_handlers = PTHREAD_ONCE_INIT;
    pthread_attr_t attr;
    pthread_t thread;
    int ok = another_cpu() && pthread_once(&fork_handlers, register_fork_handlers) == 0 &&
             pthread_attr_init(&attr) == 0;
    if (ok) {
        /* no signal handler runs on the helper (in the middle of a half) */
        sigset_t all, before;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &before);
        ok = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
             pthread_create(&thread, &attr, helper_main, NULL) == 0;
#if defined(__linux__)
        if (ok) pthread_setname_np(thread, "sn-helper"); /* as top -H and /proc show it */
#endif
        pthread_sigmask(SIG_SETMASK, &before, NULL);
        pthread_attr_destroy(&attr);
    }
    sn_atomic_publish(&callers.started, ok ? RUNNING : FAILED);
    return ok;
}

/* offer nothing for the next callers.backoff calls; twice as many after the next */
static void back_off(void)
{
    callers.skip = callers.backoff;
    if (callers.backoff < SN_HELPER_BACKOFF_MAX) callers.backoff *= 2;
    callers.missed = callers.on_time = 0;
}

int sn_pair_forget(void)
{
    if (!take_in_use()) return 0;
    callers.skip = callers.missed = callers.on_time = 0;
    callers.backoff = SN_HELPER_BACKOFF_MIN;
    release_in_use();
    return 1;
}

int sn_pair_halves_helped(void)
{
    return __atomic_load_n(&g.helped, __ATOMIC_RELAXED);
}

int sn_pair_flag_taken(void) { return sn_atomic_load(&callers.in_use); }

/* Wakes the helper if it sleeps, once each sleep (the holder of in_use);
 * returns whether it was asleep. Only if the lock is free: the helper
 * holds it for a moment around its sleep, and may have been descheduled in
 * that moment; the next call tries again. */
static int wake_once(void)
{
    const int asleep = __atomic_load_n(&g.sleeping, __ATOMIC_SEQ_CST);
    const int nap = sn_atomic_load(&g.naps);
    if (asleep && nap != callers.woken_nap && pthread_mutex_trylock(&g.lock) == 0) {
        pthread_cond_signal(&g.wake);
        pthread_mutex_unlock(&g.lock);
        callers.woken_nap = nap;
    }
    return asleep;
}

void sn_pair_wake(void)
{
    if (sn_atomic_load_acquire(&callers.started) != RUNNING ||
        !take_in_use())
        return;
    wake_once();
    release_in_use();
}

int sn_run_pair_copy(sn_unit_fn fn, const void *ctx, size_t ctx_size)
{
    if (!helper_running() || !take_in_use()) return both_halves(fn, ctx);
    if (callers.skip > 0) {
        --callers.skip;
        release_in_use();
        return both_halves(fn, ctx);
    }
    if (sn_atomic_load_acquire(&g.sleeping) && sn_atomic_load(&g.naps) == callers.woken_nap) {
        /* woken from this sleep, and not up yet: nothing to offer it meanwhile */
        release_in_use();
        return both_halves(fn, ctx);
    }
    g.fn = fn;
    g.ctx = ctx;
    g.copied = ctx_size > 0 && ctx_size <= SN_PAIR_COPY_MAX;
    if (g.copied) memcpy(g.copy, ctx, ctx_size);
    sn_atomic_store(&g.caller_cpu, this_cpu());
    /* IDLE now: only the holder of in_use offers. The next sequence number,
     * wrapping within the non-negative ints. */
    const unsigned idle = (unsigned)sn_atomic_load(&g.state);
    const int offered = (int)(((idle & 0x7FFFFFFCu) + 4u) & 0x7FFFFFFCu) | OFFERED;
    __atomic_store_n(&g.state, offered, __ATOMIC_SEQ_CST);
    /* wake each sleep once: it wakes within tens of microseconds, or, with
     * another program on its core, when the OS runs it (a signal a call
     * would cost each call a system call) */
    const int asleep = wake_once();
    const int first = run_half(fn, ctx, 0);
    int second;
    if (sn_atomic_cas(&g.state, offered, offered & ~3)) {
        second = run_half(fn, ctx, 1); /* the helper had not begun: taken back */
        /* Again and again while awake (waking a thread on an idle vCPU can
         * take hundreds of microseconds here): it is not getting a core of
         * its own (another program has the other one), and while it spins
         * it may take turns with this thread on this one. Leave it alone,
         * so it sleeps. */
        if (!asleep && ++callers.missed == SN_HELPER_MISSES) back_off();
    } else {
        const double t0 = sn_seconds_now();
        for (unsigned turn = 1; sn_atomic_load_acquire(&g.state) != (offered & ~3); ++turn)
            if (turn % SN_HELPER_WAIT_YIELD_EVERY == 0)
                sched_yield(); /* the helper may be waiting for this core */
            else
                sn_spin_pause();
        second = g.status;
        callers.missed = 0;
        if (sn_seconds_now() - t0 > SN_HELPER_LATE_SECONDS) {
            back_off(); /* it was descheduled while computing */
        } else if (callers.on_time < SN_HELPER_ON_TIME) {
            ++callers.on_time;
        } else if (callers.backoff > SN_HELPER_BACKOFF_MIN) {
            callers.backoff /= 2; /* a long run of halves on time: contention has eased */
            callers.on_time = 0;
        }
    }
    release_in_use();
    return first != SN_OK ? first : second;
}

int sn_run_pair(sn_unit_fn fn, const void *ctx) { return sn_run_pair_copy(fn, ctx, 0); }

#else
int sn_pair_forget(void) { return 1; }

void sn_pair_wake(void) {}

int sn_pair_halves_helped(void) { return 0; }

int sn_pair_flag_taken(void) { return 0; }

int sn_run_pair_copy(sn_unit_fn fn, const void *ctx, size_t ctx_size)
{
    (void)ctx_size;
    return both_halves(fn, ctx);
}

int sn_run_pair(sn_unit_fn fn, const void *ctx) { return both_halves(fn, ctx); }
#endif
