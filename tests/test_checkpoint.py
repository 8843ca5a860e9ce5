"""fit(checkpoint=...) and fit(resume=...): a run interrupted by Ctrl-C and
resumed from its checkpoint ends bit for bit where the uninterrupted run
ends (weights, BatchNorm statistics, optimizer state, scheduler, history
but its times), on both training paths; checkpoints are written atomically;
resuming into another model, optimizer or run is refused; the command line
does the same (tests/test_cli_resume.py)."""
import os
import signal

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import _progress


def blobs(n=120, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)) * 3
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.standard_normal((n, features))).astype(np.float32), y


def mlp(seed=0):
    return sn.Sequential(sn.Dense(8, 16, seed=seed), sn.ReLU(), sn.Dropout(0.3),
                         sn.Dense(16, 12, seed=seed + 1), sn.Tanh(), sn.Dropout(0.1),
                         sn.Dense(12, 3, seed=seed + 2))


OPTIMIZERS = {
    "adam-cosine": (lambda ps: sn.Adam(ps, lr=1e-2, weight_decay=1e-4),
                    lambda opt: sn.CosineAnnealingLR(opt, 4)),
    "sgd-nesterov-decay-steplr": (lambda ps: sn.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                                    decay=0.05),
                                  lambda opt: sn.StepLR(opt, 1, gamma=0.7)),
    "adagrad": (lambda ps: sn.AdaGrad(ps, lr=0.05, lr_decay=1e-2), None),
    "rmsprop-centered-momentum": (lambda ps: sn.RMSProp(ps, lr=1e-3, momentum=0.5,
                                                        centered=True), None),
}


def interrupt_during(monkeypatch, epoch, after=2):
    """Send this process SIGINT from inside fit, in epoch `epoch`, after
    `after` progress updates (steps on the layer path, runs of steps on the
    C path, here a twentieth of an epoch each, not fit's 0.1 s of steps,
    which on these small data is a whole epoch): a Ctrl-C in the middle of
    an epoch, at a known place."""
    advance = _progress.EpochDisplay.advance
    seen = []
    monkeypatch.setattr(sn.model, "_FAST_RUN_SECONDS", 0.0)

    def advance_then_interrupt(self, *args):
        advance(self, *args)
        if self.label.startswith(f"epoch {epoch}/"):
            seen.append(1)
            if len(seen) == after:
                os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(_progress.EpochDisplay, "advance", advance_then_interrupt)
    return lambda: monkeypatch.setattr(_progress.EpochDisplay, "advance", advance)


def train(model, make, X, y, epochs=4, **kwargs):
    make_opt, make_scheduler = make
    opt = make_opt(model.parameters())
    scheduler = make_scheduler(opt) if make_scheduler else None
    history = model.fit(X, y, opt, epochs=epochs, batch_size=16, seed=7, verbose=0,
                        scheduler=scheduler, validation=(X[:30], y[:30]), **kwargs)
    return history, opt, scheduler


def assert_same_run(a, b):
    """Two (model, history, optimizer, scheduler) runs ended in the same state, bit for bit."""
    (ma, ha, oa, sa), (mb, hb, ob, sb) = a, b
    for (name, x), y in zip(ma.state_dict().items(), mb.state_dict().values()):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert ma.random_state() == mb.random_state()
    assert {k: v for k, v in ha.items() if k != "time"} == \
        {k: v for k, v in hb.items() if k != "time"}
    sda, sdb = oa.state_dict(), ob.state_dict()
    assert sda["param_groups"] == sdb["param_groups"] and sda["iterations"] == sdb["iterations"]
    assert sda["state"].keys() == sdb["state"].keys()
    for i in sda["state"]:
        assert sda["state"][i].keys() == sdb["state"][i].keys()
        for key, value in sda["state"][i].items():
            np.testing.assert_array_equal(value, sdb["state"][i][key], err_msg=f"{i}.{key}")
    assert (sa and sa.state_dict()) == (sb and sb.state_dict())


