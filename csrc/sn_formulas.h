/* Internal: the element-wise formulas of the activations, written once and
 * used by every kernel that applies them: the element-wise kernels and the
 * GEMM epilogue's rows (sn_act.c), and the loss gradients (sn_loss.c). So
 * the layer-by-layer path and the fused path compute the same bits.
 *
 * The derivatives take x or y = act(x) alike where the sign is all they
 * need: ReLU and LeakyReLU (slope >= 0) keep the sign of x, and y > 0
 * exactly when x > 0. See docs/formulas.md. */
#ifndef SN_FORMULAS_H
#define SN_FORMULAS_H

#include <math.h>
#include <stdint.h>

/* max(0, x); NaN stays NaN (as in PyTorch), so a network whose weights
 * went NaN gives NaN outputs, not answers that look real. (Written out:
 * whether a plain x > 0 ? x : 0 keeps NaN depends on the max instruction
 * the compiler picks.) */
static inline float sn_relu(float x) { return x > 0.0f || x != x ? x : 0.0f; }

/* dy * relu'(x): dy if x > 0, else 0 */
static inline float sn_relu_grad(float dy, float x) { return x > 0.0f ? dy : 0.0f; }

/* x if x > 0, else slope * x */
static inline float sn_leaky_relu(float x, float slope) { return x > 0.0f ? x : slope * x; }

/* dy * leaky_relu'(x): dy if x > 0, else slope * dy */
static inline float sn_leaky_relu_grad(float dy, float x, float slope)
{
    return x > 0.0f ? dy : slope * dy;
}

/* 1 / (1 + e^-x), written so exp never overflows: for x < 0 it is
 * e^x / (1 + e^x) */
static inline float sn_sigmoid(float x)
{
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

/* dy * sigmoid'(x), from the output y = sigmoid(x): dy * y (1 - y) */
static inline float sn_sigmoid_grad(float dy, float y) { return dy * (y * (1.0f - y)); }

/* dy * tanh'(x), from the output y = tanh(x): dy * (1 - y^2) */
static inline float sn_tanh_grad(float dy, float y) { return dy * (1.0f - y * y); }

/* splitmix64, the counter-based generator of every random kernel (dropout,
 * augmentation): with key = sn_splitmix64(seed), draw i is
 * sn_splitmix64(key + i), so it depends only on (seed, i), never on the
 * loop order or the thread that computes it. */
static inline uint64_t sn_splitmix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif
