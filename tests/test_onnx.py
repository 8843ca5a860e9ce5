"""ONNX export (Sequential.export_onnx) and import (sn.import_onnx):
checked by onnx's checker, run by onnxruntime, against PyTorch's exporter,
and round trips; plus `scratchnet export` on the command line."""
import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import scratchnet as sn  # noqa: E402
from scratchnet.cli import main  # noqa: E402

# matplotlib, onnxruntime, scikit-learn: C++ extensions throwing exceptions,
# which a preloaded libasan cannot intercept (ASan CHECK failure in __cxa_throw)
pytestmark = pytest.mark.sanitizer_skip("C++ extensions of other packages")


def _run(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})[0]


def _mlp():
    """Every activation, dropout, and a final Dense."""
    return sn.Sequential(sn.Dense(12, 16, seed=1), sn.ReLU(), sn.Dense(16, 16, seed=2),
                         sn.LeakyReLU(0.1), sn.Dropout(0.2), sn.Dense(16, 16, seed=3),
                         sn.Sigmoid(), sn.Dense(16, 8, seed=4), sn.Tanh(),
                         sn.Dense(8, 4, seed=5))


def _cnn():
    """Augmentation, padded and strided convolutions with non-square kernels,
    BatchNorm 2d and 1d, max and average pooling."""
    return sn.Sequential(sn.RandomShift(2), sn.Conv2D(1, 4, 3, padding=(1, 2), seed=1),
                         sn.BatchNorm2d(4), sn.ReLU(), sn.MaxPool2D(2),
                         sn.Conv2D(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), seed=2),
                         sn.AvgPool2D(2, stride=1), sn.Flatten(), sn.Dense(48, 10, seed=3),
                         sn.BatchNorm1d(10), sn.ReLU(), sn.Dense(10, 3, seed=4))


def _trained(model, shape, seed=0):
    """The model after two epochs on random data (BatchNorm's running
    statistics move off their start), and 100 inputs of that shape."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((100, *shape)).astype(np.float32)
    model.fit(X, rng.integers(0, 3, 100), sn.Adam(model.parameters(), lr=1e-2), epochs=2,
              batch_size=20, seed=0, verbose=0)
    return model, X


@pytest.mark.parametrize("make, shape", [(_mlp, (12,)), (_cnn, (1, 10, 10))],
                         ids=["mlp", "cnn"])
def test_exported_model_runs_in_onnxruntime_as_predict_proba(tmp_path, make, shape):
    model, X = _trained(make(), shape)
    path = model.export_onnx(tmp_path / "model.onnx", opset=17)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert ops[-1] == "Softmax" and "RandomShift" not in ops
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (X[:1], X):
        np.testing.assert_allclose(_run(path, batch), model.predict_proba(batch), atol=1e-5,
                                   rtol=0)
    again = sn.import_onnx(path)  # the final Softmax becomes the recorded loss
    assert isinstance(again.loss, sn.CrossEntropy)
    assert [type(a) for a in again] == [type(b) for b in model
                                          if type(b) not in (sn.RandomShift, sn.Dropout)]
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


def test_regression_and_binary_outputs_and_global_pooling(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 2, 6, 6)).astype(np.float32)
    reg = sn.Sequential(sn.Conv2D(2, 3, 3, seed=1), sn.GlobalAvgPool2D(), sn.Dense(3, 2, seed=2))
    reg.loss = sn.MSE()
    path = reg.export_onnx(tmp_path / "reg.onnx", input_shape=(2, 6, 6))
    np.testing.assert_allclose(_run(path, X), reg.predict(X), atol=1e-5, rtol=0)
    again = sn.import_onnx(path)
    assert isinstance(again.loss, sn.MSE)
    np.testing.assert_array_equal(again.predict(X), reg.predict(X))
    binary = sn.Sequential(sn.Flatten(), sn.Dense(72, 1, seed=3))
    binary.loss = sn.BinaryCrossEntropy()
    path = binary.export_onnx(tmp_path / "bin.onnx", input_shape=(2, 6, 6))
    np.testing.assert_allclose(_run(path, X)[:, 0], binary.predict_proba(X), atol=1e-5, rtol=0)
    assert isinstance(sn.import_onnx(path).loss, sn.BinaryCrossEntropy)


def test_an_unfitted_classifier_without_dense_layers_ends_with_softmax(tmp_path):
    """A never-fitted model of 3 outputs is a classifier to predict_proba
    whether a Dense layer or a convolution's channels make them: its graph
    ends with Softmax and gives predict_proba (it ended with the raw outputs
    when no Dense layer told the count)."""
    model = sn.Sequential(sn.Conv2D(1, 3, 3, seed=1), sn.ReLU(), sn.GlobalAvgPool2D())
    X = np.random.default_rng(3).standard_normal((5, 1, 6, 6)).astype(np.float32)
    path = model.export_onnx(tmp_path / "gap.onnx", input_shape=(1, 6, 6))
    proto = onnx.load(path)
    assert proto.graph.node[-1].op_type == "Softmax"
    assert proto.graph.output[0].name == "probabilities"
    np.testing.assert_allclose(_run(path, X), model.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_a_model_that_starts_with_flatten_exports_for_the_images_it_took(tmp_path):
    """Flatten then Dense, fitted on (N, 3, 4) samples: the graph takes such
    samples, as the model does (it declared rows of 12, and onnxruntime
    refused the model's own inputs); given input_shape still decides."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((40, 3, 4)).astype(np.float32)
    model = sn.Sequential(sn.Flatten(), sn.Dense(12, 3, seed=0))
    model.fit(X, np.arange(40) % 3, sn.SGD(model.parameters(), lr=0.1), epochs=1, verbose=0)
    path = model.export_onnx(tmp_path / "flat.onnx")
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 4]
    np.testing.assert_allclose(_run(path, X), model.predict_proba(X), rtol=1e-5, atol=1e-6)
    rows = model.export_onnx(tmp_path / "rows.onnx", input_shape=(12,))
    np.testing.assert_allclose(_run(rows, X.reshape(40, 12)), model.predict_proba(X),
                               rtol=1e-5, atol=1e-6)