@pytest.mark.parametrize("case", sorted(OPTIMIZERS))
def test_an_mlp_with_dropout_resumes_bit_identically(training_path, monkeypatch, capsys,
                                                     tmp_path, case):
    X, y = blobs()
    whole = mlp()
    h, opt, sched = train(whole, OPTIMIZERS[case], X, y)
    uninterrupted = (whole, h, opt, sched)

    ckpt = tmp_path / "run.ckpt"
    first = mlp()
    restore = interrupt_during(monkeypatch, epoch=3)
    h, *_ = train(first, OPTIMIZERS[case], X, y, checkpoint=ckpt)
    restore()
    assert first.interrupted and len(h["loss"]) == 2  # epoch 3 was dropped
    line = capsys.readouterr().err.strip()
    assert line == (f"fit: interrupted in epoch 3 of 4; {ckpt} holds epoch 2: to continue, pass "
                    f"resume='{ckpt}' to fit (the model in memory holds epoch 3's steps so far)")

    resumed = mlp(seed=100)  # other initial weights: the checkpoint's must win
    h, opt, sched = train(resumed, OPTIMIZERS[case], X, y, checkpoint=ckpt, resume=ckpt)
    assert not resumed.interrupted and len(h["loss"]) == 4
    assert_same_run((resumed, h, opt, sched), uninterrupted)


class InterruptAtEnd(sn.Callback):
    """Ctrl-C from the last epoch's on_epoch_end: after the last step."""

    def on_epoch_end(self, epoch, logs):
        if epoch == self.last:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_a_ctrl_c_after_the_last_step_is_reported_not_dropped(training_path, capsys, tmp_path,
                                                               with_checkpoint):
    X, y = blobs()
    model = mlp()
    at_end = InterruptAtEnd()
    at_end.last = 3
    ckpt = tmp_path / "run.ckpt" if with_checkpoint else None
    h, *_ = train(model, OPTIMIZERS["adagrad"], X, y, epochs=3, callbacks=[at_end],
                  checkpoint=ckpt)
    assert model.interrupted and len(h["loss"]) == 3  # every epoch done, and the Ctrl-C seen
    line = capsys.readouterr().err.strip()
    where = "fit: interrupted after the last epoch (3 of 3) was complete"
    assert line == (f"{where}; {ckpt} holds epoch 3: to continue, pass resume='{ckpt}' to fit"
                    if with_checkpoint else
                    f"{where}; nothing was saved (checkpoint=PATH keeps the last complete epoch; "
                    "scratchnet train --checkpoint PATH)")


def test_a_ctrl_c_at_an_epochs_end_says_no_steps_of_the_next_were_taken(capsys, tmp_path):
    """A Ctrl-C from a callback at the end of epoch 2 of 4 stops fit before
    epoch 3 takes a step: the line said "interrupted in epoch 3 ... (the model
    in memory holds epoch 3's steps so far)", and the model was the
    checkpoint's."""
    X, y = blobs()
    model = mlp()
    at_end = InterruptAtEnd()
    at_end.last = 2
    ckpt = tmp_path / "run.ckpt"
    h, *_ = train(model, OPTIMIZERS["adagrad"], X, y, epochs=4, callbacks=[at_end],
                  checkpoint=ckpt)
    assert model.interrupted and len(h["loss"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"fit: interrupted after epoch 2 of 4 was complete; {ckpt} holds epoch 2: to "
        f"continue, pass resume='{ckpt}' to fit")
    for name, array in sn.load(ckpt).state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], array, err_msg=name)


def small_cnn(seed=0):
    sn.manual_seed(seed)
    return sn.Sequential(sn.RandomShift(1), sn.RandomFlip(), sn.Conv2D(1, 3, 3, padding=1),
                         sn.BatchNorm2d(3), sn.ReLU(), sn.MaxPool2D(2), sn.Flatten(),
                         sn.Dense(48, 8), sn.BatchNorm1d(8), sn.ReLU(), sn.Dropout(0.2),
                         sn.Dense(8, 3))


