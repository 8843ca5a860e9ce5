"""fit's validation_split and callbacks=, and EarlyStopping (Keras semantics)."""
import numpy as np
import pytest

import scratchnet as sn
from test_model import blobs, small_model

# every test here runs on both paths: the fused C network and layer by layer
pytestmark = pytest.mark.usefixtures("training_path")


# ---- validation_split ----

def test_validation_split_holds_out_the_last_rows_before_shuffling():
    X, y = blobs(n=100)
    split = small_model(seed=0)
    history = split.fit(X, y, optimizer=sn.SGD(split.parameters(), lr=0.05), epochs=2,
                        batch_size=16, validation_split=0.25, seed=3, verbose=0)
    # training saw exactly the first 75 rows: the same run on them alone gives the same model
    plain = small_model(seed=0)
    plain.fit(X[:75], y[:75], optimizer=sn.SGD(plain.parameters(), lr=0.05), epochs=2,
              batch_size=16, seed=3, verbose=0)
    for a, b in zip(split.parameters(), plain.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    # and the validation figures are those of the last 25
    held_out = split.evaluate(X[75:], y[75:])
    assert history["val_loss"][-1] == pytest.approx(held_out["loss"], rel=1e-6)
    assert history["val_accuracy"][-1] == pytest.approx(held_out["accuracy"])


@pytest.mark.parametrize("kwargs, match", [
    ({"validation_split": 0.2, "validation": "VALIDATION"}, "not both"),
    ({"validation_split": 0.0}, r"in \(0, 1\)"),
    ({"validation_split": 1.0}, r"in \(0, 1\)"),
    ({"validation_split": -0.1}, r"in \(0, 1\)"),
    ({"validation_split": "0.1"}, r"in \(0, 1\)"),
    ({"validation_split": 0.95}, "no training rows"),
])
def test_bad_validation_split(kwargs, match):
    X, y = blobs(n=10)
    model = small_model()
    if kwargs.get("validation") == "VALIDATION":
        kwargs["validation"] = (X, y)
    with pytest.raises(ValueError, match=match):
        model.fit(X, y, optimizer=sn.SGD(model.parameters(), lr=0.1), verbose=0, **kwargs)


def test_validation_split_rounds_like_the_decimal_it_reads():
    # 1 - 0.9 is 0.0999... in binary: the split must still leave 1 training row of 10
    X, y = blobs(n=10)
    model = small_model()
    model.fit(X, y, optimizer=sn.SGD(model.parameters(), lr=0.1), validation_split=0.9,
              verbose=0)
    assert model.evaluate(X[1:], y[1:])["loss"] == pytest.approx(
        model.fit(X, y, optimizer=sn.SGD(model.parameters(), lr=0.0), validation_split=0.9,
                  verbose=0)["val_loss"][0], rel=1e-6)
    # the training rows are rounded down (as Keras does), so any fraction keeps one
    # validation row
    history = model.fit(X, y, optimizer=sn.SGD(model.parameters(), lr=0.0),
                        validation_split=0.01, verbose=0)
    assert history["val_loss"][0] == pytest.approx(model.evaluate(X[9:], y[9:])["loss"],
                                                   rel=1e-6)


# ---- the callback protocol ----

class Recorder(sn.Callback):
    def __init__(self, stop_at=None):
        self.calls, self.stop_at = [], stop_at

    def set_model(self, model):
        super().set_model(model)
        self.calls.append(("set_model", model))

    def on_train_begin(self, logs=None):
        self.calls.append(("begin", logs))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch", epoch, dict(logs)))
        if epoch == self.stop_at:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.calls.append(("end", dict(logs)))


def test_callbacks_are_called_in_order_with_the_history_logs():
    X, y = blobs(n=60)
    model = small_model()
    rec = Recorder()
    history = model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=3,
                        validation_split=0.2, callbacks=[rec], verbose=0)
    assert [c[0] for c in rec.calls] == ["set_model", "begin", "epoch", "epoch", "epoch", "end"]
    assert rec.calls[0][1] is model and rec.model is model
    for i, call in enumerate(rec.calls[2:5]):
        assert call[1] == i + 1  # epochs count from 1, as the progress display shows
        assert call[2] == {k: v[i] for k, v in history.items()}
        assert set(call[2]) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"}
    assert rec.calls[-1][1] == rec.calls[-2][2]  # on_train_end gets the last epoch's logs


