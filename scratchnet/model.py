"""Sequential: a stack of layers with fit / evaluate / predict / save / load.

What predict and predict_proba return follows the loss the model was fitted
with (recorded in model.loss and saved with the model): class labels and
softmax for CrossEntropy, 0/1 labels and sigmoid for BinaryCrossEntropy, the
outputs themselves for MSE (docs/formulas.md, "What predict returns").

Threads: inference (predict, predict_proba, predict_logits, evaluate) may be
called on one model from several threads at once and gives each call the
single-thread answer: the fused C network takes a workspace of its own for a
call when another call holds the shared one; the layer-by-layer path, whose
layers keep per-call buffers, holds the model's lock across the call. fit
holds the lock for each epoch's steps (inference on the layer path waits for
them; between epochs, callbacks included, it runs) and a lock of its own
for the whole run (one fit at a time)."""
import functools
import inspect
import json
import math
import numbers
import os
import sys
import threading
import time
import warnings
import weakref
from collections import OrderedDict, namedtuple
from collections.abc import Mapping
from fractions import Fraction

import numpy as np

from . import _core, _fused, _inference, _random, _sharding
from . import distributed as distributed_api
from ._checkpoint import Checkpoint, data_fingerprint, started_lrs, training_record
from ._files import (ModelFileError, _json_default, checked_target, read_npz, read_record,
                     write_npz)
from ._progress import start_epoch
from ._sharding import SharedInterrupts
from ._training import (NONFINITE_MODES, EpochTally, Interrupts, TrainingDivergedError,
                        divergence_message, interrupted_message, nonfinite_problem,
                        skipped_message)
from ._validate import (_no_masked_values, as_features, as_float32, as_labels, boolean,
                        check_finite, choice, positive_int)
from .callbacks import CallbackList
from .layers import (LAYERS, Dense, Flatten, RandomStream, Reshape, Sigmoid, Softmax,
                     _Activation, weights_to_be_replaced)
from .losses import LOSSES, MSE, BinaryCrossEntropy, CrossEntropy, Loss
from .layers_norm import _BatchNorm
from .module import Module, Parameter, checked_state
from .optimizers import Optimizer

MODEL_FORMAT = "scratchnet.Sequential"
FORMAT_VERSION = 1
_PREDICT_BATCH = 2048  # rows per forward pass in predict/evaluate: bounds memory
# Seconds a run of the C trainer's batches lasts once fit knows the pace of
# its batches: long enough that what each run costs besides its steps (the
# optimizer's state handed to C, the batches' bookkeeping: 45-85 us, 1-2% of
# a 784-128-10 epoch at 20 runs) is lost in it, short enough that the
# progress bar moves and Ctrl-C is seen within about this long.
_FAST_RUN_SECONDS = 0.1


