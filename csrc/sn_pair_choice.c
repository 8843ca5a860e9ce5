/* Whether a GEMM worth a pair (one image through a layer: sn_gemm.c,
 * pair_worth) offers its second half to the helper thread now, timed at
 * run time.
 *
 * Two threads beat one only while a cache line crosses between their CPUs
 * quickly: the offer, the helper's claim and its half's result each cross
 * once. On a 2-vCPU VM (AMD EPYC Zen 5) the round trip was 85-140 ns for
 * minutes, then 400-420 ns for minutes (the host moves the vCPUs): one image
 * through 784-128-10 took 1.70 us paired against 2.03 alone, then 2.8
 * against 2.07 (the offer 0.27 us, the wait 0.56, reading the result 0.22).
 * A choice made once, as the tuner makes it, is right only until the next
 * move. So each shape of call (M x N x K, a few kept at once) is timed both
 * ways now and then: in each cycle of SN_PAIR_CYCLE calls of that shape the
 * first SN_PAIR_ALONE_TRIALS run alone, the next SN_PAIR_PAIRED_TRIALS
 * paired (counted only where the helper ran its half: a helper asleep when
 * the cycle began may take a few hundred microseconds to wake), each call
 * timed; the rest of the cycle goes the way whose median call was faster,
 * paired only if the helper took part in SN_PAIR_MIN_COUNTED trials or more
 * (up to SN_PAIR_MAX_EXTRA more blocks of paired trials while it has not).
 * The median, not the fastest call: with the CPUs far apart a paired call
 * varies most, and its fastest (1.82 us against 1.69 alone) said little of
 * the others (a call paired took 0.7 us longer than one alone on the whole).
 * The trials take blocks, not turns: a call alone right after a paired one
 * reads the half of the weights the other CPU read (1.7 us alone became
 * 2.2). The helper is woken as the cycle begins. A shape holds its slot
 * until another has missed it SN_PAIR_TAKEOVER times in a row (two shapes
 * that share a slot and take turns, one image then two, would otherwise
 * reset each other's cycle at every call, and time every call alone);
 * meanwhile the other goes alone. Either way gives the same bits
 * (sn_gemm.c): the choice changes the speed only. Several threads at once,
 * or shapes taking over a slot, may mistime a cycle (a paired call counted
 * for a half the helper ran for another thread; a choice from the times of
 * two shapes): the next cycle times it again. */
/* clock_gettime and CLOCK_MONOTONIC (POSIX 2008) under -std=c11 */
#if !defined(_GNU_SOURCE) && (defined(__linux__) || defined(__unix__))
#define _GNU_SOURCE
#endif
#include "sn_atomic.h"
#include "sn_internal.h"

#define SN_PAIR_SHAPES 8            /* slots for the shapes timed (by a hash) */
#define SN_PAIR_TAKEOVER 64         /* misses in a row before another shape takes a slot */
#define SN_PAIR_CYCLE 4096          /* calls of a shape between two timings */
#define SN_PAIR_ALONE_TRIALS 32     /* at the start of each cycle, */
#define SN_PAIR_PAIRED_TRIALS 64    /* then these (the helper may be waking) */
#define SN_PAIR_SAMPLES SN_PAIR_PAIRED_TRIALS /* times kept of each way, at most */
/* paired trials the helper took part in, at least, for the rest of a
 * cycle to go paired: fewer, and the other CPU is busy (the median of one
 * or two calls would say little) */
#define SN_PAIR_MIN_COUNTED 8
/* blocks of paired trials more, at most, while fewer were counted: waking
 * the helper on an idle vCPU can take hundreds of microseconds, longer than
 * the 96 trials (about 170 us for one image through 784-128-10), and a
 * cycle where it took part in none went alone; the helper, given nothing,
 * slept again by the next cycle (4 in 5 cycles alone in a test loop where
 * it slept between blocks of calls) */
#define SN_PAIR_MAX_EXTRA 8

static sn_atomic_int timing_on = 1; /* 0: always paired (tests) */

int sn_set_pair_timing(int on)
{
    if (on != 0 && on != 1) return SN_EINVAL;
    sn_atomic_store(&timing_on, on);
    return SN_OK;
}

int sn_get_pair_timing(void) { return sn_atomic_load(&timing_on); }

/* the median of n times (the upper one of an even count), sorted into t */
static int median_of(int *t, int n)
{
    for (int i = 1; i < n; ++i) { /* insertion sort: at most 64, once a cycle */
        const int v = t[i];
        int j = i;
        for (; j > 0 && t[j - 1] > v; --j) t[j] = t[j - 1];
        t[j] = v;
    }
    return t[n / 2];
}

int sn_pair_prefers_paired(int *alone_ns, int n_alone, int *paired_ns, int n_paired)
{
    if (n_paired < SN_PAIR_MIN_COUNTED) return 0;
    return n_alone < 1 || median_of(paired_ns, n_paired) < median_of(alone_ns, n_alone);
}

#if (defined(__unix__) || defined(__APPLE__)) && (defined(__GNUC__) || defined(__clang__))
#include <limits.h>
#include <time.h>

