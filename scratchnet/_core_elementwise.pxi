# Activations and other element-wise kernels. Arrays of any shape are seen
# as flat buffers; out may be the input itself (in place).

ctypedef void (*unary_fn)(float *y, const float *x, int64_t n) noexcept nogil
ctypedef void (*binary_fn)(float *z, const float *x, const float *y, int64_t n) noexcept nogil


cdef object _unary(unary_fn fn, str op, x, out):
    cdef const float[::1] xv = _flat(x, op, "x")
    cdef float[::1] ov = _flat(out, op, "out", True)
    _same_size(op, xv.shape[0], ov.shape[0], "out")
    if xv.shape[0] > 0:
        with nogil:
            fn(&ov[0], &xv[0], xv.shape[0])
    return out


cdef object _binary(binary_fn fn, str op, a, b, out):
    cdef const float[::1] av = _flat(a, op, "dy")
    cdef const float[::1] bv = _flat(b, op, "cache")
    cdef float[::1] ov = _flat(out, op, "out", True)
    _same_size(op, av.shape[0], bv.shape[0], "cache")
    _same_size(op, av.shape[0], ov.shape[0], "out")
    if av.shape[0] > 0:
        with nogil:
            fn(&ov[0], &av[0], &bv[0], av.shape[0])
    return out


def relu_forward(x, out):
    """out = max(0, x)"""
    return _unary(sn_relu_forward_f32, "relu_forward", x, out)


def relu_backward(dy, x, out):
    """out = dy * (x > 0)"""
    return _binary(sn_relu_backward_f32, "relu_backward", dy, x, out)


def leaky_relu_forward(x, out, float slope):
    """out = x if x > 0 else slope * x"""
    cdef const float[::1] xv = _flat(x, "leaky_relu_forward", "x")
    cdef float[::1] ov = _flat(out, "leaky_relu_forward", "out", True)
    _same_size("leaky_relu_forward", xv.shape[0], ov.shape[0], "out")
    if xv.shape[0] > 0:
        with nogil:
            sn_leaky_relu_forward_f32(&ov[0], &xv[0], xv.shape[0], slope)
    return out


def leaky_relu_backward(dy, x, out, float slope):
    """out = dy if x > 0 else slope * dy"""
    cdef const float[::1] dyv = _flat(dy, "leaky_relu_backward", "dy")
    cdef const float[::1] xv = _flat(x, "leaky_relu_backward", "x")
    cdef float[::1] ov = _flat(out, "leaky_relu_backward", "out", True)
    _same_size("leaky_relu_backward", dyv.shape[0], xv.shape[0], "x")
    _same_size("leaky_relu_backward", dyv.shape[0], ov.shape[0], "out")
    if xv.shape[0] > 0:
        with nogil:
            sn_leaky_relu_backward_f32(&ov[0], &dyv[0], &xv[0], xv.shape[0], slope)
    return out


def sigmoid_forward(x, out):
    """out = 1 / (1 + exp(-x))"""
    return _unary(sn_sigmoid_forward_f32, "sigmoid_forward", x, out)


def sigmoid_backward(dy, y, out):
    """out = dy * y * (1 - y), y the forward output"""
    return _binary(sn_sigmoid_backward_f32, "sigmoid_backward", dy, y, out)


def tanh_forward(x, out):
    """out = tanh(x)"""
    return _unary(sn_tanh_forward_f32, "tanh_forward", x, out)


def tanh_backward(dy, y, out):
    """out = dy * (1 - y^2), y the forward output"""
    return _binary(sn_tanh_backward_f32, "tanh_backward", dy, y, out)


def mul(x, y, out):
    """out = x * y element-wise"""
    return _binary(sn_mul_f32, "mul", x, y, out)


cdef tuple _rows_cols(a, str op):
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"{op}: expected a 2-D array with at least one column, got shape {a.shape}")
    return a.shape[0], a.shape[1]


def softmax_forward(x, out):
    """Row-wise softmax of a 2-D x (the row maximum subtracted first)."""
    cdef const float[::1] xv = _flat(x, "softmax_forward", "x")
    cdef float[::1] ov = _flat(out, "softmax_forward", "out", True)
    cdef int64_t M, N
    M, N = _rows_cols(x, "softmax_forward")
    if out.shape != x.shape:
        raise ValueError(f"softmax_forward: out has shape {out.shape}, expected {x.shape}")
    if M > 0:
        with nogil:
            sn_softmax_forward_f32(&ov[0], &xv[0], M, N)
    return out


def softmax_backward(dy, y, out):
    """out_ij = y_ij * (dy_ij - sum_k dy_ik y_ik)"""
    cdef const float[::1] dyv = _flat(dy, "softmax_backward", "dy")
    cdef const float[::1] yv = _flat(y, "softmax_backward", "y")
    cdef float[::1] ov = _flat(out, "softmax_backward", "out", True)
    cdef int64_t M, N
    M, N = _rows_cols(y, "softmax_backward")
    if dy.shape != y.shape or out.shape != y.shape:
        raise ValueError(f"softmax_backward: shapes {dy.shape}, {y.shape}, {out.shape} differ")
    if M > 0:
        with nogil:
            sn_softmax_backward_f32(&ov[0], &dyv[0], &yv[0], M, N)
    return out


def dropout_forward(x, out, mask, float p, uint64_t seed, uint64_t first=0):
    """Inverted dropout: mask = (u >= p) / (1 - p), out = x * mask; element i
    takes draw first + i of seed's stream."""
    if not (0.0 <= p < 1.0):
        raise ValueError(f"dropout_forward: p must be in [0, 1), got {p}")
    cdef const float[::1] xv = _flat(x, "dropout_forward", "x")
    cdef float[::1] ov = _flat(out, "dropout_forward", "out", True)
    cdef float[::1] mv = _flat(mask, "dropout_forward", "mask", True)
    _same_size("dropout_forward", xv.shape[0], ov.shape[0], "out")
    _same_size("dropout_forward", xv.shape[0], mv.shape[0], "mask")
    cdef int status = SN_OK
    if xv.shape[0] > 0:
        with nogil:
            status = sn_dropout_forward_f32(&ov[0], &mv[0], &xv[0], xv.shape[0], p, seed,
                                            first)
    _check(status, "dropout_forward")
    return out


def all_finite(x):
    """True if no element of the float32 array x is NaN or infinite."""
    cdef const float[::1] xv = _flat(x, "all_finite", "x")
    if xv.shape[0] == 0:
        return True
    cdef int ok
    with nogil:
        ok = sn_all_finite_f32(&xv[0], xv.shape[0])
    return bool(ok)


def scale(x, float alpha):
    """x *= alpha, in place (e.g. a sum of gradients made their mean)."""
    cdef float[::1] xv = _flat(x, "scale", "x", True)
    if xv.shape[0] > 0:
        with nogil:
            sn_scale_f32(&xv[0], xv.shape[0], alpha)
    return x
