# 2-D convolution (csrc/sn_conv.c): NCHW float32, PyTorch's Conv2d.
# Declared here rather than in _core.pxd, next to the only code that uses it.

cdef extern from "scratchnet.h" nogil:
    ctypedef struct sn_conv2d_cfg:
        int64_t N, C, H, W, K, kh, kw, sh, sw, ph, pw, OH, OW, chunk

    int sn_conv2d_init(sn_conv2d_cfg *cfg, int64_t N, int64_t C, int64_t H, int64_t W,
                       int64_t K, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                       int64_t pw)
    int64_t sn_conv2d_workspace_len(const sn_conv2d_cfg *cfg)
    int sn_conv2d_forward_f32(const sn_conv2d_cfg *cfg, float *y, const float *x,
                              const float *w, const float *b, float *workspace)
    int sn_conv2d_backward_f32(const sn_conv2d_cfg *cfg, float *dw, float *db, float *dx,
                               const float *dy, const float *x, const float *w, float beta,
                               float *workspace)


import numbers


cdef object _pair(v, str op, str name):
    """(a, b) from an int or a pair of ints."""
    t = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(t) != 2 or any(isinstance(e, bool) or not isinstance(e, numbers.Integral)
                          for e in t):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    return (int(t[0]), int(t[1]))


cdef sn_conv2d_cfg _conv_cfg(str op, x_shape, w_shape, stride, padding, int64_t chunk) except *:
    """The C configuration of a convolution of x (N, C, H, W) by w (K, C, kh, kw),
    checked: ValueError naming the shapes when it cannot be made."""
    cdef sn_conv2d_cfg cfg
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"{op}: x must be (N, C, H, W) and w (K, C, kh, kw), got x "
                         f"{tuple(x_shape)} and w {tuple(w_shape)}")
    sh, sw = _pair(stride, op, "stride")
    ph, pw = _pair(padding, op, "padding")
    if x_shape[1] != w_shape[1]:
        raise ValueError(f"{op}: x {tuple(x_shape)} has {x_shape[1]} channels, w "
                         f"{tuple(w_shape)} expects {w_shape[1]}")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{op}: stride must be >= 1 and padding >= 0, got stride "
                         f"{(sh, sw)}, padding {(ph, pw)}")
    if sn_conv2d_init(&cfg, x_shape[0], x_shape[1], x_shape[2], x_shape[3], w_shape[0],
                      w_shape[2], w_shape[3], sh, sw, ph, pw) != SN_OK:
        raise ValueError(f"{op}: no convolution of x {tuple(x_shape)} by w {tuple(w_shape)} "
                         f"with stride {(sh, sw)}, padding {(ph, pw)} (every size must be "
                         f">= 1 and the padded image at least the kernel's size)")
    if chunk < 0 or chunk > max(cfg.N, 1):
        raise ValueError(f"{op}: chunk must be in 0 .. {max(cfg.N, 1)} (0: the default), "
                         f"got {chunk}")
    if chunk > 0:
        cfg.chunk = chunk
    return cfg


def conv2d_output_shape(x_shape, w_shape, stride=1, padding=0):
    """(N, K, OH, OW) of the convolution of x (N, C, H, W) by w (K, C, kh, kw)."""
    cdef sn_conv2d_cfg cfg = _conv_cfg("conv2d_output_shape", x_shape, w_shape, stride,
                                       padding, 0)
    return (cfg.N, cfg.K, cfg.OH, cfg.OW)


def conv2d_workspace_len(x_shape, w_shape, stride=1, padding=0, int64_t chunk=0):
    """Floats of workspace conv2d_forward and conv2d_backward need."""
    cdef sn_conv2d_cfg cfg = _conv_cfg("conv2d_workspace_len", x_shape, w_shape, stride,
                                       padding, chunk)
    return sn_conv2d_workspace_len(&cfg)


cdef float *_conv_workspace(str op, workspace, const sn_conv2d_cfg *cfg) except NULL:
    ws = _flat(workspace, op, "workspace", True)
    cdef int64_t need = sn_conv2d_workspace_len(cfg)
    if ws.shape[0] < need:
        raise ValueError(f"{op}: workspace has {ws.shape[0]} floats, needs {need} "
                         f"(conv2d_workspace_len)")
    return <float *>cnp.PyArray_DATA(ws)