def test_a_cnn_with_batchnorm_and_augmentation_resumes_bit_identically(monkeypatch, capsys,
                                                                         tmp_path):
    rng = np.random.default_rng(3)
    X = rng.random((48, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 48)
    make = (lambda ps: sn.Adam(ps, lr=1e-2), lambda opt: sn.StepLR(opt, 2, gamma=0.5))
    whole = small_cnn()
    h, opt, sched = train(whole, make, X, y, epochs=3)
    assert whole[3].running_mean.any()

    ckpt = tmp_path / "cnn.ckpt"
    first = small_cnn()
    restore = interrupt_during(monkeypatch, epoch=2, after=1)
    train(first, make, X, y, epochs=3, checkpoint=ckpt)
    restore()
    assert first.interrupted and "holds epoch 1" in capsys.readouterr().err

    resumed = small_cnn(seed=5)
    h2, opt2, sched2 = train(resumed, make, X, y, epochs=3, checkpoint=ckpt, resume=ckpt)
    assert_same_run((resumed, h2, opt2, sched2), (whole, h, opt, sched))


def test_resuming_a_finished_run_trains_nothing(tmp_path):
    X, y = blobs()
    model = mlp()
    make = OPTIMIZERS["adam-cosine"]
    h, *_ = train(model, make, X, y, epochs=2, checkpoint=tmp_path / "c")
    again = mlp(seed=9)
    h2, *_ = train(again, make, X, y, epochs=2, resume=tmp_path / "c")
    assert h2 == h
    for (name, a), b in zip(again.state_dict().items(), model.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_resuming_into_fewer_epochs_than_the_checkpoint_holds_is_refused(tmp_path):
    # it trained nothing and returned a model of 3 epochs for epochs=2, silently
    X, y = blobs()
    make = OPTIMIZERS["adam-cosine"]
    train(mlp(), make, X, y, epochs=3, checkpoint=tmp_path / "c")
    again = mlp(seed=9)
    before = again.state_dict()
    with pytest.raises(ValueError, match=r"cannot resume from .*: it holds epoch 3 of its run, "
                                         r"past epochs=2 .*pass epochs >= 3"):
        train(again, make, X, y, epochs=2, resume=tmp_path / "c")
    for (name, a), b in zip(again.state_dict().items(), before.values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("make", [sn.Adam, sn.RMSProp, sn.AdaGrad])
def test_a_checkpoint_whose_sum_of_squares_overflowed_resumes(tmp_path, make):
    # gradients near 1e21 square past float32's range: the running sum is +inf
    # and the weights stay finite (their step is g / sqrt(inf) = 0), as in
    # torch.optim; the checkpoint was written and then refused on resume
    X = np.full((8, 1), 1e6, np.float32)
    y = np.full((8, 1), 1e15, np.float32)
    runs = []
    for resume in (False, True):
        sn.manual_seed(0)
        model = sn.Sequential(sn.Dense(1, 1))
        opt = make(model.parameters(), lr=1e-3)
        kwargs = dict(loss=sn.MSE(), batch_size=8, seed=1, verbose=0)
        if resume:
            model.fit(X, y, opt, epochs=2, resume=tmp_path / "c", **kwargs)
        else:
            model.fit(X, y, opt, epochs=1, checkpoint=tmp_path / "c", **kwargs)
            squares = [a for s in opt.state.values() for k, a in s.items()
                       if k in make.square_sums]
            assert any(np.isposinf(a).any() for a in squares)  # the weight's
            model.fit(X, y, opt, epochs=1, **kwargs)
        runs.append(model.layers[0].weight.data.copy())
    assert np.isfinite(runs[0]).all()
    np.testing.assert_array_equal(runs[1], runs[0])


@pytest.mark.parametrize("bad", [np.nan, -1.0, -np.inf])
def test_a_sum_of_squares_must_be_at_least_zero(bad):
    model = sn.Sequential(sn.Dense(2, 1))
    opt = sn.Adam(model.parameters())
    state = opt.state_dict()
    w = model.layers[0].weight.data
    state["state"] = {0: {"exp_avg": np.zeros_like(w), "exp_avg_sq": np.full_like(w, bad),
                          "step": 1}}
    with pytest.raises(ValueError, match="state 'exp_avg_sq' of parameter 0: a sum of squares "
                                         r"holds values >= 0 \(\+inf allowed\)"):
        opt.load_state_dict(state)
    state["state"][0]["exp_avg_sq"] = np.full_like(w, np.inf)
    state["state"][0]["exp_avg"] = np.full_like(w, np.inf)  # a first moment: finite only
    with pytest.raises(ValueError, match="state 'exp_avg' of parameter 0: contains non-finite"):
        opt.load_state_dict(state)


def test_numpy_number_hyper_parameters_resume(tmp_path):
    """A checkpoint written with lr=np.float32(0.1) could not be resumed: the
    comparison of the settings failed with a bare JSON TypeError (found by a
    reviewer)."""
    X, y = blobs()
    runs = []
    for epochs, kwargs in ((1, dict(checkpoint=tmp_path / "c")), (2, dict(resume=tmp_path / "c")),
                           (2, {})):
        model = mlp()
        opt = sn.SGD(model.parameters(), lr=np.float32(0.1), momentum=np.float32(0.5))
        model.fit(X, y, opt, epochs=epochs, batch_size=16, seed=7, verbose=0, **kwargs)
        runs.append(model)
    for (name, a), b in zip(runs[1].state_dict().items(), runs[2].state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)  # resumed = uninterrupted


def test_sn_load_reads_the_model_of_a_checkpoint(tmp_path):
    X, y = blobs()
    model = mlp()
    train(model, OPTIMIZERS["adagrad"], X, y, epochs=1, checkpoint=tmp_path / "c")
    loaded = sn.load(tmp_path / "c")
    np.testing.assert_array_equal(loaded.predict_logits(X), model.predict_logits(X))


# ---------------------------------------------------------------- refusals


@pytest.fixture
def checkpoint(tmp_path):
    X, y = blobs()
    train(mlp(), OPTIMIZERS["adam-cosine"], X, y, epochs=1, checkpoint=tmp_path / "run.ckpt")
    return tmp_path / "run.ckpt"


def other_architecture():
    return sn.Sequential(sn.Dense(8, 16), sn.ReLU(), sn.Dropout(0.3), sn.Dense(16, 11),
                         sn.Tanh(), sn.Dropout(0.1), sn.Dense(11, 3))


@pytest.mark.parametrize("case, message", [
    ("architecture", r"another architecture \(layer 3: Dense\(in_features=16, "
                     r"out_features=12\) in the file, Dense\(in_features=16, "
                     r"out_features=11\) in this model\)"),
    ("optimizer", "written with the optimizer Adam, this fit has SGD"),
    ("scheduler", "written with scheduler=CosineAnnealingLR, this fit has scheduler=None"),
    ("schedule", r"written with CosineAnnealingLR\(T_max=4, eta_min=0.0\), this fit has "
                 r"CosineAnnealingLR\(T_max=8, eta_min=0.0\)"),
    ("batch size", "120 samples in batches of 16; this one is over 120 samples in batches of 8"),
    ("data", "over 120 samples in batches of 16; this one is over 60 samples"),
    ("other rows", "over other data .*resuming needs the same X and y"),
    ("other labels", "over other data .*resuming needs the same X and y"),
    ("loss", "with the loss CrossEntropy, this one has MSE; pass loss=sn.CrossEntropy()"),
    ("validation", "written by a fit with validation data"),
    ("hyper-parameters", r"written with Adam\(lr=0.01, .*weight_decay=0.0001.*\), this fit has "
                         r"Adam\(lr=0.001, .*weight_decay=0.0001.*\); resuming continues the "
                         r"optimizer it holds"),
])
def test_resuming_into_another_model_or_run_is_refused(checkpoint, case, message):
    X, y = blobs()
    model = other_architecture() if case == "architecture" else mlp(seed=3)
    # the checkpoint's optimizer settings, but for the case that changes them
    # (a new lr, which resuming replaced with the checkpoint's, unseen)
    lr = 1e-3 if case == "hyper-parameters" else 1e-2
    opt = (sn.SGD(model.parameters(), lr=lr) if case == "optimizer" else
           sn.Adam(model.parameters(), lr=lr, weight_decay=1e-4))
    scheduler = (None if case in ("scheduler", "optimizer") else
                 sn.CosineAnnealingLR(opt, 8 if case == "schedule" else 4))
    kwargs = dict(batch_size=8 if case == "batch size" else 16, seed=7, verbose=0,
                  scheduler=scheduler, resume=checkpoint)
    if case != "validation":
        kwargs["validation"] = (X[:30], y[:30])
    if case == "data":
        X, y = X[:60], y[:60]
    if case == "other rows":
        X = X[::-1].copy()  # the same rows, another order: the same count
    if case == "other labels":
        y = (y + 1) % 3
    if case == "loss":
        kwargs["loss"] = sn.MSE()
        y = np.eye(3, dtype=np.float32)[y]
        kwargs["validation"] = (X[:30], y[:30])
    before = model.state_dict()
    with pytest.raises(ValueError, match=message) as info:
        model.fit(X, y, opt, epochs=3, **kwargs)
    assert f"cannot resume from {checkpoint}" in str(info.value)
    for (name, a), b in zip(model.state_dict().items(), before.values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert opt.iterations == 0 and not opt.state


def test_a_checkpoint_written_before_the_data_and_loss_were_kept_still_resumes(tmp_path,
                                                                               monkeypatch):
    """Checkpoints of an earlier scratchnet hold no fingerprint of the data
    and no loss: they resume, checked on what they hold."""
    from scratchnet import model as model_module
    original = model_module.training_record

    def as_before(*args):
        *head, settings, arrays = args
        old = {k: v for k, v in settings.items() if k not in ("data", "loss", "lr")}
        return {**original(*head, old, arrays), "version": 1}

    monkeypatch.setattr(model_module, "training_record", as_before)
    X, y = blobs()
    path = tmp_path / "old.ckpt"
    train(mlp(), OPTIMIZERS["adam-cosine"], X, y, epochs=1, checkpoint=path)
    monkeypatch.undo()
    model = mlp(seed=3)
    opt = OPTIMIZERS["adam-cosine"][0](model.parameters())
    history = model.fit(X, y, opt, epochs=2, batch_size=16, seed=7, verbose=0,
                        scheduler=sn.CosineAnnealingLR(opt, 4), validation=(X[:30], y[:30]),
                        resume=path)
    assert len(history["loss"]) == 2


def test_a_checkpoint_without_the_runs_first_lr_passes_on_its_initial_lr(tmp_path,
                                                                          monkeypatch):
    """A version-1 checkpoint records no first lr: a run resumed from it with
    the optimizer an earlier resume left (its lr moved by the scheduler)
    recorded that lr as the run's first, and its own checkpoint then refused
    a fresh optimizer of the run's lr (a review)."""
    from scratchnet import model as model_module
    original = model_module.training_record

    def as_before(*args):
        *head, settings, arrays = args
        old = {k: v for k, v in settings.items() if k != "lr"}
        return {**original(*head, old, arrays), "version": 1}

    X, y = blobs()
    old, new = tmp_path / "old.ckpt", tmp_path / "new.ckpt"

    def fresh():
        model = mlp()
        opt = sn.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, opt, sn.StepLR(opt, 1, gamma=0.5)

    model, opt, sched = fresh()
    monkeypatch.setattr(model_module, "training_record", as_before)
    model.fit(X, y, opt, epochs=2, verbose=0, seed=1, scheduler=sched, checkpoint=old)
    monkeypatch.undo()
    model, opt, sched = fresh()
    model.fit(X, y, opt, epochs=3, verbose=0, seed=1, scheduler=sched, resume=old)
    model.fit(X, y, opt, epochs=3, verbose=0, seed=1, scheduler=sched, resume=old,
              checkpoint=new)  # the same optimizer again, its lr at 0.0125
    model, opt, sched = fresh()
    h = model.fit(X, y, opt, epochs=4, verbose=0, seed=1, scheduler=sched, resume=new)
    assert h["lr"] == [0.1, 0.05, 0.025, 0.0125]


# ---------------------------------------------------------------- atomic writes


def test_a_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    """Written to a temporary file, synced, then renamed over the target; a
    write that fails leaves the previous checkpoint whole and no stray file."""
    X, y = blobs()
    path = tmp_path / "run.ckpt"
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))),
                                                     replace(a, b))[1])
    train(mlp(), OPTIMIZERS["adagrad"], X, y, epochs=1, checkpoint=path)
    assert events[:2] == ["fsync", ("replace", str(path))]
    good = path.read_bytes()

    savez = np.savez

    def disk_full_in_epoch_2(file, **arrays):
        with open(file, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    def fail_after_epoch_1(epoch, logs):
        if epoch == 2:
            monkeypatch.setattr(np, "savez", disk_full_in_epoch_2)
    model = mlp()
    with pytest.raises(OSError, match="No space"):
        train(model, OPTIMIZERS["adagrad"], X, y, epochs=3, checkpoint=path,
              callback=fail_after_epoch_1)
    monkeypatch.setattr(np, "savez", savez)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]
    assert path.read_bytes() != good  # epoch 1 of this run, complete
    resumed = mlp()
    h, *_ = train(resumed, OPTIMIZERS["adagrad"], X, y, epochs=1, resume=path)
    assert len(h["loss"]) == 1


