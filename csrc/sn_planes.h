/* Internal to csrc/ (pooling, batch norm, augmentation): how many threads a
 * loop over independent planes (or channels, or images) takes, and the
 * counter-based generator the random layers draw from.
 *
 * A plane is always computed whole by one thread, in the same order, so the
 * results do not depend on the thread count. */
#ifndef SN_PLANES_H
#define SN_PLANES_H

#include <stdint.h>

#include "sn_internal.h"

/* Below this many elements touched a second thread costs more than it saves. */
#define SN_PLANES_PARALLEL_MIN ((int64_t)1 << 15)

/* threads for a loop over `items` independent items touching `work` elements */
static inline int sn_plane_threads(int64_t items, int64_t work)
{
    if (items < 2 || work < SN_PLANES_PARALLEL_MIN) return 1;
    const int nt = sn_parallel_threads();
    return (int64_t)nt > items ? (int)items : nt;
}

#endif
