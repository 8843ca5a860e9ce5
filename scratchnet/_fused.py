"""The fast path: a Sequential of dense layers and element-wise activations
(and dropout) becomes one C object, scratchnet._core.MLP, that trains whole
runs of batches and runs inference in one call each. Sequential uses it
whenever the model, loss and optimizer are ones it covers, and falls back to
the layer-by-layer path otherwise; both compute the same thing, with the same
dropout masks for a seed.

SCRATCHNET_FUSED=0 in the environment (read at import) or `ENABLED = False`
turns this path off for training and inference alike."""
import os

import numpy as np

from . import _core
from .layers import Dense, Dropout, Flatten, LeakyReLU, ReLU, Sigmoid, Tanh
from .losses import CrossEntropy
from .optimizers import SGD, AdaGrad, Adam, AdamW, RMSProp

_ACTIVATION_NAMES = {ReLU: "relu", LeakyReLU: "leaky_relu", Sigmoid: "sigmoid", Tanh: "tanh"}
_OPTIMIZER_NAMES = {SGD: "sgd", AdaGrad: "adagrad", RMSProp: "rmsprop", Adam: "adam",
                    AdamW: "adamw"}

ENABLED = os.environ.get("SCRATCHNET_FUSED", "1").strip() != "0"


def layer_specs(layers):
    """[(dense, activation name, slope, dropout layer or None)] for Dense
    [activation] [Dropout] groups ending in a bare Dense, or None if the
    model has any other shape (or the fused path is off). Leading Flatten
    layers are allowed: Sequential flattens the input before either path."""
    if not ENABLED:
        return None
    specs, i = [], 0
    while i < len(layers) and type(layers[i]) is Flatten:
        i += 1
    while i < len(layers):
        dense = layers[i]
        if type(dense) is not Dense:
            return None
        i += 1
        act, slope, dropout = "none", 0.0, None
        if i < len(layers) and type(layers[i]) in _ACTIVATION_NAMES:
            act = _ACTIVATION_NAMES[type(layers[i])]
            if act == "leaky_relu":
                slope = layers[i].negative_slope
                if slope < 0:
                    return None
            i += 1
        if i < len(layers) and type(layers[i]) is Dropout:
            dropout = layers[i]
            i += 1
        specs.append((dense, act, slope, dropout))
    if not specs or specs[-1][1] != "none" or specs[-1][3] is not None:
        return None  # the last layer must give raw outputs
    return specs


def build(specs, max_batch, train=True, team=None):
    """The C network; train=False: for inference only (no dropout, no
    training workspaces); team: the _core.TeamChoice its training carries on."""
    return _core.MLP([(d.weight.data, d.bias.data, d.weight.grad if train else None,
                       d.bias.grad if train else None, act, slope,
                       dropout.p if train and dropout is not None else 0.0)
                      for d, act, slope, dropout in specs], max_batch, train, team)


class Pace:
    """What a model's C training learned of its own speed, kept from fit to
    fit while its layers' shapes and the batch size stay: the choice of the
    threads or alone, with its timing's schedule (a new one times 8 steps
    alone first: 1.6% of a 784-128-10 epoch at 1.93x a step), and the
    seconds a batch took (fit sizes its runs by them)."""

    def __init__(self):
        self.team = _core.TeamChoice()
        self.batch_seconds = None


def _pace(model, specs, batch_size):
    """The model's Pace for these layers and batch size: the one its last
    fit left if they are the same, else a new one (kept for the next)."""
    shape = (batch_size, tuple((d.weight.shape, act, slope, dropout is not None and dropout.p)
                               for d, act, slope, dropout in specs))
    kept = model.__dict__.get("_fused_pace")
    if kept is None or kept[0] != shape:
        kept = (shape, Pace())
        model.__dict__["_fused_pace"] = kept
    return kept[1]


def _steps_taken(optimizer, params):
    """The steps the parameters have taken, if they all took the same number
    (the C step keeps one count for all), else None. SGD counts only whether
    a first step happened: its momentum buffer exists."""
    kind = _OPTIMIZER_NAMES[type(optimizer)]
    steps = set()
    for p in params:
        state = optimizer.state.get(p, {})
        if kind == "sgd":
            steps.add(1 if "momentum_buffer" in state else 0)
        elif kind == "rmsprop":
            steps.add(0)
        else:
            steps.add(state.get("step", 0))
    return steps.pop() if len(steps) == 1 else None


def _optimizer_state(optimizer, params):
    """The state arrays of each parameter, created as the Python step would."""
    group = optimizer.param_groups[0]
    kind = _OPTIMIZER_NAMES[type(optimizer)]
    states = []
    for p in params:
        state = optimizer.state.setdefault(p, {})
        if kind == "sgd":
            arrays = [optimizer._zeros(state, "momentum_buffer", p)] \
                if group["momentum"] != 0 else []
        elif kind == "adagrad":
            arrays = [AdaGrad.started(state, p, group)]
        elif kind == "rmsprop":
            arrays = [optimizer._zeros(state, "square_avg", p),
                      optimizer._zeros(state, "grad_avg", p) if group["centered"] else None,
                      optimizer._zeros(state, "momentum_buffer", p)
                      if group["momentum"] > 0 else None]
        else:
            arrays = [optimizer._zeros(state, "exp_avg", p),
                      optimizer._zeros(state, "exp_avg_sq", p)]
        states.append(arrays)
    return states


