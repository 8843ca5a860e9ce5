"""What runs between epochs of Sequential.fit: the Callback protocol and
EarlyStopping (Keras semantics, see docs/formulas.md).

fit(callbacks=[...]) calls, on each callback: set_model(model) once, then
on_train_begin(logs), on_epoch_end(epoch, logs) after every epoch (epoch
counts from 1; logs holds this epoch's "loss", "accuracy", "val_loss",
"val_accuracy", "lr", "time", as the history does), and on_train_end(logs)
with the last epoch's logs. A callback stops training after the current
epoch by setting model.stop_training = True (in on_train_begin: before the
first); fit still returns the history so far.

A fit resumed from a checkpoint first calls check_resume(history, epochs)
with the checkpoint's history and epoch count, before it loads anything (a
callback that raises there refuses the resume and leaves the model and
optimizer as they were), then passes on_train_begin the same: logs =
{"epoch": the epochs done, "history": a copy of fit's history of them};
otherwise logs is empty. EarlyStopping judges those epochs again, so that a
resumed run stops where the uninterrupted one would have."""
import copy
import math
import numbers

from ._validate import boolean


class Callback:
    """Base class: override the hooks you need; each returns nothing."""

    model = None

    def set_model(self, model):
        self.model = model

    def check_resume(self, history, epochs):
        pass

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class CallbackList:
    """The callbacks of one fit, called in order. function is fit's older
    callback= argument, a plain function(epoch, logs) run after the others."""

    def __init__(self, callbacks, model, function=None):
        if callbacks is None:
            callbacks = []
        elif isinstance(callbacks, Callback):
            callbacks = [callbacks]
        self.callbacks = [_checked(cb) for cb in callbacks]
        if isinstance(function, Callback):  # a Callback given as callback= works too
            self.callbacks.append(function)
            function = None
        if function is not None and not callable(function):
            raise TypeError(f"callback= takes a function(epoch, logs), got "
                            f"{type(function).__name__}")
        self.function = function
        for cb in self.callbacks:
            cb.set_model(model)

    def check_resume(self, history, epochs):
        """Before a resumed fit loads the checkpoint of epoch `epochs`."""
        for cb in self.callbacks:
            cb.check_resume(_copy(history), epochs)

    def on_train_begin(self, history=None, done=0):
        """done epochs already complete (a resumed fit), history their figures."""
        for cb in self.callbacks:
            cb.on_train_begin({"epoch": done, "history": _copy(history)} if done else {})

    def on_epoch_end(self, epoch, logs):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)
        if self.function is not None:
            self.function(epoch, logs)

    def on_train_end(self, logs):
        for cb in self.callbacks:
            cb.on_train_end(logs)


def _copy(history):
    """A callback's own copy of fit's history: changing it cannot break fit."""
    return {key: list(values) for key, values in history.items()}


# Keras's hooks that fit has no place for: per batch (the fused C trainer
# runs an epoch's batches in one call), at an epoch's start, or in evaluate
# and predict; defined, each would be skipped without a word
_NOT_CALLED = ("on_epoch_begin", "on_batch_begin", "on_batch_end", "on_train_batch_begin",
               "on_train_batch_end", "on_test_begin", "on_test_end", "on_predict_begin",
               "on_predict_end")


def _checked(cb):
    if isinstance(cb, Callback):
        uncalled = [name for name in _NOT_CALLED if callable(getattr(cb, name, None))]
        if uncalled:
            # defined and never called: the callback would do nothing, unseen
            raise TypeError(f"callbacks=: {type(cb).__name__} defines {', '.join(uncalled)}, "
                            "which fit does not call; its hooks are check_resume, "
                            "on_train_begin, on_epoch_end and on_train_end")
        return cb
    if callable(cb):
        raise TypeError(f"callbacks= takes Callback objects, got the function {cb!r}; pass a "
                        f"function(epoch, logs) as callback=, or subclass scratchnet.Callback")
    raise TypeError(f"callbacks= takes Callback objects (e.g. scratchnet.EarlyStopping()), "
                    f"got {type(cb).__name__}")