def test_a_checkpoint_path_is_checked_before_training(tmp_path):
    X, y = blobs()
    epochs = []
    with pytest.raises(IsADirectoryError, match="is a folder"):
        train(mlp(), OPTIMIZERS["adagrad"], X, y, checkpoint=tmp_path,
              callback=lambda epoch, logs: epochs.append(epoch))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(mlp(), OPTIMIZERS["adagrad"], X, y, checkpoint=tmp_path / "no" / "run.ckpt",
              callback=lambda epoch, logs: epochs.append(epoch))
    assert epochs == []  # refused before training


# ---------------------------------------------------------------- optimizer and scheduler state


def test_optimizer_and_scheduler_state_dicts_refuse_another_type_and_bad_values():
    p = [sn.Parameter(np.ones((2, 3))), sn.Parameter(np.ones(3))]
    adam = sn.Adam(p, lr=0.1)
    for q in p:
        q.grad[...] = 1.0
    adam.step()
    state = adam.state_dict()
    assert state["type"] == "Adam" and state["state"][0]["step"] == 1
    with pytest.raises(ValueError, match="a state of the optimizer Adam, not SGD"):
        sn.SGD(p).load_state_dict(state)
    fresh = sn.Adam(p)
    for bad in ({"exp_avg": np.full(3, np.inf, np.float32)}, {"momentum": 1}, {"step": 1.5}):
        edited = {**state, "state": {**state["state"], 1: {**state["state"][1], **bad}}}
        with pytest.raises(ValueError):
            fresh.load_state_dict(edited)
        assert fresh.state == {} and fresh.param_groups[0]["lr"] == 1e-3  # untouched
    edited = {**state, "param_groups": [{**state["param_groups"][0], "betas": [0.9, 1.5]}]}
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        fresh.load_state_dict(edited)

    scheduler = sn.StepLR(adam, 3, gamma=0.5)
    scheduler.step()
    saved = scheduler.state_dict()
    assert saved == {"type": "StepLR", "epoch": 1, "step_size": 3, "gamma": 0.5}
    other = sn.StepLR(adam, 1)
    other.load_state_dict(saved)
    assert other.state_dict() == saved
    with pytest.raises(ValueError, match="step_size"):
        other.load_state_dict({**saved, "step_size": 0})
    with pytest.raises(ValueError, match="a state of the scheduler StepLR, not CosineAnnealingLR"):
        sn.CosineAnnealingLR(adam, 4).load_state_dict(saved)


