/* Two builds of csrc/ side by side: sn_mlp_train_f32 of each, alternating
 * in one process (this machine's speed swings between minutes, so separate
 * processes do not compare), on random data of MNIST's shape (60000 x 784,
 * 10 classes), batch B (128), from the same weights. Prints each build's
 * median time a step and the median of the per-round ratios A / B (> 1: B
 * is faster), with its quartiles.
 *
 * Build each side as a shared library from a copy of csrc/ (e.g. a git
 * worktree of the commit before), then this program, from the repository:
 *   gcc -O3 -std=c11 -fno-math-errno -fopenmp -fPIC -shared -Icsrc csrc/sn_*.c -lm -o /tmp/libB.so
 *   gcc -O2 -std=gnu11 -Icsrc benchmarks/c/ab_mlp_trainer.c -ldl -lm -o /tmp/ab_mlp_trainer
 *   GOMP_SPINCOUNT=200000 LIBA=/tmp/libA.so LIBB=/tmp/libB.so /tmp/ab_mlp_trainer
 * Build this program with the newer side's csrc/: each side's trainer
 * writes its own layout of sn_team_choice (scratchnet.h) into the one this
 * program allocates, which grew at 1ce2e37 (with TEAM=1, one built with the
 * older header crashed against the newer library).
 * Environment: DEEP=1 (784-512-256-10, else 784-128-10), SGD=1 (SGD with
 * momentum 0.9, else Adam), B, DROP (dropout p after hidden layers),
 * THREADS (2), SMALL_PAGES=a, b or ab (those sides' data in 4 KB pages,
 * else 2 MB), TEAM=1 (the trainer's thread probe on), ROUNDS (21),
 * CHECK=n (n steps of each from the same weights: the largest weight
 * difference, instead of timing), PHASES=1 (then where each build's steps
 * went, phase by phase: each parallel region's wall time and each unit's
 * busy time, means per step over the timed rounds; build both libraries
 * with -DSN_STEP_PROFILE added, which compiles those timers in). Results:
 * README, "Where the two-thread step's time goes". */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "scratchnet.h"

enum { MAX_LAYERS = 3, ROWS = 60000, FEATURES = 784, CLASSES = 10, MAX_ROUNDS = 101 };

typedef int (*train_fn)(const sn_mlp *, sn_optim_cfg *, const float *, const int64_t *,
                        int64_t, const int64_t *, int64_t, int64_t, double *, int64_t *);
