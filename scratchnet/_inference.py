"""The inference path of networks the fused MLP does not cover: a Sequential
of convolutions, pooling, batch norm, dense layers and activations becomes
one C object, scratchnet._core.Net, that runs a batch through every layer in
one call (csrc/sn_net.c), with no Python between the layers. It computes
what the layers' own forward(training=False) computes, with the same
kernels. Sequential builds one per input shape it is given and falls back to
the layer-by-layer path for any layer not listed here.

SCRATCHNET_FUSED=0 (read at import, see _fused) turns this path off too."""
from . import _core, _fused
from .layers import Dense, Dropout, Flatten, LeakyReLU, ReLU, Reshape, Sigmoid, Softmax, Tanh
from .layers_augment import RandomFlip, RandomShift
from .layers_conv import Conv2D
from .layers_norm import BatchNorm1d, BatchNorm2d
from .layers_pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D

# the identity at inference, or a relabelling of a contiguous sample
_NO_OPERATION = (Flatten, Reshape, Dropout, RandomShift, RandomFlip)
# floats of one of the two activation buffers at most: bounds the samples
# per chunk (16 MB: 227 MNIST images through a 5x5x32 convolution)
_CHUNK_FLOATS = 1 << 22
_ACTIVATIONS = {ReLU: "relu", LeakyReLU: "leaky_relu", Sigmoid: "sigmoid", Tanh: "tanh"}


def _size(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _image(shape):
    """C, H, W of a per-sample shape (features: H = W = 1; BatchNorm1d's
    (F, L): H = L)."""
    return {"C": shape[0], "H": shape[1] if len(shape) > 1 else 1,
            "W": shape[2] if len(shape) > 2 else 1}


def _operation(layer, shape):
    """The C operation of layer for per-sample input shape, or None if it
    has no C operation of its own (raises KeyError for a layer not covered)."""
    kind = type(layer)
    if kind in _NO_OPERATION:
        return None
    op = {"in": _size(shape)}
    if kind is Dense:
        op.update(kind="dense", w=layer.weight.data, b=layer.bias.data)
    elif kind is Conv2D:
        op.update(kind="conv2d", **_image(shape), K=layer.out_channels, w=layer.weight.data,
                  b=layer.bias.data)
        (op["kh"], op["kw"]), (op["sh"], op["sw"]) = layer.kernel_size, layer.stride
        op["ph"], op["pw"] = layer.padding
    elif kind in (MaxPool2D, AvgPool2D):
        op.update(kind="maxpool2d" if kind is MaxPool2D else "avgpool2d", **_image(shape))
        (op["kh"], op["kw"]), (op["sh"], op["sw"]) = layer.kernel_size, layer.stride
    elif kind is GlobalAvgPool2D:
        op.update(kind="global_avgpool", **_image(shape))
    elif kind in (BatchNorm1d, BatchNorm2d):
        op.update(kind="batchnorm", **_image(shape), w=layer.weight.data, b=layer.bias.data,
                  mean=layer.running_mean, var=layer.running_var, eps=layer.eps)
    elif kind in _ACTIVATIONS:
        op.update(kind="act", act=_ACTIVATIONS[kind],
                  act_param=getattr(layer, "negative_slope", 0.0))
        if op["act_param"] < 0:
            raise KeyError("a leaky ReLU of negative slope")  # the C kernels assume >= 0
    elif kind is Softmax:
        op.update(kind="softmax", K=shape[-1])
    else:
        raise KeyError(kind.__name__)
    op["out"] = _size(layer.output_shape(shape))
    return op


def _fuse_activations(ops):
    """A Dense followed by an activation becomes one operation (the GEMM
    applies it to each tile it writes)."""
    fused = []
    for op in ops:
        if op["kind"] == "act" and fused and fused[-1]["kind"] == "dense" \
                and fused[-1].get("act", "none") == "none":
            fused[-1].update(act=op["act"], act_param=op["act_param"])
        else:
            fused.append(op)
    return fused


def build(layers, in_shape, max_batch):
    """The C network for samples of per-sample shape in_shape, or None when a
    layer is not covered, nothing is left to compute, the output is not one
    vector per sample, or the path is off. The shapes must already have been
    checked (Sequential._shapes)."""
    if not _fused.ENABLED:
        return None
    ops, shape = [], tuple(in_shape)
    widest = _size(shape)
    try:
        for layer in layers:
            op = _operation(layer, shape)
            if op is not None:
                ops.append(op)
            shape = tuple(layer.output_shape(shape))
            widest = max(widest, _size(shape))
    except KeyError:
        return None
    if not ops or len(shape) != 1:
        return None
    rows = max(1, min(max_batch, _CHUNK_FLOATS // widest))
    return _core.Net(_fuse_activations(ops), tuple(in_shape), shape, rows)
