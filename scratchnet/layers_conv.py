"""Convolutional layers: Conv2D on NCHW float32 batches, PyTorch's Conv2d.
The arithmetic is the C core's (csrc/sn_conv.c: im2col and the GEMM)."""
import numbers

import numpy as np

from . import _core
from ._lines import zeros_on_lines
from ._validate import choice, positive_int
from .layers import LAYERS, _as_batch, initial_weights
from .module import Module, Parameter


def _pair(value, name, minimum):
    """(a, b) from an int or a pair of ints, each >= minimum."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                  and v >= minimum for v in items):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return (int(items[0]), int(items[1]))


class Conv2D(Module):
    """2-D convolution (cross-correlation, as PyTorch's Conv2d) of NCHW batches:
        y[n, k] = bias[k] + sum_c weight[k, c] (*) x[n, c]
    with zero padding; weight of shape (out_channels, in_channels, kh, kw).
    kernel_size, stride and padding are an int or a pair (height, width).
    Output size: floor((H + 2 padding - kernel) / stride) + 1, likewise W.

    init="he": N(0, 2 / fan_in), fan_in = in_channels kh kw (Kaiming normal);
    init="xavier": U(-a, a), a = sqrt(6 / (fan_in + fan_out)), fan_out =
    out_channels kh kw. Biases start at 0."""

    _compiled_settings = frozenset({"kernel_size", "stride", "padding"})  # see Module

    INITS = ("he", "xavier")
    takes_images = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, init="he",
                 seed=None):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = self._checked_setting("stride", stride)
        self.padding = self._checked_setting("padding", padding)
        self.init = choice(init, self.INITS, "init")
        kh, kw = self.kernel_size
        fan_in, fan_out = self.in_channels * kh * kw, self.out_channels * kh * kw
        w = initial_weights(init, (self.out_channels, self.in_channels, kh, kw), fan_in, fan_out,
                            seed)
        self.weight = Parameter(w, "weight")
        self.bias = Parameter(zeros_on_lines(self.out_channels), "bias")
        self._x = None

    def _checked_setting(self, name, value):
        pair = _pair(value, name, 0 if name == "padding" else 1)
        if name == "kernel_size" and pair != self.weight.data.shape[2:]:
            raise ValueError(f"kernel_size {pair}: the weights are {self.weight.data.shape[2:]} "
                             "windows; build a new Conv2D for another size")
        return pair

    def parameters(self):
        return [self.weight, self.bias]

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "init": self.init}

    def output_shape(self, in_shape):
        """(in_channels, H, W) -> (out_channels, OH, OW)."""
        shape = tuple(in_shape)
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(f"{self!r} takes ({self.in_channels}, H, W) per sample, got "
                             f"{shape}")
        out = [self.out_channels]
        for size, k, s, p in zip(shape[1:], self.kernel_size, self.stride, self.padding):
            if size < 1 or size + 2 * p < k:
                raise ValueError(f"{self!r}: input {shape} per sample is smaller than the "
                                 f"kernel {self.kernel_size} with padding {self.padding}: "
                                 f"no output fits")
            out.append((size + 2 * p - k) // s + 1)
        return tuple(out)

    def _workspace(self, x_shape):
        n = _core.conv2d_workspace_len(x_shape, self.weight.shape, self.stride, self.padding)
        return self._buffer("workspace", (n,))

    def forward(self, x, training=False):
        x = _as_batch(x, f"{self!r} input")
        if x.ndim != 4:
            raise ValueError(f"{self!r}: expected input of shape (batch, {self.in_channels}, "
                             f"H, W), got {x.shape}")
        out_shape = self.output_shape(x.shape[1:])
        y = self._buffer("y", (x.shape[0], *out_shape))
        _core.conv2d_forward(x, self.weight.data, self.bias.data, y, self._workspace(x.shape),
                             self.stride, self.padding)
        self._x = x
        return y

    def backward(self, dy, input_grad=True):
        """Sets weight.grad and bias.grad; returns dx, or None when input_grad
        is False (the first layer of a network needs no dx)."""
        if self._x is None:
            raise RuntimeError(f"{self!r}.backward called before forward")
        x = self._x
        expected = (x.shape[0], *self.output_shape(x.shape[1:]))
        dy = _as_batch(dy, f"{self!r} gradient")
        if dy.shape != expected:
            raise ValueError(f"{self!r}.backward: gradient of shape {dy.shape}, expected "
                             f"{expected}")
        dx = self._buffer("dx", x.shape) if input_grad else None
        return _core.conv2d_backward(dy, x, self.weight.data, self.weight.grad, self.bias.grad,
                                     dx, self._workspace(x.shape), self.stride, self.padding)


LAYERS["Conv2D"] = Conv2D  # save and load find it by name
