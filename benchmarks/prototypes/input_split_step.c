/* A prototype of the next training step for the fused trainer (issue 12),
 * timed side by side with the library's own sn_mlp_train_f32 in one process:
 * an MLP step (784-128-10, or 784-512-256-10 with DEEP=1; ReLU hidden
 * layers; Adam, or SGD with momentum with SGD=1) on two threads in one
 * parallel region, every layer split by its *inputs*: thread t owns the
 * input range K_l,t of layer l (rows of W_l, dW_l and their optimizer state,
 * columns of the layer's input X_l), so what a thread writes is what it
 * reads next step, and only activation-sized data crosses between cores:
 *   forward, layer l: P_l,t = X_l[:, K_l,t] @ W_l[K_l,t, :]   (barrier)
 *     thread t adds the two partials (and bias, ReLU) for the columns of
 *     y_l that are its inputs K_l+1,t of the next layer (the last layer:
 *     its half of the rows, then softmax cross-entropy on them);
 *   backward, layer l (barrier first: dZ_l complete):
 *     dW_l[K_l,t, :] = X_l[:, K_l,t]^T dZ_l; db_l by thread 0;
 *     dZ_l-1[:, K_l,t] = (dZ_l @ W_l[K_l,t, :]^T) * (y_l-1 > 0)   (local);
 *   the optimizer on the rows of W_l it owns (the biases: thread 0).
 * The library's trainer splits each GEMM by column strips and the optimizer
 * by flat halves, so every step half of each W and dW crosses between cores.
 *
 * Not part of the library: no dropout, no finiteness checks, 2 threads only,
 * layer sums in another order than the library's (so results differ in the
 * last bits). CHECK=n runs n steps of both from the same weights and prints
 * the largest weight difference.
 *
 * Build and run from the repository root:
 *   gcc -O3 -std=c11 -fno-math-errno -fopenmp -Icsrc \
 *       benchmarks/prototypes/input_split_step.c csrc/sn_[a-z]*.c -lm -o /tmp/input_split
 *   GOMP_SPINCOUNT=200000 /tmp/input_split          # DEEP=1, SGD=1, TEAM=1 (the
 *                                                   # library's thread probe on)
 * Results: see README.md, "Where the two-thread step's time goes". */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scratchnet.h"
#include "sn_fpmode.h"
#include "sn_internal.h"

enum { B = 128, MAXL = 3 };
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmpd(const void *x, const void *y) { double a = *(const double *)x, b = *(const double *)y; return a < b ? -1 : a > b; }
static float *zf(int64_t n) { size_t s = (size_t)((n * 4 + 63) / 64 * 64); float *p = aligned_alloc(64, s); memset(p, 0, s); return p; }

typedef struct {
    int nl, adam;
    int64_t size[MAXL + 1], split[MAXL]; /* layer l: inputs [0, split) thread 0, [split, in) thread 1 */
    float *W[MAXL], *b[MAXL], *dW[MAXL], *db[MAXL], *s0[MAXL], *s1[MAXL], *sb0[MAXL], *sb1[MAXL];
    float *X[MAXL + 1]; /* X[0]: the batch; X[l]: layer l's input = y of layer l-1 (after ReLU); X[nl]: logits */
    float *dZ[MAXL], *P[MAXL][2];
    int64_t *yb, step;
} proto;

static void opt_step(const proto *P, float *p, float *s0, float *s1, const float *g, int64_t n)
{
    if (P->adam) sn_adam_step_f32(p, s0, s1, g, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, P->step, 0);
    else sn_sgd_step_f32(p, s0, g, n, 0.01f, 0.9f, 0.0f, 0, 0.0f, P->step == 1);
}

