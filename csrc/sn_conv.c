/* 2-D convolution, forward and backward, as im2col + the GEMM (sn_gemm.c).
 *
 * For a chunk of cn images, col holds the image patches as columns:
 *     col[(c, i, j), n P + oh OW + ow] = x[n, c, oh sh + i - ph, ow sw + j - pw]
 * (0 outside the image), r = (c kh + i) kw + j, P = OH OW, so that
 *     forward:  Y (K x cn P) = w (K x C kh kw) @ col,  y[n, k, :] = Y[k, n P ..] + b[k]
 *     backward: dY (K x cn P) gathered from dy;
 *               dw^T += col @ dY^T  (col read in place, only the small dY packed);
 *               db += row sums of dY;
 *               dcol = w^T @ dY;   dx = col2im(dcol), the adjoint of im2col:
 *               dx[n, c, ih, iw] = sum of dcol over the (i, j, oh, ow) that read it.
 *
 * Threads: the batch is cut into a fixed number of slices of whole chunks
 * (SN_CONV_SLICES, fewer for small batches), and each slice is computed by
 * one thread from start to end: im2col, a GEMM in that thread alone
 * (sn_gemm_serial_f32), the copy out, with its own part of the workspace,
 * so the data a chunk's GEMM reads is in that core's cache and no thread
 * waits on another inside a layer. dw is summed per slice (chunks in order)
 * and the slices' sums added in slice order at the end: the slices, hence
 * every sum, do not depend on the thread count, so neither do the results. */
#include <string.h>

#include "scratchnet.h"
#include "sn_fpmode.h"
#include "sn_internal.h"

/* multiply-adds before a second thread is worth waking */
#define SN_CONV_PARALLEL_MIN ((int64_t)1 << 20)
/* the default chunk keeps col and Y (floats) within this (half a megabyte:
 * a core's L2), unless one image alone needs more */
#define SN_CONV_CHUNK_FLOATS (1 << 17)
/* at most this many slices of the batch: enough to keep 2..8 threads busy
 * with dynamic hand-out; each costs a workspace and a dw-sized sum */
#define SN_CONV_SLICES 8

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

/* ---- the batch in chunks (one GEMM each) and slices (one thread each) ---- */

static int64_t chunks_per_slice(const sn_conv2d_cfg *g)
{
    const int64_t chunks = (g->N + g->chunk - 1) / g->chunk;
    return (chunks + SN_CONV_SLICES - 1) / SN_CONV_SLICES;
}

static int64_t slice_count(const sn_conv2d_cfg *g)
{
    const int64_t chunks = (g->N + g->chunk - 1) / g->chunk, per = chunks_per_slice(g);
    return per > 0 ? (chunks + per - 1) / per : 0;
}

/* a slice's workspace: col and Y (or dY) for one chunk, then its sum of
 * dw^T, (C kh kw) x K */
static int64_t slice_floats(const sn_conv2d_cfg *g)
{
    return g->chunk * image_floats(g) + g->K * g->C * g->kh * g->kw;
}

/* slice s's sum of dw^T in the workspace */
static float *slice_dwt(const sn_conv2d_cfg *g, float *workspace, int64_t s)
{
    return workspace + s * slice_floats(g) + g->chunk * image_floats(g);
}

int64_t sn_conv2d_workspace_len(const sn_conv2d_cfg *cfg)
{
    if (!cfg_ok(cfg)) return -1;
    return mul_or_neg(slice_count(cfg), slice_floats(cfg));
}

/* ---- copies between the images and a chunk's col / Y ---- */

typedef struct {
    const sn_conv2d_cfg *cfg;
    int64_t n0, cn;       /* the chunk: images n0 .. n0 + cn */
    float *col;           /* (C kh kw) x (cn P) */
    float *buf;           /* K x (cn P): Y or dY */
    float *out;           /* y or dx */
    const float *in;      /* x or dy */
    const float *b;       /* bias or NULL */
} conv_job;

/* The outputs ow in [*lo, *hi) whose input column ow sw + j - pw is inside
 * 0 .. W-1 (likewise rows); the others read padding. */
