/* One training step of the fused trainer (sn_mlp.c), with every layer split
 * by its INPUTS into SN_STEP_PARTS parts.
 *
 * Layer l maps X_l (M x in, the batch or the layer below's output) to
 * Z_l = X_l W_l + b_l (M x out). Part p owns a contiguous range K_p of the
 * layer's inputs: the rows K_p of W_l, of dW_l and of their optimizer state,
 * and the columns K_p of X_l. Then
 *   forward    P_p = X_l[:, K_p] W_l[K_p, :]           (part 0 into y_l, part
 *              1 into dz_l, which the backward pass overwrites later);
 *              Z_l = (P_0 + P_1) + b_l, and the part that owns columns K of
 *              the next layer's input makes them: y_l[:, K] = act(Z_l[:, K]),
 *              then its dropout. The last layer, and the finish of the
 *              hidden layer H below it, split the BATCH's rows R_p instead,
 *              all in one region (last_layer): y_H[R_p, :] from P_0 + P_1,
 *              the logits x_O[R_p, :] W_O + b_O, their softmax cross-entropy,
 *              and at once the last layer's backward for those rows: its
 *              share S_p = x_O[R_p, :]^T dZ_O[R_p, :] of dW_O (and of db_O)
 *              and dZ_H[R_p, :]. Backward sums dW_O = S_0 + S_1 by rows K_p.
 *   backward   dW_l[K_p, :] = X_l[:, K_p]^T dZ_l, and the columns it owns
 *              of the layer below's gradient,
 *              dZ_l-1[:, K_p] = (dZ_l W_l[K_p, :]^T) * act'(y_l-1[:, K_p]) * mask;
 *   optimizer  the rows K_p of W_l, at the start of the next step's first
 *              region (before its gather and P_p = X_0[:, K_p] W_0[K_p, :],
 *              which read only those rows), or alone after the last step.
 * A part writes the weights it reads in the next step, so with one thread
 * per part only activation-sized data (M x out) crosses between cores, never
 * weight-sized. (The threaded GEMMs, left to split the work by output
 * columns themselves, moved half of every W and dW between the cores each
 * step: README, "Where the two-thread step's time goes".)
 *
 * Layer 0's inputs, the batch's columns, are split evenly on multiples of
 * 8 (784 = 392 + 392: on whole lines, 400 + 384, the first part's products
 * took 4% longer, about 4 us of each of the two largest regions of a
 * 784-128-10 step), and the gathered batch xb keeps each part's columns on
 * lines of their own: part p's from column batch_offset(in, p) of rows
 * sn_mlp_batch_width(in) floats apart, so no line of it is written by both.
 *
 * The number of parts is fixed, not the thread count: (P_0 + P_1) is
 * rounded the same whether one thread computes both products or two threads
 * one each, so results never depend on the thread count. With 2s or 2s + 1
 * threads (s > 1) each part is cut further into s strips that change no sum
 * (columns of a product, rows of dW, columns of dZ). */
#include <stddef.h>
#include <string.h>

#include "scratchnet.h"
#include "sn_atomic.h"
#include "sn_internal.h"

/* split points on multiples of 16 floats: whole 64-byte lines of each row
 * when rows are 16-float multiples wide (and 64-byte aligned) */
#define SN_STEP_ALIGN 16
/* Below this many multiply-adds a step (forward, ~3x that in all) runs in
 * the calling thread: a second thread's wake-ups cost more than it saves. */
#define SN_STEP_PARALLEL_MIN (1 << 20)

/* The batch's rows are picked at random from a large X: a copy bound by
 * memory latency (47-65 us for 128 MNIST rows on one AMD EPYC core), which
 * each part makes for its own columns, so both cores' misses overlap. While
 * a row is copied, the lines of the row SN_GATHER_AHEAD places further on
 * are asked for, so that its misses overlap with this copy instead of
 * following it (79 -> 65 us for 128 rows on one AMD EPYC Zen 3 core). */
#define SN_GATHER_AHEAD 2

/* Seconds a thread done with its part waits for the other to come to its
 * product before it gives up helping (last_gemm_shared): the second thread
 * of a region begins 1-20 us after the first (AMD EPYC Zen 3). */
#define SN_HELP_WAIT 50e-6

/* The i-th of `pieces` cut points of [0, n): cut(0) = 0, cut(pieces) = n,
 * and in between ceil(n i / pieces) rounded up to a multiple of align (or
 * n). So the first piece is never empty when n >= 1; later pieces may be
 * (n = 8 in two pieces on 16: 8 + 0). */