cdef int _conv_shape(str op, a, str name, tuple expected) except -1:
    if a.shape != expected:
        raise ValueError(f"{op}: {name} has shape {a.shape}, expected {expected}")
    return 0


def conv2d_forward(x, w, b, out, workspace, stride=1, padding=0, int64_t chunk=0):
    """out = conv2d(x, w) + b (PyTorch's Conv2d, zero padding); returns out.
    x (N, C, H, W), w (K, C, kh, kw), b (K,) or None, out (N, K, OH, OW),
    workspace at least conv2d_workspace_len floats; chunk: images per GEMM
    (0: the default)."""
    op = "conv2d_forward"
    _array(x, op, "x", np.float32, False)
    _array(w, op, "w", np.float32, False)
    if b is not None:
        _array(b, op, "b", np.float32, False)
    _array(out, op, "out", np.float32, True)
    cdef sn_conv2d_cfg cfg = _conv_cfg(op, x.shape, w.shape, stride, padding, chunk)
    if b is not None:
        _conv_shape(op, b, "b", (cfg.K,))
    _conv_shape(op, out, "out", (cfg.N, cfg.K, cfg.OH, cfg.OW))
    _no_overlap(op, out, (x, w, b, workspace))
    cdef float *ws = _conv_workspace(op, workspace, &cfg)
    _no_overlap(op, workspace, (x, w, b))
    cdef float *py = <float *>cnp.PyArray_DATA(out)
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef const float *pw = <const float *>cnp.PyArray_DATA(w)
    cdef const float *pb = <const float *>cnp.PyArray_DATA(b) if b is not None else NULL
    cdef int status
    with nogil:
        status = sn_conv2d_forward_f32(&cfg, py, px, pw, pb, ws)
    _check(status, op)
    return out


def conv2d_backward(dy, x, w, dw, db, dx, workspace, stride=1, padding=0, float beta=0.0,
                    int64_t chunk=0):
    """Gradients of out = conv2d(x, w) + b given dy (N, K, OH, OW):
    dw = beta dw + (the weight gradient), db likewise (None: skipped),
    dx = the input gradient (None: skipped, overwritten otherwise). Returns dx."""
    op = "conv2d_backward"
    _array(dy, op, "dy", np.float32, False)
    _array(x, op, "x", np.float32, False)
    _array(w, op, "w", np.float32, False)
    _array(dw, op, "dw", np.float32, True)
    if db is not None:
        _array(db, op, "db", np.float32, True)
    if dx is not None:
        _array(dx, op, "dx", np.float32, True)
    cdef sn_conv2d_cfg cfg = _conv_cfg(op, x.shape, w.shape, stride, padding, chunk)
    _conv_shape(op, dy, "dy", (cfg.N, cfg.K, cfg.OH, cfg.OW))
    _conv_shape(op, dw, "dw", tuple(w.shape))
    if db is not None:
        _conv_shape(op, db, "db", (cfg.K,))
    if dx is not None:
        _conv_shape(op, dx, "dx", tuple(x.shape))
    inputs = (dy, x, w, workspace)
    for out in (dw, db, dx):
        if out is not None:
            _no_overlap(op, out, inputs + tuple(o for o in (dw, db, dx) if o is not out))
    cdef float *ws = _conv_workspace(op, workspace, &cfg)
    _no_overlap(op, workspace, (dy, x, w))
    cdef const float *pdy = <const float *>cnp.PyArray_DATA(dy)
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef const float *pw = <const float *>cnp.PyArray_DATA(w)
    cdef float *pdw = <float *>cnp.PyArray_DATA(dw)
    cdef float *pdb = <float *>cnp.PyArray_DATA(db) if db is not None else NULL
    cdef float *pdx = <float *>cnp.PyArray_DATA(dx) if dx is not None else NULL
    cdef int status
    with nogil:
        status = sn_conv2d_backward_f32(&cfg, pdw, pdb, pdx, pdy, px, pw, beta, ws)
    _check(status, op)
    return dx
