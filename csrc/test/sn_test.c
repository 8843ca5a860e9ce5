/* A C-only test of the kernels, for builds without Python: cross-compiled
 * for arm64 and run under qemu by tools/check_c_kernels.sh. It checks the
 * GEMM of every ISA this CPU runs (blocked, in-place panels, few-row path,
 * epilogues) against the float64-accumulating reference, threads 1 vs 2,
 * GEMMs called from several threads at once while another changes the
 * settings, the fused dense kernels against the element-wise ones (the
 * same formulas, so the same bits), that the GEMM flushes subnormals but
 * leaves the caller's mode alone, and the CNN kernels (convolution, pooling,
 * batch norm, augmentation) against float64 references written here from the
 * definitions, 1 vs 2 threads, and their SN_EINVAL cases.
 * `sn_test threads` runs the several-threads test alone (GEMMs and
 * convolutions; the script runs it under ThreadSanitizer). Prints "N passed,
 * N failed" and exits non-zero on a failure. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scratchnet.h"
#include "sn_atomic.h"
#include "sn_internal.h"

/* Under valgrind (tools/check_c_kernels.sh runs it), whose CPU emulation
 * ignores the flush-to-zero and denormals-are-zero bits of MXCSR, the
 * flush test cannot pass: it is skipped there. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

static int passed, failed;

static void check(int ok, const char *what)
{
    if (ok) {
        ++passed;
    } else {
        ++failed;
        printf("FAILED: %s\n", what);
    }
}

static float frand(unsigned *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)((*state >> 8) & 0xFFFF) / 65536.0f - 0.5f;
}

/* C from sn_gemm_f32 against sn_gemm_naive_f32, within float32 rounding */
/* sn_gemm_f32 against the naive loops, A's rows lda apart */
static int gemm_matches_lda(int ta, int tb, int64_t M, int64_t N, int64_t K, int64_t lda,
                            float alpha, float beta, unsigned seed)
{
    const int64_t ldb = (tb ? K : N) + 1, ldc = N + 2;
    const int64_t arows = ta ? K : M, brows = tb ? N : K;
    float *A = malloc(sizeof(float) * (size_t)(arows * lda + 1));
    float *B = malloc(sizeof(float) * (size_t)(brows * ldb + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *R = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    unsigned s = seed;
    for (int64_t i = 0; i < arows * lda; ++i) A[i] = frand(&s);
    for (int64_t i = 0; i < brows * ldb; ++i) B[i] = frand(&s);
    for (int64_t i = 0; i < M * ldc; ++i) C[i] = R[i] = frand(&s);
    int ok = sn_gemm_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) == SN_OK &&
             sn_gemm_naive_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc) == SN_OK;
    const float tol = 1e-5f * (float)(K + 2);
    for (int64_t i = 0; ok && i < M; ++i)
        for (int64_t j = 0; j < ldc; ++j) {
            const float c = C[i * ldc + j], r = R[i * ldc + j];
            if (!(fabsf(c - r) <= tol * (1.0f + fabsf(r)))) ok = 0;
        }
    free(A);
    free(B);
    free(C);
    free(R);
    return ok;
}

static int gemm_matches(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                        float beta, unsigned seed)
{
    return gemm_matches_lda(ta, tb, M, N, K, (ta ? M : K) + 3, alpha, beta, seed);
}

static void test_gemm(void)
{
    const int64_t sizes[] = {1, 2, 3, 4, 5, 7, 13, 33, 97, 129, 300};
    const int n = (int)(sizeof sizes / sizeof sizes[0]);
    for (int isa = SN_ISA_GENERIC; isa <= sn_isa_best(); ++isa) {
        sn_set_isa(isa);
        unsigned seed = 1;
        int ok = 1;
        for (int a = 0; a < n; ++a)
            for (int b = 0; b < n; b += 2)
                for (int c = 0; c < n; c += 3)
                    for (int t = 0; t < 4; ++t)
                        ok &= gemm_matches(t & 1, t >> 1, sizes[a], sizes[b], sizes[c], 0.75f,
                                           t == 3 ? 0.0f : 0.5f, seed++);
        char what[64];
        snprintf(what, sizeof what, "gemm against the reference, isa %s", sn_isa_name(isa));
        check(ok, what);
        /* A's rows 16 KiB apart all fall in one L1 set: the driver packs
         * every panel of A (plain or transposed) instead of reading it in
         * place, so the micro-kernel's packed loop runs on whole tiles */
        ok = 1;
        for (int t = 0; t < 4; ++t)
            ok &= gemm_matches_lda(t & 1, t >> 1, 97, 45, 300, 4096, 0.75f, 0.5f, seed++);
        snprintf(what, sizeof what, "gemm with A packed, isa %s", sn_isa_name(isa));
        check(ok, what);
        /* On one thread, a few rows more than mc with K short of kc: where
         * A's rows are read in place (plain A, rows close together) they
         * are one block, and B's panels are packed as they are used (the
         * last one ragged); else mc blocks, B packed first */
        int64_t blk[10];
        sn_gemm_blocking(isa, blk);
        const int64_t nr = blk[1], kc = blk[2], mc = blk[3];
        sn_set_num_threads(1);
        ok = 1;
        for (int t = 0; t < 4; ++t)
            ok &= gemm_matches_lda(t & 1, t >> 1, mc + 2, 2 * nr + 5, kc * 3 / 4,
                                   (t & 1 ? mc + 2 : kc * 3 / 4) + 8, 0.75f, t == 3 ? 0.0f : 0.5f,
                                   seed++);
        sn_set_num_threads(sn_max_threads());
        snprintf(what, sizeof what, "gemm of mc + 2 rows, K short of kc, isa %s", sn_isa_name(isa));
        check(ok, what);
    }
    sn_set_isa(sn_isa_best());
}

static void test_threads_identical(void)
{
    const int64_t M = 200, N = 150, K = 300;
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
    float *C1 = malloc(sizeof(float) * M * N), *C2 = malloc(sizeof(float) * M * N);
    unsigned s = 7;
    for (int64_t i = 0; i < M * K; ++i) A[i] = frand(&s);
    for (int64_t i = 0; i < K * N; ++i) B[i] = frand(&s);
    sn_set_num_threads(1);
    sn_gemm_f32(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C1, N);
    sn_set_num_threads(2);
    sn_gemm_f32(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C2, N);
    check(memcmp(C1, C2, sizeof(float) * M * N) == 0, "gemm: 1 and 2 threads, same bits");
    free(A);
    free(B);
    free(C1);
    free(C2);
}

static void test_dense_epilogue(void)
{
    /* y = relu(x W + b) for 3 rows (few-row path) and 40 rows (blocked) */
    for (int64_t M = 3; M <= 40; M += 37) {
        const int64_t K = 50, N = 70;
        float *x = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * K * N);
        float *b = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * M * N);
        unsigned s = 3;
        for (int64_t i = 0; i < M * K; ++i) x[i] = frand(&s);
        for (int64_t i = 0; i < K * N; ++i) W[i] = frand(&s);
        for (int64_t j = 0; j < N; ++j) b[j] = frand(&s);
        int ok = sn_dense_forward_f32(y, x, W, b, M, K, N, SN_ACT_RELU, 0.0f) == SN_OK;
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
                double z = b[j];
                for (int64_t k = 0; k < K; ++k) z += (double)x[i * K + k] * W[k * N + j];
                const double want = z > 0 ? z : 0;
                if (fabs(y[i * N + j] - want) > 1e-4) ok = 0;
            }
        check(ok, M == 3 ? "dense relu, few rows" : "dense relu, blocked");
        free(x);
        free(W);
        free(b);
        free(y);
    }
}

/* act(h) by the element-wise kernels */
static void act_forward(float *y, const float *h, int64_t n, int act, float slope)
{
    switch (act) {
    case SN_ACT_RELU: sn_relu_forward_f32(y, h, n); break;
    case SN_ACT_LEAKY_RELU: sn_leaky_relu_forward_f32(y, h, n, slope); break;
    case SN_ACT_SIGMOID: sn_sigmoid_forward_f32(y, h, n); break;
    default: sn_tanh_forward_f32(y, h, n); break;
    }
}

/* dx = dy * act'(h) by the element-wise kernels, given h and y = act(h) */
static void act_backward(float *dx, const float *dy, const float *h, const float *y, int64_t n,
                         int act, float slope)
{
    switch (act) {
    case SN_ACT_RELU: sn_relu_backward_f32(dx, dy, h, n); break;
    case SN_ACT_LEAKY_RELU: sn_leaky_relu_backward_f32(dx, dy, h, n, slope); break;
    case SN_ACT_SIGMOID: sn_sigmoid_backward_f32(dx, dy, y, n); break;
    default: sn_tanh_backward_f32(dx, dy, y, n); break;
    }
}

/* The fused dense kernels (activation in the GEMM's epilogue) and the
 * layer-by-layer kernels (GEMM, then bias, dropout mask and activation
 * element-wise) apply the same formulas in the same order: same bits. */
static void test_fused_matches_elementwise(void)
{
    const float slope = 0.1f;
    for (int act = SN_ACT_RELU; act <= SN_ACT_TANH; ++act)
        for (int64_t M = 3; M <= 40; M += 37) {
            const int64_t K = 50, N = 70;
            float *x = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * K * N);
            float *b = malloc(sizeof(float) * N), *y1 = malloc(sizeof(float) * M * N);
            float *y2 = malloc(sizeof(float) * M * N), *dz = malloc(sizeof(float) * M * N);
            float *h = malloc(sizeof(float) * M * K), *mask = malloc(sizeof(float) * M * K);
            float *g1 = malloc(sizeof(float) * M * K), *g2 = malloc(sizeof(float) * M * K);
            float *dW = malloc(sizeof(float) * K * N);
            unsigned s = 11;
            for (int64_t i = 0; i < M * K; ++i) h[i] = 8.0f * frand(&s);
            for (int64_t i = 0; i < K * N; ++i) W[i] = frand(&s);
            for (int64_t j = 0; j < N; ++j) b[j] = frand(&s);
            for (int64_t i = 0; i < M * N; ++i) dz[i] = frand(&s);
            for (int64_t i = 0; i < M * K; ++i) mask[i] = frand(&s) < 0.3f ? 0.0f : 1.25f;
            act_forward(x, h, M * K, act, slope); /* the layer below's output */
            /* forward: y = act(x W + b) */
            int ok = sn_dense_forward_f32(y1, x, W, b, M, K, N, act, slope) == SN_OK;
            sn_gemm_f32(0, 0, M, N, K, 1.0f, x, K, W, N, 0.0f, y2, N);
            sn_bias_add_f32(y2, N, b, M, N);
            act_forward(y2, y2, M * N, act, slope);
            const int fwd = ok && memcmp(y1, y2, sizeof(float) * M * N) == 0;
            /* backward: the gradient at h = act'(h) * mask * (dz W^T) */
            ok = sn_dense_backward_f32(dW, NULL, g1, dz, x, W, x, mask, M, K, N, act, slope,
                                       0.0f) == SN_OK;
            sn_gemm_f32(0, 1, M, K, N, 1.0f, dz, N, W, N, 0.0f, g2, K);
            sn_mul_f32(g2, g2, mask, M * K);
            act_backward(g2, g2, h, x, M * K, act, slope);
            const int bwd = ok && memcmp(g1, g2, sizeof(float) * M * K) == 0;
            char what[96];
            snprintf(what, sizeof what, "fused dense = element-wise kernels, act %d, %d rows: "
                     "forward", act, (int)M);
            check(fwd, what);
            snprintf(what, sizeof what, "fused dense = element-wise kernels, act %d, %d rows: "
                     "backward", act, (int)M);
            check(bwd, what);
            free(x);
            free(W);
            free(b);
            free(y1);
            free(y2);
            free(dz);
            free(h);
            free(mask);
            free(g1);
            free(g2);
            free(dW);
        }
}

/* SN_EINVAL comes before anything is written (scratchnet.h) */
static int all_equal(const float *x, int n, float v)
{
    for (int i = 0; i < n; ++i)
        if (x[i] != v) return 0;
    return 1;
}

static void test_einval_leaves_outputs_untouched(void)
{
    float A[12], B[12], C[12], dW[12], dz[12], dzb[12], probs[12];
    for (int i = 0; i < 12; ++i) A[i] = B[i] = dz[i] = 1.0f;
    for (int i = 0; i < 12; ++i) C[i] = dW[i] = dzb[i] = probs[i] = 7.0f;
    int ok = sn_gemm_f32(0, 0, 3, 4, 3, 1.0f, A, 2 /* lda < K */, B, 4, 0.0f, C, 4) ==
             SN_EINVAL;
    check(ok && all_equal(C, 12, 7.0f), "gemm: SN_EINVAL leaves C untouched");
    /* x is 3 x 3, W would be 3 x 4: missing W is found before dW is written */
    ok = sn_dense_backward_f32(dW, NULL, dzb, dz, A, NULL, A, NULL, 3, 3, 4, SN_ACT_NONE, 0.0f,
                               0.0f) == SN_EINVAL;
    check(ok && all_equal(dW, 12, 7.0f) && all_equal(dzb, 12, 7.0f),
          "dense backward: SN_EINVAL leaves dW and dz_below untouched");
    const int64_t labels[3] = {0, 1, 4};
    double loss = 7.0;
    ok = sn_xent_forward_f32(&loss, probs, A, labels, 3, 4) == SN_EINVAL;
    check(ok && loss == 7.0 && all_equal(probs, 12, 7.0f),
          "xent forward: a bad label leaves loss and probs untouched");
}