static void valid_range(int64_t out, int64_t stride, int64_t off, int64_t size, int64_t *lo,
                        int64_t *hi)
{
    /* off = j - pw: need 0 <= o stride + off <= size - 1 (stride 1, the
     * common case, without the divisions: im2col asks per row of col) */
    int64_t l, h;
    if (stride == 1) {
        l = off >= 0 ? 0 : -off;
        h = size - off < 0 ? 0 : size - off;
    } else {
        l = off >= 0 ? 0 : (-off + stride - 1) / stride;
        h = size - 1 - off < 0 ? 0 : (size - 1 - off) / stride + 1;
    }
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* d[0 .. n) = s[0 .. n): the rows im2col copies are short (OW floats), so
 * fixed 4-float moves, the last one overlapping, instead of a call or a
 * vectorised loop with its set-up */
static inline void copy_short(float *d, const float *s, int64_t n)
{
    if (n < 4) {
        for (int64_t k = 0; k < n; ++k) d[k] = s[k];
        return;
    }
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) memcpy(d + k, s + k, 4 * sizeof(float));
    if (k < n) memcpy(d + n - 4, s + n - 4, 4 * sizeof(float));
}

/* col for the chunk, row r = (c, i, j) of image n at a time */
static void im2col(const conv_job *job)
{
    const sn_conv2d_cfg *g = job->cfg;
    const int64_t P = g->OH * g->OW, cols = job->cn * P;
    float *dst_row = job->col;
    for (int64_t c = 0; c < g->C; ++c)
        for (int64_t i = 0; i < g->kh; ++i) {
            int64_t oh_lo, oh_hi;
            valid_range(g->OH, g->sh, i - g->ph, g->H, &oh_lo, &oh_hi);
            for (int64_t j = 0; j < g->kw; ++j, dst_row += cols) {
                int64_t ow_lo, ow_hi;
                valid_range(g->OW, g->sw, j - g->pw, g->W, &ow_lo, &ow_hi);
                for (int64_t n = 0; n < job->cn; ++n) {
                    const float *plane = job->in + ((job->n0 + n) * g->C + c) * g->H * g->W;
                    float *dst = dst_row + n * P;
                    if (oh_lo > 0) memset(dst, 0, (size_t)(oh_lo * g->OW) * sizeof(float));
                    for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
                        const float *src = plane + (oh * g->sh + i - g->ph) * g->W + j - g->pw;
                        float *d = dst + oh * g->OW;
                        for (int64_t ow = 0; ow < ow_lo; ++ow) d[ow] = 0.0f;
                        if (g->sw == 1) {
                            copy_short(d + ow_lo, src + ow_lo, ow_hi - ow_lo);
                        } else {
                            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = src[ow * g->sw];
                        }
                        for (int64_t ow = ow_hi; ow < g->OW; ++ow) d[ow] = 0.0f;
                    }
                    if (oh_hi < g->OH)
                        memset(dst + oh_hi * g->OW, 0,
                               (size_t)((g->OH - oh_hi) * g->OW) * sizeof(float));
                }
            }
        }
}

/* dx for the chunk's images: each plane (n, c) the sum of what dcol holds
 * for it, in the order i, j, oh, ow */
static void col2im(const conv_job *job)
{
    const sn_conv2d_cfg *g = job->cfg;
    const int64_t P = g->OH * g->OW;
    for (int64_t n = 0; n < job->cn; ++n)
        for (int64_t c = 0; c < g->C; ++c) {
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
                        if (g->sw == 1) {
                            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] += s[ow];
                        } else {
                            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow * g->sw] += s[ow];
                        }
                    }
                }
            }
        }
}

/* y[n0 + n, k, :] = Y[k, n P ..] + b[k] (in place when Y is y's own block) */
static void scatter(const conv_job *job)
{
    const sn_conv2d_cfg *g = job->cfg;
    const int64_t P = g->OH * g->OW;
    for (int64_t n = 0; n < job->cn; ++n)
        for (int64_t k = 0; k < g->K; ++k) {
            const float *src = job->buf + k * (job->cn * P) + n * P;
            float *dst = job->out + ((job->n0 + n) * g->K + k) * P;
            const float bk = job->b ? job->b[k] : 0.0f;
            for (int64_t p = 0; p < P; ++p) dst[p] = src[p] + bk;
        }
}

/* dY[k, n P ..] = dy[n0 + n, k, :] */
static void gather(const conv_job *job)
{
    const sn_conv2d_cfg *g = job->cfg;
    const int64_t P = g->OH * g->OW;
    for (int64_t n = 0; n < job->cn; ++n)
        for (int64_t k = 0; k < g->K; ++k) {
            const float *src = job->in + ((job->n0 + n) * g->K + k) * P;
            float *dst = job->buf + k * (job->cn * P) + n * P;
            for (int64_t p = 0; p < P; ++p) dst[p] = src[p];
        }
}

/* ---- running slices, and other independent units, over threads ---- */

typedef struct {
    const sn_conv2d_cfg *cfg;
    float *y, *dw, *db, *dx;
    const float *x, *w, *b, *dy;
    float beta;
    float *workspace;
    /* the GEMM the slices call: in their own thread, or, when there is a
     * single slice (a few images), split over the threads itself */
    sn_gemm_epi_fn gemm;
} conv_args;

