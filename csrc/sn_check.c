#include <math.h>

#include "scratchnet.h"

int sn_all_finite_f32(const float *x, int64_t n)
{
    /* x - x is 0 for finite x and NaN for inf or NaN; summing keeps the loop
     * branch-free and vectorizable, and one NaN makes the sum NaN. */
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += x[i] - x[i];
    return acc == 0.0f;
}
