/* Pooling over NCHW planes, forward and backward side by side (no padding).
 * A batch of N images of C channels is N * C independent H x W planes; each
 * plane is computed whole by one thread, so any thread count gives the same
 * bits. Output size: Ho = (H - kh) / sh + 1, Wo = (W - kw) / sw + 1. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "scratchnet.h"
#include "sn_planes.h"

int sn_pool2d_out_size(int64_t *Ho, int64_t *Wo, int64_t H, int64_t W, int64_t kh, int64_t kw,
                       int64_t sh, int64_t sw)
{
    if (H < 1 || W < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || kh > H || kw > W)
        return SN_EINVAL;
    *Ho = (H - kh) / sh + 1;
    *Wo = (W - kw) / sw + 1;
    return SN_OK;
}

/* One call's arrays and sizes; a kernel's plane function does plane p. */
typedef struct {
    float *out;               /* y (forward) or dx (backward) */
    const float *in;          /* x (forward) or dy (backward) */
    int32_t *argmax;          /* max-pool forward writes, backward reads */
    int64_t H, W, Ho, Wo, kh, kw, sh, sw;
} pool_call;

/* fn over the planes; SN_EINVAL if any plane reported it. `work` (elements
 * touched) decides whether threads pay. */
static int over_planes(sn_plane_fn fn, const pool_call *c, int64_t planes, int64_t work)
{
    return sn_over_planes(fn, c, planes, work) ? SN_EINVAL : SN_OK;
}

static int setup(pool_call *c, int64_t planes, int64_t H, int64_t W, int64_t kh, int64_t kw,
                 int64_t sh, int64_t sw)
{
    if (planes < 0 || sn_pool2d_out_size(&c->Ho, &c->Wo, H, W, kh, kw, sh, sw) != SN_OK)
        return SN_EINVAL;
    if (H > INT32_MAX / W) return SN_EINVAL; /* arg-max indices are int32 */
    c->H = H, c->W = W, c->kh = kh, c->kw = kw, c->sh = sh, c->sw = sw;
    return SN_OK;
}

/* ---- max-pool ----
 * The loops below have no branch on the data and no division: the window
 * positions are visited in scan order and each keeps or replaces a running
 * maximum with a select, so gcc vectorises them (SSE2) across the outputs of
 * a row (the few scalar iterations it leaves at the end of a row may still
 * branch). Every index fits in int32 (setup checks H W <= INT32_MAX). */

/* Whether v, met after m in the scan of a window, replaces the running
 * maximum m: v > m (strictly: a tie keeps the first), or v is NaN and m is
 * not (NaN wins, the first NaN). !(v <= m) holds for v > m and for a NaN v.
 * (The callers keep it in a bool used by both selects: gcc 12 vectorises
 * that form, not the comparison written twice.) */
static inline bool max_takes(float v, float m) { return m == m && !(v <= m); }

/* One output row of a 2x2 max-pool with column stride 2: outputs j < n from
 * rows x0 and x1 = x0 + W; am = base + the index of the maximum. */
static void max_row_2x2s2(float *SN_RESTRICT y, int32_t *SN_RESTRICT am,
                          const float *SN_RESTRICT x0, const float *SN_RESTRICT x1, int32_t W,
                          int32_t base, int64_t n)
{
    for (int64_t j = 0; j < n; ++j) {
        float m = x0[2 * j], v;
        int32_t at = 0;
        bool t;
        v = x0[2 * j + 1];
        t = max_takes(v, m), at = t ? 1 : at, m = t ? v : m;
        v = x1[2 * j];
        t = max_takes(v, m), at = t ? W : at, m = t ? v : m;
        v = x1[2 * j + 1];
        t = max_takes(v, m), at = t ? W + 1 : at, m = t ? v : m;
        y[j] = m;
        am[j] = base + 2 * (int32_t)j + at;
    }
}

/* One output row of a kh x kw max-pool with column stride sw: outputs j < n
 * of windows starting at x0 + j sw. y holds the running maxima and am their
 * offsets in the window while the window positions (a, b) are visited in
 * scan order, each over the whole row; then am gets base + j sw added.
 * Always inlined, so that sw = 1 and 2 get loops of their own. */
