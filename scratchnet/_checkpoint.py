"""Training checkpoints: what fit(checkpoint=PATH) writes after every epoch
and fit(resume=PATH) continues from.

A checkpoint is a model file (the same .npz: the architecture record and the
parameter and buffer arrays, so sn.load reads it as a model) with one more
JSON record, "__training__", and the optimizer's state arrays, named
"__optimizer__.state.<parameter index>.<name>". The record holds:

- format, version: "scratchnet.checkpoint" and VERSION (a newer one is refused;
  READS are the versions this one reads)
- epoch: the epochs completed; history: fit's history up to there
- optimizer: Optimizer.state_dict() (type, hyper-parameters with the current
  learning rate, step counts; the arrays stand in as {"__array__": name})
- scheduler: the scheduler's state_dict(), or null
- rng: the state of fit's generator (it shuffles, and seeded the random layers)
- random_layers: {layer index: {"seed", "calls"}} of each random layer
  (dropout masks, augmentation)
- fit: the samples, batch size and shuffle of the run, the loss's type, a
  fingerprint of the data (data_fingerprint) and each parameter group's lr
  when the run began: resuming needs the same (a checkpoint written before
  the last three were kept is checked without them, its initial_lr for the lr)
"""
import hashlib
import json
import math

import numpy as np

from ._files import ModelFileError, _json_default, join_arrays, split_arrays

FORMAT = "scratchnet.checkpoint"
# 2: the fit settings hold each group's lr as the run began; 1 is still read
VERSION = 2
READS = (1, 2)
_OPTIMIZER = "__optimizer__"


# rows of X read into the fingerprint, spread evenly over it
_FINGERPRINT_ROWS = 64


def data_fingerprint(X, y):
    """A digest of X's shape, all of the targets y and 64 rows of X spread
    over it (a few hundred KB read, whatever X's size): other data is told
    apart from the data a checkpoint was written over, though a change to a
    few values of X may not be."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((X.shape, X.dtype.str, y.shape, y.dtype.str)).encode())
    digest.update(np.ascontiguousarray(y).tobytes())
    rows = np.unique(np.linspace(0, len(X) - 1, _FINGERPRINT_ROWS).astype(np.int64))
    digest.update(np.ascontiguousarray(X[rows]).tobytes())
    return digest.hexdigest()


def training_record(model, optimizer, scheduler, rng, history, epoch, settings, arrays):
    """The "__training__" record; the optimizer's arrays go into arrays."""
    return {"format": FORMAT, "version": VERSION, "epoch": epoch, "history": history,
            "optimizer": split_arrays(optimizer.state_dict(), _OPTIMIZER, arrays),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "rng": rng.bit_generator.state, "random_layers": model.random_state(),
            "fit": settings}