typedef int64_t (*profile_fn)(FILE *);
typedef struct {
    train_fn train;
    profile_fn profile; /* sn_step_profile_report, in a build with -DSN_STEP_PROFILE */
    sn_mlp net;
    sn_optim_cfg opt;
    sn_team_choice team;
} side;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int by_value(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static float *zeros(int64_t n)
{
    const size_t bytes = (size_t)((n * 4 + 63) / 64 * 64);
    float *p = aligned_alloc(64, bytes);
    memset(p, 0, bytes);
    return p;
}

static void *symbol(void *lib, const char *name)
{
    void *f = dlsym(lib, name);
    if (!f) {
        fprintf(stderr, "%s\n", dlerror());
        exit(1);
    }
    return f;
}

static void make_side(side *S, const char *path, int n_layers, const int64_t *size, int64_t B,
                      int adam, float dropout)
{
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        exit(1);
    }
    ((void (*)(void))symbol(lib, "sn_runtime_init"))();
    const int isa = ((int (*)(void))symbol(lib, "sn_isa_best"))();
    ((int (*)(int))symbol(lib, "sn_set_isa"))(isa);
    ((void (*)(int))symbol(lib, "sn_set_num_threads"))(
        getenv("THREADS") ? atoi(getenv("THREADS")) : 2);
    S->train = (train_fn)symbol(lib, "sn_mlp_train_f32");
    S->profile = (profile_fn)dlsym(lib, "sn_step_profile_report");
    sn_mlp_layer *layers = calloc(MAX_LAYERS, sizeof *layers);
    sn_param *params = calloc(2 * MAX_LAYERS, sizeof *params);
    memset(&S->team, 0, sizeof S->team);
    for (int l = 0; l < n_layers; l++) {
        const int64_t in = size[l], out = size[l + 1];
        sn_mlp_layer *L = &layers[l];
        L->in = in;
        L->out = out;
        L->W = zeros(in * out);
        L->b = zeros(out);
        L->dW = zeros(in * out);
        L->db = zeros(out);
        L->act = l < n_layers - 1 ? SN_ACT_RELU : SN_ACT_NONE;
        L->y = zeros(B * out);
        L->dz = zeros(B * out);
        if (l < n_layers - 1 && dropout > 0) {
            L->dropout = dropout;
            L->dropout_seed = 7 + (uint64_t)l;
            L->y_drop = zeros(B * out);
            L->mask = zeros(B * out);
        }
        unsigned s = (unsigned)l + 1; /* the same weights on both sides */
        for (int64_t i = 0; i < in * out; i++) {
            s = s * 1664525u + 1013904223u;
            L->W[i] = ((s >> 8 & 0xffff) / 65536.0f - 0.5f) * 0.1f;
        }
        params[2 * l] = (sn_param){L->W, L->dW, {zeros(in * out), zeros(in * out), NULL}, in * out};
        params[2 * l + 1] = (sn_param){L->b, L->db, {zeros(out), zeros(out), NULL}, out};
    }
    /* the gathered batch's rows: as wide as the build lays them out (a build
     * from before sn_mlp_batch_width packed them: as wide as X's) */
    int64_t (*batch_width)(int64_t) = (int64_t (*)(int64_t))dlsym(lib, "sn_mlp_batch_width");
    const int64_t width = batch_width ? batch_width(size[0]) : size[0];
    const sn_mlp net = {n_layers, layers, B, zeros(B * width), calloc((size_t)B, 8), params,
                        getenv("TEAM") ? &S->team : NULL};
    S->net = net;
    /* a build from before sn_mlp.last_shares has no such function, nor reads the field */
    int64_t (*shares_size)(const sn_mlp *) =
        (int64_t (*)(const sn_mlp *))dlsym(lib, "sn_mlp_last_shares_size");
    if (shares_size) S->net.last_shares = zeros(shares_size(&S->net));
    memset(&S->opt, 0, sizeof S->opt);
    if (adam) {
        S->opt.kind = SN_OPT_ADAM;
        S->opt.lr = 1e-3;
        S->opt.beta1 = 0.9f;
        S->opt.beta2 = 0.999f;
        S->opt.eps = 1e-8f;
    } else {
        S->opt.kind = SN_OPT_SGD;
        S->opt.lr = 0.01;
        S->opt.momentum = 0.9f;
    }
}

