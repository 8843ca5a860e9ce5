"""The whole-network inference path (scratchnet._core.Net, csrc/sn_net.c):
the same outputs as the layers' own forward(training=False), for every
layer it covers, in chunks, after the weights change, from several threads,
and a fall-back to the layer-by-layer path for what it does not cover."""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import _inference
from scratchnet.module import Module


def layer_by_layer(model, X):
    """The reference: each layer's forward, in inference mode."""
    y = X
    for layer in model.layers:
        y = layer.forward(y, training=False)
    return np.array(y)


def trained_statistics(model, X):
    """Moves every BatchNorm's running statistics (and so its inference
    output) away from the initial zeros and ones."""
    for _ in range(3):
        model.forward(X, training=True)


def every_layer_network(seed=0):
    sn.manual_seed(seed)
    return sn.Sequential(
        sn.RandomShift(1), sn.RandomFlip(),
        sn.Conv2D(2, 4, (3, 2), stride=(1, 2), padding=(1, 2)), sn.BatchNorm2d(4), sn.ReLU(),
        sn.MaxPool2D(2), sn.Conv2D(4, 5, 2), sn.LeakyReLU(0.1), sn.AvgPool2D((2, 1), stride=1),
        sn.Tanh(), sn.Reshape(5, 2, -1), sn.Sigmoid(), sn.Flatten(), sn.Dropout(0.3),
        sn.Dense(5 * 2 * 2, 7), sn.BatchNorm1d(7), sn.ReLU(), sn.Dense(7, 6), sn.LeakyReLU(0.2),
        sn.Dense(6, 4))


def pooled_network(seed=0):
    sn.manual_seed(seed)
    return sn.Sequential(sn.Conv2D(3, 4, 1), sn.Softmax(), sn.GlobalAvgPool2D(), sn.Tanh(),
                         sn.Dense(4, 3), sn.Softmax())  # the first Softmax: over each row


def elementwise_first_network(seed=0):
    """Its first operation could run in place: in the caller's input."""
    sn.manual_seed(seed)
    return sn.Sequential(sn.BatchNorm2d(2), sn.Sigmoid(), sn.Flatten(), sn.Dense(2 * 3 * 4, 3))


def images(shape, n, seed=0):
    return np.random.default_rng(seed).standard_normal((n,) + shape).astype(np.float32)


@pytest.mark.parametrize("build, shape", [(every_layer_network, (2, 9, 8)),
                                          (pooled_network, (3, 5, 4)),
                                          (elementwise_first_network, (2, 3, 4))])
@pytest.mark.parametrize("n", [1, 2, 37])
def test_the_c_network_gives_the_layers_outputs(build, shape, n):
    model = build()
    X = images(shape, n)
    X_before = X.copy()
    trained_statistics(model, images(shape, 16, seed=1))
    want = layer_by_layer(model, X)
    got = model.predict_logits(X)
    assert model._net(shape) is not None  # the C path ran
    np.testing.assert_array_equal(X, X_before)  # the input is read, never written
    # the same kernels in the same order; a dense layer's activation is
    # applied by the GEMM's epilogue, the same formula
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    probs = model.predict_proba(X)
    if not isinstance(model.layers[-1], sn.Softmax):  # else the outputs are the probabilities
        e = np.exp(want - want.max(axis=1, keepdims=True))
        want = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-7)


def test_a_relu_network_is_bit_identical_to_the_layers():
    sn.manual_seed(3)
    model = sn.Sequential(sn.Conv2D(1, 6, 5), sn.MaxPool2D(2), sn.BatchNorm2d(6), sn.ReLU(),
                          sn.Conv2D(6, 8, 3, padding=1), sn.ReLU(), sn.MaxPool2D(2), sn.Flatten(),
                          sn.Dense(8 * 5 * 5, 16), sn.ReLU(), sn.Dense(16, 10))
    trained_statistics(model, images((1, 24, 24), 8, seed=1))
    X = images((1, 24, 24), 5)
    np.testing.assert_array_equal(model.predict_logits(X), layer_by_layer(model, X))


