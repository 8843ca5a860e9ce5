/* scratchnet C API: every kernel the Python side may call.
 *
 * Conventions
 *   - float32 data, row-major matrices; every matrix comes with its leading
 *     dimension (the distance in elements between two rows).
 *   - outputs come first in argument lists, inputs after.
 *   - functions that can fail return SN_OK or an SN_E* code and never exit.
 *     SN_EINVAL is returned before anything is written: outputs untouched.
 *     SN_ENONFINITE and SN_ENOMEM can come after outputs were written: each
 *     function below says what it leaves. sn_mlp_train_f32 goes batch by
 *     batch: an error in one (SN_EINVAL for a bad label included) leaves the
 *     parameters, the optimizer state and the sums as the batches before it
 *     made them.
 *   - subnormals: the GEMM (so the dense kernels and the GEMM epilogue), the
 *     optimizer steps and the MLP trainer and inference run with subnormal
 *     numbers flushed to zero (FTZ/DAZ, sn_fpmode.h) and give the caller's
 *     floating-point mode back on return; the element-wise, softmax, bias
 *     and loss kernels called on their own run in the caller's mode (IEEE
 *     gradual underflow by default). So a fused sigmoid that underflows
 *     gives 0 where sn_sigmoid_forward_f32 gives a subnormal.
 *   - no kernel allocates in its hot loop. GEMM keeps a small fixed pool of
 *     packing workspaces, each lent to one call at a time, grown, never
 *     shrunk; a call that finds all of them busy allocates its own and
 *     frees it on return. What is kept depends on how many calls ever ran
 *     at once, not on how many threads ever called.
 */
#ifndef SCRATCHNET_H
#define SCRATCHNET_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SN_OK 0
#define SN_EINVAL 1      /* an argument is out of range (size, label, option) */
#define SN_ENOMEM 2      /* a workspace could not be allocated */
#define SN_ENONFINITE 3  /* a result is NaN or infinite (the input or training diverged) */
#define SN_ECALLBACK 4   /* a callback of the caller's failed (the caller knows why) */

/* ---- run time: CPU features, kernel choice, threads (sn_runtime.c) ---- */

/* Detects the CPU's ISA and reads the default thread count, once: call it
 * before the kernels are used from several threads (the Python module calls
 * it at import). It never overwrites a value already set. Were it not
 * called, the first reader of a setting below calls it. The settings are
 * atomics: any thread may read or change them while kernels run, and a
 * kernel call reads each once, when it starts. */
void sn_runtime_init(void);

/* ISA levels of the GEMM micro-kernels (and of the optimizers' loops:
 * AVX2 from SN_ISA_AVX2 up), lowest first. */
#define SN_ISA_GENERIC 0
#define SN_ISA_AVX2 1     /* AVX2 + FMA */
#define SN_ISA_AVX512 2   /* AVX-512F */

int sn_isa_supported(int isa);          /* 1 if this CPU and OS can run it */
int sn_isa_best(void);                  /* the highest supported level */
int sn_set_isa(int isa);                /* SN_EINVAL if unsupported */
int sn_get_isa(void);
const char *sn_isa_name(int isa);       /* "generic", "avx2", "avx512" */

/* The GEMM blocking of an ISA's kernel: out = {mr, nr, kc, mc, nc, small_m,
 * parallel_min, tuned, mr_tail, small_parallel_min} (register tile, cache
 * blocks, the most rows computed without packing, the multiply-adds from
 * which threads are used, 1 if mc and nc were set by sn_set_gemm_blocks,
 * the rows of the tail kernel's tile or 0, the multiply-adds from which
 * threads are used for at most small_m rows). SN_EINVAL for an unknown ISA. */
int sn_gemm_blocking(int isa, int64_t out[10]);
/* Sets an ISA's mc and nc (multiples of its mr and nr, at most 1024 and
 * 8192), or with mc = nc = 0 goes back to those derived from the caches.
 * They change only the speed, never a result (kc, which orders the sums, is
 * always derived). SN_EINVAL for an unsupported ISA or sizes out of range. */
int sn_set_gemm_blocks(int isa, int64_t mc, int64_t nc);
/* The multiply-adds (M x N x K) from which a GEMM of a few rows (at most
 * small_m) is cut in two halves, the second for a helper thread, up to
 * small_parallel_min (sn_gemm_blocking; from there the threads share it):
 * 0 for the default (SN_SMALL_PAIR_MIN_FLOPS), small_parallel_min for
 * never. Speed only, never a result. SN_EINVAL outside 0 ..
 * small_parallel_min. */
int sn_set_pair_min_flops(int64_t flops);
int64_t sn_get_pair_min_flops(void);
/* 1 (the default): each shape of such a GEMM is timed at run time, now
 * alone and now in two halves, and goes the faster way (sn_pair_choice.c);
 * 0: always in two halves where the threshold says so (tests). Speed only.
 * SN_EINVAL for anything else. */
