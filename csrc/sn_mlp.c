/* A multi-layer perceptron trained batch after batch without leaving C:
 * gather the batch, forward through fused dense layers, softmax
 * cross-entropy, backward with the activation derivative folded into each
 * input-gradient GEMM, one optimizer step. The caller (NumPy) owns every
 * buffer; nothing is allocated here. */
#include <stddef.h>
#include <string.h>

#include "scratchnet.h"
#include "sn_fpmode.h"
#include "sn_internal.h"

/* The input layer l saw in training: the batch x0, or the layer below's
 * output (after its dropout, if any). */
static const float *layer_input(const sn_mlp *net, const float *x0, int l)
{
    if (l == 0) return x0;
    const sn_mlp_layer *below = &net->layers[l - 1];
    return below->dropout > 0.0f ? below->y_drop : below->y;
}

/* Training forward pass of batch `batch` of a run: every layer's output
 * kept in its workspace for the backward pass. */
static int forward_train(const sn_mlp *net, const float *x0, int64_t M, int64_t batch)
{
    /* a share of a global batch draws the masks of its rows there */
    const uint64_t first_row = net->shard ? (uint64_t)net->shard->first[batch] : 0;
    for (int l = 0; l < net->n_layers; ++l) {
        const sn_mlp_layer *L = &net->layers[l];
        int status = sn_dense_forward_f32(L->y, layer_input(net, x0, l), L->W, L->b, M,
                                          L->in, L->out, L->act, L->act_param);
        if (status != SN_OK) return status;
        if (L->dropout > 0.0f) {
            status = sn_dropout_forward_f32(L->y_drop, L->mask, L->y, M * L->out, L->dropout,
                                            L->dropout_seed + (uint64_t)batch,
                                            first_row * (uint64_t)L->out);
            if (status != SN_OK) return status;
        }
    }
    return SN_OK;
}

static int backward(const sn_mlp *net, int64_t M)
{
    for (int l = net->n_layers - 1; l >= 0; --l) {
        const sn_mlp_layer *L = &net->layers[l];
        const sn_mlp_layer *below = l > 0 ? &net->layers[l - 1] : NULL;
        int status = sn_dense_backward_f32(
            L->dW, L->db, below ? below->dz : NULL, L->dz, layer_input(net, net->xb, l), L->W,
            below ? below->y : NULL, below && below->dropout > 0.0f ? below->mask : NULL, M,
            L->in, L->out, below ? below->act : SN_ACT_NONE, below ? below->act_param : 0.0f,
            0.0f);
        if (status != SN_OK) return status;
    }
    return SN_OK;
}

/* The finiteness check of each step's gradients, in chunks over the
 * threads (a large layer's gradient is read about as fast as the optimizer
 * step reads it). */
#define SN_CHECK_CHUNK 16384

static int finite_unit(const void *ctx, int64_t u)
{
    const sn_param *q = ctx;
    const int64_t lo = u * SN_CHECK_CHUNK;
    const int64_t n = q->n - lo < SN_CHECK_CHUNK ? q->n - lo : SN_CHECK_CHUNK;
    return sn_all_finite_f32(q->g + lo, n) ? SN_OK : SN_ENONFINITE;
}

static int gradients_finite(const sn_mlp *net)
{
    for (int k = 0; k < 2 * net->n_layers; ++k) {
        const sn_param *q = &net->params[k];
        const int64_t units = (q->n + SN_CHECK_CHUNK - 1) / SN_CHECK_CHUNK;
        const int nthreads = units > 1 ? sn_parallel_threads() : 1;
        if (sn_run_units(finite_unit, q, units, nthreads, 1) != SN_OK) return 0;
    }
    return 1;
}

/* ---- the threads or the calling thread alone ----
 * A step on two threads can be slower than on one. On the project's 2-vCPU
 * virtual machine the host sometimes places the two vCPUs on far-apart
 * cores: a cache line then takes ~500 ns to go from one core to the other
 * and back, against ~120 ns otherwise (a ping-pong of two pinned threads
 * shows it), and every step moves lines between the cores (the weights the
 * optimizer wrote, which the other thread reads next; the activations each
 * thread made). 784-128-10 Adam epochs then took 0.50-0.55 s on two threads
 * against 0.30 s, and 0.42 s on one; the placement changes while a process
 * runs. So the trainer times SN_TEAM_PROBE full steps each way, keeps the
 * faster for SN_TEAM_KEEP steps, then times again. The threads must be
 * clearly (5%) slower to be left: timing noise is no reason. The thread
 * count never changes a result. */