typedef struct {
    sn_atomic_int key;       /* the shape's hash (never 0), 0 when unused */
    sn_atomic_int misses;    /* calls of other shapes in a row since this one's last */
    sn_atomic_int calls;     /* of this shape since it took the slot */
    sn_atomic_int kept[2];   /* timed calls kept this cycle, alone [0] and paired [1] */
    sn_atomic_int extra;     /* blocks of paired trials added this cycle */
    sn_atomic_int ns[2][SN_PAIR_SAMPLES]; /* their times, nanoseconds */
    sn_atomic_int paired;    /* the way the rest of the cycle goes */
} pair_shape;

static pair_shape shapes[SN_PAIR_SHAPES];
static sn_atomic_int timed_calls; /* (tests) */

int sn_pair_timed_calls(void) { return sn_atomic_load(&timed_calls); }

double sn_seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t shape_hash(int64_t M, int64_t N, int64_t K)
{
    return ((uint64_t)M * 0x9E3779B97F4A7C15u) ^ ((uint64_t)N * 0xC2B2AE3D27D4EB4Fu) ^
           ((uint64_t)K * 0x165667B19E3779F9u);
}

static void keep_time(pair_shape *s, int way, int ns)
{
    const int at = sn_atomic_fetch_sub(&s->kept[way], -1);
    if (at < SN_PAIR_SAMPLES) sn_atomic_store(&s->ns[way][at], ns);
}

/* way's kept times, copied into t; returns how many */
static int kept_times(pair_shape *s, int way, int *t)
{
    int n = sn_atomic_load(&s->kept[way]);
    n = n < SN_PAIR_SAMPLES ? n : SN_PAIR_SAMPLES;
    for (int i = 0; i < n; ++i) t[i] = sn_atomic_load(&s->ns[way][i]);
    return n;
}

int sn_pair_begin(int64_t M, int64_t N, int64_t K, sn_pair_call *call)
{
    call->timed = 0;
    if (!sn_atomic_load(&timing_on)) return call->paired = 1;
    const uint64_t h = shape_hash(M, N, K);
    const int key = (int)((h >> 33) | 1u); /* non-negative, never 0 */
    pair_shape *s = &shapes[(h >> 8) % SN_PAIR_SHAPES];
    if (sn_atomic_load(&s->key) != key) {
        const int held = sn_atomic_load(&s->key) != 0;
        if (held && sn_atomic_fetch_sub(&s->misses, -1) + 1 < SN_PAIR_TAKEOVER)
            return call->paired = 0; /* another shape's slot: alone */
        sn_atomic_store(&s->key, key); /* taken over */
        sn_atomic_store(&s->calls, 0);
        sn_atomic_store(&s->paired, 0);
    }
    if (sn_atomic_load(&s->misses) != 0) sn_atomic_store(&s->misses, 0);
    const int n = (int)((unsigned)sn_atomic_fetch_sub(&s->calls, -1) % SN_PAIR_CYCLE);
    call->shape = (int)(s - shapes);
    if (n == 0) {
        sn_atomic_store(&s->kept[0], 0);
        sn_atomic_store(&s->kept[1], 0);
        sn_atomic_store(&s->extra, 0);
        sn_pair_wake(); /* awake by the paired trials */
    }
    if (n < SN_PAIR_ALONE_TRIALS + SN_PAIR_PAIRED_TRIALS) {
        call->timed = 1;
        sn_atomic_fetch_sub(&timed_calls, -1);
        call->paired = n >= SN_PAIR_ALONE_TRIALS;
        call->decide = n == SN_PAIR_ALONE_TRIALS + SN_PAIR_PAIRED_TRIALS - 1;
        call->helped = sn_pair_halves_helped();
        call->start = sn_seconds_now();
        return call->paired;
    }
    return call->paired = sn_atomic_load(&s->paired);
}

void sn_pair_end(const sn_pair_call *call)
{
    if (!call->timed) return;
    const double seconds = sn_seconds_now() - call->start;
    pair_shape *s = &shapes[call->shape];
    /* a paired call counts only if the helper ran a half meanwhile */
    if (!call->paired || sn_pair_halves_helped() != call->helped)
        keep_time(s, call->paired, seconds < 1.0 ? (int)(seconds * 1e9) : INT_MAX);
    if (call->decide && sn_atomic_load(&s->kept[1]) < SN_PAIR_MIN_COUNTED &&
        sn_atomic_fetch_sub(&s->extra, -1) < SN_PAIR_MAX_EXTRA) {
        /* too few paired trials counted (the helper may be waking): the
         * next calls are another block of them */
        sn_atomic_fetch_sub(&s->calls, SN_PAIR_PAIRED_TRIALS);
    } else if (call->decide) {
        int alone[SN_PAIR_SAMPLES], paired[SN_PAIR_SAMPLES];
        const int n_alone = kept_times(s, 0, alone), n_paired = kept_times(s, 1, paired);
        sn_atomic_store(&s->paired, sn_pair_prefers_paired(alone, n_alone, paired, n_paired));
    }
}
#else
/* no helper thread here (sn_helper.c): both halves would be this thread's */
double sn_seconds_now(void) { return 0.0; }

int sn_pair_timed_calls(void) { return 0; }

int sn_pair_begin(int64_t M, int64_t N, int64_t K, sn_pair_call *call)
{
    (void)M, (void)N, (void)K;
    call->timed = 0;
    return call->paired = !sn_atomic_load(&timing_on);
}

void sn_pair_end(const sn_pair_call *call) { (void)call; }
#endif