static double proto_train(proto *P, const float *X, const int64_t *labels, const int64_t *order, int64_t n)
{
    double loss = 0;
    for (int64_t s = 0; s < n / B; s++) {
        const int64_t *ord = order + s * B;
        double lt[2] = {0, 0};
        int64_t ct[2];
        P->step++;
#pragma omp parallel num_threads(2)
        {
            const int t = omp_get_thread_num(), L = P->nl;
            const int64_t r0 = t * (B / 2), r1 = r0 + B / 2;
            const unsigned fp = sn_fp_enter();
            /* its columns of the batch */
            const int64_t c0 = t ? P->split[0] : 0, c1 = t ? P->size[0] : P->split[0];
            for (int64_t i = 0; i < B; i++) {
                memcpy(P->X[0] + i * P->size[0] + c0, X + ord[i] * P->size[0] + c0, (size_t)(c1 - c0) * 4);
                if (t == 0) P->yb[i] = labels[ord[i]];
            }
            for (int l = 0; l < L; l++) {
                const int64_t in = P->size[l], out = P->size[l + 1];
                const int64_t k0 = t ? P->split[l] : 0, k1 = t ? in : P->split[l];
                sn_gemm_serial_f32(0, 0, B, out, k1 - k0, 1.0f, P->X[l] + k0, in, P->W[l] + k0 * out, out, 0.0f, P->P[l][t], out, NULL);
#pragma omp barrier
                /* the columns of y_l that are its next inputs, or its rows of the logits */
                const int last = l == L - 1;
                const int64_t j0 = last ? 0 : t ? P->split[l + 1] : 0, j1 = last ? out : t ? out : P->split[l + 1];
                const int64_t i0 = last ? r0 : 0, i1 = last ? r1 : B;
                for (int64_t i = i0; i < i1; i++)
                    for (int64_t j = j0; j < j1; j++) {
                        const float z = (P->P[l][0][i * out + j] + P->P[l][1][i * out + j]) + P->b[l][j];
                        P->X[l + 1][i * out + j] = last || z > 0.0f ? z : 0.0f;
                    }
            }
            sn_xent_train_f32(&lt[t], &ct[t], P->dZ[L - 1] + r0 * P->size[L], P->X[L] + r0 * P->size[L], P->yb + r0, B / 2, P->size[L], 1.0f / B);
            for (int l = L - 1; l >= 0; l--) {
                const int64_t in = P->size[l], out = P->size[l + 1];
                const int64_t k0 = t ? P->split[l] : 0, k1 = t ? in : P->split[l];
#pragma omp barrier
                sn_gemm_serial_f32(1, 0, k1 - k0, out, B, 1.0f, P->X[l] + k0, in, P->dZ[l], out, 0.0f, P->dW[l] + k0 * out, out, NULL);
                if (t == 0) sn_bias_grad_f32(P->db[l], P->dZ[l], out, B, out, 0.0f);
                if (l > 0) { /* dZ_l-1[:, K_l,t] = dZ_l W_l[K_l,t, :]^T, times the ReLU's derivative */
                    sn_gemm_serial_f32(0, 1, B, k1 - k0, out, 1.0f, P->dZ[l], out, P->W[l] + k0 * out, out, 0.0f, P->dZ[l - 1] + k0, in, NULL);
                    for (int64_t i = 0; i < B; i++)
                        for (int64_t j = k0; j < k1; j++)
                            if (!(P->X[l][i * in + j] > 0.0f)) P->dZ[l - 1][i * in + j] = 0.0f;
                }
            }
#pragma omp barrier
            for (int l = 0; l < L; l++) {
                const int64_t out = P->size[l + 1], k0 = t ? P->split[l] : 0, k1 = t ? P->size[l] : P->split[l];
                opt_step(P, P->W[l] + k0 * out, P->s0[l] + k0 * out, P->s1[l] + k0 * out, P->dW[l] + k0 * out, (k1 - k0) * out);
                if (t == 0) opt_step(P, P->b[l], P->sb0[l], P->sb1[l], P->db[l], out);
            }
            sn_fp_leave(fp);
        }
        loss += lt[0] + lt[1];
    }
    return loss;
}

static void init_w(float *W, int64_t n, unsigned s)
{
    for (int64_t i = 0; i < n; i++) { s = s * 1664525u + 1013904223u; W[i] = ((s >> 8 & 0xffff) / 65536.0f - 0.5f) * 0.1f; }
}

