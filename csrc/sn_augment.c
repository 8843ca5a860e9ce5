/* Data augmentation for training, forward and adjoint side by side: random
 * integer shifts with zero fill and random horizontal flips of NCHW images.
 * The draws come from the counter-based splitmix64 stream the dropout kernel
 * uses (key = splitmix64(seed), draw k = splitmix64(key + k)), so image i's
 * draw depends only on (seed, i); the images' planes are then moved by one
 * thread each, and any thread count gives the same bits. */
#include <stdint.h>
#include <string.h>

#include "scratchnet.h"
#include "sn_formulas.h"
#include "sn_planes.h"

int sn_random_shifts(int32_t *shifts, int64_t n, int64_t pixels, uint64_t seed,
                     uint64_t first)
{
    if (n < 0 || pixels < 0 || pixels > INT32_MAX / 2) return SN_EINVAL;
    /* image i takes draws 2 (first + i) and 2 (first + i) + 1 */
    const uint64_t key = sn_splitmix64(seed) + 2 * first, m = 2 * (uint64_t)pixels + 1;
    for (int64_t k = 0; k < 2 * n; ++k) {
        /* the top 32 bits scaled to [0, m): floor(u m / 2^32) */
        const uint64_t u = sn_splitmix64(key + (uint64_t)k) >> 32;
        shifts[k] = (int32_t)((u * m) >> 32) - (int32_t)pixels;
    }
    return SN_OK;
}

int sn_random_flips(int32_t *flags, int64_t n, uint64_t seed, uint64_t first)
{
    if (n < 0) return SN_EINVAL;
    const uint64_t key = sn_splitmix64(seed) + first;
    for (int64_t k = 0; k < n; ++k) flags[k] = (int32_t)(sn_splitmix64(key + (uint64_t)k) >> 63);
    return SN_OK;
}

typedef struct {
    float *y;
    const float *x;
    const int32_t *draw;      /* shifts (2 per image) or flags (1 per image) */
    int64_t C, H, W;
    int sign;
} move_call;

/* fn (an sn_plane_fn taking a move_call) over the planes */
static void over_planes(sn_plane_fn fn, const move_call *c, int64_t planes)
{
    sn_over_planes(fn, c, planes, planes * c->H * c->W);
}

/* y[i, j] = x[i - sy, j - sx] inside the plane, 0 outside (sy, sx) = sign * shift */
static int shift_plane(const void *ctx, int64_t p)
{
    const move_call *c = ctx;
    const int64_t H = c->H, W = c->W, img = p / c->C;
    const int64_t sy = c->sign * (int64_t)c->draw[2 * img], sx = c->sign * (int64_t)c->draw[2 * img + 1];
    const float *xp = c->x + p * H * W;
    float *yp = c->y + p * H * W;
    /* columns j in [j0, j1) read x[., j - sx]; the rest are filled */
    const int64_t j0 = sx > 0 ? (sx < W ? sx : W) : 0;
    const int64_t j1 = sx < 0 ? (W + sx > 0 ? W + sx : 0) : W;
    for (int64_t i = 0; i < H; ++i) {
        float *row = yp + i * W;
        const int64_t src = i - sy;
        if (src < 0 || src >= H || j1 <= j0) {
            memset(row, 0, (size_t)W * sizeof(float));
            continue;
        }
        memset(row, 0, (size_t)j0 * sizeof(float));
        memcpy(row + j0, xp + src * W + (j0 - sx), (size_t)(j1 - j0) * sizeof(float));
        memset(row + j1, 0, (size_t)(W - j1) * sizeof(float));
    }
    return 0;
}

int sn_shift2d_f32(float *y, const float *x, const int32_t *shifts, int64_t N, int64_t C,
                   int64_t H, int64_t W, int sign)
{
    if (N < 0 || C < 1 || H < 1 || W < 1 || (sign != 1 && sign != -1)) return SN_EINVAL;
    const move_call c = {.y = y, .x = x, .draw = shifts, .C = C, .H = H, .W = W, .sign = sign};
    over_planes(shift_plane, &c, N * C);
    return SN_OK;
}

/* y[i, j] = x[i, W - 1 - j] for a flagged image, else x[i, j] */
static int flip_plane(const void *ctx, int64_t p)
{
    const move_call *c = ctx;
    const int64_t H = c->H, W = c->W;
    const float *xp = c->x + p * H * W;
    float *yp = c->y + p * H * W;
    if (!c->draw[p / c->C]) {
        memcpy(yp, xp, (size_t)(H * W) * sizeof(float));
        return 0;
    }
    for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) yp[i * W + j] = xp[i * W + W - 1 - j];
    return 0;
}

int sn_flip2d_f32(float *y, const float *x, const int32_t *flags, int64_t N, int64_t C, int64_t H,
                  int64_t W)
{
    if (N < 0 || C < 1 || H < 1 || W < 1) return SN_EINVAL;
    const move_call c = {.y = y, .x = x, .draw = flags, .C = C, .H = H, .W = W, .sign = 1};
    over_planes(flip_plane, &c, N * C);
    return SN_OK;
}
