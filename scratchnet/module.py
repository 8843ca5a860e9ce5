"""Parameter and Module: the two building blocks every layer shares."""
import os
import secrets

import numpy as np

from ._lines import on_lines, zeros_on_lines
from ._validate import boolean, contiguous


def _array_attribute(name):
    """Parameter.<name>, read-only: the same attribute of its data array."""
    return property(lambda self: getattr(self._data, name), doc=f"The data's .{name}.")


def checked_state(value, shape, where):
    """value (an array, or a Parameter) as an array to copy into a model's
    state of this shape: a finite float array; raises naming where."""
    arr = value.data if isinstance(value, Parameter) else value
    try:
        arr = np.asarray(arr)
    except ValueError:  # ragged nested lists
        arr = np.asarray(None)
    # integer, bool or complex values in a weight are almost always a mistake
    # (labels, masks); a float array says what it means
    if arr.dtype.kind != "f":
        raise TypeError(f"{where}: expected a float array of shape {shape}, got a "
                        f"{type(value).__name__} of dtype {arr.dtype} (for numbers, "
                        f"convert with .astype(np.float32))")
    if arr.shape != tuple(shape):
        raise ValueError(f"{where}: got shape {arr.shape}, expected {tuple(shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: contains non-finite values (NaN or inf)")
    return arr


def _restart_count_in_child():
    """A child of fork() would count on from its parent's number: a model made
    in the child and sent back could carry stamps the parent makes again."""
    Parameter.version = secrets.randbits(62)


def mark_changed(owner):
    """A change compiled networks must see (a replaced parameter array, a
    parameter frozen or thawed, a new value of a layer's compiled setting):
    bumps Parameter.version, the cheap check that nothing changed anywhere,
    and stamps owner with it, so that a model whose own parameters and
    layers carry the stamps they had when it compiled knows the change was
    elsewhere (any layer built anywhere made every model rebuild: one-image
    calls 10 -> 90 us with a layer built between them)."""
    Parameter.version += 1
    object.__setattr__(owner, "_changed_at", Parameter.version)


