"""Hypothesis strategies and checks of tests/test_fuzz.py: arrays of odd
dtypes, layouts and values, the oracle that says whether an argument is one
the C core accepts, and float64 comparisons that allow for float32 range.

The run's size: SCRATCHNET_FUZZ_EXAMPLES generated cases in all (default
DEFAULT_TOTAL), shared among the tests by weight; hypothesis draws them from a
fixed seed (derandomize=True, no example database), so every run of one size
tries the same cases. CASES counts the cases run; tests/conftest.py prints it
in the terminal summary."""
import functools
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DEFAULT_TOTAL = 2840  # the weights given to fuzz() in tests/test_fuzz.py add up to this
TOTAL = int(os.environ.get("SCRATCHNET_FUZZ_EXAMPLES", DEFAULT_TOTAL))
CASES = {"run": 0}

# What a kernel may raise on arguments it refuses: never anything else.
REFUSALS = (TypeError, ValueError, OverflowError, FloatingPointError, MemoryError)

F32_MAX = float(np.finfo(np.float32).max)
# Values no float32 kernel may crash on: NaN, the infinities, the largest
# magnitudes (whose products overflow), subnormals, signed zeros.
SPECIALS = [np.nan, np.inf, -np.inf, 1e38, -1e38, F32_MAX, -3e38, 1e-40, -1e-45, 1.2e-38,
            0.0, -0.0]
HUGE = 1e18      # beyond this magnitude float32 products may overflow


def fuzz(weight, *strategies, **kw_strategies):
    """@given(...) with this run's settings: weight of DEFAULT_TOTAL cases
    (scaled by SCRATCHNET_FUZZ_EXAMPLES), each counted in CASES."""
    def wrap(test):
        @functools.wraps(test)
        def counted(*args, **kwargs):
            CASES["run"] += 1
            return test(*args, **kwargs)

        n = max(1, round(weight * TOTAL / DEFAULT_TOTAL))
        return settings(max_examples=n, derandomize=True, database=None, deadline=None,
                        print_blob=True, suppress_health_check=list(HealthCheck))(
            given(*strategies, **kw_strategies)(counted))
    return wrap


@st.composite
def values(draw, shape, specials=True):
    """A float32 array of this shape: normal values from a drawn seed, with a
    few special values at drawn places when `specials`."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 1.0, 0.01, 100.0]))
    a = np.array(rng.standard_normal(shape) * scale, np.float32)  # an array even for shape ()
    if specials and a.size and draw(st.integers(0, 2)) == 0:
        flat = a.reshape(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(SPECIALS))
    return a


ODD_LAYOUTS = ["fortran", "strided", "reversed", "readonly", "unaligned", "colslice", "broadcast",
               "dtype", "list", "none"]
# one argument in six or so is odd: most calls have one or none, so both the
# refusals and the computations get their share of the cases
LAYOUTS = ["c"] * 50 + ODD_LAYOUTS
# for arguments of calls that should mostly get through to the C code
MOSTLY_C = ["c"] * 150 + ODD_LAYOUTS
ODD_DTYPES = [np.float16, np.float64, np.int32, np.int64, np.uint8, np.bool_, np.complex64,
              object]


def relayout(a, how, dtype=None):
    """a (a C-contiguous array) in the layout `how`: other strides, flags or
    dtype, or not an array at all. The values may change (broadcast, dtype);
    the oracle and the references read whatever the result holds."""
    if how == "c":
        return a.copy()
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "strided" and a.ndim:
        big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
        big[::2] = a
        return big[::2]
    if how == "reversed" and a.ndim:
        return np.ascontiguousarray(a[::-1])[::-1]
    if how == "readonly":
        r = a.copy()
        r.flags.writeable = False
        return r
    if how == "unaligned":
        buf = np.zeros(a.nbytes + 8, np.uint8)
        r = buf[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
        r[...] = a
        return r
    if how == "colslice" and a.ndim:
        big = np.zeros(a.shape[:-1] + (a.shape[-1] + 3,), a.dtype)
        big[..., :a.shape[-1]] = a
        return big[..., :a.shape[-1]]
    if how == "broadcast" and a.ndim and a.shape[0]:
        return np.broadcast_to(a[:1], a.shape)
    if how == "dtype":
        return a.astype(dtype if dtype is not None else np.float64)
    if how == "list":
        return a.tolist()
    if how == "none":
        return None
    return a.copy()


@st.composite
def odd(draw, a, layouts=LAYOUTS):
    """a, possibly in another layout or dtype (see relayout)."""
    how = draw(st.sampled_from(layouts))
    dtype = draw(st.sampled_from(ODD_DTYPES)) if how == "dtype" else None
    return relayout(a, how, dtype)


@st.composite
def odd_array(draw, shape, specials=True, layouts=LAYOUTS):
    return draw(odd(draw(values(shape, specials)), layouts))


def dims(lo=0, hi=4):
    """A size in lo..hi, the smallest (0 and 1) most likely."""
    return st.one_of(st.sampled_from([v for v in (0, 1, 1, 2) if v >= lo]), st.integers(lo, hi))


def accepted(a, dtype=np.float32, writable=False):
    """Whether the C core takes a as an array argument: an aligned,
    C-contiguous ndarray of dtype (writable for an output)."""
    return (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous
            and a.flags.aligned and (a.flags.writeable or not writable))


def f64(a):
    return np.array(a, dtype=np.float64)


def moderate(*arrays):
    """Whether every value is finite and at most HUGE in magnitude."""
    return all(bool(np.all(np.abs(f64(a)) <= HUGE)) for a in arrays)


def assert_close(got, ref, rtol=1e-5, atol=1e-30, skip=None, what=""):
    """got (float32) against ref (float64): NaN exactly where ref is NaN,
    the same infinities, and |got - ref| <= atol + rtol |ref| elsewhere.
    skip: a mask of elements not compared (float32 overflow territory)."""
    got, ref = f64(got), np.broadcast_to(f64(ref), np.shape(got))
    if skip is None:
        skip = np.zeros(got.shape, bool)
    # the reference rounded to float32: beyond the range it is inf there too
    with np.errstate(over="ignore", invalid="ignore"):
        ref32 = ref.astype(np.float32).astype(np.float64)
        err = np.abs(got - ref)
    nan_ok = np.isnan(got) == np.isnan(ref32)
    inf = np.isinf(ref32) | np.isinf(got)
    at_max = (np.abs(ref) > 0.999 * F32_MAX) & (np.abs(got) > 0.999 * F32_MAX)
    inf_ok = ~inf | (got == ref32) | at_max
    fin = ~np.isnan(ref32) & ~inf
    val_ok = ~fin | (err <= atol + rtol * np.abs(ref) + 1e-37)  # + subnormal rounding
    bad = ~skip & ~(nan_ok & inf_ok & val_ok)
    assert not bad.any(), (f"{what}: {int(bad.sum())} wrong value(s); first at "
                           f"{np.argwhere(bad)[0].tolist()}: got {got[bad][:4]}, "
                           f"expected {ref[bad][:4]}")


def refused(call, *args, **kwargs):
    """The exception call raised (one of REFUSALS, with a message), or None
    when it returned."""
    try:
        call(*args, **kwargs)
    except REFUSALS as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return exc
    return None
