# Matrix multiply. Operands may be row slices of larger arrays (a leading
# dimension larger than the row length) as long as each row is contiguous.

cdef int64_t _leading_dim(a, str op, str name) except -1:
    """Elements between two rows of a row-contiguous 2-D float32 array.
    Read through NumPy's C API: this runs three times per GEMM call, and a
    small layer's GEMM takes only tens of microseconds."""
    if not (_native_float32(a) and cnp.PyArray_NDIM(a) == 2):
        raise TypeError(f"{op}: {name} must be a 2-D float32 ndarray in native byte order, "
                        f"got {_describe(a)}")
    cdef cnp.npy_intp rows = cnp.PyArray_DIM(a, 0), cols = cnp.PyArray_DIM(a, 1)
    cdef cnp.npy_intp s0 = cnp.PyArray_STRIDE(a, 0), s1 = cnp.PyArray_STRIDE(a, 1)
    if rows == 0 or cols == 0:
        return max(cols, 1)  # nothing is read or written; NumPy gives empty arrays 0 strides
    if not cnp.PyArray_ISALIGNED(a):
        raise TypeError(f"{op}: {name} is not aligned (a view at an odd byte offset); pass a "
                        "copy")
    if cols > 1 and s1 != 4:
        raise ValueError(f"{op}: the rows of {name} must be contiguous (strides {a.strides})")
    if rows <= 1:
        return max(cols, 1)
    if s0 % 4 != 0 or s0 < 4 * max(cols, 1):
        raise ValueError(f"{op}: {name} has unsupported strides {a.strides}")
    return s0 // 4


cdef bint _overlaps(a, int64_t ld_a, c, int64_t ld_c):
    """Whether the memory spans of two row-major 2-D float32 arrays intersect
    (the bounds test of np.may_share_memory, without its Python call)."""
    cdef char *pa = <char *>cnp.PyArray_DATA(a)
    cdef char *pc = <char *>cnp.PyArray_DATA(c)
    cdef int64_t na = (cnp.PyArray_DIM(a, 0) - 1) * ld_a + cnp.PyArray_DIM(a, 1)
    cdef int64_t nc = (cnp.PyArray_DIM(c, 0) - 1) * ld_c + cnp.PyArray_DIM(c, 1)
    if cnp.PyArray_SIZE(a) == 0 or cnp.PyArray_SIZE(c) == 0:
        return False
    return pa < pc + 4 * nc and pc < pa + 4 * na


def gemm(A, B, C, bint trans_a=False, bint trans_b=False, float alpha=1.0, float beta=0.0,
         bint naive=False):
    """C = alpha * op(A) @ op(B) + beta * C in place; returns C.

    op(A) = A.T if trans_a else A (likewise B). naive=True runs the float64-
    accumulating triple loop that the fast path is tested against."""
    cdef int64_t lda = _leading_dim(A, "gemm", "A")
    cdef int64_t ldb = _leading_dim(B, "gemm", "B")
    cdef int64_t ldc = _leading_dim(C, "gemm", "C")
    if not cnp.PyArray_ISWRITEABLE(C):
        raise ValueError("gemm: C is read-only")
    cdef int64_t M = cnp.PyArray_DIM(A, 1 if trans_a else 0)
    cdef int64_t K = cnp.PyArray_DIM(A, 0 if trans_a else 1)
    cdef int64_t KB = cnp.PyArray_DIM(B, 1 if trans_b else 0)
    cdef int64_t N = cnp.PyArray_DIM(B, 0 if trans_b else 1)
    if K != KB or cnp.PyArray_DIM(C, 0) != M or cnp.PyArray_DIM(C, 1) != N:
        raise ValueError(f"gemm: shapes do not match: op(A) is {M}x{K}, op(B) is {KB}x{N}, "
                         f"C is {C.shape[0]}x{C.shape[1]} (expected {M}x{N})")
    if _overlaps(A, lda, C, ldc) or _overlaps(B, ldb, C, ldc):
        raise ValueError("gemm: the output must not overlap an input")
    if M == 0 or N == 0:
        return C
    # the first elements; the C code walks the rows by their leading dimensions
    cdef const float *pa = <const float *>cnp.PyArray_DATA(A) if K > 0 else NULL
    cdef const float *pb = <const float *>cnp.PyArray_DATA(B) if K > 0 else NULL
    cdef float *pc = <float *>cnp.PyArray_DATA(C)
    cdef int status
    with nogil:
        if naive:
            status = sn_gemm_naive_f32(trans_a, trans_b, M, N, K, alpha, pa, lda, pb, ldb,
                                       beta, pc, ldc)
        else:
            status = sn_gemm_f32(trans_a, trans_b, M, N, K, alpha, pa, lda, pb, ldb,
                                 beta, pc, ldc)
    _check(status, "gemm")
    return C


