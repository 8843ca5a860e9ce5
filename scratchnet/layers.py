"""Layers. Each keeps its parameters as float32 NumPy arrays and calls the
C core (scratchnet._core) for all arithmetic; NumPy only allocates."""
import contextlib
import math
import threading

import numpy as np

from . import _core, _random
from ._lines import empty_on_lines, zeros_on_lines
from ._validate import as_float32, choice, finite_float, positive_int
from .module import Module, Parameter, mark_changed


def _as_batch(x, name):
    """x as aligned, C-contiguous float32, without a copy when it already is."""
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous \
            and x.flags.aligned:
        return x
    return as_float32(x, name)


# draws a piece: the float64 draws of a whole layer doubled its memory (a
# 100000 x 100000 layer asked for 74.5 GiB to keep 37)
_DRAW_PIECE = 1 << 20
_replacing = threading.local()


@contextlib.contextmanager
def weights_to_be_replaced():
    """Layers built inside start with uninitialised float32 weights, drawing
    none: sn.load builds a model whose file then sets every parameter
    (drawing them took 7x as long as the save). Random layers (Dropout,
    RandomShift, RandomFlip) still draw their seeds from the default stream,
    as when built by hand, so a loaded model's masks follow manual_seed."""
    before, _replacing.on = getattr(_replacing, "on", False), True
    try:
        yield
    finally:
        _replacing.on = before  # as it was: a use inside another ends only its own


def initial_weights(init, shape, fan_in, fan_out, seed=None):
    """Initial float32 weights of this shape: "he" N(0, 2 / fan_in) (Kaiming
    normal, for ReLU networks); "xavier" U(-a, a), a = sqrt(6 / (fan_in +
    fan_out)). Drawn in float64 a piece at a time (the same values as one
    draw of the whole: NumPy's streams do not depend on how they are cut)."""
    out = empty_on_lines(shape)
    if getattr(_replacing, "on", False):
        return out
    rng = _random.generator(seed)
    flat = out.reshape(-1)
    a = np.sqrt(6.0 / (fan_in + fan_out))
    for start in range(0, flat.size, _DRAW_PIECE):
        n = min(_DRAW_PIECE, flat.size - start)
        flat[start:start + n] = (rng.standard_normal(n) * np.sqrt(2.0 / fan_in) if init == "he"
                                 else rng.uniform(-a, a, n))
    return out


class Dense(Module):
    """y = x @ weight + bias, weight of shape (in_features, out_features).

    init="he": N(0, 2 / in_features), for ReLU networks (Kaiming normal);
    init="xavier": U(-a, a), a = sqrt(6 / (in_features + out_features)).
    Biases start at 0."""

    INITS = ("he", "xavier")

    def __init__(self, in_features, out_features, init="he", seed=None):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.init = choice(init, self.INITS, "init")
        w = initial_weights(init, (self.in_features, self.out_features), self.in_features,
                            self.out_features, seed)
        self.weight = Parameter(w, "weight")
        self.bias = Parameter(zeros_on_lines(self.out_features), "bias")
        self._x = None

    def parameters(self):
        return [self.weight, self.bias]

    def output_shape(self, in_shape):
        if tuple(in_shape) != (self.in_features,):
            # images of as many values: the Flatten between is what is missing
            flat = len(in_shape) > 1 and math.prod(in_shape) == self.in_features
            raise ValueError(f"{self!r} takes {self.in_features} features per sample"
                             f"{' (put sn.Flatten() before it)' if flat else ''}, got shape "
                             f"{tuple(in_shape)}")
        return (self.out_features,)

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "init": self.init}

    def forward(self, x, training=False):
        x = _as_batch(x, "Dense input")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Dense({self.in_features}, {self.out_features}): expected input of "
                             f"shape (batch, {self.in_features}), got {x.shape}")
        self._x = x
        y = self._buffer("y", (x.shape[0], self.out_features))
        return _core.dense_forward(x, self.weight.data, self.bias.data, y)

    def backward(self, dy, input_grad=True):
        """Sets weight.grad and bias.grad; returns dx, or None when input_grad
        is False (the first layer of a network needs no dx)."""
        if self._x is None:
            raise RuntimeError("Dense.backward called before forward")
        dy = _as_batch(dy, "Dense gradient")
        if dy.shape != (self._x.shape[0], self.out_features):
            raise ValueError(f"Dense.backward: gradient of shape {dy.shape}, expected "
                             f"{(self._x.shape[0], self.out_features)}")
        # dW = x^T @ dy ; db = sum over the batch of dy ; dx = dy @ W^T
        _core.gemm(self._x, dy, self.weight.grad, trans_a=True)
        _core.bias_grad(dy, self.bias.grad)
        if not input_grad:
            return None
        dx = self._buffer("dx", self._x.shape)
        return _core.gemm(dy, self.weight.data, dx, trans_b=True)