def test_batches_larger_than_a_chunk_are_cut_into_chunks(monkeypatch):
    model = every_layer_network()
    trained_statistics(model, images((2, 9, 8), 16, seed=1))
    X = images((2, 9, 8), 23)
    whole = model.predict_logits(X)
    monkeypatch.setattr(_inference, "_CHUNK_FLOATS", 5 * 4 * 9 * 6)  # 5 images of the widest
    model._net_cache = None
    assert model._net((2, 9, 8)).max_batch == 5
    # within rounding: a GEMM of fewer than 5 rows (the last chunk) may add
    # in another order
    np.testing.assert_allclose(model.predict_logits(X), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict_logits(X[:3]), whole[:3], rtol=1e-5, atol=1e-6)


def test_changed_weights_and_statistics_are_seen():
    model = every_layer_network()
    X = images((2, 9, 8), 4)
    before = model.predict_logits(X)
    conv, bn = model.layers[2], model.layers[3]
    conv.weight.data = conv.weight.data * 2.0  # a new array: the network is rebuilt
    after_data = model.predict_logits(X)
    assert not np.allclose(after_data, before)
    np.testing.assert_allclose(after_data, layer_by_layer(model, X), rtol=2e-6, atol=1e-7)
    bn.running_mean = np.full(4, 0.5, np.float32)  # replaced
    after_mean = model.predict_logits(X)
    assert not np.allclose(after_mean, after_data)
    np.testing.assert_allclose(after_mean, layer_by_layer(model, X), rtol=2e-6, atol=1e-7)
    bn.running_var[:] = 4.0  # changed in place: read by the same network
    model.layers[-1].bias[...] = 1.5
    after_inplace = model.predict_logits(X)
    assert not np.allclose(after_inplace, after_mean)
    np.testing.assert_allclose(after_inplace, layer_by_layer(model, X), rtol=2e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"running_var: expected shape \(4,\)"):
        bn.running_var = np.ones(5)


