"""scikit-learn estimators backed by scratchnet: MLPClassifier and
MLPRegressor, drop-in replacements for sklearn.neural_network's classes.

    from scratchnet.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(128,), batch_size=128, random_state=0)
    clf.fit(X_train, y_train).score(X_test, y_test)

They take sklearn's parameter names where they apply and follow its
conventions (parameters stored unchanged by __init__ and checked by fit,
fitted attributes ending in "_", get_params / set_params, clone, pickle),
and pass sklearn's estimator checks (tests/test_sklearn.py). The network is
a scratchnet Sequential, kept in model_, trained by Sequential.fit, so the
compiled C trainer runs it. scikit-learn is an optional dependency
(pip install "scratchnet[sklearn]"), imported by this module only.

Where they differ from sklearn's:
- solver: "adam" and "sgd" (constant learning rate); "lbfgs" raises.
  learning_rate, power_t, warm_start and max_fun are not taken, nor
  sample_weight, sparse X or sklearn 1.9's MLPRegressor loss= (squared
  error only).
- alpha (the L2 penalty) is applied as weight decay alpha / batch_size on
  every parameter, biases included (sklearn leaves the biases out), with
  alpha and the batch size of each fit or partial_fit call; with
  sklearn's small defaults the difference is negligible, and one parameter
  group keeps the compiled trainer.
- The classifier has one output per class (two for binary problems) and a
  softmax, where sklearn has one logistic output for two classes; it takes
  one label per sample (no multilabel targets).
- Weights start as scratchnet's: He normal for relu, Xavier uniform for
  the other activations.
- dropout (scratchnet's own): the probability of a Dropout layer after
  each hidden layer's activation, 0 for none.
- The arithmetic is float32; predict_proba and the regressor's predict
  return float64.
"""
import numbers
import warnings

import numpy as np

try:
    from scipy.special import softmax
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:
    raise ImportError(f"scratchnet.sklearn needs scikit-learn 1.6 or later ({exc}): "
                      "pip install \"scratchnet[sklearn]\"") from exc

from .callbacks import Callback
from .layers import Dense, Dropout, ReLU, Sigmoid, Tanh
from .losses import MSE, CrossEntropy
from .model import Sequential
from .module import checked_state
from ._training import TrainingDivergedError
from ._validate import as_float32, boolean
from .optimizers import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor"]

# X kept as float32 or float64 by sklearn's check, then made float32 here,
# where values past float32's range are named as such (not as inf)
_FLOATS = (np.float32, np.float64)
_ACTIVATIONS = {"identity": None, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU}


def _check_number(est, name, low, high=None, low_open=False, high_open=False, integer=False):
    value = getattr(est, name)
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and \
            (high is None or (value < high if high_open else value <= high))
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open or high is None else "]"
        what = "an integer" if integer else "a number"
        raise ValueError(f"{type(est).__name__}: {name} must be {what} in "
                         f"{lo}{low}, {'inf' if high is None else high}{hi}, got {value!r}")


def _check_bool(est, name):
    """A switch must be a bool (_validate.boolean), refused with sklearn's
    ValueError, not boolean's TypeError."""
    try:
        boolean(getattr(est, name), f"{type(est).__name__}: {name}")
    except TypeError as exc:
        raise ValueError(str(exc)) from None