static double median_of_probe(const double *v)
{
    double s[SN_TEAM_PROBE];
    for (int i = 0; i < SN_TEAM_PROBE; ++i) {
        int j = i;
        for (; j > 0 && s[j - 1] > v[i]; --j) s[j] = s[j - 1];
        s[j] = v[i];
    }
    return 0.5 * (s[(SN_TEAM_PROBE - 1) / 2] + s[SN_TEAM_PROBE / 2]);
}

/* the threads the next full step may use: timing each way, then the choice */
void sn_team_before_step(const sn_team_choice *t)
{
    if (!t) return;
    const int alone = t->count < SN_TEAM_PROBE       ? 0
                      : t->count < 2 * SN_TEAM_PROBE ? 1
                                                     : t->alone;
    sn_cap_threads(alone ? 1 : 0);
}

/* a full step took `seconds` */
void sn_team_after_step(sn_team_choice *t, double seconds)
{
    if (!t) return;
    if (t->count < 2 * SN_TEAM_PROBE)
        t->times[t->count / SN_TEAM_PROBE][t->count % SN_TEAM_PROBE] = seconds;
    if (++t->count == 2 * SN_TEAM_PROBE)
        t->alone = median_of_probe(t->times[1]) < 0.95 * median_of_probe(t->times[0]);
    if (t->count >= 2 * SN_TEAM_PROBE + SN_TEAM_KEEP) t->count = 0;
}

/* a shard's batches: rows within [0, max_batch], summing to n, on valid rows
 * of global batches */
static int shard_valid(const sn_mlp *net, int64_t n)
{
    const sn_mlp_shard *s = net->shard;
    if (!s || s->batches < 0 || (s->batches && (!s->rows || !s->first || !s->global)) ||
        !s->reduce)
        return 0;
    int64_t sum = 0;
    for (int64_t b = 0; b < s->batches; ++b) {
        if (s->rows[b] < 0 || s->rows[b] > net->max_batch || s->global[b] < 1 ||
            s->first[b] < 0 || s->first[b] + s->rows[b] > s->global[b])
            return 0;
        sum += s->rows[b];
    }
    return sum == n;
}

/* every gradient = 0: a process with no rows in a global batch adds nothing */
static void zero_gradients(const sn_mlp *net)
{
    for (int k = 0; k < 2 * net->n_layers; ++k)
        memset((float *)net->params[k].g, 0, (size_t)net->params[k].n * sizeof(float));
}

/* The batch's rows picked from X into net->xb (and their labels), in
 * SN_GATHER_UNITS slices over the threads: rows picked at random from a
 * large X are a memory-latency-bound copy (47-65 us for 128 MNIST rows on
 * one AMD EPYC core), which two cores' outstanding misses shorten. While a
 * row is copied, the lines of the row SN_GATHER_AHEAD places further on
 * are asked for, so that its misses overlap with this copy instead of
 * following it (79 -> 65 us for 128 rows on one AMD EPYC Zen 3 core). */
#define SN_GATHER_UNITS 2
#define SN_GATHER_AHEAD 2
typedef struct {
    const sn_mlp *net;
    const float *X;
    const int64_t *labels, *order;
    int64_t M, in;
} sn_gather;

static int gather_unit(const void *ctx, int64_t u)
{
    const sn_gather *g = ctx;
    const int64_t per = (g->M + SN_GATHER_UNITS - 1) / SN_GATHER_UNITS;
    const int64_t end = (u + 1) * per < g->M ? (u + 1) * per : g->M;
    const int64_t row_bytes = g->in * (int64_t)sizeof(float);
    for (int64_t i = u * per; i < end; ++i) {
        if (i + SN_GATHER_AHEAD < end) {
            const char *ahead = (const char *)(g->X + g->order[i + SN_GATHER_AHEAD] * g->in);
            for (int64_t b = 0; b < row_bytes; b += 64) SN_PREFETCH(ahead + b);
        }
        const int64_t row = g->order[i];
        memcpy(g->net->xb + i * g->in, g->X + row * g->in, (size_t)row_bytes);
        g->net->yb[i] = g->labels[row];
    }
    return SN_OK;
}

