# Pooling, batch normalisation and augmentation over NCHW float32 arrays
# (csrc/sn_pool.c, sn_norm.c, sn_augment.c). Declared here rather than in
# _core.pxd so this part stays in one file.
from libc.stdint cimport int32_t

cdef extern from "scratchnet.h" nogil:
    int sn_pool2d_out_size(int64_t *Ho, int64_t *Wo, int64_t H, int64_t W, int64_t kh,
                           int64_t kw, int64_t sh, int64_t sw)
    int sn_maxpool2d_forward_f32(float *y, int32_t *argmax, const float *x, int64_t planes,
                                 int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                                 int64_t sw)
    int sn_maxpool2d_backward_f32(float *dx, const float *dy, const int32_t *argmax,
                                  int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo)
    int sn_avgpool2d_forward_f32(float *y, const float *x, int64_t planes, int64_t H, int64_t W,
                                 int64_t kh, int64_t kw, int64_t sh, int64_t sw)
    int sn_avgpool2d_backward_f32(float *dx, const float *dy, int64_t planes, int64_t H,
                                  int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw)
    int sn_global_avgpool_forward_f32(float *y, const float *x, int64_t planes, int64_t hw)
    int sn_global_avgpool_backward_f32(float *dx, const float *dy, int64_t planes, int64_t hw)
    int sn_batchnorm_forward_f32(float *y, float *save_mean, float *save_invstd,
                                 float *running_mean, float *running_var, const float *x,
                                 const float *gamma, const float *beta, int64_t N, int64_t C,
                                 int64_t S, float eps, float momentum, int training)
    int sn_batchnorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy,
                                  const float *x, const float *save_mean,
                                  const float *save_invstd, const float *gamma, int64_t N,
                                  int64_t C, int64_t S, int training)
    int sn_random_shifts(int32_t *shifts, int64_t n, int64_t pixels, uint64_t seed,
                         uint64_t first)
    int sn_random_flips(int32_t *flags, int64_t n, uint64_t seed, uint64_t first)
    int sn_shift2d_f32(float *y, const float *x, const int32_t *shifts, int64_t N, int64_t C,
                       int64_t H, int64_t W, int sign)
    int sn_flip2d_f32(float *y, const float *x, const int32_t *flags, int64_t N, int64_t C,
                      int64_t H, int64_t W)


cdef tuple _nchw(a, str op, str name):
    """(N, C, H, W) of a 4-D array, or ValueError naming op and the shape."""
    if not isinstance(a, np.ndarray) or a.ndim != 4:
        raise ValueError(f"{op}: {name} must be a 4-D (N, C, H, W) array, got "
                         f"{_describe(a)}")
    return tuple(a.shape)


cdef int _shape_is(str op, str name, a, tuple want) except -1:
    if tuple(a.shape) != want:
        raise ValueError(f"{op}: {name} has shape {tuple(a.shape)}, expected {want}")
    return 0


def pool2d_out_size(int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw):
    """(Ho, Wo) of a kh x kw window at strides (sh, sw) over H x W, no padding:
    Ho = (H - kh) // sh + 1; ValueError when the window does not fit."""
    cdef int64_t Ho = 0, Wo = 0
    if sn_pool2d_out_size(&Ho, &Wo, H, W, kh, kw, sh, sw) != SN_OK:
        raise ValueError(f"pool2d_out_size: a {kh}x{kw} window with stride ({sh}, {sw}) "
                         f"does not fit a {H}x{W} plane")
    return Ho, Wo


cdef tuple _pool_shapes(str op, x, tuple kernel, tuple stride):
    """(x's shape, y's shape, (kh, kw, sh, sw)); kernel and stride checked to be
    pairs of ints (indexing a shorter tuple here would read past its end:
    bounds checks are off in this module)."""
    cdef int64_t N, C, H, W
    N, C, H, W = _nchw(x, op, "x")
    kh, kw = _pair(kernel, op, "kernel")
    sh, sw = _pair(stride, op, "stride")
    Ho, Wo = pool2d_out_size(H, W, kh, kw, sh, sw)
    return (N, C, H, W), (N, C, Ho, Wo), (kh, kw, sh, sw)