def test_a_model_that_does_not_start_with_dense_needs_its_input_shape(tmp_path):
    model = sn.Sequential(sn.Conv2D(1, 2, 3), sn.Flatten(), sn.Dense(8, 2))
    with pytest.raises(ValueError, match="input_shape"):
        model.export_onnx(tmp_path / "m.onnx")
    model.predict_proba(np.zeros((1, 1, 4, 4), np.float32))  # now it has seen its input
    assert model.export_onnx(tmp_path / "m.onnx")


def _torch_models():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(16, 8), torch.nn.LeakyReLU(0.2),
                              torch.nn.Linear(8, 3))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.AvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(16, 5))
    with torch.no_grad():  # running statistics that matter
        cnn[1].running_mean.uniform_(-1, 1)
        cnn[1].running_var.uniform_(0.5, 2)
    return torch, [("mlp", mlp.eval(), (20,)), ("cnn", cnn.eval(), (1, 8, 8))]


def test_models_exported_by_pytorch_import_and_predict_as_pytorch(tmp_path):
    torch, models = _torch_models()
    for name, net, shape in models:
        path = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the TorchScript exporter (dynamo=False needs no onnxscript); no
            # constant folding, so BatchNorm stays a BatchNormalization node
            torch.onnx.export(net, (torch.zeros(2, *shape),), str(path), dynamo=False,
                              opset_version=17, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                              do_constant_folding=False)
        ops = {n.op_type for n in onnx.load(path).graph.node}
        assert "Gemm" in ops and (name == "mlp" or "BatchNormalization" in ops)
        model = sn.import_onnx(path)
        X = np.random.default_rng(1).standard_normal((100, *shape)).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(X)).numpy()
        np.testing.assert_allclose(model.predict_logits(X), expected, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(model.predict(X), expected.argmax(1))


def test_pytorch_exports_with_shared_constants_import(tmp_path):
    """PyTorch writes one initializer for equal ones and an Identity node for
    each copy (zero biases, an untouched BatchNorm): such ordinary exports
    were refused as not a chain of layers (found by a reviewer)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nets = {"zero biases": (torch.nn.Sequential(
                torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 3), torch.nn.ReLU(),
                torch.nn.Linear(3, 2)), (4,)),
            "untouched batchnorm": (torch.nn.Sequential(
                torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.BatchNorm2d(3),
                torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2)), (1, 6, 6))}
    for bias in (nets["zero biases"][0][0].bias, nets["zero biases"][0][2].bias):
        torch.nn.init.zeros_(bias)
    for name, (net, shape) in nets.items():
        path = tmp_path / "net.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net.eval(), (torch.zeros(1, *shape),), str(path), dynamo=False,
                              do_constant_folding=False)
        assert "Identity" in {n.op_type for n in onnx.load(path).graph.node}, name
        X = np.random.default_rng(1).standard_normal((20, *shape)).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(X)).numpy()
        np.testing.assert_allclose(sn.import_onnx(path).predict_logits(X), expected, atol=1e-5,
                                   rtol=0, err_msg=name)


def test_import_follows_the_graphs_output_and_broadcast_biases(tmp_path):
    """A node after the declared output was applied too (values 6 off from
    onnxruntime's); a Gemm bias of shape (1, N) failed in NumPy."""
    h = onnx.helper
    f32 = onnx.TensorProto.FLOAT
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    consts = [onnx.numpy_helper.from_array(w, "w"),
              onnx.numpy_helper.from_array(rng.standard_normal((1, 4)).astype(np.float32), "b")]
    io = ([h.make_tensor_value_info("x", f32, ["batch", 3])],
          [h.make_tensor_value_info("y", f32, ["batch", 4])])
    path = tmp_path / "g.onnx"
    onnx.save(h.make_model(h.make_graph([h.make_node("Gemm", ["x", "w", "b"], ["y"])], "g",
                                        *io, consts),
                           opset_imports=[h.make_opsetid("", 17)]), path)
    X = rng.standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(sn.import_onnx(path).predict_logits(X), _run(path, X), atol=1e-5)
    dead = h.make_graph([h.make_node("Gemm", ["x", "w", "b"], ["y"]),
                         h.make_node("Relu", ["y"], ["z"])], "g", *io, consts)
    onnx.save(h.make_model(dead, opset_imports=[h.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="the graph's output 'y' is not its last node's \\('z'\\)"):
        sn.import_onnx(path)


def test_a_linear_without_bias_and_a_damaged_file(tmp_path):
    """PyTorch writes Linear(bias=False) as MatMul, which was refused; a file
    that is not ONNX gave protobuf's DecodeError (a reviewer's notes)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4, bias=False), torch.nn.ReLU(),
                              torch.nn.Linear(4, 3))
    path = tmp_path / "nobias.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, 5),), str(path), dynamo=False)
    assert "MatMul" in {n.op_type for n in onnx.load(path).graph.node}
    X = np.random.default_rng(2).standard_normal((10, 5)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(sn.import_onnx(path).predict_logits(X), expected, atol=1e-5)
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x01junk that is not a protobuf" * 3)
    with pytest.raises(ValueError, match="junk.onnx: not an ONNX model"):
        sn.import_onnx(tmp_path / "junk.onnx")


def test_an_imported_model_keeps_its_input_shape_and_metadata(tmp_path):
    """Import dropped the graph's input shape (a CNN's re-export needed
    input_shape= again) and export did not write model.metadata (the dataset,
    which names the classes): a reviewer's notes."""
    model = sn.Sequential(sn.Conv2D(1, 2, 3, seed=0), sn.Flatten(), sn.Dense(2 * 6 * 6, 3, seed=1))
    model.metadata["dataset"] = "fashion-mnist"
    model.export_onnx(tmp_path / "a.onnx", input_shape=(1, 8, 8))
    back = sn.import_onnx(tmp_path / "a.onnx")
    assert back.metadata == {"dataset": "fashion-mnist"}
    back.export_onnx(tmp_path / "b.onnx")  # no input_shape needed now
    X = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(_run(tmp_path / "b.onnx", X), model.predict_proba(X), atol=1e-6)


def test_import_refuses_other_operators_naming_them(tmp_path):
    h = onnx.helper
    f32 = onnx.TensorProto.FLOAT
    w = onnx.numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    graph = h.make_graph([h.make_node("MatMul", ["x", "w"], ["a"]),
                          h.make_node("Erf", ["a"], ["y"])], "g",
                         [h.make_tensor_value_info("x", f32, ["batch", 3])],
                         [h.make_tensor_value_info("y", f32, ["batch", 3])], [w])
    path = tmp_path / "other.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="unsupported ONNX operators: Erf"):
        sn.import_onnx(path)
    pads = h.make_graph([h.make_node("Conv", ["x", "k"], ["y"], pads=[1, 0, 0, 1])], "g",
                        [h.make_tensor_value_info("x", f32, ["batch", 1, 5, 5])],
                        [h.make_tensor_value_info("y", f32, ["batch", 1, 5, 5])],
                        [onnx.numpy_helper.from_array(np.ones((1, 1, 2, 2), np.float32), "k")])
    onnx.save(h.make_model(pads, opset_imports=[h.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="asymmetric padding"):
        sn.import_onnx(path)


def test_export_on_the_command_line(tmp_path, capsys):
    model, X = _trained(_mlp(), (12,))
    model.save(tmp_path / "m.npz")
    out = tmp_path / "m.onnx"
    assert main(["export", str(tmp_path / "m.npz"), str(out)]) == 0
    np.testing.assert_allclose(_run(out, X), model.predict_proba(X), atol=1e-5, rtol=0)
    assert main(["export", str(tmp_path / "m.npz"), str(out)]) == 1  # exists
    assert "--force" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "m.npz"), str(out), "--force", "--opset", "13"]) == 0
    assert onnx.load(out).opset_import[0].version == 13


def test_a_failed_export_leaves_the_file_it_would_replace(tmp_path, monkeypatch):
    """export_onnx wrote straight into the target: a full disk left a
    truncated ONNX file in place of the one it was replacing (the CLI's
    export --force). It goes through a temporary file, as save does."""
    import builtins
    path = tmp_path / "m.onnx"
    sn.Sequential(sn.Dense(4, 2)).export_onnx(path)
    before = path.read_bytes()
    real_open = builtins.open

    def disk_full(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "w" in mode and os.fspath(file) != os.fspath(path):
            f.write(b"half")
            f.close()
            raise OSError(28, "No space left on device")
        return f

    monkeypatch.setattr(builtins, "open", disk_full)
    with pytest.raises(OSError, match="No space") as failed:
        sn.Sequential(sn.Dense(4, 3)).export_onnx(path)
    monkeypatch.undo()
    assert failed.value.filename == os.fspath(path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.onnx"]
