"""Optimizers with torch.optim's update rules and defaults (see
docs/formulas.md); each parameter's update is one C call over its buffer.

Every optimizer also takes decay=: the learning-rate decay of the "Neural
Networks from Scratch" book, lr_t = lr / (1 + decay * (t - 1)) at step t
(t counts from 1), applied before the step. StepLR and CosineAnnealingLR
change a group's lr once per epoch, as their torch namesakes do."""
import copy
import functools
import inspect
import math

import numpy as np

from . import _core
from ._lines import on_lines, zeros_on_lines
from ._validate import boolean, nonnegative_float
from .module import Parameter, checked_state


class Optimizer:
    """Holds param_groups (a list of dicts: "params" plus hyper-parameters)
    and per-parameter state, like torch.optim.Optimizer."""

    def __init__(self, params, defaults):
        if isinstance(params, Parameter):
            raise TypeError("params must be a list of parameters, e.g. model.parameters()")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups = []
        for group in groups:
            self.add_param_group(group)
        self.state = {}
        self.iterations = 0  # steps taken, for decay=

    def add_param_group(self, group):
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Parameter) else list(params)
        for p in group["params"]:
            if not isinstance(p, Parameter):
                raise TypeError(f"optimizer can only update Parameters, got {type(p).__name__}")
        held = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in group["params"]}) != len(group["params"]) or \
                any(id(p) in held for p in group["params"]):
            # torch refuses this too: the parameter would be stepped twice
            raise ValueError("optimizer got a parameter more than once (in one group or "
                             "in several)")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_group(group)
        group.setdefault("initial_lr", group["lr"])
        self.param_groups.append(group)

    def _check_group(self, group):
        for key in ("lr", "weight_decay", "decay", "eps"):
            if key in group:
                nonnegative_float(group[key], key)
        if "eps" in group and group["eps"] == 0:
            # PyTorch takes 0, and the first zero gradient (a pixel never lit)
            # then makes its weight NaN, which fit reports as a divergence
            raise ValueError("eps must be > 0: with eps = 0 a weight whose gradient and "
                             "running sum of squares are 0 gets the step 0 / 0 = NaN")

    @property
    def lr(self):
        """The learning rate of every parameter group (one value; when groups
        were given different ones, read param_groups[i]["lr"]). Setting it
        sets every group's lr (a scheduler goes on from it, as from a lr
        written into param_groups) and its initial_lr (which only older
        checkpoints' resume checks read)."""
        rates = {group["lr"] for group in self.param_groups}
        if len(rates) != 1:
            raise ValueError(f"the parameter groups have different learning rates "
                             f"{sorted(rates)}: read param_groups[i]['lr']")
        return rates.pop()

    @lr.setter
    def lr(self, value):
        value = nonnegative_float(value, "lr")
        for group in self.param_groups:
            group["lr"] = group["initial_lr"] = value

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad.fill(0.0)

    def current_lr(self, group=None):
        """The learning rate the next step uses, decay included."""
        group = group or self.param_groups[0]
        # a user's optimizer whose defaults give no decay: none (a KeyError)
        return _core.decayed_lr(group["lr"], group.get("decay", 0.0), self.iterations)

    def step(self):
        """Update every parameter from its .grad."""
        for group in self.param_groups:
            lr = self.current_lr(group)
            for p in group["params"]:
                if p.requires_grad:  # a frozen one stays as it is
                    self._update(p, p.grad, self.state.setdefault(p, {}), group, lr)
        self.iterations += 1

    def _update(self, p, g, state, group, lr):
        raise NotImplementedError

    def _zeros(self, state, key, p):
        if key not in state:
            state[key] = zeros_on_lines(p.data.shape)
        return state[key]

    # the names a parameter's state may hold (load_state_dict refuses others)
    state_keys = ()
    # state keys holding running sums of squared gradients: +inf allowed there
    square_sums = ()

    def state_dict(self):
        """The optimizer's type, its groups (hyper-parameters, the learning
        rate as a scheduler left it, parameters numbered in order), each
        parameter's state (moment arrays, copied, and step counts) and the
        steps taken: plain values and arrays, no objects."""
        index = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(p, len(index))
                ids.append(index[p])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[p]: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                            for k, v in s.items()} for p, s in self.state.items() if p in index}
        return {"type": type(self).__name__, "state": state, "param_groups": groups,
                "iterations": self.iterations}

    def load_state_dict(self, state_dict):
        """Take the state of state_dict (as state_dict() gives, or read back
        from a checkpoint): all of it is checked first (the optimizer type,
        the groups, each hyper-parameter as the constructor checks it, each
        state array's shape and finiteness), and nothing changes when any
        check fails."""
        kind = state_dict.get("type", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"load_state_dict: a state of the optimizer {kind}, not "
                             f"{type(self).__name__}")
        groups = state_dict["param_groups"]
        theirs = [len(g["params"]) for g in groups]
        mine = [len(g["params"]) for g in self.param_groups]
        if theirs != mine:
            raise ValueError(f"load_state_dict: the state holds parameter groups of {theirs} "
                             f"parameters, this optimizer {mine}: built over other parameters "
                             "(a parameter frozen or thawed since, or another model?)")
        hypers = [self._checked_hyper(saved, mine) for saved, mine in
                  zip(groups, self.param_groups)]
        params = [p for group in self.param_groups for p in group["params"]]
        state = {}
        for i, s in state_dict["state"].items():
            i = _count(int(i) if isinstance(i, str) and i.isdigit() else i, "parameter index")
            if i >= len(params):
                raise ValueError(f"load_state_dict: state for parameter {i}; there are "
                                 f"{len(params)}")
            state[params[i]] = {k: self._checked_state(i, k, v, params[i]) for k, v in s.items()}
        iterations = _count(state_dict.get("iterations", 0), "iterations")
        self.state = state
        for group, hyper in zip(self.param_groups, hypers):
            group.update(hyper)
        self.iterations = iterations

    def check_param_groups(self, where):
        """Each group's hyper-parameters, checked as the constructor checks
        them: they may have been edited in param_groups since (fit calls this
        before training; a NaN momentum would make the weights NaN)."""
        settings = [{k: v for k, v in group.items() if k != "params"}
                    for group in self.param_groups]
        if _same_settings(settings, getattr(self, "_settings_checked", None)):
            return  # unchanged since they passed: no probe built again (fit asks each epoch)
        for i, group in enumerate(self.param_groups):
            self._checked_hyper(group, group, f"{where}: the optimizer's param_groups[{i}]")
        self._settings_checked = copy.deepcopy(settings)

    def _checked_hyper(self, saved, mine, where="load_state_dict"):
        """saved's hyper-parameters, checked as the constructor checks them."""
        saved = {k: v for k, v in saved.items() if k != "params"}
        names = {k for k in mine if k != "params"}
        if set(saved) != names:
            raise ValueError(f"{where}: hyper-parameters {sorted(saved)}, this "
                             f"{type(self).__name__} has {sorted(names)}")
        hyper = {k: tuple(v) if isinstance(mine[k], tuple) else v for k, v in saved.items()}
        # the constructor's own arguments: a group may hold keys of the user's
        # (a "name"), which would send the probe to the short fallback check
        taken = inspect.signature(type(self)).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in taken.values())
        settings = {k: v for k, v in hyper.items()
                    if k != "initial_lr" and (takes_any or k in taken)}
        try:
            _construct_probe(type(self), _probe_params(), settings, self._check_group)
            nonnegative_float(hyper["initial_lr"], "initial_lr")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        return hyper

    def _checked_state(self, i, key, value, p):
        """One entry of a parameter's state: an array like the parameter, or a step count."""
        where = f"load_state_dict: state {key!r} of parameter {i}"
        if self.state_keys and key not in self.state_keys:
            raise ValueError(f"{where}: {type(self).__name__} keeps no such state "
                             f"({', '.join(self.state_keys)})")
        if not isinstance(value, np.ndarray):
            return _count(value, where)
        if key in self.square_sums:
            return _checked_square_sum(value, p.data.shape, where)
        return on_lines(np.array(checked_state(value, p.data.shape, where), dtype=np.float32))

    def __repr__(self):
        group = {k: v for k, v in self.param_groups[0].items() if k not in ("params", "initial_lr")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in group.items())})"


