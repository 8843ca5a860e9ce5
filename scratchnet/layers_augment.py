"""Data augmentation layers for NCHW image batches: RandomShift and
RandomFlip. They act in training only and are the identity at inference.

The random stream follows Dropout's: a layer holds a 63-bit seed (from
fit(seed=...)'s generator through reseed, or its own seed=) and counts its
training calls; call t draws with the C kernels' counter-based generator keyed
by seed + t, image i's draw depending only on (key, i). So a seed gives the
same augmentation whatever the thread count. The arithmetic is in
csrc/sn_augment.c."""
import numbers

import numpy as np

from . import _core, _random
from .layers import LAYERS, RandomStream, _as_batch
from .module import Module, image_shape


class _RandomImageLayer(RandomStream, Module):
    """A training-only random map of each image; subclasses draw and move."""

    takes_images = True

    def __init__(self, seed=None):
        super().__init__()
        self.reseed(_random.generator(seed))
        self._draws = None

    def output_shape(self, in_shape):
        return image_shape(self, in_shape)

    def draws(self):
        return True

    def check_training(self, in_shape):
        """Refuse (ValueError) to train on images of this per-sample shape
        (fit asks before its first step): here, nothing to refuse."""

    def _draw(self, n, key):
        raise NotImplementedError

    def _move(self, x, y, draws, adjoint):
        raise NotImplementedError

    def forward(self, x, training=False):
        x = _as_batch(x, f"{type(self).__name__} input")
        if x.ndim != 4 or min(x.shape[1:], default=0) < 1:
            raise ValueError(f"{self!r}: expected input of shape (batch, channels, height, "
                             f"width), got {x.shape}")
        if not training or not self.draws():
            self._draws = None
            return x
        self.check_training(x.shape[1:])
        self._draws = self._draw(x.shape[0], self.take_mask_seed())
        return self._move(x, self._buffer("y", x.shape), self._draws, False)

    def backward(self, dy):
        """The adjoint of the last forward (dy itself after an inference one)."""
        dy = _as_batch(dy, f"{type(self).__name__} gradient")
        if self._draws is None:
            return dy
        want = (self._draws.shape[0],) + self._buffers["y"].shape[1:]
        if dy.shape != want:
            raise ValueError(f"{self!r}.backward: gradient of shape {dy.shape}, expected {want}")
        return self._move(dy, self._buffer("dx", dy.shape), self._draws, True)

    def _int_buffer(self, shape):
        buf = self._buffers.get("draws")
        if buf is None or buf.shape != shape:
            buf = self._buffers["draws"] = np.empty(shape, np.int32)
        return buf


class RandomShift(_RandomImageLayer):
    """Each image translated by integers (dy, dx), each uniform in
    [-pixels, pixels], the uncovered border filled with zeros. Backward moves
    the gradient back (zero where the forward filled)."""

    def __init__(self, pixels, seed=None):
        if isinstance(pixels, bool) or not isinstance(pixels, numbers.Integral) or pixels < 0:
            raise ValueError(f"RandomShift: pixels must be an integer >= 0, got {pixels!r}")
        self.pixels = int(pixels)
        super().__init__(seed)

    def get_config(self):
        return {"pixels": self.pixels}

    def check_training(self, in_shape):
        """Refuse to train on images a shift of up to pixels can move out
        entirely (blank). Inference is the identity: no check there."""
        _, height, width = image_shape(self, in_shape)
        if self.pixels >= min(height, width):
            raise ValueError(f"{self!r}: shifts of up to {self.pixels} pixels move some "
                             f"{height} x {width} images out entirely (blank): use pixels <= "
                             f"{min(height, width) - 1}")

    def draws(self):
        return self.pixels > 0

    def _draw(self, n, key):
        return _core.random_shifts(self._int_buffer((n, 2)), self.pixels, key, self.first_row)

    def _move(self, x, y, draws, adjoint):
        return _core.shift2d(x, y, draws, adjoint)


class RandomFlip(_RandomImageLayer):
    """Each image flipped left-right with probability 1/2 (its own adjoint)."""

    def _draw(self, n, key):
        return _core.random_flips(self._int_buffer((n,)), key, self.first_row)

    def _move(self, x, y, draws, adjoint):
        return _core.flip2d(x, y, draws)


LAYERS.update({cls.__name__: cls for cls in (RandomShift, RandomFlip)})  # for load