class Trainer:
    """Trains a Sequential through one _core.MLP; made by trainer() below."""

    def __init__(self, specs, params, optimizer, batch_size, pace):
        self.optimizer, self.params = optimizer, params
        self.kind = _OPTIMIZER_NAMES[type(optimizer)]
        self.pace = pace
        self.mlp = build(specs, batch_size, team=self.pace.team)
        self.dropouts = [dropout for *_, dropout in specs]

    def run(self, X, y, order, batch_size, skip=False, shard=None, loss_before=0.0):
        """Train on X[order]; returns (summed loss, correct, failed, rows,
        bad_input), the loss summed onto loss_before (the epoch's sum so far:
        then the sum does not depend on how the epoch is cut into runs; see
        _core.MLP.train): failed lists the batches of the run (from 0) whose
        outputs, loss or gradient were not finite, which took no step and are
        not in the sums nor in rows (the rows trained on). The run ends at the
        first, unless skip: then it goes on after each, but for one whose rows
        of X hold NaN or inf (X changed since fit read it whole), which ends
        the run and is bad_input (else None). With shard (a
        scratchnet._sharding.Shard), order holds the run's global batches:
        this rank trains its share of each, and the C trainer sums the
        ranks' gradients (shard.reduce) before every step."""
        step = _steps_taken(self.optimizer, self.params)
        if step is None:
            raise RuntimeError("optimizer state went out of step")
        arrays = _optimizer_state(self.optimizer, self.params)
        group = self.optimizer.param_groups[0]
        self.mlp.set_optimizer(self.kind, group, arrays, self.optimizer.iterations, step)
        # each Dropout layer's stream, advanced by the run's batches as the
        # layer-by-layer path would advance it: batch b's mask is keyed by
        # seed + b, a failed batch's key included
        batches = -(-len(order) // batch_size)
        # (a Dropout with p = 0 draws nothing, on either path)
        seeds = [d.take_mask_seed(batches) if d is not None and d.draws() else 0
                 for d in self.dropouts]
        given = order  # the global batches, batch_size rows apart
        if shard is not None:
            order, rows, first, global_rows = shard.plan(order, batch_size)
        else:
            rows = np.minimum(batch_size, len(order) - np.arange(0, len(order), batch_size))
        starts = np.concatenate(([0], np.cumsum(rows)))  # of each batch, in order
        total, right, failed, done, bad_input = loss_before, 0, [], 0, None
        try:
            while done < batches:
                self.mlp.set_dropout_seeds([seed + done for seed in seeds])
                if shard is not None:
                    self.mlp.set_shard(rows[done:], first[done:], global_rows[done:],
                                       shard.reduce)
                total, correct, bad = self.mlp.train(X, y, order[starts[done]:], batch_size,
                                                     partial=True, loss_before=total)
                right += correct
                if bad < 0:
                    break
                failed.append(done + bad)
                done += bad + 1
                # not a divergence but the data: fit raises, the steps before
                # that batch kept, none after (skip or not)
                if not _core.all_finite(X[given[(done - 1) * batch_size:done * batch_size]]):
                    bad_input = done - 1
                    break
                if not skip:
                    break
        finally:
            self.mlp.set_shard()
            self._took_steps(step)
        return total, right, failed, int(starts[-1] - rows[failed].sum()), bad_input

    def _took_steps(self, step):
        """The C step counts back into the optimizer's state, as the Python
        step keeps them."""
        self.optimizer.iterations = self.mlp.iterations
        if self.kind in ("adagrad", "adam", "adamw"):
            for p in self.params:
                self.optimizer.state[p]["step"] = self.mlp.step
        elif self.kind == "sgd" and step == 0 and self.mlp.step == 0:
            for p in self.params:  # no first step yet: its momentum buffer starts it
                self.optimizer.state[p].pop("momentum_buffer", None)


def trainer(model, optimizer, loss, y, batch_size):
    """A Trainer when the fast path covers this model, loss and optimizer,
    else None."""
    if type(loss) is not CrossEntropy or y.ndim != 1 or not model._compiled_paths_apply():
        return None
    if type(optimizer) not in _OPTIMIZER_NAMES or len(optimizer.param_groups) != 1:
        return None
    specs = layer_specs(model.layers)
    if specs is None:
        return None
    params = [p for d, *_ in specs for p in (d.weight, d.bias)]
    if not all(p.requires_grad for p in params):
        return None  # the C step would move a frozen one
    group_params = optimizer.param_groups[0]["params"]
    if len(group_params) != len(params) or any(a is not b for a, b in zip(group_params, params)):
        return None
    if _steps_taken(optimizer, params) is None:
        return None
    return Trainer(specs, params, optimizer, batch_size, _pace(model, specs, batch_size))