static int64_t cut(int64_t n, int64_t i, int64_t pieces, int64_t align)
{
    if (i >= pieces) return n;
    const int64_t c = ((n * i + pieces - 1) / pieces + align - 1) / align * align;
    return c < n ? c : n;
}

typedef struct {
    int64_t lo, hi;
} span;

/* part p's inputs of a layer with n of them */
static span part_of(int64_t n, int p)
{
    const span s = {cut(n, p, SN_STEP_PARTS, SN_STEP_ALIGN),
                    cut(n, p + 1, SN_STEP_PARTS, SN_STEP_ALIGN)};
    return s;
}

/* layer 0's inputs (the batch's columns) are cut on multiples of this, not
 * of whole lines (see the top) */
#define SN_STEP_INPUT_ALIGN 8

/* part p's inputs of layer l: layer 0's evenly, the others' on whole lines */
static span input_part(const sn_mlp *net, int l, int p)
{
    const int64_t n = net->layers[l].in;
    if (l > 0) return part_of(n, p);
    const span s = {cut(n, p, SN_STEP_PARTS, SN_STEP_INPUT_ALIGN),
                    cut(n, p + 1, SN_STEP_PARTS, SN_STEP_INPUT_ALIGN)};
    return s;
}

/* the column of xb where part p's inputs of layer 0 start: the parts
 * before it, each on whole lines */
static int64_t batch_offset(int64_t in, int p)
{
    int64_t at = 0;
    for (int q = 0; q < p; ++q)
        at += sn_whole_lines(cut(in, q + 1, SN_STEP_PARTS, SN_STEP_INPUT_ALIGN) -
                          cut(in, q, SN_STEP_PARTS, SN_STEP_INPUT_ALIGN));
    return at;
}

int64_t sn_mlp_batch_width(int64_t in) { return batch_offset(in, SN_STEP_PARTS); }

/* Where input k (of part p) of layer l is in the input the layer saw in
 * training, and that input's row stride: the gathered batch (xb, laid out
 * by parts) or the layer below's output (after its dropout, if any). */
static const float *input_at(const sn_mlp *net, int l, int p, int64_t k, int64_t *ld)
{
    if (l > 0) {
        const sn_mlp_layer *below = &net->layers[l - 1];
        *ld = net->layers[l].in;
        return (below->dropout > 0.0f ? below->y_drop : below->y) + k;
    }
    *ld = sn_mlp_batch_width(net->layers[0].in);
    return net->xb + batch_offset(net->layers[0].in, p) + (k - input_part(net, 0, p).lo);
}

/* strip s of `strips` of a span */
static span strip_of(span whole, int s, int strips)
{
    const int64_t n = whole.hi - whole.lo;
    const span r = {whole.lo + cut(n, s, strips, SN_STEP_ALIGN),
                    whole.lo + cut(n, s + 1, strips, SN_STEP_ALIGN)};
    return r;
}

/* a counter alone on its cache line: the two threads' claims on their own
 * parts' counters do not pass one line back and forth */
typedef union {
    sn_atomic_int v;
    char line[64];
} line_counter;

typedef struct {
    const sn_mlp *net;
    const sn_optim_cfg *opt;
    sn_gemm_plan plan;              /* the GEMMs' kernel and blocks, one for every unit */
    int steal;                      /* run_phase: two threads, one part each, may take
                                       each other's product panels (last_gemm_shared) */
    line_counter *claims;           /* [SN_STEP_PARTS]: each part's panels claimed */
    line_counter *ready;            /* [SN_STEP_PARTS]: 1 once the part's panels may be
                                       taken, -1 if they will not be made */
    const float *X;                 /* the data set, gathered from by order */
    const int64_t *labels, *order;
    int64_t M;                      /* rows in the batch */
    uint64_t dropout_batch;         /* added to each layer's dropout seed */
    uint64_t first_row;             /* the batch's first row in its global batch */
    float scale;                    /* of the loss gradient: 1 / global batch rows */
    int strips;                     /* per part: units = SN_STEP_PARTS * strips */
    int layer;                      /* the layer of a per-layer phase */
    int check;                      /* backward: check the gradients it made are finite */
    sn_atomic_int *nonfinite;       /* backward: set to 1 by a unit that made a non-finite one */
    sn_atomic_int *product_failed;  /* gather: a first product's error, kept so that no unit
                                       skips its part of the update before */
    double *loss;                   /* [SN_STEP_PARTS]: the summed loss of each part's rows */
    int64_t *correct;               /* [SN_STEP_PARTS] */
    int *finite;                    /* [SN_STEP_PARTS]: its logits were finite */
} step_ctx;

/* ---- the phases, one unit (part p, strip s) each ---- */