SN_ALWAYS_INLINE
static inline void max_row(float *SN_RESTRICT y, int32_t *SN_RESTRICT am,
                           const float *SN_RESTRICT x0, int32_t W, int32_t kh, int32_t kw,
                           int32_t sw, int32_t base, int64_t n)
{
    for (int64_t j = 0; j < n; ++j) {
        y[j] = x0[j * sw];
        am[j] = 0;
    }
    for (int32_t a = 0; a < kh; ++a)
        for (int32_t b = a == 0; b < kw; ++b) {
            const float *SN_RESTRICT xr = x0 + a * W + b;
            const int32_t off = a * W + b;
            for (int64_t j = 0; j < n; ++j) {
                const float v = xr[j * sw], m = y[j];
                const int32_t at = am[j];
                const bool t = max_takes(v, m);
                am[j] = t ? off : at;
                y[j] = t ? v : m;
            }
        }
    for (int64_t j = 0; j < n; ++j) am[j] += base + (int32_t)j * sw;
}

/* y = the window's maximum, argmax = its index in the plane: the first
 * maximum in row-major scan order; a NaN wins, the first */
static int maxpool_forward_plane(const void *ctx, int64_t p)
{
    const pool_call *c = ctx;
    const int32_t W = (int32_t)c->W, kh = (int32_t)c->kh, kw = (int32_t)c->kw;
    const int32_t sh = (int32_t)c->sh, sw = (int32_t)c->sw, Wo = (int32_t)c->Wo;
    const float *xp = c->in + p * c->H * c->W;
    float *yp = c->out + p * c->Ho * c->Wo;
    int32_t *ap = c->argmax + p * c->Ho * c->Wo;
    for (int32_t i = 0; i < (int32_t)c->Ho; ++i) {
        const int32_t base = i * sh * W;
        float *y = yp + (int64_t)i * Wo;
        int32_t *am = ap + (int64_t)i * Wo;
        if (kh == 2 && kw == 2 && sw == 2)
            max_row_2x2s2(y, am, xp + base, xp + base + W, W, base, Wo);
        else if (sw == 1)
            max_row(y, am, xp + base, W, kh, kw, 1, base, Wo);
        else if (sw == 2)
            max_row(y, am, xp + base, W, kh, kw, 2, base, Wo);
        else
            max_row(y, am, xp + base, W, kh, kw, sw, base, Wo);
    }
    return 0;
}

int sn_maxpool2d_forward_f32(float *y, int32_t *argmax, const float *x, int64_t planes,
                             int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw)
{
    pool_call c = {.out = y, .in = x, .argmax = argmax};
    if (setup(&c, planes, H, W, kh, kw, sh, sw) != SN_OK) return SN_EINVAL;
    return over_planes(maxpool_forward_plane, &c, planes, planes * c.Ho * c.Wo * kh * kw);
}

/* dx = 0, then dx[argmax[o]] += dy[o] over the plane's outputs in order
 * (overlapping windows add); an index outside the plane is skipped, reported */
static int maxpool_backward_plane(const void *ctx, int64_t p)
{
    const pool_call *c = ctx;
    const int64_t hw = c->H * c->W, n = c->Ho * c->Wo;
    float *dxp = c->out + p * hw;
    const float *dyp = c->in + p * n;
    const int32_t *ap = c->argmax + p * n;
    int bad = 0;
    memset(dxp, 0, (size_t)hw * sizeof(float));
    for (int64_t o = 0; o < n; ++o) {
        if (ap[o] < 0 || ap[o] >= hw) {
            bad = 1;
            continue;
        }
        dxp[ap[o]] += dyp[o];
    }
    return bad;
}

int sn_maxpool2d_backward_f32(float *dx, const float *dy, const int32_t *argmax, int64_t planes,
                              int64_t H, int64_t W, int64_t Ho, int64_t Wo)
{
    if (planes < 0 || H < 1 || W < 1 || Ho < 1 || Wo < 1 || H > INT32_MAX / W) return SN_EINVAL;
    pool_call c = {.out = dx, .in = dy, .argmax = (int32_t *)argmax, .H = H, .W = W, .Ho = Ho,
                   .Wo = Wo};
    return over_planes(maxpool_backward_plane, &c, planes, planes * (H * W + Ho * Wo));
}

/* ---- average pool ----
 * Each window is summed in double in scan order (a, b) from 0.0, as a
 * direct loop would; the loops run over the outputs of a row, so that they
 * vectorise. */

/* outputs of a row summed at once in the generic loop (a double each, on the stack) */
#define SN_POOL_CHUNK 256