def maxpool2d_forward(x, y, argmax, tuple kernel, tuple stride):
    """y = the max of each window of x (N, C, H, W); argmax (int32, y's shape)
    = its index in the H x W plane, the first maximum in row-major order."""
    op = "maxpool2d_forward"
    xs, ys, window = _pool_shapes(op, x, kernel, stride)
    cdef const float[::1] xv = _flat(x, op, "x")
    cdef float[::1] yv = _flat(y, op, "y", True)
    cdef int32_t[::1] av = _array(argmax, op, "argmax", np.int32, True).reshape(-1)
    _shape_is(op, "y", y, ys)
    _shape_is(op, "argmax", argmax, ys)
    cdef int64_t planes = xs[0] * xs[1], H = xs[2], W = xs[3]
    cdef int64_t kh, kw, sh, sw
    kh, kw, sh, sw = window
    cdef int status = SN_OK
    if planes > 0:
        with nogil:
            status = sn_maxpool2d_forward_f32(&yv[0], &av[0], &xv[0], planes, H, W, kh, kw, sh, sw)
    _check(status, op)
    return y


def maxpool2d_backward(dy, argmax, dx):
    """dx = 0, then dx[plane, argmax] += dy (overlapping windows add)."""
    op = "maxpool2d_backward"
    cdef int64_t N, C, H, W
    N, C, H, W = _nchw(dx, op, "dx")
    ys = _nchw(dy, op, "dy")
    if ys[:2] != (N, C):
        raise ValueError(f"maxpool2d_backward: dy of shape {tuple(dy.shape)} does not match dx "
                         f"of shape {tuple(dx.shape)}")
    cdef const float[::1] dyv = _flat(dy, op, "dy")
    cdef const int32_t[::1] av = _array(argmax, op, "argmax", np.int32, False).reshape(-1)
    cdef float[::1] dxv = _flat(dx, op, "dx", True)
    _shape_is(op, "argmax", argmax, ys)
    _no_overlap(op, dx, (dy, argmax))
    cdef int64_t Ho = ys[2], Wo = ys[3]
    cdef int status = SN_OK
    if N * C > 0:
        with nogil:
            status = sn_maxpool2d_backward_f32(&dxv[0], &dyv[0], &av[0], N * C, H, W, Ho, Wo)
    _check(status, op)
    return dx


def avgpool2d_forward(x, y, tuple kernel, tuple stride):
    """y = the mean of each window of x (N, C, H, W)."""
    op = "avgpool2d_forward"
    xs, ys, window = _pool_shapes(op, x, kernel, stride)
    cdef const float[::1] xv = _flat(x, op, "x")
    cdef float[::1] yv = _flat(y, op, "y", True)
    _shape_is(op, "y", y, ys)
    cdef int64_t planes = xs[0] * xs[1], H = xs[2], W = xs[3]
    cdef int64_t kh, kw, sh, sw
    kh, kw, sh, sw = window
    cdef int status = SN_OK
    if planes > 0:
        with nogil:
            status = sn_avgpool2d_forward_f32(&yv[0], &xv[0], planes, H, W, kh, kw, sh, sw)
    _check(status, op)
    return y


def avgpool2d_backward(dy, dx, tuple kernel, tuple stride):
    """dx = 0, then every position of a window gets dy / (kh kw) added."""
    op = "avgpool2d_backward"
    xs, ys, window = _pool_shapes(op, dx, kernel, stride)
    cdef const float[::1] dyv = _flat(dy, op, "dy")
    cdef float[::1] dxv = _flat(dx, op, "dx", True)
    _shape_is(op, "dy", dy, ys)
    _no_overlap(op, dx, (dy,))
    cdef int64_t planes = xs[0] * xs[1], H = xs[2], W = xs[3]
    cdef int64_t kh, kw, sh, sw
    kh, kw, sh, sw = window
    cdef int status = SN_OK
    if planes > 0:
        with nogil:
            status = sn_avgpool2d_backward_f32(&dxv[0], &dyv[0], planes, H, W, kh, kw, sh, sw)
    _check(status, op)
    return dx