class _EpochRule(Callback):
    """After each epoch: the loss curve, verbose lines, sklearn's stopping
    rule (training loss, or the validation score with early_stopping) and
    the best weights seen on validation."""

    def __init__(self, est, n_samples, batch_size, validation, incremental):
        self.est, self.n, self.batch_size = est, n_samples, batch_size
        self.validation, self.incremental = validation, incremental
        self.stopped = False
        self.best_state = None

    def on_epoch_end(self, epoch, logs=None):
        est = self.est
        weights = [layer.weight.data for layer in self.model.layers if isinstance(layer, Dense)]
        # in float64: the squares of large float32 weights overflow
        penalty = 0.5 * est.alpha * sum(float(np.sum(np.square(w, dtype=np.float64)))
                                        for w in weights)
        loss = logs["loss"] * est._loss_scale + penalty / self.batch_size
        est.loss_curve_.append(loss)
        est.loss_ = loss
        est.n_iter_ += 1
        est.t_ += self.n
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.incremental:
            return
        if self.validation is not None:
            score = est._score_encoded(*self.validation)
            est.validation_scores_.append(score)
            improved = score >= est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                self.best_state = self.model.state_dict()
        else:
            improved = loss <= est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.validation is not None else "Training loss"
            if est.verbose:
                print(f"{what} did not improve more than tol={est.tol:f} for "
                      f"{est.n_iter_no_change} consecutive epochs. Stopping.")
            self.stopped = True
            self.model.stop_training = True


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share; see the module's notes."""

    _loss_scale = 1.0

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=1e-4, batch_size="auto", learning_rate_init=1e-3, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, dropout=0.0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout

    # ---- parameters ----

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else sizes
        try:
            sizes = list(sizes)
        except TypeError:
            sizes = None
        if sizes is None or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                    and s > 0 for s in sizes):
            raise ValueError(f"{type(self).__name__}: hidden_layer_sizes must be a positive "
                             f"int or a sequence of them, got {self.hidden_layer_sizes!r}")
        return [int(s) for s in sizes]

    def _check_params(self):
        """fit checks the parameters (sklearn's convention: __init__ and
        set_params store them unchanged)."""
        name = type(self).__name__
        if self.solver == "lbfgs":
            raise ValueError(f"{name}: solver='lbfgs' is not supported by scratchnet (a "
                             "full-batch quasi-Newton method); use solver='adam' or 'sgd'")
        if self.solver not in ("adam", "sgd"):
            raise ValueError(f"{name}: solver must be 'adam' or 'sgd', got {self.solver!r}")
        if not isinstance(self.activation, str) or self.activation not in _ACTIVATIONS:
            raise ValueError(f"{name}: activation must be one of {sorted(_ACTIVATIONS)}, got "
                             f"{self.activation!r}")
        hidden = self._hidden_sizes()
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _check_number(self, "batch_size", 1, integer=True)
        _check_number(self, "alpha", 0.0)
        _check_number(self, "learning_rate_init", 0.0, low_open=True)
        _check_number(self, "max_iter", 1, integer=True)
        _check_number(self, "tol", 0.0)
        _check_number(self, "momentum", 0.0, 1.0)
        _check_number(self, "validation_fraction", 0.0, 1.0, low_open=True, high_open=True)
        _check_number(self, "beta_1", 0.0, 1.0, high_open=True)
        _check_number(self, "beta_2", 0.0, 1.0, high_open=True)
        _check_number(self, "epsilon", 0.0, low_open=True)
        _check_number(self, "n_iter_no_change", 1, integer=True)
        _check_number(self, "dropout", 0.0, 1.0, high_open=True)
        for flag in ("shuffle", "nesterovs_momentum", "early_stopping"):
            _check_bool(self, flag)
        if not isinstance(self.verbose, (bool, np.bool_)):
            _check_number(self, "verbose", 0, integer=True)  # sklearn: a bool or an int >= 0
        return hidden

    # ---- the network ----

    def _build(self, n_features, n_outputs, hidden, rng):
        act = _ACTIVATIONS[self.activation]
        init = "he" if self.activation == "relu" else "xavier"
        layers, width = [], n_features
        for size in hidden:
            layers.append(Dense(width, size, init=init, seed=int(rng.integers(2**31))))
            if act is not None:
                layers.append(act())
            if self.dropout:
                layers.append(Dropout(self.dropout))
            width = size
        layers.append(Dense(width, n_outputs, init="xavier", seed=int(rng.integers(2**31))))
        return Sequential(*layers)

    def _optimizer(self, params):
        if self.solver == "sgd":
            nesterov = bool(self.nesterovs_momentum) and self.momentum > 0
            return SGD(params, lr=self.learning_rate_init, momentum=self.momentum,
                       nesterov=nesterov)
        return Adam(params, lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                    eps=self.epsilon)

    def _batch(self, n):
        return min(200, n) if isinstance(self.batch_size, str) else min(self.batch_size, n)

    def _fit(self, X, y, incremental=False, classes=None):
        hidden = self._check_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not (incremental and hasattr(self, "model_"))
        X, y = self._validated(X, y, first, classes)
        n = X.shape[0]
        batch_size = self._batch(n)
        if first:
            rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
            self.model_ = self._build(X.shape[1], self.n_outputs_, hidden, rng)
            self._seed = int(rng.integers(2**31))
            self._opt = self._optimizer(self.model_.parameters())
            self.n_layers_ = len(hidden) + 2
            self.loss_curve_, self.n_iter_, self.t_ = [], 0, 0
            self._no_improvement_count = 0
            use_validation = self.early_stopping and not incremental
            self.validation_scores_ = [] if use_validation else None
            self.best_validation_score_ = -np.inf if use_validation else None
            self.best_loss_ = None if use_validation else np.inf
        validation = None
        if self.early_stopping and not incremental:
            X, y, validation = self._held_out(X, y)
            batch_size = self._batch(X.shape[0])
        # alpha and the batch size of this call, read each call as sklearn
        # reads them each step (partial_fit's batches may differ in size)
        self._opt.param_groups[0]["weight_decay"] = self.alpha / batch_size
        rule = _EpochRule(self, X.shape[0], batch_size, validation, incremental)
        try:
            self.model_.fit(X, y, self._opt, loss=self._loss(), epochs=1 if incremental else
                            self.max_iter, batch_size=batch_size,
                            seed=self._seed + self.n_iter_, verbose=0,
                            shuffle=bool(self.shuffle), callbacks=[rule])
        except TrainingDivergedError as exc:
            # sklearn's estimators raise ValueError for weights gone non-finite
            raise ValueError(f"{type(self).__name__}: {exc}") from exc
        if rule.best_state is not None:
            self.model_.load_state_dict(rule.best_state)
        if not incremental and not rule.stopped:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning)
        return self

    def _held_out(self, X, y):
        """early_stopping's split: (X, y, (X_val, y_val)), stratified for a
        binary classifier only, as sklearn's (a class of one sample among
        several then needs no place on both sides)."""
        binary = isinstance(self, ClassifierMixin) and self.n_outputs_ == 2
        try:
            X, Xv, y, yv = train_test_split(X, y, test_size=self.validation_fraction,
                                            random_state=self._seed,
                                            stratify=y if binary else None)
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__}: early_stopping=True holds out "
                             f"validation_fraction={self.validation_fraction} of the "
                             f"{X.shape[0]} samples, which failed: {exc}") from None
        return X, y, (Xv, yv)

    def _logits(self, X):
        """The network's outputs for X. A sample's outputs do not depend on
        the batch it comes in (sklearn's subset checks): the GEMM sums each
        row alike for any number of rows."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, order="C", reset=False)
        return self.model_.predict_logits(X)

    def __setstate__(self, state):
        """Unpickled arrays may be read-only (joblib's memory maps): the
        parameters and optimizer state are copied where they are, since the
        C kernels write into them (and the compiled network refuses them)."""
        super().__setstate__(state)
        if "model_" in self.__dict__:
            for p in self.model_.parameters():
                if not (p.data.flags.writeable and p.grad.flags.writeable):
                    p.data, p.grad = p.data.copy(), p.grad.copy()
            for entry in self._opt.state.values():
                for key, value in entry.items():
                    if isinstance(value, np.ndarray) and not value.flags.writeable:
                        entry[key] = value.copy()

    @property
    def coefs_(self):
        """The weight matrices, (inputs, outputs) each, as sklearn's coefs_;
        assigning a list of arrays of those shapes copies them in."""
        check_is_fitted(self)
        return [l.weight.data for l in self.model_.layers if isinstance(l, Dense)]

    @coefs_.setter
    def coefs_(self, arrays):
        self._assign("coefs_", "weight", arrays)

    @property
    def intercepts_(self):
        """The bias vectors, as sklearn's intercepts_; assignable as coefs_."""
        check_is_fitted(self)
        return [l.bias.data for l in self.model_.layers if isinstance(l, Dense)]

    @intercepts_.setter
    def intercepts_(self, arrays):
        self._assign("intercepts_", "bias", arrays)

    def _assign(self, name, attribute, arrays):
        """Copy arrays into the Dense layers' weight or bias (sklearn lets
        coefs_ and intercepts_ be assigned), all checked before any is."""
        check_is_fitted(self)
        params = [getattr(l, attribute) for l in self.model_.layers if isinstance(l, Dense)]
        arrays = list(arrays)
        if len(arrays) != len(params):
            raise ValueError(f"{type(self).__name__}.{name}: {len(arrays)} arrays for "
                             f"{len(params)} layers")
        values = [checked_state(a, p.data.shape, f"{type(self).__name__}.{name}[{i}]")
                  for i, (a, p) in enumerate(zip(arrays, params))]
        for p, value in zip(params, values):
            p.data[...] = value

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def fit(self, X, y):
        """Train a new network on X, y (max_iter epochs at most); returns self."""
        return self._fit(X, y)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier trained by scratchnet, with
    sklearn.neural_network.MLPClassifier's parameters (see the module's notes
    for the differences). Fitted attributes: classes_, n_features_in_,
    loss_, loss_curve_, best_loss_, validation_scores_,
    best_validation_score_, n_iter_, t_, n_layers_, n_outputs_,
    out_activation_ ("softmax"), coefs_, intercepts_, and model_, the
    scratchnet Sequential (its predict_proba is this one's)."""

    out_activation_ = "softmax"

    def _loss(self):
        return CrossEntropy()

    def _validated(self, X, y, first, classes):
        X, y = validate_data(self, X, y, dtype=_FLOATS, order="C", reset=first,
                             ensure_all_finite=False)  # Sequential.fit checks X, in C
        X = as_float32(X, "X")
        check_classification_targets(y)
        if first:
            if classes is not None:
                self.classes_ = np.unique(np.asarray(classes))
            else:
                self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes, "
                                 f"got 1 class ({self.classes_[0]!r})")
            self.n_outputs_ = len(self.classes_)
        index = np.searchsorted(self.classes_, y)
        index = np.minimum(index, len(self.classes_) - 1)
        unknown = self.classes_[index] != y
        if np.any(unknown):
            raise ValueError(f"{type(self).__name__}: y holds labels not in classes_ "
                             f"{self.classes_.tolist()}: {np.unique(y[unknown]).tolist()}")
        return X, index.astype(np.int64)

    def partial_fit(self, X, y, classes=None):
        """One epoch over X, y, continuing from the last call (the first
        call, or the first after fit, must give every class in classes
        unless fit ran before)."""
        if not hasattr(self, "model_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if hasattr(self, "model_") and classes is not None and not np.array_equal(
                self.classes_, np.unique(np.asarray(classes))):
            raise ValueError(f"`classes={list(classes)!r}` is not the same as on last call to "
                             f"partial_fit, was: {self.classes_!r}")
        return self._fit(X, y, incremental=True, classes=classes)

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes), in the order of classes_."""
        return softmax(self._logits(X).astype(np.float64), axis=1)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        proba = self.predict_proba(X)  # first: it raises NotFittedError before fit
        return self.classes_[np.argmax(proba, axis=1)]

    def _score_encoded(self, X, y):
        return float(np.mean(np.argmax(self.model_.predict_logits(X), axis=1) == y))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor trained by scratchnet (squared
    error), with sklearn.neural_network.MLPRegressor's parameters (see the
    module's notes); one or several outputs. Fitted attributes as the
    classifier's, without classes_; out_activation_ is "identity", and
    loss_curve_ holds half the mean squared error (plus the L2 term), as
    sklearn reports it."""

    out_activation_ = "identity"
    _loss_scale = 0.5

    def _loss(self):
        return MSE()

    def _validated(self, X, y, first, classes):
        X, y = validate_data(self, X, y, dtype=_FLOATS, order="C", reset=first,
                             multi_output=True, y_numeric=True, ensure_all_finite=False)
        X = as_float32(X, "X")
        if y.ndim == 2 and y.shape[1] == 1:
            # a column is one output, as sklearn's MLPRegressor takes it
            # (with its warning): predict then gives (n,), not (n, 1)
            y = column_or_1d(y, warn=True)
        if first:
            self._y_1d = y.ndim == 1
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        y = as_float32(y.reshape(y.shape[0], -1), "y")  # names values past float32's range
        if y.shape[1] != self.n_outputs_:
            raise ValueError(f"{type(self).__name__}: y has {y.shape[1]} outputs, the network "
                             f"{self.n_outputs_}")
        return X, y

    def partial_fit(self, X, y):
        """One epoch over X, y, continuing from the last call."""
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        out = self._logits(X).astype(np.float64)
        return out.ravel() if self._y_1d else out

    def _score_encoded(self, X, y):
        from sklearn.metrics import r2_score
        return float(r2_score(y, self.model_.predict_logits(X)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
