"""The fast path (scratchnet._fused, _core.MLP and the fused dense kernels)
against the layer-by-layer path and float64 references."""
import sys
import threading
import time

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import _core, _fused, _inference

from reference import cross_entropy, layer_forward

ACTS = {"none": None, "relu": sn.ReLU, "leaky_relu": lambda: sn.LeakyReLU(0.1),
        "sigmoid": sn.Sigmoid, "tanh": sn.Tanh}


def data(n=300, features=20, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)) * 2
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.standard_normal((n, features))).astype(np.float32), y


def build(act="relu", seed=0, dropout=0.0, hidden=(16, 12)):
    layers, f = [], 20
    for i, h in enumerate(hidden):
        layers.append(sn.Dense(f, h, seed=seed + i))
        if ACTS[act] is not None:
            layers.append(ACTS[act]())
        if dropout:
            layers.append(sn.Dropout(dropout))
        f = h
    return sn.Sequential(*layers, sn.Dense(f, 5, seed=seed + 9))


def slow_fit(model, *args, **kwargs):
    """fit through the layer-by-layer path (the fast path switched off, as
    SCRATCHNET_FUSED=0 does)."""
    original = _fused.ENABLED
    _fused.ENABLED = False
    try:
        assert _fused.layer_specs(model.layers) is None
        return model.fit(*args, **kwargs)
    finally:
        _fused.ENABLED = original


OPTIMIZERS = {
    "sgd": lambda ps: sn.SGD(ps, lr=0.05),
    "sgd-momentum-nesterov-wd": lambda ps: sn.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                                  weight_decay=1e-3),
    "sgd-dampening-decay": lambda ps: sn.SGD(ps, lr=0.05, momentum=0.8, dampening=0.3,
                                             decay=1e-2),
    "adagrad": lambda ps: sn.AdaGrad(ps, lr=0.05, lr_decay=1e-3, weight_decay=1e-4),
    "rmsprop-centered-momentum": lambda ps: sn.RMSProp(ps, lr=1e-3, momentum=0.5,
                                                       centered=True),
    "adam": lambda ps: sn.Adam(ps, lr=1e-2, weight_decay=1e-4),
    "adamw": lambda ps: sn.AdamW(ps, lr=1e-2),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("act", sorted(ACTS))
def test_fast_fit_matches_layer_by_layer_fit(act, opt_name):
    X, y = data()
    fast, slow = build(act), build(act)
    assert _fused.trainer(fast, OPTIMIZERS[opt_name](fast.parameters()), sn.CrossEntropy(),
                          y, 32) is not None
    h_fast = fast.fit(X, y, optimizer=OPTIMIZERS[opt_name](fast.parameters()), epochs=3,
                      batch_size=32, seed=1, verbose=0)
    h_slow = slow_fit(slow, X, y, optimizer=OPTIMIZERS[opt_name](slow.parameters()), epochs=3,
                      batch_size=32, seed=1, verbose=0)
    np.testing.assert_allclose(h_fast["loss"], h_slow["loss"], rtol=1e-4)
    for a, b in zip(fast.parameters(), slow.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-3, atol=1e-5, err_msg=a.name)


def test_fast_and_slow_fits_can_alternate_on_one_optimizer():
    """State made by one path (momentum buffers, Adam steps) is used by the other."""
    X, y = data()
    for make in (lambda ps: sn.Adam(ps, lr=1e-2), lambda ps: sn.SGD(ps, lr=0.05, momentum=0.9)):
        a, b = build(), build()
        opt_a, opt_b = make(a.parameters()), make(b.parameters())
        a.fit(X, y, optimizer=opt_a, epochs=1, batch_size=50, seed=0, verbose=0)
        slow_fit(a, X, y, optimizer=opt_a, epochs=1, batch_size=50, seed=1, verbose=0)
        slow_fit(b, X, y, optimizer=opt_b, epochs=1, batch_size=50, seed=0, verbose=0)
        b.fit(X, y, optimizer=opt_b, epochs=1, batch_size=50, seed=1, verbose=0)
        assert opt_a.iterations == opt_b.iterations == 12
        for p, q in zip(a.parameters(), b.parameters()):
            np.testing.assert_allclose(p.data, q.data, rtol=1e-3, atol=1e-5)


def test_fast_path_is_taken_only_where_it_applies():
    X, y = data()
    model = build()
    opt = sn.SGD(model.parameters(), lr=0.1)
    assert _fused.trainer(model, opt, sn.CrossEntropy(), y, 32) is not None
    assert _fused.trainer(model, opt, sn.MSE(), y, 32) is None
    onehot = np.eye(5, dtype=np.float32)[y]
    assert _fused.trainer(model, opt, sn.CrossEntropy(), onehot, 32) is None
    partial = sn.SGD(model.parameters()[:2], lr=0.1)
    assert _fused.trainer(model, partial, sn.CrossEntropy(), y, 32) is None
    ends_in_relu = sn.Sequential(sn.Dense(20, 5), sn.ReLU())
    assert _fused.layer_specs(ends_in_relu.layers) is None
    with_softmax = sn.Sequential(sn.Dense(20, 8), sn.Softmax(), sn.Dense(8, 5))
    assert _fused.layer_specs(with_softmax.layers) is None