static void test_flush_to_zero(void)
{
    if (RUNNING_ON_VALGRIND) {
        printf("skipped under valgrind (no FTZ/DAZ emulation): gemm flushes subnormals\n");
        return;
    }
    float A[16], B[16], C[16];
    for (int i = 0; i < 16; ++i) A[i] = B[i] = 1e-20f;
    sn_gemm_f32(0, 0, 4, 4, 4, 1.0f, A, 4, B, 4, 0.0f, C, 4);
    int zero = 1;
    for (int i = 0; i < 16; ++i) zero &= C[i] == 0.0f;
    check(zero, "gemm flushes subnormal products to zero");
    /* K = 0: C = beta * C alone, 1e-40 flushed as well */
    for (int i = 0; i < 16; ++i) C[i] = 1e-20f;
    sn_gemm_f32(0, 0, 4, 4, 0, 1.0f, A, 1, B, 4, 1e-20f, C, 4);
    zero = 1;
    for (int i = 0; i < 16; ++i) zero &= C[i] == 0.0f;
    check(zero, "gemm with K = 0 flushes subnormal results of beta * C to zero");
    volatile float tiny = 1e-20f;
    check(tiny * tiny != 0.0f, "the caller keeps gradual underflow");
}

static void test_arm64_uses_neon(void)
{
#if defined(__aarch64__)
    int64_t blk[10];
    sn_gemm_blocking(SN_ISA_GENERIC, blk);
    check(blk[0] == 8 && blk[1] == 12, "arm64: the generic path is the 8x12 NEON kernel");
#endif
}

/* ---- the CNN kernels: convolution, pooling, batch norm, augmentation ----
 * Each is compared with a plain float64 reference written here from the
 * definitions in scratchnet.h, over a table of shapes, run with 1 and with
 * 2 threads (the same bits); the last shape of each table is large enough
 * for the kernels to use the second thread. */

/* test buffers, freed together by arena_free (each thread its own) */
static _Thread_local void *g_arena[64];
static _Thread_local int g_arena_n;

static void *arena_alloc(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p || g_arena_n == (int)(sizeof g_arena / sizeof g_arena[0])) {
        printf("out of test memory\n");
        exit(2);
    }
    return g_arena[g_arena_n++] = p;
}

static void arena_free(void)
{
    while (g_arena_n > 0) free(g_arena[--g_arena_n]);
}

/* n floats, all POISON: an output a kernel leaves unwritten shows */
#define POISON (-7e30f)
static float *floats(int64_t n)
{
    float *x = arena_alloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; ++i) x[i] = POISON;
    return x;
}

static double *doubles(int64_t n) { return arena_alloc(sizeof(double) * (size_t)n); }

/* n values in [-0.5, 0.5); levels > 0 rounds them to multiples of 1 / levels
 * (ties on purpose) */
static float *random_floats(int64_t n, unsigned seed, int levels)
{
    float *x = floats(n);
    for (int64_t i = 0; i < n; ++i) {
        x[i] = frand(&seed);
        if (levels > 0) x[i] = floorf(x[i] * (float)levels) / (float)levels;
    }
    return x;
}

/* got[i] within tol of want[i], relative to max(1, |want|); NaN matches NaN */
static int near(const float *got, const double *want, int64_t n, double tol)
{
    for (int64_t i = 0; i < n; ++i) {
        const double err = fabs(got[i] - want[i]), scale = fmax(1.0, fabs(want[i]));
        if (isnan(want[i]) ? !isnan(got[i]) : !(err <= tol * scale)) return 0;
    }
    return 1;
}

#define CNN_TOL 1e-4

/* the same bits: n floats, or n int32 */
static int same(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static int same_i32(const int32_t *a, const int32_t *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(int32_t)) == 0;
}

/* "<what>, shape <i>: <part>" */
static void check_part(int ok, const char *what, int shape, const char *part)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s, shape %d: %s", what, shape, part);
    check(ok, msg);
}

/* ---- convolution ---- */

typedef struct {
    int64_t N, C, H, W, K, kh, kw, sh, sw, ph, pw;
} conv_shape;

static const conv_shape conv_shapes[] = {
    {1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0},     /* one of everything */
    {2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1},     /* padding 1; no bias, no dx */
    {3, 2, 9, 8, 3, 5, 5, 2, 2, 2, 2},     /* 5x5, stride 2, padding 2 */
    {2, 3, 9, 10, 4, 3, 3, 2, 2, 1, 1},    /* 3x3, stride 2, padding 1 */
    {2, 2, 6, 7, 3, 1, 1, 2, 1, 0, 0},     /* 1x1, strides (2, 1) */
    {1, 3, 8, 5, 2, 3, 5, 1, 2, 1, 2},     /* 3x5 kernel, strides (1, 2), padding (1, 2) */
    {3, 1, 5, 9, 2, 5, 3, 2, 1, 2, 0},     /* 5x3 kernel, padding (2, 0) */
    {2, 2, 4, 4, 2, 5, 5, 1, 1, 1, 1},     /* a kernel larger than the image */
    {4, 8, 20, 20, 16, 3, 3, 1, 1, 1, 1},  /* threads */
};

/* y, dw, db, dx by the definitions (dw and db starting from beta times dw0, db0) */
static void conv_reference(const conv_shape *s, int64_t OH, int64_t OW, const float *x,
                           const float *w, const float *b, const float *dy, const float *dw0,
                           const float *db0, float beta, double *y, double *dw, double *db,
                           double *dx)
{
    const int64_t ckk = s->C * s->kh * s->kw;
    for (int64_t i = 0; i < s->K * ckk; ++i) dw[i] = beta * (double)dw0[i];
    for (int64_t k = 0; k < s->K; ++k) db[k] = beta * (double)db0[k];
    memset(dx, 0, sizeof(double) * (size_t)(s->N * s->C * s->H * s->W));
    for (int64_t n = 0; n < s->N; ++n)
        for (int64_t k = 0; k < s->K; ++k)
            for (int64_t oh = 0; oh < OH; ++oh)
                for (int64_t ow = 0; ow < OW; ++ow) {
                    const int64_t o = ((n * s->K + k) * OH + oh) * OW + ow;
                    double acc = b ? b[k] : 0.0;
                    db[k] += dy[o];
                    for (int64_t c = 0; c < s->C; ++c)
                        for (int64_t i = 0; i < s->kh; ++i)
                            for (int64_t j = 0; j < s->kw; ++j) {
                                const int64_t ih = oh * s->sh + i - s->ph;
                                const int64_t iw = ow * s->sw + j - s->pw;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                                const int64_t r = (c * s->kh + i) * s->kw + j;
                                const int64_t at = ((n * s->C + c) * s->H + ih) * s->W + iw;
                                acc += (double)w[k * ckk + r] * x[at];
                                dw[k * ckk + r] += (double)dy[o] * x[at];
                                dx[at] += (double)dy[o] * w[k * ckk + r];
                            }
                    y[o] = acc;
                }
}

/* one convolution case: inputs, and the reference outputs (r*) */
typedef struct {
    sn_conv2d_cfg cfg;
    int64_t nx, ny, nw;       /* elements of x, y, w */
    int bare;                 /* no bias, db or dx */
    const float *x, *w, *b, *dy, *dw0, *db0;
    double *ry, *rdw, *rdb, *rdx;
} conv_case;

#define CONV_BETA 0.5f

/* SN_OK and the case, or SN_EINVAL if sn_conv2d_init rejects the shape */
static int conv_case_make(conv_case *cc, const conv_shape *s, unsigned seed, int bare)
{
    if (sn_conv2d_init(&cc->cfg, s->N, s->C, s->H, s->W, s->K, s->kh, s->kw, s->sh, s->sw,
                       s->ph, s->pw) != SN_OK)
        return SN_EINVAL;
    const int64_t OH = cc->cfg.OH, OW = cc->cfg.OW;
    cc->nx = s->N * s->C * s->H * s->W, cc->ny = s->N * s->K * OH * OW;
    cc->nw = s->K * s->C * s->kh * s->kw;
    cc->bare = bare;
    cc->x = random_floats(cc->nx, seed, 0);
    cc->w = random_floats(cc->nw, seed + 1, 0);
    cc->b = bare ? NULL : random_floats(s->K, seed + 2, 0);
    cc->dy = random_floats(cc->ny, seed + 3, 0);
    cc->dw0 = random_floats(cc->nw, seed + 4, 0);
    cc->db0 = random_floats(s->K, seed + 5, 0);
    cc->ry = doubles(cc->ny), cc->rdw = doubles(cc->nw), cc->rdb = doubles(s->K);
    cc->rdx = doubles(cc->nx);
    conv_reference(s, OH, OW, cc->x, cc->w, cc->b, cc->dy, cc->dw0, cc->db0, CONV_BETA, cc->ry,
                   cc->rdw, cc->rdb, cc->rdx);
    return SN_OK;
}

/* out = {y, dw, db, dx} of forward and backward (dw, db from dw0, db0 with
 * beta CONV_BETA); returns the OR of the statuses */
static int conv_case_run(const conv_case *cc, float *out[4])
{
    const sn_conv2d_cfg *cfg = &cc->cfg;
    const int64_t ws_len = sn_conv2d_workspace_len(cfg);
    if (ws_len < 1) return SN_EINVAL;
    float *ws = floats(ws_len);
    out[0] = floats(cc->ny), out[1] = floats(cc->nw), out[2] = floats(cfg->K);
    out[3] = floats(cc->nx);
    memcpy(out[1], cc->dw0, sizeof(float) * (size_t)cc->nw);
    memcpy(out[2], cc->db0, sizeof(float) * (size_t)cfg->K);
    return sn_conv2d_forward_f32(cfg, out[0], cc->x, cc->w, cc->b, ws) |
           sn_conv2d_backward_f32(cfg, out[1], cc->bare ? NULL : out[2],
                                  cc->bare ? NULL : out[3], cc->dy, cc->x, cc->w, CONV_BETA, ws);
}

static void test_conv(void)
{
    const int n_shapes = (int)(sizeof conv_shapes / sizeof conv_shapes[0]);
    for (int si = 0; si < n_shapes; ++si) {
        const conv_shape *s = &conv_shapes[si];
        conv_case cc;
        if (conv_case_make(&cc, s, 100u * (unsigned)si, si == 1) != SN_OK) {
            check_part(0, "conv", si, "sn_conv2d_init");
            continue;
        }
        check_part(cc.cfg.OH == (s->H + 2 * s->ph - s->kh) / s->sh + 1 &&
                       cc.cfg.OW == (s->W + 2 * s->pw - s->kw) / s->sw + 1,
                   "conv", si, "output size");
        /* the default chunk, then 2 or 1 images per GEMM (a partial last chunk) */
        const int64_t chunks[2] = {cc.cfg.chunk, s->N > 2 ? 2 : 1};
        for (int ci = 0; ci < 2; ++ci) {
            cc.cfg.chunk = chunks[ci];
            float *out[2][4];
            int status = SN_OK;
            for (int t = 0; t < 2; ++t) {
                sn_set_num_threads(t + 1);
                status |= conv_case_run(&cc, out[t]);
            }
            sn_set_num_threads(sn_max_threads());
            char what[48];
            snprintf(what, sizeof what, "conv (chunk %d)", (int)cc.cfg.chunk);
            float *const *o = out[0];
            check_part(status == SN_OK, what, si, "status");
            check_part(near(o[0], cc.ry, cc.ny, CNN_TOL), what, si, "y against the reference");
            check_part(near(o[1], cc.rdw, cc.nw, CNN_TOL), what, si, "dw against the reference");
            if (cc.bare) {
                check_part(same(o[2], cc.db0, s->K) && all_equal(o[3], (int)cc.nx, POISON), what, si,
                           "db and dx NULL: not written");
            } else {
                check_part(near(o[2], cc.rdb, s->K, CNN_TOL), what, si, "db against the reference");
                check_part(near(o[3], cc.rdx, cc.nx, CNN_TOL), what, si,
                           "dx against the reference");
            }
            const int64_t n[4] = {cc.ny, cc.nw, s->K, cc.nx};
            int bits = 1;
            for (int k = 0; k < 4; ++k) bits &= same(out[0][k], out[1][k], n[k]);
            check_part(bits, what, si, "1 and 2 threads, same bits");
        }
        arena_free();
    }
}

static void test_conv_einval(void)
{
    sn_conv2d_cfg cfg, seven;
    memset(&seven, 7, sizeof seven);
    cfg = seven;
    int ok = sn_conv2d_init(&cfg, 1, 1, 4, 4, 1, 7, 3, 1, 1, 1, 1) == SN_EINVAL && /* 4 + 2 < 7 */
             sn_conv2d_init(&cfg, 1, 1, 4, 4, 1, 3, 3, 0, 1, 0, 0) == SN_EINVAL && /* stride 0 */
             sn_conv2d_init(&cfg, 1, 1, 4, 4, 1, 3, 3, 1, 1, -1, 0) == SN_EINVAL &&
             sn_conv2d_init(&cfg, 1, 0, 4, 4, 1, 3, 3, 1, 1, 0, 0) == SN_EINVAL;
    check(ok && memcmp(&cfg, &seven, sizeof cfg) == 0, "conv init: SN_EINVAL, cfg untouched");
    float x[16], w[9], y[4], dw[9], ws[64];
    for (int i = 0; i < 16; ++i) x[i] = 1.0f;
    for (int i = 0; i < 9; ++i) w[i] = dw[i] = 7.0f;
    for (int i = 0; i < 4; ++i) y[i] = 7.0f;
    ok = sn_conv2d_init(&cfg, 1, 1, 4, 4, 1, 3, 3, 1, 1, 0, 0) == SN_OK &&
         sn_conv2d_workspace_len(&cfg) <= 64;
    sn_conv2d_cfg bad = cfg;
    bad.chunk = 2; /* more than N */
    ok &= sn_conv2d_workspace_len(&bad) == -1;
    bad = cfg;
    bad.OW = 3; /* not what init derives */
    ok &= sn_conv2d_forward_f32(&bad, y, x, w, NULL, ws) == SN_EINVAL;
    ok &= sn_conv2d_forward_f32(&cfg, y, NULL, w, NULL, ws) == SN_EINVAL;
    ok &= sn_conv2d_backward_f32(&cfg, dw, NULL, NULL, x, NULL, w, 0.0f, ws) == SN_EINVAL;
    check(ok && all_equal(y, 4, 7.0f) && all_equal(dw, 9, 7.0f),
          "conv forward/backward: SN_EINVAL (bad cfg, NULL array), outputs untouched");
}