int sn_mlp_train_f32(const sn_mlp *net, sn_optim_cfg *opt, const float *X,
                     const int64_t *labels, int64_t n_classes, const int64_t *order, int64_t n,
                     int64_t batch_size, double *loss_sum, int64_t *correct)
{
    const sn_mlp_shard *shard = net->shard;
    if (net->n_layers < 1 || net->layers[net->n_layers - 1].out != n_classes ||
        (shard ? !shard_valid(net, n) : batch_size < 1 || batch_size > net->max_batch))
        return SN_EINVAL;
    const int64_t batches = shard ? shard->batches : (n + batch_size - 1) / batch_size;
    const int64_t in = net->layers[0].in;
    const sn_mlp_layer *last = &net->layers[net->n_layers - 1];
    const unsigned fp = sn_fp_enter();
    int status = SN_OK;
    int64_t M = 0;
    for (int64_t start = 0, batch = 0; batch < batches && status == SN_OK;
         start += M, ++batch) {
        M = shard ? shard->rows[batch] : n - start < batch_size ? n - start : batch_size;
        const double t_step = SN_NOW();
        sn_team_before_step(net->team);
        const sn_gather gather = {net, X, labels, order + start, M, in};
        sn_run_units(gather_unit, &gather, SN_GATHER_UNITS,
                     M >= SN_GATHER_UNITS ? sn_parallel_threads() : 1,
                     SN_UNITS_STATIC | SN_UNITS_FP_AS_IS);
        double batch_loss = 0.0;
        int64_t batch_correct = 0;
        /* a non-finite output, loss or gradient ends the run before this
         * batch's step (SN_ENONFINITE): the parameters stay as the last
         * finite step left them */
        int finite = 1;
        if (M > 0) {
            status = forward_train(net, net->xb, M, batch);
            if (status != SN_OK) break;
            finite = sn_all_finite_f32(last->y, M * n_classes);
            /* the mean over the batch, or over the global batch of a share */
            const float scale = 1.0f / (float)(shard ? shard->global[batch] : M);
            if (finite)
                status = sn_xent_train_f32(&batch_loss, &batch_correct, last->dz, last->y,
                                           net->yb, M, n_classes, scale);
            if (status == SN_OK && finite) status = backward(net, M);
            if (status != SN_OK) break;
        } else {
            zero_gradients(net);
        }
        if (shard) status = shard->reduce(shard->ctx, batch, finite);
        if (status != SN_OK) break;
        if (!finite || !gradients_finite(net)) {
            status = SN_ENONFINITE;
            break;
        }
        *loss_sum += batch_loss;
        *correct += batch_correct;
        status = sn_optim_step_all(opt, net->params, 2 * net->n_layers);
        if (M == batch_size) sn_team_after_step(net->team, SN_NOW() - t_step);
    }
    sn_cap_threads(0);
    sn_fp_leave(fp);
    return status;
}

static int64_t widest_layer(const sn_mlp *net)
{
    int64_t widest = 0;
    for (int l = 0; l < net->n_layers; ++l)
        widest = net->layers[l].out > widest ? net->layers[l].out : widest;
    return widest;
}

int64_t sn_mlp_forward_workspace(const sn_mlp *net, int64_t rows)
{
    return 2 * rows * widest_layer(net);
}

int sn_mlp_forward_f32(const sn_mlp *net, float *out, const float *X, int64_t M, int softmax,
                       float *workspace, int64_t rows)
{
    if (net->n_layers < 1 || M < 0 || rows < 1 || !workspace) return SN_EINVAL;
    const unsigned fp = sn_fp_enter();
    const int64_t in = net->layers[0].in, half = rows * widest_layer(net);
    const sn_mlp_layer *last = &net->layers[net->n_layers - 1];
    int status = SN_OK;
    for (int64_t start = 0; start < M && status == SN_OK; start += rows) {
        const int64_t m = M - start < rows ? M - start : rows;
        const float *x = X + start * in;
        float *o = out + start * last->out;
        /* hidden layers write the two halves of the workspace in turn; the
         * last writes straight into out */
        for (int l = 0; l < net->n_layers && status == SN_OK; ++l) {
            const sn_mlp_layer *L = &net->layers[l];
            float *y = L == last ? o : workspace + (l % 2) * half;
            status = sn_dense_forward_f32(y, x, L->W, L->b, m, L->in, L->out, L->act,
                                          L->act_param);
            x = y;
        }
        if (status == SN_OK && softmax) sn_softmax_forward_f32(o, o, m, last->out);
    }
    sn_fp_leave(fp);
    return status;
}