int sn_set_pair_timing(int on);
int sn_get_pair_timing(void);
/* The caches the blocks are derived from: out = {L1d, L2, L3 bytes, logical
 * CPUs sharing L2, sharing L3}; returns where they came from: "cpuid",
 * "sysconf" or "defaults". */
const char *sn_caches(int64_t out[5]);

/* Threads a kernel may use: n < 1 means 1, n > SN_MAX_THREADS means
 * SN_MAX_THREADS (OpenMP runtimes crash creating tens of thousands). */
#define SN_MAX_THREADS 1024
void sn_set_num_threads(int n);
/* 1 in a process forked after this one's parallel regions had started
 * threads (OpenMP, GNU's at least, cannot start them again in the child: a
 * region there would wait forever), which then runs everything in the
 * calling thread */
int sn_forked_after_threads(void);
int sn_get_num_threads(void);
int sn_max_threads(void);               /* OpenMP's default, 1 without OpenMP */
/* on = 0: no back-off under contention (regions use the threads set,
 * whatever their times), any back-off under way ended; on = 1: back to
 * normal. For tests whose thread-count comparisons must really run on
 * that many threads. */
void sn_parallel_backoff(int on);
int sn_have_openmp(void);
/* nanoseconds for a cache line to go from one of the library's threads to
 * another and back (median over runs of `rounds` round trips), -1 when it
 * cannot be measured: see sn_runtime.c */
double sn_thread_round_trip_ns(int64_t rounds);
const char *sn_compiler(void);

/* ---- GEMM (sn_gemm.c) ----
 * C = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T.
 * op(A) is M x K, op(B) is K x N, C is M x N.
 * A is stored M x K (lda >= K) or, when trans_a, K x M (lda >= M); likewise B.
 * beta == 0 overwrites C without reading it (NaN in C does not propagate).
 * SN_ENOMEM if a packing workspace cannot be allocated: C untouched when the
 * call runs in one thread, partly written when it runs in several. */
int sn_gemm_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                float alpha, const float *A, int64_t lda,
                const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc);

/* Straight triple loop with float64 accumulation: the reference the fast
 * path is tested against, and readable. */
int sn_gemm_naive_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                      float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb,
                      float beta, float *C, int64_t ldc);

/* ---- dense layers with their activation fused (sn_dense.c) ----
 * SN_EINVAL as sn_gemm_f32, or for an unknown act or a negative LeakyReLU
 * slope; SN_ENOMEM as sn_gemm_f32 (backward: dW and db may be written). */
#define SN_ACT_NONE 0
#define SN_ACT_RELU 1
#define SN_ACT_LEAKY_RELU 2  /* act_param: the negative slope, >= 0 */
#define SN_ACT_SIGMOID 3
#define SN_ACT_TANH 4

/* y = act(x @ W + b): x is M x K, W is K x N, b has N values (or NULL);
 * bias and activation are applied to each tile as the GEMM writes it. */
int sn_dense_forward_f32(float *y, const float *x, const float *W, const float *b, int64_t M,
                         int64_t K, int64_t N, int act, float act_param);
/* Backward of y = x @ W + b given dz (M x N), the gradient at x @ W + b:
 *   dW = beta dW + x^T dz;  db = beta db + sum over rows of dz;
 *   if dz_below: dz_below = (dz @ W^T) * mask * act'(x), the gradient at the
 *   pre-activation of the layer below, whose output was x = act(.) (then
 *   with dropout mask, or mask NULL); act' is taken from x itself.
 * x is M x K and holds the activations BEFORE dropout when mask is given:
 * then x_in, the input the layer saw (x * mask), is what dW uses. */
int sn_dense_backward_f32(float *dW, float *db, float *dz_below, const float *dz,
                          const float *x_in, const float *W, const float *x, const float *mask,
                          int64_t M, int64_t K, int64_t N, int act_below, float act_param,
                          float beta);

/* ---- bias (sn_bias.c) ---- */
/* y[i, j] += b[j] for an M x N matrix y */
void sn_bias_add_f32(float *y, int64_t ldy, const float *b, int64_t M, int64_t N);
/* db[j] = beta * db[j] + sum_i dy[i, j]   (column sums) */
void sn_bias_grad_f32(float *db, const float *dy, int64_t lddy, int64_t M, int64_t N,
                      float beta);