def _same_settings(a, b):
    """Whether two lists of hyper-parameter dicts hold the same values of the
    same types (1 and 1.0 or True differ; anything not comparable differs)."""
    try:
        return b is not None and len(a) == len(b) and all(
            x.keys() == y.keys() and all(type(x[k]) is type(y[k]) and bool(x[k] == y[k])
                                         for k in x)
            for x, y in zip(a, b))
    except (TypeError, ValueError):
        return False


def _checked_square_sum(value, shape, where):
    """A running sum of squared gradients (Adam's exp_avg_sq, RMSProp's
    square_avg, AdaGrad's sum) as a float32 copy: values >= 0, +inf allowed.
    Such a sum may overflow to +inf with the weights finite (their step
    divides by its root: 0 there), as torch.optim's does, and a checkpoint
    holding one must resume; NaN or a negative value is no such sum."""
    if value.dtype.kind == "f" and (np.isnan(value).any() or (value < 0).any()):
        raise ValueError(f"{where}: a sum of squares holds values >= 0 (+inf allowed), not "
                         "NaN or negative ones")
    finite = np.where(value == np.inf, 0, value) if value.dtype.kind == "f" else value
    checked_state(finite, shape, where)  # the dtype and the shape
    return on_lines(np.array(value, dtype=np.float32))