def global_avgpool_forward(x, y):
    """y (N, C) = the mean of each H x W plane of x (N, C, H, W)."""
    op = "global_avgpool_forward"
    cdef int64_t N, C, H, W
    N, C, H, W = _nchw(x, op, "x")
    cdef const float[::1] xv = _flat(x, op, "x")
    cdef float[::1] yv = _flat(y, op, "y", True)
    _shape_is(op, "y", y, (N, C))
    cdef int status = SN_OK
    if N * C > 0:
        with nogil:
            status = sn_global_avgpool_forward_f32(&yv[0], &xv[0], N * C, H * W)
    _check(status, op)
    return y


def global_avgpool_backward(dy, dx):
    """dx[n, c, :, :] = dy[n, c] / (H W)."""
    op = "global_avgpool_backward"
    cdef int64_t N, C, H, W
    N, C, H, W = _nchw(dx, op, "dx")
    cdef const float[::1] dyv = _flat(dy, op, "dy")
    cdef float[::1] dxv = _flat(dx, op, "dx", True)
    _shape_is(op, "dy", dy, (N, C))
    _no_overlap(op, dx, (dy,))
    cdef int status = SN_OK
    if N * C > 0:
        with nogil:
            status = sn_global_avgpool_backward_f32(&dxv[0], &dyv[0], N * C, H * W)
    _check(status, op)
    return dx


cdef tuple _ncs(x, str op):
    if not isinstance(x, np.ndarray) or x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"{op}: x must be a non-empty 3-D (N, C, S) array, got {_describe(x)}")
    return tuple(x.shape)


cdef object _channels(a, str op, str name, int64_t C, bint writable):
    """A float32 vector of C values (per channel)."""
    cdef object v = _flat(a, op, name, writable)
    _same_size(op, C, v.shape[0], name)
    return v


def batchnorm_forward(x, y, weight, bias, save_mean, save_invstd, running_mean, running_var,
                      float eps, float momentum, bint training):
    """Batch norm of x (N, C, S) into y. training: batch statistics (at least
    2 values per channel), running statistics updated in place; otherwise the
    running statistics. save_mean, save_invstd (C) receive what backward needs."""
    op = "batchnorm_forward"
    cdef int64_t N, C, S
    N, C, S = _ncs(x, op)
    if training and N * S < 2:
        raise ValueError(f"{op}: training needs more than 1 value per channel, got x of shape "
                         f"{tuple(x.shape)}")
    if not eps > 0 or not 0 <= momentum <= 1:
        raise ValueError(f"{op}: eps must be > 0 and momentum in [0, 1], got {eps}, {momentum}")
    cdef const float[::1] xv = _flat(x, op, "x")
    cdef float[::1] yv = _flat(y, op, "y", True)
    _shape_is(op, "y", y, (N, C, S))
    _no_overlap(op, y, (x,))
    cdef const float[::1] gv = _channels(weight, op, "weight", C, False)
    cdef const float[::1] bv = _channels(bias, op, "bias", C, False)
    cdef float[::1] mv = _channels(save_mean, op, "save_mean", C, True)
    cdef float[::1] sv = _channels(save_invstd, op, "save_invstd", C, True)
    cdef float[::1] rmv = _channels(running_mean, op, "running_mean", C, training)
    cdef float[::1] rvv = _channels(running_var, op, "running_var", C, training)
    cdef int status, tr = training
    with nogil:
        status = sn_batchnorm_forward_f32(&yv[0], &mv[0], &sv[0], &rmv[0], &rvv[0], &xv[0],
                                          &gv[0], &bv[0], N, C, S, eps, momentum, tr)
    _check(status, op)
    return y