/* ---- pooling ---- */

typedef struct {
    int64_t planes, H, W, kh, kw, sh, sw;
} pool_shape;

static const pool_shape pool_shapes[] = {
    {1, 4, 4, 2, 2, 2, 2},     /* the common 2x2, stride 2 */
    {5, 7, 9, 2, 2, 2, 2},     /* 2x2 stride 2, odd sizes: a row and a column left out */
    {3, 7, 9, 3, 3, 2, 2},     /* overlapping windows */
    {2, 5, 8, 2, 3, 1, 2},     /* non-square window, strides (1, 2) */
    {4, 8, 5, 2, 1, 3, 1},     /* stride larger than the window */
    {3, 4, 5, 4, 5, 1, 1},     /* the window is the plane */
    {2, 9, 7, 1, 1, 2, 2},     /* 1x1 */
    {2, 6, 30, 3, 3, 1, 1},    /* stride 1, long rows */
    {3, 5, 40, 2, 2, 2, 2},    /* 2x2 stride 2, long rows */
    {64, 24, 24, 2, 2, 2, 2},  /* threads */
};

/* the reference max-pool: the first maximum in scan order, NaN wins */
static void maxpool_reference(const pool_shape *s, int64_t Ho, int64_t Wo, const float *x,
                              const float *dy, float *y, int32_t *am, double *dx)
{
    memset(dx, 0, sizeof(double) * (size_t)(s->planes * s->H * s->W));
    for (int64_t p = 0; p < s->planes; ++p)
        for (int64_t i = 0; i < Ho; ++i)
            for (int64_t j = 0; j < Wo; ++j) {
                int64_t best = -1;
                for (int64_t a = 0; a < s->kh; ++a)
                    for (int64_t b = 0; b < s->kw; ++b) {
                        const int64_t at = (i * s->sh + a) * s->W + j * s->sw + b;
                        const float v = x[p * s->H * s->W + at];
                        if (best < 0) {
                            best = at;
                            continue;
                        }
                        const float m = x[p * s->H * s->W + best];
                        if (!isnan(m) && (isnan(v) || v > m)) best = at;
                    }
                const int64_t o = (p * Ho + i) * Wo + j;
                y[o] = x[p * s->H * s->W + best];
                am[o] = (int32_t)best;
                dx[p * s->H * s->W + best] += dy[o];
            }
}

/* the reference average pool, forward and backward */
static void avgpool_reference(const pool_shape *s, int64_t Ho, int64_t Wo, const float *x,
                              const float *dy, double *y, double *dx)
{
    const double inv = 1.0 / (double)(s->kh * s->kw);
    memset(dx, 0, sizeof(double) * (size_t)(s->planes * s->H * s->W));
    for (int64_t p = 0; p < s->planes; ++p)
        for (int64_t i = 0; i < Ho; ++i)
            for (int64_t j = 0; j < Wo; ++j) {
                const int64_t o = (p * Ho + i) * Wo + j;
                double sum = 0.0;
                for (int64_t a = 0; a < s->kh; ++a)
                    for (int64_t b = 0; b < s->kw; ++b) {
                        const int64_t at = p * s->H * s->W + (i * s->sh + a) * s->W + j * s->sw + b;
                        sum += x[at];
                        dx[at] += dy[o] * inv;
                    }
                y[o] = sum * inv;
            }
}

static void test_pool(void)
{
    const int n_shapes = (int)(sizeof pool_shapes / sizeof pool_shapes[0]);
    for (int si = 0; si < n_shapes; ++si) {
        const pool_shape *s = &pool_shapes[si];
        int64_t Ho = 0, Wo = 0;
        const int sized = sn_pool2d_out_size(&Ho, &Wo, s->H, s->W, s->kh, s->kw, s->sh, s->sw);
        check_part(sized == SN_OK && Ho == (s->H - s->kh) / s->sh + 1 &&
                       Wo == (s->W - s->kw) / s->sw + 1, "pool", si, "output size");
        const int64_t nx = s->planes * s->H * s->W, ny = s->planes * Ho * Wo;
        /* max-pool: 8 levels (ties in most windows), every 13th value -0 (ties
         * of -0 and +0), every 29th NaN, every third of those with a NaN after it */
        float *xq = random_floats(nx, 700u + (unsigned)si, 8);
        for (int64_t i = 5; i < nx; i += 13) xq[i] = -0.0f;
        for (int64_t i = 11; i + 1 < nx; i += 29) {
            xq[i] = NAN;
            if (i % 3 == 0) xq[i + 1] = NAN;
        }
        const float *xa = random_floats(nx, 800u + (unsigned)si, 0);
        const float *dy = random_floats(ny, 900u + (unsigned)si, 0);
        float *my = floats(ny);
        double *mdx = doubles(nx), *ay = doubles(ny), *adx = doubles(nx);
        int32_t *mam = arena_alloc(sizeof(int32_t) * (size_t)ny);
        maxpool_reference(s, Ho, Wo, xq, dy, my, mam, mdx);
        avgpool_reference(s, Ho, Wo, xa, dy, ay, adx);
        float *y[2], *dx[2], *ya[2], *dxa[2];
        int32_t *am[2];
        int status = SN_OK;
        for (int t = 0; t < 2; ++t) {
            sn_set_num_threads(t + 1);
            y[t] = floats(ny), dx[t] = floats(nx), ya[t] = floats(ny), dxa[t] = floats(nx);
            am[t] = arena_alloc(sizeof(int32_t) * (size_t)ny);
            memset(am[t], 0xff, sizeof(int32_t) * (size_t)ny); /* -1: unwritten */
            status |= sn_maxpool2d_forward_f32(y[t], am[t], xq, s->planes, s->H, s->W, s->kh,
                                               s->kw, s->sh, s->sw);
            status |= sn_maxpool2d_backward_f32(dx[t], dy, am[t], s->planes, s->H, s->W, Ho, Wo);
            status |= sn_avgpool2d_forward_f32(ya[t], xa, s->planes, s->H, s->W, s->kh, s->kw,
                                               s->sh, s->sw);
            status |= sn_avgpool2d_backward_f32(dxa[t], dy, s->planes, s->H, s->W, s->kh, s->kw,
                                                s->sh, s->sw);
        }
        sn_set_num_threads(sn_max_threads());
        check_part(status == SN_OK, "pool", si, "status");
        /* the maximum is one of the inputs: the same bits */
        check_part(same(y[0], my, ny) && same_i32(am[0], mam, ny), "max-pool", si,
                   "y and argmax (first maximum in scan order, NaN wins) = the reference");
        check_part(near(dx[0], mdx, nx, CNN_TOL), "max-pool", si, "dx against the reference");
        check_part(near(ya[0], ay, ny, CNN_TOL), "avg-pool", si, "y against the reference");
        check_part(near(dxa[0], adx, nx, CNN_TOL), "avg-pool", si, "dx against the reference");
        check_part(same(y[0], y[1], ny) && same_i32(am[0], am[1], ny) && same(dx[0], dx[1], nx) &&
                       same(ya[0], ya[1], ny) && same(dxa[0], dxa[1], nx),
                   "pool", si, "1 and 2 threads, same bits");
        /* global average pool: the plane's H W values */
        float *gy[2], *gdx[2];
        double *ry = doubles(s->planes), *rdx = doubles(nx);
        const int64_t hw = s->H * s->W;
        for (int64_t p = 0; p < s->planes; ++p) {
            double sum = 0.0;
            for (int64_t k = 0; k < hw; ++k) sum += xa[p * hw + k];
            ry[p] = sum / (double)hw;
            for (int64_t k = 0; k < hw; ++k) rdx[p * hw + k] = dy[p] / (double)hw;
        }
        status = SN_OK;
        for (int t = 0; t < 2; ++t) {
            sn_set_num_threads(t + 1);
            gy[t] = floats(s->planes), gdx[t] = floats(nx);
            status |= sn_global_avgpool_forward_f32(gy[t], xa, s->planes, hw);
            status |= sn_global_avgpool_backward_f32(gdx[t], dy, s->planes, hw);
        }
        sn_set_num_threads(sn_max_threads());
        check_part(status == SN_OK && near(gy[0], ry, s->planes, CNN_TOL) &&
                       near(gdx[0], rdx, nx, CNN_TOL), "global avg-pool", si,
                   "y and dx against the reference");
        check_part(same(gy[0], gy[1], s->planes) && same(gdx[0], gdx[1], nx),
                   "global avg-pool", si, "1 and 2 threads, same bits");
        arena_free();
    }
}