def _count(value, what):
    """value as an int >= 0 (a step count, an index), or ValueError."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{what}: expected a whole number >= 0, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=1)
def _probe_params():
    """One parameter for the probes, made once: a new Parameter counts as a
    change of the weights (Parameter.version) and would make every compiled
    network rebuild after each fit."""
    return (Parameter(np.zeros(1)),)


def _construct_probe(cls, first, settings, fallback):
    """Check settings as cls's constructor does, by building one over first
    (a probe); where the constructor takes other arguments, fallback(settings)."""
    try:
        inspect.signature(cls).bind(first, **settings)
    except TypeError:
        return fallback(settings)
    cls(first, **settings)


def _check_beta(value, name):
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


class SGD(Optimizer):
    """b <- g (t = 1) or mu b + (1 - dampening) g; g <- g + mu b (nesterov)
    or b; p <- p - lr g; with g <- g + wd p first."""

    state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, decay=0.0):
        nesterov = boolean(nesterov, "SGD: nesterov")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")
        nonnegative_float(momentum, "momentum")
        # the gradient's share of the buffer, (1 - dampening), must be a share
        if nonnegative_float(dampening, "dampening") > 1.0:
            raise ValueError(f"dampening must be in [0, 1], got {dampening!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=bool(nesterov), weight_decay=weight_decay,
                                      decay=decay))

    def _update(self, p, g, state, group, lr):
        momentum = group["momentum"]
        buf = None
        first = False
        if momentum != 0.0:
            first = "momentum_buffer" not in state
            buf = self._zeros(state, "momentum_buffer", p)
        _core.sgd_step(p.data, g, buf, lr, momentum, group["dampening"], group["nesterov"],
                       group["weight_decay"], first)


class AdaGrad(Optimizer):
    """s <- s + g^2; p <- p - clr g / (sqrt(s) + eps), clr = lr / (1 + (t - 1) lr_decay)."""

    state_keys = ("sum", "step")
    square_sums = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, decay=0.0):
        nonnegative_float(lr_decay, "lr_decay")
        nonnegative_float(initial_accumulator_value, "initial_accumulator_value")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, decay=decay))

    @staticmethod
    def started(state, p, group):
        """The state's running sum, made as AdaGrad starts it (both training paths)."""
        if "sum" not in state:
            state["sum"] = zeros_on_lines(p.data.shape)
            state["sum"][...] = group["initial_accumulator_value"]
            state["step"] = 0
        return state["sum"]

    def _update(self, p, g, state, group, lr):
        self.started(state, p, group)
        state["step"] += 1
        clr = _core.decayed_lr(lr, group["lr_decay"], state["step"] - 1)
        _core.adagrad_step(p.data, g, state["sum"], clr, group["eps"], group["weight_decay"])


class RMSProp(Optimizer):
    """v <- alpha v + (1 - alpha) g^2; p <- p - lr g / (sqrt(v) + eps), with
    torch's momentum and centered variants."""

    state_keys = ("square_avg", "grad_avg", "momentum_buffer")
    square_sums = ("square_avg",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, decay=0.0):
        _check_beta(alpha, "alpha")
        nonnegative_float(momentum, "momentum")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=bool(centered), decay=decay))

    def _update(self, p, g, state, group, lr):
        square_avg = self._zeros(state, "square_avg", p)
        grad_avg = self._zeros(state, "grad_avg", p) if group["centered"] else None
        buf = self._zeros(state, "momentum_buffer", p) if group["momentum"] > 0 else None
        _core.rmsprop_step(p.data, g, square_avg, grad_avg, buf, lr, group["alpha"],
                           group["eps"], group["weight_decay"], group["momentum"],
                           group["centered"])