/* One output row of a 2x2 average pool with column stride 2, from rows x0, x1 */
static void avg_row_2x2s2(float *SN_RESTRICT y, const float *SN_RESTRICT x0,
                          const float *SN_RESTRICT x1, int64_t n)
{
    for (int64_t j = 0; j < n; ++j) {
        const double s = ((0.0 + x0[2 * j]) + x0[2 * j + 1]) + x1[2 * j];
        y[j] = (float)((s + x1[2 * j + 1]) * 0.25);
    }
}

/* One output row of a kh x kw average pool with column stride sw: the sums
 * of SN_POOL_CHUNK outputs at a time are built window position by window
 * position. Always inlined, so that sw = 1 and 2 get loops of their own. */
SN_ALWAYS_INLINE
static inline void avg_row(float *SN_RESTRICT y, const float *SN_RESTRICT x0, int32_t W,
                           int32_t kh, int32_t kw, int32_t sw, double inv, int64_t n)
{
    double acc[SN_POOL_CHUNK];
    for (int64_t j0 = 0; j0 < n; j0 += SN_POOL_CHUNK) {
        const int64_t m = n - j0 < SN_POOL_CHUNK ? n - j0 : SN_POOL_CHUNK;
        const float *SN_RESTRICT xc = x0 + j0 * sw;
        for (int64_t j = 0; j < m; ++j) acc[j] = 0.0;
        for (int32_t a = 0; a < kh; ++a)
            for (int32_t b = 0; b < kw; ++b) {
                const float *SN_RESTRICT xr = xc + a * W + b;
                for (int64_t j = 0; j < m; ++j) acc[j] += xr[j * sw];
            }
        for (int64_t j = 0; j < m; ++j) y[j0 + j] = (float)(acc[j] * inv);
    }
}

static int avgpool_forward_plane(const void *ctx, int64_t p)
{
    const pool_call *c = ctx;
    const int32_t W = (int32_t)c->W, kh = (int32_t)c->kh, kw = (int32_t)c->kw;
    const int32_t sh = (int32_t)c->sh, sw = (int32_t)c->sw;
    const float *xp = c->in + p * c->H * c->W;
    float *yp = c->out + p * c->Ho * c->Wo;
    const double inv = 1.0 / (double)(c->kh * c->kw);
    for (int64_t i = 0; i < c->Ho; ++i) {
        const float *x0 = xp + i * sh * W;
        float *y = yp + i * c->Wo;
        if (kh == 2 && kw == 2 && sw == 2)
            avg_row_2x2s2(y, x0, x0 + W, c->Wo);
        else if (sw == 1)
            avg_row(y, x0, W, kh, kw, 1, inv, c->Wo);
        else if (sw == 2)
            avg_row(y, x0, W, kh, kw, 2, inv, c->Wo);
        else
            avg_row(y, x0, W, kh, kw, sw, inv, c->Wo);
    }
    return 0;
}

int sn_avgpool2d_forward_f32(float *y, const float *x, int64_t planes, int64_t H, int64_t W,
                             int64_t kh, int64_t kw, int64_t sh, int64_t sw)
{
    pool_call c = {.out = y, .in = x};
    if (setup(&c, planes, H, W, kh, kw, sh, sw) != SN_OK) return SN_EINVAL;
    return over_planes(avgpool_forward_plane, &c, planes, planes * c.Ho * c.Wo * kh * kw);
}

/* dx = 0, then every position of a window gets g = dy inv added, in the
 * order of the windows (i, j): for one output row, window rows a, then
 * columns b from the last, then j, adds to each position in that order too
 * (a position takes one (j, b) per b, j rising as b falls). */
SN_ALWAYS_INLINE
static inline void avg_back_row(float *SN_RESTRICT dx0, const float *SN_RESTRICT dy, int32_t W,
                                int32_t kh, int32_t kw, int32_t sw, float inv, int64_t n)
{
    for (int32_t a = 0; a < kh; ++a)
        for (int32_t b = kw - 1; b >= 0; --b) {
            float *SN_RESTRICT dr = dx0 + a * W + b;
            for (int64_t j = 0; j < n; ++j) dr[j * sw] += dy[j] * inv;
        }
}

