/* 2-D convolution, forward and backward, as im2col + the GEMM (sn_gemm.c).
 *
 * For a chunk of cn images, col holds the image patches as columns:
 *     col[(c, i, j), n P + oh OW + ow] = x[n, c, oh sh + i - ph, ow sw + j - pw]
 * (0 outside the image), r = (c kh + i) kw + j, P = OH OW, so that
 *     forward:  Y (K x cn P) = w (K x C kh kw) @ col,  y[n, k, :] = Y[k, n P ..] + b[k]
 *     backward: dY (K x cn P) gathered from dy;
 *               dw += dY @ col^T;  db += row sums of dY;
 *               dcol = w^T @ dY;   dx = col2im(dcol), the adjoint of im2col:
 *               dx[n, c, ih, iw] = sum of dcol over the (i, j, oh, ow) that read it.
 * One GEMM per chunk, whose rows of col are long (cn P) even for small
 * images. The copies (im2col, col2im, the gathers) are split over threads by
 * whole units (a row of col for one image, an image plane of dx, ...), each
 * written by one thread in a fixed order: no sum depends on the thread count,
 * and the GEMM's do not either, so results are the same for any count. */
#include <string.h>

#include "scratchnet.h"
#include "sn_fpmode.h"
#include "sn_internal.h"

/* floats copied before a second thread is worth waking */
#define SN_CONV_PARALLEL_MIN 32768
/* the default chunk keeps col and Y (floats) within this, unless one image
 * alone needs more */
#define SN_CONV_CHUNK_FLOATS (1 << 17)

/* a * b, or -1 if either is negative or the product passes 2^62 */
static int64_t mul_or_neg(int64_t a, int64_t b)
{
    if (a < 0 || b < 0) return -1;
    if (a != 0 && b > ((int64_t)1 << 62) / a) return -1;
    return a * b;
}

/* the size of one image's col, (C kh kw) x (OH OW) floats, plus Y's K x OH OW */
static int64_t image_floats(const sn_conv2d_cfg *cfg)
{
    const int64_t ckk = mul_or_neg(mul_or_neg(cfg->C, cfg->kh), cfg->kw);
    const int64_t p = mul_or_neg(cfg->OH, cfg->OW);
    const int64_t rows = ckk < 0 || cfg->K < 0 ? -1 : ckk + cfg->K;
    return mul_or_neg(rows, p);
}

int sn_conv2d_init(sn_conv2d_cfg *cfg, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                   int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw)
{
    if (!cfg || N < 0 || C < 1 || H < 1 || W < 1 || K < 1 || kh < 1 || kw < 1 || sh < 1 ||
        sw < 1 || ph < 0 || pw < 0)
        return SN_EINVAL;
    /* every size below 2^31: no product of three of them overflows */
    const int64_t big = (int64_t)1 << 31;
    if (N >= big || C >= big || H >= big || W >= big || K >= big || kh >= big || kw >= big ||
        sh >= big || sw >= big || ph >= big || pw >= big)
        return SN_EINVAL;
    if (H + 2 * ph < kh || W + 2 * pw < kw) return SN_EINVAL;
    sn_conv2d_cfg c = {N, C, H, W, K, kh, kw, sh, sw, ph, pw, 0, 0, 1};
    c.OH = (H + 2 * ph - kh) / sh + 1;
    c.OW = (W + 2 * pw - kw) / sw + 1;
    const int64_t per_image = image_floats(&c);
    if (per_image < 0 || mul_or_neg(mul_or_neg(N, C), mul_or_neg(H, W)) < 0 ||
        mul_or_neg(mul_or_neg(N, K), mul_or_neg(c.OH, c.OW)) < 0 ||
        mul_or_neg(K, mul_or_neg(C, kh * kw)) < 0)
        return SN_EINVAL;
    int64_t chunk = per_image > 0 ? SN_CONV_CHUNK_FLOATS / per_image : N;
    if (chunk > N) chunk = N;
    c.chunk = chunk < 1 ? 1 : chunk;
    *cfg = c;
    return SN_OK;
}

