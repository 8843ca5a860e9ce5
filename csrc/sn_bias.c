/* Bias of a dense layer: added to every row forward, summed over rows backward. */
#include "scratchnet.h"

void sn_bias_add_f32(float *y, int64_t ldy, const float *b, int64_t M, int64_t N)
{
    for (int64_t i = 0; i < M; ++i) {
        float *yi = y + i * ldy;
        for (int64_t j = 0; j < N; ++j) yi[j] += b[j];
    }
}

/* Rows are summed in order (i = 0, 1, ...) into db, so the result does not
 * depend on anything but the data. */
void sn_bias_grad_f32(float *db, const float *dy, int64_t lddy, int64_t M, int64_t N,
                      float beta)
{
    for (int64_t j = 0; j < N; ++j) db[j] = beta == 0.0f ? 0.0f : beta * db[j];
    for (int64_t i = 0; i < M; ++i) {
        const float *dyi = dy + i * lddy;
        for (int64_t j = 0; j < N; ++j) db[j] += dyi[j];
    }
}
