/* Optimizer updates, one pass over a parameter buffer each, following
 * torch.optim's documented algorithms (docs/formulas.md). The gradient
 * buffer is read, never written: weight decay is added to a local copy. */
#include <math.h>
#include <stddef.h>

#include "scratchnet.h"
#include "sn_fpmode.h"
#include "sn_internal.h"

/* the gradient with L2 weight decay added: g + wd p, and g itself when wd is
 * 0 (as torch.optim skips the term), so that an infinite parameter stays
 * infinite instead of turning into NaN (0 * inf) */
static inline float with_weight_decay(float g, float p, float wd)
{
    return wd != 0.0f ? g + wd * p : g;
}

double sn_decayed_lr(double lr, double decay, int64_t steps_taken)
{
    /* two statements: a compiler that contracts a * b + c within one
     * expression (clang's default) would make an FMA, which rounds once and
     * can differ from Python's lr / (1 + decay * steps) in the last bit */
    const double d = decay * (double)steps_taken;
    return lr / (1.0 + d);
}

/* the loops, for the baseline instruction set and (x86-64, GCC or clang)
 * for AVX2 and AVX-512; MSVC builds keep the baseline loops only */
#define SN_LOOP(name) name##_baseline
#define SN_LOOPS_TARGET
#include "sn_optim_loops.h"
#if defined(SN_X86_64) && (defined(__GNUC__) || defined(__clang__))
#define SN_HAVE_SIMD_LOOPS 1
#define SN_LOOP(name) name##_avx2
#define SN_LOOPS_TARGET __attribute__((target("avx2")))
#include "sn_optim_loops.h"
#define SN_LOOP(name) name##_avx512
#define SN_LOOPS_TARGET __attribute__((target("avx512f")))
#include "sn_optim_loops.h"
#else
#define SN_HAVE_SIMD_LOOPS 0
#endif

#if SN_HAVE_SIMD_LOOPS
/* the widest copy the CPU has and sn_set_isa has not asked for less (the
 * same bits from each) */
#define SN_DISPATCH(name, ...)                                                \
    (sn_get_isa() >= SN_ISA_AVX512 ? name##_avx512(__VA_ARGS__)               \
     : sn_get_isa() >= SN_ISA_AVX2 ? name##_avx2(__VA_ARGS__)                 \
                                   : name##_baseline(__VA_ARGS__))
#else
#define SN_DISPATCH(name, ...) name##_baseline(__VA_ARGS__)
#endif

void sn_sgd_step_f32(float *p, float *buf, const float *g, int64_t n, float lr, float momentum,
                     float dampening, int nesterov, float weight_decay, int first_step)
{
    const unsigned fp = sn_fp_enter();
    SN_DISPATCH(sgd, p, buf, g, n, lr, momentum, dampening, nesterov, weight_decay, first_step);
    sn_fp_leave(fp);
}

void sn_adagrad_step_f32(float *p, float *sum, const float *g, int64_t n, float clr, float eps,
                         float weight_decay)
{
    const unsigned fp = sn_fp_enter();
    SN_DISPATCH(adagrad, p, sum, g, n, clr, eps, weight_decay);
    sn_fp_leave(fp);
}

void sn_rmsprop_step_f32(float *p, float *v, float *avg, float *buf, const float *g, int64_t n,
                         float lr, float alpha, float eps, float weight_decay, float momentum,
                         int centered)
{
    const unsigned fp = sn_fp_enter();
    SN_DISPATCH(rmsprop, p, v, avg, buf, g, n, lr, alpha, eps, weight_decay, momentum, centered);
    sn_fp_leave(fp);
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
    const unsigned fp = sn_fp_enter();
    SN_DISPATCH(adam, p, m, v, g, n, step_size, inv_sqrt_bc2, beta1, beta2, eps, decay, wd);
    sn_fp_leave(fp);
}

/* ---- one step over a range of a parameter ---- */

/* lr: the step's decayed learning rate; clr: AdaGrad's, decayed again */
static void step_chunk(const sn_optim_cfg *c, const sn_param *q, int64_t lo, int64_t hi,
                       float lr, float clr, int first)
{
    float *p = q->p + lo, *s0 = q->state[0], *s1 = q->state[1], *s2 = q->state[2];
    const float *g = q->g + lo;
    const int64_t n = hi - lo;
    s0 = s0 ? s0 + lo : NULL;
    s1 = s1 ? s1 + lo : NULL;
    s2 = s2 ? s2 + lo : NULL;
    switch (c->kind) {
    case SN_OPT_SGD:
        sn_sgd_step_f32(p, s0, g, n, lr, c->momentum, c->dampening, c->nesterov,
                        c->weight_decay, first);
        break;
    case SN_OPT_ADAGRAD:
        sn_adagrad_step_f32(p, s0, g, n, clr, c->eps, c->weight_decay);
        break;
    case SN_OPT_RMSPROP:
        sn_rmsprop_step_f32(p, s0, s1, s2, g, n, lr, c->alpha, c->eps, c->weight_decay,
                            c->momentum, c->centered);
        break;
    default: /* Adam, AdamW */
        sn_adam_step_f32(p, s0, s1, g, n, lr, c->beta1, c->beta2, c->eps, c->weight_decay,
                         c->step + 1, c->kind == SN_OPT_ADAMW);
        break;
    }
}

/* the step's learning rates and whether it is the first, from the counters */
typedef struct {
    float lr, clr;
    int first;
} step_rates;

static step_rates rates_of(const sn_optim_cfg *cfg)
{
    /* in double, rounded once to float: what the Python optimizers pass */
    const double lr_t = sn_decayed_lr(cfg->lr, cfg->decay, cfg->iterations);
    const step_rates r = {(float)lr_t, (float)sn_decayed_lr(lr_t, cfg->lr_decay, cfg->step),
                          cfg->step == 0};
    return r;
}

static int kind_ok(const sn_optim_cfg *cfg)
{
    return cfg->kind >= SN_OPT_SGD && cfg->kind <= SN_OPT_ADAMW;
}

int sn_optim_step_range(const sn_optim_cfg *cfg, const sn_param *q, int64_t lo, int64_t hi)
{
    if (!kind_ok(cfg) || lo < 0 || hi > q->n || lo > hi) return SN_EINVAL;
    const step_rates r = rates_of(cfg);
    if (hi > lo) step_chunk(cfg, q, lo, hi, r.lr, r.clr, r.first);
    return SN_OK;
}

void sn_optim_step_done(sn_optim_cfg *cfg)
{
    cfg->iterations += 1;
    cfg->step += 1;
}