def batchnorm_backward(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias,
                       bint training):
    """dbias = sum dy, dweight = sum dy xhat (overwritten); dx through the batch
    statistics when training, else dx = weight save_invstd dy."""
    op = "batchnorm_backward"
    cdef int64_t N, C, S
    N, C, S = _ncs(x, op)
    cdef const float[::1] dyv = _flat(dy, op, "dy")
    cdef const float[::1] xv = _flat(x, op, "x")
    cdef float[::1] dxv = _flat(dx, op, "dx", True)
    _shape_is(op, "dy", dy, (N, C, S))
    _shape_is(op, "dx", dx, (N, C, S))
    _no_overlap(op, dx, (dy, x))
    cdef const float[::1] gv = _channels(weight, op, "weight", C, False)
    cdef const float[::1] mv = _channels(save_mean, op, "save_mean", C, False)
    cdef const float[::1] sv = _channels(save_invstd, op, "save_invstd", C, False)
    cdef float[::1] dgv = _channels(dweight, op, "dweight", C, True)
    cdef float[::1] dbv = _channels(dbias, op, "dbias", C, True)
    cdef int status, tr = training
    with nogil:
        status = sn_batchnorm_backward_f32(&dxv[0], &dgv[0], &dbv[0], &dyv[0], &xv[0], &mv[0],
                                           &sv[0], &gv[0], N, C, S, tr)
    _check(status, op)
    return dx


def random_shifts(draws, int64_t pixels, uint64_t seed, uint64_t first=0):
    """draws (N, 2) int32 = per image (sy, sx), uniform in [-pixels, pixels];
    image i is image first + i of seed's stream."""
    op = "random_shifts"
    cdef int32_t[::1] dv = _array(draws, op, "draws", np.int32, True).reshape(-1)
    if draws.ndim != 2 or draws.shape[1] != 2:
        raise ValueError(f"{op}: draws must have shape (N, 2), got {tuple(draws.shape)}")
    if pixels < 0:
        raise ValueError(f"{op}: pixels must be >= 0, got {pixels}")
    if draws.shape[0] > 0:
        _check(sn_random_shifts(&dv[0], draws.shape[0], pixels, seed, first), op)
    return draws


def random_flips(draws, uint64_t seed, uint64_t first=0):
    """draws (N,) int32 = 1 where image i is to be flipped (probability 1/2);
    image i is image first + i of seed's stream."""
    op = "random_flips"
    cdef int32_t[::1] dv = _array(draws, op, "draws", np.int32, True).reshape(-1)
    if draws.ndim != 1:
        raise ValueError(f"{op}: draws must be 1-D, got shape {tuple(draws.shape)}")
    if draws.shape[0] > 0:
        _check(sn_random_flips(&dv[0], draws.shape[0], seed, first), op)
    return draws


cdef object _move(str op, x, y, draws, tuple draw_shape, int which, int sign):
    cdef int64_t N, C, H, W
    N, C, H, W = _nchw(x, op, "x")
    cdef const float[::1] xv = _flat(x, op, "x")
    cdef float[::1] yv = _flat(y, op, "y", True)
    cdef const int32_t[::1] dv = _array(draws, op, "draws", np.int32, False).reshape(-1)
    _shape_is(op, "y", y, (N, C, H, W))
    _shape_is(op, "draws", draws, (N,) + draw_shape)
    _no_overlap(op, y, (x,))
    cdef int status = SN_OK
    if N > 0:
        with nogil:
            if which == 0:
                status = sn_shift2d_f32(&yv[0], &xv[0], &dv[0], N, C, H, W, sign)
            else:
                status = sn_flip2d_f32(&yv[0], &xv[0], &dv[0], N, C, H, W)
    _check(status, op)
    return y


def shift2d(x, y, shifts, bint adjoint=False):
    """y[b, :, i, j] = x[b, :, i - sy, j - sx] (0 outside), (sy, sx) = shifts[b];
    adjoint: the shift by (-sy, -sx), the transpose of the forward map."""
    return _move("shift2d", x, y, shifts, (2,), 0, -1 if adjoint else 1)


def flip2d(x, y, flags):
    """y[b] = x[b] flipped left-right where flags[b], else x[b]."""
    return _move("flip2d", x, y, flags, (), 1, 1)