/* ---- activations (sn_act.c); y and x may alias in forward, dx and dy in backward ---- */
/* y = max(0, x) */
void sn_relu_forward_f32(float *y, const float *x, int64_t n);
/* dx = dy * (x > 0) */
void sn_relu_backward_f32(float *dx, const float *dy, const float *x, int64_t n);
/* y = x if x > 0 else slope * x */
void sn_leaky_relu_forward_f32(float *y, const float *x, int64_t n, float slope);
/* dx = dy if x > 0 else slope * dy */
void sn_leaky_relu_backward_f32(float *dx, const float *dy, const float *x, int64_t n,
                                float slope);
/* y = 1 / (1 + exp(-x)) */
void sn_sigmoid_forward_f32(float *y, const float *x, int64_t n);
/* dx = dy * y * (1 - y), from the forward output y */
void sn_sigmoid_backward_f32(float *dx, const float *dy, const float *y, int64_t n);
/* y = tanh(x) */
void sn_tanh_forward_f32(float *y, const float *x, int64_t n);
/* dx = dy * (1 - y^2), from the forward output y */
void sn_tanh_backward_f32(float *dx, const float *dy, const float *y, int64_t n);
/* row-wise softmax of an M x N matrix: y_ij = exp(x_ij - m_i) / sum_k exp(x_ik - m_i) */
void sn_softmax_forward_f32(float *y, const float *x, int64_t M, int64_t N);
/* dx_ij = y_ij * (dy_ij - sum_k dy_ik y_ik) */
void sn_softmax_backward_f32(float *dx, const float *dy, const float *y, int64_t M, int64_t N);

/* inverted dropout: mask = (u >= p) / (1 - p) with u uniform in [0, 1) drawn
 * from a counter-based generator keyed by seed, y = x * mask. p in [0, 1).
 * Element i takes draw first + i of the stream: a process holding rows from
 * row r of a batch passes first = r * (values per row), and its masks are
 * those one process holding the whole batch draws for these rows. */
int sn_dropout_forward_f32(float *y, float *mask, const float *x, int64_t n, float p,
                           uint64_t seed, uint64_t first);
/* dx = dy * mask */
void sn_mul_f32(float *z, const float *x, const float *y, int64_t n);
/* x = alpha x (a sum of gradients over processes made their mean) */
void sn_scale_f32(float *x, int64_t n, float alpha);

/* ---- losses (sn_loss.c) ----
 * The *_forward kernels return the mean over the batch, sn_xent_train_f32
 * the sum. SN_EINVAL (M, N or n < 1, a label outside [0, N)) leaves every
 * output untouched; SN_ENONFINITE comes after the outputs were written
 * (probs, dz, and *loss, which holds the NaN or inf). */
/* Softmax cross-entropy from logits z (M x N) and integer labels:
 * lse_i = m_i + log sum_j exp(z_ij - m_i), loss = mean_i (lse_i - z_i,label_i).
 * Writes the softmax to probs for the backward pass. */
int sn_xent_forward_f32(double *loss, float *probs, const float *z, const int64_t *labels,
                        int64_t M, int64_t N);
/* dz = (probs - onehot(labels)) * scale, scale usually 1 / M */
int sn_xent_backward_f32(float *dz, const float *probs, const int64_t *labels,
                         int64_t M, int64_t N, float scale);
/* soft (or one-hot) targets T: loss = mean_i sum_j T_ij (lse_i - z_ij) */
int sn_xent_soft_forward_f32(double *loss, float *probs, const float *z, const float *T,
                             int64_t M, int64_t N);
/* dz_ij = (S_i probs_ij - T_ij) * scale with S_i = sum_j T_ij, the
 * gradient of that loss: (probs - T) * scale when each row of T sums to 1,
 * but not for multi-hot or unnormalised rows */
void sn_xent_soft_backward_f32(float *dz, const float *probs, const float *T, int64_t M,
                               int64_t N, float scale);
/* MSE: loss = mean (p - t)^2 over n elements */
int sn_mse_forward_f32(double *loss, const float *p, const float *t, int64_t n);
/* dp = (p - t) * scale, scale usually 2 / n */
void sn_mse_backward_f32(float *dp, const float *p, const float *t, int64_t n, float scale);
/* binary cross-entropy from logits: mean of max(z,0) - z t + log(1 + exp(-|z|)) */
int sn_bce_logits_forward_f32(double *loss, const float *z, const float *t, int64_t n);
/* dz = (sigmoid(z) - t) * scale, scale usually 1 / n */
void sn_bce_logits_backward_f32(float *dz, const float *z, const float *t, int64_t n,
                                float scale);

/* Training form of softmax cross-entropy with integer labels, one pass:
 * loss = sum_i (lse_i - z_i,label_i), the SUM over the M rows (a caller
 * adding batches divides once, by the number of samples), dz = (softmax(z)
 * - onehot) * scale, and correct = the number of rows whose largest logit
 * is the label's. */