static void test_pool_einval(void)
{
    float x[20], y[20], dx[21];
    int32_t am[20];
    for (int i = 0; i < 20; ++i) x[i] = 1.0f, y[i] = 7.0f, am[i] = 7;
    int ok = sn_maxpool2d_forward_f32(y, am, x, 1, 4, 5, 5, 2, 1, 1) == SN_EINVAL && /* kh > H */
             sn_maxpool2d_forward_f32(y, am, x, 1, 4, 5, 2, 2, 0, 1) == SN_EINVAL && /* stride 0 */
             sn_maxpool2d_forward_f32(y, am, x, 1, (int64_t)1 << 16, (int64_t)1 << 16, 2, 2, 2,
                                      2) == SN_EINVAL && /* H W > INT32_MAX */
             sn_avgpool2d_forward_f32(y, x, 1, 4, 5, 2, 6, 1, 1) == SN_EINVAL &&
             sn_avgpool2d_backward_f32(y, x, 1, 0, 5, 1, 1, 1, 1) == SN_EINVAL &&
             sn_global_avgpool_forward_f32(y, x, 1, 0) == SN_EINVAL;
    int64_t Ho = 7, Wo = 7;
    ok &= sn_pool2d_out_size(&Ho, &Wo, 4, 5, 2, 2, 2, 0) == SN_EINVAL && Ho == 7 && Wo == 7;
    check(ok && all_equal(y, 20, 7.0f) && am[0] == 7 && am[19] == 7,
          "pool: SN_EINVAL for bad sizes, outputs untouched");
    /* an arg-max outside the 4 x 5 plane (20, then -1) is skipped and
     * reported, the others written */
    const int32_t bad[2][4] = {{0, 5, 20, 5}, {0, 5, -1, 5}};
    const float dy[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    for (int k = 0; k < 2; ++k) {
        dx[20] = 7.0f;
        ok = sn_maxpool2d_backward_f32(dx, dy, bad[k], 1, 4, 5, 2, 2) == SN_EINVAL;
        check(ok && dx[0] == 1.0f && dx[5] == 6.0f && dx[1] == 0.0f && dx[19] == 0.0f &&
                  dx[20] == 7.0f,
              "max-pool backward: an index outside the plane gives SN_EINVAL, the others written");
    }
}

/* ---- batch normalisation ---- */

typedef struct {
    int64_t N, C, S;
} norm_shape;

static const norm_shape norm_shapes[] = {
    {2, 3, 5}, {5, 1, 1}, {3, 4, 7}, {1, 2, 9}, {8, 8, 576} /* threads */,
};

/* training forward and backward of channel ch by the definitions, as PyTorch:
 * the biased variance normalises, the unbiased one enters running_var */
static void norm_reference(const norm_shape *s, int training, const float *x, const float *dy,
                           const float *gamma, const float *beta, const float *rm0,
                           const float *rv0, double eps, double m, double *y, double *mean,
                           double *invstd, double *rm, double *rv, double *dx, double *dgamma,
                           double *dbeta)
{
    const int64_t n = s->N * s->S;
    for (int64_t c = 0; c < s->C; ++c) {
#define NORM_AT(b, k) (((b) * s->C + c) * s->S + (k))
        double mu = 0.0, var = 0.0;
        for (int64_t b = 0; b < s->N; ++b)
            for (int64_t k = 0; k < s->S; ++k) mu += x[NORM_AT(b, k)];
        mu /= (double)n;
        for (int64_t b = 0; b < s->N; ++b)
            for (int64_t k = 0; k < s->S; ++k) {
                const double d = x[NORM_AT(b, k)] - mu;
                var += d * d;
            }
        var /= (double)n;
        rm[c] = training ? (1 - m) * rm0[c] + m * mu : rm0[c];
        rv[c] = training ? (1 - m) * rv0[c] + m * var * (double)n / (double)(n - 1) : rv0[c];
        if (!training) mu = rm0[c], var = rv0[c];
        mean[c] = mu;
        invstd[c] = 1.0 / sqrt(var + eps);
        double sdy = 0.0, sdyxhat = 0.0;
        for (int64_t b = 0; b < s->N; ++b)
            for (int64_t k = 0; k < s->S; ++k) {
                const double xhat = (x[NORM_AT(b, k)] - mu) * invstd[c];
                y[NORM_AT(b, k)] = gamma[c] * xhat + beta[c];
                sdy += dy[NORM_AT(b, k)];
                sdyxhat += dy[NORM_AT(b, k)] * xhat;
            }
        dbeta[c] = sdy;
        dgamma[c] = sdyxhat;
        for (int64_t b = 0; b < s->N; ++b)
            for (int64_t k = 0; k < s->S; ++k) {
                const double xhat = (x[NORM_AT(b, k)] - mu) * invstd[c];
                const double d = dy[NORM_AT(b, k)];
                const double g = training ? d - sdy / (double)n - xhat * sdyxhat / (double)n : d;
                dx[NORM_AT(b, k)] = gamma[c] * invstd[c] * g;
            }
#undef NORM_AT
    }
}

/* out[i] = (float)(a * in[i] + b): inputs moved away from mean 0 and variance 1 */
static void affine(float *v, int64_t n, float a, float b)
{
    for (int64_t i = 0; i < n; ++i) v[i] = a * v[i] + b;
}

static void test_batchnorm(void)
{
    const int n_shapes = (int)(sizeof norm_shapes / sizeof norm_shapes[0]);
    /* eps large enough that leaving it out shows at the tolerance */
    const float eps = 1e-2f, momentum = 0.1f;
    for (int si = 0; si < n_shapes; ++si)
        for (int training = 1; training >= 0; --training) {
            const norm_shape *s = &norm_shapes[si];
            const int64_t nx = s->N * s->C * s->S, C = s->C;
            float *x = random_floats(nx, 1000u + (unsigned)si, 0);
            affine(x, nx, 3.0f, 1.5f);
            const float *dy = random_floats(nx, 1100u + (unsigned)si, 0);
            float *gamma = random_floats(C, 1200u + (unsigned)si, 0);
            affine(gamma, C, 1.0f, 1.0f);
            const float *beta = random_floats(C, 1300u + (unsigned)si, 0);
            const float *rm0 = random_floats(C, 1400u + (unsigned)si, 0);
            float *rv0 = random_floats(C, 1500u + (unsigned)si, 0);
            affine(rv0, C, 1.0f, 1.0f);
            double *ry = doubles(nx), *rmean = doubles(C), *rinv = doubles(C), *rrm = doubles(C);
            double *rrv = doubles(C), *rdx = doubles(nx), *rdg = doubles(C), *rdb = doubles(C);
            norm_reference(s, training, x, dy, gamma, beta, rm0, rv0, eps, momentum, ry, rmean,
                           rinv, rrm, rrv, rdx, rdg, rdb);
            float *y[2], *mean[2], *inv[2], *rm[2], *rv[2], *dx[2], *dg[2], *db[2];
            int status = SN_OK;
            for (int t = 0; t < 2; ++t) {
                sn_set_num_threads(t + 1);
                y[t] = floats(nx), dx[t] = floats(nx);
                mean[t] = floats(C), inv[t] = floats(C), rm[t] = floats(C), rv[t] = floats(C);
                dg[t] = floats(C), db[t] = floats(C);
                memcpy(rm[t], rm0, sizeof(float) * (size_t)C);
                memcpy(rv[t], rv0, sizeof(float) * (size_t)C);
                status |= sn_batchnorm_forward_f32(y[t], mean[t], inv[t], rm[t], rv[t], x, gamma,
                                                   beta, s->N, C, s->S, eps, momentum, training);
                status |= sn_batchnorm_backward_f32(dx[t], dg[t], db[t], dy, x, mean[t], inv[t],
                                                    gamma, s->N, C, s->S, training);
            }
            sn_set_num_threads(sn_max_threads());
            const char *what = training ? "batch norm, training" : "batch norm, inference";
            check_part(status == SN_OK, what, si, "status");
            check_part(near(y[0], ry, nx, CNN_TOL) && near(mean[0], rmean, C, CNN_TOL) &&
                           near(inv[0], rinv, C, CNN_TOL), what, si,
                       "y, save_mean, save_invstd against the reference");
            check_part(near(rm[0], rrm, C, CNN_TOL) && near(rv[0], rrv, C, CNN_TOL), what, si,
                       "running mean and (unbiased) variance against the reference");
            check_part(near(dx[0], rdx, nx, CNN_TOL) && near(dg[0], rdg, C, CNN_TOL) &&
                           near(db[0], rdb, C, CNN_TOL), what, si,
                       "dx, dgamma, dbeta against the reference");
            check_part(same(y[0], y[1], nx) && same(dx[0], dx[1], nx) && same(rv[0], rv[1], C) &&
                           same(dg[0], dg[1], C),
                       what, si, "1 and 2 threads, same bits");
            arena_free();
        }
}

static void test_batchnorm_einval(void)
{
    float x[8], y[8], g[2] = {1.0f, 1.0f}, b[2] = {0.0f, 0.0f}, sm[2], si[2];
    float rm[2] = {7.0f, 7.0f}, rv[2] = {7.0f, 7.0f};
    for (int i = 0; i < 8; ++i) x[i] = (float)i, y[i] = 7.0f;
    int ok = sn_batchnorm_forward_f32(y, sm, si, rm, rv, x, g, b, 2, 2, 2, 0.0f, 0.1f, 1) ==
                 SN_EINVAL &&
             sn_batchnorm_forward_f32(y, sm, si, rm, rv, x, g, b, 2, 2, 2, 1e-5f, 1.5f, 1) ==
                 SN_EINVAL &&
             sn_batchnorm_forward_f32(y, sm, si, rm, rv, x, g, b, 1, 2, 1, 1e-5f, 0.1f, 1) ==
                 SN_EINVAL &&
             sn_batchnorm_forward_f32(y, sm, si, NULL, NULL, x, g, b, 2, 2, 2, 1e-5f, 0.1f, 0) ==
                 SN_EINVAL &&
             sn_batchnorm_backward_f32(y, sm, si, x, x, rm, rv, g, 2, 0, 2, 1) == SN_EINVAL;
    check(ok && all_equal(y, 8, 7.0f) && all_equal(rm, 2, 7.0f) && all_equal(rv, 2, 7.0f),
          "batch norm: SN_EINVAL (eps 0, momentum 1.5, one value, no running statistics, C 0), "
          "outputs untouched");
}

/* ---- augmentation ---- */

/* splitmix64 written out again from its definition (Steele, Lea, Flood 2014) */
static uint64_t test_splitmix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct {
    int64_t N, C, H, W, pixels;
} augment_shape;

static const augment_shape augment_shapes[] = {
    {3, 2, 5, 7, 2}, {6, 1, 3, 3, 4} /* shifts past the plane */, {16, 8, 16, 16, 3} /* threads */,
};

static void test_augment(void)
{
    const int n_shapes = (int)(sizeof augment_shapes / sizeof augment_shapes[0]);
    for (int si = 0; si < n_shapes; ++si) {
        const augment_shape *s = &augment_shapes[si];
        const int64_t nx = s->N * s->C * s->H * s->W, hw = s->H * s->W;
        const uint64_t seed = 12345u + (uint64_t)si;
        int32_t *shifts = arena_alloc(sizeof(int32_t) * (size_t)(2 * s->N));
        int32_t *flags = arena_alloc(sizeof(int32_t) * (size_t)s->N);
        int ok = sn_random_shifts(shifts, s->N, s->pixels, seed, 0) == SN_OK &&
                 sn_random_flips(flags, s->N, seed, 0) == SN_OK;
        const uint64_t key = test_splitmix64(seed), m = 2 * (uint64_t)s->pixels + 1;
        for (int64_t k = 0; k < 2 * s->N; ++k)
            ok &= shifts[k] == (int32_t)(((test_splitmix64(key + (uint64_t)k) >> 32) * m) >> 32) -
                                   (int32_t)s->pixels;
        for (int64_t k = 0; k < s->N; ++k)
            ok &= flags[k] == (int32_t)(test_splitmix64(key + (uint64_t)k) >> 63);
        check_part(ok, "augmentation", si, "shifts and flips = the splitmix64 draws");
        const float *x = random_floats(nx, 1600u + (unsigned)si, 0);
        double *rs[2], *rf = doubles(nx);
        for (int sign = 1; sign >= -1; sign -= 2) {
            double *r = rs[sign < 0] = doubles(nx);
            for (int64_t p = 0; p < s->N * s->C; ++p)
                for (int64_t i = 0; i < s->H; ++i)
                    for (int64_t j = 0; j < s->W; ++j) {
                        const int64_t img = p / s->C;
                        const int64_t fi = i - sign * shifts[2 * img];
                        const int64_t fj = j - sign * shifts[2 * img + 1];
                        r[p * hw + i * s->W + j] = fi >= 0 && fi < s->H && fj >= 0 && fj < s->W
                                                       ? x[p * hw + fi * s->W + fj] : 0.0;
                        const int64_t mj = flags[img] ? s->W - 1 - j : j;
                        rf[p * hw + i * s->W + j] = x[p * hw + i * s->W + mj];
                    }
        }
        float *out[2][3];
        int status = SN_OK;
        for (int t = 0; t < 2; ++t) {
            sn_set_num_threads(t + 1);
            for (int k = 0; k < 3; ++k) out[t][k] = floats(nx);
            status |= sn_shift2d_f32(out[t][0], x, shifts, s->N, s->C, s->H, s->W, 1);
            status |= sn_shift2d_f32(out[t][1], x, shifts, s->N, s->C, s->H, s->W, -1);
            status |= sn_flip2d_f32(out[t][2], x, flags, s->N, s->C, s->H, s->W);
        }
        sn_set_num_threads(sn_max_threads());
        check_part(status == SN_OK && near(out[0][0], rs[0], nx, 0.0) &&
                       near(out[0][1], rs[1], nx, 0.0), "augmentation", si,
                   "shift and its adjoint = the reference");
        check_part(near(out[0][2], rf, nx, 0.0), "augmentation", si, "flip = the reference");
        check_part(same(out[0][0], out[1][0], nx) && same(out[0][1], out[1][1], nx) &&
                       same(out[0][2], out[1][2], nx),
                   "augmentation", si, "1 and 2 threads, same bits");
        arena_free();
    }
    /* every shift in [-2, 2] is drawn */
    int32_t draws[400];
    int seen[5] = {0}, ok = sn_random_shifts(draws, 200, 2, 99, 0) == SN_OK;
    for (int k = 0; k < 400; ++k) {
        ok &= draws[k] >= -2 && draws[k] <= 2;
        if (ok) seen[draws[k] + 2] = 1;
    }
    check(ok && seen[0] && seen[1] && seen[2] && seen[3] && seen[4],
          "random shifts: within [-pixels, pixels], each value drawn");
    float x[4] = {1, 2, 3, 4}, y[4] = {7, 7, 7, 7};
    int32_t sh[2] = {7, 7}, fl[1] = {1};
    ok = sn_random_shifts(sh, 1, -1, 1, 0) == SN_EINVAL && sn_random_flips(sh, -1, 1, 0) == SN_EINVAL &&
         sh[0] == 7 && sh[1] == 7 && (sh[0] = sh[1] = 0) == 0 &&
         sn_shift2d_f32(y, x, sh, 1, 1, 2, 2, 0) == SN_EINVAL &&
         sn_shift2d_f32(y, x, sh, 1, 0, 2, 2, 1) == SN_EINVAL &&
         sn_flip2d_f32(y, x, fl, 1, 1, 2, 0) == SN_EINVAL;
    check(ok && all_equal(y, 4, 7.0f), "augmentation: SN_EINVAL for bad sizes, y untouched");

    /* a share from row 3 of a 10-row batch draws what the whole batch draws
     * for those rows: dropout (4 values a row), shifts and flips */
    int32_t all_sh[20], part_sh[8], all_fl[10], part_fl[4];
    float ones[40], all_y[40], all_m[40], part_y[16], part_m[16];
    for (int k = 0; k < 40; ++k) ones[k] = 1.0f;
    ok = sn_random_shifts(all_sh, 10, 3, 5, 0) == SN_OK &&
         sn_random_shifts(part_sh, 4, 3, 5, 3) == SN_OK &&
         sn_random_flips(all_fl, 10, 5, 0) == SN_OK && sn_random_flips(part_fl, 4, 5, 3) == SN_OK &&
         sn_dropout_forward_f32(all_y, all_m, ones, 40, 0.5f, 5, 0) == SN_OK &&
         sn_dropout_forward_f32(part_y, part_m, ones, 16, 0.5f, 5, 3 * 4) == SN_OK;
    ok = ok && memcmp(part_sh, all_sh + 6, sizeof part_sh) == 0 &&
         memcmp(part_fl, all_fl + 3, sizeof part_fl) == 0 && same(part_m, all_m + 12, 16) &&
         !same(part_m, all_m, 16);
    check(ok, "random draws from row `first` = the whole batch's draws for those rows");
}

/* ---- GEMMs and convolutions from several threads at once ----
 * Each worker runs GEMMs large enough to use threads and to pack panels,
 * then convolutions (each with its own workspace), checking each against
 * the reference, while the main thread keeps changing the thread count and
 * the ISA: the packing buffers must never be shared by two calls, and the
 * settings are read without a data race. */

#define SN_TEST_WORKERS 4

static sn_atomic_int g_workers_done;

static void *gemm_worker(void *arg)
{
    const unsigned id = (unsigned)(uintptr_t)arg;
    int ok = 1;
    for (int it = 0; it < 24; ++it) {
        const int t = (int)(id + (unsigned)it) % 4;
        /* 2.3M multiply-adds: above SN_GEMM_PARALLEL_MIN_FLOPS */
        ok &= gemm_matches(t & 1, t >> 1, 150 + (int64_t)id, 130, 120, 1.0f, 0.5f,
                           1000u * id + (unsigned)it);
    }
    for (int it = 0; it < 3; ++it) {
        conv_case cc;
        float *out[4];
        ok &= conv_case_make(&cc, &conv_shapes[2 + (id + (unsigned)it) % 5], 5000u + id, 0) ==
                  SN_OK &&
              conv_case_run(&cc, out) == SN_OK && near(out[0], cc.ry, cc.ny, CNN_TOL) &&
              near(out[1], cc.rdw, cc.nw, CNN_TOL) && near(out[2], cc.rdb, cc.cfg.K, CNN_TOL) &&
              near(out[3], cc.rdx, cc.nx, CNN_TOL);
        arena_free();
    }
    sn_atomic_fetch_sub(&g_workers_done, 1);
    return (void *)(uintptr_t)ok;
}

static void test_concurrent_gemm(void)
{
    pthread_t workers[SN_TEST_WORKERS];
    sn_atomic_store(&g_workers_done, SN_TEST_WORKERS);
    int started = 1;
    for (int i = 0; i < SN_TEST_WORKERS; ++i)
        started &= pthread_create(&workers[i], NULL, gemm_worker, (void *)(uintptr_t)i) == 0;
    check(started, "gemm from several threads: threads started");
    if (!started) return;
    /* change the settings while they run */
    for (unsigned n = 0; sn_atomic_load(&g_workers_done) > 0; ++n) {
        sn_set_num_threads(1 + (int)(n % 3));
        sn_set_isa((int)(n / 3 % (unsigned)(sn_isa_best() + 1)));
        sched_yield();
    }
    int ok = 1;
    for (int i = 0; i < SN_TEST_WORKERS; ++i) {
        void *result;
        pthread_join(workers[i], &result);
        ok &= result != NULL;
    }
    check(ok, "gemm and conv from several threads at once, settings changing: against the "
              "reference");
    sn_set_num_threads(sn_max_threads());
    sn_set_isa(sn_isa_best());
}

/* ---- two halves, the second for the helper thread (sn_helper.c) ----
 * Several threads call sn_run_pair at once (one of them at a time may offer
 * a half to the helper; the others run both themselves): every half of
 * every call runs exactly once, a failing half's status comes back, and
 * the helper runs some halves. Then a one-image GEMM through the helper
 * gives the bits of the same GEMM on one thread. */

#define SN_PAIR_CALLS 3000

typedef struct {
    sn_atomic_int runs[2]; /* times each half ran */
    sn_atomic_int by_other; /* half 1 ran in a thread other than the caller */
    pthread_t caller;
    int fail_second;
} pair_call;

static int pair_half(const void *ctx, int64_t half)
{
    pair_call *c = (pair_call *)ctx;
    /* a microsecond or so of work, as a half of a real GEMM has (a caller
     * done with its half at once always takes the second back) */
    volatile float sink = 1.0f;
    for (int i = 0; i < 500; ++i) sink = sink * 0.999f + 0.001f;
    __atomic_fetch_add(&c->runs[half], 1, __ATOMIC_RELAXED);
    if (half == 1 && !pthread_equal(pthread_self(), c->caller))
        sn_atomic_store(&c->by_other, 1);
    return half == 1 && c->fail_second ? SN_EINVAL : SN_OK;
}

/* sn_run_pair_copy's context: a flat value, the call's state behind a
 * pointer; `at` is where the caller's original is (compared, never
 * followed), so a half run on the copy sent with the offer can tell */
typedef struct {
    pair_call *call;
    const void *at;
    sn_atomic_int *on_copy; /* a helper's half ran on the offer's copy */
} pair_copied;

static int pair_half_copied(const void *ctx, int64_t half)
{
    const pair_copied *p = ctx;
    if (half == 1 && ctx != p->at && !pthread_equal(pthread_self(), p->call->caller))
        sn_atomic_store(p->on_copy, 1);
    return pair_half(p->call, half);
}

static sn_atomic_int pair_on_copy;

static void *pair_caller(void *arg)
{
    int *helped = arg, ok = 1;
    for (int i = 0; i < SN_PAIR_CALLS; ++i) {
        pair_call c = {{0, 0}, 0, pthread_self(), i % 7 == 3};
        pair_copied copied = {&c, NULL, &pair_on_copy};
        copied.at = &copied;
        /* every other call with its context sent as a copy */
        const int status = i % 2 ? sn_run_pair_copy(pair_half_copied, &copied, sizeof copied)
                                 : sn_run_pair(pair_half, &c);
        ok &= status == (c.fail_second ? SN_EINVAL : SN_OK);
        ok &= sn_atomic_load(&c.runs[0]) == 1 && sn_atomic_load(&c.runs[1]) == 1;
        *helped += sn_atomic_load(&c.by_other);
    }
    return (void *)(uintptr_t)ok;
}

static void test_pair_from_several_threads(void)
{
    enum { CALLERS = 3 };
    pthread_t callers[CALLERS];
    int helped[CALLERS] = {0}, started = 1, ok = 1, total = 0;
    for (int i = 0; i < CALLERS; ++i)
        started &= pthread_create(&callers[i], NULL, pair_caller, &helped[i]) == 0;
    check(started, "pair from several threads: threads started");
    if (!started) return;
    for (int i = 0; i < CALLERS; ++i) {
        void *result;
        pthread_join(callers[i], &result);
        ok &= result != NULL;
        total += helped[i];
    }
    check(ok, "pair from several threads: each half once, the failing half's status returned");
    /* the helper takes part (given time: it may sleep, or wait for a core),
     * a copied context's half on the copy */
    sn_pair_forget();
    for (int tries = 0; (total == 0 || !sn_atomic_load(&pair_on_copy)) && tries < 20000; ++tries) {
        pair_call c = {{0, 0}, 0, pthread_self(), 0};
        pair_copied copied = {&c, NULL, &pair_on_copy};
        copied.at = &copied;
        sn_run_pair_copy(pair_half_copied, &copied, sizeof copied);
        total += sn_atomic_load(&c.by_other);
        if (!sn_atomic_load(&c.by_other)) sched_yield();
    }
    if (!RUNNING_ON_VALGRIND) {
        check(total > 0, "pair: the helper thread runs halves");
        check(sn_atomic_load(&pair_on_copy), "pair: a copied context's half runs on the copy");
    }
}

/* fork() from inside the first half while the helper is computing the
 * second: the child has no helper, so its call must return (SN_ENOMEM: the
 * half is lost with the helper) instead of waiting for a thread it lacks;
 * the parent's call completes. */
typedef struct {
    sn_atomic_int begun, release;
    pid_t child;
    int forked;
} fork_call;

static int fork_half(const void *ctx, int64_t half)
{
    fork_call *c = (fork_call *)ctx;
    if (half == 1) {
        sn_atomic_publish(&c->begun, 1);
        while (!sn_atomic_load_acquire(&c->release)) sched_yield();
        return SN_OK;
    }
    /* half 0: fork once the helper is inside half 1 (give up after ~2 s) */
    for (int i = 0; i < 200000 && !sn_atomic_load_acquire(&c->begun); ++i) sched_yield();
    if (!sn_atomic_load_acquire(&c->begun)) {
        sn_atomic_publish(&c->release, 1);
        return SN_OK;
    }
    c->forked = 1;
    c->child = fork();
    if (c->child != 0) sn_atomic_publish(&c->release, 1); /* parent (or fork failed) */
    return SN_OK;
}

/* a forked child's exit code, or -1 if it did not exit of itself within
 * 30 s (then killed) */
static int child_exit_code(pid_t child)
{
    int child_status = -1, waited = 0;
    const time_t deadline = time(NULL) + 30;
    while (waited == 0 && time(NULL) < deadline) {
        waited = (int)waitpid(child, &child_status, WNOHANG);
        if (waited == 0) sched_yield();
    }
    if (waited == 0) {
        kill(child, SIGKILL);
        waitpid(child, &child_status, 0);
    }
    return waited > 0 && WIFEXITED(child_status) ? WEXITSTATUS(child_status) : -1;
}

static void test_pair_fork_while_helper_computes(void)
{
    sn_pair_forget();
    fork_call c = {0, 0, -1, 0};
    const int status = sn_run_pair(fork_half, &c);
    if (c.forked && c.child == 0) _exit(status == SN_ENOMEM ? 0 : 5); /* the child */
    if (!c.forked || c.child < 0) {
        printf("skipped: the helper did not take the half (or fork failed)\n");
        return;
    }
    const int code = child_exit_code(c.child);
    check(status == SN_OK, "pair, fork inside a half: the parent's call completes");
    check(code == 0, "pair, fork inside a half: the child's call returns SN_ENOMEM, no wait");
}

/* fork() from another thread than one making a pair call, while its
 * second half is offered: in the child no one makes that call, so the pair
 * is free there, the half must not run (the child's own helper would write
 * into the dead call's output), and the child's own calls pair again. The
 * parent's helper is left to sleep first, so that the half is usually still
 * offered at the fork (one it has begun goes with it too). Under qemu-user,
 * which cannot start a thread in the child of a process with threads (its
 * vCPU init asserts; tools/check_c_kernels.sh sets
 * SN_TEST_NO_THREADS_AFTER_FORK), and under valgrind, where the child's
 * first pair call, starting its helper, did not return in 30 s, only the
 * first. */
static sn_atomic_int stale_offered, stale_forked, stale_ran_in;

static int stale_half(const void *ctx, int64_t half)
{
    (void)ctx;
    if (half == 1) {
        sn_atomic_store(&stale_ran_in, (int)getpid());
        return SN_OK;
    }
    sn_atomic_publish(&stale_offered, 1);
    for (int i = 0; i < 200000 && !sn_atomic_load_acquire(&stale_forked); ++i) sched_yield();
    return SN_OK;
}

static int quick_half(const void *ctx, int64_t half)
{
    (void)ctx, (void)half;
    volatile float sink = 1.0f; /* long enough for the helper to begin it */
    for (int i = 0; i < 20000; ++i) sink = sink * 0.999f + 0.001f;
    return SN_OK;
}

static void *stale_caller(void *unused)
{
    (void)unused;
    sn_run_pair(stale_half, NULL);
    return NULL;
}

static void test_pair_fork_from_another_thread(void)
{
    sn_pair_forget();
    sn_run_pair(quick_half, NULL); /* the helper started */
    const struct timespec nap = {0, 20 * 1000 * 1000};
    nanosleep(&nap, NULL); /* and asleep (it spins 200 us after a half) */
    pthread_t caller;
    if (pthread_create(&caller, NULL, stale_caller, NULL) != 0) {
        printf("skipped: fork from another thread (no thread)\n");
        return;
    }
    while (!sn_atomic_load_acquire(&stale_offered)) sched_yield();
    const pid_t child = fork();
    if (child == 0) {
        if (sn_pair_flag_taken()) _exit(7);
        if (getenv("SN_TEST_NO_THREADS_AFTER_FORK") || RUNNING_ON_VALGRIND) _exit(0);
        sn_atomic_store(&stale_ran_in, 0);
        sn_pair_forget();
        const int helped_before = sn_pair_halves_helped();
        int paired = 0;
        for (int i = 0; i < 3000 && !paired; ++i) {
            sn_run_pair(quick_half, NULL);
            paired = sn_pair_halves_helped() != helped_before;
            if (!paired && i % 100 == 99) sn_pair_forget();
        }
        nanosleep(&nap, NULL);
        const int stale_here = sn_atomic_load(&stale_ran_in) == (int)getpid();
        _exit(stale_here ? 5 : paired ? 0 : 6);
    }
    sn_atomic_publish(&stale_forked, 1);
    pthread_join(caller, NULL);
    if (child < 0) {
        printf("skipped: fork from another thread (fork failed)\n");
        return;
    }
    const int code = child_exit_code(child);
    check(code != 7, "pair, fork from another thread: the pair is free in the child");
    check(code != 5, "pair, fork from another thread: the dead call's half does not run there");
    if (code != 0) printf("pair, fork from another thread: the child's exit %d\n", code);
    check(code == 0, "pair, fork from another thread: the child's calls pair again");
}

static void test_pair_gemm_same_bits(void)
{
    /* one to four images through 784 -> 128 with bias and ReLU, and 1000 ->
     * 40 without: multiply-adds between SN_SMALL_PAIR_MIN_FLOPS and
     * SN_SMALL_PARALLEL_MIN_FLOPS, so two threads means the helper */
    const int64_t shapes[][3] = {{1, 128, 784}, {2, 128, 784}, {1, 40, 1000}, {4, 48, 512}};
    int ok = 1, helped = 1;
    for (int sh = 0; sh < 4; ++sh) {
        const int64_t M = shapes[sh][0], N = shapes[sh][1], K = shapes[sh][2];
        const double flops = (double)M * (double)N * (double)K;
        ok &= flops >= SN_SMALL_PAIR_MIN_FLOPS && flops < SN_SMALL_PARALLEL_MIN_FLOPS;
        float *x = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * K * N);
        float *b = malloc(sizeof(float) * N), *y1 = malloc(sizeof(float) * M * N);
        float *y2 = malloc(sizeof(float) * M * N);
        unsigned s = 11 + (unsigned)sh;
        for (int64_t i = 0; i < M * K; ++i) x[i] = frand(&s);
        for (int64_t i = 0; i < K * N; ++i) W[i] = frand(&s);
        for (int64_t j = 0; j < N; ++j) b[j] = frand(&s);
        sn_set_num_threads(1);
        ok &= sn_dense_forward_f32(y1, x, W, b, M, K, N, SN_ACT_RELU, 0.0f) == SN_OK;
        sn_set_num_threads(2);
        sn_set_pair_timing(0); /* every call in two halves, none timed alone */
        sn_pair_forget();
        const int helped_before = sn_pair_halves_helped();
        /* valgrind runs one thread at a time: a call whose half its helper
         * has not begun waits out its time slice (0.02 s a call there, which
         * was 90 s of check_c_kernels.sh), so fewer calls there and no wait
         * for a helped half below (which is not checked there) */
        const int reps = RUNNING_ON_VALGRIND ? 20 : 300;
        const int reps_to_help = RUNNING_ON_VALGRIND ? 0 : 3000;
        for (int rep = 0; rep < reps && ok; ++rep) {
            memset(y2, 0xff, sizeof(float) * M * N); /* NaN: a column left unwritten shows */
            ok &= sn_dense_forward_f32(y2, x, W, b, M, K, N, SN_ACT_RELU, 0.0f) == SN_OK &&
                  memcmp(y1, y2, sizeof(float) * M * N) == 0;
        }
        /* the helper computed some of those halves (given time: it may
         * sleep, or wait for a core) */
        for (int rep = 0; rep < reps_to_help && sn_pair_halves_helped() == helped_before; ++rep) {
            ok &= sn_dense_forward_f32(y2, x, W, b, M, K, N, SN_ACT_RELU, 0.0f) == SN_OK &&
                  memcmp(y1, y2, sizeof(float) * M * N) == 0;
            if (rep % 100 == 99) {
                sched_yield();
                sn_pair_forget();
            }
        }
        helped &= sn_pair_halves_helped() > helped_before;
        free(x);
        free(W);
        free(b);
        free(y1);
        free(y2);
    }
    sn_set_num_threads(sn_max_threads());
    sn_set_pair_timing(1);
    check(ok, "one-image GEMMs in two halves (helper thread): the bits of one thread");
    /* without OpenMP there are no two threads to ask for: one computes all;
     * valgrind runs one thread at a time, so the helper seldom begins a half
     * before its caller has taken it back */
    if (sn_max_threads() > 1 && !RUNNING_ON_VALGRIND)
        check(helped, "one-image GEMMs: the helper computed halves");
}