/* fn over units, on several threads when work (multiply-adds, or floats
 * moved) is worth a second one */
static int run_units(sn_unit_fn fn, const conv_args *a, int64_t units, double work)
{
    const int nt = work >= (double)SN_CONV_PARALLEL_MIN ? sn_parallel_threads() : 1;
    return sn_run_units(fn, a, units, nt, 0);
}

static sn_gemm_epi_fn slice_gemm(const sn_conv2d_cfg *cfg)
{
    return slice_count(cfg) > 1 ? sn_gemm_serial_f32 : sn_gemm_epi_f32;
}

/* the chunks of slice s: images [*n_lo, *n_hi) */
static void slice_images(const sn_conv2d_cfg *g, int64_t s, int64_t *n_lo, int64_t *n_hi)
{
    const int64_t per = chunks_per_slice(g) * g->chunk;
    *n_lo = s * per;
    *n_hi = (s + 1) * per < g->N ? (s + 1) * per : g->N;
}

/* ---- forward ---- */

static int forward_slice(const void *ctx, int64_t s)
{
    const conv_args *a = ctx;
    const sn_conv2d_cfg *g = a->cfg;
    const int64_t P = g->OH * g->OW, ckk = g->C * g->kh * g->kw, K = g->K;
    float *col = a->workspace + s * slice_floats(g), *Y = col + ckk * g->chunk * P;
    int64_t n_lo, n_hi;
    slice_images(g, s, &n_lo, &n_hi);
    for (int64_t n0 = n_lo; n0 < n_hi; n0 += g->chunk) {
        const int64_t cn = n_hi - n0 < g->chunk ? n_hi - n0 : g->chunk;
        /* one image: Y is y's own K x P block, the bias added in place */
        float *Yc = cn == 1 ? a->y + n0 * K * P : Y;
        const conv_job job = {g, n0, cn, col, Yc, a->y, a->x, a->b};
        im2col(&job);
        /* Y = w @ col   (K x cn P) */
        const int status = a->gemm(0, 0, K, cn * P, ckk, 1.0f, a->w, ckk, col,
                                              cn * P, 0.0f, Yc, cn * P, NULL);
        if (status != SN_OK) return status;
        scatter(&job);
    }
    return SN_OK;
}

int sn_conv2d_forward_f32(const sn_conv2d_cfg *cfg, float *y, const float *x, const float *w,
                          const float *b, float *workspace)
{
    if (!cfg_ok(cfg)) return SN_EINVAL;
    if (cfg->N == 0) return SN_OK;
    if (!y || !x || !w || !workspace) return SN_EINVAL;
    const conv_args a = {cfg, y, NULL, NULL, NULL, x, w, b, NULL, 0.0f, workspace,
                         slice_gemm(cfg)};
    const double macs = (double)cfg->N * cfg->K * cfg->OH * cfg->OW * cfg->C * cfg->kh * cfg->kw;
    return run_units(forward_slice, &a, slice_count(cfg), macs);
}

/* ---- backward ---- */

/* slice s's dw^T = sum over its images of col @ dY^T, and its part of dx */
static int backward_slice(const void *ctx, int64_t s)
{
    const conv_args *a = ctx;
    const sn_conv2d_cfg *g = a->cfg;
    const int64_t P = g->OH * g->OW, ckk = g->C * g->kh * g->kw, K = g->K;
    float *col = a->workspace + s * slice_floats(g), *dY = col + ckk * g->chunk * P;
    float *dwt = slice_dwt(g, a->workspace, s);
    int64_t n_lo, n_hi;
    slice_images(g, s, &n_lo, &n_hi);
    for (int64_t n0 = n_lo; n0 < n_hi; n0 += g->chunk) {
        const int64_t cn = n_hi - n0 < g->chunk ? n_hi - n0 : g->chunk;
        const conv_job job = {g, n0, cn, col, dY, a->dx, a->x, NULL};
        im2col(&job);
        /* one image: dy_n is already K x P */
        const float *dYs = dY;
        if (cn == 1) {
            dYs = a->dy + n0 * K * P;
        } else {
            const conv_job gathering = {g, n0, cn, NULL, dY, NULL, a->dy, NULL};
            gather(&gathering);
        }
        /* dw^T (+)= col @ dY^T   (C kh kw x K) */
        int status = a->gemm(0, 1, ckk, K, cn * P, 1.0f, col, cn * P, dYs, cn * P,
                                        n0 == n_lo ? 0.0f : 1.0f, dwt, K, NULL);
        if (status != SN_OK) return status;
        if (!a->dx) continue;
        /* dcol = w^T @ dY   (C kh kw x cn P), into col, which dw has used */
        status = a->gemm(1, 0, ckk, cn * P, K, 1.0f, a->w, ckk, dYs, cn * P, 0.0f,
                                    col, cn * P, NULL);
        if (status != SN_OK) return status;
        col2im(&job);
    }
    return SN_OK;
}