int sn_xent_train_f32(double *loss, int64_t *correct, float *dz, const float *z,
                      const int64_t *labels, int64_t M, int64_t N, float scale);

/* ---- optimizers (sn_optim.c): one pass over a parameter buffer ----
 * The rules of torch.optim; g is never modified (weight decay is added to a
 * local copy). See docs/formulas.md. */

/* The learning rate after steps_taken steps of decay d: lr / (1 + d steps_taken).
 * Both decays of the library are this formula: every optimizer's decay=
 * (lr_t = lr / (1 + decay (t - 1)) at step t, counting from 1) and
 * AdaGrad's lr_decay (clr = lr / (1 + (t - 1) lr_decay)). The C trainer and
 * the Python optimizers both call it, in double, so they get the same bits
 * (Python's float is a double). */
double sn_decayed_lr(double lr, double decay, int64_t steps_taken);

/* b <- g (first step) or mu b + (1 - dampening) g; g <- g + mu b (nesterov) or b;
 * p <- p - lr g. buf is unused when momentum == 0. */
void sn_sgd_step_f32(float *p, float *buf, const float *g, int64_t n, float lr,
                     float momentum, float dampening, int nesterov, float weight_decay,
                     int first_step);
/* s <- s + g^2; p <- p - clr g / (sqrt(s) + eps), clr = sn_decayed_lr(lr, lr_decay, t - 1) */
void sn_adagrad_step_f32(float *p, float *sum, const float *g, int64_t n, float clr,
                         float eps, float weight_decay);
/* v <- alpha v + (1 - alpha) g^2; centered: a <- alpha a + (1 - alpha) g, v~ = v - a^2;
 * d = sqrt(v~) + eps; momentum: b <- mu b + g / d, p <- p - lr b; else p <- p - lr g / d */
void sn_rmsprop_step_f32(float *p, float *v, float *avg, float *buf, const float *g,
                         int64_t n, float lr, float alpha, float eps, float weight_decay,
                         float momentum, int centered);
/* m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
 * p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 * decoupled (AdamW): p <- p (1 - lr wd) first and g is left without wd p. */
void sn_adam_step_f32(float *p, float *m, float *v, const float *g, int64_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay,
                      int64_t step, int decoupled);

/* ---- a whole optimizer step over one parameter, threads over chunks ---- */
#define SN_OPT_SGD 0
#define SN_OPT_ADAGRAD 1
#define SN_OPT_RMSPROP 2
#define SN_OPT_ADAM 3
#define SN_OPT_ADAMW 4

typedef struct {
    int kind;                 /* SN_OPT_* */
    double lr;                /* the group's lr (schedules set it between epochs) */
    double decay;             /* lr_t = sn_decayed_lr(lr, decay, iterations) */
    float weight_decay;
    float momentum, dampening; int nesterov;   /* SGD (momentum also RMSProp) */
    float alpha; int centered;                 /* RMSProp */
    float beta1, beta2;                        /* Adam, AdamW */
    float eps;                                 /* AdaGrad, RMSProp, Adam */
    double lr_decay;                           /* AdaGrad: sn_decayed_lr(lr_t, lr_decay, step) */
    int64_t iterations;       /* steps taken so far: advanced by sn_optim_step_done */
    int64_t step;             /* per-parameter steps so far (all parameters in step) */
} sn_optim_cfg;

typedef struct {
    float *p;
    const float *g;
    float *state[3];          /* SGD: momentum; AdaGrad: sum; RMSProp: square_avg,
                                 grad_avg, momentum; Adam: exp_avg, exp_avg_sq */
    int64_t n;
} sn_param;

/* One optimizer step over elements [lo, hi) of one parameter, the counters
 * left as they are: a caller that splits a step over threads steps every
 * element once, then calls sn_optim_step_done once (iterations and step + 1). */
int sn_optim_step_range(const sn_optim_cfg *cfg, const sn_param *q, int64_t lo, int64_t hi);
void sn_optim_step_done(sn_optim_cfg *cfg);

/* ---- an MLP trained in one call per run of batches (sn_mlp.c) ---- */
typedef struct {
    int64_t in, out;
    float *W, *b, *dW, *db;   /* parameters (in x out, out) and their gradients */
    int act;                  /* SN_ACT_* after the matmul (NONE for the last layer) */
    float act_param;
    float dropout;            /* p of an inverted dropout after the activation, or 0 */
    uint64_t dropout_seed;    /* the mask of batch b of a run is keyed by dropout_seed + b,
                                 as the Dropout layer keys call t by its seed + t */
    /* workspace, each max_batch rows: */
    float *y;                 /* act(x W + b) */
    float *y_drop, *mask;     /* after dropout, and its mask (dropout > 0 only) */
    float *dz;                /* gradient at x W + b */
} sn_mlp_layer;

