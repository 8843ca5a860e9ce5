/* A multi-layer perceptron trained batch after batch without leaving C:
 * gather the batch, forward through the dense layers, softmax
 * cross-entropy, backward with the activation derivative folded into each
 * input-gradient GEMM, one optimizer step (each step: sn_mlp_step.c). The
 * caller (NumPy) owns every buffer; nothing is allocated here. */
#include <stddef.h>
#include <string.h>

#include "scratchnet.h"
#include "sn_fpmode.h"
#include "sn_internal.h"

/* The finiteness check of a share's gradients once summed over the
 * processes (one process checks each as the step makes it), in pieces over
 * the threads: 16384 floats (64 KB), so that a 100,000-weight layer's
 * gradient, just written and in cache, is split over two cores (a large
 * layer's gradient is then read about as fast as the optimizer step reads
 * it). sn_all_finite_f32's 1M-float pieces are for data sets read from
 * memory, where a piece must pay back a thread's start-up on its own. */
#define SN_CHECK_CHUNK 16384

static int gradients_finite(const sn_mlp *net)
{
    for (int k = 0; k < 2 * net->n_layers; ++k) {
        const sn_param *q = &net->params[k];
        if (!sn_all_finite_pieces_f32(q->g, q->n, SN_CHECK_CHUNK, SN_UNITS_STATIC)) return 0;
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
 * faster for a while (SN_TEAM_KEEP steps the threads, longer while they
 * keep winning widely, fewer alone, see scratchnet.h), then times again,
 * or at once when the threads' steps turn clearly slower. The threads must be
 * clearly (5%) slower to be left: timing noise is no reason. The thread
 * count never changes a result. */

/* the threads the next full step may use: timing each way, then the choice */
void sn_team_before_step(const sn_team_choice *t)
{
    if (!t) return;
    const int alone = t->count < SN_TEAM_PROBE       ? 0
                      : t->count < 2 * SN_TEAM_PROBE ? 1
                                                     : t->alone;
    sn_cap_threads(alone ? 1 : 0);
}

/* the keep doubled, up to `most` */
static int64_t doubled(int64_t keep, int64_t most) { return 2 * keep < most ? 2 * keep : most; }

/* a full step took `seconds` */
void sn_team_after_step(sn_team_choice *t, double seconds)
{
    if (!t) return;
    if (t->count < 2 * SN_TEAM_PROBE) {
        t->times[t->count / SN_TEAM_PROBE][t->count % SN_TEAM_PROBE] = seconds;
    } else if (!t->alone) {
        /* kept on the threads: a run of clearly slower steps times again now */
        t->slow = seconds > SN_TEAM_SLOWER * t->reference ? t->slow + 1 : 0;
        if (t->slow >= SN_TEAM_PROBE) {
            t->count = t->slow = t->wide = 0;
            return;
        }
    }
    if (++t->count == 2 * SN_TEAM_PROBE) {
        const int was_alone = t->keep > 0 && t->alone, was_wide = t->keep > 0 && t->wide;
        const double team = sn_median(t->times[0], SN_TEAM_PROBE),
                     alone = sn_median(t->times[1], SN_TEAM_PROBE);
        t->alone = alone < 0.95 * team;
        t->wide = !t->alone && alone >= SN_TEAM_WIDE * team;
        t->reference = team;
        t->slow = 0;
        t->keep = t->alone  ? (was_alone ? doubled(t->keep, SN_TEAM_KEEP) : SN_TEAM_KEEP_ALONE)
                  : t->wide && was_wide ? doubled(t->keep, SN_TEAM_KEEP_MAX)
                                        : SN_TEAM_KEEP;
    }
    if (t->count >= 2 * SN_TEAM_PROBE + t->keep) t->count = 0;
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

/* layers that chain, activations the trainer knows on hidden layers only
 * (the last gives the raw logits), dropout in [0, 1) on hidden layers only,
 * and the parameters (W, b) of each layer in order */
static int layers_valid(const sn_mlp *net)
{
    if (net->n_layers < 1) return 0;
    for (int l = 0; l < net->n_layers; ++l) {
        const sn_mlp_layer *L = &net->layers[l];
        const sn_param *W = &net->params[2 * l], *b = &net->params[2 * l + 1];
        const int last = l == net->n_layers - 1;
        if (L->in < 1 || L->out < 1 || (l > 0 && L->in != net->layers[l - 1].out) ||
            L->act < SN_ACT_NONE || L->act > SN_ACT_TANH ||
            (L->act == SN_ACT_LEAKY_RELU && !(L->act_param >= 0.0f)) ||
            !(L->dropout >= 0.0f && L->dropout < 1.0f) ||
            (last && (L->dropout > 0.0f || L->act != SN_ACT_NONE)) ||
            W->p != L->W || W->g != L->dW || W->n != L->in * L->out || b->p != L->b ||
            b->g != L->db || b->n != L->out)
            return 0;
    }
    return 1;
}

/* every gradient = 0: a process with no rows in a global batch adds nothing */
static void zero_gradients(const sn_mlp *net)
{
    for (int k = 0; k < 2 * net->n_layers; ++k)
        memset((float *)net->params[k].g, 0, (size_t)net->params[k].n * sizeof(float));
}

int sn_mlp_train_f32(const sn_mlp *net, sn_optim_cfg *opt, const float *X,
                     const int64_t *labels, int64_t n_classes, const int64_t *order, int64_t n,
                     int64_t batch_size, double *loss_sum, int64_t *correct)
{
    const sn_mlp_shard *shard = net->shard;
    if (!layers_valid(net) || net->layers[net->n_layers - 1].out != n_classes ||
        (net->n_layers > 1 && !net->last_shares) ||
        (shard ? !shard_valid(net, n) : batch_size < 1 || batch_size > net->max_batch))
        return SN_EINVAL;
    const int64_t batches = shard ? shard->batches : (n + batch_size - 1) / batch_size;
    const unsigned fp = sn_fp_enter();
    int status = SN_OK;
    int64_t M = 0;
    /* A step's update is made at the start of the next step's first region
     * (sn_mlp_step_forward), where each thread updates the rows of W its
     * product reads next: one region fewer a step. pending: the step before's
     * update is still to be made. */
    int pending = 0;
    sn_mlp_step step;
    for (int64_t start = 0, batch = 0; batch < batches && status == SN_OK;
         start += M, ++batch) {
        M = shard ? shard->rows[batch] : n - start < batch_size ? n - start : batch_size;
        const double t_step = SN_NOW();
        sn_team_before_step(net->team);
        sn_mlp_step_begin(&step, net, M);
        /* a non-finite output, loss or gradient ends the run before this
         * batch's step (SN_ENONFINITE): the parameters stay as the last
         * finite step left them */
        int finite = 1;
        if (M > 0) {
            /* the mean over the batch, or over the global batch of a share;
             * a share draws the dropout masks of its rows there */
            const float scale = 1.0f / (float)(shard ? shard->global[batch] : M);
            const uint64_t first_row = shard ? (uint64_t)shard->first[batch] : 0;
            status = sn_mlp_step_forward(&step, net, pending ? opt : NULL, X, labels,
                                         order + start, M, batch, first_row, scale);
            pending = 0;
            for (int p = 0; p < SN_STEP_PARTS; ++p) finite = finite && step.finite[p];
            /* one process checks each gradient as it is made; a share's
             * gradients are checked once summed over the processes */
            if (status == SN_OK && finite) status = sn_mlp_step_backward(&step, net, M, !shard);
            if (status != SN_OK) break;
        } else {
            /* the update reads the gradients this step zeroes */
            if (pending) status = sn_mlp_step_optimize(&step, net, opt);
            pending = 0;
            if (status != SN_OK) break;
            zero_gradients(net);
        }
        if (shard) status = shard->reduce(shard->ctx, batch, finite);
        if (status != SN_OK) break;
        if (!finite || (shard && !gradients_finite(net))) {
            status = SN_ENONFINITE;
            break;
        }
        for (int p = 0; p < SN_STEP_PARTS; ++p) {
            *loss_sum += step.loss[p];
            *correct += step.correct[p];
        }
        pending = 1;
        /* full steps time the thread choice; a share's (M under the global
         * batch_size) never do: its step includes waiting for the other
         * processes at the reduce, which says nothing of the threads */
        if (M == batch_size) sn_team_after_step(net->team, SN_NOW() - t_step);
    }
    if (pending && status == SN_OK) status = sn_mlp_step_optimize(&step, net, opt);
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

/* floats of each half of the forward workspace: the widest layer's rows,
 * on whole lines, so the second half starts on a line as the first does (a
 * layer split between two threads by columns at a multiple of 16 floats
 * then shares no line between them) */
static int64_t forward_half(const sn_mlp *net, int64_t rows)
{
    return sn_whole_lines(rows * widest_layer(net));
}

int64_t sn_mlp_forward_workspace(const sn_mlp *net, int64_t rows)
{
    return 2 * forward_half(net, rows);
}

int sn_mlp_forward_f32(const sn_mlp *net, float *out, const float *X, int64_t M, int softmax,
                       float *workspace, int64_t rows)
{
    if (net->n_layers < 1 || M < 0 || rows < 1 || !workspace) return SN_EINVAL;
    const unsigned fp = sn_fp_enter();
    const int64_t in = net->layers[0].in, half = forward_half(net, rows);
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