/* 1 if cfg is what sn_conv2d_init makes (with any chunk in 1..max(N, 1)) */
static int cfg_ok(const sn_conv2d_cfg *cfg)
{
    sn_conv2d_cfg c;
    if (!cfg || sn_conv2d_init(&c, cfg->N, cfg->C, cfg->H, cfg->W, cfg->K, cfg->kh, cfg->kw,
                               cfg->sh, cfg->sw, cfg->ph, cfg->pw) != SN_OK)
        return 0;
    return cfg->OH == c.OH && cfg->OW == c.OW && cfg->chunk >= 1 &&
           cfg->chunk <= (cfg->N > 1 ? cfg->N : 1) &&
           mul_or_neg(cfg->chunk, image_floats(cfg)) >= 0;
}

int64_t sn_conv2d_workspace_len(const sn_conv2d_cfg *cfg)
{
    if (!cfg_ok(cfg)) return -1;
    return cfg->chunk * image_floats(cfg);
}

/* ---- work split over threads ---- */

typedef struct {
    const sn_conv2d_cfg *cfg;
    int64_t n0, cn;       /* the chunk: images n0 .. n0 + cn */
    float *col;           /* (C kh kw) x (cn P) */
    float *buf;           /* K x (cn P): Y or dY */
    float *out;           /* y or dx */
    const float *in;      /* x or dy */
    const float *b;       /* bias or NULL */
} conv_job;

typedef void (*unit_fn)(const conv_job *job, int64_t u);

/* fn(job, u) for u in [0, units), in contiguous blocks, one per thread */
static void run_units(unit_fn fn, const conv_job *job, int64_t units, int64_t floats)
{
    const int nt = units > 1 && floats >= SN_CONV_PARALLEL_MIN ? sn_parallel_threads() : 1;
    if (nt == 1) {
        const unsigned fp = sn_fp_enter();
        for (int64_t u = 0; u < units; ++u) fn(job, u);
        sn_fp_leave(fp);
        return;
    }
    const int64_t blocks = units < nt ? units : nt;
    const int64_t per = (units + blocks - 1) / blocks;
    double work = 0.0;
    const double t_start = SN_NOW();
    (void)t_start;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) reduction(+ : work)
#endif
    for (int64_t t = 0; t < blocks; ++t) {
        const double t0 = SN_NOW();
        const unsigned fp = sn_fp_enter();
        const int64_t hi = (t + 1) * per < units ? (t + 1) * per : units;
        for (int64_t u = t * per; u < hi; ++u) fn(job, u);
        sn_fp_leave(fp);
        work += SN_NOW() - t0;
    }
    sn_parallel_done(SN_NOW() - t_start, work, nt);
}

/* The outputs ow in [*lo, *hi) whose input column ow sw + j - pw is inside
 * 0 .. W-1 (likewise rows); the others read padding. */
static void valid_range(int64_t out, int64_t stride, int64_t off, int64_t size, int64_t *lo,
                        int64_t *hi)
{
    /* off = j - pw: need 0 <= o stride + off <= size - 1 */
    int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t h = size - 1 - off < 0 ? 0 : (size - 1 - off) / stride + 1;
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* unit u = (r, n): row r of col for image n of the chunk */
static void im2col_unit(const conv_job *job, int64_t u)
{
    const sn_conv2d_cfg *g = job->cfg;
    const int64_t r = u / job->cn, n = u % job->cn;
    const int64_t c = r / (g->kh * g->kw), i = r / g->kw % g->kh, j = r % g->kw;
    const int64_t P = g->OH * g->OW;
    const float *plane = job->in + ((job->n0 + n) * g->C + c) * g->H * g->W;
    float *dst = job->col + r * (job->cn * P) + n * P;
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    valid_range(g->OH, g->sh, i - g->ph, g->H, &oh_lo, &oh_hi);
    valid_range(g->OW, g->sw, j - g->pw, g->W, &ow_lo, &ow_hi);
    memset(dst, 0, (size_t)(oh_lo * g->OW) * sizeof(float));
    for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
        const float *src = plane + (oh * g->sh + i - g->ph) * g->W + j - g->pw;
        float *d = dst + oh * g->OW;
        for (int64_t ow = 0; ow < ow_lo; ++ow) d[ow] = 0.0f;
        if (g->sw == 1) {
            memcpy(d + ow_lo, src + ow_lo, (size_t)(ow_hi - ow_lo) * sizeof(float));
        } else {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = src[ow * g->sw];
        }
        for (int64_t ow = ow_hi; ow < g->OW; ++ow) d[ow] = 0.0f;
    }
    memset(dst + oh_hi * g->OW, 0, (size_t)((g->OH - oh_hi) * g->OW) * sizeof(float));
}