/* Whether the training steps run on the threads or in the calling thread
 * alone, chosen by timing both (sn_mlp.c). Zero-initialised by the caller. */
#define SN_TEAM_PROBE 8        /* steps timed each way */
/* Steps the threads are kept, once chosen, before timing again. The
 * probe's steps alone cost: a step on one thread took 1.4x one on two (AMD
 * EPYC Zen 3), so 8 of every 256 + 16 steps alone made epochs 8 x 0.4 /
 * 272 = 1.2% slower; of every 1024 + 16, 0.3%. Kept longer after wide wins
 * (SN_TEAM_KEEP_MAX below: 1.2 s of 784-128-10 training, 6 s of
 * 784-512-256-10); a slowdown of the threads' steps by SN_TEAM_SLOWER is
 * seen within SN_TEAM_PROBE steps, a smaller one (the vCPUs moved far
 * apart: 1.2-1.25x, where the threads still win) at the next timing. */
#define SN_TEAM_KEEP 1024
/* Steps alone is kept, once chosen, before timing again: this many the
 * first time, twice as many each time it is chosen again in a row, up to
 * SN_TEAM_KEEP. A moment's contention makes the threads look slow: NumPy's
 * OpenBLAS keeps its threads spinning for ~0.1 s after each product, and
 * 784-512-256-10 epochs that began within it ran alone throughout, 2.1-2.6 s
 * against 1.3-1.6 s begun 0.2-0.5 s later (AMD EPYC Zen 3). The threads' steps of the extra
 * timings cost at most 8 x 0.25 / (32 + 16) of the steps where two threads
 * are truly slower (1.25x, see sn_mlp.c), then less as the keep doubles. */
#define SN_TEAM_KEEP_ALONE 32
/* Threads that win by this much (alone's median step over theirs) twice in
 * a row or more are kept twice as long each time, up to SN_TEAM_KEEP_MAX
 * steps: a step alone took 1.93x one on two threads (AMD EPYC Zen 5), so
 * the probe's 8 steps alone of every 1024 + 16 made epochs 0.7% slower; of
 * every 8192 + 16, 0.1%. */
#define SN_TEAM_WIDE 1.5
#define SN_TEAM_KEEP_MAX 8192
/* Kept on the threads, SN_TEAM_PROBE full steps in a row each slower than
 * SN_TEAM_SLOWER x the threads' median at the last timing (another program
 * took a core, the vCPUs came to share one) time both ways again at once,
 * however long the keep, and the keep starts again from SN_TEAM_KEEP: a
 * slow spell at the start of every epoch (NumPy work between epochs, whose
 * OpenBLAS threads spin ~0.1 s) keeps the probe at its cost before these
 * constants, 0.7%. Alone is not watched so: its keep is at most
 * SN_TEAM_KEEP steps. */
#define SN_TEAM_SLOWER 1.5
typedef struct {
    int64_t count;             /* full-batch steps since the last timing began */
    int64_t keep;              /* steps the last choice is kept (0: none made yet) */
    int alone;                 /* 1: the steps run in the calling thread alone */
    int wide;                  /* 1: the threads won the last timing by SN_TEAM_WIDE */
    int slow;                  /* kept on the threads: full steps in a row slower than
                                  SN_TEAM_SLOWER x reference */
    double reference;          /* the threads' median step at the last timing */
    double times[2][SN_TEAM_PROBE]; /* the timed steps: [0] on the threads, [1] alone */
} sn_team_choice;

/* Data-parallel training: this process's share of each global batch of a
 * run. Batch b: this process holds rows[b] rows (0 allowed) of the global
 * batch of global[b] rows, from its row first[b]. The loss is the mean over
 * the global batch (dz scaled by 1 / global[b]), so the gradients of all
 * processes sum to the global batch's; dropout draws follow the global row;
 * reduce(ctx, b, ok), called between the backward pass and the optimizer
 * step, sums the gradients of all processes in place (ok = 0: this
 * process's outputs were not finite and its gradients were not computed:
 * reduce must make the sum non-finite on every process, so all stop at b). */
typedef struct {
    int64_t batches;
    const int64_t *rows, *first, *global;
    int (*reduce)(void *ctx, int64_t batch, int ok);  /* SN_OK, or ends the run */
    void *ctx;
} sn_mlp_shard;

typedef struct {
    int n_layers;
    sn_mlp_layer *layers;
    int64_t max_batch;
    float *xb;                /* max_batch x sn_mlp_batch_width(layers[0].in): the gathered batch */
    int64_t *yb;              /* max_batch labels */
    sn_param *params;         /* 2 per layer (W, b), for the optimizer */
    sn_team_choice *team;     /* training's choice of threads (NULL: always the threads) */
    const sn_mlp_shard *shard; /* data-parallel training (NULL: one process) */
    float *last_shares;       /* training with 2 or more layers: sn_mlp_last_shares_size
                                 floats, each part's share of the last layer's gradient */
} sn_mlp;

