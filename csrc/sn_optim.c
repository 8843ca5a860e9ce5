/* Optimizer updates, one pass over a parameter buffer each, following
 * torch.optim's documented algorithms (shared/REFERENCE.md). The gradient
 * buffer is read, never written: weight decay is added to a local copy. */
#include <math.h>

#include "scratchnet.h"

void sn_sgd_step_f32(float *p, float *buf, const float *g, int64_t n, float lr, float momentum,
                     float dampening, int nesterov, float weight_decay, int first_step)
{
    for (int64_t i = 0; i < n; ++i) {
        float d = g[i] + weight_decay * p[i];
        if (momentum != 0.0f) {
            /* b <- g on the first step, else mu b + (1 - dampening) g */
            buf[i] = first_step ? d : momentum * buf[i] + (1.0f - dampening) * d;
            d = nesterov ? d + momentum * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}

void sn_adagrad_step_f32(float *p, float *sum, const float *g, int64_t n, float clr, float eps,
                         float weight_decay)
{
    for (int64_t i = 0; i < n; ++i) {
        const float d = g[i] + weight_decay * p[i];
        sum[i] += d * d;
        p[i] -= clr * d / (sqrtf(sum[i]) + eps);
    }
}

void sn_rmsprop_step_f32(float *p, float *v, float *avg, float *buf, const float *g, int64_t n,
                         float lr, float alpha, float eps, float weight_decay, float momentum,
                         int centered)
{
    for (int64_t i = 0; i < n; ++i) {
        const float d = g[i] + weight_decay * p[i];
        v[i] = alpha * v[i] + (1.0f - alpha) * d * d;
        float var = v[i];
        if (centered) {
            avg[i] = alpha * avg[i] + (1.0f - alpha) * d;
            var -= avg[i] * avg[i];
        }
        const float denom = sqrtf(var) + eps;
        if (momentum > 0.0f) {
            buf[i] = momentum * buf[i] + d / denom;
            p[i] -= lr * buf[i];
        } else {
            p[i] -= lr * d / denom;
        }
    }
}

void sn_adam_step_f32(float *p, float *m, float *v, const float *g, int64_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, int64_t step,
                      int decoupled)
{
    /* bias corrections in double: beta2^t is close to 1 for small t */
    const double bc1 = 1.0 - pow((double)beta1, (double)step);
    const double bc2 = 1.0 - pow((double)beta2, (double)step);
    const float step_size = (float)(lr / bc1);
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float decay = decoupled ? 1.0f - lr * weight_decay : 1.0f;
    const float wd = decoupled ? 0.0f : weight_decay;
    for (int64_t i = 0; i < n; ++i) {
        p[i] *= decay;
        const float d = g[i] + wd * p[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * d;
        v[i] = beta2 * v[i] + (1.0f - beta2) * d * d;
        p[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
    }
}
