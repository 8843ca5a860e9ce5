/* Inference through a whole network in one call: a list of operations
 * (dense, convolution, pooling, batch norm with running statistics,
 * activations, softmax), each the kernel the layer-by-layer path calls, run
 * on chunks of `rows` samples with the caller's workspace. Layers that only
 * relabel a contiguous sample (Flatten, Reshape) or are the identity at
 * inference (Dropout, augmentation) are left out by the caller. This is the
 * path of one-image latency: no Python between the layers. */
#include <string.h>

#include "scratchnet.h"
#include "sn_fpmode.h"
#include "sn_internal.h"

/* operations that write y[i] from x[i] alone, so may run in place */
static int elementwise(const sn_net_op *op)
{
    return op->kind == SN_NET_ACT || op->kind == SN_NET_BATCHNORM;
}

/* the convolution of op for a chunk of m samples */
static int conv_cfg(sn_conv2d_cfg *cfg, const sn_net_op *op, int64_t m)
{
    return sn_conv2d_init(cfg, m, op->C, op->H, op->W, op->K, op->kh, op->kw, op->sh, op->sw,
                          op->ph, op->pw);
}

/* 1 if op is well formed: sizes that agree with each other */
static int op_ok(const sn_net_op *op)
{
    if (op->in < 1 || op->out < 1) return 0;
    const int64_t image = op->C * op->H * op->W;
    int64_t Ho, Wo;
    sn_conv2d_cfg cfg;
    switch (op->kind) {
    case SN_NET_DENSE:
        return op->w != NULL && op->act >= SN_ACT_NONE && op->act <= SN_ACT_TANH;
    case SN_NET_CONV2D:
        return op->w != NULL && conv_cfg(&cfg, op, 1) == SN_OK && op->in == image &&
               op->out == op->K * cfg.OH * cfg.OW;
    case SN_NET_MAXPOOL2D:
    case SN_NET_AVGPOOL2D:
        return op->C >= 1 && op->in == image &&
               sn_pool2d_out_size(&Ho, &Wo, op->H, op->W, op->kh, op->kw, op->sh, op->sw) ==
                   SN_OK &&
               op->out == op->C * Ho * Wo;
    case SN_NET_GLOBAL_AVGPOOL:
        return op->C >= 1 && op->in == image && op->out == op->C;
    case SN_NET_BATCHNORM: /* C channels of H W values each (H W = 1 for features) */
        return op->C >= 1 && op->in == image && op->out == op->in && op->w && op->b &&
               op->mean && op->var && op->eps > 0.0f;
    case SN_NET_ACT:
        return op->out == op->in && op->act > SN_ACT_NONE && op->act <= SN_ACT_TANH;
    case SN_NET_SOFTMAX: /* over groups of K consecutive values */
        return op->out == op->in && op->K >= 1 && op->in % op->K == 0;
    default:
        return 0;
    }
}

int sn_net_check(const sn_net_op *ops, int n_ops)
{
    if (!ops || n_ops < 1) return SN_EINVAL;
    for (int i = 0; i < n_ops; ++i) {
        if (!op_ok(&ops[i])) return SN_EINVAL;
        if (i > 0 && ops[i].in != ops[i - 1].out) return SN_EINVAL;
    }
    return SN_OK;
}

/* The workspace, in floats: two activations of the widest operation (the
 * outputs of consecutive operations alternate between them), then the
 * largest scratch one operation needs: a convolution's workspace, a
 * max-pool's arg-max indices (int32, as many as its outputs), or batch
 * norm's per-channel statistics. */
/* floats of one activation half for chunks of rows samples, or -1 */
static int64_t half_len(const sn_net_op *ops, int n_ops, int64_t rows)
{
    int64_t widest = 0;
    for (int i = 0; i < n_ops; ++i)
        if (ops[i].out > widest) widest = ops[i].out;
    /* whole 64-byte lines: the second half starts on one as the first does */
    return widest > ((int64_t)1 << 40) / rows ? -1 : sn_whole_lines(rows * widest);
}

/* floats of the largest scratch one operation needs, or -1 */
static int64_t scratch_len(const sn_net_op *ops, int n_ops, int64_t rows)
{
    int64_t scratch = 0;
    for (int i = 0; i < n_ops; ++i) {
        const sn_net_op *op = &ops[i];
        int64_t need = 0;
        if (op->kind == SN_NET_CONV2D) {
            /* the workspace length is not monotonic in the batch (slices of
             * whole chunks): the largest over every chunk size a call may use */
            sn_conv2d_cfg cfg;
            for (int64_t m = 1; m <= rows; ++m) {
                if (conv_cfg(&cfg, op, m) != SN_OK) return -1;
                const int64_t len = sn_conv2d_workspace_len(&cfg);
                if (len < 0) return -1;
                if (len > need) need = len;
            }
        } else if (op->kind == SN_NET_MAXPOOL2D) {
            need = rows * op->out;
        } else if (op->kind == SN_NET_BATCHNORM) {
            need = 2 * op->C;
        }
        if (need > scratch) scratch = need;
    }
    return scratch;
}