class Checkpoint:
    """A checkpoint's training record, checked for form: the epoch, history,
    optimizer state (with its arrays), scheduler state, generator state,
    random layers' states and run settings. The optimizer's arrays are taken
    out of the arrays given; what is left is the model's."""

    def __init__(self, record, arrays, path):
        self.path = path
        try:
            self._read(record, arrays)
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFileError(f"{path}: bad training record ({exc})") from None

    def _read(self, record, arrays):
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError("not a scratchnet checkpoint record")
        if record.get("version") not in READS:
            raise ModelFileError(f"{self.path}: checkpoint format version "
                                 f"{record.get('version')!r} (this scratchnet reads up to "
                                 f"{VERSION}: "
                                 "written by a newer scratchnet?)")
        self.epoch = _whole(record["epoch"], "epoch", 1)
        self.history = _history(record["history"], self.epoch)
        settings = record["fit"]
        run = {"samples", "batch_size", "shuffle"}
        if not isinstance(settings, dict) \
                or not run <= set(settings) <= run | {"data", "loss", "lr"} \
                or not isinstance(settings["shuffle"], bool) \
                or not all(isinstance(settings.get(k, ""), str) for k in ("data", "loss")) \
                or not (isinstance(settings.get("lr", []), list) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and
                    math.isfinite(v) and v >= 0 for v in settings.get("lr", []))):
            raise ValueError(f"fit settings {settings!r}")
        for key in ("samples", "batch_size"):
            _whole(settings[key], key, 1)
        self.settings = settings
        self.rng = record["rng"]
        np.random.Generator(np.random.PCG64()).bit_generator.state = self.rng  # checks it
        self.random_layers = record["random_layers"]
        if not isinstance(self.random_layers, dict):
            raise ValueError("random_layers is not a mapping")
        self.scheduler = record["scheduler"]
        if self.scheduler is not None and not isinstance(self.scheduler, dict):
            raise ValueError("scheduler is not a mapping")
        used = set()
        self.optimizer = join_arrays(record["optimizer"], arrays, used)
        if not isinstance(self.optimizer, dict) or not isinstance(self.optimizer.get("type"),
                                                                   str):
            raise ValueError("the optimizer state has no type")
        stray = sorted(k for k in arrays if k.startswith(_OPTIMIZER) and k not in used)
        if stray:
            raise ModelFileError(f"{self.path}: unexpected arrays {stray}")
        for name in used:
            del arrays[name]

    def check_fits(self, arch, model_arch, optimizer, scheduler, settings, history, epochs):
        """Refuse (ValueError) to resume this checkpoint into a run of fewer
        epochs than it holds, into a model of another architecture, with
        another optimizer or scheduler type, other data or batch size, with
        validation where it had none (or none where it had), or with other
        optimizer hyper-parameters."""
        where = f"fit: cannot resume from {self.path}"
        if epochs < self.epoch:
            # the model would come back trained for more epochs than asked
            raise ValueError(f"{where}: it holds epoch {self.epoch} of its run, past "
                             f"epochs={epochs} (epochs counts the whole run): pass epochs >= "
                             f"{self.epoch}, or take its model with sn.load")
        theirs, mine = _resumable(arch.get("layers")), _resumable(model_arch["layers"])
        if theirs != mine:
            raise ValueError(f"{where}: it holds a model of another architecture "
                             f"({_first_difference(theirs, mine)})")
        kind = self.optimizer["type"]
        if kind != type(optimizer).__name__:
            raise ValueError(f"{where}: it was written with the optimizer {kind}, this fit "
                             f"has {type(optimizer).__name__}; pass {kind}(model.parameters())")
        theirs = None if self.scheduler is None else self.scheduler.get("type")
        mine = None if scheduler is None else type(scheduler).__name__
        if theirs != mine:
            raise ValueError(f"{where}: it was written with scheduler={theirs}, this fit has "
                             f"scheduler={mine}; pass the same kind")
        if theirs is not None and hasattr(scheduler, "_settings"):
            # resuming loads the checkpoint's settings into the scheduler: others
            # given now (a cosine schedule's T_max for a longer run) would be lost
            saved = {k: v for k, v in self.scheduler.items() if k not in ("type", "epoch")}
            given = scheduler._settings()
            if saved != given:
                raise ValueError(f"{where}: it was written with {_call(theirs, saved)}, this fit "
                                 f"has {_call(theirs, given)}; resuming continues the schedule "
                                 "it holds: pass the same settings (a schedule that has ended "
                                 "cannot be extended)")
        if any(self.settings[k] != settings[k] for k in ("samples", "batch_size", "shuffle")):
            raise ValueError(f"{where}: it was written by a fit over {_run(self.settings)}; "
                             f"this one is over {_run(settings)}; resuming needs the same "
                             "data, batch_size and shuffle")
        if self.settings.get("loss", settings["loss"]) != settings["loss"]:
            raise ValueError(f"{where}: it was written by a fit with the loss "
                             f"{self.settings['loss']}, this one has {settings['loss']}; pass "
                             f"loss=sn.{self.settings['loss']}()")
        if self.settings.get("data", settings["data"]) != settings["data"]:
            raise ValueError(f"{where}: it was written by a fit over other data (the same "
                             "number of samples, but other targets or other rows of X); "
                             "resuming needs the same X and y")
        if set(self.history) != set(history):
            had = "val_loss" in self.history
            refusal = ValueError(f"{where}: it was written by a fit "
                                 f"{'with' if had else 'without'} validation data; "
                                 + ("pass validation (or validation_split) as then" if had else
                                    "pass neither validation nor validation_split, as then"))
            refusal.validation_differs = True  # what the command line words as --plots
            raise refusal
        started = self.settings.get("lr")  # each group's lr when the run began (None: older)
        if started is not None and len(started) != len(optimizer.param_groups):
            raise ValueError(f"{where}: it was written with {len(started)} parameter group(s), "
                             f"this fit's optimizer has {len(optimizer.param_groups)}")
        for i, (saved, group) in enumerate(zip(self.optimizer.get("param_groups", []),
                                               optimizer.param_groups)):
            # resuming loads the checkpoint's hyper-parameters into the
            # optimizer: others given now (a new lr) would be dropped unseen
            theirs, mine = _hyper(saved), _hyper(group)
            if started is not None:
                # the lr each began with, not initial_lr: a lr set during the run
                # (opt.lr in a callback) is the checkpoint's to carry on. The
                # optimizer the run left (its lr moved by a scheduler), passed
                # again in the same session, holds the checkpoint's own lr.
                mine_lr = settings["lr"][i]
                same_optimizer = isinstance(saved.get("lr"), (int, float)) and \
                    mine_lr == float(saved["lr"])
                theirs["lr"], mine["lr"] = started[i], started[i] if same_optimizer else mine_lr
            if theirs != mine:
                group_name = f" (param group {i})" if len(optimizer.param_groups) > 1 else ""
                raise ValueError(f"{where}: it was written with {_call(kind, theirs)}"
                                 f"{group_name}, this fit has {_call(kind, mine)}; resuming "
                                 "continues the optimizer it holds: pass the same settings (to "
                                 "train on with others, fit again without resume)")


