"""Arrays that start on a cache line (64 bytes).

NumPy's data start on malloc's 16-byte alignment: 16, 32 or 48 bytes past a
line, or on one only by chance. The C kernels read and write rows of
weights, gradients and optimizer state 16 floats (one 64-byte vector of
AVX-512) at a time: off a line, every such vector straddles two lines. And
the training step splits each row of its buffers between its threads at a
multiple of 16 floats (csrc/sn_mlp_step.c): whole lines when the row's width
is a multiple of 16 floats too (784, 128, 512 ...); misaligned, each row had
a line both threads write, moved between their cores again and again (false
sharing)."""
import numpy as np

LINE = 64


def _on_lines(shape, dtype, allocate):
    """A view of shape and dtype into bytes from allocate (np.empty or
    np.zeros), one line more than it needs, from their first line boundary."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = allocate(nbytes + LINE, np.uint8)
    start = -raw.ctypes.data % LINE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def empty_on_lines(shape, dtype=np.float32):
    """np.empty whose data start on a 64-byte boundary."""
    return _on_lines(shape, dtype, np.empty)


def zeros_on_lines(shape, dtype=np.float32):
    """np.zeros whose data start on a 64-byte boundary (calloc'd: pages on first use)."""
    return _on_lines(shape, dtype, np.zeros)


def ones_on_lines(shape, dtype=np.float32):
    """np.ones whose data start on a 64-byte boundary."""
    out = empty_on_lines(shape, dtype)
    out[...] = 1
    return out


def on_lines(a):
    """a itself if it starts on a line, else a copy that does (same dtype and shape)."""
    if a.ctypes.data % LINE == 0:
        return a
    out = empty_on_lines(a.shape, a.dtype)
    out[...] = a
    return out
