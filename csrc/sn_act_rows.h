/* Internal: the row forms of the activations (sn_act.c includes this file
 * twice: baseline and AVX2). c = act(c + bias) over rows x cols of C, and
 * c = c * mask * act'(y); the formulas are sn_formulas.h's.
 *
 * Before including: SN_ROWS(name) (the function's name), SN_ROWS_TARGET. */

SN_ROWS_TARGET
static void SN_ROWS(act_rows)(float *SN_RESTRICT c, int64_t ldc, int64_t rows, int64_t cols,
                              const float *SN_RESTRICT bias, int act, float act_param)
{
    for (int64_t i = 0; i < rows; ++i) {
        float *ci = c + i * ldc;
        if (bias)
            for (int64_t j = 0; j < cols; ++j) ci[j] += bias[j];
        switch (act) {
        case SN_ACT_RELU:
            for (int64_t j = 0; j < cols; ++j) ci[j] = sn_relu(ci[j]);
            break;
        case SN_ACT_LEAKY_RELU:
            for (int64_t j = 0; j < cols; ++j) ci[j] = sn_leaky_relu(ci[j], act_param);
            break;
        case SN_ACT_SIGMOID:
            for (int64_t j = 0; j < cols; ++j) ci[j] = sn_sigmoid(ci[j]);
            break;
        case SN_ACT_TANH:
            for (int64_t j = 0; j < cols; ++j) ci[j] = tanhf(ci[j]);
            break;
        default:
            break;
        }
    }
}

SN_ROWS_TARGET
static void SN_ROWS(dact_rows)(float *SN_RESTRICT c, int64_t ldc, int64_t rows, int64_t cols,
                               const float *SN_RESTRICT y, const float *SN_RESTRICT mask,
                               int64_t ldy, int act, float act_param)
{
    for (int64_t i = 0; i < rows; ++i) {
        float *ci = c + i * ldc;
        const float *yi = y + i * ldy;
        if (mask) {
            const float *mi = mask + i * ldy;
            for (int64_t j = 0; j < cols; ++j) ci[j] *= mi[j];
        }
        switch (act) {
        case SN_ACT_RELU:
            for (int64_t j = 0; j < cols; ++j) ci[j] = sn_relu_grad(ci[j], yi[j]);
            break;
        case SN_ACT_LEAKY_RELU:
            for (int64_t j = 0; j < cols; ++j)
                ci[j] = sn_leaky_relu_grad(ci[j], yi[j], act_param);
            break;
        case SN_ACT_SIGMOID:
            for (int64_t j = 0; j < cols; ++j) ci[j] = sn_sigmoid_grad(ci[j], yi[j]);
            break;
        case SN_ACT_TANH:
            for (int64_t j = 0; j < cols; ++j) ci[j] = sn_tanh_grad(ci[j], yi[j]);
            break;
        default:
            break;
        }
    }
}

#undef SN_ROWS
#undef SN_ROWS_TARGET
