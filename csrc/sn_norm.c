/* Batch normalisation over (N, C, S) float32 (S = H * W for images, 1 for
 * features), forward and backward side by side. Channel c's n = N * S values
 * are x[b, c, s]. Each channel is computed whole by one thread, its sums in
 * double in a fixed order, so any thread count gives the same bits. */
#include <math.h>
#include <stdint.h>

#include "scratchnet.h"
#include "sn_planes.h"

typedef struct {
    float *y;                 /* forward: y; backward: dx */
    float *mean, *invstd;     /* per channel: the statistics y was made with */
    float *r_mean, *r_var;    /* running statistics (training forward updates) */
    float *dgamma, *dbeta;
    const float *x, *dy, *gamma, *beta;
    int64_t N, C, S;
    double eps, momentum;
} norm_call;

/* fn (an sn_plane_fn taking a norm_call) over the channels */
static void over_channels(sn_plane_fn fn, const norm_call *c)
{
    sn_over_planes(fn, c, c->C, c->N * c->C * c->S);
}

/* y = x * scale + shift over channel ch, scale = gamma invstd, shift = beta - mean scale */
static void normalise(const norm_call *c, int64_t ch, double mean, double invstd)
{
    const double scale = (double)c->gamma[ch] * invstd;
    const float fscale = (float)scale, fshift = (float)((double)c->beta[ch] - mean * scale);
    for (int64_t b = 0; b < c->N; ++b) {
        const float *xb = c->x + (b * c->C + ch) * c->S;
        float *yb = c->y + (b * c->C + ch) * c->S;
        for (int64_t s = 0; s < c->S; ++s) yb[s] = xb[s] * fscale + fshift;
    }
    c->mean[ch] = (float)mean;
    c->invstd[ch] = (float)invstd;
}

/* mu = sum x / n, var = sum (x - mu)^2 / n (two passes, in double);
 * running: r_mean <- (1 - m) r_mean + m mu, r_var <- (1 - m) r_var + m var n / (n - 1) */
static int train_channel(const void *ctx, int64_t ch)
{
    const norm_call *c = ctx;
    const int64_t n = c->N * c->S;
    double sum = 0.0;
    for (int64_t b = 0; b < c->N; ++b) {
        const float *xb = c->x + (b * c->C + ch) * c->S;
        for (int64_t s = 0; s < c->S; ++s) sum += xb[s];
    }
    const double mu = sum / (double)n;
    double ss = 0.0;
    for (int64_t b = 0; b < c->N; ++b) {
        const float *xb = c->x + (b * c->C + ch) * c->S;
        for (int64_t s = 0; s < c->S; ++s) ss += ((double)xb[s] - mu) * ((double)xb[s] - mu);
    }
    const double var = ss / (double)n;
    normalise(c, ch, mu, 1.0 / sqrt(var + c->eps));
    if (c->r_mean) {
        const double m = c->momentum;
        c->r_mean[ch] = (float)((1.0 - m) * c->r_mean[ch] + m * mu);
        c->r_var[ch] = (float)((1.0 - m) * c->r_var[ch] + m * var * (double)n / (double)(n - 1));
    }
    return 0;
}

static int eval_channel(const void *ctx, int64_t ch)
{
    const norm_call *c = ctx;
    normalise(c, ch, c->r_mean[ch], 1.0 / sqrt((double)c->r_var[ch] + c->eps));
    return 0;
}

int sn_batchnorm_forward_f32(float *y, float *save_mean, float *save_invstd, float *running_mean,
                             float *running_var, const float *x, const float *gamma,
                             const float *beta, int64_t N, int64_t C, int64_t S, float eps,
                             float momentum, int training)
{
    if (N < 1 || C < 1 || S < 1 || !(eps > 0.0f) || !(momentum >= 0.0f && momentum <= 1.0f))
        return SN_EINVAL;
    if (training && N * S < 2) return SN_EINVAL;
    if (!training && !(running_mean && running_var)) return SN_EINVAL;
    const norm_call c = {.y = y, .mean = save_mean, .invstd = save_invstd, .r_mean = running_mean,
                         .r_var = running_var, .x = x, .gamma = gamma, .beta = beta, .N = N,
                         .C = C, .S = S, .eps = eps, .momentum = momentum};
    over_channels(training ? train_channel : eval_channel, &c);
    return SN_OK;
}

/* xhat = (x - mean) invstd; dbeta = sum dy; dgamma = sum dy xhat;
 * batch statistics: dx = gamma invstd (dy - dbeta / n - xhat dgamma / n);
 * fixed (running) statistics: dx = gamma invstd dy */
static int backward_channel(const norm_call *c, int64_t ch, int batch_stats)
{
    const int64_t n = c->N * c->S;
    const double mean = c->mean[ch], invstd = c->invstd[ch];
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t b = 0; b < c->N; ++b) {
        const int64_t off = (b * c->C + ch) * c->S;
        for (int64_t s = 0; s < c->S; ++s) {
            sdy += c->dy[off + s];
            sdyx += (double)c->dy[off + s] * (((double)c->x[off + s] - mean) * invstd);
        }
    }
    c->dbeta[ch] = (float)sdy;
    c->dgamma[ch] = (float)sdyx;
    const double k = (double)c->gamma[ch] * invstd;
    const double mdy = batch_stats ? sdy / (double)n : 0.0;
    const double mdyx = batch_stats ? sdyx / (double)n : 0.0;
    for (int64_t b = 0; b < c->N; ++b) {
        const int64_t off = (b * c->C + ch) * c->S;
        for (int64_t s = 0; s < c->S; ++s) {
            const double xhat = ((double)c->x[off + s] - mean) * invstd;
            c->y[off + s] = (float)(k * ((double)c->dy[off + s] - mdy - xhat * mdyx));
        }
    }
    return 0;
}

static int backward_batch(const void *c, int64_t ch) { return backward_channel(c, ch, 1); }
static int backward_fixed(const void *c, int64_t ch) { return backward_channel(c, ch, 0); }

int sn_batchnorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *save_mean, const float *save_invstd,
                              const float *gamma, int64_t N, int64_t C, int64_t S, int training)
{
    if (N < 1 || C < 1 || S < 1) return SN_EINVAL;
    const norm_call c = {.y = dx, .mean = (float *)save_mean, .invstd = (float *)save_invstd,
                         .dgamma = dgamma, .dbeta = dbeta, .x = x, .dy = dy, .gamma = gamma,
                         .N = N, .C = C, .S = S};
    over_channels(training ? backward_batch : backward_fixed, &c);
    return SN_OK;
}