# batch 8: 38 batches an epoch, which fit gives the C trainer in runs of 2
# (each batch's masks keyed by its place in the run)
@pytest.mark.parametrize("batch_size", [32, 8])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_fast_dropout_training_matches_layer_by_layer(act, batch_size):
    """One dropout stream for both paths: the same seed draws the same masks,
    so the fused C trainer and the layer-by-layer path give the same model.
    Fails if the fused forward ignores the mask or its backward epilogue
    skips the mask multiply (both were seen to pass the suite before)."""
    X, y = data()
    fast, slow = build(act, dropout=0.4), build(act, dropout=0.4)
    kwargs = dict(epochs=2, batch_size=batch_size, seed=3, verbose=0)
    lr = 0.1 * batch_size / 32  # a stable run: rounding differences stay small
    h_fast = fast.fit(X, y, optimizer=sn.SGD(fast.parameters(), lr=lr, momentum=0.9),
                      **kwargs)
    h_slow = slow_fit(slow, X, y, optimizer=sn.SGD(slow.parameters(), lr=lr, momentum=0.9),
                      **kwargs)
    np.testing.assert_allclose(h_fast["loss"], h_slow["loss"], rtol=1e-4)
    for a, b in zip(fast.parameters(), slow.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-3, atol=1e-5, err_msg=a.name)
    # the streams moved on by the same number of masks
    assert [d.calls for d in fast.layers if isinstance(d, sn.Dropout)] == \
        [d.calls for d in slow.layers if isinstance(d, sn.Dropout)] == [2 * -(-300 // batch_size)] * 2


def test_dropout_with_p_0_advances_neither_path_s_stream():
    """Dropout(0) draws no masks on the layer-by-layer path, so the fused
    path must not advance its stream either (the masks after a later change
    of p, and a checkpoint's stream, would differ between the paths)."""
    X, y = data()
    fast = sn.Sequential(sn.Dense(20, 16, seed=0), sn.ReLU(), sn.Dropout(0.0, seed=1),
                         sn.Dense(16, 5, seed=2))
    slow = sn.Sequential(sn.Dense(20, 16, seed=0), sn.ReLU(), sn.Dropout(0.0, seed=1),
                         sn.Dense(16, 5, seed=2))
    assert _fused.layer_specs(fast.layers) is not None
    kwargs = dict(epochs=2, batch_size=32, seed=3, verbose=0)
    fast.fit(X, y, optimizer=sn.SGD(fast.parameters(), lr=0.1), **kwargs)
    slow_fit(slow, X, y, optimizer=sn.SGD(slow.parameters(), lr=0.1), **kwargs)
    assert fast.layers[2].calls == slow.layers[2].calls == 0
    for a, b in zip(fast.parameters(), slow.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-3, atol=1e-5, err_msg=a.name)


def test_fast_dropout_masks_have_the_right_rate_and_scale():
    """Through the fused trainer, with lr 0 the weight gradient of the layer
    after a dropout shows which hidden units were kept: about 1 - p of them,
    scaled by 1 / (1 - p)."""
    rng = np.random.default_rng(0)
    M, K, H, p = 256, 8, 64, 0.25
    W1 = np.eye(K, H, dtype=np.float32)  # hidden unit j < K copies input j
    b1 = np.ones(H, np.float32)          # every hidden unit is 1 + x_j > 0
    W2 = rng.standard_normal((H, 3)).astype(np.float32)
    b2 = np.zeros(3, np.float32)
    grads = [np.zeros_like(a) for a in (W1, b1, W2, b2)]
    mlp = _core.MLP([(W1, b1, grads[0], grads[1], "relu", 0.0, p),
                     (W2, b2, grads[2], grads[3], "none", 0.0, 0.0)], M)
    mlp.set_optimizer("sgd", {"lr": 0.0}, [[], [], [], []], 0, 0)
    mlp.set_dropout_seeds([12345, 0])
    X = np.zeros((M, K), np.float32)  # hidden output is exactly 1 everywhere
    labels = rng.integers(0, 3, M)
    mlp.train(X, labels, np.arange(M), M)
    # the same mask from the Python kernel, keyed the same way (seed + batch 0)
    mask = np.empty((M, H), np.float32)
    _core.dropout_forward(np.ones((M, H), np.float32), np.empty((M, H), np.float32), mask, p,
                          12345)
    assert abs((mask > 0).mean() - (1 - p)) < 0.02
    h = mask.astype(np.float64)
    z = h @ W2
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    dz = (probs - np.eye(3)[labels]) / M
    np.testing.assert_allclose(grads[2], h.T @ dz, rtol=1e-3, atol=1e-6)
    dh = (dz @ W2.T) * mask  # the backward epilogue's mask multiply
    np.testing.assert_allclose(grads[1], dh.sum(0), rtol=1e-3, atol=1e-6)


def test_fast_dropout_training_is_seeded_and_learns():
    X, y = data(n=600)
    results = []
    for _ in range(2):
        model = build(dropout=0.3)
        model.fit(X, y, optimizer=sn.Adam(model.parameters(), lr=1e-2), epochs=5, batch_size=32,
                  seed=4, verbose=0)
        results.append([p.data.copy() for p in model.parameters()])
        assert model.evaluate(X, y)["accuracy"] > 0.9
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("act", sorted(ACTS))
def test_fast_inference_matches_the_reference(act):
    X, _ = data(n=70)
    model = build(act)
    want = X.astype(np.float64)
    for layer in model.layers:
        want = layer_forward(layer, want)
    np.testing.assert_allclose(model.predict_logits(X), want, rtol=1e-4, atol=1e-5)
    # more rows than the workspace: C works through them in chunks
    specs = _fused.layer_specs(model.layers)
    chunked = _fused.build(specs, 16, train=False).predict(X)
    np.testing.assert_allclose(chunked, want, rtol=1e-4, atol=1e-5)
    proba = _fused.build(specs, 16, train=False).predict(X, True)
    e = np.exp(want - want.max(1, keepdims=True))
    np.testing.assert_allclose(proba, e / e.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_inference_sees_replaced_parameter_arrays():
    X, _ = data(n=10)
    model = build()
    before = model.predict_logits(X)
    model.layers[0].weight.data = np.zeros_like(model.layers[0].weight.data)
    after = model.predict_logits(X)
    assert not np.allclose(before, after)
    ref = X.astype(np.float64)
    for layer in model.layers:
        ref = layer_forward(layer, ref)
    np.testing.assert_allclose(after, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act_name, act_code", sorted(_core.ACTIVATIONS.items()))
@pytest.mark.parametrize("M, K, N", [(1, 1, 1), (7, 33, 129), (129, 300, 33), (300, 7, 2)])
def test_mlp_train_step_gradients_match_reference(act_name, act_code, M, K, N):
    """One SGD step with lr 0 through _core.MLP leaves the gradients of a
    two-layer net in .grad: compare with a float64 reference backprop."""
    rng = np.random.default_rng(M + K + N)
    C = 3
    W1 = rng.standard_normal((K, N)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(N).astype(np.float32) * 0.1
    W2 = rng.standard_normal((N, C)).astype(np.float32) * 0.3
    b2 = rng.standard_normal(C).astype(np.float32) * 0.1
    grads = [np.zeros_like(a) for a in (W1, b1, W2, b2)]
    slope = 0.1 if act_name == "leaky_relu" else 0.0
    mlp = _core.MLP([(W1, b1, grads[0], grads[1], act_name, slope, 0.0),
                     (W2, b2, grads[2], grads[3], "none", 0.0, 0.0)], M)
    mlp.set_optimizer("sgd", {"lr": 0.0}, [[], [], [], []], 0, 0)
    X = rng.standard_normal((M, K)).astype(np.float32)
    labels = rng.integers(0, C, M)
    loss_sum, correct = mlp.train(X, labels, np.arange(M), M)

    acts = {"none": lambda z: z, "relu": lambda z: np.maximum(z, 0),
            "leaky_relu": lambda z: np.where(z > 0, z, slope * z),
            "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh}
    dacts = {"none": lambda h: np.ones_like(h), "relu": lambda h: (h > 0) * 1.0,
             "leaky_relu": lambda h: np.where(h > 0, 1.0, slope),
             "sigmoid": lambda h: h * (1 - h), "tanh": lambda h: 1 - h ** 2}
    x64 = X.astype(np.float64)
    h = acts[act_name](x64 @ W1 + b1)
    z = h @ W2 + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(C)[labels]) / M
    dh = dz @ W2.T.astype(np.float64) * dacts[act_name](h)
    want = [x64.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]
    assert loss_sum / M == pytest.approx(cross_entropy(z, labels), rel=1e-4)
    assert correct == int((z.argmax(1) == labels).sum())
    for g, w, name in zip(grads, want, ("W1", "b1", "W2", "b2")):
        np.testing.assert_allclose(g, w, rtol=2e-3, atol=2e-5 * np.sqrt(K), err_msg=name)


def test_mlp_rejects_bad_arguments():
    W = np.zeros((4, 3), np.float32)
    b = np.zeros(3, np.float32)
    ok = [(W, b, W.copy(), b.copy(), "none", 0.0, 0.0)]
    # the last layer gives the logits: training it through an activation or
    # dropout would not be the loss the trainer computes
    for act, dropout in (("relu", 0.0), ("none", 0.5)):
        with pytest.raises(ValueError, match="logits"):
            _core.MLP([(W, b, W.copy(), b.copy(), act, 0.0, dropout)], 8)
    _core.MLP([(W, b, None, None, "relu", 0.0, 0.0)], 8, False)  # inference: any activation
    with pytest.raises(ValueError, match="activation"):
        _core.MLP([(W, b, W.copy(), b.copy(), "gelu", 0.0, 0.0)], 8)
    with pytest.raises(ValueError):
        _core.MLP([], 8)
    with pytest.raises(ValueError, match="takes 5 features"):
        _core.MLP(ok + [(np.zeros((5, 2), np.float32), np.zeros(2, np.float32),
                         np.zeros((5, 2), np.float32), np.zeros(2, np.float32), "none", 0, 0)], 8)
    with pytest.raises(TypeError):
        _core.MLP([(W.astype(np.float64), b, W.copy(), b.copy(), "relu", 0.0, 0.0)], 8)
    mlp = _core.MLP(ok, 8)
    X = np.zeros((10, 4), np.float32)
    with pytest.raises(RuntimeError, match="set_optimizer"):
        mlp.train(X, np.zeros(10, np.int64), np.arange(10), 8)
    mlp.set_optimizer("sgd", {"lr": 0.1}, [[], []], 0, 0)
    with pytest.raises(ValueError, match="labels"):
        mlp.train(X, np.full(10, 3), np.arange(10), 8)
    with pytest.raises(ValueError, match="order"):
        mlp.train(X, np.zeros(10, np.int64), np.array([0, 10]), 8)
    with pytest.raises(ValueError, match="batch_size"):
        mlp.train(X, np.zeros(10, np.int64), np.arange(10), 9)
    with pytest.raises(ValueError, match="4 features"):
        mlp.predict(np.zeros((9, 5), np.float32))
    with pytest.raises(TypeError, match="float32"):
        mlp.predict(np.zeros((9, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        mlp.predict(np.full((2, 4), np.nan, np.float32))


def inference_mlp(seed=0, features=4, hidden=6, classes=3):
    rng = np.random.default_rng(seed)
    W1 = rng.standard_normal((features, hidden)).astype(np.float32)
    W2 = rng.standard_normal((hidden, classes)).astype(np.float32)
    layers = [(W1, rng.standard_normal(hidden).astype(np.float32), None, None, "relu", 0.0, 0.0),
              (W2, rng.standard_normal(classes).astype(np.float32), None, None, "none", 0.0, 0.0)]
    return _core.MLP(layers, 16, False), layers


class Rows(np.ndarray):
    """An ndarray subclass, which may mean more than its data."""


def test_try_predict_runs_plain_rows_and_declines_the_rest():
    """try_predict, the one-image path's single call: predict's result for a
    non-empty 2-D aligned C-contiguous native float32 X of the network's
    width (an ndarray itself, not a subclass), None for anything else (the
    caller converts it), never an error for the array's form."""
    mlp, _ = inference_mlp()
    X = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    for softmax in (False, True):
        want = mlp.predict(X, softmax)
        assert np.array_equal(mlp.try_predict(X, softmax), want)
        assert np.array_equal(mlp.try_predict(X[2:3], softmax), want[2:3])
    misaligned = np.zeros(X.nbytes + 4, np.uint8)[1:1 + X.nbytes].view(np.float32).reshape(5, 4)
    assert not misaligned.flags.aligned
    declined = {"float64": X.astype(np.float64), "big-endian": X.astype(">f4"),
                "Fortran order": np.asfortranarray(X), "a column slice": X[:, :3],
                "every other row": X[::2], "no rows": X[:0], "1-D": X[0], "3-D": X[None],
                "a list": X.tolist(), "misaligned": misaligned,
                "wider": np.zeros((2, 5), np.float32), "a masked array": np.ma.masked_array(X),
                "a subclass": X.view(Rows)}
    for name, bad in declined.items():
        assert mlp.try_predict(bad) is None, name


@pytest.mark.parametrize("network", ["MLP", "Net"])
def test_a_long_predict_lets_other_python_threads_run(network):
    """Only a predict of a few microseconds keeps the GIL (_KEEP_GIL_MACS):
    a long one lets it go, so another Python thread, woken meanwhile, runs
    while the predict goes on (with the GIL held, only as it returns)."""
    if network == "MLP":
        mlp, _ = inference_mlp(features=64, hidden=256, classes=10)
    else:  # the whole-network path (a Softmax layer at the end takes it there)
        layers = [sn.Dense(64, 256, seed=0), sn.ReLU(), sn.Dense(256, 10, seed=1), sn.Softmax()]
        mlp = _inference.build(layers, (64,), 2048)
        assert isinstance(mlp, _core.Net)
    X = np.random.default_rng(3).standard_normal((100_000, 64)).astype(np.float32)
    woke = []

    def sleeper():
        time.sleep(0.002)
        woke.append(time.perf_counter())

    thread = threading.Thread(target=sleeper)
    thread.start()
    start = time.perf_counter()
    mlp.predict(X)  # ~1.9 billion multiply-adds: tens of milliseconds or more
    took = time.perf_counter() - start
    thread.join()
    # with the GIL held it runs as the predict returns, before this thread goes on
    assert woke[0] - start < took / 2, \
        f"the other thread ran {woke[0] - start:.4f} s into a {took:.4f} s predict"


def test_predict_checks_inputs_and_outputs_of_every_piece():
    """predict runs X in pieces of _SIGNAL_ROWS rows (Ctrl-C is heard between
    them), the first in the same release of the GIL as the check of X: a
    non-finite value anywhere in X is refused before any piece, and a
    non-finite output in the last piece as in the first."""
    mlp, layers = inference_mlp()
    n = 2 * 4096 + 3
    X = np.random.default_rng(2).standard_normal((n, 4)).astype(np.float32)
    whole = mlp.predict(X, True, "predict_proba")
    rows = np.concatenate([mlp.predict(X[i:i + 1000], True) for i in range(0, n, 1000)])
    assert np.array_equal(whole, rows)
    W1, b1 = layers[0][0], layers[0][1]
    h = np.maximum(X.astype(np.float64) @ W1 + b1, 0)
    z = h @ layers[1][0] + layers[1][1]
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(whole, p / p.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    for row in (0, 4096, n - 1):
        bad = X.copy()
        bad[row, 1] = np.nan
        with pytest.raises(ValueError, match=r"^X: contains 1 non-finite value"):
            mlp.predict(bad, True, "predict_proba")
        with pytest.raises(ValueError, match=r"^X: contains 1 non-finite value"):
            mlp.try_predict(bad, True, "predict_proba")
        huge = X.copy()
        huge[row] = 3e38  # finite, but the hidden sums overflow to inf
        assert np.isfinite(huge).all()
        with pytest.raises(ValueError, match="^predict_proba: "):
            mlp.predict(huge, False, "predict_proba")
        assert not np.isfinite(mlp.predict(huge, False)[row]).all()  # unchecked without a name


def test_dense_kernels_against_reference():
    rng = np.random.default_rng(5)
    for M, K, N in [(1, 784, 128), (33, 7, 129), (128, 300, 10)]:
        x = rng.standard_normal((M, K)).astype(np.float32)
        W = rng.standard_normal((K, N)).astype(np.float32)
        b = rng.standard_normal(N).astype(np.float32)
        for name in _core.ACTIVATIONS:
            y = _core.dense_forward(x, W, b, np.empty((M, N), np.float32), name, 0.05)
            z = x.astype(np.float64) @ W + b
            want = {"none": z, "relu": np.maximum(z, 0), "leaky_relu": np.where(z > 0, z, 0.05 * z),
                    "sigmoid": 1 / (1 + np.exp(-z)), "tanh": np.tanh(z)}[name]
            np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.sqrt(K))


def with_threads(threads, fn):
    """fn() on this many threads, really: without the back-off that runs
    regions on one thread when the machine is busy (as it is with more
    threads than cores)."""
    old = sn.get_num_threads()
    try:
        sn.set_num_threads(threads)
        _core.parallel_backoff(False)
        return fn()
    finally:
        _core.parallel_backoff(True)
        sn.set_num_threads(old)


def wide_model(widths, act=sn.Tanh, dropout=0.1):
    """Dense layers of these widths, act and dropout after each hidden one:
    large enough that the fused trainer's steps run on the threads."""
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(sn.Dense(a, b, seed=i))
        if i < len(widths) - 2:
            layers += [act(), sn.Dropout(dropout)]
    return sn.Sequential(*layers)


def wide_data(features, classes, n=400):
    rng = np.random.default_rng(11)
    return rng.standard_normal((n, features)).astype(np.float32), rng.integers(0, classes, n)


# the input splits (on 16-float lines): 300 = 160 + 140, 200 = 112 + 88;
# 8 and 12 inputs leave the second part empty; 33 = 32 + 1
@pytest.mark.parametrize("widths", [(300, 200, 150, 10), (8, 12, 2000, 7), (50, 33, 3000, 5)])
def test_training_is_identical_for_any_thread_count(widths):
    """Each layer's inputs are split into a fixed number of parts whatever
    the thread count, and more threads only cut each part into strips that
    change no sum: 1, 2, 3 and 4 threads (several strips per part) give the
    same bits."""
    X, y = wide_data(widths[0], widths[-1])

    def train():
        model = wide_model(widths)
        model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=2, batch_size=100,
                  seed=0, verbose=0)
        return [p.data.copy() for p in model.parameters()] + [model.predict_proba(X)]

    results = [with_threads(threads, train) for threads in (1, 2, 3, 4)]
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


# the input splits of these widths: the batch's columns on multiples of 8
# (1 input: part 0 owns it, part 1 none; 8 = 8 + 0, 20 = 16 + 4, 17 = 16 + 1,
# 12 = 8 + 4, 41 = 24 + 17, each part's columns on lines of their own in the
# gathered batch), a hidden layer's on whole lines (15 = 15 + 0, 33 = 32 + 1)
@pytest.mark.parametrize("widths", [(1, 8, 2), (20, 1, 3), (17, 15, 2), (8, 33, 3), (12, 16, 3),
                                    (41, 9, 4)])
def test_fast_fit_matches_layer_by_layer_for_odd_widths(widths):
    X, y = wide_data(widths[0], widths[-1], n=200)
    fast, slow = wide_model(widths, sn.ReLU, 0.2), wide_model(widths, sn.ReLU, 0.2)
    kwargs = dict(epochs=3, batch_size=16, seed=2, verbose=0)
    h_fast = fast.fit(X, y, optimizer=sn.SGD(fast.parameters(), lr=0.05), **kwargs)
    h_slow = slow_fit(slow, X, y, optimizer=sn.SGD(slow.parameters(), lr=0.05), **kwargs)
    np.testing.assert_allclose(h_fast["loss"], h_slow["loss"], rtol=1e-4)
    for a, b in zip(fast.parameters(), slow.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-3, atol=1e-5, err_msg=a.name)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_non_finite_gradient_is_named_as_on_the_layer_path(threads):
    """The fused step makes every gradient before it reports one that is not
    finite, so fit names the same parameter as the layer-by-layer path (the
    first non-finite one), whatever the thread count."""
    rng = np.random.default_rng(0)
    X, y = rng.random((16, 4), dtype=np.float32), np.zeros(16, np.int64)

    def diverge(fit):
        model = sn.Sequential(sn.Dense(4, 6, seed=0), sn.Tanh(), sn.Dense(6, 6, seed=1),
                              sn.Tanh(), sn.Dense(6, 3, seed=2))
        model.layers[2].weight.data[...] = 1e-20
        model.layers[4].weight.data[...] = 0
        model.layers[4].weight.data[:, 0] = -3e38  # finite logits, gradients overflow
        model.layers[4].weight.data[:, 1] = 3e38
        with pytest.raises(sn.TrainingDivergedError) as caught:
            fit(model, X, y, optimizer=sn.SGD(model.parameters(), lr=0.01), epochs=1,
                batch_size=1, seed=0, verbose=0)
        return str(caught.value)

    fast = with_threads(threads, lambda: diverge(sn.Sequential.fit))
    slow = diverge(slow_fit)
    assert "gradient of 0.weight is not finite" in slow
    assert "gradient of 0.weight is not finite" in fast


@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_threaded_fused_steps_match_layer_by_layer(act, threads):
    """A network large enough that the fused steps run on the threads (the
    small ones above run in one thread), with dropout: the same model as the
    layer-by-layer path."""
    widths = (300, 200, 150, 10)
    X, y = wide_data(widths[0], widths[-1])
    fast, slow = wide_model(widths, ACTS[act], 0.3), wide_model(widths, ACTS[act], 0.3)
    kwargs = dict(epochs=2, batch_size=100, seed=5, verbose=0)
    h_fast = with_threads(threads, lambda: fast.fit(
        X, y, optimizer=sn.SGD(fast.parameters(), lr=0.1, momentum=0.9), **kwargs))
    h_slow = slow_fit(slow, X, y, optimizer=sn.SGD(slow.parameters(), lr=0.1, momentum=0.9),
                      **kwargs)
    np.testing.assert_allclose(h_fast["loss"], h_slow["loss"], rtol=1e-4)
    for a, b in zip(fast.parameters(), slow.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-3, atol=1e-5, err_msg=a.name)


@pytest.mark.parametrize("shape", [(1,), (7,), (128, 10), (128, 784), (512, 256), (3, 5, 16)])
def test_step_buffers_start_on_cache_lines(shape):
    """The training step splits its buffers' rows between threads at
    multiples of 16 floats, whole 64-byte lines only if the buffers start on
    one (NumPy's own start 16 bytes in)."""
    a = _core._zeros_on_lines(shape)
    assert a.ctypes.data % 64 == 0
    assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.flags.writeable and not a.any()
    a[...] = 1.0  # its own memory, all of it
    assert a.sum() == a.size


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_training_step_s_buffers_are_the_aligned_ones(dropout):
    """Every buffer the step splits between threads, for widths and batches
    whose NumPy arrays would start anywhere (several sizes, so that one
    aligned by chance does not pass for all)."""
    rng = np.random.default_rng(0)
    for sizes, batch in [((784, 128, 10), 128), ((20, 48, 3), 7), ((33, 16, 5), 3),
                         ((512, 256, 10), 64), ((100, 10), 32)]:
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            last = i == len(sizes) - 2
            W = rng.standard_normal((fan_in, fan_out)).astype(np.float32)
            b = np.zeros(fan_out, np.float32)
            layers.append((W, b, np.zeros_like(W), np.zeros_like(b), "none" if last else "relu",
                           0.0, 0.0 if last else dropout))
        mlp = _core.MLP(layers, batch)
        names = {"xb"} | {f"{k}{i}" for i in range(len(layers)) for k in ("y", "dz")}
        if len(layers) > 1:
            names |= {"last_shares"}
        if dropout:
            names |= {f"{k}{i}" for i in range(len(layers) - 1) for k in ("y_drop", "mask")}
        assert set(mlp.step_buffers) == names
        for name, a in mlp.step_buffers.items():
            assert a.ctypes.data % 64 == 0, (sizes, batch, name)


def test_the_inference_workspace_and_both_its_halves_start_on_lines():
    """One image's layer is split by columns between the calling thread and
    the helper at a multiple of 16 floats; its output is a half of the
    forward workspace (layers take turns). A half that started 16 bytes past
    a line had a line both threads wrote (784-128-10 paired: 2.5 us a call
    instead of 2.0 on an AMD EPYC Zen 5). Widths and batches whose halves
    are not whole lines by themselves (100 x 1 floats)."""
    rng = np.random.default_rng(1)
    for sizes, batch in [((784, 128, 10), 128), ((20, 100, 3), 1), ((33, 7, 5), 3)]:
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            W = rng.standard_normal((fan_in, fan_out)).astype(np.float32)
            b = np.zeros(fan_out, np.float32)
            layers.append((W, b, np.zeros_like(W), np.zeros_like(b),
                           "none" if i == len(sizes) - 2 else "relu", 0.0, 0.0))
        mlp = _core.MLP(layers, batch, train=False)
        half = mlp.work.size // 2
        assert mlp.work.ctypes.data % 64 == 0, sizes
        assert half * 4 % 64 == 0 and half >= batch * max(sizes[1:]), (sizes, half)
        x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
        ref = x
        for i, (W, b, *_rest) in enumerate(layers):
            ref = ref @ W + b
            ref = ref if i == len(layers) - 1 else np.maximum(ref, 0)
        np.testing.assert_allclose(mlp.predict(x), ref, rtol=1e-4, atol=1e-4)


def test_set_optimizer_keeps_the_state_arrays_of_the_last_call_only():
    """fit sets the optimizer before every run of batches (about 20 an
    epoch): the state arrays the C step points into are kept alive once,
    and released when another call points elsewhere (each call used to add
    another reference, for as long as the network lived)."""
    W1, b1 = np.ones((6, 4), np.float32), np.zeros(4, np.float32)
    W2, b2 = np.ones((4, 3), np.float32), np.zeros(3, np.float32)
    mlp = _core.MLP([(W1, b1, np.zeros_like(W1), np.zeros_like(b1), "relu", 0.0, 0.0),
                     (W2, b2, np.zeros_like(W2), np.zeros_like(b2), "none", 0.0, 0.0)], 8)
    states = [[np.zeros_like(a)] for a in (W1, b1, W2, b2)]
    momentum = states[0][0]
    alone = sys.getrefcount(momentum)
    for _ in range(50):
        mlp.set_optimizer("sgd", {"lr": 0.1, "momentum": 0.9}, states, 0, 0)
    kept = sys.getrefcount(momentum)
    assert kept == alone + 1
    others = [[np.zeros_like(row[0])] for row in states]
    mlp.set_optimizer("sgd", {"lr": 0.1, "momentum": 0.9}, others, 0, 0)
    released = sys.getrefcount(momentum)
    assert released == alone
    # the arrays pointed into now are alive and trained into
    X = np.ones((8, 6), np.float32)
    mlp.train(X, np.arange(8) % 3, np.arange(8), 8)
    assert all(np.any(row[0] != 0) for row in others[::2])


@pytest.mark.parametrize("batch", [2, 3, 7])
@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_one_step_s_gradients_match_the_layer_path_when_both_parts_hold_rows(batch, dropout):
    """The C step makes the last layer's gradient as two shares, each over
    one part's rows of the batch, then adds them; the hidden layer below it
    gets its gradient row by row from the same region. With both parts
    holding rows (any batch of 2 or more), one step's gradients are the
    layer path's up to float32 rounding, dropout masks and all."""
    rng = np.random.default_rng(batch)
    X = rng.standard_normal((batch, 12)).astype(np.float32)
    y = rng.integers(0, 4, batch)

    def step(fit):
        layers = [sn.Dense(12, 20, seed=0), sn.LeakyReLU(0.1)]
        layers += [sn.Dropout(dropout, seed=3)] if dropout else []
        model = sn.Sequential(*layers, sn.Dense(20, 4, seed=1))
        fit(model, X, y, optimizer=sn.SGD(model.parameters(), lr=0.0), epochs=1,
            batch_size=batch, seed=2, verbose=0, shuffle=False)
        return [p.grad.copy() for p in model.parameters()]

    def fused_fit(model, *args, **kwargs):
        assert _fused.trainer(model, kwargs["optimizer"], sn.CrossEntropy(), y, batch) is not None
        return model.fit(*args, **kwargs)

    fast = step(fused_fit)
    slow = step(slow_fit)
    for a, b in zip(fast, slow):
        assert np.abs(b).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())


@pytest.mark.parametrize("inputs, cut, second_at", [(784, 392, 400), (41, 24, 32), (12, 8, 16)])
def test_the_gathered_batch_keeps_each_part_s_columns_on_lines_of_their_own(inputs, cut,
                                                                            second_at):
    """Layer 0's inputs are cut evenly on multiples of 8 (784 = 392 + 392),
    and each part's columns of the gathered batch start on a 64-byte line of
    their own (the second part's at column 400 of rows 800 wide): no line is
    written by both threads. The rows gathered are X's, in order."""
    rng = np.random.default_rng(5)
    W1 = rng.standard_normal((inputs, 16)).astype(np.float32) * 0.1
    W2 = rng.standard_normal((16, 3)).astype(np.float32) * 0.1
    layers = [(W1, np.zeros(16, np.float32), np.zeros_like(W1), np.zeros(16, np.float32),
               "relu", 0.0, 0.0),
              (W2, np.zeros(3, np.float32), np.zeros_like(W2), np.zeros(3, np.float32),
               "none", 0.0, 0.0)]
    mlp = _core.MLP(layers, 8)
    mlp.set_optimizer("sgd", {"lr": 0.0, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
                              "weight_decay": 0.0, "decay": 0.0},
                      [[None] for _ in range(4)], 0, 0)
    X = rng.random((20, inputs), dtype=np.float32)
    order = np.array([5, 17, 2, 9, 11, 0, 3, 19], np.int64)
    mlp.train(X, np.zeros(20, np.int64), order, 8)
    xb = mlp.step_buffers["xb"]
    width = second_at + -(-(inputs - cut) // 16) * 16
    assert xb.shape == (8, width) and (second_at * 4) % 64 == 0 and (width * 4) % 64 == 0
    np.testing.assert_array_equal(xb[:, :cut], X[order, :cut])
    np.testing.assert_array_equal(xb[:, second_at:second_at + inputs - cut], X[order, cut:])


# ------------------------------------------------- X's NaN and inf, checked as batches are copied


def _calls_on(monkeypatch, target):
    """Counts the calls of _core.all_finite on the array target itself."""
    calls = []
    original = _core.all_finite

    def counting(a):
        calls.append(a is target)
        return original(a)

    monkeypatch.setattr(_core, "all_finite", counting)
    return calls


def test_fit_reads_x_whole_until_an_epoch_of_the_c_trainer_has_checked_every_row(monkeypatch):
    """Reading all of X for NaN and inf before each fit was 4 ms for MNIST,
    5% of a 784-128-10 epoch. A fit on the very array a complete epoch of
    the C trainer went over skips that read (a value changed since fails
    its batch's step: the next test); a new array, one converted on the way
    in, a split off validation part or the layer-by-layer path do not."""
    X, y = data()
    model = build()
    opt = sn.Adam(model.parameters())
    calls = _calls_on(monkeypatch, X)
    model.fit(X, y, opt, epochs=1, batch_size=32, verbose=0, seed=0)
    assert calls.count(True) == 1  # read whole: the first time
    model.fit(X, y, opt, epochs=2, batch_size=32, verbose=0, seed=0)
    assert calls.count(True) == 1  # not again
    other = X.copy()
    model.fit(other, y, opt, epochs=1, batch_size=32, verbose=0, seed=0)
    assert calls.count(True) == 1 and model._knows_finite(other) and not model._knows_finite(X)
    third = X.copy()
    calls = _calls_on(monkeypatch, third)
    model.fit(third, y, opt, epochs=1, batch_size=32, verbose=0, seed=0, validation_split=0.2)
    model.fit(third, y, opt, epochs=1, batch_size=32, verbose=0, seed=0, validation_split=0.2)
    assert calls.count(True) == 2 and not model._knows_finite(third)  # its training part only
    calls = _calls_on(monkeypatch, X)
    slow = build(dropout=0.0)
    slow.fit(X, y, sn.Adam(slow.parameters()), epochs=1, batch_size=32, verbose=0)
    _fused.ENABLED = False
    try:
        before = calls.count(True)
        slow.fit(X, y, sn.Adam(slow.parameters()), epochs=1, batch_size=32, verbose=0)
        assert calls.count(True) == before + 1  # the layer-by-layer epochs do not check
    finally:
        _fused.ENABLED = True


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-inf behind relu"])
@pytest.mark.parametrize("on_nonfinite", ["raise", "skip_batch"])
def test_a_value_changed_in_place_after_a_fit_is_refused_before_its_batch(value, on_nonfinite):
    """X changed in place after a fit read it whole: the batch that holds
    the value takes no step (its outputs are not finite, or, where ReLU hides
    it, -inf times weights all positive, the first layer's weight gradient:
    x * 0 is NaN for x NaN or infinite), and fit, finding the value in that
    batch's rows, raises ValueError (not TrainingDivergedError), the weights
    those of the steps before it; the next fit reads X whole again and
    refuses it before any step."""
    X, y = data(n=3000)  # runs of 5 batches (about 20 runs an epoch): skip goes on within one
    model = build(dropout=0.2)
    opt = sn.Adam(model.parameters())
    model.fit(X, y, opt, epochs=1, batch_size=32, verbose=0, seed=0)
    if value == "-inf behind relu":
        w = model.layers[0].weight.data
        w[3] = np.abs(w[3]) + 0.1  # every hidden unit gets -inf: ReLU makes it 0
    X[2171, 3] = float(value.split()[0])
    steps = opt.iterations
    with pytest.raises(ValueError, match=r"X: contains 1 non-finite value\(s\) \(NaN or inf\), "
                                         r"found in the rows of step (\d+) of the epoch, which "
                                         r"took no step") as caught:
        model.fit(X, y, opt, epochs=1, batch_size=32, verbose=0, seed=0,
                  on_nonfinite=on_nonfinite)
    step = int(caught.value.args[0].split("rows of step ")[1].split()[0])
    assert opt.iterations - steps == step - 1
    assert all(np.isfinite(p.data).all() for p in model.parameters())
    weights = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"X: contains 1 non-finite value\(s\) \(NaN or inf\)$"):
        model.fit(X, y, opt, epochs=1, batch_size=32, verbose=0, seed=0)
    assert all(np.array_equal(w, p.data) for w, p in zip(weights, model.parameters()))


@pytest.mark.parametrize("row", [0, -1])
def test_a_known_array_split_by_validation_split_is_read_whole_first(row):
    """validation_split holds out X's last rows: a NaN put since into an
    array fit knew finite is refused before any step, as X's (it was found
    at its training batch, steps after the first, or named "validation X"
    though the user passed none)."""
    X, y = data()
    model = build()
    opt = sn.Adam(model.parameters())
    model.fit(X, y, opt, epochs=1, batch_size=32, verbose=0, seed=0)
    X[row, 0] = np.nan
    weights = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"^X: contains 1 non-finite value\(s\) \(NaN or inf\)$"):
        model.fit(X, y, opt, epochs=1, batch_size=32, verbose=0, seed=0, validation_split=0.1)
    assert all(np.array_equal(w, p.data) for w, p in zip(weights, model.parameters()))


@pytest.mark.parametrize("optimizer, hyper", [("sgd", {"lr": 0.1, "momentum": 0.9}),
                                               ("adam", {"lr": 0.01})])
def test_a_share_with_no_rows_steps_after_the_update_of_the_batch_before(optimizer, hyper):
    """The C trainer makes each batch's update at the start of the next
    batch's first region; a batch with no rows in this process's share (a
    data-parallel run) zeroes the gradients first, so the update before must
    be made before that. One run of three batches (4, 0 and 4 rows) against
    three runs of one batch each, which each end with their own update."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((8, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 8)

    def fresh():
        shapes = [(6, 5), (5,), (5, 3), (3,)]
        params = [np.asarray(rng2.standard_normal(s) * 0.5, np.float32) for s in shapes]
        grads = [np.zeros_like(p) for p in params]
        mlp = _core.MLP([(params[0], params[1], grads[0], grads[1], "relu", 0.0, 0.0),
                         (params[2], params[3], grads[2], grads[3], "none", 0.0, 0.0)], 8)
        states = [[np.zeros_like(p) for _ in range(2)] for p in params]
        mlp.set_optimizer(optimizer, hyper, states, 0, 0)
        return mlp, params

    rows, first, global_rows = (np.array(a, np.int64) for a in ([4, 0, 4], [0, 0, 0], [4, 4, 4]))
    order = np.arange(8)
    rng2 = np.random.default_rng(9)
    whole, want = fresh()
    whole.set_shard(rows, first, global_rows, lambda batch, ok: None)
    whole.train(X, labels, order, 4)
    rng2 = np.random.default_rng(9)
    apart, got = fresh()
    for b, start in enumerate((0, 4, 4)):
        apart.set_shard(rows[b:b + 1], first[b:b + 1], global_rows[b:b + 1],
                        lambda batch, ok: None)
        apart.train(X, labels, order[start:start + rows[b]], 4)
    assert whole.iterations == apart.iterations == 3
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_fit_sizes_its_runs_by_the_pace_of_its_batches_and_they_change_no_result(monkeypatch):
    """fit hands the C trainer runs of about a twentieth of an epoch until
    it knows how long a batch takes, then _FAST_RUN_SECONDS' worth: fewer
    runs, each with its own setup. The runs change no step: the weights are
    the same bits as with runs of a twentieth throughout (Adam, dropout, a
    partial last batch, two epochs), and so is the loss: each run adds its
    batches' losses onto the epoch's sum so far."""
    from scratchnet import model as model_module
    X, y = data(n=3000)
    runs = []
    real_run = _fused.Trainer.run

    def counted(self, X, y, order, *args, **kwargs):
        runs.append(len(order))
        return real_run(self, X, y, order, *args, **kwargs)

    monkeypatch.setattr(_fused.Trainer, "run", counted)

    def train(seconds):
        monkeypatch.setattr(model_module, "_FAST_RUN_SECONDS", seconds)
        runs.clear()
        model = build(dropout=0.2)
        history = model.fit(X, y, sn.Adam(model.parameters()), epochs=2, batch_size=32,
                            verbose=0, seed=0)
        return [p.data.copy() for p in model.parameters()], history, list(runs)

    weights, history, twentieths = train(0.0)
    weights_long, history_long, long_runs = train(1e9)
    # 94 batches an epoch: runs of 5 (160 rows), the last of 4 (120 rows)
    assert twentieths == 2 * ([160] * 18 + [120])
    # the first run gives the pace; then the rest of the epoch, then a whole one
    assert long_runs == [160, 2840, 3000]
    assert all(np.array_equal(a, b) for a, b in zip(weights, weights_long))
    assert history["accuracy"] == history_long["accuracy"]
    assert history["loss"] == history_long["loss"]


def test_fit_after_fit_carries_on_the_thread_choice_and_the_pace(monkeypatch):
    """A model fit again with the same layers and batch size carries on the
    C trainer's choice of the threads or alone where the fit before left it
    (no new timing of 8 steps alone at every fit), and the pace of its
    batches (its first run already _FAST_RUN_SECONDS long); another batch
    size starts afresh."""
    from scratchnet import model as model_module
    monkeypatch.setattr(model_module, "_FAST_RUN_SECONDS", 1e9)
    X, y = data(n=3000)
    seen = []  # (the trainer's pace, the rows of each run)
    real_run = _fused.Trainer.run

    def watched(self, X, y, order, *args, **kwargs):
        seen.append((self.pace, self.mlp.team, len(order)))
        return real_run(self, X, y, order, *args, **kwargs)

    monkeypatch.setattr(_fused.Trainer, "run", watched)
    model = build()
    opt = sn.Adam(model.parameters())

    def fit(batch_size):
        seen.clear()
        model.fit(X, y, opt, epochs=1, batch_size=batch_size, verbose=0, seed=0)
        paces = {id(p) for p, *_ in seen}
        assert len(paces) == 1 and all(team is seen[0][0].team for _, team, _ in seen)
        return seen[0][0], [rows for *_, rows in seen]

    pace, runs = fit(32)
    assert runs == [160, 2840]  # a twentieth, then the rest at the pace it gave
    team = pace.team
    assert team.keep > 0  # the 16 steps of a timing done, a choice made
    again, runs = fit(32)
    # (the count of steps since the last timing is not checked: a run of 8
    # slow steps, ordinary for steps of microseconds, times again at once)
    assert again is pace and again.team is team and runs == [3000]
    other, runs = fit(64)
    assert other is not pace and other.team is not team and runs == [192, 2808]