def test_a_new_input_shape_gets_its_own_network_and_a_wrong_one_a_clear_error():
    sn.manual_seed(0)
    model = sn.Sequential(sn.Conv2D(1, 2, 3), sn.ReLU(), sn.GlobalAvgPool2D(), sn.Dense(2, 3))
    for shape in [(1, 6, 6), (1, 9, 7), (1, 6, 6)]:
        X = images(shape, 3)
        np.testing.assert_allclose(model.predict_logits(X), layer_by_layer(model, X),
                                   rtol=2e-6, atol=1e-7)
        assert model._net_cache[0][-1] == shape
    with pytest.raises(ValueError, match=r"layer 0: Conv2D.*\(2, 6, 6\)"):
        model.predict_logits(np.zeros((1, 2, 6, 6), np.float32))
    X = images((1, 6, 6), 2)
    X[1, 0, 2, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        model.predict_logits(X)


def test_other_inputs_are_converted_first():
    model = pooled_network()
    X = images((3, 5, 4), 3)
    want = model.predict_logits(X)
    np.testing.assert_array_equal(model.predict_logits(X.astype(np.float64)), want)
    np.testing.assert_array_equal(model.predict_logits(X.tolist()), want)
    strided = np.empty((3, 3, 5, 8), np.float32)[..., ::2]
    strided[...] = X
    np.testing.assert_array_equal(model.predict_logits(strided), want)


class Doubler(Module):
    """A layer the C network does not know: the model falls back to the layers."""

    def forward(self, x, training=False):
        return x * 2.0


def test_a_layer_it_does_not_cover_falls_back_to_the_layers():
    sn.manual_seed(0)
    model = sn.Sequential(sn.Conv2D(1, 2, 3), Doubler(), sn.Flatten(), sn.Dense(2 * 4 * 4, 3))
    X = images((1, 6, 6), 4)
    assert model._net((1, 6, 6)) is None
    np.testing.assert_array_equal(model.predict_logits(X), layer_by_layer(model, X))
    # and nothing to compute (only a relabelling) is left to the layers too
    flat = sn.Sequential(sn.Flatten())
    assert flat._net((1, 6, 6)) is None
    np.testing.assert_array_equal(flat.predict_logits(X), X.reshape(4, -1))


def test_the_path_is_off_with_the_fused_switch(monkeypatch):
    from scratchnet import _fused

    monkeypatch.setattr(_fused, "ENABLED", False)
    model = pooled_network()
    assert model._net((3, 5, 4)) is None
    X = images((3, 5, 4), 2)
    np.testing.assert_array_equal(model.predict_logits(X), layer_by_layer(model, X))


def test_several_threads_get_their_own_answers():
    model = every_layer_network()
    trained_statistics(model, images((2, 9, 8), 16, seed=1))
    inputs = [images((2, 9, 8), n, seed=n) for n in (1, 3, 17, 40)]
    want = [model.predict_logits(X) for X in inputs]
    with ThreadPoolExecutor(4) as pool:  # calls overlap: most find the workspace busy
        got = list(pool.map(lambda j: model.predict_logits(inputs[j % 4]), range(160)))
    for j, out in enumerate(got):
        np.testing.assert_array_equal(out, want[j % 4])


def test_the_c_object_refuses_what_is_not_a_network():
    w = np.ones((4, 3), np.float32)
    ok = {"kind": "dense", "in": 4, "out": 3, "w": w}
    net = sn._core.Net([ok], (4,), (3,), 8)
    np.testing.assert_array_equal(net.predict(np.ones((2, 4), np.float32)), np.full((2, 3), 4.0))
    with pytest.raises(ValueError, match="do not describe a network"):
        sn._core.Net([ok, {"kind": "act", "act": "relu", "in": 4, "out": 4}], (4,), (4,), 8)
    with pytest.raises(ValueError, match="w has 12 elements, expected 20"):
        sn._core.Net([dict(ok, out=5)], (4,), (5,), 8)
    with pytest.raises(ValueError, match="unknown kind"):
        sn._core.Net([dict(ok, kind="lstm")], (4,), (3,), 8)
    with pytest.raises(ValueError, match="do not describe a network"):
        sn._core.Net([{"kind": "conv2d", "in": 16, "out": 9, "C": 1, "H": 4, "W": 4, "K": 1,
                       "kh": 5, "kw": 2, "sh": 1, "sw": 1, "w": np.ones(10, np.float32)}],
                     (1, 4, 4), (9,), 8)  # a 5-row kernel on a 4-row image
    with pytest.raises(TypeError, match="float32"):
        net.predict(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"samples of shape \(4,\)"):
        net.predict(np.ones((2, 5), np.float32))


def test_outputs_that_are_not_finite_are_refused_naming_the_method():
    model = every_layer_network()
    X = images((2, 9, 8), 3)
    model.layers[2].weight[0, 0, 0, 0] = np.inf
    model.layers[2].weight[1, 0, 0, 0] = -np.inf  # inf - inf: NaN through the network
    for method in ("predict", "predict_proba"):
        with pytest.raises(ValueError, match=f"^{method}: the model's outputs contain NaN or inf"):
            getattr(model, method)(X)
    assert not np.isfinite(model.predict_logits(X)).all()  # the raw outputs, as they are


@pytest.mark.parametrize("kind", ["mlp", "net", "layers"])
def test_a_sample_gets_the_same_bits_in_any_batch(kind, monkeypatch):
    """One image alone, in a few rows (the GEMM's unpacked path) or in a
    large batch (the packed path) gives the same bits: both sum each row
    alike (600 inputs: more than one kc block, kc <= 512; 77 hidden: a column rest).
    "mlp": the fused MLP, "net": the C network (a BatchNorm1d takes the
    model off the MLP path), "layers": the layers' own forward."""
    if kind == "layers":
        monkeypatch.setattr(sn.Sequential, "_net", lambda self, in_shape: None)
    sn.manual_seed(3)
    layers = [sn.Dense(600, 77), sn.ReLU(), sn.Dense(77, 10)]
    if kind != "mlp":
        layers.insert(1, sn.BatchNorm1d(77))
    model = sn.Sequential(*layers)
    X = np.random.default_rng(4).standard_normal((40, 600)).astype(np.float32)
    if kind != "mlp":
        trained_statistics(model, X)
    assert (model._plan() is not None) == (kind == "mlp")
    assert (model._net((600,)) is not None) == (kind != "layers")
    whole = model.predict_logits(X)
    for rows in (1, 2, 3, 4, 5, 7):
        for start in range(0, 14, rows):
            np.testing.assert_array_equal(model.predict_logits(X[start:start + rows]),
                                          whole[start:start + rows])


def test_a_layer_built_elsewhere_does_not_make_a_model_rebuild():
    """A compiled network is rebuilt when the model's own arrays or settings
    change, not when any parameter anywhere is made: Parameter.version was
    the only check, and every layer built (another model, sn.load, a
    scikit-learn clone) made every model rebuild at its next call (a
    one-image call 10 -> 90 us)."""
    mlp = sn.Sequential(sn.Dense(6, 5), sn.ReLU(), sn.Dense(5, 3))
    cnn = sn.Sequential(sn.Conv2D(1, 2, 3), sn.ReLU(), sn.Flatten(), sn.Dense(2 * 4 * 4, 3))
    x, images = np.ones((2, 6), np.float32), np.ones((2, 1, 6, 6), np.float32)
    mlp.predict(x), cnn.predict(images)
    plan, net = mlp._plan(), cnn._net((1, 6, 6))
    sn.Dense(2, 2)
    sn.Sequential(sn.LeakyReLU(0.1)).layers[0].negative_slope = 0.2
    assert mlp._plan() is plan and cnn._net((1, 6, 6)) is net
    before = mlp.predict_logits(x)
    mlp.layers[2].weight.data = mlp.layers[2].weight.data * 2  # its own: rebuilt
    assert mlp._plan() is not plan
    assert not np.array_equal(mlp.predict_logits(x), before)
    cnn.layers[1] = sn.LeakyReLU(0.5)
    assert cnn._net((1, 6, 6)) is not net


class _Alarm(Exception):
    pass


@pytest.mark.parametrize("kind", ["mlp", "net"])
def test_a_signal_stops_a_long_predict_between_pieces(kind):
    """predict ran all of X in one C call: a Ctrl-C during a 200,000-row
    predict was heard only when it was done, 7-12 s later. It is now looked
    for between pieces of a few thousand rows (about 50 here), and the
    model works after. The signal comes 20 ms in; it must be heard before
    half of a whole predict's time (timed just before) has gone."""
    import signal
    import time
    layers = [sn.Dense(784, 256), sn.ReLU(), sn.Dense(256, 10)]
    if kind == "net":  # a BatchNorm1d takes the model off the fused MLP path
        layers.insert(1, sn.BatchNorm1d(256))
    model = sn.Sequential(*layers)
    X = np.random.default_rng(0).random((200_000, 784), dtype=np.float32)
    assert (model._plan() is not None) == (kind == "mlp")
    start = time.perf_counter()
    model.predict(X)
    whole = time.perf_counter() - start
    heard = []

    def alarm(signum, frame):
        heard.append(time.perf_counter() - start)
        raise _Alarm

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(_Alarm):
            model.predict(X)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert heard[0] < whole / 2, (heard, whole)
    np.testing.assert_array_equal(model.predict_logits(X[:3]), model.predict_logits(X[:3]))


def test_change_stamps_start_apart_in_each_process():
    """The change stamps counted from 0 in every process: a model pickled in
    one process and changed in another could get the stamp it was compiled
    under, and keep its old network (a reviewer's weights set to zero still
    gave the old outputs). Each process starts at a random count."""
    import subprocess
    import sys
    code = ("import scratchnet as sn; from scratchnet.module import Parameter; "
            "sn.Sequential(sn.Dense(4, 3)); print(Parameter.version)")
    # from the tests' folder: the installed package, not a source tree's (as test_runtime)
    counts = {int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True, timeout=120,
                                 cwd=os.path.dirname(os.path.abspath(__file__))).stdout)
              for _ in range(2)}
    assert len(counts) == 2


def _stamp_count():
    from scratchnet.module import Parameter
    return Parameter.version


def test_a_forked_child_counts_change_stamps_apart_from_its_parent():
    """A child of fork() counted on from its parent's number: a model it made
    and sent back carried stamps the parent then made again, and a change
    of its weights went unseen (a review: zeroed weights gave old outputs)."""
    import multiprocessing
    from scratchnet.module import Parameter
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply(_stamp_count)
    assert child != Parameter.version