/* The floats a row of sn_mlp.xb (the gathered batch) takes for `in`
 * inputs: each part of the step's columns on whole 64-byte lines of their
 * own (sn_mlp_step.c), so at least in. */
int64_t sn_mlp_batch_width(int64_t in);

/* The floats sn_mlp.last_shares holds: per part of the step (sn_mlp_step.c),
 * the last layer's dW and db summed over that part's rows of the batch,
 * each part's on whole 64-byte lines; 0 for a network of one layer. */
int64_t sn_mlp_last_shares_size(const sn_mlp *net);

/* Train on rows order[0..n) of X (rows of layers[0].in floats) in batches of
 * batch_size: forward, softmax cross-entropy with labels, backward, one
 * optimizer step per batch. Adds the summed loss (a sum over rows, not the
 * mean) and the number of correct predictions to *loss_sum and *correct.
 * The dropout mask of layer l in the run's batch b is keyed by
 * layers[l].dropout_seed + b (the caller advances the seeds between runs).
 * A batch whose outputs, loss or any gradient are not finite ends the run
 * with SN_ENONFINITE before its optimizer step and before its loss is added:
 * opt->iterations then counts the batches of the run that stepped.
 * With net->shard, the run is its shard->batches batches of shard->rows[b]
 * rows each (n must be their sum, each at most max_batch; batch_size is
 * used only to tell full steps, which time the thread choice: a share's
 * rows are fewer, so with a shard no step is timed and the threads stay)
 * and a failed reduce ends it with its status. */
int sn_mlp_train_f32(const sn_mlp *net, sn_optim_cfg *opt, const float *X,
                     const int64_t *labels, int64_t n_classes, const int64_t *order, int64_t n,
                     int64_t batch_size, double *loss_sum, int64_t *correct);

/* Floats of workspace sn_mlp_forward_f32 needs for chunks of `rows` rows:
 * two activations of the widest layer, written in turn. */
int64_t sn_mlp_forward_workspace(const sn_mlp *net, int64_t rows);

/* Inference: out = the last layer's output for M rows of X (no dropout), or
 * its row-wise softmax when softmax is 1; any M, `rows` rows at a time.
 * Uses only the caller's workspace (sn_mlp_forward_workspace(net, rows)
 * floats) and the parameters: calls with their own workspaces may run at
 * the same time on one net. */
int sn_mlp_forward_f32(const sn_mlp *net, float *out, const float *X, int64_t M, int softmax,
                       float *workspace, int64_t rows);

/* ---- checks (sn_check.c) ---- */
/* 1 if every element is finite (an array of millions is read by the
 * library's threads) */
int sn_all_finite_f32(const float *x, int64_t n);

/* ---- 2-D convolution (sn_conv.c) ----
 * PyTorch's Conv2d (cross-correlation) on NCHW float32, zero padding:
 *   y[n, k, oh, ow] = b[k] + sum_{c, i, j} w[k, c, i, j]
 *                            * x[n, c, oh*sh + i - ph, ow*sw + j - pw]
 * (x read as 0 outside the image), OH = (H + 2 ph - kh) / sh + 1 (floor),
 * OW likewise. x is N x C x H x W, w is K x C x kh x kw, b has K values,
 * y is N x K x OH x OW, all contiguous.
 * Algorithm: im2col of `chunk` images at a time into col, (C kh kw) x
 * (chunk OH OW), so that one GEMM covers the chunk; col2im adds back. The
 * batch is cut into at most 8 slices of whole chunks, each computed by one
 * thread with its own part of the workspace. The results depend on chunk
 * (the order dW sums the images in) but never on the thread count. */
typedef struct {
    int64_t N, C, H, W;        /* input: batch, channels, height, width */
    int64_t K;                 /* output channels */
    int64_t kh, kw, sh, sw, ph, pw;  /* kernel, stride, zero padding */
    int64_t OH, OW;            /* output size, set by sn_conv2d_init */
    int64_t chunk;             /* images per GEMM, set by sn_conv2d_init (1..N);
                                  the caller may lower it before asking for the
                                  workspace length */
} sn_conv2d_cfg;

/* Fills cfg and derives OH, OW and a default chunk. SN_EINVAL (cfg
 * untouched) unless N >= 0, C, H, W, K, kh, kw, sh, sw >= 1, ph, pw >= 0,
 * and the padded image holds a kernel (H + 2 ph >= kh, W + 2 pw >= kw). */
int sn_conv2d_init(sn_conv2d_cfg *cfg, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                   int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw);
/* Floats of workspace forward and backward need (caller-owned; the same
 * length serves both), or -1 for an invalid cfg. */