# ---- EarlyStopping across a resume ----

def test_a_resumed_run_stops_where_early_stopping_stopped_the_whole_run(tmp_path):
    """EarlyStopping judges the checkpoint's epochs again on resume: its
    patience runs on from where it was, and a run it had stopped stays
    stopped. (lr is constant here, so only epoch 1 improves on it.)"""
    X, y = blobs()
    make = OPTIMIZERS["adagrad"]

    def stopper():
        return sn.EarlyStopping(monitor="lr", mode="min", patience=2)

    whole_stopper = stopper()
    whole, _, _ = train(mlp(), make, X, y, epochs=10, callbacks=[whole_stopper])
    assert len(whole["loss"]) == 3 and whole_stopper.stopped_epoch == 3

    path = tmp_path / "run.npz"
    train(mlp(), make, X, y, epochs=2, checkpoint=path)
    resumed_stopper = stopper()
    resumed, _, _ = train(mlp(), make, X, y, epochs=10, resume=path, callbacks=[resumed_stopper])
    assert len(resumed["loss"]) == 3
    assert (resumed_stopper.best_epoch, resumed_stopper.stopped_epoch) == (1, 3)

    # the run it stopped, resumed with more epochs: no epoch more
    stopped = tmp_path / "stopped.npz"
    train(mlp(), make, X, y, epochs=10, checkpoint=stopped, callbacks=[stopper()])
    again, _, _ = train(mlp(), make, X, y, epochs=10, resume=stopped, callbacks=[stopper()])
    assert len(again["loss"]) == 3