/* With the pair timed at run time, a GEMM made worth a pair by the
 * threshold gives the bits of one thread whichever way each call goes. */
static void test_pair_timing_same_bits(void)
{
    enum { M = 1, N = 32, K = 64, CALLS = 20000 };
    float x[M * K], W[K * N], y1[M * N], y2[M * N];
    unsigned s = 5;
    for (int i = 0; i < M * K; ++i) x[i] = frand(&s);
    for (int i = 0; i < K * N; ++i) W[i] = frand(&s);
    int ok = sn_set_pair_timing(2) == SN_EINVAL && sn_get_pair_timing() == 1;
    sn_set_num_threads(1);
    ok &= sn_gemm_f32(0, 0, M, N, K, 1.0f, x, K, W, N, 0.0f, y1, N) == SN_OK;
    sn_set_num_threads(2);
    ok &= sn_set_pair_min_flops(1) == SN_OK;
    for (int timed = 0; timed < 2; ++timed) {
        sn_set_pair_timing(timed);
        for (int i = 0; i < CALLS && ok; ++i)
            ok &= sn_gemm_f32(0, 0, M, N, K, 1.0f, x, K, W, N, 0.0f, y2, N) == SN_OK &&
                  memcmp(y1, y2, sizeof y1) == 0;
    }
    sn_set_pair_timing(1);
    sn_set_pair_min_flops(0);
    sn_set_num_threads(sn_max_threads());
    check(ok, "pair timing: the bits of one thread, either way; timing set to 0 or 1 only");
}