class _Activation(Module):
    """An element-wise activation; subclasses give the two C kernels.
    keep_output: backward needs the forward output (sigmoid, tanh) rather
    than the input (ReLU)."""

    keep_output = False

    def _forward_kernel(self, x, out):
        raise NotImplementedError

    def _backward_kernel(self, dy, cache, out):
        raise NotImplementedError

    def forward(self, x, training=False):
        x = _as_batch(x, f"{type(self).__name__} input")
        y = self._buffer("y", x.shape)
        self._forward_kernel(x, y)
        self._cache = y if self.keep_output else x
        return y

    def backward(self, dy):
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        dy = _as_batch(dy, f"{type(self).__name__} gradient")
        if dy.shape != cache.shape:
            raise ValueError(f"{type(self).__name__}.backward: gradient of shape {dy.shape}, "
                             f"expected {cache.shape}")
        dx = self._buffer("dx", dy.shape)
        self._backward_kernel(dy, cache, dx)
        return dx


class ReLU(_Activation):
    """max(0, x); derivative 1 where x > 0, else 0."""

    def _forward_kernel(self, x, out):
        _core.relu_forward(x, out)

    def _backward_kernel(self, dy, x, out):
        _core.relu_backward(dy, x, out)


class LeakyReLU(_Activation):
    """x if x > 0 else negative_slope * x (PyTorch's default slope 0.01)."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    @property
    def negative_slope(self):
        return self._negative_slope

    @negative_slope.setter
    def negative_slope(self, value):
        # compiled networks copy the slope: a new one makes them rebuild, as
        # a replaced weight array does. Any finite slope, as PyTorch's (a NaN
        # failed later with "MLP.predict: invalid argument", or gave NaN)
        self._negative_slope = finite_float(value, "LeakyReLU: negative_slope")
        mark_changed(self)

    def get_config(self):
        return {"negative_slope": self.negative_slope}

    def _forward_kernel(self, x, out):
        _core.leaky_relu_forward(x, out, self.negative_slope)

    def _backward_kernel(self, dy, x, out):
        _core.leaky_relu_backward(dy, x, out, self.negative_slope)


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)); derivative s (1 - s)."""

    keep_output = True

    def _forward_kernel(self, x, out):
        _core.sigmoid_forward(x, out)

    def _backward_kernel(self, dy, y, out):
        _core.sigmoid_backward(dy, y, out)


class Tanh(_Activation):
    """tanh(x); derivative 1 - tanh^2."""

    keep_output = True

    def _forward_kernel(self, x, out):
        _core.tanh_forward(x, out)

    def _backward_kernel(self, dy, y, out):
        _core.tanh_backward(dy, y, out)


class Softmax(_Activation):
    """Softmax along the last axis, for probabilities. CrossEntropy takes the
    logits before it (it fuses its own softmax)."""

    keep_output = True

    def _forward_kernel(self, x, out):
        _core.softmax_forward(x.reshape(-1, x.shape[-1]), out.reshape(-1, x.shape[-1]))

    def _backward_kernel(self, dy, y, out):
        n = y.shape[-1]
        _core.softmax_backward(dy.reshape(-1, n), y.reshape(-1, n), out.reshape(-1, n))