class EarlyStopping(Callback):
    """Stop training when the monitored value stops improving.

    An improvement is a change of more than min_delta in the right direction:
    lower for mode="min", higher for "max"; "auto" maximises accuracies and
    minimises everything else. After patience epochs in a row without one,
    training stops. With restore_best, the model gets back the weights of its
    best epoch when training ends, whether it stopped early or not.

    After fit: .best is the best value seen, .best_epoch its epoch, and
    .stopped_epoch the epoch after which training stopped (0 if it ran to
    the end). Epochs count from 1."""

    MODES = ("auto", "min", "max")

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=False,
                 mode="auto"):
        if not isinstance(monitor, str):
            raise ValueError(f"EarlyStopping: monitor must be a key of the logs such as "
                             f"'val_loss', got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) \
                or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an integer >= 0, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real) \
                or not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"EarlyStopping: min_delta must be a finite number >= 0, "
                             f"got {min_delta!r}")
        if mode not in self.MODES:
            raise ValueError(f"EarlyStopping: unknown mode {mode!r}; expected one of {self.MODES}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.restore_best = boolean(restore_best, "EarlyStopping: restore_best")
        if mode == "auto":
            mode = "max" if monitor.endswith(("accuracy", "acc")) else "min"
        self.mode = mode
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.stopped_epoch, self.wait = 0, 0, 0
        self.best_state = None

    def _improves(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def check_resume(self, history, epochs):
        """Refuses a resume whose best epoch so far comes before the
        checkpoint with restore_best: a checkpoint holds only its own epoch's
        weights, so fit could not end with the best ones."""
        replay = copy.copy(self)  # judged aside: this callback's own state stays
        replay._reset()
        replay._refuse_lost_best(replay._replay(history, epochs), epochs)

    def on_train_begin(self, logs=None):
        self._reset()  # a callback can serve several fits
        done = (logs or {}).get("epoch", 0)
        if not done:
            return
        # resumed: judge the epochs already done as the uninterrupted run
        # did; if the last of them ended the run, it stays ended
        stops = self._replay(logs["history"], done)
        self._refuse_lost_best(stops, done)
        if stops:
            self.stopped_epoch = done
            self.model.stop_training = True
        if self.restore_best and self.best_epoch == done:
            self.best_state = self.model.state_dict()  # the weights the checkpoint gave

    def _refuse_lost_best(self, stops, epochs):
        """After replaying a checkpoint's epochs (stops: the last ended the run)."""
        if self.restore_best and 0 < self.best_epoch < epochs:
            ended = (f"the run stopped after epoch {epochs}" if stops else
                     f"the checkpoint is of epoch {epochs}")
            raise ValueError(
                f"EarlyStopping(restore_best=True): the best epoch so far is epoch "
                f"{self.best_epoch} ({self.monitor} {self.best:.6g}), but {ended} and holds "
                f"only that epoch's weights, so the best ones could not be restored; resume "
                f"without restore_best to go on from epoch {epochs}'s weights")

    def _replay(self, history, epochs):
        """best, best_epoch and wait after the first epochs of history;
        returns whether the last of them ends the run."""
        stops = False
        for epoch in range(1, epochs + 1):
            stops = self._judge(epoch, {key: values[epoch - 1] for key, values in history.items()})
        return stops

    def on_epoch_end(self, epoch, logs=None):
        if self._judge(epoch, logs or {}):
            self.stopped_epoch = epoch
            self.model.stop_training = True
        if self.restore_best and self.best_epoch == epoch:
            self.best_state = self.model.state_dict()

    def _judge(self, epoch, logs):
        """best, best_epoch and wait after epoch's logs; returns whether the
        run stops there (patience epochs in a row without an improvement)."""
        value = self._monitored(logs)
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def on_train_end(self, logs=None):
        if self.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def _monitored(self, logs):
        value = logs.get(self.monitor)
        if value is None:
            there = ", ".join(sorted(k for k, v in logs.items() if v is not None))
            hint = (" (validation figures need validation= or validation_split= in fit)"
                    if self.monitor.startswith("val_") else "")
            raise ValueError(f"EarlyStopping: monitor {self.monitor!r} is not in the logs; "
                             f"they have {there}{hint}")
        return value