int64_t sn_conv2d_workspace_len(const sn_conv2d_cfg *cfg);
/* y = conv(x, w) + b (b may be NULL: no bias). SN_EINVAL for an invalid cfg
 * or a NULL array (y untouched); SN_ENOMEM as sn_gemm_f32. */
int sn_conv2d_forward_f32(const sn_conv2d_cfg *cfg, float *y, const float *x, const float *w,
                          const float *b, float *workspace);
/* Backward of y = conv(x, w) + b given dy (N x K x OH x OW):
 *   dw = beta dw + sum_n dy_n @ col_n^T          (K x C kh kw)
 *   db = beta db + sum over n, oh, ow of dy      (db NULL: skipped)
 *   dx = col2im(w^T @ dy_n)                      (dx NULL: skipped; overwritten)
 * SN_EINVAL for an invalid cfg or a NULL array (nothing written); SN_ENOMEM
 * as sn_gemm_f32 (dw, db, dx may be partly written). */
int sn_conv2d_backward_f32(const sn_conv2d_cfg *cfg, float *dw, float *db, float *dx,
                           const float *dy, const float *x, const float *w, float beta,
                           float *workspace);

/* ---- pooling (sn_pool.c): NCHW float32, no padding ----
 * planes = N * C independent H x W planes, each computed whole by one
 * thread (the same bits for any thread count). Windows kh x kw, strides
 * sh, sw: Ho = (H - kh) / sh + 1, Wo = (W - kw) / sw + 1. SN_EINVAL (a size
 * < 1, a window larger than the plane, H * W > INT32_MAX) leaves outputs
 * untouched. */
/* *Ho, *Wo for these sizes, or SN_EINVAL */
int sn_pool2d_out_size(int64_t *Ho, int64_t *Wo, int64_t H, int64_t W, int64_t kh, int64_t kw,
                       int64_t sh, int64_t sw);
/* y = max of each window; argmax = its index i * W + j within the plane:
 * the first maximum in row-major scan order of the window; NaN wins. */
int sn_maxpool2d_forward_f32(float *y, int32_t *argmax, const float *x, int64_t planes,
                             int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw);
/* dx = 0; dx[argmax[o]] += dy[o] (overlapping windows add). An index outside
 * the plane is skipped and gives SN_EINVAL after dx was written. */
int sn_maxpool2d_backward_f32(float *dx, const float *dy, const int32_t *argmax, int64_t planes,
                              int64_t H, int64_t W, int64_t Ho, int64_t Wo);
/* y = sum of the window / (kh kw) (summed in double) */
int sn_avgpool2d_forward_f32(float *y, const float *x, int64_t planes, int64_t H, int64_t W,
                             int64_t kh, int64_t kw, int64_t sh, int64_t sw);
/* dx = 0; every position of a window gets dy / (kh kw) added */
int sn_avgpool2d_backward_f32(float *dx, const float *dy, int64_t planes, int64_t H, int64_t W,
                              int64_t kh, int64_t kw, int64_t sh, int64_t sw);
/* global average pool: y[p] = mean of plane p's hw values (summed in double) */
int sn_global_avgpool_forward_f32(float *y, const float *x, int64_t planes, int64_t hw);
/* dx[p, k] = dy[p] / hw */
int sn_global_avgpool_backward_f32(float *dx, const float *dy, int64_t planes, int64_t hw);

/* ---- batch normalisation (sn_norm.c): x is (N, C, S), S = H * W for
 * images, 1 for features; a channel's n = N * S values are normalised
 * together, each channel by one thread (the same bits for any thread count).
 * Statistics in double. SN_EINVAL (a size < 1, eps <= 0, momentum outside
 * [0, 1], n < 2 in training) leaves outputs untouched. ----
 * training: mu, var = mean and biased variance of the channel;
 *   running_mean <- (1 - m) running_mean + m mu,
 *   running_var  <- (1 - m) running_var + m var n / (n - 1)   (both updated
 *   in place; NULL skips the update);
 * inference: mu, var = running_mean, running_var (read only, required).
 * y = gamma (x - mu) / sqrt(var + eps) + beta; save_mean = mu and
 * save_invstd = 1 / sqrt(var + eps) (C values each) keep what backward needs. */
int sn_batchnorm_forward_f32(float *y, float *save_mean, float *save_invstd, float *running_mean,
                             float *running_var, const float *x, const float *gamma,
                             const float *beta, int64_t N, int64_t C, int64_t S, float eps,
                             float momentum, int training);
/* xhat = (x - save_mean) save_invstd; dbeta = sum dy; dgamma = sum dy xhat
 * (both overwritten, sums over the channel's n values in double);
 * training (the statistics came from the batch):
 *   dx = gamma save_invstd (dy - dbeta / n - xhat dgamma / n);
 * otherwise (fixed running statistics): dx = gamma save_invstd dy. */
