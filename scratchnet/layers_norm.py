"""Batch normalisation layers (PyTorch's definitions): BatchNorm1d over
(N, F) or (N, F, L), BatchNorm2d over (N, C, H, W). The arithmetic is in
csrc/sn_norm.c; see docs/formulas.md, "Batch normalisation"."""
import numbers

import numpy as np

from . import _core
from ._lines import ones_on_lines, zeros_on_lines
from ._validate import contiguous, positive_int
from .layers import LAYERS, _as_batch
from .module import Module, Parameter, mark_changed


def _number(value, name, low, high, low_open):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not (low < value if low_open else low <= value) or not value <= high:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


class _BatchNorm(Module):
    """Per channel: in training, the batch's mean and biased variance
    normalise x, and the running statistics move towards them (the variance
    unbiased, n / (n - 1)); at inference the running statistics are used.
    y = weight (x - mean) / sqrt(var + eps) + bias.

    running_mean (zeros) and running_var (ones) are plain float32 arrays,
    saved with the model (buffers()) and updated in place."""

    _compiled_settings = frozenset({"eps"})  # see Module

    _size_name = "num_features"

    def __init__(self, size, momentum=0.1, eps=1e-5):
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(size, f"{name}: {self._size_name}")
        self.momentum = _number(momentum, f"{name}: momentum", 0.0, 1.0, False)
        self.eps = self._checked_setting("eps", eps)
        self.weight = Parameter(ones_on_lines(self.num_features), "weight")
        self.bias = Parameter(zeros_on_lines(self.num_features), "bias")
        self.running_mean = np.zeros(self.num_features, np.float32)
        self.running_var = np.ones(self.num_features, np.float32)
        self._x = None

    def parameters(self):
        return [self.weight, self.bias]

    # the running statistics: assigning replaces the array (float32, C
    # values) and tells compiled networks that point into the old one to
    # rebuild, as replacing a Parameter's data does
    def _running(name):
        def getter(self):
            return self.__dict__["_" + name]

        def setter(self, value):
            value = contiguous(value, np.float32)
            if value.shape != (self.num_features,):
                raise ValueError(f"{type(self).__name__}.{name}: expected shape "
                                 f"({self.num_features},), got {value.shape}")
            self.__dict__["_" + name] = value
            mark_changed(self)
        return property(getter, setter, doc=f"The {name.replace('_', ' ')} (float32, one per "
                                      "channel), used at inference.")

    running_mean = _running("running_mean")
    running_var = _running("running_var")
    del _running

    def buffers(self):
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def _checked_setting(self, name, value):  # eps
        return _number(value, f"{type(self).__name__}: {name}", 0.0, np.inf, True)

    def get_config(self):
        return {self._size_name: self.num_features, "momentum": self.momentum, "eps": self.eps}

    def _fits(self, in_shape):
        raise NotImplementedError

    def output_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if not self._fits(in_shape):
            raise ValueError(f"{self!r} takes {self._input_desc} per sample, got {in_shape}")
        return in_shape

    def forward(self, x, training=False):
        name = type(self).__name__
        x = _as_batch(x, f"{name} input")
        if x.ndim < 2 or x.shape[0] < 1 or not self._fits(x.shape[1:]):
            raise ValueError(f"{self!r}: expected a batch of samples of shape "
                             f"{self._input_desc}, got input of shape {x.shape}")
        x3 = x.reshape(x.shape[0], self.num_features, -1)
        if training and x3.shape[0] * x3.shape[2] < 2:
            raise ValueError(f"{self!r}: expected more than 1 value per channel when training, "
                             f"got input of shape {x.shape}")
        C = self.num_features
        y = self._buffer("y", x3.shape)
        mean, invstd = self._buffer("mean", (C,)), self._buffer("invstd", (C,))
        _core.batchnorm_forward(x3, y, self.weight.data, self.bias.data, mean, invstd,
                                self.running_mean, self.running_var, self.eps, self.momentum,
                                bool(training))
        self._x, self._shape, self._training = x3, x.shape, bool(training)
        return y.reshape(x.shape)

    def backward(self, dy):
        """Sets weight.grad and bias.grad; returns dx. After a training
        forward, dx goes through the batch statistics too."""
        if self._x is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        dy = _as_batch(dy, f"{type(self).__name__} gradient")
        if dy.shape != self._shape:
            raise ValueError(f"{self!r}.backward: gradient of shape {dy.shape}, expected "
                             f"{self._shape}")
        dx = self._buffer("dx", self._x.shape)
        _core.batchnorm_backward(dy.reshape(self._x.shape), self._x, self.weight.data,
                                 self._buffers["mean"], self._buffers["invstd"], dx,
                                 self.weight.grad, self.bias.grad, self._training)
        return dx.reshape(self._shape)


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, num_features) or (N, num_features, L) input."""

    def __init__(self, num_features, momentum=0.1, eps=1e-5):
        super().__init__(num_features, momentum, eps)
        self._input_desc = f"({self.num_features},) or ({self.num_features}, length)"

    def _fits(self, in_shape):
        return len(in_shape) in (1, 2) and in_shape[0] == self.num_features \
            and min(in_shape) >= 1


class BatchNorm2d(_BatchNorm):
    """Batch norm of (N, num_channels, H, W) input, per channel over (N, H, W)."""

    takes_images = True

    _size_name = "num_channels"

    def __init__(self, num_channels, momentum=0.1, eps=1e-5):
        super().__init__(num_channels, momentum, eps)
        self._input_desc = f"({self.num_features}, height, width)"

    @property
    def num_channels(self):
        return self.num_features

    def _fits(self, in_shape):
        return len(in_shape) == 3 and in_shape[0] == self.num_features and min(in_shape) >= 1


LAYERS.update({cls.__name__: cls for cls in (BatchNorm1d, BatchNorm2d)})  # for load