class Parameter:
    """A trainable array and its gradient: two float32 arrays of one shape,
    the buffers the C kernels read and write. backward() overwrites .grad.

    A Parameter behaves like the array it holds: np.asarray(p), p[i],
    p[...] = 0.5, p.shape, p.dtype, p.size, p.ndim, p.T, len(p), iteration.
    Indexing reads and writes .data in place, so compiled networks and
    optimizers that point into it see the change."""

    # bumped at every change compiled networks must see (mark_changed: a
    # parameter's array replaced, a parameter frozen or thawed, a layer's
    # compiled setting), so those know to rebuild (Sequential._plan). It starts at a random number in each process: the stamps
    # of an object pickled in another process (counted from its own start)
    # could equal one made here, and a change would go unseen.
    version = secrets.randbits(62)
    _requires_grad = True

    @property
    def requires_grad(self):
        """False: frozen, as in PyTorch: optimizers leave it as it is, and
        fit takes an optimizer that does not hold it."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        value = boolean(value, f"parameter {self.name!r}: requires_grad")
        if value != self._requires_grad:
            # the fused trainer steps every parameter it holds: it must be
            # rebuilt (or not used), as for a replaced array
            mark_changed(self)
        self._requires_grad = value

    def __init__(self, data, name=""):
        self.data = data
        self.grad = zeros_on_lines(self._data.shape)  # calloc: pages on first use
        self.name = name

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        """Replace the array (compiled networks rebuild); its shape must stay
        that of the gradient, so a layer keeps its shape."""
        data = contiguous(value, np.float32)
        old = getattr(self, "_data", None)
        if old is not None and data.shape != old.shape:
            raise ValueError(f"parameter {self.name!r}: new data of shape {data.shape}, "
                             f"expected {old.shape}")
        self._data = data
        mark_changed(self)

    def __setstate__(self, state):
        # pickled before grad became a property: kept as "grad"
        if "grad" in state:
            state["_grad"] = state.pop("grad")
        # unpickled arrays start where NumPy puts them: back on cache lines
        for key in ("_data", "_grad"):
            if isinstance(state.get(key), np.ndarray):
                state[key] = on_lines(state[key])
        self.__dict__.update(state)

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, value):
        """A gradient of the data's shape, as float32 (converted if need be:
        the kernels read float32). One of another shape is refused, as
        PyTorch refuses it: of the same size, the optimizers applied it
        element by element to the wrong weights (a transposed gradient)."""
        if value is None or np.shape(value) != self._data.shape:
            # None (PyTorch's set-to-none) became NaN through np.asarray; a
            # scalar a (1,) array: refused by the shape given
            raise ValueError(f"parameter {self.name!r}: assigned grad of shape "
                             f"{None if value is None else np.shape(value)}, expected the "
                             f"data's {self._data.shape} (to leave a parameter out of the "
                             "steps, set its requires_grad = False)")
        self._grad = contiguous(value, np.float32)

    def validate(self, value, where=None):
        """value as the array assign() would copy in: a finite float array
        (or Parameter) of this shape; raises naming where (default: the
        parameter's name) otherwise."""
        return checked_state(value, self.shape, where or f"parameter {self.name!r}")

    def assign(self, value, where=None):
        """Copy value into .data in place, after validate(value, where)."""
        self._data[...] = self.validate(value, where)

    # ---- the array protocol ----

    def __array__(self, dtype=None, copy=None):
        """NumPy's view of the parameter: .data itself (no copy) unless a
        dtype or copy=True asks for one; copy=False raises if one is needed."""
        if copy:
            return np.array(self._data, dtype=dtype, copy=True)
        arr = np.asarray(self._data, dtype=dtype)
        if copy is False and arr is not self._data:
            raise ValueError(f"parameter {self.name!r}: a {np.dtype(dtype)} array needs a copy "
                             f"of the float32 data, but copy=False was given")
        return arr

    def numpy(self):
        """.data itself, not a copy (as torch's Tensor.numpy() shares memory):
        writes to the result change the parameter."""
        return self._data

    def __getitem__(self, key):
        return self._data[key]

    def __setitem__(self, key, value):
        self._data[key] = value

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        return iter(self._data)

    shape = _array_attribute("shape")
    dtype = _array_attribute("dtype")
    size = _array_attribute("size")
    ndim = _array_attribute("ndim")
    T = _array_attribute("T")

    def __getattr__(self, name):
        """The data array's other methods: p.sum(), p.mean(), p.copy(),
        p.reshape(...), p.astype(...), p.tolist(), ... (each as on .data)."""
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return getattr(self._data, name)
        except AttributeError:
            raise AttributeError(f"'Parameter' object has no attribute {name!r}") from None

    # Arithmetic gives plain arrays (p * 2, p + q, 1 - p, p @ x); the in-place
    # forms (p += 1) change .data itself. == stays identity: parameters are
    # keys of optimizer state (compare arrays with np.array_equal(p, q)).
    def __add__(self, other): return self._data + other
    def __radd__(self, other): return other + self._data
    def __sub__(self, other): return self._data - other
    def __rsub__(self, other): return other - self._data
    def __mul__(self, other): return self._data * other
    def __rmul__(self, other): return other * self._data
    def __truediv__(self, other): return self._data / other
    def __rtruediv__(self, other): return other / self._data
    def __matmul__(self, other): return self._data @ other
    def __rmatmul__(self, other): return other @ self._data
    def __neg__(self): return -self._data
    def __pow__(self, other): return self._data ** other

    def _inplace(self, op, other):
        op(self._data, other, out=self._data)
        return self

    def __iadd__(self, other): return self._inplace(np.add, other)
    def __isub__(self, other): return self._inplace(np.subtract, other)
    def __imul__(self, other): return self._inplace(np.multiply, other)
    def __itruediv__(self, other): return self._inplace(np.true_divide, other)

    def __repr__(self):
        values = np.array2string(self._data, precision=4, threshold=20, edgeitems=2,
                                 prefix="  ")
        return (f"Parameter(name={self.name!r}, shape={self.shape}, dtype={self.dtype},\n"
                f"  {values})")


def image_shape(layer, in_shape):
    """in_shape as (channels, height, width), or a ValueError naming the layer."""
    in_shape = tuple(in_shape)
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise ValueError(f"{layer!r} takes (channels, height, width) per sample, got {in_shape}")
    return in_shape


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

    # The settings a compiled network (scratchnet._inference, _fused) copies
    # when it is built: a new value for one makes them rebuild, as a replaced
    # weight array does (Parameter.version).
    _compiled_settings = frozenset()

    def __setattr__(self, name, value):
        """Assigning to an attribute that holds a Parameter copies the value
        into it (checked: a finite float array of its shape), so optimizers
        and compiled networks that hold the Parameter keep working; a new
        value of one of the layer's compiled settings makes them rebuild."""
        current = self.__dict__.get(name)
        if isinstance(current, Parameter):
            if value is not current:
                current.assign(value, f"{self!r}.{name}")
            return
        if name == "trainable" and type(self).__module__.startswith("scratchnet."):
            # Keras's switch, which would be taken and do nothing (a user's own
            # layer may have an attribute of that name)
            raise AttributeError(f"{type(self).__name__}: scratchnet layers have no 'trainable' "
                                 "switch; to freeze one, set p.requires_grad = False for each p "
                                 "in layer.parameters()")
        if name in self._compiled_settings and name in self.__dict__:
            value = self._checked_setting(name, value)
            mark_changed(self)
        super().__setattr__(name, value)

    def _checked_setting(self, name, value):
        """A new value of one of _compiled_settings, checked (and put in the
        form) as the constructor does, or ValueError."""
        return value

    def parameters(self):
        return []

    def named_parameters(self):
        """(name, Parameter) pairs in the order of parameters(): the name of
        the attribute that holds each (its position if none does)."""
        attrs = {id(v): k for k, v in vars(self).items() if isinstance(v, Parameter)}
        return [(attrs.get(id(p), str(i)), p) for i, p in enumerate(self.parameters())]

    def zero_grad(self):
        for p in self.parameters():
            p.grad.fill(0.0)

    def reseed(self, rng):
        """Take a new random stream (layers that draw random numbers override)."""

    def get_config(self):
        """Constructor arguments that rebuild this module (for save/load)."""
        return {}

    # layers whose input is images (N, C, H, W): a model starting with one
    # explains what to do when given flat rows
    takes_images = False

    def output_shape(self, in_shape):
        """The per-sample output shape (a tuple, no batch axis) for a
        per-sample input shape; raises ValueError naming the layer and both
        shapes when the input cannot fit. Element-wise layers keep it."""
        return tuple(in_shape)

    def buffers(self):
        """State arrays that are not trained but are saved with the model
        (BatchNorm's running statistics), as {name: array}; loading copies
        into these arrays in place."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_count_in_child)