static void spin_for(double seconds)
{
    const double end = sn_seconds_now() + seconds;
    while (sn_seconds_now() < end) {
    }
}

static int nothing_half(const void *ctx, int64_t half)
{
    (void)ctx, (void)half;
    return SN_OK;
}

/* whether sn_pair_end counts this call among the paired trials: timed,
 * paired, and the helper ran a half meanwhile */
static int counted_paired(const sn_pair_call *call)
{
    return call->timed && call->paired && sn_pair_halves_helped() != call->helped;
}

/* The run-time choice follows its timings (sn_pair_choice.c), driven here
 * with calls of a shape of its own that take the time the test says: a
 * cycle of 4096 calls where alone takes 2 us and paired 40, then one where
 * alone takes 40 and paired 2. After each cycle's trials the calls go the
 * faster way: alone in the first; paired in the second, if the helper ran
 * any of its trials' halves (it may never get the other CPU). Wall-clock
 * spins, so an emulator's speed does not change the answer (under qemu a
 * GEMM made worth a pair here went paired: 1 x 32 x 64 no longer too small). */
static void test_pair_choice_follows_its_timings(void)
{
    if (sn_seconds_now() == 0.0) return; /* no clock here, and no timing: nothing to drive */
    const double fast = 2e-6, slow = 40e-6;
    int late_paired[2] = {-1, -1}, counted = 0;
    for (int cycle = 0; cycle < 2; ++cycle) {
        const double alone_s = cycle == 0 ? fast : slow, paired_s = cycle == 0 ? slow : fast;
        for (int i = 0; i < 4096; ++i) {
            sn_pair_call call;
            const int paired = sn_pair_begin(1, 7777, 3, &call);
            if (paired) {
                sn_run_pair(nothing_half, NULL);
                spin_for(paired_s);
            } else {
                spin_for(alone_s);
            }
            counted += cycle == 1 && counted_paired(&call); /* the second cycle's */
            sn_pair_end(&call);
            if (i == 3000) late_paired[cycle] = paired; /* past the trials (and a takeover) */
        }
    }
    check(late_paired[0] == 0, "pair timing: alone where alone was faster");
    /* the helper may not get the other CPU for enough of them */
    if (counted >= 8 && !RUNNING_ON_VALGRIND)
        check(late_paired[1] == 1, "pair timing: paired where paired was faster");
}

/* The run-time choice's rule on made-up times (ns): the medians decide,
 * the upper one of an even count; paired only with 8 or more paired calls
 * timed (the helper took part in them). */
static void test_pair_rule(void)
{
    int alone[32], paired[64];
    for (int i = 0; i < 32; ++i) alone[i] = 1700;
    for (int i = 0; i < 32; ++i) paired[i] = i % 8 == 0 ? 1300 : 2500; /* fastest 1300 */
    check(!sn_pair_prefers_paired(alone, 32, paired, 32),
          "pair rule: alone where most paired calls were slower (the median, not the fastest)");
    for (int i = 0; i < 32; ++i) alone[i] = 1700;
    for (int i = 0; i < 10; ++i) paired[i] = 1300 + i;
    check(sn_pair_prefers_paired(alone, 32, paired, 10), "pair rule: paired where it was faster");
    for (int i = 0; i < 7; ++i) paired[i] = 1300 + i;
    check(!sn_pair_prefers_paired(alone, 32, paired, 7),
          "pair rule: alone with fewer than 8 paired calls timed");
    int two[2] = {20, 10}, eight[8] = {30, 5, 30, 5, 30, 5, 30, 5};
    check(!sn_pair_prefers_paired(two, 2, eight, 8),
          "pair rule: the upper median of an even count (half the paired calls fast: alone)");
}

/* The same rule driven by timed calls: a paired call takes 40 us but for one
 * in eight, 2 us, and one alone 10 us, so after the trials the calls go
 * alone (by the fastest call they went paired). Only the paired trials the
 * helper took part in are counted, which may be any few of them on a busy
 * machine: the choice is checked against those the test saw counted. */
static void test_pair_choice_takes_the_median(void)
{
    if (sn_seconds_now() == 0.0) return; /* no clock here, and no timing: nothing to drive */
    int late_paired = -1, paired_calls = 0, counted = 0, counted_fast = 0;
    for (int i = 0; i < 3000; ++i) {
        sn_pair_call call;
        const int paired = sn_pair_begin(1, 7779, 3, &call);
        int fast = 0;
        if (paired) {
            sn_run_pair(nothing_half, NULL);
            fast = paired_calls++ % 8 == 0;
            spin_for(fast ? 2e-6 : 40e-6);
        } else {
            spin_for(10e-6);
        }
        if (counted_paired(&call)) {
            ++counted;
            counted_fast += fast;
        }
        sn_pair_end(&call);
        if (i == 2999) late_paired = paired;
    }
    /* paired only if most of the counted paired trials were the fast ones */
    check(late_paired == 0 || 2 * counted_fast > counted,
          "pair timing: alone where most paired calls were slower (the median, not the fastest)");
}

/* the caller's half (0) takes 2 us: long enough for an awake helper to
 * take the other */
static int slow_caller_half(const void *ctx, int64_t half)
{
    (void)ctx;
    if (half == 0) spin_for(2e-6);
    return SN_OK;
}

/* A helper that takes part in none of the first block of paired trials (as
 * one waking on an idle vCPU): more blocks follow, and the calls go paired
 * once it has taken part in enough of them and they were faster. Here the
 * first block's paired calls do not offer their half at all. */
static void test_pair_choice_waits_for_the_helper(void)
{
    if (sn_seconds_now() == 0.0) return; /* no clock here, and no timing: nothing to drive */
    int late_paired = -1, paired_calls = 0;
    /* whether the helper gets the other CPU now: it takes most of 200 halves */
    sn_pair_forget(); /* the back-off of the tests before: offers from the first */
    const int helped_before = sn_pair_halves_helped();
    for (int i = 0; i < 200; ++i) sn_run_pair(slow_caller_half, NULL);
    const int helper_runs = sn_pair_halves_helped() - helped_before >= 100;
    sn_pair_forget();
    for (int i = 0; i < 3000; ++i) {
        sn_pair_call call;
        const int paired = sn_pair_begin(1, 7781, 3, &call);
        if (paired) {
            if (paired_calls++ >= 64) sn_run_pair(slow_caller_half, NULL);
            else spin_for(2e-6);
        } else {
            spin_for(10e-6);
        }
        sn_pair_end(&call);
        if (i == 2999) late_paired = paired;
    }
    if (helper_runs && !RUNNING_ON_VALGRIND)
        check(late_paired == 1, "pair timing: more paired trials while the helper was waking");
}

/* Nine shapes of pair-worthy GEMM in turn, more than the slots they are
 * timed in: each slot keeps the shape that took it, the others go alone,
 * untimed. (A slot once went to each new shape: two shapes sharing one, in
 * turn, reset each other's cycle and every call of theirs was timed alone.)
 * 20000 calls: each slot's shape gets one cycle, at most 96 timed calls
 * (and 8 x 64 more where the helper took part in too few). */
static void test_pair_timing_shapes_in_turn(void)
{
    enum { N = 32, KMAX = 128, CALLS = 20000 };
    float x[KMAX], W[KMAX * N], y[N];
    unsigned s = 9;
    for (int i = 0; i < KMAX; ++i) x[i] = frand(&s);
    for (int i = 0; i < KMAX * N; ++i) W[i] = frand(&s);
    sn_set_num_threads(2);
    int ok = sn_set_pair_min_flops(1) == SN_OK;
    const int before = sn_pair_timed_calls();
    for (int i = 0; i < CALLS && ok; ++i) {
        const int64_t K = 64 + 8 * (i % 9);
        ok &= sn_gemm_f32(0, 0, 1, N, K, 1.0f, x, K, W, N, 0.0f, y, N) == SN_OK;
    }
    const int timed = sn_pair_timed_calls() - before;
    sn_set_pair_min_flops(0);
    sn_set_num_threads(sn_max_threads());
    char what[120];
    snprintf(what, sizeof what, "pair timing: nine shapes in turn, %d of %d calls timed", timed,
             CALLS);
    /* 96 trials, and up to 8 blocks of 64 more where the helper took part
     * in fewer than 8 */
    check(ok && (sn_max_threads() < 2 || timed <= 8 * (96 + 8 * 64)), what);
}

/* ---- whole-network inference (sn_net.c) ---- */

/* The network conv 3x3 (2 -> 3 channels, padding 1) - max-pool 2 - batch
 * norm - ReLU - dense 3*3*3 -> 40 with tanh - dense 40 -> 4, then softmax,
 * run by sn_net_forward_f32 in chunks of 2 samples must give the bits of
 * the kernels called one by one on the whole batch (the same kernels; each
 * sample's outputs depend on that sample alone). */
