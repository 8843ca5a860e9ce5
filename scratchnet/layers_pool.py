"""Pooling layers over NCHW float32 batches: MaxPool2D, AvgPool2D,
GlobalAvgPool2D (PyTorch's definitions, no padding). The arithmetic is in
csrc/sn_pool.c."""
import numpy as np

from . import _core
from ._validate import positive_int
from .layers import LAYERS, _as_batch
from .module import Module, image_shape


def _pair(value, name):
    """An int or a pair of ints, each >= 1, as a tuple of two ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return (positive_int(value[0], name), positive_int(value[1], name))
    v = positive_int(value, name)
    return (v, v)


def _check_nchw(layer, x):
    if x.ndim != 4:
        raise ValueError(f"{layer!r}: expected input of shape (batch, channels, height, width), "
                         f"got {x.shape}")


class _Pool2D(Module):
    """A kh x kw window moved by (sh, sw); stride defaults to the window."""

    _compiled_settings = frozenset({"kernel_size", "stride"})  # see Module

    takes_images = True

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = self._checked_setting("kernel_size", kernel_size)
        self.stride = (self.kernel_size if stride is None
                       else self._checked_setting("stride", stride))
        self._x_shape = None

    def _checked_setting(self, name, value):
        return _pair(value, f"{type(self).__name__}: {name}")

    def get_config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}

    def output_shape(self, in_shape):
        in_shape = tuple(in_shape)
        kh, kw = self.kernel_size
        if len(in_shape) != 3 or in_shape[1] < kh or in_shape[2] < kw:
            raise ValueError(f"{self!r} takes (channels, height, width) per sample with height "
                             f">= {kh} and width >= {kw}, got {in_shape}")
        c, h, w = in_shape
        sh, sw = self.stride
        return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)

    def _input(self, x):
        x = _as_batch(x, f"{type(self).__name__} input")
        _check_nchw(self, x)
        out = (x.shape[0],) + self.output_shape(x.shape[1:])
        return x, out

    def _gradient(self, dy):
        if self._x_shape is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        dy = _as_batch(dy, f"{type(self).__name__} gradient")
        want = (self._x_shape[0],) + self.output_shape(self._x_shape[1:])
        if dy.shape != want:
            raise ValueError(f"{self!r}.backward: gradient of shape {dy.shape}, expected {want}")
        return dy


class MaxPool2D(_Pool2D):
    """The maximum of each window. Backward sends the whole gradient to the
    first position holding the maximum (row-major scan of the window);
    overlapping windows add. NaN wins, as in PyTorch."""

    def forward(self, x, training=False):
        x, out = self._input(x)
        y = self._buffer("y", out)
        argmax = self._buffers.get("argmax")
        if argmax is None or argmax.shape != out:
            argmax = self._buffers["argmax"] = np.empty(out, dtype=np.int32)
        _core.maxpool2d_forward(x, y, argmax, self.kernel_size, self.stride)
        self._x_shape = x.shape
        return y

    def backward(self, dy):
        dy = self._gradient(dy)
        dx = self._buffer("dx", self._x_shape)
        return _core.maxpool2d_backward(dy, self._buffers["argmax"], dx)


class AvgPool2D(_Pool2D):
    """The mean of each window; backward spreads dy / (kh kw) over it."""

    def forward(self, x, training=False):
        x, out = self._input(x)
        y = self._buffer("y", out)
        _core.avgpool2d_forward(x, y, self.kernel_size, self.stride)
        self._x_shape = x.shape
        return y

    def backward(self, dy):
        dy = self._gradient(dy)
        dx = self._buffer("dx", self._x_shape)
        return _core.avgpool2d_backward(dy, dx, self.kernel_size, self.stride)


class GlobalAvgPool2D(Module):
    """(N, C, H, W) -> (N, C): the mean of each channel's plane."""

    takes_images = True

    def __init__(self):
        super().__init__()
        self._x_shape = None

    def output_shape(self, in_shape):
        return (image_shape(self, in_shape)[0],)

    def forward(self, x, training=False):
        x = _as_batch(x, "GlobalAvgPool2D input")
        _check_nchw(self, x)
        self.output_shape(x.shape[1:])
        y = self._buffer("y", x.shape[:2])
        _core.global_avgpool_forward(x, y)
        self._x_shape = x.shape
        return y

    def backward(self, dy):
        if self._x_shape is None:
            raise RuntimeError("GlobalAvgPool2D.backward called before forward")
        dy = _as_batch(dy, "GlobalAvgPool2D gradient")
        if dy.shape != self._x_shape[:2]:
            raise ValueError(f"{self!r}.backward: gradient of shape {dy.shape}, expected "
                             f"{self._x_shape[:2]}")
        return _core.global_avgpool_backward(dy, self._buffer("dx", self._x_shape))


LAYERS.update({cls.__name__: cls for cls in (MaxPool2D, AvgPool2D, GlobalAvgPool2D)})  # for load