int main(void)
{
    sn_runtime_init();
    sn_set_isa(sn_isa_best());
    sn_set_num_threads(2);
    const int deep = getenv("DEEP") != NULL, adam = getenv("SGD") == NULL;
    proto P;
    memset(&P, 0, sizeof P);
    P.adam = adam;
    P.nl = deep ? 3 : 2;
    const int64_t sizes3[] = {784, 128, 10}, sizes4[] = {784, 512, 256, 10};
    for (int l = 0; l <= P.nl; l++) P.size[l] = deep ? sizes4[l] : sizes3[l];
    for (int l = 0; l < P.nl; l++) {
        const int64_t in = P.size[l], out = P.size[l + 1];
        P.split[l] = (in / 2 + 15) / 16 * 16; /* whole lines of the batch's rows and of W's */
        P.W[l] = zf(in * out); P.dW[l] = zf(in * out); P.s0[l] = zf(in * out); P.s1[l] = zf(in * out);
        P.b[l] = zf(out); P.db[l] = zf(out); P.sb0[l] = zf(out); P.sb1[l] = zf(out);
        P.dZ[l] = zf(B * out); P.P[l][0] = zf(B * out); P.P[l][1] = zf(B * out);
        init_w(P.W[l], in * out, (unsigned)l + 1);
    }
    for (int l = 0; l <= P.nl; l++) P.X[l] = zf(B * P.size[l]);
    P.yb = calloc(B, 8);
    const int64_t IN = P.size[0], O = P.size[P.nl];
    float *X = aligned_alloc(1 << 21, (60000L * IN * 4 + (1 << 21) - 1) / (1 << 21) * (1 << 21));
    int64_t *y = malloc(60000 * 8), *order = malloc(60000 * 8);
    unsigned s = 3;
    for (int64_t i = 0; i < 60000L * IN; i++) { s = s * 1664525u + 1013904223u; X[i] = (s >> 8 & 0xff) / 255.0f; }
    for (int64_t i = 0; i < 60000; i++) { y[i] = (i * 7) % 10; order[i] = (i * 7919) % 60000; }

    /* the library's fused trainer from the same weights */
    sn_mlp_layer Ls[MAXL];
    sn_param Q[2 * MAXL];
    sn_team_choice team;
    memset(Ls, 0, sizeof Ls);
    memset(&team, 0, sizeof team);
    for (int l = 0; l < P.nl; l++) {
        const int64_t in = P.size[l], out = P.size[l + 1];
        sn_mlp_layer *L = &Ls[l];
        L->in = in; L->out = out; L->W = zf(in * out); L->b = zf(out); L->dW = zf(in * out); L->db = zf(out);
        L->act = l < P.nl - 1 ? SN_ACT_RELU : SN_ACT_NONE; L->y = zf(B * out); L->dz = zf(B * out);
        memcpy(L->W, P.W[l], (size_t)(in * out) * 4);
        Q[2 * l] = (sn_param){L->W, L->dW, {zf(in * out), zf(in * out), NULL}, in * out};
        Q[2 * l + 1] = (sn_param){L->b, L->db, {zf(out), zf(out), NULL}, out};
    }
    sn_mlp net = {P.nl, Ls, B, zf(B * IN), calloc(B, 8), Q, getenv("TEAM") ? &team : NULL};
    sn_optim_cfg opt;
    memset(&opt, 0, sizeof opt);
    if (adam) { opt.kind = SN_OPT_ADAM; opt.lr = 1e-3; opt.beta1 = 0.9f; opt.beta2 = 0.999f; opt.eps = 1e-8f; }
    else { opt.kind = SN_OPT_SGD; opt.lr = 0.01; opt.momentum = 0.9f; }
    const char *name = deep ? "784-512-256-10" : "784-128-10";
    if (getenv("CHECK")) {
        const int64_t steps = atoi(getenv("CHECK"));
        double ls = 0;
        int64_t c = 0;
        const double l0 = proto_train(&P, X, y, order, steps * B);
        sn_mlp_train_f32(&net, &opt, X, y, O, order, steps * B, B, &ls, &c);
        double md = 0, mx = 0;
        for (int l = 0; l < P.nl; l++)
            for (int64_t i = 0; i < P.size[l] * P.size[l + 1]; i++) {
                md = fmax(md, fabs(P.W[l][i] - Ls[l].W[i]));
                mx = fmax(mx, fabs(Ls[l].W[i]));
            }
        printf("%s %s, after %lld steps: loss sum %.6f vs %.6f; weights differ by at most %.3g (largest %.3g)\n",
               name, adam ? "Adam" : "SGD momentum", (long long)steps, l0, ls, md, mx);
        return 0;
    }
    const int64_t n = deep ? 6400 : 12800;
    double t[2][21];
    for (int q = -1; q < 21; q++) {
        const int64_t *o = order + ((q + 1) * n) % 40000;
        const double t0 = now();
        proto_train(&P, X, y, o, n);
        const double t1 = now();
        double ls = 0;
        int64_t c = 0;
        sn_mlp_train_f32(&net, &opt, X, y, O, o, n, B, &ls, &c);
        const double t2 = now();
        if (q >= 0) { t[0][q] = t1 - t0; t[1][q] = t2 - t1; }
    }
    double r[21];
    for (int q = 0; q < 21; q++) r[q] = t[1][q] / t[0][q];
    qsort(r, 21, 8, cmpd);
    for (int v = 0; v < 2; v++) qsort(t[v], 21, 8, cmpd);
    printf("%s %s: input split %.1f us/step, library trainer %.1f us/step: %.3fx (quartiles %.3f-%.3f)\n", name,
           adam ? "Adam" : "SGD momentum", t[0][10] / (n / B) * 1e6, t[1][10] / (n / B) * 1e6, r[10], r[5], r[15]);
    return 0;
}
