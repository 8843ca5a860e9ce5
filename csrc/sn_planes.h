/* Internal to csrc/ (pooling, batch norm, augmentation): the loop over
 * independent planes (or channels, or images), split over threads.
 *
 * A plane is always computed whole by one thread, in the same order, so the
 * results do not depend on the thread count. */
#ifndef SN_PLANES_H
#define SN_PLANES_H

#include <stdint.h>

#include "sn_internal.h"

/* Below this many elements touched a second thread costs more than it saves. */
#define SN_PLANES_PARALLEL_MIN ((int64_t)1 << 15)

/* fn(ctx, p) for one plane p; nonzero reports a bad input */
typedef int (*sn_plane_fn)(const void *ctx, int64_t p);

/* one thread's contiguous share of the planes */
typedef struct {
    sn_plane_fn fn;
    const void *ctx;
    int64_t planes, per;
} sn_plane_shares;

static inline int sn_plane_share(const void *ctx, int64_t t)
{
    const sn_plane_shares *s = ctx;
    const int64_t hi = (t + 1) * s->per < s->planes ? (t + 1) * s->per : s->planes;
    int bad = 0;
    for (int64_t p = t * s->per; p < hi; ++p) bad |= s->fn(s->ctx, p);
    return bad;
}

/* fn over planes [0, planes), touching `work` elements in all (it decides
 * whether threads pay); nonzero if any fn was (every plane is still
 * computed). Each thread takes one contiguous share of the planes (so every
 * thread of the team computes, which the C tests' 1 vs 2 threads
 * comparisons rely on), in the caller's floating-point mode. */
static inline int sn_over_planes(sn_plane_fn fn, const void *ctx, int64_t planes, int64_t work)
{
    const int nt = planes < 2 || work < SN_PLANES_PARALLEL_MIN ? 1 : sn_parallel_threads();
    const int64_t shares = planes < nt ? planes : nt;
    const sn_plane_shares s = {fn, ctx, planes, shares > 0 ? (planes + shares - 1) / shares : 0};
    return sn_run_units(sn_plane_share, &s, shares, nt, SN_UNITS_STATIC | SN_UNITS_FP_AS_IS);
}

#endif
