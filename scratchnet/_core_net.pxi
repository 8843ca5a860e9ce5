# Inference through a whole network in one C call (csrc/sn_net.c): the
# latency path of Sequential.predict for the networks the fused MLP does not
# cover (convolutions, pooling, batch norm). It points into the parameter
# and running-statistic arrays it was built from and keeps them alive.
#
# Threads: as MLP.predict, a call runs in the object's own workspace when it
# is free and in one of its own when another thread holds it.

cdef extern from "scratchnet.h" nogil:
    int SN_NET_DENSE, SN_NET_CONV2D, SN_NET_MAXPOOL2D, SN_NET_AVGPOOL2D
    int SN_NET_GLOBAL_AVGPOOL, SN_NET_BATCHNORM, SN_NET_ACT, SN_NET_SOFTMAX
    ctypedef struct sn_net_op:
        int kind, act
        float act_param, eps
        int64_t in_ "in"
        int64_t out, C, H, W, K, kh, kw, sh, sw, ph, pw
        const float *w
        const float *b
        const float *mean
        const float *var
    int sn_net_check(const sn_net_op *ops, int n_ops)
    int64_t sn_net_workspace(const sn_net_op *ops, int n_ops, int64_t rows)
    int sn_net_forward_f32(const sn_net_op *ops, int n_ops, float *out, const float *X,
                           int64_t M, int softmax, float *workspace, int64_t rows)


NET_KINDS = {"dense": SN_NET_DENSE, "conv2d": SN_NET_CONV2D, "maxpool2d": SN_NET_MAXPOOL2D,
             "avgpool2d": SN_NET_AVGPOOL2D, "global_avgpool": SN_NET_GLOBAL_AVGPOOL,
             "batchnorm": SN_NET_BATCHNORM, "act": SN_NET_ACT, "softmax": SN_NET_SOFTMAX}
_NET_SIZES = ("in", "out", "C", "H", "W", "K", "kh", "kw", "sh", "sw", "ph", "pw")


cdef const float *_net_array(dict spec, str key, Py_ssize_t n, list keep) except? NULL:
    """Pointer to spec[key], a C-contiguous float32 array of n values (absent
    or None: NULL), kept alive in keep."""
    a = spec.get(key)
    if a is None:
        return NULL
    cdef const float[::1] v = _flat(a, "Net", key)
    _same_size("Net", n, v.shape[0], key)
    keep.append(a)
    return &v[0]


cdef struct _net_program:
    const sn_net_op *ops
    int n_ops


cdef int _net_rows(const void *program, float *out, const float *X, int64_t n, int softmax,
                   float *work, int64_t rows) noexcept nogil:
    cdef const _net_program *p = <const _net_program *>program
    return sn_net_forward_f32(p.ops, p.n_ops, out, X, n, softmax, work, rows)