class Adam(Optimizer):
    """m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
    p <- p - lr m^ / (sqrt(v^) + eps) with the bias corrections m^, v^."""

    decoupled = False
    state_keys = ("exp_avg", "exp_avg_sq", "step")
    square_sums = ("exp_avg_sq",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decay=0.0):
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair, got {betas!r}")
        _check_beta(betas[0], "betas[0]")
        _check_beta(betas[1], "betas[1]")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decay=decay))

    def _update(self, p, g, state, group, lr):
        m = self._zeros(state, "exp_avg", p)
        v = self._zeros(state, "exp_avg_sq", p)
        state["step"] = state.get("step", 0) + 1
        b1, b2 = group["betas"]
        _core.adam_step(p.data, g, m, v, lr, state["step"], b1, b2, group["eps"],
                        group["weight_decay"], self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay: p <- p (1 - lr wd) before the Adam step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decay=decay)


OPTIMIZERS = {"sgd": SGD, "adagrad": AdaGrad, "rmsprop": RMSProp, "adam": Adam, "adamw": AdamW}


def _epochs(value, what):
    """value as a whole number of epochs >= 1, or ValueError."""
    if _count(value, what) < 1:
        raise ValueError(f"{what} must be >= 1, got {value!r}")
    return int(value)


class _EpochScheduler:
    """Moves each group's lr once per epoch from the lr the group has then,
    as PyTorch's schedulers do: a lr set between epochs (opt.lr or
    param_groups[i]["lr"]) carries on and is scaled from there, and two
    schedulers stepped on one optimizer compose. Call step() at the end of
    every epoch (fit does)."""

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} needs an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.epoch = 0

    def next_lr(self, epoch, lr):
        """The lr of epoch `epoch` (from 1) from that of the epoch before."""
        raise NotImplementedError

    def step(self):
        self.epoch += 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.next_lr(self.epoch, group["lr"])

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def _settings(self):
        """The constructor's arguments after the optimizer, as now set."""
        names = list(inspect.signature(type(self)).parameters)[1:]
        return {name: getattr(self, name) for name in names}

    def state_dict(self):
        """The scheduler's type, its settings and the epochs stepped."""
        return {"type": type(self).__name__, "epoch": self.epoch, **self._settings()}

    def load_state_dict(self, state):
        """Take the settings and epoch count of state (as state_dict gives),
        checked as the constructor checks them; nothing changes when a check
        fails. The lr it goes on from is the optimizer's: load the
        optimizer's state_dict too."""
        kind = state.get("type", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"load_state_dict: a state of the scheduler {kind}, not "
                             f"{type(self).__name__}")
        settings = {k: v for k, v in state.items() if k not in ("type", "epoch")}
        try:
            fresh = type(self)(self.optimizer, **settings)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"load_state_dict: {exc}") from None
        epoch = _count(state["epoch"], "load_state_dict: epoch")
        for name in self._settings():
            setattr(self, name, getattr(fresh, name))
        self.epoch = epoch


class StepLR(_EpochScheduler):
    """lr <- gamma lr after every step_size-th epoch: lr_0 gamma ** (epoch //
    step_size) when nothing else sets the lr."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = _epochs(step_size, "StepLR: step_size")
        # a negative factor would make the lr negative: gradient ascent
        self.gamma = nonnegative_float(gamma, "StepLR: gamma")

    def next_lr(self, epoch, lr):
        return lr * self.gamma if epoch % self.step_size == 0 else lr


class CosineAnnealingLR(_EpochScheduler):
    """lr <- eta_min + (lr - eta_min) (1 + cos(pi t / T_max)) / (1 + cos(pi
    (t - 1) / T_max)) after epoch t <= T_max, and held after T_max epochs
    (torch's version would climb back up). When nothing else sets the lr:
    eta_min + (lr_0 - eta_min) (1 + cos(pi t / T_max)) / 2, then eta_min."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        self.T_max = _epochs(T_max, "CosineAnnealingLR: T_max")
        self.eta_min = nonnegative_float(eta_min, "CosineAnnealingLR: eta_min")

    def next_lr(self, epoch, lr):
        if epoch > self.T_max:
            return lr
        # the denominator is > 0: epoch - 1 < T_max
        ratio = (1.0 + math.cos(math.pi * epoch / self.T_max)) / \
            (1.0 + math.cos(math.pi * (epoch - 1) / self.T_max))
        return self.eta_min + (lr - self.eta_min) * ratio