static void test_net(void)
{
    const int64_t M = 5, C = 2, H = 6, W = 7, K = 3, Ho = 3, Wo = 3, F = K * Ho * Wo;
    const int64_t conv_out = K * H * W;
    float *x = random_floats(M * C * H * W, 2000u, 0);
    float *cw = random_floats(K * C * 9, 2001u, 0), *cb = random_floats(K, 2002u, 0);
    float *gamma = random_floats(K, 2003u, 0), *beta = random_floats(K, 2004u, 0);
    float *mean = random_floats(K, 2005u, 0), *var = random_floats(K, 2006u, 0);
    affine(var, K, 1.0f, 1.0f);
    /* a dense layer wider than its input: computed in place, it would
     * overwrite inputs it still needs */
    const int64_t D = 40;
    float *w1 = random_floats(F * D, 2007u, 0), *b1 = random_floats(D, 2008u, 0);
    float *w2 = random_floats(D * 4, 2009u, 0), *b2 = random_floats(4, 2010u, 0);
    const sn_net_op ops[] = {
        {.kind = SN_NET_CONV2D, .in = C * H * W, .out = conv_out, .C = C, .H = H, .W = W,
         .K = K, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .w = cw, .b = cb},
        {.kind = SN_NET_MAXPOOL2D, .in = conv_out, .out = F, .C = K, .H = H, .W = W, .kh = 2,
         .kw = 2, .sh = 2, .sw = 2},
        {.kind = SN_NET_BATCHNORM, .in = F, .out = F, .C = K, .H = Ho, .W = Wo, .w = gamma,
         .b = beta, .mean = mean, .var = var, .eps = 1e-3f},
        {.kind = SN_NET_ACT, .act = SN_ACT_RELU, .in = F, .out = F},
        {.kind = SN_NET_DENSE, .act = SN_ACT_TANH, .in = F, .out = D, .w = w1, .b = b1},
        {.kind = SN_NET_DENSE, .in = D, .out = 4, .w = w2, .b = b2},
    };
    const int n_ops = (int)(sizeof ops / sizeof ops[0]);
    /* the reference: each kernel on the whole batch */
    sn_conv2d_cfg cfg;
    int status = sn_conv2d_init(&cfg, M, C, H, W, K, 3, 3, 1, 1, 1, 1);
    float *cws = floats(sn_conv2d_workspace_len(&cfg)), *a = floats(M * conv_out);
    float *p = floats(M * F), *bn = floats(M * F), *h = floats(M * D), *want = floats(M * 4);
    int32_t *am = arena_alloc(sizeof(int32_t) * (size_t)(M * F));
    float *stats = floats(2 * K);
    status |= sn_conv2d_forward_f32(&cfg, a, x, cw, cb, cws);
    status |= sn_maxpool2d_forward_f32(p, am, a, M * K, H, W, 2, 2, 2, 2);
    status |= sn_batchnorm_forward_f32(bn, stats, stats + K, mean, var, p, gamma, beta, M, K,
                                       Ho * Wo, 1e-3f, 0.0f, 0);
    sn_relu_forward_f32(bn, bn, M * F);
    status |= sn_dense_forward_f32(h, bn, w1, b1, M, F, D, SN_ACT_TANH, 0.0f);
    status |= sn_dense_forward_f32(want, h, w2, b2, M, D, 4, SN_ACT_NONE, 0.0f);
    check(status == SN_OK, "net: the reference kernels run");
    float *want_soft = floats(M * 4);
    sn_softmax_forward_f32(want_soft, want, M, 4);
    check(sn_net_check(ops, n_ops) == SN_OK, "net: a well-formed network checks");
    double *want64 = doubles(M * 4);
    for (int64_t i = 0; i < M * 4; ++i) want64[i] = want[i];
    const float *x_copy = memcpy(floats(M * C * H * W), x, sizeof(float) * (size_t)(M * C * H * W));
    /* the whole batch in one chunk: the kernels' bits; in chunks of 2 (the
     * GEMM of fewer than 5 rows may add in another order): within rounding */
    for (int64_t rows = M; rows >= 2; rows -= M - 2) {
        const int64_t len = sn_net_workspace(ops, n_ops, rows);
        check(len > 0, "net: workspace length");
        float *out[2];
        for (int t = 0; t < 2; ++t) {
            sn_set_num_threads(t + 1);
            float *soft = floats(M * 4), *work = floats(len);
            out[t] = floats(M * 4);
            status = sn_net_forward_f32(ops, n_ops, out[t], x, M, 0, work, rows);
            status |= sn_net_forward_f32(ops, n_ops, soft, x, M, 1, work, rows);
            check(status == SN_OK, "net: forward runs");
            if (rows == M)
                check(same(out[t], want, M * 4) && same(soft, want_soft, M * 4),
                      "net: one chunk: the kernels' bits");
            else
                check(near(out[t], want64, M * 4, 1e-6), "net: chunks of 2: the kernels' values");
        }
        check(same(out[0], out[1], M * 4), "net: 1 and 2 threads, same bits");
    }
    sn_set_num_threads(sn_max_threads());
    check(same(x, x_copy, M * C * H * W), "net: the input is read only");
    /* refused: operations that do not chain, a missing weight, a bad kind */
    sn_net_op bad[2] = {ops[4], ops[4]};
    float *out = floats(M * D);
    check(sn_net_check(bad, 2) == SN_EINVAL && sn_net_workspace(bad, 2, 1) == -1 &&
              sn_net_forward_f32(bad, 2, out, x, 1, 0, floats(64), 1) == SN_EINVAL &&
              all_equal(out, (int)(M * D), POISON),
          "net: operations that do not chain are refused, nothing written");
    bad[0].w = NULL;
    check(sn_net_check(bad, 1) == SN_EINVAL, "net: a dense operation without weights is refused");
    bad[0] = ops[0], bad[0].kind = 99;
    check(sn_net_check(bad, 1) == SN_EINVAL, "net: an unknown kind is refused");
    /* a network that starts element-wise leaves X alone; a softmax over
     * groups of W values */
    const sn_net_op soft_ops[] = {
        {.kind = SN_NET_ACT, .act = SN_ACT_TANH, .in = C * H * W, .out = C * H * W},
        {.kind = SN_NET_SOFTMAX, .in = C * H * W, .out = C * H * W, .K = W}};
    float *got = floats(M * C * H * W), *ref = floats(M * C * H * W);
    float *soft_work = floats(sn_net_workspace(soft_ops, 2, M));
    status = sn_net_forward_f32(soft_ops, 2, got, x, M, 0, soft_work, M);
    sn_tanh_forward_f32(ref, x, M * C * H * W);
    sn_softmax_forward_f32(ref, ref, M * C * H, W);
    check(status == SN_OK && same(got, ref, M * C * H * W) && same(x, x_copy, M * C * H * W),
          "net: element-wise first (X read only), softmax over groups");
    arena_free();
}

/* ---- cache blocks (sn_blocking.c) ----
 * The blocks derived from the caches are within their bounds and multiples
 * of the register tile; mc and nc set by the tuner change no bit of any
 * result (every transpose case, a ragged shape, 1 and 2 threads); bad
 * sizes are refused. */
/* ---- a GEMM's panels claimed by several threads (sn_gemm_claimed_f32) ----
 * Every thread that calls it with the same arguments and counter makes the
 * column panels it claims: together, every element, with the bits of the
 * serial call. A counter already at 2 leaves panels 0 and 1 to others where
 * panels are claimed, and the whole product where it is not (the first
 * claim takes all). A helper leaves the last panel, and a product not cut
 * into panels. */
typedef struct {
    sn_gemm_plan plan;
    int ta, tb;
    int64_t M, N, K, lda, ldb;
    const float *A, *B;
    float *C;
    sn_claims claims;
} claimed_call;

static int claimed_run(const claimed_call *g)
{
    return sn_gemm_claimed_f32(&g->plan, g->ta, g->tb, g->M, g->N, g->K, 0.75f, g->A, g->lda,
                               g->B, g->ldb, 0.0f, g->C, g->N, NULL, &g->claims);
}

static void *claimed_thread(void *arg) { return (void *)(intptr_t)claimed_run(arg); }

static void test_claimed_gemm(void)
{
    for (int isa = SN_ISA_GENERIC; isa <= sn_isa_best(); ++isa) {
        const sn_gemm_plan plan = sn_gemm_plan_for(isa);
        const int64_t nr = plan.ki->nr, kc = plan.blocks.kc;
        /* {trans_a, trans_b, M, N, K, claimed}: plain A and B, B's rows a
         * power of two apart (packed as used); B transposed; then A
         * transposed, K longer than kc, a few rows, a few columns */
        const int64_t shapes[][6] = {{0, 0, 50, 4 * nr, kc / 2, 1}, {0, 1, 50, 3 * nr + 5, kc / 2, 1},
                                     {1, 0, 3 * plan.blocks.mc, 3 * nr, 40, 0},
                                     {0, 0, 50, 3 * nr, kc + 9, 0}, {0, 0, 2, 3 * nr, 30, 0},
                                     {0, 0, 50, 3, 30, 0}};
        int serial_ok = 1, pair_ok = 1, claim_ok = 1, help_ok = 1;
        for (int i = 0; i < (int)(sizeof shapes / sizeof shapes[0]); ++i) {
            const int ta = (int)shapes[i][0], tb = (int)shapes[i][1];
            const int64_t M = shapes[i][2], N = shapes[i][3], K = shapes[i][4];
            const int64_t lda = ta ? M : K + 8, ldb = tb ? K : (shapes[i][5] ? 512 : N);
            const float *A = random_floats((ta ? K : M) * lda, 11u + (unsigned)i, 0);
            const float *B = random_floats((tb ? N : K) * ldb, 23u + (unsigned)i, 0);
            float *want = floats(M * N), *got = floats(M * N), *pair = floats(M * N);
            float *left = floats(M * N);
            sn_set_isa(isa);
            const sn_epilogue none = {0};
            serial_ok &= sn_gemm_serial_f32(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.0f, want,
                                            N, &none) == SN_OK;
            sn_atomic_int claims = 0;
            claimed_call g = {plan, ta, tb, M, N, K, lda, ldb, A, B, got, {&claims, 0}};
            serial_ok &= claimed_run(&g) == SN_OK && same(want, got, M * N);
            /* two threads at once, one counter: the other a helper */
            claims = 0;
            g.C = pair;
            claimed_call helper = g;
            helper.claims.helping = 1;
            pthread_t other;
            const int started = pthread_create(&other, NULL, claimed_thread, &helper) == 0;
            void *other_status = NULL;
            const int mine = claimed_run(&g);
            if (started) pthread_join(other, &other_status);
            pair_ok &= started && mine == SN_OK && other_status == NULL && same(want, pair, M * N);
            /* panels 0 and 1 taken already */
            claims = 2;
            g.C = left;
            claim_ok &= claimed_run(&g) == SN_OK;
            for (int64_t r = 0; r < M; ++r)
                for (int64_t j = 0; j < N; ++j) {
                    const float v = left[r * N + j];
                    const int taken = shapes[i][5] ? j < 2 * nr : 1;
                    claim_ok &= taken ? v == POISON : v == want[r * N + j];
                }
            /* a helper, from panel 0: all but the last panel, or nothing */
            float *helped = floats(M * N);
            claims = 0;
            g.C = helped;
            g.claims.helping = 1;
            help_ok &= claimed_run(&g) == SN_OK;
            const int64_t last_panel = (N - 1) / nr * nr;
            for (int64_t r = 0; r < M; ++r)
                for (int64_t j = 0; j < N; ++j) {
                    const float v = helped[r * N + j];
                    const int left = shapes[i][5] ? j >= last_panel : 1;
                    help_ok &= left ? v == POISON : v == want[r * N + j];
                }
        }
        char what[96];
        snprintf(what, sizeof what, "claimed gemm, isa %s: one thread, the serial bits", sn_isa_name(isa));
        check(serial_ok, what);
        snprintf(what, sizeof what, "claimed gemm, isa %s: two threads, one counter, the serial bits", sn_isa_name(isa));
        check(pair_ok, what);
        snprintf(what, sizeof what, "claimed gemm, isa %s: panels claimed before are left", sn_isa_name(isa));
        check(claim_ok, what);
        snprintf(what, sizeof what, "claimed gemm, isa %s: a helper leaves the last panel", sn_isa_name(isa));
        check(help_ok, what);
        arena_free();
    }
    sn_set_isa(sn_isa_best());
}

static void test_blocks(void)
{
    int64_t caches[5];
    const char *source = sn_caches(caches);
    check(caches[0] >= 1024 && caches[1] >= caches[0] && caches[3] >= 1 && caches[4] >= 1 &&
              (strcmp(source, "cpuid") == 0 || strcmp(source, "sysconf") == 0 ||
               strcmp(source, "defaults") == 0),
          "blocks: cache sizes and their source");
    const int64_t M = 203, N = 171, K = 611;
    unsigned seed = 77u;
    float *A = arena_alloc(sizeof(float) * (size_t)(M * K));
    float *B = arena_alloc(sizeof(float) * (size_t)(K * N));
    for (int64_t i = 0; i < M * K; ++i) A[i] = frand(&seed);
    for (int64_t i = 0; i < K * N; ++i) B[i] = frand(&seed);
    for (int isa = SN_ISA_GENERIC; isa <= sn_isa_best(); ++isa) {
        int64_t blk[10];
        check(sn_gemm_blocking(isa, blk) == SN_OK && blk[7] == 0, "blocks: derived by default");
        const int64_t mr = blk[0], nr = blk[1], kc = blk[2], mc = blk[3], nc = blk[4];
        check(kc >= 64 && kc <= 512 && kc % 16 == 0 && mc >= mr && mc <= 1024 && mc % mr == 0 &&
                  nc >= nr && nc <= 8192 && nc % nr == 0,
              "blocks: derived kc, mc, nc within bounds, multiples of the tile");
        check(blk[8] >= 0 && blk[8] < mr, "blocks: a tail kernel has fewer rows than the tile");
        sn_set_isa(isa);
        /* the derived blocks, then the smallest (many blocks), then the largest */
        const int64_t sets[3][2] = {{0, 0}, {mr, nr}, {1024 / mr * mr, 8192 / nr * nr}};
        float *C[3][4];
        int ok = 1;
        for (int k = 0; k < 3; ++k) {
            ok &= sn_set_gemm_blocks(isa, sets[k][0], sets[k][1]) == SN_OK;
            for (int t = 0; t < 4; ++t) {
                const int ta = t & 1, tb = t >> 1;
                C[k][t] = floats(M * N);
                sn_set_num_threads(1 + (k + t) % 2);
                ok &= sn_gemm_f32(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f,
                                  C[k][t], N) == SN_OK;
            }
        }
        sn_gemm_blocking(isa, blk);
        check(ok && blk[3] == sets[2][0] && blk[4] == sets[2][1] && blk[7] == 1,
              "blocks: mc and nc set");
        for (int k = 1; k < 3; ++k)
            for (int t = 0; t < 4; ++t) ok &= same(C[0][t], C[k][t], M * N);
        check(ok, "blocks: any mc and nc give the same bits");
        check(sn_set_gemm_blocks(isa, mr + 1, nr) == SN_EINVAL &&
                  sn_set_gemm_blocks(isa, mr, 8192 / nr * nr + nr) == SN_EINVAL &&
                  sn_set_gemm_blocks(isa, 0, nr) == SN_EINVAL,
              "blocks: sizes off the tile or out of range are refused");
        sn_set_gemm_blocks(isa, 0, 0);
        sn_gemm_blocking(isa, blk);
        check(blk[3] == mc && blk[4] == nc && blk[7] == 0, "blocks: back to the derived ones");
    }
    check(sn_set_gemm_blocks(99, 6, 16) == SN_EINVAL, "blocks: an unknown ISA is refused");
    /* the pair threshold: 0 (the default) .. small_parallel_min (never) */
    int64_t blk[10];
    sn_gemm_blocking(sn_isa_best(), blk);
    const int64_t pair_default = sn_get_pair_min_flops();
    check(sn_set_pair_min_flops(-1) == SN_EINVAL && sn_set_pair_min_flops(blk[9] + 1) == SN_EINVAL &&
              sn_get_pair_min_flops() == pair_default,
          "pair: thresholds out of range are refused");
    check(sn_set_pair_min_flops(blk[9]) == SN_OK && sn_get_pair_min_flops() == blk[9] &&
              sn_set_pair_min_flops(0) == SN_OK && sn_get_pair_min_flops() == pair_default,
          "pair: never, then back to the default");
    sn_set_isa(sn_isa_best());
    sn_set_num_threads(sn_max_threads());
    arena_free();
}

