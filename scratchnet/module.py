"""Parameter and Module: the two building blocks every layer shares."""
import numpy as np


class Parameter:
    """A trainable array and its gradient: two float32 arrays of one shape,
    the buffers the C kernels read and write. backward() overwrites .grad."""

    # bumped whenever any parameter's array is replaced, so compiled networks
    # that point into the old arrays know to rebuild (Sequential._plan)
    version = 0

    def __init__(self, data, name=""):
        self.data = data
        self.grad = np.zeros_like(self._data)
        self.name = name

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data = np.ascontiguousarray(value, dtype=np.float32)
        Parameter.version += 1

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(name={self.name!r}, shape={self.data.shape})"


class BufferOwner:
    """Keeps output arrays that are reused from call to call: a new array is
    allocated only when the shape changes (a new batch size)."""

    def __init__(self):
        self._buffers = {}

    def _buffer(self, key, shape):
        """A float32 array of this shape owned by the object, reused across calls."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape, dtype=np.float32)
            self._buffers[key] = buf
        return buf


class Module(BufferOwner):
    """Base of layers and models: forward(x, training) caches what backward
    needs; backward(dy) returns dx and sets every parameter's .grad.

    Output arrays are owned by the module and reused from batch to batch (no
    allocation per batch): an array returned by forward or backward is valid
    until the next call of the same method. Copy it to keep it."""

    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, x, training=False):
        return self.forward(x, training=training)

    def parameters(self):
        return []

    def zero_grad(self):
        for p in self.parameters():
            p.grad.fill(0.0)

    def reseed(self, rng):
        """Take a new random stream (layers that draw random numbers override)."""

    def get_config(self):
        """Constructor arguments that rebuild this module (for save/load)."""
        return {}

    def output_features(self, in_features):
        """Features per sample of the output for in_features of input."""
        return in_features

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