/* the batch's columns K_p (strip s) copied from its rows of X; unit 0 the labels */
static void gather(const step_ctx *c, int p, int s)
{
    const int64_t in = c->net->layers[0].in;
    const span cols = strip_of(input_part(c->net, 0, p), s, c->strips);
    const size_t bytes = (size_t)(cols.hi - cols.lo) * sizeof(float);
    int64_t ld;
    float *xb = (float *)input_at(c->net, 0, p, cols.lo, &ld);
    for (int64_t i = 0; i < c->M && bytes; ++i) {
        if (i + SN_GATHER_AHEAD < c->M) {
            const char *ahead = (const char *)(c->X + c->order[i + SN_GATHER_AHEAD] * in + cols.lo);
            for (size_t b = 0; b < bytes; b += 64) SN_PREFETCH(ahead + b);
        }
        memcpy(xb + i * ld, c->X + c->order[i] * in + cols.lo, bytes);
    }
    if (p == 0 && s == 0)
        for (int64_t i = 0; i < c->M; ++i) c->net->yb[i] = c->labels[c->order[i]];
}

/* P_p[:, strip s of the outputs] = X_l[:, K_p] W_l[K_p, strip]; with
 * claims, the panels this thread claims (sn_gemm_claimed_f32) */
static int product(const step_ctx *c, int l, int p, int s, const sn_claims *claims)
{
    const sn_mlp_layer *L = &c->net->layers[l];
    const span k = input_part(c->net, l, p);
    const span cols = strip_of((span){0, L->out}, s, c->strips);
    if (k.hi == k.lo || cols.hi == cols.lo) return SN_OK;
    float *P = p == 0 ? L->y : L->dz;
    int64_t ld;
    const float *x = input_at(c->net, l, p, k.lo, &ld);
    return sn_gemm_claimed_f32(&c->plan, 0, 0, c->M, cols.hi - cols.lo, k.hi - k.lo, 1.0f, x,
                               ld, L->W + k.lo * L->out + cols.lo, L->out, 0.0f, P + cols.lo,
                               L->out, NULL, claims);
}

/* y[:, cols] = act((P_0 + P_1) + b) for rows [rows0, rows1) of layer l.
 * Part 0 always has inputs (cut); P_1 is absent when part 1 has none. */
static void add_products(const sn_mlp *net, int l, int64_t rows0, int64_t rows1, span cols,
                         int act)
{
    const sn_mlp_layer *L = &net->layers[l];
    const span second = input_part(net, l, 1);
    const int two = second.hi > second.lo;
    for (int64_t i = rows0; i < rows1; ++i) {
        float *y = L->y + i * L->out + cols.lo;
        const float *p1 = L->dz + i * L->out + cols.lo;
        if (two)
            for (int64_t j = 0; j < cols.hi - cols.lo; ++j) y[j] += p1[j];
        sn_act_rows_f32(y, L->out, 1, cols.hi - cols.lo, L->b + cols.lo, act, L->act_param);
    }
}

/* part p's rows of the batch, for the last layer (and the hidden one below it) */
static span rows_of(int64_t M, int p)
{
    const span r = {M * p / SN_STEP_PARTS, M * (p + 1) / SN_STEP_PARTS};
    return r;
}

/* y_l[rows, cols] = act((P_0 + P_1) + b_l), then its dropout */
static int finish_rows(const step_ctx *c, const sn_mlp_layer *L, span rows, span cols)
{
    add_products(c->net, (int)(L - c->net->layers), rows.lo, rows.hi, cols, L->act);
    if (!(L->dropout > 0.0f)) return SN_OK;
    for (int64_t i = rows.lo; i < rows.hi; ++i) {
        /* element (i, j) takes draw (first_row + i) out + j of the batch's stream,
         * as one call over the whole batch would */
        const int64_t at = i * L->out + cols.lo;
        const int status = sn_dropout_forward_f32(
            L->y_drop + at, L->mask + at, L->y + at, cols.hi - cols.lo, L->dropout,
            L->dropout_seed + c->dropout_batch,
            (c->first_row + (uint64_t)i) * (uint64_t)L->out + (uint64_t)cols.lo);
        if (status != SN_OK) return status;
    }
    return SN_OK;
}

/* hidden layer l: the columns of y_l that are part p's inputs of layer l + 1 */
static int finish_hidden(const step_ctx *c, int l, int p, int s)
{
    const sn_mlp_layer *L = &c->net->layers[l];
    const span cols = strip_of(part_of(L->out, p), s, c->strips);
    if (cols.hi == cols.lo) return SN_OK;
    return finish_rows(c, L, (span){0, c->M}, cols);
}

