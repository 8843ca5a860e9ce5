# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""scratchnet._core: the one compiled module, a thin layer over csrc/.

Each function checks the dtype, shape and layout of its arguments with the
GIL held, raises a clear Python exception on anything wrong, then calls one
C kernel with the GIL released. No arithmetic happens here.

Arrays must already be float32 (labels int64), C-contiguous and aligned (a
view at an odd byte offset is refused: the C code reads floats through float
pointers, which must be aligned in C): the Python
layer converts user input before calling (see scratchnet/_validate.py);
outputs are written in place and returned.
"""
import numpy as np

cimport numpy as cnp
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int64_t, uint64_t
from scratchnet._core cimport *

cnp.import_array()
# the CPU's ISA and the default thread count, detected once, here, so that no
# kernel call writes them later (any thread may call kernels)
sn_runtime_init()


cdef int _check(int status, str op) except -1:
    """Map a C status to a Python exception, in one place."""
    if status == SN_OK:
        return 0
    if status == SN_EINVAL:
        raise ValueError(f"{op}: invalid argument")
    if status == SN_ENOMEM:
        raise MemoryError(f"{op}: could not allocate the workspace")
    if status == SN_ENONFINITE:
        raise FloatingPointError(f"{op}: the result is not finite (NaN or inf in the input, "
                                 "or training diverged: try a smaller learning rate)")
    raise RuntimeError(f"{op}: unknown status {status}")


def _describe(a):
    if isinstance(a, np.ndarray):
        return (f"ndarray(dtype={a.dtype}, shape={a.shape}, c_contiguous={a.flags.c_contiguous}"
                + (")" if a.flags.aligned else ", aligned=False)"))
    return type(a).__name__


cdef inline bint _native_float32(X):
    """Whether X is a float32 ndarray in this machine's byte order: NumPy's
    type number is NPY_FLOAT32 for '>f4' too, whose bytes the kernels would
    read as other numbers."""
    return (cnp.PyArray_Check(X) and cnp.PyArray_TYPE(X) == cnp.NPY_FLOAT32 and
            cnp.PyArray_ISNOTSWAPPED(X))


# Rows a predict runs between two looks for Ctrl-C (PyErr_CheckSignals, with
# the GIL): a 200,000-row predict of a large network heard one only when it
# was done, 7-12 s later. A few thousand rows are a small part of any long
# call, and the look costs nothing beside their work.
cdef int64_t _SIGNAL_ROWS = 4096


cdef inline bint _plain_rows(X, Py_ssize_t features):
    """Whether X is what the compiled networks read as it is: a non-empty
    2-D aligned, C-contiguous float32 ndarray of `features` columns, an
    ndarray itself (a subclass, such as a masked array, may mean more than
    its data: the caller's checks and conversion see to it). A few C-API
    checks: the path of one-image latency."""
    return (cnp.PyArray_CheckExact(X) and _native_float32(X) and
            cnp.PyArray_IS_C_CONTIGUOUS(X) and cnp.PyArray_ISALIGNED(X) and
            cnp.PyArray_NDIM(X) == 2 and cnp.PyArray_DIM(X, 0) > 0 and
            cnp.PyArray_DIM(X, 1) == features)


cdef object _array(a, str op, str name, object dtype, bint writable):
    """a itself, after checking it is an aligned, C-contiguous ndarray of dtype."""
    if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous):
        raise TypeError(f"{op}: {name} must be a C-contiguous {np.dtype(dtype).name} ndarray, "
                        f"got {_describe(a)}")
    if not a.flags.aligned:
        raise TypeError(f"{op}: {name} is not aligned (a view at an odd byte offset); pass a "
                        "copy")
    if writable and not a.flags.writeable:
        raise ValueError(f"{op}: {name} is read-only")
    return a


NONFINITE_OUTPUTS = ("the model's outputs contain NaN or inf: its weights are not finite "
                     "(did training diverge? try a lower learning rate or scaled inputs), or "
                     "these inputs are too large for it")


cdef int _check_predicted(X, int finite_in, int status, int finite_out, str op,
                          str finite_for) except -1:
    """The errors of a compiled network's predict: X not finite, a C status,
    or outputs not finite (named after the method finite_for)."""
    if not finite_in:
        bad = int(X.size - np.isfinite(X).sum())
        raise ValueError(f"X: contains {bad} non-finite value(s) (NaN or inf)")
    _check(status, op)
    if not finite_out:
        raise ValueError(f"{finite_for}: {NONFINITE_OUTPUTS}")
    return 0


# One piece of a compiled network's predict: the outputs of n rows of X
# (sn_mlp_forward_f32's form; ctx the network)
ctypedef int (*_forward_rows)(const void *ctx, float *out, const float *X, int64_t n,
                              int softmax, float *work, int64_t rows) noexcept nogil

# A predict of fewer multiply-adds than this keeps the GIL: letting it go and
# taking it back costs ~40 ns (CPython 3.11, AMD EPYC Zen 5), 2% of one image
# through 784-128-10 (101,632 of them, ~2 us). NumPy keeps it for small
# loops too; a few microseconds hold other Python threads back far less than
# the interpreter's own switch interval (5 ms) does.
cdef int64_t _KEEP_GIL_MACS = 1 << 18


cdef struct _predict_job:
    _forward_rows forward
    const void *ctx
    const float *X
    float *out
    int64_t M, K, C, rows
    float *work
    bint softmax, check_out
    int status, finite_in, finite_out


cdef void _predict_piece(_predict_job *job, int64_t start, int64_t n) noexcept nogil:
    """Rows start..start+n of the job: X's values checked first (all of X,
    at the first piece), the outputs last (all of them, at the last piece,
    with check_out)."""
    if start == 0:
        job.finite_in = sn_all_finite_f32(job.X, job.M * job.K)
    if not job.finite_in:
        return
    job.status = job.forward(job.ctx, job.out + start * job.C, job.X + start * job.K, n,
                             job.softmax, job.work, job.rows)
    if job.status == SN_OK and start + n == job.M and job.check_out:
        job.finite_out = sn_all_finite_f32(job.out, job.M * job.C)


cdef int _predict_rows(_forward_rows forward, const void *ctx, X, int64_t K, out, int64_t C,
                       int64_t row_macs, float *work, int64_t rows, bint softmax, str op,
                       str finite_for) except -1:
    """A compiled network's predict once X (M samples of K floats, M > 0) and
    out (M x C) are checked: X through forward into out in pieces of
    _SIGNAL_ROWS rows (Ctrl-C is heard between them), each piece and its
    checks in one release of the GIL (three releases were ~0.08 us of the
    2 us one-image call); with fewer than _KEEP_GIL_MACS multiply-adds in
    all (row_macs a sample), in none."""
    cdef int64_t M = cnp.PyArray_DIM(X, 0)
    cdef _predict_job job = [forward, ctx, <const float *>cnp.PyArray_DATA(X),
                             <float *>cnp.PyArray_DATA(out), M, K, C, rows, work, softmax,
                             finite_for is not None, SN_OK, 1, 1]
    # M * row_macs >= _KEEP_GIL_MACS, in integers that cannot overflow
    cdef int64_t per_row = row_macs if row_macs > 0 else 1
    cdef bint release = M >= (_KEEP_GIL_MACS + per_row - 1) // per_row
    cdef int64_t start = 0, n
    while True:
        n = M - start if M - start < _SIGNAL_ROWS else _SIGNAL_ROWS
        if release:
            with nogil:
                _predict_piece(&job, start, n)
        else:
            _predict_piece(&job, start, n)
        start += n
        if not job.finite_in or job.status != SN_OK or start == M:
            break
        PyErr_CheckSignals()
    return _check_predicted(X, job.finite_in, job.status, job.finite_out, op, finite_for)


cdef object _flat(a, str op, str name, bint writable=False):
    """A 1-D view of a C-contiguous float32 array of any shape (no copy)."""
    return _array(a, op, name, np.float32, writable).reshape(-1)


cdef int _same_size(str op, Py_ssize_t n, Py_ssize_t m, str name) except -1:
    if n != m:
        raise ValueError(f"{op}: {name} has {m} elements, expected {n}")
    return 0


cdef int _no_overlap(str op, out, inputs) except -1:
    for a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{op}: the output must not overlap an input")
    return 0


include "_core_runtime.pxi"
include "_core_gemm.pxi"
include "_core_elementwise.pxi"
include "_core_loss.pxi"
include "_core_optim.pxi"
include "_core_mlp.pxi"
include "_core_conv.pxi"
include "_core_pool.pxi"
include "_core_net.pxi"
