/* A C-only test of the kernels, for builds without Python: cross-compiled
 * for arm64 and run under qemu by tools/check_c_kernels.sh. It checks the
 * GEMM of every ISA this CPU runs (blocked, in-place panels, few-row path,
 * epilogues) against the float64-accumulating reference, threads 1 vs 2,
 * GEMMs called from several threads at once while another changes the
 * settings, the fused dense kernels against the element-wise ones (the
 * same formulas, so the same bits), and that the GEMM flushes subnormals but leaves the caller's
 * mode alone.
 * `sn_test threads` runs the several-threads test alone (the script runs it
 * under ThreadSanitizer). Prints "N passed, N failed" and exits non-zero on
 * a failure. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scratchnet.h"
#include "sn_atomic.h"

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
static int gemm_matches(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                        float beta, unsigned seed)
{
    const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
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
    int64_t blk[7];
    sn_gemm_blocking(SN_ISA_GENERIC, blk);
    check(blk[0] == 8 && blk[1] == 12, "arm64: the generic path is the 8x12 NEON kernel");
#endif
}

/* ---- GEMMs from several threads at once ----
 * Each worker runs GEMMs large enough to use threads and to pack panels,
 * checking each against the reference, while the main thread keeps changing
 * the thread count and the ISA: the packing buffers must never be shared
 * by two calls, and the settings are read without a data race. */

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
    check(ok, "gemm from several threads at once, settings changing: against the reference");
    sn_set_num_threads(sn_max_threads());
    sn_set_isa(sn_isa_best());
}

int main(int argc, char **argv)
{
    sn_runtime_init();
    printf("scratchnet C kernels: best isa %s, %s, %d threads\n", sn_isa_name(sn_isa_best()),
           sn_compiler(), sn_get_num_threads());
    if (argc > 1 && strcmp(argv[1], "threads") == 0) {
        test_concurrent_gemm();
        printf("%d passed, %d failed\n", passed, failed);
        return failed != 0;
    }
    test_gemm();
    test_concurrent_gemm();
    test_threads_identical();
    test_dense_epilogue();
    test_fused_matches_elementwise();
    test_einval_leaves_outputs_untouched();
    test_flush_to_zero();
    test_arm64_uses_neon();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
