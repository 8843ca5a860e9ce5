"""A loss or gradient that becomes NaN or inf stops fit at that very step,
on both training paths, naming the epoch and the step; the step is never
applied (the weights are those of the last finite step). on_nonfinite
chooses raise, warn or skip_batch."""
import re
import warnings

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import _fused


def data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 4), dtype=np.float32), rng.integers(0, 3, n)


def model(seed=0):
    """A small MLP whose first layer's columns sum to about 8, so that a row
    of 3e38 overflows it to inf whatever training does to the weights."""
    m = sn.Sequential(sn.Dense(4, 6, seed=seed), sn.ReLU(), sn.Dropout(0.25),
                      sn.Dense(6, 3, seed=seed + 1))
    m[0].weight += 2.0
    return m


def fit(m, X, y, epochs=2, **kwargs):
    return m.fit(X, y, sn.SGD(m.parameters(), lr=0.1, momentum=0.9), epochs=epochs,
                 batch_size=10, shuffle=False, seed=4, verbose=0, **kwargs)


def poisoned(epoch_rows=60, bad_row=25):
    """Data whose row bad_row overflows the first layer (inputs not scaled):
    with batches of 10 in order, step 3 of each epoch meets an inf."""
    X, y = data(epoch_rows)
    X[bad_row] = 3e38
    return X, y