/* the loss of the last layer L's logits (made) for part p's rows, and its
 * gradient, only if the logits are finite */
static int rows_loss(const step_ctx *c, const sn_mlp_layer *L, int p, span rows)
{
    const float *z = L->y + rows.lo * L->out;
    c->finite[p] = sn_all_finite_serial_f32(z, (rows.hi - rows.lo) * L->out);
    if (!c->finite[p] || rows.hi == rows.lo) return SN_OK;
    return sn_xent_train_f32(&c->loss[p], &c->correct[p], L->dz + rows.lo * L->out, z,
                             c->net->yb + rows.lo, rows.hi - rows.lo, L->out, c->scale);
}

/* the last layer: part p's rows of the logits, then their loss and its
 * gradient (only if the logits are finite) */
static int finish_last(const step_ctx *c, int p, int s)
{
    if (s != 0) return SN_OK;
    const sn_mlp_layer *L = &c->net->layers[c->net->n_layers - 1];
    const span rows = rows_of(c->M, p);
    const int status = finish_rows(c, L, rows, (span){0, L->out}); /* no activation, no dropout */
    return status == SN_OK ? rows_loss(c, L, p, rows) : status;
}

/* floats from one part's share of the last layer's gradient to the next's:
 * dW (in x out) and db (out), rounded up to whole 64-byte lines */
static int64_t share_stride(const sn_mlp_layer *O)
{
    return sn_whole_lines(O->in * O->out + O->out);
}

int64_t sn_mlp_last_shares_size(const sn_mlp *net)
{
    return net->n_layers < 2 ? 0 : SN_STEP_PARTS * share_stride(&net->layers[net->n_layers - 1]);
}

/* With two layers or more: the hidden layer H below the last layer O, for
 * part p's rows R_p of the batch (strip 0 only: the work is small, and the
 * shares must not depend on the strips). Every row of it needs only rows R_p
 * of what came before, so no region ends between:
 *   y_H[R_p, :] = act((P_0 + P_1) + b_H), then its dropout;
 *   the logits z[R_p, :] = x_O[R_p, :] W_O + b_O (x_O: y_H after dropout),
 *   and, if finite, their loss and its gradient dZ_O[R_p, :];
 *   part p's share of the last layer's gradient, dW: x_O[R_p, :]^T dZ_O[R_p, :],
 *   db: the sum of dZ_O's rows R_p (backward adds the parts' shares);
 *   dZ_H[R_p, :] = (dZ_O[R_p, :] W_O^T) * act'(y_H[R_p, :]) * mask[R_p, :].
 * dZ_H's rows R_p held P_1's, which this unit alone reads, and read first.
 * When the logits are not finite, no gradient is made: the step ends. */
static int last_layer(const step_ctx *c, int p, int s)
{
    if (s != 0) return SN_OK;
    const sn_mlp *net = c->net;
    const sn_mlp_layer *H = &net->layers[net->n_layers - 2];
    const sn_mlp_layer *O = &net->layers[net->n_layers - 1];
    const span rows = rows_of(c->M, p);
    const int64_t r0 = rows.lo, r1 = rows.hi;
    float *share_dW = net->last_shares + p * share_stride(O);
    float *share_db = share_dW + O->in * O->out;
    if (r1 == r0) { /* no rows: a share of zeros */
        memset(share_dW, 0, (size_t)(O->in * O->out + O->out) * sizeof(float));
        return SN_OK;
    }
    int status = finish_rows(c, H, rows, (span){0, H->out});
    if (status != SN_OK) return status;
    int64_t ld;
    const float *x = input_at(net, net->n_layers - 1, p, 0, &ld) + r0 * ld;
    float *z = O->y + r0 * O->out, *dz = O->dz + r0 * O->out;
    status = sn_gemm_serial_f32(0, 0, r1 - r0, O->out, O->in, 1.0f, x, ld, O->W, O->out, 0.0f,
                                z, O->out, NULL);
    if (status != SN_OK) return status;
    sn_act_rows_f32(z, O->out, r1 - r0, O->out, O->b, SN_ACT_NONE, O->act_param);
    status = rows_loss(c, O, p, rows);
    if (status != SN_OK || !c->finite[p]) return status;
    status = sn_gemm_serial_f32(1, 0, O->in, O->out, r1 - r0, 1.0f, x, ld, dz, O->out, 0.0f,
                                share_dW, O->out, NULL);
    if (status != SN_OK) return status;
    sn_bias_grad_f32(share_db, dz, O->out, r1 - r0, O->out, 0.0f);
    const sn_epilogue ep = {SN_EPI_DACT, H->act, H->act_param, NULL, H->y + r0 * H->out,
                            H->dropout > 0.0f ? H->mask + r0 * H->out : NULL, H->out};
    return sn_gemm_serial_f32(0, 1, r1 - r0, H->out, O->out, 1.0f, dz, O->out, O->W, O->out,
                              0.0f, H->dz + r0 * H->out, H->out, &ep);
}