int main(void)
{
    const char *lib_a = getenv("LIBA"), *lib_b = getenv("LIBB");
    if (!lib_a || !lib_b) {
        fprintf(stderr, "set LIBA and LIBB to the two builds' shared libraries\n");
        return 2;
    }
    const int deep = getenv("DEEP") != NULL, adam = getenv("SGD") == NULL;
    const int64_t B = getenv("B") ? atoi(getenv("B")) : 128;
    const float dropout = getenv("DROP") ? (float)atof(getenv("DROP")) : 0.0f;
    const int64_t shallow_sizes[] = {FEATURES, 128, CLASSES};
    const int64_t deep_sizes[] = {FEATURES, 512, 256, CLASSES};
    const int n_layers = deep ? 3 : 2;
    const int64_t *size = deep ? deep_sizes : shallow_sizes;
    side A, N;
    make_side(&A, lib_a, n_layers, size, B, adam, dropout);
    make_side(&N, lib_b, n_layers, size, B, adam, dropout);

    const size_t x_bytes = ((size_t)ROWS * FEATURES * 4 + (1 << 21) - 1) >> 21 << 21;
    float *X = aligned_alloc(1 << 21, x_bytes);
    /* in 2 MB pages where the kernel allows it, as NumPy asks for its arrays
     * of 4 MB and more: the gather's random rows then miss the TLB far less */
    madvise(X, x_bytes, MADV_HUGEPAGE);
    int64_t *y = malloc(ROWS * 8), *order = malloc(ROWS * 8);
    unsigned s = 3;
    for (int64_t i = 0; i < (int64_t)ROWS * FEATURES; i++) {
        s = s * 1664525u + 1013904223u;
        X[i] = (s >> 8 & 0xff) / 255.0f;
    }
    for (int64_t i = 0; i < ROWS; i++) {
        y[i] = (i * 7) % CLASSES;
        order[i] = (i * 7919) % ROWS; /* a fixed shuffle */
    }
    /* SMALL_PAGES=a, b or ab: that side trains on a copy of X in 4 KB pages
     * (as scratchnet.datasets maps its arrays), the other on X in 2 MB */
    const char *small = getenv("SMALL_PAGES") ? getenv("SMALL_PAGES") : "";
    float *X_small = X;
    if (strchr(small, 'a') || strchr(small, 'b')) {
        X_small = aligned_alloc(1 << 21, x_bytes);
        madvise(X_small, x_bytes, MADV_NOHUGEPAGE);
        memcpy(X_small, X, (size_t)ROWS * FEATURES * 4);
    }
    float *const X_a = strchr(small, 'a') ? X_small : X, *const X_b = strchr(small, 'b') ? X_small : X;
    const char *name = deep ? "784-512-256-10" : "784-128-10";

    if (getenv("CHECK")) {
        const int64_t n = atoi(getenv("CHECK")) * B;
        double loss_a = 0, loss_b = 0;
        int64_t right_a = 0, right_b = 0;
        const int ra = A.train(&A.net, &A.opt, X_a, y, CLASSES, order, n, B, &loss_a, &right_a);
        const int rb = N.train(&N.net, &N.opt, X_b, y, CLASSES, order, n, B, &loss_b, &right_b);
        double diff = 0, largest = 0;
        for (int l = 0; l < n_layers; l++)
            for (int64_t i = 0; i < size[l] * size[l + 1]; i++) {
                diff = fmax(diff, fabs(A.net.layers[l].W[i] - N.net.layers[l].W[i]));
                largest = fmax(largest, fabs(A.net.layers[l].W[i]));
            }
        printf("%s: status %d / %d, loss sums %.9f / %.9f, correct %lld / %lld, weights "
               "differ by at most %.3g (largest %.3g)\n", name, ra, rb, loss_a, loss_b,
               (long long)right_a, (long long)right_b, diff, largest);
        return 0;
    }

    const int64_t n = (deep ? 50 : 100) * B; /* rows a round */
    int rounds = getenv("ROUNDS") ? atoi(getenv("ROUNDS")) : 21;
    rounds = rounds < 1 ? 1 : rounds > MAX_ROUNDS ? MAX_ROUNDS : rounds;
    static double t[2][MAX_ROUNDS], ratio[MAX_ROUNDS];
    for (int q = -1; q < rounds; q++) { /* round -1: warm-up */
        const int64_t *o = order + ((q + 1) * n) % (ROWS - n);
        double loss = 0;
        int64_t right = 0;
        const double t0 = now();
        A.train(&A.net, &A.opt, X_a, y, CLASSES, o, n, B, &loss, &right);
        const double t1 = now();
        N.train(&N.net, &N.opt, X_b, y, CLASSES, o, n, B, &loss, &right);
        const double t2 = now();
        if (q < 0 && A.profile && N.profile) { /* the warm-up's steps not counted */
            A.profile(NULL);
            N.profile(NULL);
        }
        if (q >= 0) {
            t[0][q] = t1 - t0;
            t[1][q] = t2 - t1;
            ratio[q] = t[0][q] / t[1][q];
        }
    }
    qsort(ratio, (size_t)rounds, sizeof(double), by_value);
    for (int v = 0; v < 2; v++) qsort(t[v], (size_t)rounds, sizeof(double), by_value);
    printf("%s %s, batch %lld, dropout %.2f: A %.1f us a step, B %.1f us a step: B %.3fx "
           "(quartiles %.3f-%.3f)\n", name, adam ? "Adam" : "SGD momentum", (long long)B,
           dropout, t[0][rounds / 2] / (n / B) * 1e6, t[1][rounds / 2] / (n / B) * 1e6,
           ratio[rounds / 2], ratio[rounds / 4], ratio[3 * rounds / 4]);
    if (getenv("PHASES")) {
        if (!A.profile || !N.profile) {
            fprintf(stderr, "PHASES: build both libraries with -DSN_STEP_PROFILE\n");
            return 2;
        }
        if (A.profile == N.profile) { /* one library loaded once: one set of timers */
            printf("A and B (one library, the steps of both), per step over the timed rounds:\n");
            A.profile(stdout);
        } else {
            const side *sides[2] = {&A, &N};
            for (int v = 0; v < 2; v++) {
                printf("%s, per step (means over the timed rounds):\n", v ? "B" : "A");
                sides[v]->profile(stdout);
            }
        }
    }
    return 0;
}
