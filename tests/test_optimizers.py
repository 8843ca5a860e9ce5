"""Every optimizer against its update rule (docs/formulas.md, torch.optim's
documented algorithms) written out in float64 NumPy.

Each test runs a few steps with a fresh random gradient per step on two
parameters of different shapes and compares the parameters with the float64
reference after every step."""
import math
import zlib

import numpy as np
import pytest

import scratchnet as sn

F32 = np.float32
F64 = np.float64
STEPS = 5
RTOL, ATOL = 1e-5, 1e-6


# --------------------------------------------------------------------------- float64 rules


class RefSGD:
    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                 decay=0.0):
        self.__dict__.update(lr=lr, mu=momentum, damp=dampening, nesterov=nesterov,
                             wd=weight_decay, decay=decay)
        self.b = {}

    def step(self, i, p, g, t):
        lr = self.lr / (1 + self.decay * (t - 1))
        g = g + self.wd * p
        if self.mu != 0:
            self.b[i] = g.copy() if t == 1 else self.mu * self.b[i] + (1 - self.damp) * g
            g = g + self.mu * self.b[i] if self.nesterov else self.b[i]
        return p - lr * g


class RefAdaGrad:
    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, decay=0.0):
        self.__dict__.update(lr=lr, lr_decay=lr_decay, wd=weight_decay,
                             init=initial_accumulator_value, eps=eps, decay=decay)
        self.s = {}

    def step(self, i, p, g, t):
        lr = self.lr / (1 + self.decay * (t - 1))
        clr = lr / (1 + (t - 1) * self.lr_decay)
        g = g + self.wd * p
        self.s[i] = self.s.get(i, np.full_like(p, self.init)) + g * g
        return p - clr * g / (np.sqrt(self.s[i]) + self.eps)


class RefRMSProp:
    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, decay=0.0):
        self.__dict__.update(lr=lr, alpha=alpha, eps=eps, wd=weight_decay, mu=momentum,
                             centered=centered, decay=decay)
        self.v, self.a, self.b = {}, {}, {}

    def step(self, i, p, g, t):
        lr = self.lr / (1 + self.decay * (t - 1))
        g = g + self.wd * p
        v = self.v[i] = self.alpha * self.v.get(i, 0.0) + (1 - self.alpha) * g * g
        if self.centered:
            a = self.a[i] = self.alpha * self.a.get(i, 0.0) + (1 - self.alpha) * g
            v = v - a * a
        denom = np.sqrt(v) + self.eps
        if self.mu > 0:
            self.b[i] = self.mu * self.b.get(i, 0.0) + g / denom
            return p - lr * self.b[i]
        return p - lr * g / denom


class RefAdam:
    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decay=0.0,
                 decoupled=False):
        self.__dict__.update(lr=lr, b1=betas[0], b2=betas[1], eps=eps, wd=weight_decay,
                             decay=decay, decoupled=decoupled)
        self.m, self.v = {}, {}

    def step(self, i, p, g, t):
        lr = self.lr / (1 + self.decay * (t - 1))
        if self.decoupled:
            p = p * (1 - lr * self.wd)
        else:
            g = g + self.wd * p
        m = self.m[i] = self.b1 * self.m.get(i, 0.0) + (1 - self.b1) * g
        v = self.v[i] = self.b2 * self.v.get(i, 0.0) + (1 - self.b2) * g * g
        mhat = m / (1 - self.b1 ** t)
        vhat = v / (1 - self.b2 ** t)
        return p - lr * mhat / (np.sqrt(vhat) + self.eps)


def RefAdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, decay=0.0):
    return RefAdam(lr, betas, eps, weight_decay, decay, decoupled=True)


REFS = {sn.SGD: RefSGD, sn.AdaGrad: RefAdaGrad, sn.RMSProp: RefRMSProp, sn.Adam: RefAdam,
        sn.AdamW: RefAdamW}