cdef class Net:
    """ops: a list of dicts, one per operation (see sn_net_op in
    csrc/scratchnet.h): "kind" (a key of NET_KINDS), the sizes "in", "out"
    (floats per sample) and those the kind uses, "act", "act_param", "eps",
    and the arrays "w", "b", "mean", "var". in_shape and out_shape: the
    per-sample shapes of the input and output; max_batch: the most samples
    per chunk (the workspace grows to the largest chunk a call has used)."""
    cdef sn_net_op *ops
    cdef int n_ops
    cdef list keep          # every array the C operations point into
    cdef readonly tuple in_shape, out_shape
    cdef readonly int64_t max_batch
    cdef object work        # the inference workspace
    cdef bint busy          # a predict call is using work
    cdef int64_t row_macs   # multiply-adds of one sample (elementwise operations: one each)

    def __cinit__(self):
        self.ops = NULL

    def __init__(self, list ops, tuple in_shape, tuple out_shape, int64_t max_batch):
        if not ops or max_batch < 1:
            raise ValueError("Net: needs at least one operation and max_batch >= 1")
        self.ops = <sn_net_op *>calloc(len(ops), sizeof(sn_net_op))
        if self.ops == NULL:
            raise MemoryError("Net: out of memory")
        self.n_ops = len(ops)
        self.keep = []
        cdef sn_net_op *op
        cdef int64_t sizes[12]
        cdef Py_ssize_t n_w, n_b, channels
        for i, spec in enumerate(ops):
            if spec.get("kind") not in NET_KINDS:
                raise ValueError(f"Net: operation {i}: unknown kind {spec.get('kind')!r}")
            op = &self.ops[i]
            op.kind = NET_KINDS[spec["kind"]]
            for k, key in enumerate(_NET_SIZES):
                sizes[k] = spec.get(key, 1 if key in ("C", "H", "W") else 0)
            op.in_, op.out, op.C, op.H, op.W, op.K = sizes[0], sizes[1], sizes[2], sizes[3], \
                sizes[4], sizes[5]
            op.kh, op.kw, op.sh, op.sw, op.ph, op.pw = sizes[6], sizes[7], sizes[8], sizes[9], \
                sizes[10], sizes[11]
            op.act = ACTIVATIONS[spec.get("act", "none")]
            op.act_param = spec.get("act_param", 0.0)
            op.eps = spec.get("eps", 0.0)
            channels = max(op.C, 0)
            if op.kind == SN_NET_DENSE:
                n_w, n_b = op.in_ * op.out, op.out
                self.row_macs += n_w
            elif op.kind == SN_NET_CONV2D:
                n_w, n_b = op.K * op.C * op.kh * op.kw, op.K
                self.row_macs += op.out * op.C * op.kh * op.kw  # out: K x Ho x Wo
            else:
                n_w = n_b = channels
                self.row_macs += op.in_
            op.w = _net_array(spec, "w", n_w, self.keep)
            op.b = _net_array(spec, "b", n_b, self.keep)
            op.mean = _net_array(spec, "mean", channels, self.keep)
            op.var = _net_array(spec, "var", channels, self.keep)
        if sn_net_check(self.ops, self.n_ops) != SN_OK:
            raise ValueError("Net: the operations do not describe a network (a size that does "
                             "not chain, or a missing array)")
        self.in_shape, self.out_shape, self.max_batch = in_shape, out_shape, max_batch
        if _prod(in_shape) != self.ops[0].in_ or _prod(out_shape) != self.ops[self.n_ops - 1].out:
            raise ValueError(f"Net: shapes {in_shape} -> {out_shape} do not match the operations")
        if sn_net_workspace(self.ops, self.n_ops, max_batch) < 0:
            raise ValueError("Net: no workspace fits this network and max_batch")
        self.work = np.empty(0, np.float32)  # grown to the largest chunk asked for, on lines
        self.busy = False

    def __dealloc__(self):
        free(self.ops)

    def predict(self, X, bint softmax=False, str finite_for=None):
        """The outputs (M, *out_shape) for X (M, *in_shape), a new array, or
        their softmax over each sample's outputs. X must be an aligned,
        C-contiguous float32 ndarray of finite values (checked here).
        finite_for: a method name, to refuse outputs that are not finite
        with a ValueError naming it."""
        if not (_native_float32(X) and cnp.PyArray_IS_C_CONTIGUOUS(X) and
                cnp.PyArray_ISALIGNED(X)):
            raise TypeError(f"Net.predict: X must be an aligned, C-contiguous float32 ndarray "
                            f"in native byte order, got {_describe(X)}")
        if X.ndim < 1 or X.shape[1:] != self.in_shape or X.shape[0] == 0:
            raise ValueError(f"X: expected a non-empty batch of samples of shape "
                             f"{self.in_shape}, got shape {X.shape}")
        cdef int64_t M = cnp.PyArray_DIM(X, 0)
        out = np.empty((M,) + self.out_shape, np.float32)
        cdef int64_t rows = M if M < self.max_batch else self.max_batch
        cdef int64_t need = sn_net_workspace(self.ops, self.n_ops, rows)
        cdef bint own = not self.busy
        if own:
            self.busy = True
            if self.work.shape[0] < need:
                self.work = _empty_on_lines((need,))
            work = self.work
        else:
            work = _empty_on_lines((need,))
        cdef _net_program program = [self.ops, self.n_ops]
        try:
            _predict_rows(_net_rows, &program, X, self.ops[0].in_, out,
                          self.ops[self.n_ops - 1].out, self.row_macs,
                          <float *>cnp.PyArray_DATA(work), rows, softmax, "Net.predict",
                          finite_for)
        finally:
            if own:
                self.busy = False
        return out


cdef int64_t _prod(tuple shape) except -1:
    cdef int64_t n = 1
    for s in shape:
        n *= s
    return n