/* rows of dw^T added up a block at a time (a block of each slice's sum fits
 * in L1 for the transposing copy) */
#define SN_CONV_SUM_ROWS 16

/* rows r0 .. of dw^T: the slices' sums added in slice order into slice 0's,
 * then dw[k, r] = beta dw[k, r] + that sum (beta == 0: dw not read) */
static int sum_slices_unit(const void *ctx, int64_t block)
{
    const conv_args *a = ctx;
    const sn_conv2d_cfg *g = a->cfg;
    const int64_t ckk = g->C * g->kh * g->kw, K = g->K, slices = slice_count(g);
    const int64_t r0 = block * SN_CONV_SUM_ROWS;
    const int64_t r1 = r0 + SN_CONV_SUM_ROWS < ckk ? r0 + SN_CONV_SUM_ROWS : ckk;
    float *sum = slice_dwt(g, a->workspace, 0);
    for (int64_t s = 1; s < slices; ++s) {
        const float *part = slice_dwt(g, a->workspace, s);
        for (int64_t i = r0 * K; i < r1 * K; ++i) sum[i] += part[i];
    }
    for (int64_t k = 0; k < K; ++k) {
        float *d = a->dw + k * ckk;
        for (int64_t r = r0; r < r1; ++r)
            d[r] = a->beta == 0.0f ? sum[r * K + k] : a->beta * d[r] + sum[r * K + k];
    }
    return SN_OK;
}

/* db[k] = beta db[k] + sum over n, p of dy[n, k, p]: each k summed in one
 * thread, in double, in 8 lanes (p mod 8; independent chains, so the adds
 * overlap) added up in a fixed order at the end */
#define SN_CONV_LANES 8
static int bias_grad_unit(const void *ctx, int64_t k)
{
    const conv_args *a = ctx;
    const sn_conv2d_cfg *g = a->cfg;
    const int64_t P = g->OH * g->OW, P8 = P / SN_CONV_LANES * SN_CONV_LANES;
    double lane[SN_CONV_LANES] = {0};
    double sum = 0.0;
    for (int64_t n = 0; n < g->N; ++n) {
        const float *d = a->dy + (n * g->K + k) * P;
        for (int64_t p = 0; p < P8; p += SN_CONV_LANES)
            for (int l = 0; l < SN_CONV_LANES; ++l) lane[l] += d[p + l];
        for (int64_t p = P8; p < P; ++p) sum += d[p];
    }
    for (int l = 0; l < SN_CONV_LANES; ++l) sum += lane[l];
    a->db[k] = a->beta == 0.0f ? (float)sum : (float)(a->beta * (double)a->db[k] + sum);
    return SN_OK;
}

int sn_conv2d_backward_f32(const sn_conv2d_cfg *cfg, float *dw, float *db, float *dx,
                           const float *dy, const float *x, const float *w, float beta,
                           float *workspace)
{
    if (!cfg_ok(cfg)) return SN_EINVAL;
    if (!dw || (cfg->N > 0 && (!dy || !x || !workspace || (dx && !w)))) return SN_EINVAL;
    const int64_t P = cfg->OH * cfg->OW, ckk = cfg->C * cfg->kh * cfg->kw, K = cfg->K;
    const conv_args a = {cfg, NULL, dw, db, dx, x, w, NULL, dy, beta, workspace,
                         slice_gemm(cfg)};
    if (db) run_units(bias_grad_unit, &a, K, (double)cfg->N * K * P);
    if (cfg->N == 0) {
        /* no image: dw = beta dw */
        for (int64_t i = 0; i < K * ckk; ++i) dw[i] = beta == 0.0f ? 0.0f : beta * dw[i];
        return SN_OK;
    }
    const double macs = (double)cfg->N * K * P * ckk * (dx ? 2 : 1);
    const int status = run_units(backward_slice, &a, slice_count(cfg), macs);
    if (status != SN_OK) return status;
    const int64_t blocks = (ckk + SN_CONV_SUM_ROWS - 1) / SN_CONV_SUM_ROWS;
    return run_units(sum_slices_unit, &a, blocks, (double)slice_count(cfg) * K * ckk);
}