/* unit u = (n, c): image plane (n, c) of dx = the sum of what dcol holds for it,
 * in the order i, j, oh, ow */
static void col2im_unit(const conv_job *job, int64_t u)
{
    const sn_conv2d_cfg *g = job->cfg;
    const int64_t n = u / g->C, c = u % g->C;
    const int64_t P = g->OH * g->OW;
    float *plane = job->out + ((job->n0 + n) * g->C + c) * g->H * g->W;
    memset(plane, 0, (size_t)(g->H * g->W) * sizeof(float));
    for (int64_t i = 0; i < g->kh; ++i) {
        int64_t oh_lo, oh_hi;
        valid_range(g->OH, g->sh, i - g->ph, g->H, &oh_lo, &oh_hi);
        for (int64_t j = 0; j < g->kw; ++j) {
            int64_t ow_lo, ow_hi;
            valid_range(g->OW, g->sw, j - g->pw, g->W, &ow_lo, &ow_hi);
            const int64_t r = (c * g->kh + i) * g->kw + j;
            const float *src = job->col + r * (job->cn * P) + n * P;
            for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
                float *d = plane + (oh * g->sh + i - g->ph) * g->W + j - g->pw;
                const float *s = src + oh * g->OW;
                for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow * g->sw] += s[ow];
            }
        }
    }
}

/* unit u = (n, k): y[n0 + n, k, :] = Y[k, n P ..] + b[k] */
static void scatter_unit(const conv_job *job, int64_t u)
{
    const sn_conv2d_cfg *g = job->cfg;
    const int64_t n = u / g->K, k = u % g->K;
    const int64_t P = g->OH * g->OW;
    const float *src = job->buf + k * (job->cn * P) + n * P;
    float *dst = job->out + ((job->n0 + n) * g->K + k) * P;
    const float bk = job->b ? job->b[k] : 0.0f;
    for (int64_t p = 0; p < P; ++p) dst[p] = src[p] + bk;
}

/* unit u = (n, k): dY[k, n P ..] = dy[n0 + n, k, :] */
static void gather_unit(const conv_job *job, int64_t u)
{
    const sn_conv2d_cfg *g = job->cfg;
    const int64_t n = u / g->K, k = u % g->K;
    const int64_t P = g->OH * g->OW;
    memcpy(job->buf + k * (job->cn * P) + n * P, job->in + ((job->n0 + n) * g->K + k) * P,
           (size_t)P * sizeof(float));
}

/* ---- forward ---- */

int sn_conv2d_forward_f32(const sn_conv2d_cfg *cfg, float *y, const float *x, const float *w,
                          const float *b, float *workspace)
{
    if (!cfg_ok(cfg)) return SN_EINVAL;
    if (cfg->N == 0) return SN_OK;
    if (!y || !x || !w || !workspace) return SN_EINVAL;
    const int64_t P = cfg->OH * cfg->OW, ckk = cfg->C * cfg->kh * cfg->kw, K = cfg->K;
    for (int64_t n0 = 0; n0 < cfg->N; n0 += cfg->chunk) {
        const int64_t cn = cfg->N - n0 < cfg->chunk ? cfg->N - n0 : cfg->chunk;
        float *col = workspace, *Y = workspace + ckk * cn * P;
        const conv_job job = {cfg, n0, cn, col, Y, y, x, b};
        run_units(im2col_unit, &job, ckk * cn, ckk * cn * P);
        /* Y = w @ col   (K x cn P) */
        const int status =
            sn_gemm_f32(0, 0, K, cn * P, ckk, 1.0f, w, ckk, col, cn * P, 0.0f, Y, cn * P);
        if (status != SN_OK) return status;
        run_units(scatter_unit, &job, cn * K, cn * K * P);
    }
    return SN_OK;
}