/* the last layer's gradient from the parts' shares: rows K_p (strip s) of
 * dW_O = S_0 + S_1; unit 0 also db_O. 0 if one it made is not finite (and
 * the caller checks). */
static int sum_last_shares(const step_ctx *c, int p, int s)
{
    const sn_mlp *net = c->net;
    const sn_mlp_layer *O = &net->layers[net->n_layers - 1];
    const span k = strip_of(input_part(net, net->n_layers - 1, p), s, c->strips);
    const float *s0 = net->last_shares, *s1 = net->last_shares + share_stride(O);
    int finite = 1;
    for (int64_t i = k.lo * O->out; i < k.hi * O->out; ++i) O->dW[i] = s0[i] + s1[i];
    if (c->check && k.hi > k.lo)
        finite = sn_all_finite_serial_f32(O->dW + k.lo * O->out, (k.hi - k.lo) * O->out);
    if (p == 0 && s == 0) {
        const int64_t at = O->in * O->out;
        for (int64_t j = 0; j < O->out; ++j) O->db[j] = s0[at + j] + s1[at + j];
        if (c->check && finite) finite = sn_all_finite_serial_f32(O->db, O->out);
    }
    return finite;
}

/* layer l backward over part p's inputs (strip s): its rows of dW_l; unit 0
 * also db_l. Every gradient is made even when one is not finite (so which
 * ones are does not depend on the threads, and the caller can name the
 * first). */
static int weight_gradient(const step_ctx *c, int l, int p, int s)
{
    const sn_mlp_layer *L = &c->net->layers[l];
    const span k = strip_of(input_part(c->net, l, p), s, c->strips);
    const int64_t n = k.hi - k.lo;
    int finite = 1;
    if (p == 0 && s == 0) {
        sn_bias_grad_f32(L->db, L->dz, L->out, c->M, L->out, 0.0f);
        finite = !c->check || sn_all_finite_serial_f32(L->db, L->out);
    }
    int status = SN_OK;
    if (n > 0) {
        int64_t ld;
        const float *x = input_at(c->net, l, p, k.lo, &ld);
        /* dW[K, :] = X[:, K]^T dZ */
        status = sn_gemm_serial_f32(1, 0, n, L->out, c->M, 1.0f, x, ld, L->dz,
                                    L->out, 0.0f, L->dW + k.lo * L->out, L->out, NULL);
        if (c->check && finite) finite = sn_all_finite_serial_f32(L->dW + k.lo * L->out, n * L->out);
    }
    if (!finite) sn_atomic_store(c->nonfinite, 1);
    return status;
}

/* layer l > 0 backward over part p's inputs (strip s): its columns of the
 * gradient reaching the layer below (with claims, the panels this thread
 * claims),
 *   dZ_below[:, K] = (dZ W[K, :]^T) * act'(y_below[:, K]) * mask[:, K] */
static int input_gradient(const step_ctx *c, int l, int p, int s, const sn_claims *claims)
{
    const sn_mlp_layer *L = &c->net->layers[l], *below = &c->net->layers[l - 1];
    const span k = strip_of(input_part(c->net, l, p), s, c->strips);
    if (k.hi == k.lo) return SN_OK;
    const sn_epilogue ep = {SN_EPI_DACT, below->act, below->act_param, NULL, below->y + k.lo,
                            below->dropout > 0.0f ? below->mask + k.lo : NULL, L->in};
    return sn_gemm_claimed_f32(&c->plan, 0, 1, c->M, k.hi - k.lo, L->out, 1.0f, L->dz, L->out,
                               L->W + k.lo * L->out, L->out, 0.0f, below->dz + k.lo, L->in, &ep,
                               claims);
}

/* the optimizer over part p's rows of every W (strip s); unit 0 the biases */
static int optimize(const step_ctx *c, int p, int s)
{
    for (int l = 0; l < c->net->n_layers; ++l) {
        const sn_mlp_layer *L = &c->net->layers[l];
        const span k = strip_of(input_part(c->net, l, p), s, c->strips);
        int status = sn_optim_step_range(c->opt, &c->net->params[2 * l], k.lo * L->out,
                                         k.hi * L->out);
        if (status == SN_OK && p == 0 && s == 0)
            status = sn_optim_step_range(c->opt, &c->net->params[2 * l + 1], 0, L->out);
        if (status != SN_OK) return status;
    }
    return SN_OK;
}