CASES = [
    (sn.SGD, dict(lr=0.1)),
    (sn.SGD, dict(lr=0.1, momentum=0.9)),
    (sn.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (sn.SGD, dict(lr=0.1, momentum=0.8, dampening=0.3)),
    (sn.SGD, dict(lr=0.1, weight_decay=0.05)),
    (sn.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (sn.SGD, dict(lr=0.1, momentum=0.5, dampening=0.5, weight_decay=0.1, decay=0.2)),
    (sn.SGD, dict()),
    (sn.AdaGrad, dict()),
    (sn.AdaGrad, dict(lr=0.1)),
    (sn.AdaGrad, dict(lr=0.1, lr_decay=0.3)),
    (sn.AdaGrad, dict(lr=0.1, weight_decay=0.2)),
    (sn.AdaGrad, dict(lr=0.1, initial_accumulator_value=0.5)),
    (sn.AdaGrad, dict(lr=0.1, lr_decay=0.1, weight_decay=0.05, initial_accumulator_value=0.1,
                      eps=1e-3, decay=0.5)),
    (sn.RMSProp, dict()),
    (sn.RMSProp, dict(lr=0.01, alpha=0.9)),
    (sn.RMSProp, dict(lr=0.01, momentum=0.9)),
    (sn.RMSProp, dict(lr=0.01, centered=True)),
    (sn.RMSProp, dict(lr=0.01, weight_decay=0.1)),
    (sn.RMSProp, dict(lr=0.01, alpha=0.95, momentum=0.5, centered=True, weight_decay=0.05)),
    (sn.Adam, dict()),
    (sn.Adam, dict(lr=0.01)),
    (sn.Adam, dict(lr=0.01, weight_decay=0.1)),
    (sn.Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    (sn.Adam, dict(lr=0.01, decay=0.5)),
    (sn.AdamW, dict()),
    (sn.AdamW, dict(lr=0.01)),
    (sn.AdamW, dict(lr=0.01, weight_decay=0.1)),
    (sn.AdamW, dict(lr=0.01, weight_decay=0.0)),
    (sn.AdamW, dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.3, decay=0.2)),
]


def case_id(case):
    cls, kw = case
    return cls.__name__ + "(" + ",".join(f"{k}={v}" for k, v in kw.items()) + ")"


def make_params(rng):
    return [sn.Parameter(rng.standard_normal((7, 5))), sn.Parameter(rng.standard_normal(13))]


def set_grads(params, rng, scale=1.0):
    grads = []
    for p in params:
        g = (rng.standard_normal(p.data.shape) * scale).astype(F32)
        p.grad[...] = g
        grads.append(g)
    return grads


# --------------------------------------------------------------------------- update rules


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_update_rule_matches_float64_reference(case):
    cls, kw = case
    rng = np.random.default_rng(zlib.crc32(case_id(case).encode()))
    params = make_params(rng)
    ref = REFS[cls](**kw)
    want = [p.data.astype(F64) for p in params]
    initial = [p.data.copy() for p in params]
    opt = cls(params, **kw)
    for t in range(1, STEPS + 1):
        grads = set_grads(params, rng)
        opt.step()
        for i, (p, g) in enumerate(zip(params, grads)):
            want[i] = ref.step(i, want[i], g.astype(F64), t)
            assert p.data.dtype == F32
            np.testing.assert_allclose(p.data, want[i], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{case_id(case)}: step {t}, parameter {i}")
    # the parameters actually moved (the test cannot pass on a no-op)
    for p, p0 in zip(params, initial):
        assert np.abs(p.data - p0).max() > 100 * ATOL


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_step_does_not_modify_gradient(case):
    cls, kw = case
    kw = dict(kw)
    if "weight_decay" in kw or cls is sn.AdamW:
        kw["weight_decay"] = 0.3  # the path that adds wd * p to a copy of g
    rng = np.random.default_rng(5)
    params = make_params(rng)
    opt = cls(params, **kw)
    for _ in range(3):
        grads = [g.copy() for g in set_grads(params, rng)]
        before = [p.data.copy() for p in params]
        opt.step()
        for p, g, b in zip(params, grads, before):
            np.testing.assert_array_equal(p.grad, g)
            assert not np.array_equal(p.data, b)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_instruction_set_gives_the_same_bits(case):
    """The update loops are compiled for the baseline instruction set, AVX2
    and AVX-512F (csrc/sn_optim_loops.h), picked by the active ISA: all must
    make the same IEEE operations, so the same bits, on sizes with and
    without a vector tail."""
    from scratchnet import _core
    if len(_core.supported_isas()) < 2:
        pytest.skip("one instruction set on this CPU: nothing to compare")
    cls, kw = case
    results = {}
    prev = _core.get_isa()
    try:
        for isa in _core.supported_isas():
            _core.set_isa(isa)
            rng = np.random.default_rng(11)
            params = [sn.Parameter(rng.standard_normal(n)) for n in (1000, 13, 8)]
            opt = cls(params, **kw)
            for _ in range(4):
                set_grads(params, rng)
                opt.step()
            results[isa] = [p.data.copy() for p in params]
    finally:
        _core.set_isa(prev)
    base = results["generic"]
    for isa, got in results.items():
        for a, b in zip(base, got):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32), err_msg=isa)


# no L2 term: weight_decay 0 (the default), or AdamW's decoupled decay
NO_L2_TERM = [c for c in CASES if c[0] is sn.AdamW or not c[1].get("weight_decay")]


@pytest.mark.parametrize("case", NO_L2_TERM, ids=case_id)
def test_infinite_weight_stays_infinite_without_an_l2_term(case):
    """torch.optim skips g + wd p when wd is 0: an infinite weight stays
    infinite (0 * inf would make it NaN); the finite weights beside it step
    exactly as they would alone."""
    cls, kw = case
    p = sn.Parameter(np.array([np.inf, -np.inf, 0.5, -0.25], F32))
    q = sn.Parameter(np.array([0.5, -0.25], F32))
    opt_p, opt_q = cls([p], **kw), cls([q], **kw)
    for t in range(1, 4):
        g = np.array([0.1, -0.2, 0.3, 0.4], F32) * t
        p.grad[...] = g
        q.grad[...] = g[2:]
        opt_p.step()
        opt_q.step()
    assert p.data[0] == np.inf and p.data[1] == -np.inf
    np.testing.assert_array_equal(p.data[2:], q.data)
    assert not np.array_equal(q.data, [0.5, -0.25])


def test_two_param_groups_use_their_own_hyperparameters():
    rng = np.random.default_rng(3)
    a, b = make_params(rng)
    opt = sn.SGD([{"params": [a], "lr": 0.5}, {"params": [b], "momentum": 0.9}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["momentum"] == 0.0
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["momentum"] == 0.9
    ra, rb = RefSGD(lr=0.5), RefSGD(lr=0.1, momentum=0.9)
    wa, wb = a.data.astype(F64), b.data.astype(F64)
    for t in range(1, STEPS + 1):
        ga, gb = set_grads([a, b], rng)
        opt.step()
        wa = ra.step(0, wa, ga.astype(F64), t)
        wb = rb.step(0, wb, gb.astype(F64), t)
        np.testing.assert_allclose(a.data, wa, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(b.data, wb, rtol=RTOL, atol=ATOL)


def test_adam_large_step_count_bias_correction():
    """Bias corrections stay right after many steps (beta2^t near 1 early)."""
    rng = np.random.default_rng(11)
    p = sn.Parameter(rng.standard_normal(50))
    opt = sn.Adam([p], lr=1e-3)
    ref = RefAdam(lr=1e-3)
    want = p.data.astype(F64)
    for t in range(1, 201):
        (g,) = set_grads([p], rng, scale=0.01)
        opt.step()
        want = ref.step(0, want, g.astype(F64), t)
    np.testing.assert_allclose(p.data, want, rtol=1e-5, atol=2e-6)


# --------------------------------------------------------------------------- defaults


def test_pytorch_defaults():
    p = [sn.Parameter(np.zeros(3))]
    g = sn.SGD(p).param_groups[0]
    assert (g["lr"], g["momentum"], g["dampening"], g["nesterov"], g["weight_decay"]) == \
        (1e-3, 0.0, 0.0, False, 0.0)
    g = sn.Adam(p).param_groups[0]
    assert g["lr"] == 1e-3 and tuple(g["betas"]) == (0.9, 0.999) and g["eps"] == 1e-8
    assert g["weight_decay"] == 0.0
    g = sn.AdamW(p).param_groups[0]
    assert g["lr"] == 1e-3 and tuple(g["betas"]) == (0.9, 0.999) and g["eps"] == 1e-8
    assert g["weight_decay"] == 0.01
    g = sn.AdaGrad(p).param_groups[0]
    assert (g["lr"], g["eps"], g["lr_decay"], g["weight_decay"],
            g["initial_accumulator_value"]) == (0.01, 1e-10, 0.0, 0.0, 0.0)
    g = sn.RMSProp(p).param_groups[0]
    assert (g["lr"], g["alpha"], g["eps"], g["momentum"], g["centered"], g["weight_decay"]) == \
        (0.01, 0.99, 1e-8, 0.0, False, 0.0)
    for cls in REFS:
        assert cls(p).param_groups[0]["decay"] == 0.0


# --------------------------------------------------------------------------- book decay


def test_sgd_decay_exact():
    """decay=: lr_t = lr / (1 + decay (t - 1)), t counting from 1, applied
    before the step. Plain SGD is p <- p - lr_t g: one float32 product and
    one float32 subtraction, so the float32 simulation is exact."""
    lr, decay = 0.5, 0.1
    rng = np.random.default_rng(2)
    p = sn.Parameter(rng.standard_normal((4, 6)))
    opt = sn.SGD([p], lr=lr, decay=decay)
    sim = p.data.copy()
    for t in range(1, 8):
        lr_t = lr / (1 + decay * (t - 1))
        assert opt.current_lr() == lr_t
        (g,) = set_grads([p], rng)
        opt.step()
        sim = sim - F32(lr_t) * g
        np.testing.assert_array_equal(p.data, sim, err_msg=f"step {t}")
    assert opt.param_groups[0]["lr"] == lr  # the group's base lr is not overwritten
    assert opt.current_lr() == lr / (1 + decay * 7)


def test_decay_zero_keeps_lr():
    p = sn.Parameter(np.ones(3))
    opt = sn.SGD([p], lr=0.25)
    for _ in range(3):
        p.grad[...] = 1.0
        opt.step()
        assert opt.current_lr() == 0.25
    np.testing.assert_array_equal(p.data, 1.0 - 3 * 0.25)


# --------------------------------------------------------------------------- schedulers


def test_step_lr():
    rng = np.random.default_rng(4)
    a, b = make_params(rng)
    opt = sn.SGD([{"params": [a], "lr": 0.2}, {"params": [b]}], lr=0.1)
    sched = sn.StepLR(opt, step_size=3, gamma=0.5)
    for epoch in range(1, 11):
        (ga, gb) = set_grads([a, b], rng)
        before = a.data.astype(F64)
        lr_now = opt.param_groups[0]["lr"]
        opt.step()
        np.testing.assert_allclose(a.data, before - lr_now * ga, rtol=1e-6, atol=1e-7)
        sched.step()
        want = [0.2 * 0.5 ** (epoch // 3), 0.1 * 0.5 ** (epoch // 3)]
        got = [g["lr"] for g in opt.param_groups]
        assert got == pytest.approx(want, rel=1e-12), epoch
        assert sched.get_last_lr() == got


def test_cosine_annealing_lr():
    rng = np.random.default_rng(6)
    params = make_params(rng)
    lr0, eta_min, T_max = 0.3, 0.01, 6
    opt = sn.Adam(params, lr=lr0)
    sched = sn.CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min)
    for epoch in range(1, T_max + 1):
        set_grads(params, rng)
        opt.step()
        sched.step()
        want = eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * epoch / T_max)) / 2
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-12), epoch
    assert opt.param_groups[0]["lr"] == pytest.approx(eta_min, rel=1e-12)


def test_scheduler_lr_is_used_by_the_next_step():
    p = sn.Parameter(np.zeros(4))
    opt = sn.SGD([p], lr=1.0)
    sched = sn.StepLR(opt, step_size=1, gamma=0.1)
    total = 0.0
    for epoch in range(4):
        p.grad[...] = 1.0
        opt.step()
        total += 0.1 ** epoch
        sched.step()
    np.testing.assert_allclose(p.data, -total, rtol=1e-6)


def test_schedulers_go_on_from_a_lr_set_between_epochs():
    """A lr written into param_groups (before the scheduler was built, or
    between epochs), or set by opt.lr, carries on and is scaled from there,
    as PyTorch's schedulers do. Each scheduler started from the initial lr
    instead: a group meant to train 10x slower jumped to the base rate, a
    fine-tuning lr of 1e-5 became 1e-3 after an epoch, and opt.lr = opt.lr
    applied the decay twice."""
    a, b = sn.Parameter(np.zeros(2)), sn.Parameter(np.zeros(2))
    opt = sn.SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    opt.param_groups[1]["lr"] = 0.01
    sched = sn.StepLR(opt, step_size=1, gamma=0.5)
    lrs = []
    for _ in range(3):
        sched.step()
        lrs.append(sched.get_last_lr())
    assert lrs == [[0.05, 0.005], [0.025, 0.0025], [0.0125, 0.00125]]

    opt = sn.SGD([sn.Parameter(np.zeros(2))], lr=0.1)
    sched = sn.StepLR(opt, step_size=1, gamma=0.5)
    lrs = []
    for epoch in range(1, 5):
        sched.step()
        if epoch == 2:
            opt.lr = opt.lr  # no change
        lrs.append(opt.lr)
    assert lrs == [0.05, 0.025, 0.0125, 0.00625]

    opt = sn.Adam([sn.Parameter(np.zeros(2))], lr=1e-3)
    opt.param_groups[0]["lr"] = 1e-5
    sched = sn.CosineAnnealingLR(opt, T_max=10)
    sched.step()
    assert opt.lr == pytest.approx(1e-5 * (1 + math.cos(math.pi / 10)) / 2, rel=1e-12)


def test_cosine_annealing_holds_after_t_max_even_a_lr_set_then():
    opt = sn.SGD([sn.Parameter(np.zeros(2))], lr=0.2)
    sched = sn.CosineAnnealingLR(opt, T_max=3, eta_min=0.02)
    for _ in range(5):
        sched.step()
    assert opt.lr == pytest.approx(0.02, rel=1e-12)
    opt.lr = 0.07
    sched.step()
    assert opt.lr == 0.07


def test_schedulers_compose_and_match_torch():
    """Two schedulers stepped on one optimizer multiply their effects, as
    torch's do (the last one stepped used to win), and a lr written between
    epochs carries on: the same lr as torch.optim.lr_scheduler at every
    epoch."""
    torch = pytest.importorskip("torch")
    schedulers = torch.optim.lr_scheduler
    p, tp = sn.Parameter(np.zeros(1)), torch.zeros(1, requires_grad=True)
    opt, topt = sn.SGD([p], lr=0.1), torch.optim.SGD([tp], lr=0.1)
    mine = [sn.CosineAnnealingLR(opt, T_max=7, eta_min=0.001), sn.StepLR(opt, 2, gamma=0.1)]
    theirs = [schedulers.CosineAnnealingLR(topt, T_max=7, eta_min=0.001),
              schedulers.StepLR(topt, 2, gamma=0.1)]
    for epoch in range(1, 8):
        opt.step()
        topt.step()
        for s in mine + theirs:
            s.step()
        if epoch == 3:
            opt.lr = topt.param_groups[0]["lr"] = 0.05
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), epoch


def test_fit_goes_on_from_a_lr_set_before_it():
    X = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    y = np.arange(32) % 2
    model = sn.Sequential(sn.Dense(4, 2))
    opt = sn.Adam(model.parameters(), lr=1e-3)
    opt.param_groups[0]["lr"] = 1e-5
    history = model.fit(X, y, opt, epochs=3, verbose=0,
                        scheduler=sn.CosineAnnealingLR(opt, T_max=10))
    want = [1e-5 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(3)]
    assert history["lr"] == pytest.approx(want, rel=1e-12)


def test_scheduler_bad_arguments():
    opt = sn.SGD([sn.Parameter(np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError):
        sn.StepLR(opt, step_size=0)
    with pytest.raises(ValueError):
        sn.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(TypeError):
        sn.StepLR(object(), step_size=1)
    # a negative factor or floor would make the lr negative (gradient ascent),
    # which the optimizers refuse when given directly
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        sn.StepLR(opt, step_size=1, gamma=-1.0)
    with pytest.raises(ValueError, match="eta_min must be a finite number >= 0"):
        sn.CosineAnnealingLR(opt, T_max=2, eta_min=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        sn.StepLR(opt, step_size=1, gamma=float("nan"))
    with pytest.raises(ValueError, match="step_size: expected a whole number"):
        sn.StepLR(opt, step_size=1.5)
    with pytest.raises(ValueError, match="gamma"):
        sn.StepLR(opt, step_size=1).load_state_dict({"type": "StepLR", "epoch": 0,
                                                     "step_size": 1, "gamma": -0.5})


@pytest.mark.parametrize("make, key, value, message", [
    (lambda ps: sn.SGD(ps, lr=0.1, momentum=0.9), "momentum", float("nan"),
     "momentum must be a finite number >= 0"),
    (lambda ps: sn.Adam(ps), "betas", (0.9, 1.5), r"betas\[1\] must be in \[0, 1\)"),
    (lambda ps: sn.RMSProp(ps), "alpha", -1.0, r"alpha must be in \[0, 1\)"),
])
def test_fit_checks_hyper_parameters_edited_in_param_groups(make, key, value, message):
    """param_groups can be edited after the optimizer is built: fit checks
    them as the constructor would (a NaN momentum made the weights NaN), and
    the check itself leaves the compiled networks alone (no new Parameter)."""
    X = np.random.default_rng(1).standard_normal((20, 3)).astype(np.float32)
    model = sn.Sequential(sn.Dense(3, 2))
    # a key of the user's in the group (as torch allows) must not hide the others
    opt = make([{"params": model.parameters(), "name": "all"}])
    model.fit(X, np.arange(20) % 2, opt, epochs=1, verbose=0)
    version = sn.Parameter.version
    model.fit(X, np.arange(20) % 2, opt, epochs=1, verbose=0)
    assert sn.Parameter.version == version
    opt.param_groups[0][key] = value
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"fit: the optimizer's param_groups\[0\]: " + message):
        model.fit(X, np.arange(20) % 2, opt, epochs=1, verbose=0)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


@pytest.mark.parametrize("fused", [True, False])
def test_fit_checks_hyper_parameters_a_callback_edits_between_epochs(fused):
    """A callback may edit param_groups at an epoch's end: the next epoch
    checks them again (a negative learning rate climbed the loss, silently),
    on both training paths, and keeps what the epochs before it learned."""
    X = np.random.default_rng(2).standard_normal((40, 4)).astype(np.float32)
    y = np.arange(40) % 3
    layers = [sn.Dense(4, 5), sn.ReLU(), sn.Dense(5, 3)]
    if not fused:  # a layer the C trainer does not cover: layer by layer
        layers.insert(2, sn.BatchNorm1d(5))
    model = sn.Sequential(*layers)
    opt = sn.Adam(model.parameters(), lr=0.01)
    seen = {}

    def sabotage(epoch, logs):
        seen[epoch] = [p.data.copy() for p in model.parameters()]
        if epoch == 2:
            opt.param_groups[0]["lr"] = -0.5

    with pytest.raises(ValueError, match=r"fit, before epoch 3: the optimizer's "
                                         r"param_groups\[0\]: lr must be"):
        model.fit(X, y, opt, epochs=4, verbose=0, callback=sabotage)
    assert sorted(seen) == [1, 2]
    for p, kept in zip(model.parameters(), seen[2]):
        np.testing.assert_array_equal(p.data, kept)


def test_fit_builds_a_users_optimizer_class_once_to_check_it():
    """fit checks the hyper-parameters before every epoch by building a probe
    of the optimizer's class: a user's class whose constructor has side
    effects ran them once an epoch. Settings unchanged since they passed are
    not checked again; changed ones are."""
    built = []

    class CountingAdam(sn.Adam):
        def __init__(self, params, **kwargs):
            built.append(kwargs)
            super().__init__(params, **kwargs)

    X = np.random.default_rng(3).standard_normal((40, 4)).astype(np.float32)
    y = np.arange(40) % 3
    model = sn.Sequential(sn.Dense(4, 3))
    opt = CountingAdam(model.parameters(), lr=0.01)
    model.fit(X, y, opt, epochs=4, verbose=0)
    model.fit(X, y, opt, epochs=2, verbose=0)
    assert len(built) == 2  # the user's and one probe
    opt.param_groups[0]["betas"] = (0.9, 1.5)
    with pytest.raises(ValueError, match="beta"):
        model.fit(X, y, opt, epochs=1, verbose=0)


def test_fit_refuses_what_is_not_a_scheduler():
    """An optimizer passed as scheduler= took one more step at each epoch's
    end, on the last batch's gradients."""
    X = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    model = sn.Sequential(sn.Dense(3, 2))
    opt = sn.SGD(model.parameters(), lr=0.1)
    for wrong in (opt, 0.5):
        with pytest.raises(TypeError, match="scheduler must be a learning-rate scheduler"):
            model.fit(X, np.arange(20) % 2, opt, epochs=1, verbose=0, scheduler=wrong)
    assert opt.iterations == 0


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("cls", list(REFS))
def test_empty_parameter_list(cls):
    with pytest.raises(ValueError):
        cls([])
    with pytest.raises(ValueError):
        cls(iter([]))


@pytest.mark.parametrize("cls", list(REFS))
def test_negative_lr(cls):
    p = [sn.Parameter(np.zeros(3))]
    with pytest.raises(ValueError):
        cls(p, lr=-0.1)
    with pytest.raises(ValueError):
        cls(p, lr=float("nan"))
    with pytest.raises(ValueError):
        cls(p, weight_decay=-1.0)
    with pytest.raises(ValueError):
        cls(p, decay=-0.5)


def test_other_bad_hyperparameters():
    p = [sn.Parameter(np.zeros(3))]
    with pytest.raises(ValueError):
        sn.SGD(p, lr=0.1, nesterov=True)                  # no momentum
    with pytest.raises(ValueError):
        sn.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError):
        sn.SGD(p, momentum=-0.9)
    with pytest.raises(ValueError):
        sn.Adam(p, betas=(1.0, 0.999))
    with pytest.raises(ValueError):
        sn.Adam(p, betas=(0.9, -0.1))
    with pytest.raises(ValueError):
        sn.AdamW(p, eps=-1e-8)
    with pytest.raises(ValueError):
        sn.RMSProp(p, alpha=1.5)
    with pytest.raises(ValueError):
        sn.AdaGrad(p, lr_decay=-0.1)
    with pytest.raises(ValueError):
        sn.AdaGrad(p, initial_accumulator_value=-1.0)
    with pytest.raises(TypeError):
        sn.SGD(p[0])                                     # a Parameter, not a list
    with pytest.raises(TypeError):
        sn.SGD([np.zeros(3)])                            # not a Parameter


# --------------------------------------------------------------------------- state_dict


@pytest.mark.parametrize("case", [
    (sn.SGD, dict(lr=0.1, momentum=0.9)),
    (sn.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, decay=0.3)),
    (sn.AdaGrad, dict(lr=0.1, lr_decay=0.2, initial_accumulator_value=0.1)),
    (sn.RMSProp, dict(lr=0.01, momentum=0.9, centered=True)),
    (sn.Adam, dict(lr=0.01, weight_decay=0.01)),
    (sn.AdamW, dict(lr=0.01, decay=0.1)),
], ids=case_id)
def test_state_dict_round_trip(case):
    cls, kw = case
    rng = np.random.default_rng(8)
    params = make_params(rng)
    opt = cls(params, **kw)
    for _ in range(3):
        set_grads(params, rng)
        opt.step()
    saved = opt.state_dict()
    saved_params = [p.data.copy() for p in params]
    later_grads = [[rng.standard_normal(p.data.shape).astype(F32) for p in params]
                   for _ in range(3)]

    # the original goes on (this must not change what was saved)
    for grads in later_grads:
        for p, g in zip(params, grads):
            p.grad[...] = g
        opt.step()

    # a fresh optimizer with other hyper-parameters, loaded from the dict
    params2 = [sn.Parameter(d) for d in saved_params]
    opt2 = cls(params2, lr=0.5)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == kw["lr"]
    for grads in later_grads:
        for p, g in zip(params2, grads):
            p.grad[...] = g
        opt2.step()
    for p, p2 in zip(params, params2):
        np.testing.assert_array_equal(p2.data, p.data)


def test_load_state_dict_rejects_mismatch():
    rng = np.random.default_rng(9)
    params = make_params(rng)
    opt = sn.Adam(params)
    set_grads(params, rng)
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError):
        sn.Adam(params[:1]).load_state_dict(saved)
    swapped = [sn.Parameter(np.zeros(13)), sn.Parameter(np.zeros((7, 5)))]
    with pytest.raises(ValueError):
        sn.Adam(swapped).load_state_dict(saved)


