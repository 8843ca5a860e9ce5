"""Losses, the mean over the batch. forward(predictions, targets) returns a
Python float and caches what backward() needs; backward() returns the
gradient with respect to the predictions (an array owned by the loss)."""
import copy
import math
import numbers

import numpy as np

from . import _core
from ._validate import as_float32, as_labels, check_finite
from .module import BufferOwner


class Loss(BufferOwner):
    def __call__(self, predictions, targets):
        return self.forward(predictions, targets)

    def _check_called(self):
        if getattr(self, "_pred", None) is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")

    def correct(self, predictions, targets):
        """(right, total) decisions in a batch, or None where accuracy has no meaning."""
        return None

    def targets_for(self, targets, shape):
        """targets checked as forward checks them against predictions of
        this shape, converted as forward takes them (ValueError or TypeError
        if forward would refuse them). fit checks all its targets so before
        training, not batch by batch. A loss of the user's: as given."""
        return targets

    def get_config(self):
        """Constructor arguments that rebuild this loss (saved with a model)."""
        return {}

    def fresh(self):
        """The same loss, settings and all (a shallow copy), with buffers of
        its own and nothing cached from a forward (for a call that may run
        beside others). It was rebuilt from get_config(), which a loss of the
        user's need not give: evaluate and fit's validation then computed
        another loss (label smoothing 0.1 for 0.4)."""
        new = copy.copy(self)
        new._buffers = {}
        for name in ("_pred", "_targets", "_probs"):
            if name in new.__dict__:
                setattr(new, name, None)
        return new

    def __repr__(self):
        return f"{type(self).__name__}()"


def _rows(rows, batch):
    """The rows a loss's mean is over: the batch's, or rows (at least the
    batch's) for a share of a larger batch."""
    if rows is None:
        return batch
    if isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or rows < batch:
        raise ValueError(f"backward: rows must be an integer >= this batch's {batch} rows, "
                         f"got {rows!r}")
    return int(rows)


def _predictions(p, name):
    p = as_float32(p, f"{name} predictions")
    if p.ndim == 0 or p.size == 0:
        raise ValueError(f"{name}: empty predictions (shape {p.shape})")
    return p


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits (N, C), fused with the softmax:
    lse_i = m_i + log sum_j exp(z_ij - m_i), loss = mean_i (lse_i - z_i,y_i),
    gradient (softmax(z) - onehot(y)) / N. Targets are int labels (N,) or
    one-hot / soft targets (N, C)."""

    def forward(self, logits, targets):
        z = _predictions(logits, "CrossEntropy")
        if z.ndim != 2:
            raise ValueError(f"CrossEntropy: logits must be 2-D (batch, classes), got shape {z.shape}")
        check_finite(z, "CrossEntropy logits")
        probs = self._buffer("probs", z.shape)
        t = self.targets_for(targets, z.shape)
        if t.ndim == 2:
            loss = _core.xent_soft_forward(z, t, probs)
        else:
            loss = _core.xent_forward(z, t, probs)
        self._pred, self._targets, self._probs = z, t, probs
        return loss

    def targets_for(self, targets, shape):
        """int64 labels in [0, C) for logits of shape (N, C), or float32
        one-hot / soft targets (N, C), finite and >= 0."""
        targets_arr = np.asarray(targets)
        if not (targets_arr.ndim == 2 and targets_arr.shape[1] > 1):
            return as_labels(targets_arr, shape[1], shape[0], "CrossEntropy labels")
        t = check_finite(as_float32(targets_arr, "CrossEntropy targets"), "CrossEntropy targets")
        if t.shape != tuple(shape):
            raise ValueError(f"CrossEntropy: targets of shape {t.shape} for logits {tuple(shape)}")
        if t.min() < 0.0:
            raise ValueError("CrossEntropy: soft targets must be probabilities (>= 0), got "
                             f"a value of {t.min()}")
        return t

    def backward(self, rows=None):
        """rows: the rows the mean is over (default: this batch's); in
        data-parallel training the global batch's, of which this batch is a
        share, so the processes' gradients sum to the global batch's."""
        self._check_called()
        dz = self._buffer("dz", self._probs.shape)
        scale = 1.0 / _rows(rows, self._probs.shape[0])
        if self._targets.ndim == 2:
            return _core.xent_soft_backward(self._probs, self._targets, dz, scale)
        return _core.xent_backward(self._probs, self._targets, dz, scale)

    def correct(self, logits, targets):
        targets = np.asarray(targets)
        labels = targets.argmax(axis=1) if targets.ndim == 2 and targets.shape[1] > 1 else targets
        right = int((np.asarray(logits).argmax(axis=1) == labels.reshape(-1)).sum())
        return right, len(labels)


def _matching_targets(t, shape, name):
    t = check_finite(as_float32(t, f"{name} targets"), f"{name} targets")
    shape = tuple(shape)
    # (N,) targets for (N, 1) predictions are accepted, as the same numbers
    if t.shape != shape and not (t.size == math.prod(shape) and t.shape[:1] == shape[:1]):
        raise ValueError(f"{name}: targets of shape {t.shape} do not match predictions {shape}")
    return t.reshape(shape)


class MSE(Loss):
    """Mean squared error over all N*K elements; gradient 2 (p - t) / (N K)."""

    def forward(self, predictions, targets):
        p = check_finite(_predictions(predictions, "MSE"), "MSE predictions")
        t = self.targets_for(targets, p.shape)
        self._pred, self._targets = p, t
        return _core.mse_forward(p, t)

    def targets_for(self, targets, shape):
        """float32 targets of the predictions' shape ((N,) for (N, 1) too), finite."""
        return _matching_targets(targets, shape, "MSE")

    def backward(self, rows=None):
        """rows: as CrossEntropy.backward's."""
        self._check_called()
        dp = self._buffer("dp", self._pred.shape)
        n = _rows(rows, self._pred.shape[0]) * (self._pred.size // self._pred.shape[0])
        return _core.mse_backward(self._pred, self._targets, dp, 2.0 / n)


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy from logits z and targets t in [0, 1]:
    mean of max(z, 0) - z t + log(1 + exp(-|z|)); gradient (sigmoid(z) - t) / n."""

    def forward(self, logits, targets):
        z = check_finite(_predictions(logits, "BinaryCrossEntropy"), "BinaryCrossEntropy logits")
        t = self.targets_for(targets, z.shape)
        self._pred, self._targets = z, t
        return _core.bce_logits_forward(z, t)

    def targets_for(self, targets, shape):
        """float32 targets in [0, 1] of the logits' shape ((N,) for (N, 1) too)."""
        t = _matching_targets(targets, shape, "BinaryCrossEntropy")
        if t.size and (t.min() < 0.0 or t.max() > 1.0):
            raise ValueError("BinaryCrossEntropy: targets must be in [0, 1], got values from "
                             f"{t.min()} to {t.max()}")
        return t

    def backward(self, rows=None):
        """rows: as CrossEntropy.backward's."""
        self._check_called()
        dz = self._buffer("dz", self._pred.shape)
        n = _rows(rows, self._pred.shape[0]) * (self._pred.size // self._pred.shape[0])
        return _core.bce_logits_backward(self._pred, self._targets, dz, 1.0 / n)

    def correct(self, logits, targets):
        """Decisions as predict makes them: 1 where sigmoid(z) >= 0.5, z >= 0."""
        t = np.asarray(targets, dtype=np.float32).reshape(np.shape(logits))
        return int(((np.asarray(logits) >= 0) == (t > 0.5)).sum()), t.size


LOSSES = {cls.__name__: cls for cls in (CrossEntropy, MSE, BinaryCrossEntropy)}