def started_lrs(checkpoint):
    """Each parameter group's lr as the checkpoint's run began: recorded in
    its fit settings, or, in a checkpoint from before they held it, the
    initial_lr its resume was checked against."""
    started = checkpoint.settings.get("lr")
    if started is not None:
        return list(started)
    return [float(g.get("initial_lr", g.get("lr")))
            for g in checkpoint.optimizer.get("param_groups", [])]


def _resumable(layers):
    """The layer records as resuming compares them: without the weights'
    initialisation ("init"), which the checkpoint's weights replace (a run
    resumed with Dense(init="xavier") for "he" was refused)."""
    layers = _plain(layers)
    if not isinstance(layers, list):
        return layers
    return [{**spec, "config": {k: v for k, v in spec["config"].items() if k != "init"}}
            if isinstance(spec, dict) and isinstance(spec.get("config"), dict) else spec
            for spec in layers]


def _whole(value, what, low=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} {value!r}: expected a whole number >= {low}")
    return value


def _history(history, epochs):
    if not isinstance(history, dict) or "loss" not in history:
        raise ValueError("history is not fit's history")
    for key, values in history.items():
        if not isinstance(values, list) or len(values) != epochs or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                for v in values):
            raise ValueError(f"history[{key!r}] is not {epochs} numbers")
    return {key: list(values) for key, values in history.items()}


def _plain(value):
    """value as JSON reads it back (tuples become lists, NumPy numbers
    Python ones), as the checkpoint was written: an np.float32 lr had failed
    the comparison with a bare TypeError."""
    return json.loads(json.dumps(value, default=_json_default))


def _first_difference(theirs, mine):
    if not isinstance(theirs, list) or len(theirs) != len(mine):
        count = len(theirs) if isinstance(theirs, list) else "?"
        return f"{count} layers in the file, {len(mine)} in this model"
    for i, (a, b) in enumerate(zip(theirs, mine)):
        if a != b:
            return f"layer {i}: {_label(a)} in the file, {_label(b)} in this model"
    return "?"


def _label(spec):
    if not isinstance(spec, dict):
        return repr(spec)
    config = spec.get("config") or {}
    args = ", ".join(f"{k}={v!r}" for k, v in config.items()) if isinstance(config, dict) else ""
    return f"{spec.get('type')}({args})"


def _hyper(group):
    """A parameter group's hyper-parameters as given to the optimizer, no
    parameters, as JSON reads them back; the lr as initial_lr (the lr at
    construction or last set by opt.lr), which check_fits replaces by the
    lr the run began with where the checkpoint records it."""
    given = {k: v for k, v in group.items() if k not in ("params", "lr", "initial_lr")}
    return _plain({"lr": group.get("initial_lr", group.get("lr")), **given})


def _call(name, settings):
    """name(key=value, ...), as a constructor call reads."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"


def _run(settings):
    return (f"{settings['samples']} samples in batches of {settings['batch_size']}"
            f"{'' if settings['shuffle'] else ', unshuffled'}")
