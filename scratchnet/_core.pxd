# The C API of csrc/scratchnet.h, declared once for Cython. Every kernel is
# nogil: _core.pyx checks arguments with the GIL held, then releases it.
from libc.stdint cimport int64_t, uint64_t

cdef extern from "scratchnet.h" nogil:
    int SN_OK
    int SN_MAX_THREADS
    int SN_EINVAL
    int SN_ENOMEM
    int SN_ENONFINITE
    int SN_ECALLBACK
    int SN_ISA_GENERIC
    int SN_ISA_AVX2
    int SN_ISA_AVX512

    void sn_runtime_init()
    int sn_isa_supported(int isa)
    int sn_isa_best()
    int sn_set_isa(int isa)
    int sn_get_isa()
    const char *sn_isa_name(int isa)
    int sn_gemm_blocking(int isa, int64_t out[10])
    int sn_set_gemm_blocks(int isa, int64_t mc, int64_t nc)
    int sn_set_pair_min_flops(int64_t flops)
    int64_t sn_get_pair_min_flops()
    int sn_set_pair_timing(int on)
    int sn_get_pair_timing()
    const char *sn_caches(int64_t out[5])
    void sn_set_num_threads(int n)
    int sn_forked_after_threads()
    int sn_get_num_threads()
    int sn_max_threads()
    void sn_parallel_backoff(int on)
    int sn_have_openmp()
    double sn_thread_round_trip_ns(int64_t rounds) nogil
    const char *sn_compiler()

    int sn_gemm_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                    float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                    float beta, float *C, int64_t ldc)
    int sn_gemm_naive_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                          float alpha, const float *A, int64_t lda, const float *B,
                          int64_t ldb, float beta, float *C, int64_t ldc)

    void sn_bias_add_f32(float *y, int64_t ldy, const float *b, int64_t M, int64_t N)
    void sn_bias_grad_f32(float *db, const float *dy, int64_t lddy, int64_t M, int64_t N,
                          float beta)

    void sn_relu_forward_f32(float *y, const float *x, int64_t n)
    void sn_relu_backward_f32(float *dx, const float *dy, const float *x, int64_t n)
    void sn_leaky_relu_forward_f32(float *y, const float *x, int64_t n, float slope)
    void sn_leaky_relu_backward_f32(float *dx, const float *dy, const float *x, int64_t n,
                                    float slope)
    void sn_sigmoid_forward_f32(float *y, const float *x, int64_t n)
    void sn_sigmoid_backward_f32(float *dx, const float *dy, const float *y, int64_t n)
    void sn_tanh_forward_f32(float *y, const float *x, int64_t n)
    void sn_tanh_backward_f32(float *dx, const float *dy, const float *y, int64_t n)
    void sn_softmax_forward_f32(float *y, const float *x, int64_t M, int64_t N)
    void sn_softmax_backward_f32(float *dx, const float *dy, const float *y, int64_t M,
                                 int64_t N)
    int sn_dropout_forward_f32(float *y, float *mask, const float *x, int64_t n, float p,
                               uint64_t seed, uint64_t first)
    void sn_mul_f32(float *z, const float *x, const float *y, int64_t n)
    void sn_scale_f32(float *x, int64_t n, float alpha)

    int sn_xent_forward_f32(double *loss, float *probs, const float *z,
                            const int64_t *labels, int64_t M, int64_t N)
    int sn_xent_backward_f32(float *dz, const float *probs, const int64_t *labels,
                             int64_t M, int64_t N, float scale)
    int sn_xent_soft_forward_f32(double *loss, float *probs, const float *z, const float *T,
                                 int64_t M, int64_t N)
    void sn_xent_soft_backward_f32(float *dz, const float *probs, const float *T, int64_t M,
                                   int64_t N, float scale)
    int sn_mse_forward_f32(double *loss, const float *p, const float *t, int64_t n)
    void sn_mse_backward_f32(float *dp, const float *p, const float *t, int64_t n,
                             float scale)
    int sn_bce_logits_forward_f32(double *loss, const float *z, const float *t, int64_t n)
    void sn_bce_logits_backward_f32(float *dz, const float *z, const float *t, int64_t n,
                                    float scale)

    double sn_decayed_lr(double lr, double decay, int64_t steps_taken)
    void sn_sgd_step_f32(float *p, float *buf, const float *g, int64_t n, float lr,
                         float momentum, float dampening, int nesterov, float weight_decay,
                         int first_step)
    void sn_adagrad_step_f32(float *p, float *sum, const float *g, int64_t n, float clr,
                             float eps, float weight_decay)
    void sn_rmsprop_step_f32(float *p, float *v, float *avg, float *buf, const float *g,
                             int64_t n, float lr, float alpha, float eps, float weight_decay,
                             float momentum, int centered)
    void sn_adam_step_f32(float *p, float *m, float *v, const float *g, int64_t n, float lr,
                          float beta1, float beta2, float eps, float weight_decay,
                          int64_t step, int decoupled)

    int sn_all_finite_f32(const float *x, int64_t n)

    int SN_ACT_NONE
    int SN_ACT_RELU
    int SN_ACT_LEAKY_RELU
    int SN_ACT_SIGMOID
    int SN_ACT_TANH
    int SN_OPT_SGD
    int SN_OPT_ADAGRAD
    int SN_OPT_RMSPROP
    int SN_OPT_ADAM
    int SN_OPT_ADAMW

    int sn_dense_forward_f32(float *y, const float *x, const float *W, const float *b,
                             int64_t M, int64_t K, int64_t N, int act, float act_param)
    int sn_dense_backward_f32(float *dW, float *db, float *dz_below, const float *dz,
                              const float *x_in, const float *W, const float *x,
                              const float *mask, int64_t M, int64_t K, int64_t N,
                              int act_below, float act_param, float beta)
    int sn_xent_train_f32(double *loss, int64_t *correct, float *dz, const float *z,
                          const int64_t *labels, int64_t M, int64_t N, float scale)

    ctypedef struct sn_optim_cfg:
        int kind
        double lr, decay
        float weight_decay, momentum, dampening
        int nesterov
        float alpha
        int centered
        float beta1, beta2, eps
        double lr_decay
        int64_t iterations, step

    ctypedef struct sn_param:
        float *p
        const float *g
        float *state[3]
        int64_t n


    ctypedef struct sn_mlp_layer:
        int64_t in_ "in"
        int64_t out
        float *W
        float *b
        float *dW
        float *db
        int act
        float act_param
        float dropout
        uint64_t dropout_seed
        float *y
        float *y_drop
        float *mask
        float *dz

    ctypedef struct sn_team_choice:
        int64_t count
        int64_t keep
        int alone

    ctypedef struct sn_mlp_shard:
        int64_t batches
        const int64_t *rows
        const int64_t *first
        const int64_t *global_ "global"
        int (*reduce)(void *ctx, int64_t batch, int ok) noexcept nogil
        void *ctx

    ctypedef struct sn_mlp:
        int n_layers
        sn_mlp_layer *layers
        int64_t max_batch
        float *xb
        int64_t *yb
        sn_param *params
        sn_team_choice *team
        const sn_mlp_shard *shard
        float *last_shares

    int64_t sn_mlp_last_shares_size(const sn_mlp *net)
    int64_t sn_mlp_batch_width(int64_t inputs)

    int sn_mlp_train_f32(const sn_mlp *net, sn_optim_cfg *opt, const float *X,
                         const int64_t *labels, int64_t n_classes, const int64_t *order,
                         int64_t n, int64_t batch_size, double *loss_sum, int64_t *correct)
    int64_t sn_mlp_forward_workspace(const sn_mlp *net, int64_t rows)
    int sn_mlp_forward_f32(const sn_mlp *net, float *out, const float *X, int64_t M,
                           int softmax, float *workspace, int64_t rows)
