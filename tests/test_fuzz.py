"""Property-based fuzzing of scratchnet._core and the public API.

Each generated case feeds arguments of random shapes (0 and 1 included),
dtypes, layouts (Fortran, strided, reversed, read-only, unaligned, broadcast,
lists, None) and values (NaN, +-inf, 1e38, subnormals). An oracle says
whether the C core accepts the arguments (tests/fuzz_strategies.py:
`accepted`); when it does, the result must match a float64 NumPy reference,
and when it does not, the call must raise a Python exception with a message
(TypeError, ValueError, ...). Nothing may crash the interpreter: under
tools/check_sanitizers.sh the same cases also run with AddressSanitizer and
UBSan watching every memory access.

SCRATCHNET_FUZZ_EXAMPLES=N runs about N cases in all (default 2,840, from a
fixed seed); the count run is printed at the end of the pytest session."""
import contextlib
import json

import numpy as np
import pytest
from hypothesis import strategies as st

import scratchnet as sn
from scratchnet import _core
from fuzz_strategies import (HUGE, MOSTLY_C, ODD_LAYOUTS, REFUSALS, accepted, assert_close, dims,
                             f64, fuzz, moderate, odd, odd_array, refused, relayout, values)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def relu64(x):
    return np.where(np.isnan(x) | (x > 0), x, 0.0)


def sigmoid64(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def huge(*arrays):
    """Per element: whether any array holds a finite value beyond HUGE there
    (float32 arithmetic may overflow where float64 does not)."""
    out = np.zeros(np.shape(f64(arrays[0])), bool)
    for a in arrays:
        a = f64(a)
        out |= np.isfinite(a) & (np.abs(a) > HUGE)
    return out


def run(draw, call, args, ok, **kwargs):
    """Calls call(*args); asserts it raised exactly when not ok."""
    exc = refused(call, *args, **kwargs)
    if ok:
        assert exc is None, f"{call.__name__} refused valid arguments: {exc!r}"
    else:
        assert exc is not None, f"{call.__name__} accepted invalid arguments"
    return exc


# ---- GEMM ------------------------------------------------------------------

def gemm_operand(a, writable=False):
    """Whether gemm takes a: 2-D float32 whose rows are contiguous and do not
    overlap (a leading dimension of at least the row length), aligned."""
    if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 2):
        return False
    if writable and not a.flags.writeable:
        return False
    rows, cols = a.shape
    if a.size == 0:
        return True
    s0, s1 = a.strides
    return (a.flags.aligned and (cols <= 1 or s1 == 4)
            and (rows <= 1 or (s0 % 4 == 0 and s0 >= 4 * cols)))


@fuzz(330, st.data())
def test_gemm(data):
    draw = data.draw
    M, N, K = draw(dims(0, 5)), draw(dims(0, 5)), draw(dims(0, 5))
    if draw(st.integers(0, 5)) == 0:  # the packed, blocked path
        M, N, K = (draw(st.integers(6, 40)) for _ in range(3))
    ta, tb, naive = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    alpha = draw(st.sampled_from([1.0, -0.5, 2.0]))
    beta = draw(st.sampled_from([0.0, 1.0, 0.5]))
    shapes = [[K, M] if ta else [M, K], [N, K] if tb else [K, N], [M, N]]
    if draw(st.integers(0, 9)) == 0:
        shapes[draw(st.integers(0, 2))][draw(st.integers(0, 1))] += 1
    A, B, C = (draw(odd_array(tuple(s))) for s in shapes)
    if draw(st.integers(0, 19)) == 0:
        C = A
    ok = (gemm_operand(A) and gemm_operand(B) and gemm_operand(C, writable=True)
          and [list(A.shape), list(B.shape), list(C.shape)] == [[K, M] if ta else [M, K],
                                                                [N, K] if tb else [K, N], [M, N]]
          and not np.may_share_memory(A, C) and not np.may_share_memory(B, C))
    C0 = f64(C) if isinstance(C, np.ndarray) else None
    if run(draw, _core.gemm, (A, B, C, ta, tb, alpha, beta, naive), ok) is not None:
        return
    opA, opB = (f64(A).T if ta else f64(A)), (f64(B).T if tb else f64(B))
    with np.errstate(all="ignore"):
        ref = alpha * (opA @ opB) + (beta * C0 if beta else 0.0)
        bound = abs(alpha) * (np.abs(opA) @ np.abs(opB)) + (abs(beta) * np.abs(C0) if beta else 0)
    finite = lambda a: np.isfinite(a)  # noqa: E731
    nonfinite = (~finite(opA).all(axis=1)[:, None] | ~finite(opB).all(axis=0)[None, :]
                 | ((~finite(C0)) if beta else False))
    big = ((np.abs(np.where(finite(opA), opA, 0)) > HUGE).any(axis=1)[:, None]
           | (np.abs(np.where(finite(opB), opB, 0)) > HUGE).any(axis=0)[None, :]
           | ((np.abs(np.where(finite(C0), C0, 0)) > HUGE) if beta else False))
    got = f64(C)
    assert not np.isfinite(got[nonfinite]).any(), "a NaN/inf input gave a finite result"
    check = ~nonfinite & ~big
    err = np.abs(got - ref)
    tol = 1e-5 * (K + 2) * bound + 1e-30
    bad = check & ~(err <= tol)
    assert not bad.any(), f"gemm: wrong at {np.argwhere(bad)[0]}: {got[bad][:3]} vs {ref[bad][:3]}"


# ---- element-wise ------------------------------------------------------------

UNARY = {
    "relu_forward": relu64,
    "sigmoid_forward": sigmoid64,
    "tanh_forward": np.tanh,
}
BINARY = {
    "relu_backward": lambda dy, x: np.where(x > 0, dy, 0.0),
    "sigmoid_backward": lambda dy, y: dy * (y * (1.0 - y)),
    "tanh_backward": lambda dy, y: dy * (1.0 - y * y),
    "mul": lambda x, y: x * y,
}


@st.composite
def shapes(draw, max_dims=3, hi=4):
    return tuple(draw(dims(0, hi)) for _ in range(draw(st.integers(0, max_dims))))


@fuzz(300, st.data())
def test_elementwise(data):
    draw = data.draw
    name = draw(st.sampled_from(sorted(UNARY) + sorted(BINARY) + [
        "leaky_relu_forward", "leaky_relu_backward", "softmax_forward", "softmax_backward",
        "dropout_forward", "all_finite"]))
    shape = draw(shapes())
    if name.startswith("softmax"):
        shape = (draw(dims(0, 4)), draw(dims(0, 6)))
    fn = getattr(_core, name)
    x = draw(odd_array(shape))
    n_in = 2 if name in BINARY or name in ("leaky_relu_backward", "softmax_backward") else 1
    ins = [x] + [draw(odd_array(shape)) for _ in range(n_in - 1)]
    out_shape = shape if draw(st.integers(0, 9)) else shape + (2,)
    out = draw(odd_array(out_shape))
    if draw(st.integers(0, 9)) == 0 and name != "dropout_forward":
        out = x  # in place
    size_ok = all(np.size(a) == np.size(x) for a in ins + [out])
    ok = all(accepted(a) for a in ins) and accepted(out, writable=True) and size_ok
    slope = np.float32(draw(st.sampled_from([0.01, 0.2, 0.0, -1.0])))
    if name == "all_finite":
        exc = run(draw, fn, (x,), accepted(x))
        if exc is None:
            assert fn(x) == bool(np.isfinite(f64(x)).all())
        return
    if name == "dropout_forward":
        p = draw(st.sampled_from([0.0, 0.5, 0.9] * 3 + [1.0, -0.1, float("nan")]))
        mask = draw(odd_array(shape if draw(st.integers(0, 3)) else shape + (2,)))
        ok = (ok and accepted(mask, writable=True) and np.size(mask) == np.size(x)
              and 0.0 <= p < 1.0 and not np.may_share_memory(mask, out))
        xin = f64(x)
        if run(draw, fn, (x, out, mask, p, 7), ok) is None:
            keep = np.float32(1.0) / (np.float32(1.0) - np.float32(p))
            assert np.isin(mask, [0.0, keep]).all()
            assert_close(f64(out).reshape(-1), xin.reshape(-1) * f64(mask).reshape(-1), what=name)
        return
    if name.startswith("softmax"):
        ok = ok and x.ndim == 2 and x.shape[1] > 0 and all(
            np.shape(a) == x.shape for a in ins + [out]) if isinstance(x, np.ndarray) else False
    # the kernels see flat buffers (softmax: rows), and so do the references
    args64 = [f64(a) if name.startswith("softmax") else f64(a).reshape(-1) for a in ins]
    params = (slope,) if name.startswith("leaky") else ()
    if run(draw, fn, (*ins, out, *params), ok) is not None:
        return
    with np.errstate(all="ignore"):
        if name in UNARY:
            ref, skip = UNARY[name](args64[0]), None
        elif name in BINARY:
            ref, skip = BINARY[name](*args64), huge(*args64)
        elif name == "leaky_relu_forward":
            ref, skip = np.where(args64[0] > 0, args64[0], slope * args64[0]), None
        elif name == "leaky_relu_backward":
            dy, xx = args64
            ref, skip = np.where(xx > 0, dy, slope * dy), None
        elif name == "softmax_forward":
            z = args64[0]
            e = np.exp(z - z.max(axis=1, keepdims=True))
            ref, skip = e / e.sum(axis=1, keepdims=True), None
        else:
            dy, y = args64
            dot = (dy * y).sum(axis=1, keepdims=True)
            ref = y * (dy - dot)
            scale = np.abs(y) * ((np.abs(dy * y)).sum(axis=1, keepdims=True) + np.abs(dy))
            skip = huge(dy, y).any(axis=1, keepdims=True) | (
                np.abs(f64(out).reshape(ref.shape) - ref) <= 1e-5 * shape[1] * scale + 1e-30)
    assert_close(f64(out).reshape(ref.shape), ref, atol=1e-37,
                 skip=None if skip is None else np.broadcast_to(skip, ref.shape), what=name)


