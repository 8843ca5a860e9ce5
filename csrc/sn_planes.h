/* Internal to csrc/ (pooling, batch norm, augmentation): the loop over
 * independent planes (or channels, or images), split over threads.
 *
 * A plane is always computed whole by one thread, in the same order, so the
 * results do not depend on the thread count. */
#ifndef SN_PLANES_H
#define SN_PLANES_H

#include <stdint.h>

#include "sn_internal.h"

/* restrict (C99), as MSVC spells it too */
#define SN_RESTRICT __restrict

/* Below this many elements touched a second thread costs more than it saves. */
#define SN_PLANES_PARALLEL_MIN ((int64_t)1 << 15)

/* fn(ctx, p) for one plane p; nonzero reports a bad input */
typedef int (*sn_plane_fn)(const void *ctx, int64_t p);

/* fn over planes [0, planes), touching `work` elements in all (it decides
 * whether threads pay); returns the OR of fn's results. Each thread takes
 * one contiguous share of the planes (so every thread of the team computes,
 * which the C tests' 1 vs 2 threads comparisons rely on); a parallel run
 * reports its wall and busy times to the contention back-off. */
static inline int sn_over_planes(sn_plane_fn fn, const void *ctx, int64_t planes, int64_t work)
{
    const int nt = planes < 2 || work < SN_PLANES_PARALLEL_MIN ? 1 : sn_parallel_threads();
    int bad = 0;
    if (nt == 1) {
        for (int64_t p = 0; p < planes; ++p) bad |= fn(ctx, p);
        return bad;
    }
    const int64_t shares = planes < nt ? planes : nt;
    const int64_t per = (planes + shares - 1) / shares;
    double busy = 0.0;
    const double t_start = SN_NOW();
    (void)t_start;
#ifdef _OPENMP
#pragma omp parallel for schedule(static, 1) num_threads(nt) reduction(+ : busy) \
    reduction(| : bad)
#endif
    for (int64_t t = 0; t < shares; ++t) {
        const double t0 = SN_NOW();
        const int64_t hi = (t + 1) * per < planes ? (t + 1) * per : planes;
        for (int64_t p = t * per; p < hi; ++p) bad |= fn(ctx, p);
        busy += SN_NOW() - t0;
    }
    sn_parallel_done(SN_NOW() - t_start, busy, nt);
    return bad;
}

#endif
