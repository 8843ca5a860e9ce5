# The C API of csrc/scratchnet.h, declared once for Cython. Every kernel is
# nogil: _core.pyx checks arguments with the GIL held, then releases it.
from libc.stdint cimport int64_t, uint64_t

cdef extern from "scratchnet.h" nogil:
    int SN_OK
    int SN_EINVAL
    int SN_ENOMEM
    int SN_ENONFINITE
    int SN_ISA_GENERIC
    int SN_ISA_AVX2
    int SN_ISA_AVX512

    int sn_isa_supported(int isa)
    int sn_isa_best()
    int sn_set_isa(int isa)
    int sn_get_isa()
    const char *sn_isa_name(int isa)
    void sn_set_num_threads(int n)
    int sn_get_num_threads()
    int sn_max_threads()
    int sn_have_openmp()
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
                               uint64_t seed)
    void sn_mul_f32(float *z, const float *x, const float *y, int64_t n)

    int sn_xent_forward_f32(double *loss, float *probs, const float *z,
                            const int64_t *labels, int64_t M, int64_t N)
    int sn_xent_backward_f32(float *dz, const float *probs, const int64_t *labels,
                             int64_t M, int64_t N, float scale)
    int sn_xent_soft_forward_f32(double *loss, float *probs, const float *z, const float *T,
                                 int64_t M, int64_t N)
    void sn_xent_soft_backward_f32(float *dz, const float *probs, const float *T, int64_t n,
                                   float scale)
    int sn_mse_forward_f32(double *loss, const float *p, const float *t, int64_t n)
    void sn_mse_backward_f32(float *dp, const float *p, const float *t, int64_t n,
                             float scale)
    int sn_bce_logits_forward_f32(double *loss, const float *z, const float *t, int64_t n)
    void sn_bce_logits_backward_f32(float *dz, const float *z, const float *t, int64_t n,
                                    float scale)

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