# ---- losses ------------------------------------------------------------------

def xent64(z, labels):
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float((lse - z[np.arange(len(z)), labels]).mean())


@fuzz(260, st.data())
def test_losses(data):
    draw = data.draw
    name = draw(st.sampled_from(["xent_forward", "xent_backward", "xent_soft_forward",
                                 "xent_soft_backward", "mse_forward", "mse_backward",
                                 "bce_logits_forward", "bce_logits_backward"]))
    M, N = draw(dims(0, 4)), draw(dims(0, 5))
    z = draw(odd_array((M, N)))
    fn = getattr(_core, name)
    scale = np.float32(draw(st.sampled_from([1.0, 0.25, -2.0, 0.0])))
    with np.errstate(all="ignore"):
        if name in ("xent_forward", "xent_backward"):
            lab = np.array([draw(st.integers(-2, N + 1)) if draw(st.integers(0, 9)) == 0
                            else draw(st.integers(0, max(N - 1, 0))) for _ in range(M)], np.int64)
            labels = draw(odd(lab.reshape(-1) if draw(st.integers(0, 9)) else lab.reshape(-1, 1)))
            other = draw(odd_array((M, N) if draw(st.integers(0, 9)) else (M, N + 1)))
            ok = (accepted(z) and accepted(other, writable=True) and accepted(labels, np.int64)
                  and z.ndim == 2 and M > 0 and N > 0 and other.shape == z.shape
                  and labels.shape == (M,) and bool(((labels >= 0) & (labels < N)).all()))
            z64, lab64 = f64(z), np.array(labels) if ok else None
            if name == "xent_forward":
                exc = refused(fn, z, labels, other)
                ref = xent64(z64, lab64) if ok else None
                if not ok:
                    assert exc is not None
                elif np.isfinite(ref):
                    assert exc is None, exc
                    if moderate(z64):
                        assert abs(fn(z, labels, other) - ref) <= 1e-5 * (1 + np.abs(z64).max())
                        zz = z64 - z64.max(axis=1, keepdims=True)
                        p = np.exp(zz) / np.exp(zz).sum(axis=1, keepdims=True)
                        assert_close(other, p, atol=1e-7, what=name)
                else:
                    assert isinstance(exc, FloatingPointError), exc
                return
            # backward: dz = (probs - onehot) * scale; probs is z here
            if run(draw, fn, (z, labels, other, scale), ok) is None:
                ref = z64 * scale
                ref[np.arange(M), lab64] -= scale
                assert_close(other, ref, atol=1e-6 * (np.abs(z64) + 1) * abs(float(scale)),
                             skip=huge(z64),
                             what=name)
            return
        t = draw(odd_array((M, N) if draw(st.integers(0, 9)) else (M, N + 1)))
        if name.endswith("forward"):
            ok = accepted(z) and accepted(t) and np.size(z) == np.size(t) and np.size(z) > 0
            if name == "xent_soft_forward":
                probs = draw(odd_array((M, N)))
                ok = (ok and accepted(probs, writable=True) and M > 0 and N > 0
                      and t.shape == z.shape and probs.shape == z.shape)
                args = (z, t, probs)
            else:
                args = (z, t)
            exc = refused(fn, *args)
            if not ok:
                assert exc is not None
                return
            z64, t64 = f64(z).reshape(-1), f64(t).reshape(-1)
            if name == "mse_forward":
                ref = float(((z64 - t64) ** 2).mean())
            elif name == "bce_logits_forward":
                ref = float((np.maximum(z64, 0) - z64 * t64
                             + np.log1p(np.exp(-np.abs(z64)))).mean())
            else:
                zz, tt = f64(z), f64(t)
                m = zz.max(axis=1, keepdims=True)
                lse = m + np.log(np.exp(zz - m).sum(axis=1, keepdims=True))
                ref = float((tt * (lse - zz)).sum(axis=1).mean())
            if not np.isfinite(ref):
                assert isinstance(exc, FloatingPointError), exc
            elif moderate(z64, t64):
                assert exc is None, exc
                got = fn(*args)
                assert abs(got - ref) <= 1e-5 * (1 + abs(ref) + np.abs(z64).max()
                                                 * np.abs(t64).sum()), (got, ref)
            else:
                assert exc is None or isinstance(exc, FloatingPointError), exc
            return
        out = draw(odd_array((M, N)))
        ok = (accepted(z) and accepted(t) and accepted(out, writable=True)
              and np.size(z) == np.size(t) == np.size(out))
        if name == "xent_soft_backward":  # rows of classes: shapes, not only sizes
            ok = ok and z.ndim == 2 and M > 0 and N > 0 and t.shape == z.shape == out.shape
        z64, t64 = f64(z), f64(t)
        if run(draw, fn, (z, t, out, scale), ok) is None:
            a = sigmoid64(z64) if name.startswith("bce") else z64
            if name == "xent_soft_backward":  # each row's target mass times probs
                a = z64 * t64.sum(axis=1, keepdims=True)
            ref = (a.reshape(-1) - t64.reshape(-1)) * scale
            assert_close(f64(out).reshape(-1), ref,
                         atol=1e-6 * (np.abs(a).reshape(-1) + np.abs(t64).reshape(-1))
                         * abs(float(scale)),
                         skip=huge(z64.reshape(-1), t64.reshape(-1)), what=name)


# ---- convolution ---------------------------------------------------------------

def conv64(x, w, b, stride, padding):
    """float64 PyTorch Conv2d: (N, C, H, W) by (K, C, kh, kw)."""
    (sh, sw), (ph, pw) = stride, padding
    K, C, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    OH, OW = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.zeros((x.shape[0], K, OH, OW))
    for a in range(kh):
        for c in range(kw):
            win = xp[:, :, a:a + sh * (OH - 1) + 1:sh, c:c + sw * (OW - 1) + 1:sw]
            y += np.einsum("ncij,kc->nkij", win, w[:, :, a, c])
    return y + (b[None, :, None, None] if b is not None else 0.0)


def conv64_backward(dy, x, w, stride, padding):
    """(dw, db, dx) of conv64 given dy."""
    (sh, sw), (ph, pw) = stride, padding
    K, C, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    OH, OW = dy.shape[2:]
    for a in range(kh):
        for c in range(kw):
            sl = (slice(None), slice(None), slice(a, a + sh * (OH - 1) + 1, sh),
                  slice(c, c + sw * (OW - 1) + 1, sw))
            dw[:, :, a, c] = np.einsum("nkij,ncij->kc", dy, xp[sl])
            dxp[sl] += np.einsum("nkij,kc->ncij", dy, w[:, :, a, c])
    return dw, dy.sum(axis=(0, 2, 3)), dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]


