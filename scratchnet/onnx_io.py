"""ONNX export and import: Sequential.export_onnx(path) and
scratchnet.import_onnx(path). Needs the onnx package (pip install
"scratchnet[onnx]"), imported only here.

Export writes one operator (or two) per layer, with a dynamic batch
dimension ("batch") on the input and the output:

    Dense            Gemm (transB=1: the weight is stored (out, in), as
                     PyTorch's; scratchnet's own is (in, out))
    ReLU, LeakyReLU, Sigmoid, Tanh, Softmax
                     Relu, LeakyRelu (alpha), Sigmoid, Tanh, Softmax (axis -1)
    Dropout          Identity
    Flatten          Flatten (axis 1)
    Reshape          Reshape to [0, *shape] (0 keeps the batch dimension)
    Conv2D           Conv (pads [top, left, bottom, right])
    MaxPool2D        MaxPool; AvgPool2D: AveragePool (no padding)
    GlobalAvgPool2D  GlobalAveragePool then Flatten (scratchnet gives (N, C))
    BatchNorm1d/2d   BatchNormalization (inference: the running statistics;
                     ONNX's momentum is 1 - scratchnet's)
    RandomShift, RandomFlip: dropped (the identity at inference)

What the graph's output means follows predict_proba: a CrossEntropy model
(or one never fitted, with 2+ outputs) ends with Softmax, so the output
"probabilities" equals model.predict_proba; a BinaryCrossEntropy model ends
with Sigmoid (also "probabilities"); an MSE model gives its raw "outputs".
The recorded loss is kept in the model's metadata ("scratchnet.loss").

Import reads a chain of the same operators (as PyTorch's exporter writes
them, too: Gemm with either transB, MatMul by a constant for a Linear without
bias, Identity, Dropout, Identity copies of constants) back into a
Sequential, and refuses any other operator, naming it. A final Softmax
(Sigmoid) becomes the recorded loss CrossEntropy (BinaryCrossEntropy)
instead of a layer, so the imported model's predict_proba gives the graph's
output and the model can be trained further."""
import json
import os

import numpy as np

from ._files import _json_default, write_bytes
from .layers import (Dense, Dropout, Flatten, LeakyReLU, ReLU, Reshape, Sigmoid, Softmax,
                     Tanh)
from .layers_augment import RandomFlip, RandomShift
from .layers_conv import Conv2D
from .layers_norm import BatchNorm1d, BatchNorm2d
from .layers_pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .losses import LOSSES, MSE, BinaryCrossEntropy, CrossEntropy

MIN_OPSET = 13  # Softmax over one axis, Reshape's current form

_ELEMENTWISE = {ReLU: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh"}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export and import need the onnx package: "
                          "pip install \"scratchnet[onnx]\"") from None
    return onnx


class _GraphWriter:
    """Nodes and initializers of a chain, each node reading the last output."""

    def __init__(self, onnx, input_name):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes, self.initializers = [], []
        self.last = input_name

    def constant(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, *extra_inputs, **attributes):
        out = f"{op.lower()}_{len(self.nodes)}"
        self.nodes.append(self.helper.make_node(op, [self.last, *extra_inputs], [out],
                                                name=f"{op}_{len(self.nodes)}", **attributes))
        self.last = out
        return out


def _input_shape(model, input_shape):
    """The per-sample input shape: given, else the one the model last took
    (images, for one that starts with Flatten: a graph for rows would refuse
    them), else a Dense layer's rows."""
    if input_shape is not None:
        return tuple(int(d) for d in input_shape)
    checked = getattr(model, "_checked_input", None)
    if checked is not None and checked[0] == tuple(model.layers):
        return tuple(checked[1])
    if model._first_dense_index() is not None:
        return (model.in_features,)
    raise ValueError("export_onnx: this model does not start with Dense, so the shape of its "
                     "input is unknown; give it, e.g. input_shape=(1, 28, 28)")


def _final_activation(model, in_shape):
    """'Softmax', 'Sigmoid' or None: what turns the outputs into predict_proba's
    (for inputs of in_shape per sample: a model never fitted is a classifier
    by its output count, as predict_proba takes it)."""
    kind = model._loss_kind(in_shape)
    if kind is CrossEntropy and not isinstance(model._output_layer(), Softmax):
        return "Softmax"
    if kind is BinaryCrossEntropy:
        return "Sigmoid"
    return None


