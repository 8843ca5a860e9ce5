#include <string.h>

#include "scratchnet.h"

int sn_all_finite_f32(const float *x, int64_t n)
{
    /* A float is NaN or infinite exactly when its 8 exponent bits are all
     * ones. Testing the bits (not x - x == 0) keeps the loop in integer
     * vector instructions and free of floating-point exceptions. */
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        memcpy(&bits, x + i, sizeof bits);
        bad |= (bits & 0x7F800000u) == 0x7F800000u;
    }
    return !bad;
}