def test_restore_best_refuses_a_resume_past_the_best_epoch(tmp_path):
    """A checkpoint holds the weights of its own epoch only: restoring an
    earlier best epoch after a resume is impossible, and refused before the
    checkpoint is loaded (the model and optimizer stay as they were); from a
    checkpoint of the best epoch itself it works."""
    X, y = blobs()
    make = (OPTIMIZERS["adagrad"][0], lambda opt: sn.StepLR(opt, 1, gamma=0.5))
    path = tmp_path / "run.npz"
    train(mlp(), make, X, y, epochs=2, checkpoint=path)
    # lr halves each epoch: its maximum is epoch 1's, before the checkpoint's epoch 2
    model = mlp(seed=1)
    opt = make[0](model.parameters())
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="best epoch so far is epoch 1.*checkpoint is of epoch 2"):
        model.fit(X, y, opt, epochs=4, batch_size=16, seed=7, verbose=0,
                  scheduler=make[1](opt), validation=(X[:30], y[:30]), resume=path,
                  callbacks=[sn.EarlyStopping(monitor="lr", mode="max", restore_best=True)])
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert opt.state_dict()["iterations"] == 0 and model.loss is None
    # its minimum is the latest epoch's: the checkpoint's weights are the best so far
    best = sn.EarlyStopping(monitor="lr", mode="min", restore_best=True, patience=5)
    train(mlp(), make, X, y, epochs=4, resume=path, callbacks=[best])
    assert best.best_epoch == 4


def test_a_run_early_stopping_ended_with_restore_best_is_not_resumed_silently(tmp_path):
    """The same command again after EarlyStopping stopped it: the run is over
    and its best weights are not in the checkpoint; the refusal says so."""
    X, y = blobs()
    make = OPTIMIZERS["adagrad"]
    path = tmp_path / "run.npz"

    def stopper():
        return sn.EarlyStopping(monitor="lr", mode="min", patience=2, restore_best=True)

    history, _, _ = train(mlp(), make, X, y, epochs=10, checkpoint=path, callbacks=[stopper()])
    assert len(history["loss"]) == 3
    with pytest.raises(ValueError, match="run stopped after epoch 3.*without restore_best"):
        train(mlp(), make, X, y, epochs=10, resume=path, callbacks=[stopper()])