def bias_add(y, b):
    """y[i, :] += b for a 2-D y; returns y."""
    _array(y, "bias_add", "y", np.float32, True)
    _array(b, "bias_add", "b", np.float32, False)
    if y.ndim != 2 or b.ndim != 1 or b.shape[0] != y.shape[1]:
        raise ValueError(f"bias_add: y must be (M, N) and b (N,), got {y.shape} and {b.shape}")
    if y.size == 0:
        return y
    cdef float[:, ::1] yv = y
    cdef const float[::1] bv = b
    cdef int64_t M = y.shape[0], N = y.shape[1]
    with nogil:
        sn_bias_add_f32(&yv[0, 0], N, &bv[0], M, N)
    return y


def bias_grad(dy, db, float beta=0.0):
    """db = beta * db + dy.sum(axis=0); returns db."""
    _array(dy, "bias_grad", "dy", np.float32, False)
    _array(db, "bias_grad", "db", np.float32, True)
    if dy.ndim != 2 or db.ndim != 1 or db.shape[0] != dy.shape[1]:
        raise ValueError(f"bias_grad: dy must be (M, N) and db (N,), got {dy.shape} and {db.shape}")
    if db.shape[0] == 0:
        return db
    cdef float[::1] dbv = db
    cdef const float[::1] dyv = dy.reshape(-1)
    cdef int64_t M = dy.shape[0], N = dy.shape[1]
    cdef const float *pdy = &dyv[0] if M > 0 else NULL
    with nogil:
        sn_bias_grad_f32(&dbv[0], pdy, N, M, N, beta)
    return db


def dense_forward(x, W, b, out, str act="none", float act_param=0.0):
    """out = act(x @ W + b), bias and activation applied as the GEMM writes
    each tile; act is a name of ACTIVATIONS; returns out."""
    _array(x, "dense_forward", "x", np.float32, False)
    _array(W, "dense_forward", "W", np.float32, False)
    _array(b, "dense_forward", "b", np.float32, False)
    _array(out, "dense_forward", "out", np.float32, True)
    if act not in ACTIVATIONS:
        raise ValueError(f"dense_forward: unknown activation {act!r}")
    if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[0] or b.shape != (W.shape[1],) \
            or out.shape != (x.shape[0], W.shape[1]):
        raise ValueError(f"dense_forward: shapes x {x.shape}, W {W.shape}, b {b.shape}, "
                         f"out {out.shape} do not fit y = x @ W + b")
    _no_overlap("dense_forward", out, (x, W, b))
    cdef int64_t M = x.shape[0], K = x.shape[1], N = W.shape[1]
    if M == 0 or N == 0:
        return out
    cdef const float[::1] xv = x.reshape(-1)
    cdef const float[::1] wv = W.reshape(-1)
    cdef const float[::1] bv = b
    cdef float[::1] ov = out.reshape(-1)
    cdef int code = ACTIVATIONS[act]
    cdef int status
    with nogil:
        status = sn_dense_forward_f32(&ov[0], &xv[0] if K > 0 else NULL,
                                      &wv[0] if K > 0 else NULL, &bv[0], M, K, N, code,
                                      act_param)
    _check(status, "dense_forward")
    return out
