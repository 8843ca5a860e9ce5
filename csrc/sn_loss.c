/* Losses, forward and backward side by side: the forward kernels return the
 * mean over the batch, sn_xent_train_f32 the sum (see scratchnet.h). Sums
 * are accumulated in double: a batch of 60000 float terms would lose digits
 * otherwise. These kernels run in the caller's floating-point mode (no
 * flush of subnormals). */
#include <math.h>

#include "scratchnet.h"
#include "sn_formulas.h"
#include "sn_internal.h"

int sn_xent_forward_f32(double *loss, float *probs, const float *z, const int64_t *labels,
                        int64_t M, int64_t N)
{
    if (M <= 0 || N <= 0) return SN_EINVAL;
    for (int64_t i = 0; i < M; ++i)
        if (labels[i] < 0 || labels[i] >= N) return SN_EINVAL;
    double total = 0.0;
    for (int64_t i = 0; i < M; ++i) {
        const float *zi = z + i * N;
        total += sn_softmax_row_f32(probs + i * N, zi, N) - zi[labels[i]];
    }
    *loss = total / (double)M;
    return isfinite(*loss) ? SN_OK : SN_ENONFINITE;
}

int sn_xent_backward_f32(float *dz, const float *probs, const int64_t *labels, int64_t M,
                         int64_t N, float scale)
{
    for (int64_t i = 0; i < M; ++i)
        if (labels[i] < 0 || labels[i] >= N) return SN_EINVAL;
    for (int64_t i = 0; i < M; ++i) {
        const float *pi = probs + i * N;
        float *di = dz + i * N;
        for (int64_t j = 0; j < N; ++j) di[j] = pi[j] * scale;
        di[labels[i]] -= scale;
    }
    return SN_OK;
}

int sn_xent_soft_forward_f32(double *loss, float *probs, const float *z, const float *T,
                             int64_t M, int64_t N)
{
    if (M <= 0 || N <= 0) return SN_EINVAL;
    double total = 0.0;
    for (int64_t i = 0; i < M; ++i) {
        const float *zi = z + i * N, *ti = T + i * N;
        const double lse = sn_softmax_row_f32(probs + i * N, zi, N);
        for (int64_t j = 0; j < N; ++j) total += (double)ti[j] * (lse - zi[j]);
    }
    *loss = total / (double)M;
    return isfinite(*loss) ? SN_OK : SN_ENONFINITE;
}

/* d/dz_ij of sum_k T_ik (lse_i - z_ik) is S_i softmax_ij - T_ij, S_i the
 * row's target mass (1 for a distribution: then probs - T exactly, as S_i
 * = 1 multiplies nothing) */
void sn_xent_soft_backward_f32(float *dz, const float *probs, const float *T, int64_t M,
                               int64_t N, float scale)
{
    for (int64_t i = 0; i < M; ++i) {
        const float *pi = probs + i * N, *ti = T + i * N;
        float *di = dz + i * N;
        double mass = 0.0;
        for (int64_t j = 0; j < N; ++j) mass += ti[j];
        const float s = (float)mass;
        for (int64_t j = 0; j < N; ++j) di[j] = (s * pi[j] - ti[j]) * scale;
    }
}

int sn_mse_forward_f32(double *loss, const float *p, const float *t, int64_t n)
{
    if (n <= 0) return SN_EINVAL;
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const double d = (double)p[i] - t[i];
        total += d * d;
    }
    *loss = total / (double)n;
    return isfinite(*loss) ? SN_OK : SN_ENONFINITE;
}

void sn_mse_backward_f32(float *dp, const float *p, const float *t, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; ++i) dp[i] = (p[i] - t[i]) * scale;
}

int sn_bce_logits_forward_f32(double *loss, const float *z, const float *t, int64_t n)
{
    if (n <= 0) return SN_EINVAL;
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const double zi = z[i];
        /* max(z, 0) - z t + log(1 + exp(-|z|)): finite for any finite z */
        total += (zi > 0.0 ? zi : 0.0) - zi * t[i] + log1p(exp(-fabs(zi)));
    }
    *loss = total / (double)n;
    return isfinite(*loss) ? SN_OK : SN_ENONFINITE;
}

void sn_bce_logits_backward_f32(float *dz, const float *z, const float *t, int64_t n,
                                float scale)
{
    for (int64_t i = 0; i < n; ++i) dz[i] = (sn_sigmoid(z[i]) - t[i]) * scale;
}

int sn_xent_train_f32(double *loss, int64_t *correct, float *dz, const float *z,
                      const int64_t *labels, int64_t M, int64_t N, float scale)
{
    if (M <= 0 || N <= 0) return SN_EINVAL;
    for (int64_t i = 0; i < M; ++i)
        if (labels[i] < 0 || labels[i] >= N) return SN_EINVAL;
    double total = 0.0;
    int64_t right = 0;
    for (int64_t i = 0; i < M; ++i) {
        const float *zi = z + i * N;
        float *di = dz + i * N;
        int64_t best = 0;
        for (int64_t j = 1; j < N; ++j) best = zi[j] > zi[best] ? j : best;
        right += best == labels[i];
        total += sn_softmax_row_f32(di, zi, N) - zi[labels[i]];
        for (int64_t j = 0; j < N; ++j) di[j] *= scale;
        di[labels[i]] -= scale;
    }
    *loss = total;
    *correct = right;
    return isfinite(total) ? SN_OK : SN_ENONFINITE;
}