def test_the_step_that_meets_an_inf_is_named_and_not_applied(training_path):
    X, y = poisoned()
    diverged = model()
    with pytest.raises(sn.TrainingDivergedError) as info:
        fit(diverged, X, y)
    error = info.value
    assert (error.epoch, error.step) == (1, 3)
    message = str(error)
    assert "epoch 1, step 3 of 6" in message and "not finite" in message
    assert "learning rate" in message and "inputs not scaled" in message
    assert "3e+38" in message  # the range of X, where it is the likely cause
    # the weights are exactly those after steps 1 and 2
    reference = model()
    fit(reference, X[:20], y[:20], epochs=1)
    for (name, a), b in zip(diverged.state_dict().items(), reference.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def tanh_net():
    """Hidden tanh units at 0 (weights and biases 0) and output weights at
    the float32 limit: the outputs and the loss are finite, but the first
    layer's weight gradient overflows to inf."""
    net = sn.Sequential(sn.Dense(4, 2), sn.Tanh(), sn.Dense(2, 3))
    net[0].weight[...] = 0.0
    net[2].weight[...] = np.array([[3.4e38, -3.4e38, 0.0]] * 2, np.float32)
    return net


def test_a_gradient_that_overflows_with_a_finite_loss_is_caught(training_path):
    net = tanh_net()
    before = net.state_dict()
    X, y = np.full((1, 4), 2.0, np.float32), np.array([0])
    with pytest.raises(sn.TrainingDivergedError,
                       match=r"epoch 1, step 1 of 1: the gradient of 0\.weight is not finite"):
        net.fit(X, y, sn.SGD(net.parameters(), lr=0.0), epochs=1, batch_size=1, verbose=0)
    for (name, a), b in zip(net.state_dict().items(), before.values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_learning_rate_far_too_high_is_named(training_path):
    X, y = data()
    m = model()
    with pytest.raises(sn.TrainingDivergedError, match="learning rate too high") as info:
        m.fit(X * 100, y, sn.SGD(m.parameters(), lr=1e30), epochs=3, batch_size=10, verbose=0)
    assert info.value.epoch == 1 and info.value.step >= 2
    assert all(np.isfinite(p.data).all() for p in m.parameters())


def test_weights_an_update_made_not_finite_are_not_called_finite(training_path):
    """An update can overflow though its gradient was finite (lr 3e38): the
    error must not say the weights are those of a finite step, but name the
    weight that is not finite."""
    X, y = data()
    m = model()
    with pytest.raises(sn.TrainingDivergedError) as info:
        m.fit(X * 100, y, sn.SGD(m.parameters(), lr=3e38), epochs=2, batch_size=10, verbose=0)
    assert not all(np.isfinite(p.data).all() for p in m.parameters())
    message = str(info.value)
    assert "last finite step" not in message
    assert re.search(r"already made \d\.(weight|bias) not finite", message)


def test_sgd_dampening_must_be_a_share():
    params = model().parameters()
    for bad in (float("nan"), -0.5, 1.5):
        with pytest.raises(ValueError, match="dampening must be"):
            sn.SGD(params, lr=0.1, momentum=0.9, dampening=bad)


def test_warn_stops_and_returns_the_complete_epochs(training_path, tmp_path):
    X, y = data()

    def poison_after_epoch_1(epoch, logs):
        X[25] = 3e38  # fit trains on X itself (float32, C-contiguous: not copied)
    m = model()
    with pytest.warns(RuntimeWarning, match="epoch 2, step 3 of 6.*run.ckpt holds epoch 1"):
        history = fit(m, X, y, epochs=3, callback=poison_after_epoch_1, on_nonfinite="warn",
                      checkpoint=tmp_path / "run.ckpt")
    assert len(history["loss"]) == 1 and not m.interrupted
    assert all(np.isfinite(p.data).all() for p in m.parameters())


def test_skip_batch_trains_on_and_both_paths_agree(monkeypatch):
    X, y = poisoned(bad_row=25)
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_fused, "ENABLED", enabled)
        m = model()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = fit(m, X, y, epochs=2, on_nonfinite="skip_batch")
        messages = [str(w.message) for w in caught]
        assert len(messages) == 2
        for epoch, message in enumerate(messages, 1):
            assert message.startswith(f"fit: epoch {epoch}: skipped 1 of 6 steps whose loss or "
                                      "gradient was not finite (steps 3)")
        results[enabled] = (m, history)
    (fast, h_fast), (slow, h_slow) = results[True], results[False]
    # the skipped batch is neither applied nor counted, on either path
    np.testing.assert_allclose(h_fast["loss"], h_slow["loss"], rtol=1e-5)
    for (name, a), b in zip(fast.state_dict().items(), slow.state_dict().values()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)
    assert all(np.isfinite(p.data).all() for p in fast.parameters())


def test_batchnorm_statistics_of_a_refused_step_are_put_back():
    net = sn.Sequential(sn.Dense(4, 5, seed=0), sn.BatchNorm1d(5), sn.ReLU(),
                        sn.Dense(5, 3, seed=1))
    X, y = poisoned(bad_row=25)
    with pytest.warns(RuntimeWarning, match="skipped 1 of 6"):
        net.fit(X, y, sn.SGD(net.parameters(), lr=0.1), epochs=1, batch_size=10,
                shuffle=False, verbose=0, on_nonfinite="skip_batch")
    assert np.isfinite(net[1].running_mean).all() and np.isfinite(net[1].running_var).all()


def test_batchnorm_statistics_that_overflow_end_the_run_as_a_diverged_step(tmp_path):
    """Rows of 1e25 (finite): the batch statistics normalise them, so loss
    and gradients stay finite, but the running variance passes float32's
    range. fit returned normally with inf in it (one class predicted for
    everything after) and save wrote a file load refused. Now the step is
    a divergence: named, not applied, statistics put back; save refuses a
    state load would refuse."""
    rng = np.random.default_rng(8)
    X = rng.random((60, 6), dtype=np.float32)
    X[22:25] *= np.float32(1e25)
    y = np.arange(60) % 3
    net = sn.Sequential(sn.Dense(6, 5, seed=0), sn.BatchNorm1d(5), sn.ReLU(),
                        sn.Dense(5, 3, seed=1))
    with pytest.raises(sn.TrainingDivergedError,
                       match=r"step 3 of 6: the running statistics 1.running_var are not finite"):
        net.fit(X, y, sn.SGD(net.parameters(), lr=0.1), epochs=1, batch_size=10,
                shuffle=False, verbose=0)
    assert np.isfinite(net[1].running_mean).all() and np.isfinite(net[1].running_var).all()
    with pytest.warns(RuntimeWarning, match="skipped 1 of 6"):
        net.fit(X, y, sn.SGD(net.parameters(), lr=0.1), epochs=1, batch_size=10,
                shuffle=False, verbose=0, on_nonfinite="skip_batch")
    assert np.isfinite(net[1].running_var).all()
    net[1].running_var[0] = np.inf
    with pytest.raises(ValueError, match="save: 1.running_var contains non-finite values"):
        net.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_on_nonfinite_is_checked():
    X, y = data()
    m = model()
    with pytest.raises(ValueError, match="on_nonfinite"):
        fit(m, X, y, on_nonfinite="ignore")