# --------------------------------------------------------------------------- torch (optional)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_against_torch(case):
    torch = pytest.importorskip("torch")
    cls, kw = case
    kw = dict(kw)
    if kw.pop("decay", 0.0):
        pytest.skip("decay= has no torch counterpart")
    tcls = {sn.SGD: torch.optim.SGD, sn.AdaGrad: torch.optim.Adagrad,
            sn.RMSProp: torch.optim.RMSprop, sn.Adam: torch.optim.Adam,
            sn.AdamW: torch.optim.AdamW}[cls]
    rng = np.random.default_rng(10)
    params = make_params(rng)
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    opt = cls(params, **kw)
    topt = tcls(tparams, **kw)
    for _ in range(STEPS):
        grads = set_grads(params, rng)
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
        for p, tp in zip(params, tparams):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cls", [sn.Adam, sn.AdamW, sn.RMSProp, sn.AdaGrad])
def test_eps_must_be_positive(cls):
    """eps = 0 (PyTorch takes it) makes the step of a weight whose gradient
    is 0 from the start 0 / 0 = NaN; fit then reported a divergence blaming
    the learning rate (found by a reviewer)."""
    p = [sn.Parameter(np.zeros(3))]
    with pytest.raises(ValueError, match="eps must be > 0: with eps = 0 .* 0 / 0 = NaN"):
        cls(p, eps=0.0)
    cls(p, eps=1e-30)  # any positive value


def test_a_state_of_other_parameter_groups_names_the_counts():
    """It said only 'the parameter groups do not match this optimizer' (a
    resume after freezing a layer)."""
    a, b = sn.Parameter(np.zeros(2)), sn.Parameter(np.zeros(3))
    whole = sn.SGD([a, b], lr=0.1).state_dict()
    with pytest.raises(ValueError, match=r"groups of \[2\] parameters, this optimizer \[1\]"):
        sn.SGD([a], lr=0.1).load_state_dict(whole)