def test_a_callback_stops_training_after_the_current_epoch():
    X, y = blobs(n=60)
    model = small_model()
    history = model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=10,
                        callbacks=[Recorder(stop_at=2)], verbose=0)
    assert len(history["loss"]) == 2 and len(history["time"]) == 2
    # the flag is reset by the next fit
    history = model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=3, verbose=0)
    assert len(history["loss"]) == 3


def test_plain_callables_are_not_callbacks():
    X, y = blobs(n=20)
    model = small_model()
    opt = sn.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="callback="):
        model.fit(X, y, optimizer=opt, callbacks=[lambda epoch, logs: None], verbose=0)
    with pytest.raises(TypeError, match="Callback"):
        model.fit(X, y, optimizer=opt, callbacks=["early"], verbose=0)
    with pytest.raises(TypeError, match="function"):
        model.fit(X, y, optimizer=opt, callback="early", verbose=0)


def test_a_single_callback_and_the_callback_function_both_work():
    X, y = blobs(n=20)
    model = small_model()
    seen = []
    rec = Recorder()
    model.fit(X, y, optimizer=sn.SGD(model.parameters(), lr=0.1), epochs=2, callbacks=rec,
              callback=lambda epoch, logs: seen.append((epoch, logs["loss"])), verbose=0)
    assert [e for e, _ in seen] == [1, 2]
    assert [c[1] for c in rec.calls if c[0] == "epoch"] == [1, 2]
    rec = Recorder()
    model.fit(X, y, optimizer=sn.SGD(model.parameters(), lr=0.1), epochs=2, callback=rec,
              verbose=0)
    assert [c[1] for c in rec.calls if c[0] == "epoch"] == [1, 2]


# ---- EarlyStopping, driven with scripted logs ----

class FakeModel:
    stop_training = False


def run_scripted(stopper, key, values):
    """Feed values to the callback as successive epochs; returns the epoch
    after which it asked to stop (or None)."""
    stopper.set_model(FakeModel())
    stopper.on_train_begin({})
    for epoch, value in enumerate(values, start=1):
        stopper.on_epoch_end(epoch, {"lr": 0.1, key: value})
        if stopper.model.stop_training:
            return epoch
    return None


def test_early_stopping_counts_epochs_without_an_improvement_of_more_than_min_delta():
    stopper = sn.EarlyStopping(monitor="val_loss", patience=2, min_delta=0.1)
    # 0.95 is not 0.1 better than 1.0; 0.85 is; then 0.9, 0.86: two epochs without
    assert run_scripted(stopper, "val_loss", [1.0, 0.95, 0.85, 0.9, 0.86, 0.1]) == 5
    assert stopper.stopped_epoch == 5 and stopper.best == pytest.approx(0.85)


def test_early_stopping_patience_zero_stops_at_the_first_epoch_without_improvement():
    stopper = sn.EarlyStopping(monitor="loss", patience=0)
    assert run_scripted(stopper, "loss", [3.0, 2.0, 2.0]) == 3


def test_early_stopping_mode_auto_maximises_accuracies():
    stopper = sn.EarlyStopping(monitor="val_accuracy", patience=1)
    assert run_scripted(stopper, "val_accuracy", [0.5, 0.6, 0.7, 0.69, 0.8]) == 4
    assert stopper.best == pytest.approx(0.7)
    stopper = sn.EarlyStopping(monitor="val_accuracy", patience=1, mode="min")
    assert run_scripted(stopper, "val_accuracy", [0.5, 0.6]) == 2
    stopper = sn.EarlyStopping(monitor="loss", patience=1, mode="max")
    assert run_scripted(stopper, "loss", [0.5, 0.4]) == 2