def export_onnx(model, path, opset=17, input_shape=None):
    """Write model as an ONNX file at path (see the module's notes); returns path.
    input_shape: the per-sample input shape, needed when the model does not
    start with Dense and has not yet seen input (e.g. (1, 28, 28))."""
    onnx = _onnx()
    helper = onnx.helper
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"export_onnx: opset must be an int from {MIN_OPSET} to "
                         f"{onnx.defs.onnx_opset_version()}, got {opset!r}")
    if not model.layers:
        raise ValueError("export_onnx: this Sequential has no layers")
    in_shape = _input_shape(model, input_shape)
    out_shape = model._shapes(in_shape)[-1]  # raises if in_shape does not fit
    g = _GraphWriter(onnx, "input")
    for layer in model.layers:
        _export_layer(g, layer)
    final = _final_activation(model, in_shape)
    if final is not None:
        g.node(final, **({"axis": -1} if final == "Softmax" else {}))
    output = ("probabilities" if final is not None or isinstance(model._output_layer(), Softmax)
              else "outputs")
    g.nodes[-1].output[0] = output
    f32 = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes, "scratchnet.Sequential",
        [helper.make_tensor_value_info("input", f32, ["batch", *in_shape])],
        [helper.make_tensor_value_info(output, f32, ["batch", *out_shape])],
        g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="scratchnet",
                                   ir_version=helper.find_min_ir_version_for(opsets))
    from ._version import __version__
    onnx_model.producer_version = __version__
    props = {}
    if model.loss is not None:
        props["scratchnet.loss"] = type(model.loss).__name__
    if model.metadata:  # JSON (save checks that): the dataset, for class names
        props["scratchnet.metadata"] = json.dumps(model.metadata, default=_json_default)
    if props:
        helper.set_model_props(onnx_model, props)
    onnx.checker.check_model(onnx_model)
    path = os.fspath(path)
    # atomically, as save: a failed write (a full disk) left a truncated file
    # in place of the one --force replaced
    write_bytes(path, onnx_model.SerializeToString(), "export_onnx")
    return path


def _export_layer(g, layer):
    kind = type(layer)
    prefix = f"l{len(g.nodes)}"
    if kind is Dense:
        g.node("Gemm", g.constant(f"{prefix}.weight", layer.weight.data.T.copy()),
               g.constant(f"{prefix}.bias", layer.bias.data), transB=1)
    elif kind in _ELEMENTWISE:
        g.node(_ELEMENTWISE[kind])
    elif kind is LeakyReLU:
        g.node("LeakyRelu", alpha=layer.negative_slope)
    elif kind is Softmax:
        g.node("Softmax", axis=-1)
    elif kind is Dropout:
        g.node("Identity")
    elif kind is Flatten:
        g.node("Flatten", axis=1)
    elif kind is Reshape:
        g.node("Reshape", g.constant(f"{prefix}.shape", np.array([0, *layer.shape], np.int64)))
    elif kind is Conv2D:
        (ph, pw), (kh, kw) = layer.padding, layer.kernel_size
        g.node("Conv", g.constant(f"{prefix}.weight", layer.weight.data),
               g.constant(f"{prefix}.bias", layer.bias.data), kernel_shape=[kh, kw],
               strides=list(layer.stride), pads=[ph, pw, ph, pw])
    elif kind in (MaxPool2D, AvgPool2D):
        g.node("MaxPool" if kind is MaxPool2D else "AveragePool",
               kernel_shape=list(layer.kernel_size), strides=list(layer.stride))
    elif kind is GlobalAvgPool2D:
        g.node("GlobalAveragePool")
        g.node("Flatten", axis=1)
    elif kind in (BatchNorm1d, BatchNorm2d):
        g.node("BatchNormalization", g.constant(f"{prefix}.scale", layer.weight.data),
               g.constant(f"{prefix}.bias", layer.bias.data),
               g.constant(f"{prefix}.mean", layer.running_mean),
               g.constant(f"{prefix}.var", layer.running_var),
               epsilon=layer.eps, momentum=1.0 - layer.momentum)
    elif kind in (RandomShift, RandomFlip):
        pass  # the identity at inference
    else:
        raise ValueError(f"export_onnx: no ONNX operator for layer {kind.__name__}")


# ---- import ----

SUPPORTED = ("Gemm", "MatMul", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softmax", "Identity",
             "Dropout", "Flatten", "Reshape", "Conv", "MaxPool", "AveragePool",
             "GlobalAveragePool", "BatchNormalization")


class _Reader:
    """The constants of a graph (initializers and Constant nodes) and its nodes."""

    def __init__(self, onnx, graph):
        self.onnx = onnx
        self.constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant":
                attr = node.attribute[0]
                value = onnx.helper.get_attribute_value(attr)
                self.constants[node.output[0]] = (onnx.numpy_helper.to_array(value)
                                                  if attr.name == "value" else np.asarray(value))
            elif node.op_type == "Identity" and node.input and node.input[0] in self.constants:
                # a copy of a constant: PyTorch writes one for each initializer
                # equal to an earlier one (zero biases, an untouched BatchNorm)
                self.constants[node.output[0]] = self.constants[node.input[0]]
            else:
                self.nodes.append(node)

    def attrs(self, node):
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, node, i, what):
        if len(node.input) <= i or not node.input[i]:
            return None
        if node.input[i] not in self.constants:
            raise ValueError(f"import_onnx: {node.op_type} node {node.name!r}: its {what} "
                             f"({node.input[i]!r}) is not a constant")
        return np.asarray(self.constants[node.input[i]], dtype=np.float32)