@st.composite
def conv_case(draw):
    """A convolution's geometry: valid three times in four, else one odd size,
    stride, padding or chunk."""
    N, C, H, W = draw(dims(0, 3)), draw(dims(1, 3)), draw(dims(1, 6)), draw(dims(1, 6))
    K, kh, kw = draw(dims(1, 3)), draw(st.integers(1, min(H, 4))), draw(st.integers(1, min(W, 4)))
    g = {"x": [N, max(C, 1), max(H, 1), max(W, 1)], "w": [max(K, 1), max(C, 1), kh, kw],
         "stride": draw(st.sampled_from([1, 1, 2, 3, (1, 2), (2, 1)])),
         "padding": draw(st.sampled_from([0, 0, 1, 2, (0, 1), (1, 0)])),
         "chunk": draw(st.sampled_from([0, 0, 1, min(2, max(N, 1))]))}
    if draw(st.integers(0, 3)) == 0:
        what = draw(st.sampled_from(["x", "w", "stride", "padding", "chunk"]))
        if what in ("x", "w"):
            g[what][draw(st.integers(0, 3))] = draw(st.sampled_from([0, -1, 7, 2**31, 2**40]))
        elif what == "chunk":
            g["chunk"] = draw(st.sampled_from([-1, N + 1, 2**40]))
        else:
            g[what] = draw(st.sampled_from([0, -1, (1,), 1.5, True, None, (0, 0, 0), "1",
                                            (1, -1)]))
    return tuple(g["x"]), tuple(g["w"]), g["stride"], g["padding"], g["chunk"]


def conv_geometry(xs, ws, stride, padding, chunk):
    """(OH, OW) when the convolution is valid, else None."""
    def pair(v, lo):
        t = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
        if len(t) != 2 or any(type(e) is not int for e in t) or min(t) < lo:
            return None
        return t
    s, p = pair(stride, 1), pair(padding, 0)
    N, C, H, W = xs
    K, C2, kh, kw = ws
    if s is None or p is None or C2 != C or min(C, H, W, K, kh, kw) < 1 \
            or max(xs + ws) >= 2**31 or N < 0:
        return None
    if H + 2 * p[0] < kh or W + 2 * p[1] < kw or not 0 <= chunk <= max(N, 1):
        return None
    return (H + 2 * p[0] - kh) // s[0] + 1, (W + 2 * p[1] - kw) // s[1] + 1


@fuzz(240, conv_case(), st.data())
def test_conv2d(case, data):
    draw = data.draw
    xs, ws, stride, padding, chunk = case
    geo = conv_geometry(xs, ws, stride, padding, chunk)
    exc = refused(_core.conv2d_output_shape, xs, ws, stride, padding)
    if conv_geometry(xs, ws, stride, padding, 0) is None:
        assert exc is not None, case
        return
    assert exc is None, (case, exc)
    specials = draw(st.integers(0, 3)) == 0
    x, w = draw(odd_array(xs, specials)), draw(odd_array(ws, specials))
    b = draw(st.one_of(st.none(), odd_array((ws[0],), specials)))
    OH, OW = conv_geometry(xs, ws, stride, padding, 0)
    ys = (xs[0], ws[0], OH, OW)
    need = _core.conv2d_workspace_len(xs, ws, stride, padding, 0 if geo is None else chunk)
    wlen = need if draw(st.integers(0, 9)) else max(need - 1, 0)
    workspace = draw(odd(np.zeros(wlen, np.float32)))
    geo_ok = geo is not None and np.size(workspace) >= need
    s = stride if isinstance(stride, tuple) else (stride, stride)
    p = padding if isinstance(padding, tuple) else (padding, padding)
    if draw(st.booleans()):
        out = draw(odd_array(ys))
        ok = (geo_ok and accepted(x) and accepted(w) and (b is None or accepted(b))
              and accepted(out, writable=True) and accepted(workspace, writable=True))
        x64, w64 = f64(x), f64(w)
        b64 = None if b is None else f64(b)
        if run(draw, _core.conv2d_forward, (x, w, b, out, workspace, stride, padding, chunk),
               ok) is None and moderate(x, w, 0 if b is None else b):
            ref = conv64(x64, w64, b64, s, p)
            bound = conv64(np.abs(x64), np.abs(w64), None if b is None else np.abs(b64), s, p)
            assert np.all(np.abs(f64(out) - ref) <= 1e-5 * (ws[1] * ws[2] * ws[3] + 2) * bound
                          + 1e-30), "conv2d_forward: wrong values"
        return
    dy = draw(odd_array(ys, specials))
    dw = draw(odd_array(ws if draw(st.integers(0, 9)) else ws[:3] + (ws[3] + 1,)))
    db = draw(st.one_of(st.none(), odd_array((ws[0],))))
    dx = draw(st.one_of(st.none(), odd_array(xs)))
    beta = draw(st.sampled_from([0.0, 1.0]))
    outs = [a for a in (dw, db, dx) if a is not None]
    ok = (geo_ok and all(accepted(a) for a in (dy, x, w))
          and all(accepted(a, writable=True) for a in outs + [workspace])
          and np.shape(dw) == ws)
    dw0 = f64(dw)
    db0 = None if db is None else f64(db)
    if run(draw, _core.conv2d_backward, (dy, x, w, dw, db, dx, workspace, stride, padding, beta,
                                         chunk), ok) is None and moderate(dy, x, w, dw0):
        x64, w64, dy64 = f64(x), f64(w), f64(dy)
        rdw, rdb, rdx = conv64_backward(dy64, x64, w64, s, p)
        adw, adb, adx = conv64_backward(np.abs(dy64), np.abs(x64), np.abs(w64), s, p)
        terms = xs[0] * OH * OW + 2
        assert np.all(np.abs(f64(dw) - (rdw + beta * dw0)) <= 1e-5 * terms * (adw + np.abs(dw0))
                      + 1e-30), "conv2d_backward: wrong dw"
        if db is not None and moderate(db0):
            assert np.all(np.abs(f64(db) - (rdb + beta * db0))
                          <= 1e-5 * terms * (adb + np.abs(db0)) + 1e-30), "wrong db"
        if dx is not None:
            assert np.all(np.abs(f64(dx) - rdx) <= 1e-5 * (ws[0] * ws[2] * ws[3] + 2) * adx
                          + 1e-30), "conv2d_backward: wrong dx"


# ---- geometry helpers with extreme integers ----------------------------------------

EXTREME = [0, 1, 2, 3, -1, 2**31 - 1, 2**31, 2**62, 2**63 - 1, -(2**63), 2**63, 2**64]