def test_early_stopping_judges_a_resumed_runs_epochs_by_their_last():
    """Replaying a checkpoint's history: a stop that a later epoch's
    improvement came after (a run without this EarlyStopping) does not end
    the resumed run; a stop at the last epoch does."""
    history = {"lr": [0.1] * 6, "val_loss": [0.144, 0.017, 0.136, 0.089, 0.040, 0.003]}
    stopper = sn.EarlyStopping(monitor="val_loss", patience=3)
    stopper.set_model(FakeModel())
    stopper.on_train_begin({"epoch": 6, "history": history})
    assert not stopper.model.stop_training
    assert (stopper.best_epoch, stopper.wait, stopper.stopped_epoch) == (6, 0, 0)
    stopper = sn.EarlyStopping(monitor="val_loss", patience=3)
    stopper.set_model(FakeModel())
    stopper.on_train_begin({"epoch": 5, "history": history})
    assert stopper.model.stop_training
    assert (stopper.best_epoch, stopper.stopped_epoch) == (2, 5)


def test_early_stopping_that_never_triggers():
    stopper = sn.EarlyStopping(monitor="val_loss", patience=1)
    assert run_scripted(stopper, "val_loss", [3.0, 2.0, 1.0]) is None
    assert stopper.stopped_epoch == 0 and stopper.best == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "lowest"}, "mode"),
    ({"patience": -1}, "patience"),
    ({"patience": 1.5}, "patience"),
    ({"min_delta": -0.1}, "min_delta"),
    ({"monitor": 3}, "monitor"),
])
def test_early_stopping_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sn.EarlyStopping(**kwargs)


# ---- EarlyStopping in fit ----

def test_early_stopping_without_the_monitored_key_names_the_keys_there_are():
    X, y = blobs(n=40)
    model = small_model()
    with pytest.raises(ValueError, match=r"'val_loss'.*accuracy, loss, lr, time.*validation"):
        model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=3,
                  callbacks=[sn.EarlyStopping()], verbose=0)


def test_early_stopping_stops_fit_when_nothing_improves():
    X, y = blobs(n=50)
    model = small_model()
    stopper = sn.EarlyStopping(monitor="val_loss", patience=2)
    history = model.fit(X, y, optimizer=sn.SGD(model.parameters(), lr=0.0), epochs=20,
                        validation_split=0.2, callbacks=[stopper], verbose=0)
    assert len(history["val_loss"]) == 3 and stopper.stopped_epoch == 3
    assert stopper.best == history["val_loss"][0]


class Snapshots(sn.Callback):
    def __init__(self):
        self.states = []

    def on_epoch_end(self, epoch, logs=None):
        self.states.append(self.model.state_dict())


@pytest.mark.parametrize("patience, stops_early", [(1, True), (50, False)])
def test_restore_best_puts_back_the_best_epochs_weights(patience, stops_early):
    X, y = blobs(n=200)
    # validation labels the training contradicts: the validation loss rises as
    # training goes on, so the best epoch is an early one
    Xv, yv = X[:50], (y[:50] + 1) % 3
    model = small_model()
    snaps = Snapshots()
    stopper = sn.EarlyStopping(monitor="val_loss", patience=patience, restore_best=True)
    history = model.fit(X, y, optimizer=sn.Adam(model.parameters(), lr=1e-2), epochs=6,
                        validation=(Xv, yv), callbacks=[snaps, stopper], seed=0, verbose=0)
    assert (len(history["loss"]) < 6) == stops_early
    best = int(np.argmin(history["val_loss"]))
    assert best < len(history["loss"]) - 1  # otherwise restoring would change nothing
    assert stopper.best == history["val_loss"][best]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, snaps.states[best][name])
    # predictions (through the compiled network) use the restored weights
    fresh = small_model(seed=5)
    fresh.load_state_dict(snaps.states[best])
    np.testing.assert_array_equal(model.predict_logits(Xv), fresh.predict_logits(Xv))


def test_a_keras_hook_fit_never_calls_is_refused():
    """on_batch_end (or on_epoch_begin, ...) was taken and never called: the
    callback did nothing, unseen (found by a reviewer)."""
    class PerBatch(sn.Callback):
        def on_batch_end(self, batch, logs=None):
            raise AssertionError("never reached")

    model = sn.Sequential(sn.Dense(3, 2))
    X, y = np.ones((8, 3), np.float32), np.arange(8) % 2
    with pytest.raises(TypeError, match="PerBatch defines on_batch_end, which fit does not call"):
        model.fit(X, y, sn.SGD(model.parameters()), epochs=1, verbose=0, callbacks=[PerBatch()])