/* ---- the phases as parallel regions ----
 * With one strip per part, a unit's inputs of one phase are what it made in
 * the one before (its columns of the batch, its columns of y_l), so the
 * gather and the first product, and each hidden layer's finish and the next
 * product, run in one region. With more strips a region ends between them. */
enum { PH_GATHER, PH_FORWARD, PH_FINISH, PH_LAST, PH_BACKWARD, PH_OPTIMIZE };
typedef struct {
    const step_ctx *c;
    int phase;
} phase_job;

/* ---- per-phase timing, compiled in only with -DSN_STEP_PROFILE ----
 * For benchmarks/c/ab_mlp_trainer.c (PHASES=1): each region's wall time and
 * each unit's busy time, summed per slot (one phase of one layer) until
 * sn_step_profile_report prints them per step and starts over. For one
 * trainer at a time: a unit adds only to its own cells, the thread that
 * starts the regions to the wall times. */
#ifdef SN_STEP_PROFILE
/* layers and units past these are not recorded */
enum { PROFILE_LAYERS = 8, PROFILE_UNITS = 16, PROFILE_SLOTS = 2 + 4 * PROFILE_LAYERS };
static double g_profile_wall[PROFILE_SLOTS], g_profile_busy[PROFILE_SLOTS][PROFILE_UNITS];
static int64_t g_profile_steps;

/* the gather (with the update of the step before) 0, the update after a
 * run's last step 1, then each layer's forward, finish and backward; -1:
 * not recorded */
static int profile_slot(int phase, int layer)
{
    if (phase == PH_GATHER) return 0;
    if (phase == PH_OPTIMIZE) return 1;
    if (layer >= PROFILE_LAYERS) return -1;
    const int kind = phase == PH_FORWARD ? 0 : phase == PH_FINISH ? 1 : phase == PH_LAST ? 3 : 2;
    return 2 + kind * PROFILE_LAYERS + layer;
}

/* seconds of region (unit < 0) or of unit u of a region, of one phase of one layer */
static void profile_add(int phase, int layer, int64_t unit, double seconds)
{
    const int slot = profile_slot(phase, layer);
    if (slot < 0 || unit >= PROFILE_UNITS) return;
    if (unit < 0)
        g_profile_wall[slot] += seconds;
    else
        g_profile_busy[slot][unit] += seconds;
}

int64_t sn_step_profile_report(FILE *out)
{
    const int64_t steps = g_profile_steps;
    static const char *const kinds[] = {"forward", "finish (+ next forward)", "backward",
                                        "finish + last layer"};
    for (int slot = 0; out && steps > 0 && slot < PROFILE_SLOTS; ++slot) {
        if (g_profile_wall[slot] == 0.0) continue;
        char name[64];
        if (slot < 2)
            snprintf(name, sizeof name, "%s",
                     slot == 0 ? "update, gather (+ forward 0)" : "update after the last step");
        else
            snprintf(name, sizeof name, "%s %d", kinds[(slot - 2) / PROFILE_LAYERS],
                     (slot - 2) % PROFILE_LAYERS);
        fprintf(out, "  %-29s region %8.1f us, units", name, g_profile_wall[slot] / steps * 1e6);
        for (int u = 0; u < PROFILE_UNITS; ++u)
            if (g_profile_busy[slot][u] > 0.0)
                fprintf(out, " %8.1f", g_profile_busy[slot][u] / steps * 1e6);
        fprintf(out, "\n");
    }
    memset(g_profile_wall, 0, sizeof g_profile_wall);
    memset(g_profile_busy, 0, sizeof g_profile_busy);
    g_profile_steps = 0;
    return steps;
}
#endif

/* The GEMM a unit's phase ends with, for part p: layer 0's product
 * (PH_GATHER), the next layer's (PH_FINISH) or the gradient reaching the
 * layer below (PH_BACKWARD); with claims, the panels this thread claims. */
static int last_gemm(const step_ctx *c, int phase, int p, const sn_claims *claims)
{
    if (phase == PH_GATHER) return product(c, 0, p, 0, claims);
    if (phase == PH_FINISH) return product(c, c->layer + 1, p, 0, claims);
    return input_gradient(c, c->layer, p, 0, claims);
}