int sn_batchnorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *save_mean, const float *save_invstd,
                              const float *gamma, int64_t N, int64_t C, int64_t S, int training);

/* ---- augmentation (sn_augment.c): NCHW float32 images, y and x distinct.
 * Random draws: key = splitmix64(seed), draw k = splitmix64(key + k) (the
 * dropout kernel's stream), so image i's draws depend only on (seed, i).
 * Image i of the call is image first + i of the stream (first: the row of
 * the batch this process's share starts at, in data-parallel training). ---- */
/* shifts[2 i], shifts[2 i + 1] = (sy, sx) of image i, each uniform in
 * [-pixels, pixels]: floor((draw >> 32) (2 pixels + 1) / 2^32) - pixels,
 * draws 2 i and 2 i + 1 */
int sn_random_shifts(int32_t *shifts, int64_t n, int64_t pixels, uint64_t seed,
                     uint64_t first);
/* flags[i] = the top bit of draw i (1: flip image i), probability 1/2 */
int sn_random_flips(int32_t *flags, int64_t n, uint64_t seed, uint64_t first);
/* y[b, c, i, j] = x[b, c, i - s sy, j - s sx] inside the plane, else 0, with
 * (sy, sx) = shifts of image b and s = sign: +1 the shift, -1 its adjoint
 * (the gradient moved back, 0 where the forward filled). */
int sn_shift2d_f32(float *y, const float *x, const int32_t *shifts, int64_t N, int64_t C,
                   int64_t H, int64_t W, int sign);
/* y[b, c, i, j] = x[b, c, i, W - 1 - j] where flags[b], else x (its own adjoint) */
int sn_flip2d_f32(float *y, const float *x, const int32_t *flags, int64_t N, int64_t C, int64_t H,
                  int64_t W);

/* ---- inference through a whole network (sn_net.c) ----
 * A network is a list of operations; operation i reads `in` floats per
 * sample and writes `out` (= the next one's `in`). Layers that only relabel
 * a contiguous sample (Flatten, Reshape) or are the identity at inference
 * (Dropout, augmentation) have no operation. */
#define SN_NET_DENSE 1          /* y = act(x @ w + b): w is in x out, b NULL or out values */
#define SN_NET_CONV2D 2         /* sn_conv2d_forward_f32: x C x H x W, w K x C x kh x kw */
#define SN_NET_MAXPOOL2D 3      /* C planes H x W, window kh x kw, stride sh, sw */
#define SN_NET_AVGPOOL2D 4
#define SN_NET_GLOBAL_AVGPOOL 5 /* C planes H x W -> C means */
#define SN_NET_BATCHNORM 6      /* inference: w, b = gamma, beta; mean, var running */
#define SN_NET_ACT 7            /* act (SN_ACT_*, not NONE) with act_param */
#define SN_NET_SOFTMAX 8        /* softmax over each group of K consecutive values */
typedef struct {
    int kind;                       /* SN_NET_* */
    int act;                        /* DENSE (fused, may be NONE) and ACT: SN_ACT_* */
    float act_param;                /* the leaky ReLU's slope */
    float eps;                      /* BATCHNORM */
    int64_t in, out;                /* floats per sample */
    int64_t C, H, W;                /* image input of CONV2D, pools, BATCHNORM (H = W = 1
                                       for features) */
    int64_t K, kh, kw, sh, sw, ph, pw; /* CONV2D: output channels, kernel, stride, padding;
                                       pools: window and stride; SOFTMAX: K */
    const float *w, *b;             /* DENSE, CONV2D: weight and bias (b may be NULL);
                                       BATCHNORM: gamma, beta */
    const float *mean, *var;        /* BATCHNORM: running statistics */
} sn_net_op;
/* SN_OK if the operations are well formed and chain, else SN_EINVAL */
int sn_net_check(const sn_net_op *ops, int n_ops);
/* Floats of workspace sn_net_forward_f32 needs for chunks of `rows`
 * samples, or -1 for an invalid network. */
int64_t sn_net_workspace(const sn_net_op *ops, int n_ops, int64_t rows);
/* out (M x the last operation's out) = the network applied to X (M x
 * ops[0].in), or its row-wise softmax when softmax is 1; `rows` samples at
 * a time, using only the caller's workspace (sn_net_workspace floats) and
 * the parameters: calls with their own workspaces may run at the same time. */
int sn_net_forward_f32(const sn_net_op *ops, int n_ops, float *out, const float *X, int64_t M,
                       int softmax, float *workspace, int64_t rows);

#ifdef __cplusplus
}
#endif
#endif /* SCRATCHNET_H */
