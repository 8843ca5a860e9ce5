# Losses: forward returns the mean loss as a Python float (and caches what
# backward needs in caller-owned arrays); backward writes the gradient.

cdef int _check_logits(str op, z, probs) except -1:
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"{op}: logits must be a non-empty 2-D array (batch, classes), "
                         f"got shape {z.shape}")
    if probs.shape != z.shape:
        raise ValueError(f"{op}: probs has shape {probs.shape}, expected {z.shape}")
    return 0


cdef int _check_labels(str op, labels, int64_t M) except -1:
    _array(labels, op, "labels", np.int64, False)
    if labels.shape != (M,):
        raise ValueError(f"{op}: labels must have shape ({M},), got {labels.shape}")
    return 0


def xent_forward(z, labels, probs):
    """Mean softmax cross-entropy of logits z (M, C) against int64 labels;
    writes softmax(z) to probs."""
    cdef const float[::1] zv = _flat(z, "xent_forward", "logits")
    cdef float[::1] pv = _flat(probs, "xent_forward", "probs", True)
    _check_logits("xent_forward", z, probs)
    _check_labels("xent_forward", labels, z.shape[0])
    cdef const int64_t[::1] lv = labels
    cdef double loss = 0.0
    cdef int64_t M = z.shape[0], N = z.shape[1]
    cdef int status
    with nogil:
        status = sn_xent_forward_f32(&loss, &pv[0], &zv[0], &lv[0], M, N)
    if status == SN_EINVAL:
        raise ValueError(f"xent_forward: labels must be in [0, {N}), got values from "
                         f"{labels.min()} to {labels.max()}")
    _check(status, "cross-entropy loss")
    return loss


def xent_backward(probs, labels, dz, float scale):
    """dz = (probs - onehot(labels)) * scale"""
    cdef const float[::1] pv = _flat(probs, "xent_backward", "probs")
    cdef float[::1] dv = _flat(dz, "xent_backward", "dz", True)
    _check_logits("xent_backward", dz, probs)
    _check_labels("xent_backward", labels, probs.shape[0])
    cdef const int64_t[::1] lv = labels
    cdef int64_t M = probs.shape[0], N = probs.shape[1]
    cdef int status
    with nogil:
        status = sn_xent_backward_f32(&dv[0], &pv[0], &lv[0], M, N, scale)
    _check(status, "xent_backward")
    return dz


def xent_soft_forward(z, targets, probs):
    """Mean cross-entropy of logits z against target distributions (M, C)."""
    cdef const float[::1] zv = _flat(z, "xent_soft_forward", "logits")
    cdef const float[::1] tv = _flat(targets, "xent_soft_forward", "targets")
    cdef float[::1] pv = _flat(probs, "xent_soft_forward", "probs", True)
    _check_logits("xent_soft_forward", z, probs)
    if targets.shape != z.shape:
        raise ValueError(f"xent_soft_forward: targets have shape {targets.shape}, "
                         f"expected {z.shape}")
    cdef double loss = 0.0
    cdef int64_t M = z.shape[0], N = z.shape[1]
    cdef int status
    with nogil:
        status = sn_xent_soft_forward_f32(&loss, &pv[0], &zv[0], &tv[0], M, N)
    _check(status, "cross-entropy loss")
    return loss


def xent_soft_backward(probs, targets, dz, float scale):
    """dz = (S * probs - targets) * scale, S each row's sum of targets (the
    gradient of xent_soft_forward's loss; probs - targets when rows sum to 1)"""
    cdef const float[::1] pv = _flat(probs, "xent_soft_backward", "probs")
    cdef const float[::1] tv = _flat(targets, "xent_soft_backward", "targets")
    cdef float[::1] dv = _flat(dz, "xent_soft_backward", "dz", True)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"xent_soft_backward: probs must be a non-empty 2-D array (batch, "
                         f"classes), got shape {probs.shape}")
    if dz.shape != probs.shape:
        raise ValueError(f"xent_soft_backward: dz has shape {dz.shape}, expected {probs.shape}")
    if targets.shape != probs.shape:
        raise ValueError(f"xent_soft_backward: targets have shape {targets.shape}, "
                         f"expected {probs.shape}")
    cdef int64_t M = probs.shape[0], N = probs.shape[1]
    with nogil:
        sn_xent_soft_backward_f32(&dv[0], &pv[0], &tv[0], M, N, scale)
    return dz


ctypedef void (*scaled_fn)(float *out, const float *a, const float *b, int64_t n,
                           float scale) noexcept nogil
ctypedef int (*mean_loss_fn)(double *loss, const float *a, const float *b,
                             int64_t n) noexcept nogil


cdef object _scaled_diff(scaled_fn fn, str op, a, b, out, float scale):
    cdef const float[::1] av = _flat(a, op, "predictions")
    cdef const float[::1] bv = _flat(b, op, "targets")
    cdef float[::1] ov = _flat(out, op, "out", True)
    _same_size(op, av.shape[0], bv.shape[0], "targets")
    _same_size(op, av.shape[0], ov.shape[0], "out")
    if av.shape[0] > 0:
        with nogil:
            fn(&ov[0], &av[0], &bv[0], av.shape[0], scale)
    return out


cdef double _mean_loss(mean_loss_fn fn, str op, a, b) except? -1.0:
    cdef const float[::1] av = _flat(a, op, "predictions")
    cdef const float[::1] bv = _flat(b, op, "targets")
    _same_size(op, av.shape[0], bv.shape[0], "targets")
    if av.shape[0] == 0:
        raise ValueError(f"{op}: empty input")
    cdef double loss = 0.0
    cdef int status
    with nogil:
        status = fn(&loss, &av[0], &bv[0], av.shape[0])
    _check(status, op)
    return loss


def mse_forward(p, t):
    """mean (p - t)^2"""
    return _mean_loss(sn_mse_forward_f32, "mse loss", p, t)


def mse_backward(p, t, dp, float scale):
    """dp = (p - t) * scale"""
    return _scaled_diff(sn_mse_backward_f32, "mse_backward", p, t, dp, scale)


def bce_logits_forward(z, t):
    """mean of max(z, 0) - z t + log(1 + exp(-|z|))"""
    return _mean_loss(sn_bce_logits_forward_f32, "binary cross-entropy loss", z, t)


def bce_logits_backward(z, t, dz, float scale):
    """dz = (sigmoid(z) - t) * scale"""
    return _scaled_diff(sn_bce_logits_backward_f32, "bce_logits_backward", z, t, dz, scale)