int64_t sn_net_workspace(const sn_net_op *ops, int n_ops, int64_t rows)
{
    if (rows < 1 || sn_net_check(ops, n_ops) != SN_OK) return -1;
    const int64_t half = half_len(ops, n_ops, rows), scratch = scratch_len(ops, n_ops, rows);
    return half < 0 || scratch < 0 ? -1 : 2 * half + scratch;
}

/* y (m samples of op->out floats) = op applied to x (m samples of op->in) */
static int run_op(const sn_net_op *op, float *y, const float *x, int64_t m, float *scratch)
{
    sn_conv2d_cfg cfg;
    switch (op->kind) {
    case SN_NET_DENSE:
        return sn_dense_forward_f32(y, x, op->w, op->b, m, op->in, op->out, op->act,
                                    op->act_param);
    case SN_NET_CONV2D:
        if (conv_cfg(&cfg, op, m) != SN_OK) return SN_EINVAL;
        return sn_conv2d_forward_f32(&cfg, y, x, op->w, op->b, scratch);
    case SN_NET_MAXPOOL2D:
        return sn_maxpool2d_forward_f32(y, (int32_t *)scratch, x, m * op->C, op->H, op->W,
                                        op->kh, op->kw, op->sh, op->sw);
    case SN_NET_AVGPOOL2D:
        return sn_avgpool2d_forward_f32(y, x, m * op->C, op->H, op->W, op->kh, op->kw, op->sh,
                                        op->sw);
    case SN_NET_GLOBAL_AVGPOOL:
        return sn_global_avgpool_forward_f32(y, x, m * op->C, op->H * op->W);
    case SN_NET_BATCHNORM: /* read-only running statistics: nothing is updated */
        return sn_batchnorm_forward_f32(y, scratch, scratch + op->C, (float *)op->mean,
                                        (float *)op->var, x, op->w, op->b, m, op->C,
                                        op->H * op->W, op->eps, 0.0f, 0);
    case SN_NET_ACT:
        switch (op->act) {
        case SN_ACT_RELU: sn_relu_forward_f32(y, x, m * op->in); break;
        case SN_ACT_LEAKY_RELU: sn_leaky_relu_forward_f32(y, x, m * op->in, op->act_param); break;
        case SN_ACT_SIGMOID: sn_sigmoid_forward_f32(y, x, m * op->in); break;
        case SN_ACT_TANH: sn_tanh_forward_f32(y, x, m * op->in); break;
        default: return SN_EINVAL;
        }
        return SN_OK;
    case SN_NET_SOFTMAX:
        sn_softmax_forward_f32(y, x, m * (op->in / op->K), op->K);
        return SN_OK;
    default:
        return SN_EINVAL;
    }
}

int sn_net_forward_f32(const sn_net_op *ops, int n_ops, float *out, const float *X, int64_t M,
                       int softmax, float *workspace, int64_t rows)
{
    /* the workspace's scratch starts after the two halves; its length (a
     * search over every chunk size) is the caller's business, not each call's */
    const int64_t half = rows < 1 ? -1 : half_len(ops, n_ops, rows);
    if (!out || !X || !workspace || M < 0 || half < 0 || sn_net_check(ops, n_ops) != SN_OK)
        return SN_EINVAL;
    const sn_net_op *last = &ops[n_ops - 1];
    if (softmax && last->out < 1) return SN_EINVAL;
    /* the last operation that moves data to a new place: it writes into out,
     * and the element-wise ones after it work there in place (the first
     * operation always moves: X is the caller's and read only) */
    int last_move = 0;
    for (int i = 1; i < n_ops; ++i)
        if (!elementwise(&ops[i])) last_move = i;
    float *scratch = workspace + 2 * half;
    const unsigned fp = sn_fp_enter();
    int status = SN_OK;
    for (int64_t start = 0; start < M && status == SN_OK; start += rows) {
        const int64_t m = M - start < rows ? M - start : rows;
        const float *x = X + start * ops[0].in;
        float *o = out + start * last->out;
        int which = 0; /* the workspace half the last moving operation wrote */
        for (int i = 0; i < n_ops && status == SN_OK; ++i) {
            float *y;
            if (i > 0 && elementwise(&ops[i]))
                y = (float *)x; /* x is out or a workspace half here, never X */
            else if (i == last_move)
                y = o;
            else
                y = workspace + (which ^= 1) * half;
            status = run_op(&ops[i], y, x, m, scratch);
            x = y;
        }
        if (status == SN_OK && softmax) sn_softmax_forward_f32(o, o, m, last->out);
    }
    sn_fp_leave(fp);
    return status;
}
