/* A dense layer and the activation after it, forward and backward, each one
 * GEMM with the element-wise work done in its epilogue (sn_gemm.c). */
#include <stddef.h>

#include "scratchnet.h"
#include "sn_internal.h"

static int act_ok(int act, float act_param)
{
    return act >= SN_ACT_NONE && act <= SN_ACT_TANH &&
           (act != SN_ACT_LEAKY_RELU || act_param >= 0.0f);
}

int sn_dense_forward_f32(float *y, const float *x, const float *W, const float *b, int64_t M,
                         int64_t K, int64_t N, int act, float act_param)
{
    if (!act_ok(act, act_param)) return SN_EINVAL;
    const sn_epilogue ep = {SN_EPI_BIAS_ACT, act, act_param, b, NULL, NULL, 0};
    /* x's leading dimension: at least 1, as the GEMM requires, when K == 0 */
    return sn_gemm_epi_f32(0, 0, M, N, K, 1.0f, x, K > 1 ? K : 1, W, N, 0.0f, y, N, &ep);
}

int sn_dense_backward_f32(float *dW, float *db, float *dz_below, const float *dz,
                          const float *x_in, const float *W, const float *x, const float *mask,
                          int64_t M, int64_t K, int64_t N, int act_below, float act_param,
                          float beta)
{
    if (!act_ok(act_below, act_param)) return SN_EINVAL;
    /* W is read by the second GEMM only: check it before the first writes */
    if (dz_below && !W && M > 0 && K > 0 && N > 0) return SN_EINVAL;
    /* dW = x_in^T @ dz  (K x N) */
    int status = sn_gemm_f32(1, 0, K, N, M, 1.0f, x_in, K, dz, N, beta, dW, N);
    if (status != SN_OK) return status;
    if (db) sn_bias_grad_f32(db, dz, N, M, N, beta);
    if (!dz_below) return SN_OK;
    /* dz_below = (dz @ W^T) * mask * act'(x)  (M x K) */
    const sn_epilogue ep = {SN_EPI_DACT, act_below, act_param, NULL, x, mask, K};
    return sn_gemm_epi_f32(0, 1, M, K, N, 1.0f, dz, N, W, N, 0.0f, dz_below, K, &ep);
}
