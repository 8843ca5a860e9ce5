#include <string.h>

#include "scratchnet.h"

int sn_all_finite_f32(const float *x, int64_t n)
{
    /* A float is NaN or infinite exactly when its 8 exponent bits are all
     * ones; adding one to the exponent field then carries into the sign
     * bit, and only then. Testing the bits (not x - x == 0) keeps the loop
     * in integer vector instructions (and, add, or: three per vector) and
     * free of floating-point exceptions. */
    uint32_t carry = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        memcpy(&bits, x + i, sizeof bits);
        carry |= (bits & 0x7F800000u) + 0x00800000u;
    }
    return !(carry & 0x80000000u);
}