def _decimal(value):
    """A float attribute (stored as float32) as the decimal it was written
    from: 1e-5, not 9.99999974738e-06."""
    return float(f"{float(value):.7g}")


def _refuse(node, what):
    raise ValueError(f"import_onnx: {node.op_type} node {node.name!r}: {what} is not supported")


def _pads(node, attrs, n_spatial=2):
    """(top, left) padding from pads [top, left, bottom, right]; refused if asymmetric."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        _refuse(node, f"auto_pad={attrs['auto_pad']!r}")
    pads = list(attrs.get("pads", [0] * 2 * n_spatial))
    if pads[:n_spatial] != pads[n_spatial:]:
        _refuse(node, f"asymmetric padding {pads} ([top, left, bottom, right])")
    return tuple(pads[:n_spatial])


def _gemm(r, node):
    a = r.attrs(node)
    if a.get("transA", 0):
        _refuse(node, "transA=1")
    w = r.const(node, 1, "weight") * np.float32(a.get("alpha", 1.0))
    w = w.T if a.get("transB", 0) else w  # scratchnet's Dense weight is (in, out)
    b = r.const(node, 2, "bias")
    if b is not None and b.ndim == 2 and b.shape[0] == 1:
        b = b[0]  # (1, N), broadcast over the rows as ONNX allows
    b = np.zeros(w.shape[1], np.float32) if b is None else \
        np.broadcast_to(b * np.float32(a.get("beta", 1.0)), (w.shape[1],))
    dense = Dense(w.shape[0], w.shape[1])
    dense.weight.assign(np.ascontiguousarray(w))
    dense.bias.assign(b)
    return [dense]


def _conv(r, node):
    a = r.attrs(node)
    if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
        _refuse(node, f"group={a.get('group', 1)}, dilations={a.get('dilations')}")
    w = r.const(node, 1, "weight")
    if w.ndim != 4:
        _refuse(node, f"a weight of shape {w.shape} (only 2-D convolutions)")
    if "kernel_shape" in a and list(a["kernel_shape"]) != list(w.shape[2:]):
        _refuse(node, f"kernel_shape {a['kernel_shape']} unlike the weight's {w.shape}")
    conv = Conv2D(w.shape[1], w.shape[0], w.shape[2:], stride=tuple(a.get("strides", [1, 1])),
                  padding=_pads(node, a))
    conv.weight.assign(w)
    b = r.const(node, 2, "bias")
    conv.bias.assign(np.zeros(w.shape[0], np.float32) if b is None else b)
    return [conv]


def _pool(r, node):
    a = r.attrs(node)
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) \
            or a.get("storage_order", 0) or any(_pads(node, a)):
        _refuse(node, "padding, ceil_mode, dilations or storage_order")
    if len(node.output) > 1 and node.output[1]:
        _refuse(node, "the Indices output")
    cls = MaxPool2D if node.op_type == "MaxPool" else AvgPool2D
    return [cls(tuple(a["kernel_shape"]), stride=tuple(a.get("strides", a["kernel_shape"])))]


def _batchnorm(r, node, rank):
    a = r.attrs(node)
    if a.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
        _refuse(node, "training mode")
    scale, bias, mean, var = (r.const(node, i, what) for i, what in
                              enumerate(("scale", "B", "mean", "var"), start=1))
    cls = BatchNorm2d if rank == 4 else BatchNorm1d
    bn = cls(scale.shape[0], momentum=_decimal(1.0 - _decimal(a.get("momentum", 0.9))),
             eps=_decimal(a.get("epsilon", 1e-5)))
    bn.weight.assign(scale)
    bn.bias.assign(bias)
    bn.running_mean[...] = mean
    bn.running_var[...] = var
    return [bn]


def _softmax_axis_ok(node, attrs, rank, opset):
    axis = attrs.get("axis", -1 if opset >= 13 else 1)
    return axis in (-1, rank - 1) and (opset >= 13 or rank == 2)


def import_onnx(path):
    """A Sequential from the ONNX model at path (see the module's notes)."""
    onnx = _onnx()
    from .model import Sequential
    try:
        proto = onnx.load(os.fspath(path))
    except OSError:
        raise
    except Exception as exc:  # protobuf's DecodeError and the like
        raise ValueError(f"import_onnx: {path}: not an ONNX model ({type(exc).__name__}: "
                         f"{exc})") from None
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    r = _Reader(onnx, graph)
    unsupported = sorted({n.op_type for n in r.nodes if n.op_type not in SUPPORTED})
    if unsupported:
        raise ValueError(f"import_onnx: {path}: unsupported ONNX operators: "
                         f"{', '.join(unsupported)} (scratchnet reads {', '.join(SUPPORTED)})")
    inputs = [i for i in graph.input if i.name not in r.constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"import_onnx: {path}: expected one input and one output, got "
                         f"{len(inputs)} and {len(graph.output)}")
    rank = len(inputs[0].type.tensor_type.shape.dim)
    last, layers, final = inputs[0].name, [], None
    for i, node in enumerate(r.nodes):
        if not node.input or node.input[0] != last:
            raise ValueError(f"import_onnx: {path}: not a chain of layers: {node.op_type} node "
                             f"{node.name!r} does not read the output of the node before it")
        last = node.output[0]
        op, a = node.op_type, r.attrs(node)
        is_last = i == len(r.nodes) - 1
        if op == "Gemm":
            layers += _gemm(r, node)
            rank = 2
        elif op == "MatMul":  # PyTorch's Linear(bias=False): a Dense with a zero bias
            w = r.const(node, 1, "weight")
            if w is None or w.ndim != 2 or rank != 2:
                _refuse(node, "a product other than (batch, in) by a constant (in, out) matrix")
            dense = Dense(w.shape[0], w.shape[1])
            dense.weight.assign(w)
            dense.bias.assign(np.zeros(w.shape[1], np.float32))
            layers.append(dense)
        elif op in ("Relu", "Sigmoid", "Tanh"):
            if is_last and op == "Sigmoid":
                final = BinaryCrossEntropy
            else:
                layers.append({"Relu": ReLU, "Sigmoid": Sigmoid, "Tanh": Tanh}[op]())
        elif op == "LeakyRelu":
            layers.append(LeakyReLU(_decimal(a.get("alpha", 0.01))))
        elif op == "Softmax":
            if not _softmax_axis_ok(node, a, rank, opset):
                _refuse(node, f"axis={a.get('axis')} (softmax over the last axis only)")
            if is_last:
                final = CrossEntropy
            else:
                layers.append(Softmax())
        elif op in ("Identity", "Dropout"):
            if len([o for o in node.output if o]) > 1:
                _refuse(node, "the mask output")
        elif op == "Flatten":
            if a.get("axis", 1) != 1:
                _refuse(node, f"axis={a['axis']}")
            layers.append(Flatten())
            rank = 2
        elif op == "Reshape":
            shape = r.constants.get(node.input[1]) if len(node.input) > 1 else None
            if shape is None or len(shape) < 2 or shape[0] not in (0, -1) \
                    or (shape[0] == -1 and -1 in shape[1:]) or 0 in shape[1:]:
                _refuse(node, f"reshaping to {shape} (only [0 or -1, *per-sample shape])")
            dims = [int(d) for d in shape[1:]]
            layers.append(Reshape(*dims))
            rank = len(shape)
        elif op == "Conv":
            layers += _conv(r, node)
            rank = 4
        elif op in ("MaxPool", "AveragePool"):
            layers += _pool(r, node)
        elif op == "GlobalAveragePool":
            layers.append(GlobalAvgPool2D())
            following = r.nodes[i + 1].op_type if not is_last else None
            if following != "Flatten":
                layers.append(Reshape(-1, 1, 1))  # ONNX keeps (N, C, 1, 1)
        elif op == "BatchNormalization":
            layers += _batchnorm(r, node, rank)
    if not layers:
        raise ValueError(f"import_onnx: {path}: the graph holds no layers")
    if last != graph.output[0].name:
        # the chain read past the output (a node after it): its layers would
        # be applied too, giving other values than the graph
        raise ValueError(f"import_onnx: {path}: not a chain of layers: the graph's output "
                         f"{graph.output[0].name!r} is not its last node's ({last!r})")
    model = Sequential(*layers)
    props = {p.key: p.value for p in proto.metadata_props}
    recorded = props.get("scratchnet.loss")
    try:
        metadata = json.loads(props.get("scratchnet.metadata", "{}"))
    except ValueError:
        metadata = None
    if isinstance(metadata, dict):
        model.metadata.update(metadata)
    # the per-sample shape the graph takes, when it gives every one: a
    # re-export knows it as for a model that has seen input
    dims = inputs[0].type.tensor_type.shape.dim[1:]
    if dims and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
        shape = tuple(d.dim_value for d in dims)
        try:
            model._shapes(shape)  # recorded only as a shape the layers take
        except ValueError:
            pass
        else:
            model._checked_input = (tuple(model.layers), shape)
    if final is not None:
        model.loss = final()
    elif recorded in LOSSES and LOSSES[recorded] is MSE:
        model.loss = MSE()
    return model