@fuzz(110, st.lists(st.sampled_from(EXTREME), min_size=8, max_size=8), st.integers(0, 2))
def test_geometry_extremes(v, which):
    """Shapes alone (no arrays): extreme integers give the right sizes or a
    refusal, exactly when they should."""
    if which == 0:
        H, W, kh, kw, sh, sw = v[:6]
        valid = max(v[:6]) < 2**63 and min(v[:6]) >= 1 and kh <= H and kw <= W
        exc = run(None, _core.pool2d_out_size, v[:6], valid)
        if exc is None:
            assert _core.pool2d_out_size(*v[:6]) == ((H - kh) // sh + 1, (W - kw) // sw + 1)
    else:
        fn = _core.conv2d_output_shape if which == 1 else _core.conv2d_workspace_len
        xs, ws = tuple(v[:4]), (v[4], v[1], v[5], v[6])
        stride = v[7] or 1
        geo = conv_geometry(xs, ws, stride, 0, 0) if max(v) < 2**63 else None
        if geo is not None:  # the C core's size limits (sn_conv2d_init)
            (N, C, H, W), (K, _, kh, kw), (OH, OW) = xs, ws, geo
            mul = lambda a, b: -1 if a < 0 or b < 0 or (a and b > 2**62 // a) else a * b  # noqa
            ckk = mul(mul(C, kh), kw)
            per_image = mul(-1 if ckk < 0 else ckk + K, mul(OH, OW))
            if min(per_image, mul(mul(N, C), mul(H, W)), mul(mul(N, K), mul(OH, OW)),
                   mul(K, mul(C, kh * kw))) < 0:
                geo = None
        exc = run(None, fn, (xs, ws, stride, 0), geo is not None)
        if exc is None and which == 1:
            assert fn(xs, ws, stride, 0) == (xs[0], ws[0]) + geo
        if exc is None and which == 2:
            assert 0 <= fn(xs, ws, stride, 0) < 2**63


# ---- pooling ------------------------------------------------------------------------

def windows64(x, kernel, stride):
    """(N, C, Ho, Wo, kh*kw) windows of x, row-major inside each window, and
    their flat indices in the H x W plane."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    i = (np.arange(Ho)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None])
    j = (np.arange(Wo)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :])
    idx = (i * W + j).reshape(Ho, Wo, kh * kw)
    return x.reshape(N, C, H * W)[:, :, idx], idx


@fuzz(240, st.data())
def test_pools(data):
    draw = data.draw
    name = draw(st.sampled_from(["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward",
                                 "avgpool2d_backward", "global_avgpool_forward",
                                 "global_avgpool_backward"]))
    xs = (draw(dims(0, 2)), draw(dims(0, 3)),
          *(draw(dims(1, 5)) if draw(st.integers(0, 9)) else 0 for _ in range(2)))
    odd_k = [0, -1, 7, 2**40, 2**63]
    kernel = tuple(draw(st.integers(1, 3)) if draw(st.integers(0, 9)) else
                   draw(st.sampled_from(odd_k)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 3)) if draw(st.integers(0, 9)) else
                   draw(st.sampled_from(odd_k)) for _ in range(2))
    if draw(st.integers(0, 19)) == 0:
        kernel = kernel[:1]
    N, C, H, W = xs
    fits = (len(kernel) == 2 and min(kernel + stride) >= 1 and H >= 1 and W >= 1
            and kernel[0] <= H and kernel[1] <= W and max(kernel + stride) < 2**63)
    ys = (N, C, (H - kernel[0]) // stride[0] + 1, (W - kernel[-1]) // stride[1] + 1) if fits \
        else (N, C, 1, 1)
    fn = getattr(_core, name)
    x = draw(odd_array(xs))
    with np.errstate(all="ignore"):
        if name.startswith("global"):
            y = draw(odd_array((N, C) if draw(st.integers(0, 9)) else (N, C + 1)))
            if name.endswith("forward"):
                ok = (accepted(x) and x.ndim == 4 and accepted(y, writable=True)
                      and y.shape == (N, C) and (N * C == 0 or H * W > 0))
                if run(draw, fn, (x, y), ok) is None and N * C:
                    assert_close(y, f64(x).mean(axis=(2, 3)), rtol=1e-6, atol=1e-37, what=name)
            else:
                ok = (accepted(y) and accepted(x, writable=True) and x.ndim == 4
                      and y.shape == (N, C) and (N * C == 0 or H * W > 0)
                      and not np.may_share_memory(x, y))
                if run(draw, fn, (y, x), ok) is None and N * C:
                    ref = np.broadcast_to((f64(y) / (H * W))[:, :, None, None], xs)
                    assert_close(x, ref, rtol=1e-6, atol=1e-37, what=name)
            return
        if name == "maxpool2d_forward":
            y = draw(odd_array(ys))
            arg = draw(odd(np.zeros(ys, np.int32)))
            ok = (fits and accepted(x) and accepted(y, writable=True)
                  and accepted(arg, np.int32, writable=True) and y.shape == ys
                  and arg.shape == ys)
            if run(draw, fn, (x, y, arg, kernel, stride), ok) is None and x.size:
                win, idx = windows64(f64(x), kernel, stride)
                nan = np.isnan(win)
                pos = np.where(nan.any(-1), nan.argmax(-1),
                               np.where(np.isnan(win), -np.inf, win).argmax(-1))
                ref = np.take_along_axis(win, pos[..., None], -1)[..., 0]
                assert_close(y, ref, rtol=0, atol=0, what=name)
                at = np.broadcast_to(idx, (N, C) + idx.shape)
                assert (arg == np.take_along_axis(at, pos[..., None], -1)[..., 0]).all()
            return
        if name == "maxpool2d_backward":
            dy = draw(odd_array(ys))
            hw = H * W
            a = np.array([draw(st.integers(0, max(hw - 1, 0))) if draw(st.integers(0, 19))
                          else draw(st.sampled_from([-1, hw, 2**31 - 1]))
                          for _ in range(int(np.prod(ys)))], np.int32).reshape(ys)
            arg = draw(odd(a))
            dx = draw(odd_array(xs))
            ok = (accepted(dy) and accepted(arg, np.int32) and accepted(dx, writable=True)
                  and dy.ndim == 4 and arg.shape == ys and dx.shape == xs
                  and not np.may_share_memory(dx, dy) and not np.may_share_memory(dx, arg)
                  and (N * C == 0 or bool(((a >= 0) & (a < hw)).all())))
            if run(draw, fn, (dy, arg, dx), ok) is None and N * C:
                ref = np.zeros((N * C, hw))
                for p in range(N * C):
                    np.add.at(ref[p], a.reshape(N * C, -1)[p], f64(dy).reshape(N * C, -1)[p])
                assert_close(f64(dx).reshape(N * C, hw), ref, rtol=1e-5, atol=1e-37,
                             skip=np.broadcast_to(~np.isfinite(ref).all() | ~moderate(dy),
                                                  ref.shape), what=name)
            return
        if name == "avgpool2d_forward":
            y = draw(odd_array(ys))
            ok = fits and accepted(x) and accepted(y, writable=True) and y.shape == ys
            if run(draw, fn, (x, y, kernel, stride), ok) is None and x.size:
                win, _ = windows64(f64(x), kernel, stride)
                ref = win.mean(-1).reshape(ys)
                assert_close(y, ref, rtol=1e-6, atol=1e-37, skip=huge(ref) | ~np.isfinite(ref),
                             what=name)
            return
        dy = draw(odd_array(ys))
        ok = (fits and accepted(dy) and accepted(x, writable=True) and dy.shape == ys
              and not np.may_share_memory(x, dy))
        if run(draw, fn, (dy, x, kernel, stride), ok) is None and x.size:
            _, idx = windows64(np.zeros(xs), kernel, stride)
            ref = np.zeros((N, C, H * W))
            g = f64(dy).reshape(N, C, -1) / (kernel[0] * kernel[1])
            for o in range(idx.shape[0] * idx.shape[1]):
                ref[:, :, idx.reshape(-1, idx.shape[-1])[o]] += g[:, :, o:o + 1]
            assert_close(f64(x).reshape(N, C, -1), ref, rtol=1e-5, atol=1e-37,
                         skip=np.broadcast_to(~moderate(dy), ref.shape), what=name)


# ---- batch normalisation ----------------------------------------------------------

@fuzz(160, st.data())
def test_batchnorm(data):
    draw = data.draw
    N, C, S = (draw(dims(1, 3)) if draw(st.integers(0, 9)) else 0 for _ in range(3))
    training = draw(st.booleans())
    specials = draw(st.integers(0, 3)) == 0
    x = draw(odd_array((N, C, S), specials))
    def vec():
        return draw(odd_array((C,) if draw(st.integers(0, 29)) else (C + 1,), specials))
    with np.errstate(all="ignore"):
        if draw(st.booleans()):
            eps = float(np.float32(draw(st.sampled_from([1e-5] * 5 + [0.1, 0.0, -1.0, 1e-50]))))
            momentum = float(draw(st.sampled_from([0.1] * 5 + [0.0, 1.0, 1.5, -0.1, np.nan])))
            y = draw(odd_array((N, C, S)))
            weight, bias, mean, invstd, rmean, rvar = (vec() for _ in range(6))
            rvar = np.abs(rvar) if isinstance(rvar, np.ndarray) and rvar.dtype == np.float32 \
                and rvar.flags.writeable else rvar
            chans = [weight, bias, mean, invstd, rmean, rvar]
            ok = (accepted(x) and min(N, C, S) >= 1 and (not training or N * S >= 2)
                  and eps > 0 and 0 <= momentum <= 1 and accepted(y, writable=True)
                  and y.shape == (N, C, S) and all(np.size(v) == C for v in chans)
                  and all(accepted(v) for v in (weight, bias))
                  and all(accepted(v, writable=True) for v in (mean, invstd))
                  and all(accepted(v, writable=training) for v in (rmean, rvar)))
            x64, g, b, rm0, rv0 = f64(x), f64(weight), f64(bias), f64(rmean), f64(rvar)
            if run(draw, _core.batchnorm_forward, (x, y, weight, bias, mean, invstd, rmean,
                                                   rvar, eps, momentum, training), ok) is None \
                    and not specials:
                n = N * S
                if training:
                    mu, var = x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))
                    rm = (1 - momentum) * rm0 + momentum * mu
                    rv = (1 - momentum) * rv0 + momentum * var * n / (n - 1)
                    assert_close(rmean, rm, atol=1e-6, what="running_mean")
                    assert_close(rvar, rv, atol=1e-6, what="running_var")
                else:
                    mu, var = rm0, rv0
                inv = 1.0 / np.sqrt(var + eps)
                scale = (g * inv)[None, :, None]
                ref = (x64 - mu[None, :, None]) * scale + b[None, :, None]
                tol = 1e-5 * (np.abs(x64 * scale) + np.abs(mu[None, :, None] * scale)
                              + np.abs(b[None, :, None])) + 1e-30
                assert np.all(np.abs(f64(y) - ref) <= tol), "batchnorm_forward: wrong y"
                assert_close(mean, mu, rtol=1e-5, atol=1e-6, what="save_mean")
                assert_close(invstd, inv, rtol=1e-5, what="save_invstd")
        else:
            dy = draw(odd_array((N, C, S), specials))
            dx = draw(odd_array((N, C, S)))
            weight, mean, invstd, dweight, dbias = (vec() for _ in range(5))
            chans = [weight, mean, invstd, dweight, dbias]
            ok = (accepted(x) and min(N, C, S) >= 1 and accepted(dy) and dy.shape == x.shape
                  and accepted(dx, writable=True) and dx.shape == x.shape
                  and all(np.size(v) == C for v in chans)
                  and all(accepted(v) for v in (weight, mean, invstd))
                  and all(accepted(v, writable=True) for v in (dweight, dbias)))
            if run(draw, _core.batchnorm_backward, (dy, x, weight, mean, invstd, dx, dweight,
                                                    dbias, training), ok) is None \
                    and not specials:
                x64, dy64 = f64(x), f64(dy)
                mu, inv, g = f64(mean)[None, :, None], f64(invstd)[None, :, None], \
                    f64(weight)[None, :, None]
                xhat = (x64 - mu) * inv
                sdy, sdyx = dy64.sum(axis=(0, 2)), (dy64 * xhat).sum(axis=(0, 2))
                mag = (np.abs(dy64) * (1 + np.abs(xhat))).sum(axis=(0, 2))
                assert np.all(np.abs(f64(dbias) - sdy) <= 1e-5 * mag + 1e-30), "dbias"
                assert np.all(np.abs(f64(dweight) - sdyx) <= 1e-5 * mag + 1e-30), "dweight"
                n = N * S
                ref = g * inv * dy64
                if training:
                    ref = g * inv * (dy64 - (sdy / n)[None, :, None]
                                     - xhat * (sdyx / n)[None, :, None])
                tol = 1e-5 * np.abs(g * inv) * (np.abs(dy64) + (mag / n)[None, :, None]
                                                * (1 + np.abs(xhat))) + 1e-30
                assert np.all(np.abs(f64(dx) - ref) <= tol), "batchnorm_backward: wrong dx"


# ---- dense, bias, optimizer steps, augmentation -------------------------------------

@fuzz(130, st.data())
def test_dense_and_bias(data):
    draw = data.draw
    M, K, N = draw(dims(0, 4)), draw(dims(0, 4)), draw(dims(0, 4))
    name = draw(st.sampled_from(["dense_forward", "bias_add", "bias_grad"]))
    specials = draw(st.integers(0, 3)) == 0
    bshape = (N,) if draw(st.integers(0, 9)) else (N + 1,)
    with np.errstate(all="ignore"):
        if name == "dense_forward":
            x, W = draw(odd_array((M, K), specials)), draw(odd_array((K, N), specials))
            b, out = draw(odd_array(bshape, specials)), draw(odd_array((M, N)))
            act = draw(st.sampled_from(["none", "relu", "leaky_relu", "sigmoid", "tanh", "soft"]))
            ok = (all(accepted(a) for a in (x, W, b)) and accepted(out, writable=True)
                  and act != "soft" and x.ndim == 2 and W.ndim == 2 and b.shape == (N,))
            x64, W64, b64 = f64(x), f64(W), f64(b)
            if run(draw, _core.dense_forward, (x, W, b, out, act, 0.1), ok) is None \
                    and moderate(x, W, b):
                z = x64 @ W64 + b64
                ref = {"none": z, "relu": relu64(z), "sigmoid": sigmoid64(z), "tanh": np.tanh(z),
                       "leaky_relu": np.where(z > 0, z, np.float32(0.1) * z)}[act]
                tol = 1e-5 * (K + 2) * (np.abs(x64) @ np.abs(W64) + np.abs(b64)) + 1e-30
                assert np.all(np.abs(f64(out) - ref) <= tol), f"dense_forward {act}: wrong"
        elif name == "bias_add":
            y, b = draw(odd_array((M, N), specials)), draw(odd_array(bshape, specials))
            ok = accepted(y, writable=True) and accepted(b) and y.ndim == 2 and b.shape == (N,)
            ref = f64(y) + f64(b)[None, :] if ok else None
            if run(draw, _core.bias_add, (y, b), ok) is None:
                assert_close(y, ref, rtol=1e-6, atol=1e-37, what=name)
        else:
            dy, db = draw(odd_array((M, N), specials)), draw(odd_array(bshape))
            beta = draw(st.sampled_from([0.0, 1.0]))
            ok = accepted(dy) and accepted(db, writable=True) and dy.ndim == 2 and db.shape == (N,)
            db0 = f64(db)
            if run(draw, _core.bias_grad, (dy, db, beta), ok) is None \
                    and moderate(dy, db0 if beta else 0):
                ref = (beta * db0 if beta else 0) + f64(dy).sum(axis=0)  # beta 0: db not read
                tol = 1e-5 * (M + 2) * (np.abs(f64(dy)).sum(axis=0)
                                        + (np.abs(db0) if beta else 0)) + 1e-30
                assert np.all(np.abs(f64(db) - ref) <= tol), "bias_grad: wrong"


@fuzz(110, st.data())
def test_optimizer_steps(data):
    draw = data.draw
    n = draw(dims(0, 5))
    name = draw(st.sampled_from(["sgd_step", "adagrad_step", "rmsprop_step", "adam_step"]))
    p = draw(odd_array((n,) if draw(st.integers(0, 9)) else (n + 1,)))
    g = draw(odd_array((n,)))
    states = [None if draw(st.integers(0, 5)) == 0 else draw(odd_array((n,))) for _ in range(3)]
    core = accepted(p, writable=True) and accepted(g) and np.size(p) == n
    state_ok = [s is None or (accepted(s, writable=True) and s.size == n) for s in states]
    fn = getattr(_core, name)
    with np.errstate(all="ignore"):
        if name == "sgd_step":
            momentum = draw(st.sampled_from([0.0, 0.9]))
            ok = core and state_ok[0] and (momentum == 0 or states[0] is not None)
            p0, g0 = f64(p), f64(g)
            if run(draw, fn, (p, g, states[0], 0.1, momentum), ok) is None and n \
                    and momentum == 0:
                # an infinite parameter: only a non-finite result (the kernel adds
                # weight_decay * p even when weight_decay is 0, so inf becomes NaN)
                assert_close(p, p0 - np.float32(0.1) * g0, atol=1e-37,
                             skip=huge(p0, g0) | ~np.isfinite(p0), what=name)
                assert not np.isfinite(f64(p)[~np.isfinite(p0)]).any()
        elif name == "adagrad_step":
            ok = core and state_ok[0] and (n == 0 or states[0] is not None)
            run(draw, fn, (p, g, states[0], 0.1), ok)
        elif name == "rmsprop_step":
            centered, momentum = draw(st.booleans()), draw(st.sampled_from([0.0, 0.9]))
            ok = core and all(state_ok) and (n == 0 or (
                states[0] is not None and (not centered or states[1] is not None)
                and (momentum == 0 or states[2] is not None)))
            run(draw, fn, (p, g, *states, 0.01), ok, momentum=momentum, centered=centered)
        else:
            step = draw(st.sampled_from([1, 1, 1, 2, 0, -1]))
            ok = core and all(state_ok[:2]) and step >= 1 and (
                n == 0 or (states[0] is not None and states[1] is not None))
            run(draw, fn, (p, g, states[0], states[1], 0.01, step), ok)


@fuzz(100, st.data())
def test_augmentation(data):
    draw = data.draw
    N = draw(dims(0, 3))
    C, H, W = (draw(dims(1, 4)) if draw(st.integers(0, 9)) else 0 for _ in range(3))
    x, y = draw(odd_array((N, C, H, W))), draw(odd_array((N, C, H, W)))
    name = draw(st.sampled_from(["shift2d", "flip2d", "random_shifts", "random_flips"]))
    dshape = (N, 2) if name in ("shift2d", "random_shifts") else (N,)
    if draw(st.integers(0, 9)) == 0:
        dshape = (N + 1,) + dshape[1:]
    big = [0, 1, -1, 3, -3, 2**31 - 1, -(2**31)]
    raw = np.array([draw(st.sampled_from(big)) for _ in range(int(np.prod(dshape)))],
                   np.int32).reshape(dshape)
    draws = draw(odd(raw))
    want = (N, 2) if name in ("shift2d", "random_shifts") else (N,)
    if name.startswith("random"):
        pixels = draw(st.sampled_from([0, 1, 3, -1, 2**30, 2**62]))
        ok = accepted(draws, np.int32, writable=True) and draws.ndim == len(want)
        if name == "random_shifts":
            ok = (ok and draws.shape[1] == 2 and 0 <= pixels
                  and (len(draws) == 0 or pixels <= (2**31 - 1) // 2))
            if run(draw, _core.random_shifts, (draws, pixels, 5), ok) is None:
                assert np.all(np.abs(draws) <= pixels)
        elif run(draw, _core.random_flips, (draws, 5), ok) is None:
            assert np.isin(draws, [0, 1]).all()
        return
    ok = (accepted(x) and x.ndim == 4 and accepted(y, writable=True) and y.shape == x.shape
          and accepted(draws, np.int32) and draws.shape == want
          and (N == 0 or min(C, H, W) >= 1))
    adjoint = draw(st.booleans())
    x64 = f64(x)
    args = (x, y, draws, adjoint) if name == "shift2d" else (x, y, draws)
    if run(draw, getattr(_core, name), args, ok) is None and N:
        ref = np.zeros_like(x64)
        for b in range(N):
            if name == "flip2d":
                ref[b] = x64[b, :, :, ::-1] if raw[b] else x64[b]
                continue
            sy, sx = (-int(v) if adjoint else int(v) for v in raw[b])
            for i in range(H):
                for j in range(W):
                    if 0 <= i - sy < H and 0 <= j - sx < W:
                        ref[b, :, i, j] = x64[b, :, i - sy, j - sx]
        assert_close(y, ref, rtol=0, what=name)


@fuzz(90, st.data())
def test_mlp_object(data):
    """The C network of the fused path (_core.MLP), built from odd arrays, then
    predict, and train with an odd optimizer set-up."""
    draw = data.draw
    sizes = [draw(dims(1, 4)) for _ in range(draw(st.integers(1, 3)) + 1)]
    if draw(st.integers(0, 19)) == 0:
        sizes[draw(st.integers(0, len(sizes) - 1))] = 0
    layers = []
    for i in range(len(sizes) - 1):
        W = draw(values((sizes[i], sizes[i + 1]), False))
        b = draw(values((sizes[i + 1],), False))
        layers.append([W, b, np.zeros_like(W), np.zeros_like(b),
                       draw(st.sampled_from(["relu", "none", "tanh"])), 0.0,
                       draw(st.sampled_from([0.0, 0.5]))])
    if draw(st.integers(0, 3)) == 0:  # one odd argument
        layer, k = draw(st.sampled_from(layers)), draw(st.integers(0, 6))
        layer[k] = (draw(odd(layer[k])) if k < 4 else
                    draw(st.sampled_from(["bogus", None, 1, -1.0, 1.0, float("nan")])))
    layers = [tuple(layer) for layer in layers]
    max_batch = draw(st.sampled_from([1, 4, 4, 0]))
    train = draw(st.booleans())
    try:
        net = _core.MLP(layers, max_batch, train)
    except REFUSALS as exc:
        assert str(exc)
        return
    X = draw(odd_array((draw(dims(0, 5)), sizes[0]), draw(st.integers(0, 4)) == 0, MOSTLY_C))
    ok = (accepted(X) and X.ndim == 2 and X.shape[0] > 0 and X.shape[1] == sizes[0]
          and bool(np.isfinite(X).all()))
    if run(draw, net.predict, (X,), ok) is None:
        z, bound = f64(X), np.abs(f64(X))
        for W, b, _, _, act, _, _ in layers:  # inference: no dropout
            z, bound = z @ f64(W) + f64(b), bound @ np.abs(f64(W)) + np.abs(f64(b))
            z = {"relu": relu64, "tanh": np.tanh, "none": lambda v: v}[act](z)
        pred = net.predict(X)
        assert pred.shape == (X.shape[0], sizes[-1])
        if moderate(X):  # (float32 may overflow where float64 does not)
            assert np.all(np.abs(pred - z) <= 1e-4 * bound + 1e-30), "MLP.predict: wrong values"
    if not train:
        return
    kind = draw(st.sampled_from(["sgd", "adam", "rmsprop", "adagrad", "bogus"]))
    hyper = {"lr": 0.01, "momentum": draw(st.sampled_from([0.0, 0.9])),
             "centered": draw(st.booleans())}
    states = [[draw(st.one_of(st.none(), odd(np.zeros(np.size(arr), np.float32), MOSTLY_C)))
               for _ in range(draw(st.integers(0, 3)))]
              for W, b, *_ in layers for arr in (W, b)]
    if refused(net.set_optimizer, kind, hyper, states, 0, 0) is not None:
        return
    n = draw(dims(0, 5))
    Xt = draw(odd_array((n, sizes[0]), specials=False))
    mostly = lambda hi: draw(st.integers(0, hi - 1) if hi > 0 and draw(  # noqa: E731
        st.integers(0, 9)) else st.sampled_from([-1, hi]))
    labels = np.array([mostly(sizes[-1]) for _ in range(n)], np.int64)
    order = np.array([mostly(n) for _ in range(draw(dims(0, 6)))], np.int64)
    exc = refused(net.train, Xt, labels, order, draw(st.sampled_from([1, 2, 4, 0])))
    assert exc is None or isinstance(exc, REFUSALS)


# ---- the public API ------------------------------------------------------------

MODELS = {
    # name: (layers, an input shape per sample, which sample shapes the model takes)
    "mlp": (lambda: [sn.Dense(3, 4, seed=0), sn.ReLU(), sn.Dense(4, 3, seed=1)], (3,),
            lambda s: s == (3,)),
    "cnn": (lambda: [sn.Conv2D(1, 2, 2, seed=0), sn.ReLU(), sn.MaxPool2D(2), sn.Flatten(),
                     sn.Dense(8, 3, seed=1)], (1, 5, 5),
            lambda s: len(s) == 3 and s[0] == 1 and min(s) >= 1
            and ((s[1] - 1) // 2) * ((s[2] - 1) // 2) == 4),
    "bn": (lambda: [sn.Conv2D(1, 2, 3, padding=1, seed=0), sn.BatchNorm2d(2), sn.AvgPool2D(2),
                    sn.GlobalAvgPool2D(), sn.Dense(2, 3, seed=1)], (1, 4, 4),
           lambda s: len(s) == 3 and s[0] == 1 and min(s[1:]) >= 2),
}


def logits64(model, X):
    """float64 outputs of the "mlp" and "cnn" models (None for others)."""
    z = f64(X)
    for layer in model.layers:
        if isinstance(layer, sn.Dense):
            z = z @ f64(layer.weight.data) + f64(layer.bias.data)
        elif isinstance(layer, sn.ReLU):
            z = relu64(z)
        elif isinstance(layer, sn.Conv2D):
            z = conv64(z, f64(layer.weight.data), f64(layer.bias.data), layer.stride,
                       layer.padding)
        elif isinstance(layer, sn.MaxPool2D):
            win, _ = windows64(z, layer.kernel_size, layer.stride)
            z = win.max(-1)
        elif isinstance(layer, sn.Flatten):
            z = z.reshape(len(z), -1)
        else:
            return None
    return z


def as_user_input(x):
    """What the Python layer should make of x: a float32 array, or None when
    it must refuse it (not numbers, complex, not finite)."""
    try:
        arr = np.asarray(x)
    except ValueError:
        return None
    if arr.dtype.kind not in "biuf":
        return None
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32)
    return arr if np.isfinite(arr).all() else None


def labels_ok(y, n):
    """Whether y holds n class labels of a 3-class model: integers (or whole
    floats) in [0, 3)."""
    ya = np.asarray(y)
    if ya.shape != (n,) or ya.dtype.kind not in "biuf":
        return False
    if ya.dtype.kind == "f" and not np.all(np.isfinite(ya) & (ya == np.round(ya))):
        return False
    return bool(np.all((ya >= 0) & (ya < 3)))


@st.composite
def model_inputs(draw, in_shape):
    n = draw(dims(1, 4)) if draw(st.integers(0, 9)) else 0
    shape = (n,) + in_shape
    r = draw(st.integers(0, 11))
    if r == 0:
        shape = shape[1:]                      # one sample, no batch axis
    elif r == 1:
        shape = shape[:-1] + (shape[-1] + 1,)  # a wrong size
    elif r == 2:
        shape = shape + (1,)                   # one axis too many
    specials = draw(st.integers(0, 4)) == 0
    return draw(odd_array(shape, specials, ["c"] * 3 + ODD_LAYOUTS))


@st.composite
def model_case(draw, kind):
    """(a new model of this kind, odd input X, what X should become (None:
    refused), the model's sample shape, which sample shapes it takes)."""
    layers, in_shape, fits = MODELS[kind]
    X = draw(model_inputs(in_shape))
    return sn.Sequential(*layers()), X, as_user_input(X), in_shape, fits


@st.composite
def class_labels(draw, n):
    """n labels of a 3-class model, one in ten out of range, perhaps odd."""
    return draw(odd(np.array([draw(st.integers(0, 2)) if draw(st.integers(0, 9)) else
                              draw(st.sampled_from([-1, 3])) for _ in range(n)], np.int64)))


@contextlib.contextmanager
def fused_path(enabled):
    """Sequential's fused C path on or off (as SCRATCHNET_FUSED would)."""
    from scratchnet import _fused

    old, _fused.ENABLED = _fused.ENABLED, enabled
    try:
        yield
    finally:
        _fused.ENABLED = old


@fuzz(250, st.sampled_from(sorted(MODELS)), st.booleans(), st.data())
def test_sequential_inference(kind, fused, data):
    """predict, predict_proba, predict_logits and evaluate on odd inputs."""
    draw = data.draw
    model, X, arr, in_shape, fits = draw(model_case(kind))
    method = draw(st.sampled_from(["predict", "predict_proba", "predict_logits", "evaluate"]))
    single = arr is not None and kind == "mlp" and arr.shape == in_shape
    ok = arr is not None and (single or (arr.ndim >= 2 and len(arr) > 0 and fits(arr.shape[1:])))
    n = 1 if single else (len(arr) if ok else 0)
    args = (X,)
    if method == "evaluate":
        y = draw(class_labels(n))
        if draw(st.integers(0, 9)) == 0:
            y = draw(odd_array((n,)))  # floats: whole numbers in range only
        ok = ok and labels_ok(y, n)
        args = (X, y)
    with fused_path(fused):
        exc = refused(getattr(model, method), *args)
        if not ok:
            assert exc is not None, f"{method} accepted {X!r}"
            return
        if exc is not None:  # only the outputs of huge inputs may overflow
            assert not moderate(arr) and isinstance(exc, (ValueError, FloatingPointError)), exc
            return
        out = getattr(model, method)(*args)
    ref = logits64(model, arr.reshape((n,) + arr.shape[1:]) if not single else arr[None])
    if method == "evaluate":
        assert 0 <= out["accuracy"] <= 1
        if ref is not None and moderate(arr):
            want = xent64(ref, np.asarray(args[1]).astype(np.int64))
            assert abs(out["loss"] - want) <= 1e-4 * (1 + abs(want)), (out, want)
        return
    rows = {"predict": (n,), "predict_proba": (n, 3), "predict_logits": (n, 3)}[method]
    assert np.shape(out) == rows
    if ref is None or not moderate(arr):
        return
    tol = 1e-4 * (1 + np.abs(ref).max())
    if method == "predict_logits":
        assert np.all(np.abs(out - ref) <= tol)
    elif method == "predict_proba":
        p = np.exp(ref - ref.max(1, keepdims=True))
        assert np.all(np.abs(out - p / p.sum(1, keepdims=True)) <= 1e-4)
    else:
        close = np.sort(ref, axis=1)[:, -1] - np.sort(ref, axis=1)[:, -2] <= tol
        assert np.all((out == ref.argmax(1)) | close)


@fuzz(110, st.sampled_from(sorted(MODELS)), st.booleans(), st.data())
def test_sequential_fit(kind, fused, data):
    """fit on odd data, with odd batch sizes, losses and optimizers."""
    draw = data.draw
    model, X, arr, in_shape, fits = draw(model_case(kind))
    ok = arr is not None and arr.ndim >= 2 and len(arr) > 0 and fits(arr.shape[1:])
    n = len(arr) if ok else 0
    y = draw(class_labels(n))
    ok = ok and labels_ok(y, n)
    batch_size = draw(st.sampled_from([1, 2, 32, 0, -1, 2.5, True]))
    ok = ok and type(batch_size) is int and batch_size > 0
    opt_kind = draw(st.sampled_from(["sgd", "adam", "rmsprop", "not an optimizer"]))
    lr = draw(st.sampled_from([0.01, 0.01, 1e30, 0.0]))
    try:
        opt = {"sgd": lambda: sn.SGD(model.parameters(), lr=lr, momentum=0.9),
               "adam": lambda: sn.Adam(model.parameters(), lr=lr),
               "rmsprop": lambda: sn.RMSProp(model.parameters(), lr=lr),
               "not an optimizer": lambda: "sgd"}[opt_kind]()
    except REFUSALS:
        return
    ok = ok and opt_kind != "not an optimizer"
    with fused_path(fused):
        exc = refused(model.fit, X, y, opt, epochs=1, batch_size=batch_size, verbose=0, seed=0)
        if ok and exc is not None:
            # a batch of one for batch norm, or training that diverged
            assert isinstance(exc, (ValueError, FloatingPointError)), exc
            assert lr > 1 or not moderate(arr), exc
            return
        if not ok:
            assert exc is not None, f"fit accepted X={X!r}, y={y!r}"
            return
        # the trained model answers, or says its weights are not finite
        exc = refused(model.predict, arr)
        assert exc is None or isinstance(exc, ValueError), exc


ODD_ARGS = [0, 1, 2, 3, -1, 2.0, 1.5, -0.5, 0.5, "2", None, True, np.nan, np.inf, 2**40, 2**63,
            2**70, (2, 2), (1, 2, 3), [2], (), 1e-300, np.int64(2)]
CONSTRUCTORS = {
    "Dense": (sn.Dense, 2), "Conv2D": (sn.Conv2D, 5), "MaxPool2D": (sn.MaxPool2D, 2),
    "AvgPool2D": (sn.AvgPool2D, 2), "BatchNorm1d": (sn.BatchNorm1d, 3),
    "BatchNorm2d": (sn.BatchNorm2d, 3), "Dropout": (sn.Dropout, 1), "LeakyReLU": (sn.LeakyReLU, 1),
    "Reshape": (sn.Reshape, 3), "RandomShift": (sn.RandomShift, 1),
}


def is_size(v):
    """A positive integer as the layers take it (a bool is not one)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1


def is_size_pair(v):
    return is_size(v) or (isinstance(v, (tuple, list)) and len(v) == 2
                          and all(is_size(e) for e in v))


def is_real(v, lo, hi, lo_open=False):
    return (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
            and (lo < v if lo_open else lo <= v) and v <= hi)


def as_float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def reshape_ok(a):
    dims = tuple(a[0]) if len(a) == 1 and isinstance(a[0], (tuple, list)) else tuple(a)
    return (len(dims) > 0 and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                  and (d >= 1 or d == -1) for d in dims)
            and dims.count(-1) <= 1)


def bn_ok(a):
    return (len(a) >= 1 and is_size(a[0]) and (len(a) < 2 or is_real(a[1], 0, 1))
            and (len(a) < 3 or is_real(a[2], 0, np.inf, True)))


def pool_ok(a):
    return len(a) >= 1 and is_size_pair(a[0]) and (len(a) < 2 or a[1] is None
                                                   or is_size_pair(a[1]))


# whether the constructor must accept its arguments (None: not checked)
CONSTRUCTOR_OK = {
    "Dense": lambda a: len(a) == 2 and all(is_size(v) for v in a),
    "MaxPool2D": pool_ok, "AvgPool2D": pool_ok, "BatchNorm1d": bn_ok, "BatchNorm2d": bn_ok,
    "Dropout": lambda a: not a or (as_float(a[0]) is not None and 0 <= as_float(a[0]) < 1),
    # any finite real slope (not a bool or a string: a NaN one was taken)
    "LeakyReLU": lambda a: not a or (is_real(a[0], -np.inf, np.inf)
                                     and bool(np.isfinite(a[0]))),
    "Reshape": reshape_ok,
    "RandomShift": lambda a: len(a) == 1 and isinstance(a[0], (int, np.integer))
    and not isinstance(a[0], bool) and a[0] >= 0,
}


def small(args):
    """Whether every number in args is below 100 (a layer of that size fits
    in memory and a 6 x 6 image)."""
    flat = [e for v in args for e in (v if isinstance(v, (tuple, list)) else [v])]
    return all(not isinstance(e, (int, float, np.number)) or abs(e) < 100 for e in flat)


@fuzz(250, st.sampled_from(sorted(CONSTRUCTORS)), st.data())
def test_layer_constructors(name, data):
    """Layers built from odd arguments refuse exactly the invalid ones, and
    those they accept work on a batch."""
    draw = data.draw
    cls, n_args = CONSTRUCTORS[name]
    args = [draw(st.sampled_from([1, 2, 3, 0, -1]) if draw(st.booleans()) else
                 st.sampled_from(ODD_ARGS)) for _ in range(draw(st.integers(0, n_args)))]
    verdict = CONSTRUCTOR_OK.get(name, lambda a: None)(args)
    try:
        layer = cls(*args)
    except REFUSALS as exc:
        assert str(exc)
        assert verdict is not True or not small(args), f"{name}{tuple(args)} refused: {exc}"
        return
    assert verdict is not False, f"{name}{tuple(args)} accepted"
    if name in ("Dense",):
        x = np.ones((2, layer.in_features), np.float32)
    elif name in ("Conv2D",):
        x = np.ones((2, layer.in_channels, 6, 6), np.float32)
    elif name == "BatchNorm1d":
        x = np.arange(2.0 * layer.num_features, dtype=np.float32).reshape(2, -1)
    elif name == "BatchNorm2d":
        x = np.ones((2, layer.num_features, 3, 3), np.float32)
    else:
        x = np.arange(2 * 2 * 6 * 6, dtype=np.float32).reshape(2, 2, 6, 6)
    for training in (True, False):
        exc = refused(layer.forward, x, training=training)
        if exc is None:
            y = layer.forward(x, training=training)
            assert len(y) == 2
        elif verdict and small(args) and name not in ("Reshape", "MaxPool2D", "AvgPool2D"):
            raise AssertionError(f"{name}{tuple(args)}.forward refused a batch: {exc}")


def valid_model_bytes():
    import tempfile, pathlib  # noqa: E401

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "m.npz"
        model = sn.Sequential(*MODELS["cnn"][0]())
        model.loss = sn.CrossEntropy()
        model.save(path)
        return path.read_bytes()


VALID_MODEL = None


@fuzz(160, st.data())
def test_load_odd_files(tmp_path_factory, data):
    """sn.load on random bytes, truncated or changed model files, and model
    files with an odd architecture record: ModelFileError, never a crash."""
    global VALID_MODEL
    if VALID_MODEL is None:
        VALID_MODEL = valid_model_bytes()
    draw = data.draw
    how = draw(st.sampled_from(["random", "truncated", "flipped", "record"]))
    good = VALID_MODEL
    if how == "random":
        blob = draw(st.binary(max_size=300))
        if draw(st.booleans()):
            blob = b"PK\x03\x04" + blob
    elif how == "truncated":
        blob = good[:draw(st.integers(0, len(good) - 1))]
    elif how == "flipped":
        blob = bytearray(good)
        for _ in range(draw(st.integers(1, 4))):
            blob[draw(st.integers(0, len(blob) - 1))] ^= 1 << draw(st.integers(0, 7))
        blob = bytes(blob)
    else:
        blob = odd_record(draw, good)
    path = tmp_path_factory.mktemp("load") / "m.npz"
    path.write_bytes(blob)
    try:
        model = sn.load(path)
    except sn.ModelFileError as exc:
        assert str(path) in str(exc)
        return
    # what loads must work: predict on a batch of its input shape, or refuse
    exc = refused(model.predict, np.ones((2, 1, 5, 5), np.float32))
    assert exc is None or isinstance(exc, (ValueError, TypeError)), exc


JSON_ODD = [0, -1, 1, 3, 2**40, 2**63, 1.5, "x", None, True, [], [2, 2], {}, [0, 0], [-1, 2]]


def odd_record(draw, good):
    """good (an .npz) with its architecture record changed: a layer config
    value, a layer type, the format fields or the parameter arrays."""
    import io

    with np.load(io.BytesIO(good)) as f:
        arrays = {k: f[k] for k in f.files}
    arch = json.loads(arrays["__architecture__"].tobytes().decode())
    what = draw(st.sampled_from(["config", "type", "format", "array", "drop"]))
    layer = arch["layers"][draw(st.integers(0, len(arch["layers"]) - 1))]
    if what == "config" and layer["config"]:
        key = draw(st.sampled_from(sorted(layer["config"])))
        layer["config"][key] = draw(st.sampled_from(JSON_ODD))
    elif what == "type":
        layer["type"] = draw(st.sampled_from(["Dense", "Conv2D", "Nope", "Flatten", "__class__"]))
    elif what == "format":
        arch[draw(st.sampled_from(["format", "version", "layers", "loss"]))] = \
            draw(st.sampled_from(JSON_ODD))
    elif what in ("array", "drop"):
        key = draw(st.sampled_from(sorted(k for k in arrays if k != "__architecture__")))
        if what == "drop":
            del arrays[key]
        else:
            arrays[key] = draw(st.sampled_from([
                np.zeros(0, np.float32), np.full(arrays[key].shape, np.nan, np.float32),
                arrays[key].astype(np.float64), arrays[key].reshape(-1), np.array("text"),
                np.zeros(arrays[key].shape, complex), np.zeros((3, 3), np.float32)]))
    arrays["__architecture__"] = np.frombuffer(json.dumps(arch).encode(), np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


# ---- regressions: what the fuzzing above found, kept as plain cases -------------

def unaligned(a):
    return relayout(np.asarray(a, np.float32), "unaligned")


def test_core_refuses_unaligned_arrays():
    """A view at an odd byte offset was read through float pointers (undefined
    behaviour in C, UBSan's misaligned load); the C core now refuses it."""
    x = unaligned([1.0, -2.0, 3.0])
    assert not x.flags.aligned and x.flags.c_contiguous
    with pytest.raises(TypeError, match="aligned"):
        _core.relu_forward(x, np.empty(3, np.float32))
    with pytest.raises(TypeError, match="aligned"):
        _core.gemm(unaligned(np.ones((2, 2))), np.ones((2, 2), np.float32),
                   np.empty((2, 2), np.float32))


def test_public_api_copies_unaligned_input():
    """... and the Python layer makes an aligned copy of such user input."""
    model = sn.Sequential(*MODELS["mlp"][0]())
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    want = model.predict_proba(X)
    for fused in (True, False):
        with fused_path(fused):
            np.testing.assert_array_equal(model.predict_proba(unaligned(X)), want)
            model.layers[0].weight.data = unaligned(model.layers[0].weight.data)
            assert model.layers[0].weight.data.flags.aligned


@pytest.mark.parametrize("kernel, stride", [((2,), (1, 1)), ((2, 2), (1,)), ((), ())])
def test_pool_window_must_be_a_pair(kernel, stride):
    """A kernel or stride tuple shorter than 2 was indexed past its end (bounds
    checks are off in _core): a segfault. Now a TypeError."""
    x = np.zeros((1, 1, 4, 4), np.float32)
    y = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(TypeError, match="pair"):
        _core.maxpool2d_forward(x, y, np.zeros(y.shape, np.int32), kernel, stride)
    with pytest.raises(TypeError, match="pair"):
        _core.avgpool2d_forward(x, y, kernel, stride)
    with pytest.raises(TypeError, match="pair"):
        _core.avgpool2d_backward(y, x, kernel, stride)


def mlp_one_layer(train=True, grads=True):
    W, b = np.ones((3, 2), np.float32), np.zeros(2, np.float32)
    return _core.MLP([(W, b, W.copy() if grads else None, b.copy() if grads else None, "none",
                       0.0, 0.0)], 4, train)


@pytest.mark.parametrize("kind, hyper, states", [
    ("adam", {}, [[None], [None]]),
    ("adam", {}, [[np.zeros(6, np.float32)], [np.zeros(2, np.float32)]]),
    ("sgd", {"momentum": 0.9}, [[], []]),
    ("rmsprop", {"centered": True}, [[np.zeros(6, np.float32)], [np.zeros(2, np.float32)]]),
    ("adagrad", {}, [[], []]),
])
def test_mlp_optimizer_needs_its_state_buffers(kind, hyper, states):
    """set_optimizer took a missing state buffer as NULL and train() wrote
    through it: a segfault. Now refused, and the network stays unset."""
    net = mlp_one_layer()
    with pytest.raises(ValueError, match="optimizer state"):
        net.set_optimizer(kind, dict(hyper, lr=0.1), states, 0, 0)
    X, y = np.ones((4, 3), np.float32), np.zeros(4, np.int64)
    with pytest.raises(RuntimeError, match="set_optimizer first"):
        net.train(X, y, np.arange(4, dtype=np.int64), 2)


def test_mlp_training_network_needs_gradients_and_every_layer_a_size():
    with pytest.raises(ValueError, match="needs dW and db"):
        mlp_one_layer(grads=False)
    mlp_one_layer(train=False, grads=False)  # inference only: no gradients needed
    with pytest.raises(ValueError, match="at least one input and one output"):
        _core.MLP([(np.ones((0, 2), np.float32), np.zeros(2, np.float32), None, None, "relu",
                    0.0, 0.0)], 4, False)


def test_dense_forward_with_no_inputs_is_the_bias():
    """K == 0 passed a leading dimension of 0 to the GEMM, which refused it."""
    out = np.full((2, 3), np.nan, np.float32)
    b = np.array([1.0, -2.0, 3.0], np.float32)
    _core.dense_forward(np.zeros((2, 0), np.float32), np.zeros((0, 3), np.float32), b, out,
                        "relu")
    np.testing.assert_array_equal(out, [[1.0, 0.0, 3.0]] * 2)


def test_reshape_with_huge_dimensions_refuses_the_batch():
    """An int64 product of the dimensions wrapped to 0: ZeroDivisionError."""
    with pytest.raises(ValueError, match="cannot hold"):
        sn.Reshape(2, -1, 2**63).forward(np.ones((2, 8), np.float32))