class RandomStream:
    """The random stream of a training-only random layer (Dropout, the
    augmentation layers): a 63-bit seed and a count of training calls; call
    t draws with the C kernels' counter-based generator keyed by seed + t,
    so the fused C trainer (which advances the count by its batches) and the
    layer-by-layer path draw the same, and fit(seed=...) reseeds it.

    first_row: the row of the global batch the next batch starts at (0 but
    in data-parallel training, where a process holds a share of each batch):
    row i of the batch takes the draws of row first_row + i, so the masks
    follow the global sample, whatever the number of processes."""

    first_row = 0

    def reseed(self, rng):
        self.seed = int(rng.integers(2**63))
        self.calls = 0  # training calls so far: the next draw is keyed by seed + calls

    def draws(self):
        """Whether a training call draws (advances the stream)."""
        return True

    def skip_call(self):
        """Advance the stream as a training call would, without one (a
        process with no rows of a global batch)."""
        if self.draws():
            self.take_mask_seed()

    def take_mask_seed(self, count=1):
        """The key of the next draw, and the stream advanced past count draws."""
        key = (self.seed + self.calls) % 2**64
        self.calls += count
        return key

    def random_state(self):
        """Where the stream is: {"seed", "calls"} (JSON values, for checkpoints)."""
        return {"seed": self.seed, "calls": self.calls}

    def set_random_state(self, state):
        """Put the stream where random_state() was taken; ValueError for
        anything but a seed in [0, 2**63) and a count >= 0."""
        if not isinstance(state, dict) or set(state) != {"seed", "calls"}:
            raise ValueError(f"{self!r}: a random state is {{'seed', 'calls'}}, got {state!r}")
        seed, calls = state["seed"], state["calls"]
        for value, high in ((seed, 2**63), (calls, 2**64)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < high:
                raise ValueError(f"{self!r}: bad random state {state!r}")
        self.seed, self.calls = seed, calls


class Dropout(RandomStream, Module):
    """Inverted dropout: in training, zero each element with probability p and
    scale the rest by 1 / (1 - p); the identity outside training.

    The random stream: the layer holds a 63-bit seed and counts its training
    calls; call t draws its mask with the C kernel's counter-based generator
    keyed by (seed + t). The fused C trainer keys its batches the same way
    and advances the count, so a seed gives the same masks on both training
    paths."""

    # the fused trainer copies p: a new one makes it rebuild (see Module)
    _compiled_settings = frozenset({"p"})

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        self.p = self._checked_setting("p", p)
        self.reseed(_random.generator(seed))
        self._mask = None

    def _checked_setting(self, name, value):
        try:
            p = float(value)
        except (TypeError, ValueError):
            p = float("nan")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {value!r}")
        return p

    def get_config(self):
        return {"p": self.p}

    def draws(self):
        return self.p != 0.0

    def forward(self, x, training=False):
        x = _as_batch(x, "Dropout input")
        if not training or not self.draws():
            self._mask = None
            return x
        y = self._buffer("y", x.shape)
        self._mask = self._buffer("mask", x.shape)
        # element (i, j) of a row of k values takes draw (first_row + i) k + j
        first = self.first_row * (x.size // x.shape[0]) if x.shape[0] else 0
        _core.dropout_forward(x, y, self._mask, self.p, self.take_mask_seed(), first)
        return y

    def backward(self, dy):
        dy = _as_batch(dy, "Dropout gradient")
        if self._mask is None:
            return dy
        if dy.shape != self._mask.shape:
            raise ValueError(f"Dropout.backward: gradient of shape {dy.shape}, expected "
                             f"{self._mask.shape}")
        return _core.mul(dy, self._mask, self._buffer("dx", dy.shape))


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    def output_shape(self, in_shape):
        return (int(np.prod(in_shape, dtype=np.int64)),)

    def forward(self, x, training=False):
        x = _as_batch(x, "Flatten input")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return np.ascontiguousarray(dy, dtype=np.float32).reshape(self._shape)


class Reshape(Module):
    """(N, ...) -> (N, *shape): each sample's values in a new shape (one
    dimension may be -1: what is left), e.g. Reshape(1, 28, 28) turns rows of
    784 pixels into images for a convolution."""

    _compiled_settings = frozenset({"shape"})  # see Module

    def __init__(self, *dims, shape=None):
        super().__init__()
        shape = tuple(shape) if shape is not None else dims
        if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
            shape = tuple(shape[0])
        self.shape = self._checked_setting("shape", shape)

    def _checked_setting(self, name, shape):
        shape = tuple(shape) if isinstance(shape, (list, tuple)) else (shape,)
        if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer))
                            or (d < 1 and d != -1) for d in shape) or list(shape).count(-1) > 1:
            raise ValueError(f"Reshape: the shape must be positive integers (one may be -1), "
                             f"got {shape!r}")
        return tuple(int(d) for d in shape)

    def get_config(self):
        return {"shape": list(self.shape)}

    def __repr__(self):
        return f"Reshape{self.shape}"

    def output_shape(self, in_shape):
        # Python integers: an int64 product of huge dimensions would wrap (to 0)
        size = math.prod(int(d) for d in in_shape)
        known = math.prod(d for d in self.shape if d != -1)
        if -1 in self.shape and size % known == 0:
            return tuple(size // known if d == -1 else d for d in self.shape)
        if -1 not in self.shape and known == size:
            return self.shape
        raise ValueError(f"{self!r} cannot hold the {size} values of a sample of shape "
                         f"{tuple(in_shape)}")

    def forward(self, x, training=False):
        x = _as_batch(x, "Reshape input")
        self._shape = x.shape
        return x.reshape((x.shape[0],) + self.output_shape(x.shape[1:]))

    def backward(self, dy):
        return _as_batch(dy, "Reshape gradient").reshape(self._shape)


LAYERS = {cls.__name__: cls for cls in
          (Dense, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Dropout, Flatten, Reshape)}