def _moves_the_version(method):
    """A list method that also moves Parameter.version, as a replaced weight
    array does: a change the compiled networks must see. After the change
    (a call that checks the version first then sees the change), and also
    when the method raises part-way (extend from a generator that fails, a
    sort whose keys do not compare: the list may have changed)."""
    @functools.wraps(method)
    def changed(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            Parameter.version += 1
    return changed


class _Layers(list):
    """Sequential.layers: a list whose every change in place (layers[i] =
    layer, append, del, ..., even __init__) moves Parameter.version, so
    that the one-image call's check of its compiled classifier
    (Sequential._fast_classifier) is one comparison, made in predict_proba
    itself: one image through 784-128-10, 2.29 -> 2.16 us (AMD EPYC Zen 5),
    where the layers' comparison and the call that made it were ~0.13 us."""


# every list method that changes the list in place
for _name in ("__init__", "__setitem__", "__delitem__", "__iadd__", "__imul__", "append",
              "extend", "insert", "pop", "remove", "clear", "sort", "reverse"):
    setattr(_Layers, _name, _moves_the_version(getattr(list, _name)))
del _name


def _check_each_layer_once(layers, where):
    """Raise ValueError where one layer object is in `layers` twice. A layer
    keeps what its last forward pass saw (its input, its output buffer) for
    the backward pass, so the second use overwrote the first's and the
    gradients came out wrong with no error: Sequential(d, act, d2, act) with
    one ReLU `act` trained otherwise than with two (PyTorch's modules keep
    no such state, so a reused nn.ReLU is right there)."""
    seen = {}
    for i, layer in enumerate(layers):
        first = seen.setdefault(id(layer), i)
        if first != i:
            name = type(layer).__name__
            tie = "; to tie weights, write a Module of your own" if layer.parameters() else ""
            raise ValueError(f"{where}: layers {first} and {i} are the same {name} object; a "
                             f"layer keeps the values of its own forward pass for backward, so "
                             f"one used twice would train on the wrong ones. Use a new {name} "
                             f"for each place{tie}")


class Sequential(Module):
    # (Parameter.version when _fused_classifier last found the model's compiled
    # classifier current, that classifier): while the version has not moved,
    # nothing it depends on has changed (the layers list, a replaced array or
    # setting, the loss: each moves the version); -1: never
    _fast_classifier = (-1, None)

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for layer in layers:
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes layers, got {type(layer).__name__}")
            if isinstance(layer, Sequential):
                # what looks through the layers (the final Softmax, BatchNorm's
                # batches, the input size, saving) would not look inside it
                raise TypeError("Sequential takes layers, not another Sequential: pass its "
                                "layers, Sequential(*inner.layers, ...)")
        self.layers = layers  # a _Layers list (the property)
        self.loss = None  # the loss fit used: what predict and evaluate follow
        self.metadata = {}  # the user's JSON-serialisable notes, saved with the model
        self.interrupted = False  # whether Ctrl-C stopped the last fit
        self._lock, self._fit_lock = threading.RLock(), threading.RLock()  # (__setstate__)
        self._name_parameters()
        self._shapes()  # a mismatch is reported now, where the input shape is known
        self._checked_input = None  # the last per-sample input shape checked

    @property
    def layers(self):
        """The layers in order, a list: changing it (in place or replacing
        it) is seen by the next call."""
        return self._layers

    @layers.setter
    def layers(self, layers):
        # a list of the model's own (made from any other: its later changes
        # would not be seen); kept as it is after `model.layers += [...]`
        _check_each_layer_once(layers, "Sequential")
        self._layers = layers if isinstance(layers, _Layers) else _Layers(layers)
        Parameter.version += 1

    @property
    def loss(self):
        return self._loss

    @loss.setter
    def loss(self, value):
        if value is not None and not isinstance(value, Loss):
            raise TypeError(f"model.loss must be a Loss (e.g. sn.MSE()) or None, "
                            f"got {type(value).__name__}")
        if value is not None:
            self._check_loss(value, "model.loss")
        changed = value is not self.__dict__.get("_loss")
        self._loss = value
        if changed:
            # then: a call that read the version before this and the loss
            # before the line above keeps its classifier under the older one
            Parameter.version += 1

    def __getstate__(self):
        # the lock and the compiled network are rebuilt, not copied; so is
        # what the C trainer learned of its speed here (_fused.Pace)
        state = self.__dict__.copy()
        state.pop("_fused_pace", None)
        state.pop("_lock", None)
        state.pop("_fit_lock", None)
        state.pop("_plan_cache", None)
        state.pop("_net_cache", None)
        state.pop("_classifier_cache", None)
        # the layers as a plain list (read by versions before _Layers), and no
        # compiled classifier: a model given this state by __dict__.update
        # looks again
        state["layers"] = list(state.pop("_layers"))
        state["_fast_classifier"] = Sequential._fast_classifier
        state.pop("_finite_x", None)
        return state

    def __setstate__(self, state):
        state = dict(state)
        # (as __getstate__ gives it; a new _Layers moves Parameter.version, so
        # a model that answered before answers with this state next)
        state["_layers"] = _Layers(state.pop("layers"))
        self.__dict__.update(state)
        # _lock: the layers' buffers (a forward pass, an epoch's training);
        # _fit_lock: one fit at a time, callbacks included
        self._lock, self._fit_lock = threading.RLock(), threading.RLock()

    def _name_parameters(self):
        for name, p in self.named_parameters():
            p.name = name

    def _shapes(self, in_shape=None):
        """The per-sample output shape of each layer for a per-sample input
        shape; with in_shape None, unknown (None) until a Dense layer fixes
        it. Raises ValueError naming the layer and both shapes where one
        does not fit what the layer before gives."""
        shapes, shape = [], in_shape
        for i, layer in enumerate(self.layers):
            if shape is None and isinstance(layer, Dense):
                shape = (layer.in_features,)
            if shape is not None:
                try:
                    shape = layer.output_shape(shape)
                except ValueError as exc:
                    raise ValueError(f"layer {i}: {exc}"
                                     + ("" if i == 0 else " from the layer before")) from None
            shapes.append(shape)
        return shapes

    @property
    def in_features(self):
        for layer in self.layers:
            if isinstance(layer, Dense):
                return layer.in_features
        return None

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def reseed(self, rng):
        for layer in self.layers:
            layer.reseed(rng)

    def random_state(self):
        """{layer index: {"seed", "calls"}} of the random layers (Dropout,
        augmentation): where their streams are (fit's checkpoints keep it)."""
        return {str(i): layer.random_state() for i, layer in enumerate(self.layers)
                if isinstance(layer, RandomStream)}

    def set_random_state(self, state):
        """Put the random layers' streams where random_state() was taken."""
        mine = self.random_state()
        if not isinstance(state, dict) or set(state) != set(mine):
            given = sorted(state) if isinstance(state, dict) else state
            raise ValueError(f"random state for layers {given!r}; the random layers are "
                             f"{sorted(mine)}")
        for key in mine:
            self.layers[int(key)].set_random_state(state[key])

    def forward(self, x, training=False):
        """The outputs for the batch x, a new array each call (as PyTorch's):
        the layers' forward return buffers they reuse, and a list of model(x)
        results held the last batch's outputs in every entry. Under the
        model's lock: the buffers are the model's, so calls from several
        threads got each other's outputs, and one during fit overwrote what
        fit's backward pass reads."""
        with self._lock:
            self._last_forward = "failed"  # until every layer has run
            out = np.array(self._layers_forward(x, training), copy=True)
            self._last_forward = "train" if training else "inference"
            return out

    def _layers_forward(self, x, training):
        """The layers' own forward: their last output (a buffer of the last
        layer's); the layers keep what a backward pass needs of it. The
        caller marks whose it is (_last_forward). Training, each layer must
        be there once (the list may have changed in place since it was set)."""
        if training:
            _check_each_layer_once(self.layers, "forward")
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def _check_backward_follows_forward(self):
        """Refuse a backward pass after predict, evaluate or a plot ran the
        layers; warn, once per model, of one after a forward with
        training=False (model(x)'s default, as Keras's call) through layers
        that train differently. A PyTorch loop ported as it is (its modules start in
        training mode) trained with BatchNorm frozen and no dropout, and
        nothing said so; gradients of an inference forward (saliency) are
        what was asked for there, so a warning, not an error."""
        last = getattr(self, "_last_forward", None)
        if last == "predict":
            # the layers hold the activations of predict/evaluate's batches: the
            # gradients would be theirs, not those of the forward pass before
            raise RuntimeError("backward after predict, evaluate or a plot ran the layers: "
                               "they hold that call's activations, not those of your "
                               "forward pass; call model.forward(x, training=True) again "
                               "before backward (or predict after backward; a forward pass "
                               "made layer by layer by hand is not seen: use model.forward)")
        if last == "failed":
            raise RuntimeError("backward after a forward pass that raised: the layers hold "
                               "part of it; call model.forward(x, training=True) again")
        if last != "inference" or getattr(self, "_warned_inference_backward", False):
            return
        differ = sorted({type(layer).__name__ for layer in self.layers
                         if isinstance(layer, _BatchNorm) or
                         (isinstance(layer, RandomStream) and layer.draws())})
        if differ:
            self._warned_inference_backward = True
            warnings.warn(f"backward after a forward with training=False (the default of "
                          f"model(x), as in Keras): {', '.join(differ)} ran in inference mode "
                          "(running statistics, no random masks or shifts). To train, call "
                          "model.forward(x, training=True) (PyTorch's modules start in "
                          "training mode); for gradients of the inference outputs (saliency) "
                          "this is right and the warning can be ignored", RuntimeWarning,
                          stacklevel=3)

    def backward(self, dy):
        """Sets every parameter's .grad. Returns the input gradient, except
        when the lowest layer with parameters can skip computing its own
        (Dense, Conv2D: backward(dy, input_grad=False)): nothing below it
        needs one, so it is not computed and None is returned."""
        self._check_backward_follows_forward()
        first = next((i for i, layer in enumerate(self.layers) if layer.parameters()), None)
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if i == first and _can_skip_input_grad(type(layer)):
                layer.backward(dy, input_grad=False)
                return None
            dy = layer.backward(dy)
        return dy

    def _first_dense_index(self):
        """The index of a Dense layer preceded only by Flatten layers, or None."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                return i
            if not isinstance(layer, Flatten):
                return None
        return None

    def __repr__(self):
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    # ---- containers and introspection ----

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, key):
        """model[i] is a layer; model[a:b] a new Sequential sharing those layers."""
        if isinstance(key, slice):
            return Sequential(*self.layers[key])
        return self.layers[key]

    def named_parameters(self):
        """[("0.weight", Parameter), ...]: layer index, then the layer's name
        for the parameter; the names save, load and state_dict use."""
        return [(f"{i}.{name}", p) for i, layer in enumerate(self.layers)
                for name, p in layer.named_parameters()]

    def named_buffers(self):
        """[("1.running_mean", array), ...]: the state that is saved but not
        trained (BatchNorm's running statistics)."""
        return [(f"{i}.{name}", a) for i, layer in enumerate(self.layers)
                for name, a in layer.buffers().items()]

    def _state_arrays(self):
        """Every array save, load and state_dict handle, by name: the
        parameters' data, then the buffers."""
        return OrderedDict([*((name, p.data) for name, p in self.named_parameters()),
                            *self.named_buffers()])

    def state_dict(self):
        """An OrderedDict of name -> a copy of each parameter's array and
        each buffer (as PyTorch's, running statistics included)."""
        return OrderedDict((name, a.copy()) for name, a in self._state_arrays().items())

    def load_state_dict(self, state, strict=True):
        """Copy the arrays of state (as state_dict gives) into the parameters
        and buffers, in place: optimizers and compiled networks keep pointing
        at the same arrays. Every key and shape is checked before anything is
        copied. strict=False (as PyTorch's): keys missing from state, or that
        the model does not have, are passed over instead of refused. Returns
        (missing_keys, unexpected_keys), as PyTorch's does."""
        if not isinstance(state, Mapping):
            raise TypeError(f"load_state_dict: expected a dict of name -> array (as "
                            f"state_dict() gives), got {type(state).__name__}")
        strict = boolean(strict, "load_state_dict: strict")
        targets = self._state_arrays()
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if strict and (missing or unexpected):
            problems = [f"{what} keys {keys}" for what, keys in
                        (("missing", missing), ("unexpected", unexpected)) if keys]
            raise ValueError(f"load_state_dict: {'; '.join(problems)} (strict=False "
                             "passes them over)")
        arrays = {name: checked_state(state[name], a.shape, f"load_state_dict: {name}")
                  for name, a in targets.items() if name in state}
        for name, a in arrays.items():
            targets[name][...] = a
        return IncompatibleKeys(missing, unexpected)

    def summary(self, print_fn=print, in_shape=None):
        """A table of the layers (index, type and config, output shape per
        sample, parameter count) and the total; printed with print_fn (None:
        not printed) and returned. Shapes start from in_shape (the per-sample
        input shape, e.g. (1, 28, 28)), else from the first Dense layer's
        in_features; "?" where unknown."""
        rows = [("#", "Layer", "Output shape", "Params")]
        for i, (layer, shape) in enumerate(zip(self.layers, self._shapes(in_shape))):
            rows.append((str(i), _layer_label(layer), _shape_label(shape),
                         f"{_count(layer.parameters()):,}"))
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        rows.insert(1, tuple("-" * w for w in widths))
        align = (str.rjust, str.ljust, str.ljust, str.rjust)
        lines = ["  ".join(a(cell, w) for a, cell, w in zip(align, row, widths)).rstrip()
                 for row in rows]
        total = _count(self.parameters())
        # running statistics, if any, are not Parameters; a frozen one is not trained
        trainable = _count([p for p in self.parameters() if p.requires_grad])
        lines += [f"Total params: {total:,}", f"Trainable params: {trainable:,}"]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    # ---- inference ----

    def _inputs(self, X, name="X", check=True):
        """X as a checked float32 batch (named name in errors). A network that
        starts with Dense (after nothing but Flatten) takes (N, features)
        rows, and images when it starts with Flatten (flattened here, once);
        any other takes (N, ...) samples of the shape its first layer needs,
        checked through every layer's output_shape the first time a shape is
        seen."""
        if self._first_dense_index() is not None:
            if self.layers and isinstance(self.layers[0], Flatten) and np.ndim(X) > 2:
                X = np.asarray(X)
                if X.shape[0] == 0:
                    raise ValueError(f"{name}: empty batch (0 samples, shape {X.shape})")
                # the images' shape, for export_onnx's input
                self._checked_input = (tuple(self.layers), X.shape[1:])
                X = X.reshape(X.shape[0], -1)
            return as_features(X, self.in_features, name, check)
        X = check_finite(as_float32(X, name), name)
        if X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"{name}: expected a non-empty batch (N, ...) of samples, got shape "
                             f"{X.shape}")
        if (tuple(self.layers), X.shape[1:]) != self._checked_input:
            if X.ndim == 2 and self.layers[0].takes_images:
                raise ValueError(f"{name}: {type(self.layers[0]).__name__} takes images "
                                 f"(N, C, H, W), got rows of shape {X.shape}: pass images, e.g. "
                                 "X.reshape(-1, 1, 28, 28), or load the data with flatten=False")
            try:
                self._shapes(X.shape[1:])
            except ValueError as exc:
                raise ValueError(f"{name} of shape {X.shape}: {exc}") from None
            self._checked_input = (tuple(self.layers), X.shape[1:])
        return X

    def _compiled_key(self):
        """What a compiled network depends on: [the layer list, Parameter.version
        (any array replaced or setting changed anywhere), the stamps of this
        model's layers and parameters (mark_changed), whether the fast path
        is on]. In-place changes to the arrays need nothing: it reads them."""
        return [list(self.layers), Parameter.version, self._change_stamps(), _fused.ENABLED]

    def _change_stamps(self):
        return tuple(getattr(x, "_changed_at", 0) for layer in self.layers
                     for x in (layer, *layer.parameters()))

    def _compiled_key_holds(self, key):
        """Whether a key _compiled_key returned still holds, compared piece by
        piece (a list against the list, identities first): no new key is built
        on the path of one-image latency. When something changed elsewhere
        (Parameter.version moved, this model's stamps did not), the key is
        brought up to date in place and holds."""
        if not (key[0] == self.layers and key[3] == _fused.ENABLED):
            return False
        if key[1] == Parameter.version:
            return True
        version = Parameter.version  # before the stamps: a change meanwhile is seen next time
        if key[2] != self._change_stamps():
            return False
        key[1] = version
        return True

    def _compiled_paths_apply(self):
        """Whether the compiled networks compute what this model does: not for
        a subclass with a forward or backward of its own, which they would
        never call (its predictions and training were the layers' own)."""
        kind = type(self)
        return kind.forward is Sequential.forward and kind.backward is Sequential.backward

    def _plan(self):
        """The fast path's compiled network (scratchnet._core.MLP), or None
        where it does not apply; rebuilt when _compiled_key changes."""
        cached = getattr(self, "_plan_cache", None)
        if cached is None or not self._compiled_key_holds(cached[0]):
            # the key first: a change another thread makes while this builds
            # leaves the network under the older key, to be rebuilt next call
            key = self._compiled_key()
            specs = _fused.layer_specs(self.layers) if self._compiled_paths_apply() else None
            plan = _fused.build(specs, _PREDICT_BATCH, train=False) if specs else None
            self._plan_cache = cached = (key, plan)
        return cached[1]

    def _net(self, in_shape):
        """The whole-network inference path (scratchnet._core.Net) for samples
        of this shape, or None where it does not apply; rebuilt as _plan is,
        and for a new input shape. in_shape must have been checked."""
        cached = getattr(self, "_net_cache", None)
        if cached is None or cached[0][4] != in_shape or not self._compiled_key_holds(cached[0]):
            key = self._compiled_key() + [in_shape]
            net = (_inference.build(self.layers, in_shape, _PREDICT_BATCH)
                   if self._compiled_paths_apply() else None)
            self._net_cache = cached = (key, net)
        return cached[1]

    def _outputs(self, X, softmax=False, batch_size=_PREDICT_BATCH, finite_for=None):
        """Outputs (or their softmax) for all of X in one new array; with
        finite_for (a method name), outputs that are not finite are refused."""
        if not self.layers:
            raise ValueError("this Sequential has no layers")
        plan = self._plan()
        if plan is not None:
            out = plan.try_predict(X, softmax, finite_for)
            # else X is converted, or the error that names the problem raised
            return out if out is not None else plan.predict(self._inputs(X), softmax, finite_for)
        # an array the C network takes as it is, of the shape it was built
        # for, goes straight to it (the path of one-image latency); anything
        # else is converted and checked first
        cached = getattr(self, "_net_cache", None)
        if (cached is not None and cached[1] is not None and type(X) is np.ndarray
                and X.dtype == np.float32 and X.flags.c_contiguous and X.flags.aligned
                and X.ndim >= 2 and cached[0][4] == X.shape[1:]
                and self._compiled_key_holds(cached[0])):
            return cached[1].predict(X, softmax, finite_for)
        X = self._inputs(X)
        net = self._net(X.shape[1:])
        if net is not None:
            return net.predict(X, softmax, finite_for)
        custom = type(self).forward is not Sequential.forward
        with self._lock:  # the layers' buffers are shared by every call
            self._last_forward = "predict"  # what the layers will hold
            out = None
            for start in range(0, X.shape[0], batch_size):
                # a subclass's own forward (the compiled paths do not see it)
                y = (self.forward(X[start:start + batch_size], training=False) if custom else
                     self._layers_forward(X[start:start + batch_size], training=False))
                if out is None:
                    out = np.empty((X.shape[0],) + y.shape[1:], dtype=np.float32)
                out[start:start + y.shape[0]] = y
            self._last_forward = "predict"  # (a subclass's forward marked its own)
        if finite_for is not None and not _core.all_finite(out):
            raise ValueError(f"{finite_for}: {_core.NONFINITE_OUTPUTS}")
        return _core.softmax_forward(out, out) if softmax else out

    def _fused_classifier(self):
        """The fast path's compiled network for a classifier (CrossEntropy),
        or None (another loss, or no fast path). Cached under _plan's key and
        the loss: with one image at a time, the calls that work this out each
        time (_output_kind, _outputs, _plan) were 2-3 us of a 13-15 us call;
        building a key to compare was ~0.3 us of a 6-8 us one. A classifier
        found is noted in _fast_classifier under the version read first,
        which predict and predict_proba check without this call (the key's
        comparisons and the call were ~0.13 us of a ~2.2 us one)."""
        version, enabled = Parameter.version, _fused.ENABLED  # before the checks, as there
        cached = self.__dict__.get("_classifier_cache")
        if (cached is None or cached[1] is not self._loss
                or not self._compiled_key_holds(cached[0])):
            key, loss = self._compiled_key(), self._loss  # before _plan: as there
            plan = self._plan() if self._loss_kind() is CrossEntropy else None
            self._classifier_cache = cached = (key, loss, plan)
        if cached[2] is not None and enabled:
            self._fast_classifier = (version, cached[2])
        return cached[2]

    def _loss_kind(self, in_shape=None):
        """What the outputs mean: CrossEntropy, BinaryCrossEntropy or the
        recorded loss's type; a model never fitted is taken as a classifier
        (CrossEntropy) when it has two or more outputs, and as unknown (None)
        with one (counted for inputs of in_shape per sample, where no Dense
        layer tells)."""
        loss = self._loss
        if loss is None:
            return None if _n_outputs(self, in_shape) == 1 else CrossEntropy
        for kind in (CrossEntropy, BinaryCrossEntropy):
            if isinstance(loss, kind):
                return kind
        return type(loss)

    def _output_kind(self, method, in_shape=None):
        """_loss_kind, which must be known to give meaning to method's result."""
        kind = self._loss_kind(in_shape)
        if kind is None:
            raise ValueError(f"{method}: this model has one output and no recorded loss, so "
                             "what its output means is unknown; fit it, or set model.loss "
                             "(sn.BinaryCrossEntropy() for 0/1 labels, sn.MSE() for values)")
        return kind

    def predict_logits(self, X):
        """The network's raw outputs for X, shape (N, outputs)."""
        return self._outputs(X)

    def _finite_outputs(self, X, method, softmax=False):
        """The outputs for X, refused when not finite: labels or probabilities
        made from NaN would look like answers."""
        return self._outputs(X, softmax=softmax, finite_for=method)

    def predict_proba(self, X):
        """Probabilities: softmax over the classes (N, classes) for a
        CrossEntropy model (the outputs themselves when the last layer is
        Softmax); sigmoid of each output for BinaryCrossEntropy, (N,) for a
        single output. A regression (MSE) model has none: raises."""
        fast = self._fast_classifier
        fused = fast[1] if fast[0] == Parameter.version and _fused.ENABLED else \
            self._fused_classifier()
        if fused is not None:
            # the fast path's networks end in a Dense layer: take the softmax
            # (None: X is to be converted first, below)
            proba = fused.try_predict(X, True, "predict_proba")
            if proba is not None:
                return proba
        kind = self._output_kind("predict_proba", _sample_shape(X))
        if kind is CrossEntropy:
            ends_in_softmax = isinstance(self._output_layer(), Softmax)
            return self._finite_outputs(X, "predict_proba", softmax=not ends_in_softmax)
        if kind is BinaryCrossEntropy:
            z = self._finite_outputs(X, "predict_proba")
            _core.sigmoid_forward(z, z)  # in place: z is a new array
            return _single_column(z)
        what = ("a regression loss" if kind is MSE else "not CrossEntropy or "
                "BinaryCrossEntropy (nor a subclass), so taken as a regression loss")
        raise ValueError(f"predict_proba: this model was fitted with {kind.__name__}, {what}: "
                         "its outputs are values, not probabilities; use predict()")

    def predict(self, X):
        """CrossEntropy: int64 class labels (N,), the argmax of the outputs.
        BinaryCrossEntropy: int64 0/1 labels, 1 where sigmoid(z) >= 0.5
        (z >= 0); (N,) for a single output, (N, outputs) otherwise.
        MSE: the outputs themselves, float32; (N,) for a single output."""
        fast = self._fast_classifier  # as predict_proba
        fused = fast[1] if fast[0] == Parameter.version and _fused.ENABLED else \
            self._fused_classifier()
        outputs = fused.try_predict(X, False, "predict") if fused is not None else None
        if outputs is not None:
            return outputs.argmax(axis=1).astype(np.int64)
        kind = self._output_kind("predict", _sample_shape(X))
        out = self._finite_outputs(X, "predict")
        if kind is CrossEntropy:
            return out.argmax(axis=1).astype(np.int64)
        if kind is BinaryCrossEntropy:
            return _single_column((out >= 0.0).astype(np.int64))
        return _single_column(out)

    def evaluate(self, X, y, loss=None, batch_size=_PREDICT_BATCH):
        """{"loss": mean loss, "accuracy": fraction right} over all of X, with
        the loss fit used (model.loss) unless another is given; "accuracy"
        only where it has a meaning (not for MSE)."""
        loss = loss if loss is not None else (
            self.loss or self._output_kind("evaluate", _sample_shape(X))())
        if not isinstance(loss, Loss):
            raise TypeError(f"evaluate: loss must be a Loss, got {type(loss).__name__}")
        self._check_loss(loss, "evaluate", _sample_shape(X))
        batch_size = positive_int(batch_size, "batch_size")
        X = self._inputs(X)
        y = _targets(y, X.shape[0], loss, self, "evaluate", X.shape[1:])
        # outputs not finite are refused with the causes (weights, inputs too large)
        outputs = self._outputs(X, batch_size=batch_size, finite_for="evaluate")
        loss = loss.fresh()  # a copy of its own: evaluate may run in several threads
        result = {"loss": loss.forward(outputs, y)}
        counted = loss.correct(outputs, y)
        if counted is not None:
            result["accuracy"] = counted[0] / counted[1]
        return result

    # ---- training ----

    def fit(self, X, y, optimizer, loss=None, epochs=1, batch_size=32, validation=None,
            seed=None, verbose=1, scheduler=None, shuffle=True, callback=None,
            validation_split=None, callbacks=None, checkpoint=None, resume=None,
            on_nonfinite="raise", distributed=False):
        """Train with minibatches; returns history, a dict of per-epoch lists
        ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "time").

        validation=(Xv, yv) is evaluated after each epoch; validation_split=f
        instead holds out the last fraction f of X, y (taken before shuffling).
        seed fixes the shuffling and dropout (with the same initial weights,
        the same seed gives the same result). verbose=1 shows a progress bar
        per epoch on a terminal and one line per epoch elsewhere, 2 one line
        per epoch always, 0 nothing. callbacks: scratchnet.Callback objects
        (see scratchnet.callbacks); callback(epoch, logs), a plain function,
        runs after each epoch. Either may set model.stop_training = True to
        stop after the current epoch.

        checkpoint=PATH writes a checkpoint after every epoch, atomically (a
        temporary file, synced, renamed: PATH is always a complete file): the
        weights and BatchNorm statistics, the optimizer's state (moments, step
        counts, learning rate), the scheduler's position, the random streams
        (shuffling, dropout, augmentation), the history and the epoch.
        resume=PATH continues from one (it may be the same PATH): epochs
        counts the whole run, so a checkpoint of epoch 2 resumed with epochs=4
        trains epochs 3 and 4, bit for bit as one uninterrupted fit with the
        same seed would (the history's "time" aside). Resuming needs what the
        checkpoint was written with: the architecture (but for the weights'
        init), the optimizer type and hyper-parameters (each group's lr as
        the run began), the scheduler type and settings, the data, loss,
        batch_size and shuffle, and validation on or off; a checkpoint that
        differs is refused, naming the difference (Checkpoint.check_fits).

        Ctrl-C (SIGINT) stops fit at the next step, with no step or file left
        half-done: the epoch under way is left out of the history (the model
        keeps its steps so far, as Keras's does), the checkpoint keeps the
        last complete epoch, one line on stderr says what was saved and how
        to resume, and fit returns the history so far with model.interrupted
        set. A second Ctrl-C raises KeyboardInterrupt at once.

        X is read whole for NaN and inf before training, but for the very
        array (same object, memory and shape) a complete epoch of an earlier
        fit trained on through the compiled trainer: a value changed in place
        since makes its batch's outputs or first-layer gradient NaN or inf,
        that batch takes no step, and fit raises ValueError naming X (the
        steps before it kept; the next fit reads X whole again).

        on_nonfinite: a step whose loss or gradient is NaN or inf is never
        applied (the weights stay those of the last finite step); then
        "raise" (the default) raises TrainingDivergedError naming the epoch
        and step, "warn" warns and returns the history of the complete
        epochs, "skip_batch" skips that step, trains on, and warns once per
        epoch that skipped any (its loss and accuracy cover the steps taken).

        distributed=True: data-parallel training over MPI, one process per
        rank under mpiexec (pip install "scratchnet[mpi]"; see
        scratchnet.distributed and scratchnet._sharding). Every rank passes
        the same data, options and seed; rank 0's initial weights are sent to
        all; each rank trains on its share of every batch of batch_size rows
        and the gradients are summed over the ranks before each step, so all
        hold the same weights, those of one process with the same batches
        (up to float32 rounding; BatchNorm excepted: its batch statistics
        are each rank's). Loss, accuracy and validation cover every rank's
        rows; only rank 0 prints, warns and writes checkpoints.

        The loss is recorded in model.loss (predict and evaluate follow it);
        the optimizer must hold every parameter of this model."""
        with self._fit_lock:
            try:
                return self._fit(X, y, optimizer, loss, epochs, batch_size, validation, seed,
                                 verbose, scheduler, shuffle, callback, validation_split,
                                 callbacks, checkpoint, resume, on_nonfinite, distributed)
            finally:
                self._set_first_row(0)

    def _fit(self, X, y, optimizer, loss, epochs, batch_size, validation, seed, verbose,
             scheduler, shuffle, callback, validation_split, callbacks, checkpoint, resume,
             on_nonfinite, distributed):
        if not isinstance(distributed, bool):
            raise TypeError(f"fit: distributed must be True or False, got {distributed!r}")
        shard = _sharding.Shard(self) if distributed else None  # ImportError: the extra
        if isinstance(optimizer, distributed_api.DistributedOptimizer):
            raise TypeError("fit: DistributedOptimizer is for training loops of your own; pass "
                            "the optimizer it wraps, with distributed=True")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"fit: optimizer must be an Optimizer, got {type(optimizer).__name__}")
        _check_each_layer_once(self.layers, "fit")
        self._check_optimizer(optimizer)
        optimizer.check_param_groups("fit")
        loss = loss if loss is not None else (self.loss or CrossEntropy())
        if not isinstance(loss, Loss):
            raise TypeError(f"fit: loss must be a Loss, got {type(loss).__name__}")
        self._check_loss(loss, "fit", _sample_shape(X))
        steps_itself = callable(getattr(scheduler, "step", None))
        if isinstance(scheduler, Optimizer) or (scheduler is not None and not steps_itself):
            raise TypeError(f"fit: scheduler must be a learning-rate scheduler with a step() "
                            f"method (e.g. sn.StepLR(optimizer, 1)), got "
                            f"{type(scheduler).__name__}")
        if scheduler is not None and getattr(scheduler, "optimizer", optimizer) is not optimizer:
            raise ValueError("fit: the scheduler was built for another optimizer; build it "
                             "with the one passed to fit, e.g. CosineAnnealingLR(optimizer, ...)")
        epochs = positive_int(epochs, "epochs")
        batch_size = positive_int(batch_size, "batch_size")
        on_nonfinite = choice(on_nonfinite, NONFINITE_MODES, "on_nonfinite")
        shuffle = boolean(shuffle, "fit: shuffle")
        if not isinstance(verbose, (int, np.integer)) or verbose not in (0, 1, 2):
            # "0", 5, 1.5 printed progress (bools are ints: False, True are levels)
            raise ValueError(f"fit: verbose must be 0, 1 or 2 (or False, True), got {verbose!r}")
        verbose = int(verbose)
        if checkpoint is not None:
            checkpoint = os.fspath(checkpoint)
            # refused now, not after an epoch's training
            checked_target(checkpoint, "fit: checkpoint", "run.ckpt", probe=True)
            self._architecture("fit")  # the metadata can be written, known before training
        # X's NaN and inf: read all of it now (4 ms for MNIST, 5% of an epoch
        # of 784-128-10), unless a complete epoch of the C trainer went over
        # this very array in a fit before (_knows_finite: a value changed
        # since fails its batch's step, and _fast_epoch raises)
        # (not with validation_split: the part held out would be checked as
        # "validation X", and the training part not at all before its steps)
        given = X
        trusted = shard is None and validation_split is None and self._knows_finite(X)
        X = self._inputs(X, check=not trusted)
        y = _targets(y, X.shape[0], loss, self, "fit", X.shape[1:])
        if validation_split is not None:
            X, y, validation = _split_validation(X, y, validation_split, validation)
        if validation is not None:
            pair = isinstance(validation, (tuple, list))
            if not pair or len(validation) != 2:
                raise TypeError(f"fit: validation must be a pair (X_val, y_val), got "
                                f"{type(validation).__name__}"
                                + (f" of {len(validation)}" if pair else ""))
            Xv, yv = validation
            Xv = self._inputs(Xv, "validation X")
            yv = _targets(yv, Xv.shape[0], loss, self, "fit validation", Xv.shape[1:],
                          "validation y")
        callbacks = CallbackList(callbacks, self, function=callback)
        if shard is not None:
            seed = shard.shared_seed(seed)
            shard.check("fit(distributed=True)", samples=X.shape, batch_size=batch_size,
                        epochs=epochs, shuffle=bool(shuffle), seed=seed,
                        validation=None if validation is None else Xv.shape)
            if batch_size < shard.size:
                raise ValueError(f"fit(distributed=True): batch_size {batch_size} is smaller "
                                 f"than the {shard.size} ranks; each rank needs a share of "
                                 f"every batch: use batch_size >= {shard.size}")
            verbose = verbose if shard.main else 0
        # seed None: a child of the default stream, so sn.manual_seed(n) makes
        # the shuffle and dropout reproducible too (as torch.manual_seed does)
        rng = _random.generator(seed)

        history = {"loss": [], "accuracy": [], "lr": [], "time": []}
        if validation is not None:
            history.update(val_loss=[], val_accuracy=[])
        n = X.shape[0]
        batch_size = min(batch_size, n)  # the compiled trainer holds at most n rows a batch
        steps = -(-n // batch_size)
        last = n - (steps - 1) * batch_size
        if shard is None:
            self._check_batch_statistics(X.shape[1:], last, "every batch" if batch_size == 1
                                         else "the last batch", n)
        else:
            # a rank's share of a batch of r rows is r // size or one more; with
            # fewer rows than ranks, 1 or none (and none makes no forward pass)
            fewest = min(max(r // shard.size, 1) for r in (batch_size, last))
            self._check_batch_statistics(X.shape[1:], fewest,
                                         f"a rank's share of a batch (over {shard.size} ranks)")
        settings = {"samples": n, "batch_size": batch_size, "shuffle": bool(shuffle)}
        if checkpoint is not None or resume is not None:
            settings.update(loss=type(loss).__name__, data=data_fingerprint(X, y),
                            lr=[float(g["lr"]) for g in optimizer.param_groups])
        done, saved = 0, None  # epochs complete; (the file, the epoch) last checkpointed
        if resume is not None:
            history, done = self._resume(os.fspath(resume), optimizer, scheduler, rng,
                                         settings, history, callbacks, epochs)
            saved = (os.fspath(resume), done)
        else:
            self.reseed(rng)
        if shard is not None:
            distributed_api.broadcast_parameters(self)  # rank 0's weights (checks the shapes)
        self.loss = loss
        fast_key = self._compiled_key()  # before the build, as _plan takes it
        fast = _fused.trainer(self, optimizer, loss, y, batch_size)
        if trusted and fast is None:  # the layer-by-layer epochs do not check
            X, trusted = self._inputs(X), False
        xb_buf = np.empty((batch_size,) + X.shape[1:], dtype=np.float32)
        self.stop_training = self.interrupted = False
        callbacks.on_train_begin(history, done)
        logs = {k: v[-1] for k, v in history.items()} if done else {}
        skip = on_nonfinite == "skip_batch"
        speaks = shard is None or shard.main  # warnings: once, from rank 0
        with Interrupts() as interrupts:
            if shard is not None:
                interrupts = SharedInterrupts(interrupts, shard)
            first_epoch = done + 1
            tally, tally_epoch = None, None  # the sums of the last epoch begun
            for epoch in range(first_epoch, epochs + 1):
                if interrupts.requested or self.stop_training:
                    break
                if epoch > first_epoch:
                    # a callback may have edited the hyper-parameters since:
                    # checked again, as fit checked them before the first epoch
                    optimizer.check_param_groups(f"fit, before epoch {epoch}")
                if not self._compiled_key_holds(fast_key):
                    # a callback replaced a parameter array, a layer or a setting
                    # the C trainer copied (a dropout p, a slope): it held the
                    # old ones and trained them, unseen
                    fast_key = self._compiled_key()
                    fast = _fused.trainer(self, optimizer, loss, y, batch_size)
                    if trusted and fast is None:
                        X, trusted = self._inputs(X), False
                start_time = time.perf_counter()
                lr = optimizer.current_lr()
                order = rng.permutation(n) if shuffle else np.arange(n)
                bar = start_epoch(n, epoch, epochs, verbose)
                tally, tally_epoch = EpochTally(), epoch
                # the layers' buffers are fit's for the epoch's steps only: a
                # callback may have another thread call model(x) and wait for it
                with self._lock:
                    if fast is not None:
                        self._fast_epoch(fast, X, y, order, batch_size, bar, tally, skip,
                                         interrupts, shard)
                    else:
                        self._layer_epoch(X, y, order, batch_size, loss, optimizer, xb_buf, bar,
                                          tally, skip, interrupts, shard)
                if shard is not None:
                    shard.reduce_tally(tally)
                    shard.average_buffers()
                if fast is not None and X is given and shard is None and not (
                        tally.interrupted or tally.failed is not None or tally.skipped):
                    self._finite_x = (weakref.ref(X), X.ctypes.data, X.shape)
                if tally.interrupted or tally.failed is not None:
                    bar.close()
                    if tally.interrupted:
                        break
                    unfinite = next((name for name, p in self.named_parameters()
                                     if not _core.all_finite(p.data)), None)
                    message = divergence_message(epoch, tally.failed, steps, tally.problem,
                                                 optimizer.current_lr(), X, saved, unfinite)
                    if on_nonfinite == "raise":
                        raise TrainingDivergedError(message, epoch, tally.failed)
                    if speaks:
                        warnings.warn(message, RuntimeWarning, stacklevel=3)
                    break
                if tally.skipped and speaks:
                    warnings.warn(skipped_message(epoch, steps, tally.skipped), RuntimeWarning,
                                  stacklevel=3)
                history["loss"].append(tally.total / tally.samples if tally.samples else None)
                history["accuracy"].append(tally.right / tally.decisions if tally.decisions
                                           else None)
                history["lr"].append(lr)
                if validation is not None:
                    val = self.evaluate(Xv, yv, loss=loss) if shard is None else \
                        shard.evaluate(Xv, yv, loss)
                    history["val_loss"].append(val["loss"])
                    history["val_accuracy"].append(val.get("accuracy"))
                if scheduler is not None:
                    scheduler.step()
                history["time"].append(time.perf_counter() - start_time)
                bar.end(history)
                logs = {k: v[-1] for k, v in history.items()}
                callbacks.on_epoch_end(epoch, logs)
                done = epoch
                if checkpoint is not None:
                    if shard is None or shard.main:
                        self._write_checkpoint(checkpoint, optimizer, scheduler, rng, history,
                                               epoch, settings)
                    if shard is not None:
                        shard.comm.Barrier()  # written before any rank may resume from it
                    saved = (checkpoint, epoch)
                if self.stop_training:
                    break
        if interrupts.requested:  # also after the last step: a Ctrl-C is never dropped
            self.interrupted = True
            # a Ctrl-C in a callback at an epoch's end stops fit before the next takes a step
            took_steps = tally is not None and tally_epoch == done + 1 and tally.samples > 0
            print(interrupted_message(done + 1, epochs, saved, took_steps), file=sys.stderr,
                  flush=True)
        callbacks.on_train_end(logs)
        return history

    def _check_optimizer(self, optimizer):
        """The optimizer must update every parameter of this model and nothing
        else: one built for another model, or for this one before its
        parameters were replaced (sn.load builds new ones), would train
        nothing; one that also holds other parameters would move them at
        every step (weight decay, momentum, gradients left from elsewhere)."""
        held = [p for group in optimizer.param_groups for p in group["params"]]
        params = self.parameters()
        mine, theirs = {id(p) for p in params}, {id(p) for p in held}
        # a frozen one (requires_grad False) may be left out, as in PyTorch
        missing = [p.name for p in params if id(p) not in theirs and p.requires_grad]
        build = (f"build it with this model's parameters, "
                 f"{type(optimizer).__name__}(model.parameters(), ...)")
        if missing:
            raise ValueError(
                f"fit: the optimizer does not hold {len(missing)} of this model's "
                f"{len(params)} parameters ({_some(missing)}); it was built for another "
                "model, or for this one before its parameters were replaced (e.g. by "
                f"sn.load): {build} (to freeze a parameter, set its requires_grad = False)")
        others = [p.name or "unnamed" for p in held if id(p) not in mine]
        if others:
            raise ValueError(
                f"fit: the optimizer also holds {len(others)} parameter(s) that are not this "
                f"model's ({_some(others)}); fit would move them at every step without a "
                f"gradient from this model: {build}")

    def _output_layer(self):
        """The last layer that makes the outputs' values, or None: Dropout and
        the augmentations (the identity at inference), Flatten and Reshape
        after it pass them on unchanged, so a Softmax before them is still
        the model's final Softmax."""
        for layer in reversed(self.layers):
            if not isinstance(layer, (RandomStream, Flatten, Reshape)):
                return layer
        return None

    def _check_batch_statistics(self, in_shape, rows, what, samples=None):
        """Refuse, before any step, batches of `rows` rows (the fewest a
        forward pass will see: `what`) from which a BatchNorm layer would
        have one value per channel (its variance has no meaning: the layer
        raises, mid-epoch, the weights already moved), and inputs a layer
        refuses to train on (check_training: RandomShift's)."""
        shape = tuple(in_shape)
        for i, (layer, out) in enumerate(zip(self.layers, self._shapes(shape))):
            if hasattr(layer, "check_training"):
                try:
                    layer.check_training(shape)
                except ValueError as exc:
                    raise ValueError(f"fit: layer {i}: {exc}") from None
            if isinstance(layer, _BatchNorm) and rows * math.prod(shape[1:]) < 2:
                fix = ("more samples: the data holds 1" if samples == 1 else
                       "a batch_size of 2 or more" if what == "every batch" else
                       "a batch_size that leaves a last batch of 2 rows or more (or drop a row)")
                raise ValueError(
                    f"fit: {what} would hold {rows} row(s), and layer {i} "
                    f"({layer!r}) needs more than one value per channel to train on: choose "
                    f"{fix}")
            shape = out

    def _check_loss(self, loss, where, in_shape=None):
        """Refuse a loss that cannot mean what the model's outputs give (for
        inputs of in_shape per sample, where no Dense layer tells how many)."""
        outputs = _n_outputs(self, in_shape)
        last = self._output_layer()
        if isinstance(loss, CrossEntropy):
            if isinstance(last, Softmax):
                raise ValueError(f"{where}: CrossEntropy takes logits and applies softmax "
                                 "itself; remove the final Softmax layer (predict_proba gives "
                                 "probabilities)")
            if outputs == 1:
                raise ValueError(f"{where}: CrossEntropy needs one output per class (2 or "
                                 "more), but the model has 1 output; for two classes with one "
                                 "output use sn.BinaryCrossEntropy() and 0/1 targets")
        if isinstance(loss, BinaryCrossEntropy) and isinstance(last, Sigmoid):
            raise ValueError(f"{where}: BinaryCrossEntropy takes logits and applies the sigmoid "
                             "itself; remove the final Sigmoid layer (predict_proba gives "
                             "probabilities)")

    def _set_first_row(self, first):
        """Where the next batch starts in its global batch, for the random
        layers' draws (0 but in data-parallel training)."""
        for layer in self.layers:
            if isinstance(layer, RandomStream):
                layer.first_row = first

    def _knows_finite(self, X):
        """Whether X is the very array (same object, memory and shape) a
        complete epoch of the C trainer went over, every batch of it taking
        its step: all of X was finite then, as a NaN or inf among a batch's
        inputs makes the first layer's weight gradient NaN or inf (x * 0 is
        NaN for such x) and the batch fails. Changed in place since, the
        batch that holds the value fails, takes no step, and _fast_epoch
        raises."""
        known = self.__dict__.get("_finite_x")
        return (known is not None and known[0]() is X and type(X) is np.ndarray
                and X.ctypes.data == known[1] and X.shape == known[2])

    def _fast_epoch(self, fast, X, y, order, batch_size, bar, tally, skip, interrupts,
                    shard=None):
        """One epoch through the C trainer, in runs of batches so the
        progress bar moves and Ctrl-C is seen: about a twentieth of the epoch
        until the pace of the batches is known (from the last run, in this
        fit or the model's fit before with the same layers and batch size), then
        _FAST_RUN_SECONDS' worth (with a shard, always the twentieth: the
        ranks check for interrupts together between runs); sums into tally
        (this rank's rows, with a shard). The runs change no result."""
        n_batches = -(-X.shape[0] // batch_size)
        least = max(1, -(-n_batches // 20))
        start = 0
        while start < X.shape[0]:
            if interrupts.requested:
                tally.interrupted = True
                return
            batches = least
            if shard is None and fast.pace.batch_seconds is not None:
                batches = max(least, int(_FAST_RUN_SECONDS / fast.pace.batch_seconds))
            idx = order[start:start + batches * batch_size]
            began = time.perf_counter()
            # the loss summed onto the epoch's so far: the same bits however
            # the epoch is cut into runs
            total, run_right, failed, samples, bad_input = fast.run(
                X, y, idx, batch_size, skip, shard, loss_before=tally.total)
            fast.pace.batch_seconds = max(time.perf_counter() - began, 1e-9) / -(-len(idx) //
                                                                                batch_size)
            tally.add_onto(total, run_right, samples, samples)
            if bad_input is not None:  # not a divergence: the data
                bar.close()
                self.__dict__.pop("_finite_x", None)  # the next fit reads X first
                bad = int(X.size - np.isfinite(X).sum())
                raise ValueError(
                    f"X: contains {bad} non-finite value(s) (NaN or inf), found in the "
                    f"rows of step {start // batch_size + bad_input + 1} of the epoch, which "
                    f"took no step (X changed since fit last read all of it); the model keeps "
                    f"the steps before it")
            for b in failed:
                problem = None if skip else nonfinite_problem(
                    (name, p.grad) for name, p in self.named_parameters())
                if not tally.nonfinite(start // batch_size + b + 1, problem, skip):
                    return
            bar.advance(len(idx), tally.samples, tally.total, tally.right, tally.decisions)
            start += len(idx)

    def _layer_epoch(self, X, y, order, batch_size, loss, optimizer, xb_buf, bar, tally, skip,
                     interrupts, shard=None):
        """One epoch layer by layer, for what the C trainer does not cover;
        sums into tally (this rank's rows, with a shard: it trains its share
        of each batch and the gradients are summed over the ranks before the
        step). A step whose outputs, loss or gradients are not finite is not
        applied, and the buffers (BatchNorm's statistics) its forward pass
        moved are put back; so is one whose forward pass made those buffers
        not finite (a running variance past float32's range: the loss and
        gradients of batch statistics can stay finite)."""
        params = self.named_parameters()
        named_buffers = self.named_buffers()
        buffers = [a for _, a in named_buffers]
        before = [a.copy() for a in buffers]

        def bad_buffer():
            return next((name for name, a in named_buffers if not _core.all_finite(a)), None)

        for step, start in enumerate(range(0, X.shape[0], batch_size), 1):
            if interrupts.requested:
                tally.interrupted = True
                return
            idx = order[start:start + batch_size]
            rows = len(idx)  # of the global batch: the loss is its mean
            for kept, a in zip(before, buffers):
                kept[...] = a
            if shard is None:
                counted = self._batch_gradients(X, y, idx, loss, xb_buf, rows)
                finite = counted is not None and all(_core.all_finite(p.grad) for _, p in params)
                unfinite_buffer = bad_buffer() if finite else None
                finite = finite and unfinite_buffer is None
            else:
                idx, first = shard.rows_of(idx)
                self._set_first_row(first)
                if len(idx):
                    counted = self._batch_gradients(X, y, idx, loss, xb_buf, rows)
                else:
                    shard.no_rows()
                    counted = (0.0, 0, 0)
                unfinite_buffer = bad_buffer() if counted is not None else None
                finite = shard.reduce_finite(ok=counted is not None and unfinite_buffer is None)
            if finite:
                batch_loss, right, decisions = counted
                tally.add(batch_loss * len(idx), right, decisions, len(idx))
                optimizer.step()
                bar.advance(rows, tally.samples, tally.total, tally.right, tally.decisions)
                continue
            for kept, a in zip(before, buffers):
                a[...] = kept
            problem = ("the loss is not finite (NaN or inf)" if counted is None else
                       f"the running statistics {unfinite_buffer} are not finite (NaN or inf)"
                       if unfinite_buffer is not None else
                       nonfinite_problem((name, p.grad) for name, p in params))
            if not tally.nonfinite(step, problem, skip):
                return

    def _batch_gradients(self, X, y, idx, loss, xb_buf, rows):
        """Forward and backward on rows idx of X, the loss a mean over rows
        (len(idx) but for a share of a global batch); sets every .grad and
        returns (the batch's mean loss, right, decisions), or None where the
        outputs or the loss are not finite (no gradient computed)."""
        xb = np.take(X, idx, axis=0, out=xb_buf[:len(idx)])
        yb = y[idx]
        logits = self.forward(xb, training=True)
        batch_loss = _finite_loss(loss, logits, yb)
        if batch_loss is None:
            return None
        for layer in self.layers:
            if LAYERS.get(type(layer).__name__) is not type(layer):
                # a user's layer may add to .grad, PyTorch's way: from zero each
                # step (scratchnet's own layers overwrite it)
                layer.zero_grad()
        self.backward(loss.backward() if rows == len(idx) else loss.backward(rows=rows))
        counted = loss.correct(logits, yb)
        return (batch_loss, *(counted if counted is not None else (0, 0)))

    def _write_checkpoint(self, path, optimizer, scheduler, rng, history, epoch, settings):
        arrays = dict(self._state_arrays())
        record = training_record(self, optimizer, scheduler, rng, history, epoch, settings,
                                 arrays)
        write_npz(path, arrays, {"__architecture__": self._architecture("checkpoint"),
                                 "__training__": record}, "checkpoint")

    def _resume(self, path, optimizer, scheduler, rng, settings, history, callbacks, epochs):
        """Put the model, optimizer, scheduler, random streams and rng where
        the checkpoint at path has them; returns (its history, its epoch).
        Anything refused (by the checks here or a callback's check_resume)
        leaves all as it was."""
        arch, record, arrays = _read_file(path, "checkpoint")
        if record is None:
            raise ModelFileError(f"{path}: a model file, not a checkpoint (fit writes those "
                                 "with checkpoint=PATH)")
        saved = Checkpoint(record, arrays, path)
        saved.check_fits(arch, self._architecture("fit"), optimizer, scheduler, settings,
                         history, epochs)
        callbacks.check_resume(saved.history, saved.epoch)
        backup = (self.state_dict(), optimizer.state_dict(),
                  None if scheduler is None else scheduler.state_dict(), self.random_state())
        def restore():  # put back what backup holds: all of it or none was loaded
            self.load_state_dict(backup[0])
            optimizer.load_state_dict(backup[1])
            if scheduler is not None:
                scheduler.load_state_dict(backup[2])
            self.set_random_state(backup[3])

        try:
            self.load_state_dict(arrays)
            optimizer.load_state_dict(saved.optimizer)
            if scheduler is not None:
                scheduler.load_state_dict(saved.scheduler)
            self.set_random_state(saved.random_layers)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            restore()
            raise ModelFileError(f"{path}: {exc}") from None
        except BaseException:
            # a Ctrl-C (fit's handler is not in place yet) left a model half
            # loaded, with its own weights in some layers and the file's in others
            restore()
            raise
        rng.bit_generator.state = saved.rng
        settings["lr"] = started_lrs(saved)  # this run's checkpoints: the run's first lr
        return saved.history, saved.epoch

    # ---- files ----

    def _architecture(self, where):
        """The JSON record of what the model is: its layers (type and config),
        the recorded loss and model.metadata (TypeError naming where if the
        metadata is not JSON)."""
        if not isinstance(self.metadata, dict) or not all(isinstance(k, str)
                                                          for k in self.metadata):
            # sn.load refused a file with a string or list there; int keys came back as str
            raise TypeError(f"{where}: model.metadata must be a dict with str keys (a JSON "
                            f"object), got {_describe(self.metadata)}")
        arch = {"format": MODEL_FORMAT, "version": FORMAT_VERSION,
                "layers": [{"type": type(l).__name__, "config": l.get_config()}
                           for l in self.layers],
                "loss": None if self.loss is None else
                {"type": type(self.loss).__name__, "config": self.loss.get_config()},
                "metadata": self.metadata}
        try:
            json.dumps(arch, allow_nan=False, default=_json_default)  # NumPy numbers as numbers
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{where}: model.metadata must hold JSON values only ({exc})") \
                from None
        return arch

    def save(self, path):
        """One .npz: the architecture as JSON (layers, the recorded loss,
        model.metadata) and every parameter array. Written to a temporary
        file, synced and renamed, so a failure never leaves a half file at
        path."""
        for i, layer in enumerate(self.layers):  # a file load would refuse is never written
            if LAYERS.get(type(layer).__name__) is not type(layer):
                raise TypeError(f"save: layer {i} is a {type(layer).__name__}, not one of "
                                "scratchnet's layer types, which a saved model names to be "
                                "rebuilt by sn.load")
        if self.loss is not None and LOSSES.get(type(self.loss).__name__) is not type(self.loss):
            raise TypeError(f"save: model.loss is a {type(self.loss).__name__}, not one of "
                            f"scratchnet's losses ({', '.join(LOSSES)}), which a saved model "
                            "names to be rebuilt by sn.load: set model.loss to one of them, or "
                            "to None, before saving")
        for name, array in self._state_arrays().items():
            if not _core.all_finite(array):
                raise ValueError(f"save: {name} contains non-finite values (NaN or inf), which "
                                 "sn.load refuses: nothing written")
        write_npz(path, self._state_arrays(), {"__architecture__": self._architecture("save")},
                  "save")

    def export_onnx(self, path, opset=17, input_shape=None):
        """Write this model as an ONNX file (needs the onnx package), with a
        dynamic batch dimension; a classifier's graph ends with Softmax, so it
        gives predict_proba's values. See scratchnet.onnx_io."""
        from .onnx_io import export_onnx
        return export_onnx(self, path, opset=opset, input_shape=input_shape)


IncompatibleKeys = namedtuple("IncompatibleKeys", "missing_keys unexpected_keys")


def _describe(value):
    """A short description of a value for a message."""
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(repr, value))[:5]}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _finite_loss(loss, outputs, targets):
    """loss.forward(outputs, targets), or None where the outputs or the loss
    are not finite."""
    if not _core.all_finite(outputs):
        return None
    try:
        # a Python float: a user's loss may give np.float32, which the history
        # (and json.dumps of it) would keep
        value = float(loss.forward(outputs, targets))
    except FloatingPointError:
        return None
    return value if math.isfinite(value) else None


def _targets(y, n, loss, model, where, in_shape=None, name="y"):
    """Targets (named name in errors) checked against the loss: class labels
    for CrossEntropy (unless one-hot), float arrays otherwise; in_shape: the
    inputs' per sample."""
    _no_masked_values(y, name)  # before asarray drops the mask
    arr = np.asarray(y)
    if arr.shape[:1] != (n,):
        raise ValueError(f"{where}: {n} samples but targets of shape {arr.shape}")
    if isinstance(loss, CrossEntropy) and not (arr.ndim == 2 and arr.shape[1] > 1):
        return as_labels(arr, _n_outputs(model, in_shape), n, name)
    out = _output_shape(model, in_shape)
    if out is not None:
        # checked whole, as the loss checks a batch's, before any training: a
        # bad value in a late batch (or in validation targets, first used
        # after an epoch) stopped a fit that had already moved the weights
        try:
            loss.targets_for(arr, (n,) + out)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: {exc}") from None
    return arr


def _output_shape(model, in_shape):
    """The model's per-sample output shape for inputs of in_shape, or None
    when the layers do not tell (or the inputs do not fit them: the input
    checks say so)."""
    if in_shape is None or not model.layers:
        return None
    if any(LAYERS.get(type(layer).__name__) is not type(layer) for layer in model.layers):
        return None  # a user's layer need not give its output_shape (the default: as it came)
    try:
        return tuple(model._shapes(tuple(in_shape))[-1])
    except (ValueError, TypeError):
        return None


def _shape_label(features):
    if features is None:
        return "(None, ?)"
    dims = features if isinstance(features, tuple) else (features,)
    return f"({', '.join(['None', *map(str, dims)])})"


def _layer_label(layer):
    """Dense(784, 256, 'he'): the type and its config's values."""
    return f"{type(layer).__name__}({', '.join(map(repr, layer.get_config().values()))})"


def _count(params):
    return sum(p.size for p in params)


def _split_validation(X, y, fraction, validation):
    """(X, y, (Xv, yv)): the last fraction of the rows held out, as Keras
    does: the training rows are the first floor(n (1 - fraction))."""
    if validation is not None:
        raise ValueError("fit: give validation= or validation_split=, not both")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) \
            or not 0 < fraction < 1:
        raise ValueError(f"fit: validation_split must be a fraction in (0, 1), got {fraction!r}")
    n = X.shape[0]
    # the decimal the user wrote, exactly: in binary 1 - 0.9 falls just short
    # of 0.1, which would round 10 rows down to 0 training rows
    n_train = int(n * (1 - Fraction(repr(float(fraction)))))
    if n_train == 0:
        raise ValueError(f"fit: validation_split={fraction} of {n} rows leaves no training rows")
    return X[:n_train], y[:n_train], (X[n_train:], y[n_train:])


def _some(names, shown=6):
    """The first few of a list of names, for a message."""
    return ", ".join(names[:shown]) + (" ..." if len(names) > shown else "")


# layers whose outputs per sample are as many as their inputs
_KEEPS_COUNT = (_Activation, RandomStream, Flatten, Reshape, _BatchNorm)


def _n_outputs(model, in_shape=None):
    """The model's outputs per sample: the last Dense layer's, when only
    layers that keep the count follow it (a scan from the end: this is on
    the path of one-image latency); else what in_shape (a per-sample input
    shape) gives through the layers: a convolution's channels. None when
    neither tells."""
    for layer in reversed(model.layers):
        if isinstance(layer, Dense):
            return layer.out_features
        if not isinstance(layer, _KEEPS_COUNT):
            break
    if in_shape is None:
        return None
    try:
        shapes = model._shapes(tuple(in_shape))
    except ValueError:  # inputs that do not fit: the input checks say so, naming them
        return None
    return math.prod(shapes[-1] if shapes else in_shape)


def _sample_shape(X):
    """The per-sample shape of a batch X (N, ...), None for anything else
    (which the input checks refuse with their own message)."""
    try:
        shape = np.shape(X)
    except ValueError:  # ragged nested lists
        return None
    return shape[1:] if len(shape) >= 2 else None


@functools.lru_cache(maxsize=None)
def _can_skip_input_grad(layer_type):
    return "input_grad" in inspect.signature(layer_type.backward).parameters


def _single_column(a):
    """(N, 1) -> (N,): one output gives one value per sample."""
    return a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a


def _read_file(path, what):
    """(architecture record, training record or None, the other arrays) of
    a model or checkpoint file, read safely (scratchnet._files) and checked
    for format and version; ModelFileError naming path otherwise."""
    arrays = read_npz(path, what)
    arch = read_record(arrays, "__architecture__", path, what)
    record = read_record(arrays, "__training__", path, what) if "__training__" in arrays \
        else None
    if not isinstance(arch, dict) or arch.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: bad architecture record (unknown format)")
    if arch.get("version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: format version {arch.get('version')!r} (this scratchnet "
                             f"reads {FORMAT_VERSION}: written by a newer scratchnet?)")
    return arch, record, arrays


def _from_architecture(arch, path):
    """A new model built as the architecture record says; ModelFileError
    for a layer or loss that is not scratchnet's, or a bad config."""
    try:
        layers = []
        for spec in arch["layers"]:
            cls = LAYERS.get(spec["type"])
            if cls is None:
                raise ValueError(f"unknown layer type {spec['type']!r}")
            with weights_to_be_replaced():  # the file's arrays replace them all
                layers.append(cls(**spec["config"]))
        model = Sequential(*layers)
        loss = arch.get("loss")  # absent in files written before losses were recorded
        if loss is not None:
            cls = LOSSES.get(loss["type"])
            if cls is None:
                raise ValueError(f"unknown loss type {loss['type']!r}")
            model.loss = cls(**loss["config"])
        model.metadata = dict(arch.get("metadata") or {})
    except MemoryError:
        raise ModelFileError(f"{path}: bad architecture record (its layers would not fit in "
                             "memory)") from None
    except Exception as exc:
        raise ModelFileError(f"{path}: bad architecture record ({exc})") from None
    return model


def load(path):
    """Read a model written by Sequential.save (or the model of a checkpoint
    fit wrote); anything else, damaged or edited, is refused with a
    ModelFileError naming the file and the problem. Never runs code."""
    path = os.fspath(path)
    arch, record, arrays = _read_file(path, "scratchnet model")
    if record is not None:
        Checkpoint(record, arrays, path)  # checked; sets the optimizer's arrays aside
    model = _from_architecture(arch, path)
    try:
        model.load_state_dict(arrays)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    return model