/* Part p's last GEMM of a phase, once the rest of its unit is done with
 * status `begun` (else none of it is made). Without stealing, all of it
 * here. With it (two threads, one unit each, running at once), the part's
 * panels may be taken from then on: this thread makes those it claims,
 * then waits (a while at most) until the other part's may be taken and
 * helps with them (a helper takes panels while two or more are left:
 * sn_gemm_claimed_f32),
 * so that the first thread done does not wait at the region's end while
 * the other still has panels to make (the two vCPUs here often run a few
 * percent apart for seconds, and the second thread starts its unit 1-20
 * us after the first). A take that fails (SN_ENOMEM) claims nothing, and
 * the part's own thread makes it all: only this part's status is
 * returned. */
static int last_gemm_shared(const step_ctx *c, int phase, int p, int begun)
{
    if (!c->steal || sn_team_size() != SN_STEP_PARTS)
        return begun == SN_OK ? last_gemm(c, phase, p, NULL) : begun;
    sn_atomic_publish(&c->ready[p].v, begun == SN_OK ? 1 : -1);
    const sn_claims mine = {&c->claims[p].v, 0};
    const int status = begun == SN_OK ? last_gemm(c, phase, p, &mine) : begun;
    const int q = 1 - p;
    const sn_claims theirs = {&c->claims[q].v, 1};
    /* not for longer than SN_HELP_WAIT: a partner that has not come to its
     * product by then (descheduled, the CPU busy with another program) is
     * left to make it all, as before helping, and its core is not kept busy
     * by this wait */
    const double give_up = SN_NOW() + SN_HELP_WAIT;
    int other;
    for (int turn = 1; (other = sn_atomic_load_acquire(&c->ready[q].v)) == 0; ++turn) {
        sn_spin_pause();
        if (turn % 64 == 0 && SN_NOW() > give_up) break;
    }
    if (other > 0) (void)last_gemm(c, phase, q, &theirs);
    return status;
}

static int phase_work(const void *ctx, int64_t u)
{
    const phase_job *job = ctx;
    const step_ctx *c = job->c;
    const int p = (int)(u / c->strips), s = (int)(u % c->strips), l = c->layer;
    const int last = c->net->n_layers - 1;
    const int merged = c->strips == 1;
    switch (job->phase) {
    case PH_GATHER: {
        /* the step before's update first: it writes only this unit's rows
         * of each W (and unit 0 the biases), which the product reads */
        const int status = c->opt ? optimize(c, p, s) : SN_OK;
        if (status == SN_OK) gather(c, p, s);
        if (!merged || status != SN_OK)
            return merged ? last_gemm_shared(c, PH_GATHER, p, status) : status;
        /* a failed product (SN_ENOMEM) must not stop the units after this
         * one from making their part of the update (one thread runs the
         * units in turn and stops at the first error): kept, returned
         * once the whole update is made and counted */
        const int made = last_gemm_shared(c, PH_GATHER, p, SN_OK);
        if (made != SN_OK) sn_atomic_store(c->product_failed, made);
        return SN_OK;
    }
    case PH_FORWARD:
        return product(c, l, p, s, NULL);
    case PH_FINISH:
        if (l == last) return finish_last(c, p, s);
        {
            const int status = finish_hidden(c, l, p, s);
            return merged ? last_gemm_shared(c, PH_FINISH, p, status) : status;
        }
    case PH_LAST:
        return last_layer(c, p, s);
    case PH_BACKWARD: {
        if (l == last - 1 && !sum_last_shares(c, p, s)) sn_atomic_store(c->nonfinite, 1);
        const int status = weight_gradient(c, l, p, s);
        if (l == 0) return status;
        if (merged) return last_gemm_shared(c, PH_BACKWARD, p, status);
        return status == SN_OK ? input_gradient(c, l, p, s, NULL) : status;
    }
    default:
        return optimize(c, p, s);
    }
}

static int phase_unit(const void *ctx, int64_t u)
{
#ifdef SN_STEP_PROFILE
    const double t0 = SN_NOW();
#endif
    const int status = phase_work(ctx, u);
#ifdef SN_STEP_PROFILE
    const phase_job *job = ctx;
    profile_add(job->phase, job->c->layer, u, SN_NOW() - t0);
#endif
    return status;
}

/* Each region asks for its threads (sn_parallel_threads): a back-off under
 * contention counts regions, as for the GEMMs. Asked once a step, a back-off
 * lasted six or more times as long, and 784-512-256-10 ran most of its steps
 * on one thread. */
