/* The C trainer when memory runs out in the middle of a run: a batch whose
 * error is SN_ENOMEM leaves the parameters and the optimizer's counters as
 * the batches before it made them (scratchnet.h), although the update of
 * the batch before is made in that batch's first region (sn_mlp_step.c).
 *
 * Linked with -Wl,--wrap=malloc -Wl,--wrap=sn_optim_step_range (so not part
 * of sn_test.c; tools/check_c_kernels.sh builds it): once the update of the
 * batch before has begun, every malloc fails, and the first layer's product
 * cannot get its packing buffers (the first batch, of 5 rows, needed none:
 * a GEMM of a few rows does not pack). Two runs of a two-layer network from
 * the same weights, as a data-parallel share: batch 0 alone, and batch 0
 * then batch 1 with the failure; after both, every parameter must hold the
 * same bits and the counters 1 step. On one thread and on two. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scratchnet.h"
#include "sn_internal.h"

void *__real_malloc(size_t size);
int __real_sn_optim_step_range(const sn_optim_cfg *cfg, const sn_param *q, int64_t lo,
                               int64_t hi);

static int failing, fail_after_update;

void *__wrap_malloc(size_t size) { return failing ? NULL : __real_malloc(size); }

int __wrap_sn_optim_step_range(const sn_optim_cfg *cfg, const sn_param *q, int64_t lo,
                               int64_t hi)
{
    if (fail_after_update) failing = 1;
    return __real_sn_optim_step_range(cfg, q, lo, hi);
}

enum { IN = 1024, HIDDEN = 512, OUT = 4, MAX_BATCH = 64, ROWS = 69 };

static int reduce_nothing(void *ctx, int64_t batch, int ok)
{
    (void)ctx, (void)batch, (void)ok;
    return SN_OK; /* one process: its gradients are the sum */
}

static float *zeros(int64_t n)
{
    const size_t bytes = (size_t)(n * 4 + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (!p) abort();
    memset(p, 0, bytes);
    return p;
}

typedef struct {
    sn_mlp_layer layers[2];
    sn_param params[4];
    sn_mlp net;
    sn_optim_cfg opt;
    sn_mlp_shard shard;
    int64_t rows[2], first[2], global[2];
} trainer;

/* the network, SGD at lr 0.1, as a share of `batches` batches of 5 then 64 rows */
static void build(trainer *t, int batches)
{
    memset(t, 0, sizeof *t);
    const int64_t sizes[3] = {IN, HIDDEN, OUT};
    for (int l = 0; l < 2; ++l) {
        sn_mlp_layer *L = &t->layers[l];
        L->in = sizes[l];
        L->out = sizes[l + 1];
        L->W = zeros(L->in * L->out);
        L->b = zeros(L->out);
        L->dW = zeros(L->in * L->out);
        L->db = zeros(L->out);
        for (int64_t i = 0; i < L->in * L->out; ++i)
            L->W[i] = (float)(i * 7919 % 101 - 50) / 200.0f;
        L->act = l == 0 ? SN_ACT_RELU : SN_ACT_NONE;
        L->y = zeros(MAX_BATCH * L->out);
        L->dz = zeros(MAX_BATCH * L->out);
        t->params[2 * l] = (sn_param){L->W, L->dW, {NULL, NULL, NULL}, L->in * L->out};
        t->params[2 * l + 1] = (sn_param){L->b, L->db, {NULL, NULL, NULL}, L->out};
    }
    t->net.n_layers = 2;
    t->net.layers = t->layers;
    t->net.max_batch = MAX_BATCH;
    t->net.params = t->params;
    t->net.xb = zeros(MAX_BATCH * sn_mlp_batch_width(IN));
    t->net.yb = calloc(MAX_BATCH, sizeof(int64_t));
    t->net.last_shares = zeros(sn_mlp_last_shares_size(&t->net));
    t->opt.kind = SN_OPT_SGD;
    t->opt.lr = 0.1;
    t->rows[0] = t->global[0] = 5;
    t->rows[1] = t->global[1] = 64;
    t->shard = (sn_mlp_shard){batches, t->rows, t->first, t->global, reduce_nothing, NULL};
    t->net.shard = &t->shard;
}

static float X[ROWS * IN];
static int64_t labels[ROWS], order[ROWS];

/* 0 if the run with the failure ended as the run of batch 0 alone */
static int check_threads(int threads)
{
    sn_set_num_threads(threads);
    double loss = 0.0;
    int64_t correct = 0;
    trainer before, failed;
    build(&before, 1);
    const int status_before =
        sn_mlp_train_f32(&before.net, &before.opt, X, labels, OUT, order, 5, MAX_BATCH, &loss,
                         &correct);
    build(&failed, 2);
    fail_after_update = 1;
    const int status = sn_mlp_train_f32(&failed.net, &failed.opt, X, labels, OUT, order, ROWS,
                                        MAX_BATCH, &loss, &correct);
    failing = fail_after_update = 0;
    int64_t differ = 0;
    for (int k = 0; k < 4; ++k)
        for (int64_t i = 0; i < before.params[k].n; ++i)
            differ += memcmp(&before.params[k].p[i], &failed.params[k].p[i], sizeof(float)) != 0;
    const int ok = status_before == SN_OK && status == SN_ENOMEM && failed.opt.iterations == 1 &&
                   failed.opt.step == 1 && differ == 0;
    printf("%s: %d thread(s): status %d (SN_ENOMEM %d), %lld steps counted, %lld parameters "
           "differ from batch 0's\n",
           ok ? "ok" : "FAILED", threads, status, SN_ENOMEM, (long long)failed.opt.iterations,
           (long long)differ);
    return !ok;
}

int main(void)
{
    for (int i = 0; i < ROWS * IN; ++i) X[i] = (float)(i * 31 % 17 - 8) / 8.0f;
    for (int i = 0; i < ROWS; ++i) {
        labels[i] = i % OUT;
        order[i] = i;
    }
    sn_parallel_backoff(0); /* the threads asked for, in every region */
    const int failures = check_threads(1) + check_threads(2);
    return failures ? 1 : 0;
}