static int avgpool_backward_plane(const void *ctx, int64_t p)
{
    const pool_call *c = ctx;
    const int32_t W = (int32_t)c->W, kh = (int32_t)c->kh, kw = (int32_t)c->kw;
    const int32_t sh = (int32_t)c->sh, sw = (int32_t)c->sw;
    const int64_t Wo = c->Wo;
    float *dxp = c->out + p * c->H * c->W;
    const float *dyp = c->in + p * c->Ho * Wo;
    const float inv = (float)(1.0 / (double)(c->kh * c->kw));
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2) {
        /* windows side by side: each position gets 0 + g once, or stays 0 */
        for (int64_t i = 0; i < c->Ho; ++i) {
            float *SN_RESTRICT d0 = dxp + 2 * i * W, *SN_RESTRICT d1 = d0 + W;
            const float *SN_RESTRICT g = dyp + i * Wo;
            for (int64_t j = 0; j < Wo; ++j) {
                const float v = 0.0f + g[j] * inv;
                d0[2 * j] = d0[2 * j + 1] = d1[2 * j] = d1[2 * j + 1] = v;
            }
            for (int64_t k = 2 * Wo; k < W; ++k) d0[k] = d1[k] = 0.0f;
        }
        memset(dxp + 2 * c->Ho * W, 0, (size_t)((c->H - 2 * c->Ho) * W) * sizeof(float));
        return 0;
    }
    memset(dxp, 0, (size_t)(c->H * c->W) * sizeof(float));
    for (int64_t i = 0; i < c->Ho; ++i) {
        float *dx0 = dxp + i * sh * W;
        const float *dy = dyp + i * Wo;
        if (sw == 1)
            avg_back_row(dx0, dy, W, kh, kw, 1, inv, Wo);
        else
            avg_back_row(dx0, dy, W, kh, kw, sw, inv, Wo);
    }
    return 0;
}

int sn_avgpool2d_backward_f32(float *dx, const float *dy, int64_t planes, int64_t H, int64_t W,
                              int64_t kh, int64_t kw, int64_t sh, int64_t sw)
{
    pool_call c = {.out = dx, .in = dy};
    if (setup(&c, planes, H, W, kh, kw, sh, sw) != SN_OK) return SN_EINVAL;
    return over_planes(avgpool_backward_plane, &c, planes,
                       planes * (H * W + c.Ho * c.Wo * kh * kw));
}

/* ---- global average pool: the mean of each plane ---- */

/* lanes of the plane sum: independent chains, so the adds overlap */
#define SN_POOL_LANES 8

/* y[p] = (sum of the plane, in double, lane k taking the values at k mod
 * SN_POOL_LANES, the lanes added in order at the end) / hw */
static int global_forward_plane(const void *ctx, int64_t p)
{
    const pool_call *c = ctx;
    const int64_t hw = c->W, full = hw / SN_POOL_LANES * SN_POOL_LANES;
    const float *x = c->in + p * hw;
    double lane[SN_POOL_LANES] = {0}, sum = 0.0;
    for (int64_t k = 0; k < full; k += SN_POOL_LANES)
        for (int l = 0; l < SN_POOL_LANES; ++l) lane[l] += x[k + l];
    for (int l = 0; l < SN_POOL_LANES; ++l) sum += lane[l];
    for (int64_t k = full; k < hw; ++k) sum += x[k];
    c->out[p] = (float)(sum / (double)hw);
    return 0;
}

/* dx = 0 + dy / hw (as dy times the float 1 / hw, the average pool's backward) */
static int global_backward_plane(const void *ctx, int64_t p)
{
    const pool_call *c = ctx;
    const int64_t hw = c->W;
    const float v = 0.0f + c->in[p] * (float)(1.0 / (double)hw);
    float *dx = c->out + p * hw;
    for (int64_t k = 0; k < hw; ++k) dx[k] = v;
    return 0;
}

int sn_global_avgpool_forward_f32(float *y, const float *x, int64_t planes, int64_t hw)
{
    pool_call c = {.out = y, .in = x};
    if (setup(&c, planes, 1, hw, 1, hw, 1, 1) != SN_OK) return SN_EINVAL;
    return over_planes(global_forward_plane, &c, planes, planes * hw);
}

int sn_global_avgpool_backward_f32(float *dx, const float *dy, int64_t planes, int64_t hw)
{
    pool_call c = {.out = dx, .in = dy};
    if (setup(&c, planes, 1, hw, 1, hw, 1, 1) != SN_OK) return SN_EINVAL;
    return over_planes(global_backward_plane, &c, planes, planes * hw);
}
