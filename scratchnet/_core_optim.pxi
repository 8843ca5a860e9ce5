# Optimizer updates: p, the state buffers and g are flat float32 arrays of
# one size; p and the state are updated in place.

cdef float *_state_ptr(buf, str op, str name, Py_ssize_t n) except? NULL:
    """Pointer to an optional state buffer (None -> NULL)."""
    if buf is None:
        return NULL
    cdef float[::1] v = _flat(buf, op, name, True)
    _same_size(op, n, v.shape[0], name)
    return &v[0] if n > 0 else NULL


def decayed_lr(double lr, double decay, int64_t steps_taken):
    """lr / (1 + decay * steps_taken), in double: the learning rate after
    steps_taken steps of decay (optimizers' decay=, AdaGrad's lr_decay). The
    C trainer uses the same function, so both paths get the same bits."""
    if steps_taken < 0:
        raise ValueError(f"decayed_lr: steps_taken must be >= 0, got {steps_taken}")
    return sn_decayed_lr(lr, decay, steps_taken)


def sgd_step(p, g, buf, float lr, float momentum=0.0, float dampening=0.0,
             bint nesterov=False, float weight_decay=0.0, bint first_step=False):
    cdef float[::1] pv = _flat(p, "sgd_step", "param", True)
    cdef const float[::1] gv = _flat(g, "sgd_step", "grad")
    cdef int64_t n = pv.shape[0]
    _same_size("sgd_step", n, gv.shape[0], "grad")
    if momentum != 0.0 and buf is None:
        raise ValueError("sgd_step: momentum needs a buffer")
    cdef float *pb = _state_ptr(buf, "sgd_step", "momentum_buffer", n)
    if n == 0:
        return
    with nogil:
        sn_sgd_step_f32(&pv[0], pb, &gv[0], n, lr, momentum, dampening, nesterov,
                        weight_decay, first_step)


def adagrad_step(p, g, state_sum, float clr, float eps=1e-10, float weight_decay=0.0):
    cdef float[::1] pv = _flat(p, "adagrad_step", "param", True)
    cdef const float[::1] gv = _flat(g, "adagrad_step", "grad")
    cdef int64_t n = pv.shape[0]
    _same_size("adagrad_step", n, gv.shape[0], "grad")
    cdef float *ps = _state_ptr(state_sum, "adagrad_step", "sum", n)
    if n == 0:
        return
    if ps == NULL:
        raise ValueError("adagrad_step: the sum buffer is required")
    with nogil:
        sn_adagrad_step_f32(&pv[0], ps, &gv[0], n, clr, eps, weight_decay)


def rmsprop_step(p, g, square_avg, grad_avg, buf, float lr, float alpha=0.99, float eps=1e-8,
                 float weight_decay=0.0, float momentum=0.0, bint centered=False):
    cdef float[::1] pv = _flat(p, "rmsprop_step", "param", True)
    cdef const float[::1] gv = _flat(g, "rmsprop_step", "grad")
    cdef int64_t n = pv.shape[0]
    _same_size("rmsprop_step", n, gv.shape[0], "grad")
    cdef float *pv2 = _state_ptr(square_avg, "rmsprop_step", "square_avg", n)
    cdef float *pavg = _state_ptr(grad_avg, "rmsprop_step", "grad_avg", n)
    cdef float *pbuf = _state_ptr(buf, "rmsprop_step", "momentum_buffer", n)
    if n == 0:
        return
    if pv2 == NULL or (centered and pavg == NULL) or (momentum > 0 and pbuf == NULL):
        raise ValueError("rmsprop_step: a state buffer required by the options is missing")
    with nogil:
        sn_rmsprop_step_f32(&pv[0], pv2, pavg, pbuf, &gv[0], n, lr, alpha, eps, weight_decay,
                            momentum, centered)


def adam_step(p, g, exp_avg, exp_avg_sq, float lr, int64_t step, float beta1=0.9,
              float beta2=0.999, float eps=1e-8, float weight_decay=0.0,
              bint decoupled=False):
    if step < 1:
        raise ValueError(f"adam_step: step counts from 1, got {step}")
    cdef float[::1] pv = _flat(p, "adam_step", "param", True)
    cdef const float[::1] gv = _flat(g, "adam_step", "grad")
    cdef int64_t n = pv.shape[0]
    _same_size("adam_step", n, gv.shape[0], "grad")
    cdef float *pm = _state_ptr(exp_avg, "adam_step", "exp_avg", n)
    cdef float *pv2 = _state_ptr(exp_avg_sq, "adam_step", "exp_avg_sq", n)
    if n == 0:
        return
    if pm == NULL or pv2 == NULL:
        raise ValueError("adam_step: exp_avg and exp_avg_sq are required")
    with nogil:
        sn_adam_step_f32(&pv[0], pm, pv2, &gv[0], n, lr, beta1, beta2, eps, weight_decay,
                         step, decoupled)