def test_callbacks_get_their_own_copy_of_the_resumed_history(tmp_path):
    X, y = blobs()
    make = OPTIMIZERS["adagrad"]
    path = tmp_path / "run.npz"
    train(mlp(), make, X, y, epochs=2, checkpoint=path)

    class Clears(sn.Callback):
        def on_train_begin(self, logs=None):
            for values in logs["history"].values():
                values.clear()

    history, _, _ = train(mlp(), make, X, y, epochs=3, resume=path, callbacks=[Clears()])
    assert len(history["loss"]) == 3


def test_a_ctrl_c_while_a_checkpoint_loads_leaves_the_model_as_it_was(tmp_path, monkeypatch):
    """fit's Ctrl-C handler is in place only from the first epoch: a
    KeyboardInterrupt while resume loaded the checkpoint left the model with
    its own weights in some layers and the file's in others, and no optimizer
    state. Everything is put back, as for a refused file."""
    X = np.random.default_rng(0).random((64, 6), dtype=np.float32)
    y = np.arange(64) % 3
    path = tmp_path / "run.ckpt"
    first = sn.Sequential(sn.Dense(6, 5, seed=1), sn.ReLU(), sn.Dense(5, 3, seed=2))
    first.fit(X, y, sn.Adam(first.parameters()), epochs=1, verbose=0, seed=0, checkpoint=path)
    model = sn.Sequential(sn.Dense(6, 5, seed=7), sn.ReLU(), sn.Dense(5, 3, seed=8))
    opt = sn.Adam(model.parameters())
    before = {k: v.copy() for k, v in model.state_dict().items()}

    calls = []

    def interrupted(state):  # the first call, after the weights loaded; then as it was
        calls.append(state)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return type(opt).load_state_dict(opt, state)

    monkeypatch.setattr(opt, "load_state_dict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, opt, epochs=2, verbose=0, seed=0, resume=path)
    monkeypatch.undo()
    for name, kept in before.items():
        np.testing.assert_array_equal(model.state_dict()[name], kept, err_msg=name)
    assert opt.state == {}


def test_a_checkpoint_that_cannot_be_written_is_refused_before_training(tmp_path,
                                                                        monkeypatch):
    """checkpoint="" or a folder that cannot be written in failed at the end
    of the first epoch (naming a temporary file), after its training."""
    import tempfile
    X, y = blobs()
    model = mlp()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="checkpoint: an empty path"):
        model.fit(X, y, sn.SGD(model.parameters()), epochs=1, verbose=0, checkpoint="")

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError, match="cannot write in the folder") as refused:
        model.fit(X, y, sn.SGD(model.parameters()), epochs=1, verbose=0,
                  checkpoint=tmp_path / "run.ckpt")
    assert refused.value.filename == os.fspath(tmp_path / "run.ckpt")
    for name, kept in before.items():
        np.testing.assert_array_equal(model.state_dict()[name], kept, err_msg=name)


def test_a_checkpoint_path_through_a_symlink_is_checked_where_it_writes(tmp_path,
                                                                        monkeypatch):
    """The check before training probed the folder of the link, but the
    write follows the link: a link into a folder that cannot be written in
    passed the check and failed after the first epoch."""
    import tempfile
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    link = tmp_path / "run.ckpt"
    os.symlink(blocked / "run.ckpt", link)
    real_mkstemp = tempfile.mkstemp

    def read_only_folder(*args, dir=None, **kwargs):
        if dir is not None and os.path.realpath(dir) == os.path.realpath(blocked):
            raise OSError(30, "Read-only file system")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only_folder)
    X, y = blobs()
    model = mlp()
    with pytest.raises(OSError, match=f"cannot write in the folder {blocked}"):
        model.fit(X, y, sn.SGD(model.parameters()), epochs=1, verbose=0, checkpoint=link)