/* ---- backward ---- */

/* db[k] = beta db[k] + sum over n, p of dy[n, k, p]: each k summed in one
 * thread, in double, in 8 lanes (p mod 8; independent chains, so the adds
 * overlap) added up in a fixed order at the end */
#define SN_CONV_LANES 8
static void bias_grad_unit(const conv_job *job, int64_t k)
{
    const sn_conv2d_cfg *g = job->cfg;
    const int64_t P = g->OH * g->OW, P8 = P / SN_CONV_LANES * SN_CONV_LANES;
    double lane[SN_CONV_LANES] = {0};
    double sum = 0.0;
    for (int64_t n = 0; n < g->N; ++n) {
        const float *d = job->in + (n * g->K + k) * P;
        for (int64_t p = 0; p < P8; p += SN_CONV_LANES)
            for (int l = 0; l < SN_CONV_LANES; ++l) lane[l] += d[p + l];
        for (int64_t p = P8; p < P; ++p) sum += d[p];
    }
    for (int l = 0; l < SN_CONV_LANES; ++l) sum += lane[l];
    float *db = job->out;
    const float beta = *job->b;
    db[k] = beta == 0.0f ? (float)sum : (float)(beta * (double)db[k] + sum);
}

int sn_conv2d_backward_f32(const sn_conv2d_cfg *cfg, float *dw, float *db, float *dx,
                           const float *dy, const float *x, const float *w, float beta,
                           float *workspace)
{
    if (!cfg_ok(cfg)) return SN_EINVAL;
    if (!dw || (cfg->N > 0 && (!dy || !x || !workspace || (dx && !w)))) return SN_EINVAL;
    const int64_t P = cfg->OH * cfg->OW, ckk = cfg->C * cfg->kh * cfg->kw, K = cfg->K;
    if (db) {
        const conv_job job = {cfg, 0, 0, NULL, NULL, db, dy, &beta};
        run_units(bias_grad_unit, &job, K, cfg->N * K * P);
    }
    if (cfg->N == 0) {
        /* no image: dw = beta dw */
        return sn_gemm_f32(0, 1, K, ckk, 0, 1.0f, NULL, 1, NULL, 1, beta, dw, ckk);
    }
    for (int64_t n0 = 0; n0 < cfg->N; n0 += cfg->chunk) {
        const int64_t cn = cfg->N - n0 < cfg->chunk ? cfg->N - n0 : cfg->chunk;
        float *col = workspace, *dY = workspace + ckk * cn * P;
        const conv_job job = {cfg, n0, cn, col, dY, dx, x, NULL};
        run_units(im2col_unit, &job, ckk * cn, ckk * cn * P);
        /* one image: dy_n is already K x P */
        const float *dYs = dY;
        if (cn == 1) {
            dYs = dy + n0 * K * P;
        } else {
            const conv_job gather = {cfg, n0, cn, NULL, dY, NULL, dy, NULL};
            run_units(gather_unit, &gather, cn * K, cn * K * P);
        }
        /* dw = beta' dw + dY @ col^T   (K x C kh kw); later chunks add */
        int status = sn_gemm_f32(0, 1, K, ckk, cn * P, 1.0f, dYs, cn * P, col, cn * P,
                                 n0 == 0 ? beta : 1.0f, dw, ckk);
        if (status != SN_OK) return status;
        if (!dx) continue;
        /* dcol = w^T @ dY   (C kh kw x cn P), into col, which dw has used */
        status = sn_gemm_f32(1, 0, ckk, cn * P, K, 1.0f, w, ckk, dYs, cn * P, 0.0f, col,
                             cn * P);
        if (status != SN_OK) return status;
        run_units(col2im_unit, &job, cn * cfg->C, cn * cfg->C * cfg->H * cfg->W);
    }
    return SN_OK;
}