static int run_phase(step_ctx *c, int phase, int layer, int parallel)
{
    c->layer = layer;
    const int nthreads = parallel ? sn_parallel_threads() : 1;
    const phase_job job = {c, phase};
    c->steal = nthreads == SN_STEP_PARTS && c->strips == 1 && c->claims != NULL;
    for (int p = 0; c->claims && p < SN_STEP_PARTS; ++p) {
        sn_atomic_store(&c->claims[p].v, 0);
        sn_atomic_store(&c->ready[p].v, 0);
    }
    /* static: unit u runs on the same thread every phase and every step, so
     * each part's data stays in one core's cache */
#ifdef SN_STEP_PROFILE
    const double t0 = SN_NOW();
#endif
    const int status = sn_run_units(phase_unit, &job, (int64_t)SN_STEP_PARTS * c->strips,
                                    nthreads, SN_UNITS_STATIC);
#ifdef SN_STEP_PROFILE
    profile_add(phase, layer, -1, SN_NOW() - t0);
    g_profile_steps += phase == PH_GATHER;
#endif
    return status;
}

/* the multiply-adds of one forward pass over M rows */
static int64_t forward_macs(const sn_mlp *net, int64_t M)
{
    int64_t macs = 0;
    for (int l = 0; l < net->n_layers; ++l) macs += M * net->layers[l].in * net->layers[l].out;
    return macs;
}

void sn_mlp_step_begin(sn_mlp_step *st, const sn_mlp *net, int64_t M)
{
    st->parallel = forward_macs(net, M) >= SN_STEP_PARALLEL_MIN;
    const int threads = st->parallel ? sn_parallel_threads() : 1;
    st->strips = threads > SN_STEP_PARTS ? threads / SN_STEP_PARTS : 1;
    for (int p = 0; p < SN_STEP_PARTS; ++p) {
        st->loss[p] = 0.0;
        st->correct[p] = 0;
        st->finite[p] = 1;
    }
}

int sn_mlp_step_forward(sn_mlp_step *st, const sn_mlp *net, sn_optim_cfg *pending,
                        const float *X, const int64_t *labels, const int64_t *order, int64_t M,
                        int64_t batch, uint64_t first_row, float scale)
{
    sn_atomic_int product_failed = SN_OK;
    _Alignas(64) line_counter claims[SN_STEP_PARTS], ready[SN_STEP_PARTS];
    step_ctx c = {.net = net, .opt = pending, .plan = sn_active_gemm_plan(), .claims = claims,
                  .ready = ready, .X = X, .labels = labels, .order = order, .M = M,
                  .dropout_batch = (uint64_t)batch, .first_row = first_row, .scale = scale,
                  .strips = st->strips, .loss = st->loss, .correct = st->correct,
                  .finite = st->finite, .product_failed = &product_failed};
    int status = run_phase(&c, PH_GATHER, 0, st->parallel);
    if (pending && status == SN_OK) sn_optim_step_done(pending);
    if (status == SN_OK) status = sn_atomic_load(&product_failed);
    /* with two layers or more, the last one is made with the finish of the
     * layer below (PH_LAST) */
    const int last = net->n_layers - 1, upto = last > 0 ? last - 1 : last;
    for (int l = 0; l <= upto && status == SN_OK; ++l) {
        /* one strip per part: the product was made in the region before */
        if (c.strips > 1) status = run_phase(&c, PH_FORWARD, l, st->parallel);
        if (status == SN_OK)
            status = run_phase(&c, last > 0 && l == last - 1 ? PH_LAST : PH_FINISH, l,
                               st->parallel);
    }
    return status;
}

int sn_mlp_step_backward(const sn_mlp_step *st, const sn_mlp *net, int64_t M, int check)
{
    sn_atomic_int nonfinite = 0;
    _Alignas(64) line_counter claims[SN_STEP_PARTS], ready[SN_STEP_PARTS];
    step_ctx c = {.net = net, .plan = sn_active_gemm_plan(), .claims = claims, .ready = ready,
                  .M = M, .strips = st->strips, .check = check, .nonfinite = &nonfinite};
    int status = SN_OK;
    /* with two layers or more, the last one's backward was made by PH_LAST,
     * but for the sum of its shares, made with the layer below's */
    const int top = net->n_layers > 1 ? net->n_layers - 2 : 0;
    for (int l = top; l >= 0 && status == SN_OK; --l)
        status = run_phase(&c, PH_BACKWARD, l, st->parallel);
    return status == SN_OK && sn_atomic_load(&nonfinite) ? SN_ENONFINITE : status;
}

int sn_mlp_step_optimize(const sn_mlp_step *st, const sn_mlp *net, sn_optim_cfg *opt)
{
    step_ctx c = {.net = net, .opt = opt, .strips = st->strips};
    const int status = run_phase(&c, PH_OPTIMIZE, 0, st->parallel);
    if (status == SN_OK) sn_optim_step_done(opt);
    return status;
}
