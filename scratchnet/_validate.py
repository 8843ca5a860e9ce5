"""Input checks and conversions done once, in Python, before the C core is
entered: user arrays of any dtype or layout become aligned, C-contiguous
float32 (labels int64), and anything that cannot be made valid raises a clear
exception naming the problem."""
import numbers

import numpy as np

from . import _core


def contiguous(a, dtype):
    """a as an aligned, C-contiguous ndarray of dtype (no copy when it already
    is one). np.ascontiguousarray alone keeps a view at an odd byte offset."""
    arr = np.ascontiguousarray(a, dtype=dtype)
    return arr if arr.flags.aligned else arr.copy()


def _no_masked_values(a, name):
    """Refuse a masked array with values masked: np.asarray drops the mask,
    and the values under it would be taken as data."""
    if not isinstance(a, np.ma.MaskedArray):
        return
    masked = int(np.ma.getmaskarray(a).sum())
    if masked:
        raise ValueError(f"{name}: a masked array with {masked} masked value(s), which would "
                         f"be read as data: fill them ({name}.filled(value)) or drop those "
                         "samples")


def as_float32(a, name="input"):
    """a as an aligned, C-contiguous float32 array (no copy when it already is one)."""
    _no_masked_values(a, name)
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: cannot convert to an array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name}: expected numbers, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name}: complex values are not supported")
    wide = arr.dtype.kind == "f" and arr.dtype.itemsize > 4
    if not wide:
        return contiguous(arr, np.float32)
    with np.errstate(over="ignore"):  # said below, with the values that overflowed
        out = contiguous(arr, np.float32)
    if not _core.all_finite(out):
        # finite values past float32's largest (3.4e38) became inf: say so,
        # where the finiteness check would blame NaN or inf in the data
        overflowed = np.isinf(out) & np.isfinite(arr)
        if overflowed.any():
            raise ValueError(f"{name}: {int(overflowed.sum())} value(s) beyond float32's range "
                             f"(the largest magnitude {float(np.abs(arr[overflowed]).max()):.3g} > "
                             f"{float(np.finfo(np.float32).max):.3g}); scratchnet computes in "
                             "float32: scale the data down")
    return out


def check_finite(arr, name="input"):
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.isfinite(arr).sum())
        raise ValueError(f"{name}: contains {bad} non-finite value(s) (NaN or inf)")
    return arr


def as_features(x, n_features=None, name="x", check=True):
    """A non-empty (N, n_features) float32 batch; a single sample (n_features,)
    becomes a batch of one. check=False skips the test for NaN and inf when
    x is such an array already (fit, on an array a complete epoch of its
    compiled trainer went over: a value changed since fails its batch's
    step, see Sequential._knows_finite)."""
    if type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2 \
            and x.flags.c_contiguous and x.flags.aligned and x.shape[0] \
            and x.shape[1] == n_features:
        if check and not _core.all_finite(x):  # the common case, checked in C without temporaries
            check_finite(x, name)
        return x
    try:
        ndim = np.ndim(x)
    except ValueError as exc:  # ragged nested lists: NumPy's words, named
        raise ValueError(f"{name}: cannot convert to an array: {exc}") from None
    if ndim == 0 and n_features != 1:  # (a model of one input takes it as a sample)
        raise ValueError(f"{name}: expected a 2-D array (samples, features), got a single "
                         f"number ({x!r})")
    arr = as_float32(x, name)
    if arr.ndim == 1 and n_features is not None and arr.shape[0] == n_features:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        hint = ("; for one feature per sample, X.reshape(-1, 1)"
                if arr.ndim == 1 and n_features == 1 else "")
        raise ValueError(f"{name}: expected a 2-D array (samples, features), got shape "
                         f"{arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (0 samples)")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name}: expected {n_features} features per sample, got {arr.shape[1]} "
                         f"(shape {arr.shape})")
    return check_finite(arr, name)


def as_labels(y, n_classes=None, n_samples=None, name="labels"):
    """Integer class labels as a C-contiguous int64 vector, checked in range."""
    _no_masked_values(y, name)
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class labels, got shape {arr.shape}")
    if n_samples is not None and arr.shape[0] != n_samples:
        raise ValueError(f"{name}: {arr.shape[0]} labels for {n_samples} samples")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
            raise ValueError(f"{name}: class labels must be whole numbers")
        big = arr[np.abs(arr) >= 2.0 ** 63]
        if big.size:  # as int64 they would wrap (to -9223372036854775808): name them
            raise ValueError(f"{name}: labels must be in [0, {n_classes}), got {big[:5].tolist()}"
                             if n_classes is not None else
                             f"{name}: label {float(big[0]):g} is outside int64's range")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{name}: class labels must be integers, got dtype {arr.dtype}")
    elif arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        # as int64 they would wrap round to negative numbers
        raise ValueError(f"{name}: labels must be in [0, {n_classes}), got {int(arr.max())}"
                         if n_classes is not None else
                         f"{name}: label {int(arr.max())} is too large for an int64")
    arr = contiguous(arr, np.int64)
    if arr.size and n_classes is not None and (arr.min() < 0 or arr.max() >= n_classes):
        bad = arr[(arr < 0) | (arr >= n_classes)]
        raise ValueError(f"{name}: labels must be in [0, {n_classes}), got {bad[:5].tolist()}"
                         f"{' ...' if bad.size > 5 else ''}")
    return arr


def positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _finite_real(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and bool(
        np.isfinite(value))


def finite_float(value, name):
    if not _finite_real(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def nonnegative_float(value, name):
    if not _finite_real(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def boolean(value, name):
    """value as a bool, refused unless it is one: any truthy value (the
    string "False") would switch the option on."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def choice(value, options, name):
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(options)}")
    return value
