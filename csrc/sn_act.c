/* Activations, forward and backward side by side; the formulas themselves
 * are in sn_formulas.h. Called on their own, these kernels run in the
 * caller's floating-point mode; the row forms at the end run inside the
 * GEMM, with subnormals flushed (sn_fpmode.h). */
#include <math.h>

#include "scratchnet.h"
#include "sn_formulas.h"
#include "sn_internal.h"

void sn_relu_forward_f32(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) y[i] = sn_relu(x[i]);
}

void sn_relu_backward_f32(float *dx, const float *dy, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) dx[i] = sn_relu_grad(dy[i], x[i]);
}

void sn_leaky_relu_forward_f32(float *y, const float *x, int64_t n, float slope)
{
    for (int64_t i = 0; i < n; ++i) y[i] = sn_leaky_relu(x[i], slope);
}

void sn_leaky_relu_backward_f32(float *dx, const float *dy, const float *x, int64_t n,
                                float slope)
{
    for (int64_t i = 0; i < n; ++i) dx[i] = sn_leaky_relu_grad(dy[i], x[i], slope);
}

void sn_sigmoid_forward_f32(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) y[i] = sn_sigmoid(x[i]);
}

void sn_sigmoid_backward_f32(float *dx, const float *dy, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) dx[i] = sn_sigmoid_grad(dy[i], y[i]);
}

void sn_tanh_forward_f32(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) y[i] = tanhf(x[i]);
}

void sn_tanh_backward_f32(float *dx, const float *dy, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) dx[i] = sn_tanh_grad(dy[i], y[i]);
}

/* Softmax of one row into p; returns lse = m + log sum exp(z - m), the
 * log-sum-exp with the row maximum m subtracted so exp never overflows and
 * the sum is at least 1 (no log 0). The sum is kept in double. */
double sn_softmax_row_f32(float *p, const float *z, int64_t N)
{
    float m = z[0];
    for (int64_t j = 1; j < N; ++j) m = z[j] > m ? z[j] : m;
    double sum = 0.0;
    for (int64_t j = 0; j < N; ++j) {
        p[j] = expf(z[j] - m);
        sum += p[j];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < N; ++j) p[j] *= inv;
    return (double)m + log(sum);
}

void sn_softmax_forward_f32(float *y, const float *x, int64_t M, int64_t N)
{
    for (int64_t r = 0; r < M; ++r) sn_softmax_row_f32(y + r * N, x + r * N, N);
}

void sn_softmax_backward_f32(float *dx, const float *dy, const float *y, int64_t M, int64_t N)
{
    for (int64_t r = 0; r < M; ++r) {
        const float *dyr = dy + r * N, *yr = y + r * N;
        float *dxr = dx + r * N;
        float dot = 0.0f;
        for (int64_t j = 0; j < N; ++j) dot += dyr[j] * yr[j];
        for (int64_t j = 0; j < N; ++j) dxr[j] = yr[j] * (dyr[j] - dot);
    }
}

int sn_dropout_forward_f32(float *y, float *mask, const float *x, int64_t n, float p,
                           uint64_t seed, uint64_t first)
{
    if (!(p >= 0.0f && p < 1.0f)) return SN_EINVAL;
    const float keep_scale = 1.0f / (1.0f - p);
    const uint64_t key = sn_splitmix64(seed) + first;
    for (int64_t i = 0; i < n; ++i) {
        /* top 24 bits -> a float uniform in [0, 1) with every value exact */
        const float u = (float)(sn_splitmix64(key + (uint64_t)i) >> 40) * (1.0f / 16777216.0f);
        mask[i] = u >= p ? keep_scale : 0.0f;
        y[i] = x[i] * mask[i];
    }
    return SN_OK;
}

void sn_mul_f32(float *z, const float *x, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) z[i] = x[i] * y[i];
}

void sn_scale_f32(float *x, int64_t n, float alpha)
{
    for (int64_t i = 0; i < n; ++i) x[i] *= alpha;
}

/* ---- fused forms, used by the GEMM epilogue and the dense layer ----
 * Called on each finished tile of C (6 x 16 with AVX2), so their loops are
 * short: compiled for the baseline instruction set and, on x86-64 with GCC
 * or clang, again for AVX2 (sn_act_rows.h), where 8 floats are one vector
 * and restrict pointers spare the overlap checks before each loop (c is
 * never y, mask or bias). */
#define SN_ROWS(name) name##_baseline
#define SN_ROWS_TARGET
#include "sn_act_rows.h"
#if defined(SN_X86_64) && (defined(__GNUC__) || defined(__clang__))
#define SN_HAVE_AVX2_ROWS 1
#define SN_ROWS(name) name##_avx2
#define SN_ROWS_TARGET __attribute__((target("avx2")))
#include "sn_act_rows.h"
#else
#define SN_HAVE_AVX2_ROWS 0
#endif

void sn_act_rows_f32(float *c, int64_t ldc, int64_t rows, int64_t cols, const float *bias,
                     int act, float act_param)
{
#if SN_HAVE_AVX2_ROWS
    if (sn_get_isa() >= SN_ISA_AVX2) {
        act_rows_avx2(c, ldc, rows, cols, bias, act, act_param);
        return;
    }
#endif
    act_rows_baseline(c, ldc, rows, cols, bias, act, act_param);
}

/* c = c * act'(x), with act' written with the output y = act(x) (see
 * sn_formulas.h). */
void sn_dact_rows_f32(float *c, int64_t ldc, int64_t rows, int64_t cols, const float *y,
                      const float *mask, int64_t ldy, int act, float act_param)
{
#if SN_HAVE_AVX2_ROWS
    if (sn_get_isa() >= SN_ISA_AVX2) {
        dact_rows_avx2(c, ldc, rows, cols, y, mask, ldy, act, act_param);
        return;
    }
#endif
    dact_rows_baseline(c, ldc, rows, cols, y, mask, ldy, act, act_param);
}