def test_a_lr_set_during_the_run_resumes_and_another_starting_lr_is_refused(tmp_path):
    """A callback's opt.lr = ... during the run made the checkpoint's lr
    differ from the one the resuming fit was given, and resume refused it
    (pass the same settings), though the run was started the same way. The
    lr each group began the run with is what must match now."""
    X, y = blobs()
    ckpt = tmp_path / "run.ckpt"

    def run(stop_at=None, resume=None, lr=0.1):
        model = mlp()
        opt = sn.SGD(model.parameters(), lr=lr)

        def callback(epoch, logs):
            if epoch == 2:
                opt.lr = opt.lr * 0.3
            if epoch == stop_at:
                model.stop_training = True

        h = model.fit(X, y, opt, epochs=4, verbose=0, seed=0, callback=callback,
                      checkpoint=ckpt, resume=resume)
        return model, h

    whole, h_whole = run()
    ckpt.unlink()
    run(stop_at=3)
    resumed, h_resumed = run(resume=ckpt)
    assert h_resumed["lr"] == h_whole["lr"] == pytest.approx([0.1, 0.1, 0.03, 0.03])
    for name, array in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], array, err_msg=name)
    with pytest.raises(ValueError, match=r"written with SGD\(lr=0\.1.*this fit has SGD\(lr=0\.05"):
        run(resume=ckpt, lr=0.05)


def test_a_resume_with_another_weight_initialisation_is_taken(tmp_path):
    """The checkpoint's weights replace the initial ones, so Dense(init=...)
    differing is no other architecture (it was refused as one); other sizes
    still are."""
    X, y = blobs()
    ckpt = tmp_path / "run.ckpt"
    first = sn.Sequential(sn.Dense(8, 6, init="he"), sn.ReLU(), sn.Dense(6, 3))
    first.fit(X, y, sn.SGD(first.parameters(), lr=0.1), epochs=1, verbose=0, seed=0,
              checkpoint=ckpt)
    again = sn.Sequential(sn.Dense(8, 6, init="xavier"), sn.ReLU(), sn.Dense(6, 3))
    again.fit(X, y, sn.SGD(again.parameters(), lr=0.1), epochs=2, verbose=0, seed=0,
              resume=ckpt)
    other = sn.Sequential(sn.Dense(8, 7), sn.ReLU(), sn.Dense(7, 3))
    with pytest.raises(ValueError, match="another architecture"):
        other.fit(X, y, sn.SGD(other.parameters(), lr=0.1), epochs=2, verbose=0, seed=0,
                  resume=ckpt)


def test_the_same_optimizer_and_scheduler_resume_in_one_session(tmp_path):
    """The optimizer a run left (its lr moved by a scheduler), passed again
    with resume= in the same session, was refused as another lr (a review of
    064ef75); a resumed run's checkpoint keeps the run's first lr, so a fresh
    optimizer resumes from it too."""
    X, y = blobs()
    ckpt = tmp_path / "run.ckpt"
    model = mlp()
    opt = sn.SGD(model.parameters(), lr=0.1)
    sched = sn.StepLR(opt, 1, gamma=0.5)
    model.fit(X, y, opt, epochs=2, verbose=0, seed=0, scheduler=sched, checkpoint=ckpt)
    h = model.fit(X, y, opt, epochs=3, verbose=0, seed=0, scheduler=sched, checkpoint=ckpt,
                  resume=ckpt)
    assert h["lr"] == [0.1, 0.05, 0.025]
    fresh = mlp()
    again = sn.SGD(fresh.parameters(), lr=0.1)
    h = fresh.fit(X, y, again, epochs=4, verbose=0, seed=0,
                  scheduler=sn.StepLR(again, 1, gamma=0.5), resume=ckpt)
    assert h["lr"] == [0.1, 0.05, 0.025, 0.0125]


def test_a_resume_adding_validation_is_told_to_leave_it_out(tmp_path):
    """Written without validation, resumed with it: the message said "pass
    validation ... as then", backwards (a review)."""
    X, y = blobs()
    ckpt = tmp_path / "run.ckpt"
    model = mlp()
    model.fit(X, y, sn.SGD(model.parameters()), epochs=1, verbose=0, seed=0, checkpoint=ckpt)
    with pytest.raises(ValueError, match="without validation data; pass neither validation "
                                         "nor validation_split, as then") as refused:
        model.fit(X, y, sn.SGD(model.parameters()), epochs=2, verbose=0, seed=0,
                  validation=(X[:20], y[:20]), resume=ckpt)
    assert refused.value.validation_differs


def test_a_checkpoint_link_into_a_missing_folder_is_refused_before_training(tmp_path):
    """fit checked the folder of the link, the write goes to the folder of
    the file it names (a code review): a dangling link into a folder that
    does not exist passed the check and failed after the first epoch."""
    link = tmp_path / "run.ckpt"
    os.symlink(tmp_path / "gone" / "run.ckpt", link)
    X, y = blobs()
    model = mlp()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.fit(X, y, sn.SGD(model.parameters()), epochs=1, verbose=0, checkpoint=link)