/* ---- a row does not depend on the batch it comes in ----
 * The few-rows path (M <= SN_SMALL_M, no packing) sums as the blocked path
 * does (kc blocks, each a chain in k order, the ISA's multiply-add), so
 * rows 0..m-1 of a GEMM of m rows are bit for bit those of the same rows in
 * a GEMM of 2 * SN_SMALL_M + 3 rows, for every ISA, over several kc blocks
 * and every column remainder, with beta 0 and 1 and the dense epilogue. */
static void test_small_rows_match_blocked(void)
{
    const int64_t big = 2 * SN_SMALL_M + 3, Ns[] = {1, 7, 8, 9, 16, 23, 64, 77, 130, 200};
    const int64_t Ks[] = {1, 5, 256, 300, 700};
    unsigned seed = 5u;
    for (int isa = SN_ISA_GENERIC; isa <= sn_isa_best(); ++isa) {
        sn_set_isa(isa);
        int ok = 1;
        for (int ni = 0; ni < (int)(sizeof Ns / sizeof Ns[0]); ++ni)
            for (int ki = 0; ki < (int)(sizeof Ks / sizeof Ks[0]); ++ki)
                for (int ta = 0; ta < 2; ++ta)
                    for (int beta1 = 0; beta1 < 2; ++beta1) {
                        const int64_t N = Ns[ni], K = Ks[ki], lda = ta ? big : K;
                        float *A = floats((ta ? K : big) * lda), *B = floats(K * N);
                        float *C0 = floats(big * N), *Cb = floats(big * N), *Cs = floats(big * N);
                        float *bias = floats(N);
                        for (int64_t i = 0; i < (ta ? K : big) * lda; ++i) A[i] = frand(&seed);
                        for (int64_t i = 0; i < K * N; ++i) B[i] = frand(&seed);
                        for (int64_t i = 0; i < N; ++i) bias[i] = frand(&seed);
                        for (int64_t i = 0; i < big * N; ++i) C0[i] = frand(&seed);
                        const float beta = beta1 ? 1.0f : 0.0f;
                        sn_epilogue ep = {0};
                        ep.kind = SN_EPI_BIAS_ACT;
                        ep.bias = bias;
                        ep.act = SN_ACT_RELU;
                        const sn_epilogue *e = (ni + ki) % 2 ? &ep : NULL;
                        memcpy(Cb, C0, sizeof(float) * (size_t)(big * N));
                        ok &= sn_gemm_epi_f32(ta, 0, big, N, K, 0.75f, A, lda, B, N, beta, Cb, N,
                                              e) == SN_OK;
                        for (int64_t m = 1; m <= SN_SMALL_M; ++m) {
                            memcpy(Cs, C0, sizeof(float) * (size_t)(big * N));
                            ok &= sn_gemm_epi_f32(ta, 0, m, N, K, 0.75f, A, lda, B, N, beta, Cs,
                                                  N, e) == SN_OK &&
                                  same(Cs, Cb, m * N);
                        }
                        arena_free();
                    }
        char what[96];
        snprintf(what, sizeof what, "gemm: few rows give the bits of the blocked path, isa %s",
                 sn_isa_name(isa));
        check(ok, what);
    }
    sn_set_isa(sn_isa_best());
}

/* ---- the trainer's choice of threads (sn_mlp.c) ----
 * Fed step times, it times SN_TEAM_PROBE steps on the threads, then as many
 * alone, keeps the clearly faster (the threads SN_TEAM_KEEP steps, alone
 * SN_TEAM_KEEP_ALONE, doubling while it wins in a row), then times again;
 * during each phase the calling thread's regions get the threads it says. */
static int team_phase_threads(sn_team_choice *t, double team_s, double alone_s, int steps)
{
    int ok = 1;
    for (int i = 0; i < steps; ++i) {
        sn_team_before_step(t);
        const int threads = sn_parallel_threads();
        sn_team_after_step(t, threads > 1 ? team_s : alone_s);
        ok &= threads >= 1;
    }
    return ok;
}

static void test_team_choice(void)
{
    sn_set_num_threads(2);
    sn_team_choice t;
    memset(&t, 0, sizeof t);
    sn_team_before_step(&t);
    check(sn_parallel_threads() == 2, "team: the first steps are timed on the threads");
    team_phase_threads(&t, 1.0, 1.5, 2 * SN_TEAM_PROBE);
    check(t.alone == 0 && t.count == 2 * SN_TEAM_PROBE, "team: threads kept when faster");
    sn_team_before_step(&t);
    check(sn_parallel_threads() == 2, "team: the choice runs on the threads");
    team_phase_threads(&t, 1.0, 1.5, SN_TEAM_KEEP);
    check(t.count == 0, "team: timed again after SN_TEAM_KEEP steps");
    team_phase_threads(&t, 1.0, 0.97, 2 * SN_TEAM_PROBE);
    check(t.alone == 0, "team: alone 3% faster is noise: the threads stay");
    team_phase_threads(&t, 1.0, 1.0, SN_TEAM_KEEP);
    team_phase_threads(&t, 1.3, 1.0, SN_TEAM_PROBE);
    sn_team_before_step(&t);
    check(sn_parallel_threads() == 1, "team: the timing alone runs alone");
    team_phase_threads(&t, 1.3, 1.0, SN_TEAM_PROBE);
    check(t.alone == 1, "team: alone chosen when clearly faster");
    sn_team_before_step(&t);
    check(sn_parallel_threads() == 1, "team: the choice alone runs alone");
    team_phase_threads(&t, 1.3, 1.0, SN_TEAM_KEEP_ALONE - 1);
    check(t.count == 2 * SN_TEAM_PROBE + SN_TEAM_KEEP_ALONE - 1 && t.alone == 1,
          "team: alone kept SN_TEAM_KEEP_ALONE steps");
    team_phase_threads(&t, 1.3, 1.0, 1);
    check(t.count == 0, "team: timed again after SN_TEAM_KEEP_ALONE steps alone");
    int64_t keep = SN_TEAM_KEEP_ALONE;
    while (keep < SN_TEAM_KEEP) { /* alone wins again: kept twice as long each time */
        team_phase_threads(&t, 1.3, 1.0, 2 * SN_TEAM_PROBE);
        keep = 2 * keep < SN_TEAM_KEEP ? 2 * keep : SN_TEAM_KEEP;
        check(t.alone == 1 && t.keep == keep, "team: alone again, kept twice as long");
        team_phase_threads(&t, 1.3, 1.0, (int)keep);
        check(t.count == 0, "team: timed again after the longer keep");
    }
    team_phase_threads(&t, 1.0, 1.3, 2 * SN_TEAM_PROBE);
    check(t.alone == 0 && t.keep == SN_TEAM_KEEP, "team: threads again: kept SN_TEAM_KEEP");
    team_phase_threads(&t, 1.0, 1.0, SN_TEAM_KEEP);
    team_phase_threads(&t, 1.3, 1.0, 2 * SN_TEAM_PROBE);
    check(t.alone == 1 && t.keep == SN_TEAM_KEEP_ALONE,
          "team: alone after the threads: kept SN_TEAM_KEEP_ALONE again");
    sn_team_before_step(&t);
    check(sn_parallel_threads() == 1, "team: the choice alone runs alone again");

    /* threads that win widely again and again are kept twice as long each
     * time, up to SN_TEAM_KEEP_MAX; a narrow win goes back to SN_TEAM_KEEP */
    memset(&t, 0, sizeof t);
    team_phase_threads(&t, 1.0, 2.0, 2 * SN_TEAM_PROBE);
    check(t.alone == 0 && t.wide == 1 && t.keep == SN_TEAM_KEEP,
          "team: a first wide win keeps SN_TEAM_KEEP");
    int64_t wide_keep = SN_TEAM_KEEP;
    for (int round = 0; round < 5; ++round) {
        team_phase_threads(&t, 1.0, 2.0, (int)t.keep);
        check(t.count == 0, "team: timed again after the keep");
        team_phase_threads(&t, 1.0, 2.0, 2 * SN_TEAM_PROBE);
        wide_keep = 2 * wide_keep < SN_TEAM_KEEP_MAX ? 2 * wide_keep : SN_TEAM_KEEP_MAX;
        check(t.alone == 0 && t.keep == wide_keep,
              "team: a wide win again: kept twice as long, up to SN_TEAM_KEEP_MAX");
    }
    check(t.keep == SN_TEAM_KEEP_MAX, "team: the keep reached SN_TEAM_KEEP_MAX");
    team_phase_threads(&t, 1.0, 2.0, (int)t.keep);
    team_phase_threads(&t, 1.0, 1.2, 2 * SN_TEAM_PROBE);
    check(t.alone == 0 && t.wide == 0 && t.keep == SN_TEAM_KEEP,
          "team: a narrow win keeps SN_TEAM_KEEP again");
    /* kept on the threads, a run of SN_TEAM_PROBE steps each over
     * SN_TEAM_SLOWER x the timing's median times again at once; a shorter
     * run, or steps slower by less, does not */
    team_phase_threads(&t, 1.6, 2.0, SN_TEAM_PROBE - 1);
    team_phase_threads(&t, 1.0, 2.0, 1);
    check(t.count == 3 * SN_TEAM_PROBE, "team: a short run of slow steps: the keep goes on");
    team_phase_threads(&t, 1.4, 2.0, 4 * SN_TEAM_PROBE);
    check(t.count == 7 * SN_TEAM_PROBE, "team: steps 1.4x slower: the keep goes on");
    team_phase_threads(&t, 1.6, 2.0, SN_TEAM_PROBE);
    check(t.count == 0, "team: SN_TEAM_PROBE slow steps in a row: timed again at once");
    sn_team_before_step(&t);
    check(sn_parallel_threads() == 2, "team: the new timing starts on the threads");
    team_phase_threads(&t, 1.6, 1.0, 2 * SN_TEAM_PROBE);
    check(t.alone == 1, "team: slower threads than alone now: alone chosen");
    sn_cap_threads(0);
    check(sn_parallel_threads() == 2, "team: the cap lifted");
    sn_team_before_step(NULL);
    sn_team_after_step(NULL, 1.0);
    check(sn_parallel_threads() == 2, "team: no choice (NULL): the threads");
    sn_set_num_threads(sn_max_threads());
}

int main(int argc, char **argv)
{
    sn_runtime_init();
    /* no back-off: on a busy machine it would turn the 1 vs 2 threads
     * comparisons into 1 vs 1 */
    sn_parallel_backoff(0);
    printf("scratchnet C kernels: best isa %s, %s, %d threads\n", sn_isa_name(sn_isa_best()),
           sn_compiler(), sn_get_num_threads());
    if (argc > 1 && strcmp(argv[1], "threads") == 0) {
        test_claimed_gemm();
        test_concurrent_gemm();
        test_pair_from_several_threads();
        printf("%d passed, %d failed\n", passed, failed);
        return failed != 0;
    }
    test_gemm();
    test_claimed_gemm();
    test_concurrent_gemm();
    test_pair_from_several_threads();
    test_pair_fork_while_helper_computes();
    test_pair_fork_from_another_thread();
    test_pair_gemm_same_bits();
    test_pair_timing_same_bits();
    test_pair_choice_follows_its_timings();
    test_pair_rule();
    test_pair_choice_takes_the_median();
    test_pair_choice_waits_for_the_helper();
    test_pair_timing_shapes_in_turn();
    test_threads_identical();
    test_dense_epilogue();
    test_fused_matches_elementwise();
    test_einval_leaves_outputs_untouched();
    test_flush_to_zero();
    test_arm64_uses_neon();
    test_conv();
    test_conv_einval();
    test_pool();
    test_pool_einval();
    test_batchnorm();
    test_batchnorm_einval();
    test_augment();
    test_net();
    test_blocks();
    test_small_rows_match_blocked();
    test_team_choice();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
