/* Internal: the optimizers' loops over elements, one copy of each update
 * rule (torch.optim's, docs/formulas.md). sn_optim.c includes this file
 * for the baseline instruction set (SSE2 on x86-64, 4 floats a vector),
 * and on x86-64 again with SN_LOOPS_TARGET = AVX2 (8 floats a vector; Adam
 * over 50,000 weights 38 -> 17-22 us on an AMD EPYC Zen 3, where it was a
 * tenth of a 784-128-10 training step) and AVX-512F (16; the optimizer's
 * part of that step 16.2 -> 14.2 us on an AMD EPYC Zen 5).
 * No multiply and add is contracted into one rounding, on any copy: the
 * AVX2 and AVX-512F targets leave FMA out, and the build turns contraction off
 * (-ffp-contract=off in setup.py; clang would contract by default, and a
 * -march or -mfma in CFLAGS would bring FMA back). So every element gets
 * the same IEEE operations in the same order on every copy, and the same
 * bits (tests/test_optimizers.py checks this).
 *
 * Before including: SN_LOOP(name) (the function's name), SN_LOOPS_TARGET. */

SN_LOOPS_TARGET
static void SN_LOOP(sgd)(float *p, float *buf, const float *g, int64_t n, float lr,
                         float momentum, float dampening, int nesterov, float weight_decay,
                         int first_step)
{
    for (int64_t i = 0; i < n; ++i) {
        float d = with_weight_decay(g[i], p[i], weight_decay);
        if (momentum != 0.0f) {
            /* b <- g on the first step, else mu b + (1 - dampening) g */
            buf[i] = first_step ? d : momentum * buf[i] + (1.0f - dampening) * d;
            d = nesterov ? d + momentum * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}

SN_LOOPS_TARGET
static void SN_LOOP(adagrad)(float *p, float *sum, const float *g, int64_t n, float clr,
                             float eps, float weight_decay)
{
    for (int64_t i = 0; i < n; ++i) {
        const float d = with_weight_decay(g[i], p[i], weight_decay);
        sum[i] += d * d;
        p[i] -= clr * d / (sqrtf(sum[i]) + eps);
    }
}

SN_LOOPS_TARGET
static void SN_LOOP(rmsprop)(float *p, float *v, float *avg, float *buf, const float *g,
                             int64_t n, float lr, float alpha, float eps, float weight_decay,
                             float momentum, int centered)
{
    for (int64_t i = 0; i < n; ++i) {
        const float d = with_weight_decay(g[i], p[i], weight_decay);
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

/* decay: 1 - lr wd for AdamW, else 1; wd: Adam's L2 term, 0 for AdamW;
 * step_size = lr / (1 - beta1^t), inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t) */
SN_LOOPS_TARGET
static void SN_LOOP(adam)(float *p, float *m, float *v, const float *g, int64_t n,
                          float step_size, float inv_sqrt_bc2, float beta1, float beta2,
                          float eps, float decay, float wd)
{
    for (int64_t i = 0; i < n; ++i) {
        p[i] *= decay;
        const float d = with_weight_decay(g[i], p[i], wd);
        m[i] = beta1 * m[i] + (1.0f - beta1) * d;
        v[i] = beta2 * v[i] + (1.0f - beta2) * d * d;
        p[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
    }
}

#undef SN_LOOP
#undef SN_LOOPS_TARGET
