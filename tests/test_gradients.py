"""Backpropagation against finite differences of a float64 reference: every
layer alone with a random upstream gradient, and whole small networks for
every layer and loss."""
import numpy as np
import pytest

import scratchnet as sn

from reference import (bce_logits, cross_entropy, layer_forward, mse, numgrad)

RTOL, ATOL = 2e-3, 2e-4  # float32 analytic gradients vs float64 numerical ones


def make(layer_cls, features):
    if layer_cls is sn.Dense:
        return sn.Dense(features, features + 1, seed=3)
    if layer_cls is sn.Dropout:
        return sn.Dropout(0.3, seed=4)
    return layer_cls()


def reference_net(model, x64, masks):
    out = x64
    for layer in model.layers:
        out = layer_forward(layer, out, masks.get(id(layer)))
    return out


def masks_of(model):
    return {id(l): l._mask.astype(np.float64) for l in model.layers
            if isinstance(l, sn.Dropout) and l._mask is not None}


@pytest.mark.parametrize("layer_cls", [sn.Dense, sn.ReLU, sn.LeakyReLU, sn.Sigmoid, sn.Tanh,
                                       sn.Softmax, sn.Dropout])
def test_layer_backward_matches_numerical_gradient(layer_cls):
    """dx (and dW, db) for dy random: the gradient of sum(layer(x) * dy)."""
    rng = np.random.default_rng(0)
    layer = make(layer_cls, 5)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    # keep ReLU-like kinks away from 0, where the derivative is undefined
    x[np.abs(x) < 0.05] = 0.3
    y = layer.forward(x, training=True)
    mask = masks_of(sn.Sequential(layer)).get(id(layer))
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy.astype(np.float32)).copy()

    x64 = x.astype(np.float64)
    objective = lambda: float((layer_forward(layer, x64, mask) * dy).sum())
    np.testing.assert_allclose(dx, numgrad(objective, x64), rtol=RTOL, atol=ATOL)
    for p in layer.parameters():
        p64 = p.data.astype(np.float64)
        saved = p.data.copy()

        def objective_p():
            p.data[...] = p64  # float32 copy of the perturbed float64 value would lose it
            return float((layer_forward_params(layer, x64, p, p64) * dy).sum())

        np.testing.assert_allclose(p.grad, numgrad(objective_p, p64), rtol=RTOL, atol=ATOL)
        p.data[...] = saved


def layer_forward_params(layer, x64, param, value64):
    """Dense forward in float64 with one parameter replaced by value64."""
    w = value64 if param is layer.weight else layer.weight.data.astype(np.float64)
    b = value64 if param is layer.bias else layer.bias.data.astype(np.float64)
    return x64 @ w + b


LOSSES = {
    "ce-labels": (sn.CrossEntropy, lambda rng, n, c: rng.integers(0, c, n), cross_entropy),
    "ce-soft": (sn.CrossEntropy, lambda rng, n, c: rng.dirichlet(np.ones(c), n), cross_entropy),
    "mse": (sn.MSE, lambda rng, n, c: rng.standard_normal((n, c)), mse),
    "bce": (sn.BinaryCrossEntropy, lambda rng, n, c: rng.uniform(0, 1, (n, c)), bce_logits),
}

NETWORKS = {
    "relu": lambda: [sn.Dense(6, 5, seed=1), sn.ReLU(), sn.Dense(5, 3, seed=2)],
    "leaky-tanh": lambda: [sn.Dense(6, 5, seed=1), sn.LeakyReLU(), sn.Dense(5, 4, seed=2),
                           sn.Tanh(), sn.Dense(4, 3, seed=5)],
    "sigmoid-dropout": lambda: [sn.Dense(6, 5, init="xavier", seed=1), sn.Sigmoid(),
                                sn.Dropout(0.25, seed=7), sn.Dense(5, 3, seed=2)],
    "softmax-hidden": lambda: [sn.Dense(6, 5, seed=1), sn.Softmax(), sn.Dense(5, 3, seed=2)],
}


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("net_name", sorted(NETWORKS))
def test_network_gradients_match_finite_differences(net_name, loss_name):
    rng = np.random.default_rng(1)
    loss_cls, make_targets, ref_loss = LOSSES[loss_name]
    model = sn.Sequential(*NETWORKS[net_name]())
    loss = loss_cls()
    x = rng.standard_normal((7, 6)).astype(np.float32)
    targets = make_targets(rng, 7, 3)

    loss.forward(model.forward(x, training=True), targets)
    masks = masks_of(model)
    model.backward(loss.backward())
    x64 = x.astype(np.float64)
    t64 = targets if targets.dtype.kind == "i" else targets.astype(np.float64)

    for p in model.parameters():
        analytic = p.grad.copy()
        p64 = p.data.astype(np.float64)
        saved = p.data.copy()
        layer = next(l for l in model.layers if any(q is p for q in l.parameters()))

        def objective():
            out = x64
            for l in model.layers:
                if l is layer:
                    out = layer_forward_params(l, out, p, p64)
                else:
                    out = layer_forward(l, out, masks.get(id(l)))
            return ref_loss(out, t64)

        np.testing.assert_allclose(analytic, numgrad(objective, p64), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{p.name} of {net_name} with {loss_name}")
        p.data[...] = saved


def test_backward_overwrites_grad_instead_of_accumulating():
    rng = np.random.default_rng(2)
    model = sn.Sequential(sn.Dense(4, 3, seed=0), sn.ReLU(), sn.Dense(3, 2, seed=1))
    loss = sn.CrossEntropy()
    x, y = rng.standard_normal((5, 4)).astype(np.float32), rng.integers(0, 2, 5)
    for _ in range(3):
        loss.forward(model.forward(x, training=True), y)
        model.backward(loss.backward())
    once = [p.grad.copy() for p in model.parameters()]
    loss.forward(model.forward(x, training=True), y)
    model.backward(loss.backward())
    for g, p in zip(once, model.parameters()):
        np.testing.assert_array_equal(g, p.grad)
    assert any(np.abs(g).sum() > 0 for g in once)


def test_random_direction_check_on_a_deeper_network():
    """kann-style: g . d against (f(p + e d) - f(p - e d)) / 2e for a random
    direction d over all parameters at once, on the library's own forward."""
    rng = np.random.default_rng(3)
    model = sn.Sequential(sn.Dense(10, 16, seed=0), sn.Tanh(), sn.Dense(16, 8, seed=1),
                          sn.Sigmoid(), sn.Dense(8, 4, seed=2))
    loss = sn.CrossEntropy()
    x, y = rng.standard_normal((9, 10)).astype(np.float32), rng.integers(0, 4, 9)
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    params = model.parameters()
    grads = [p.grad.astype(np.float64) for p in params]
    base = [p.data.astype(np.float64) for p in params]
    dirs = [rng.standard_normal(p.data.shape) for p in params]

    def f(eps):
        for p, b, d in zip(params, base, dirs):
            p.data[...] = b + eps * d
        out = model.forward(x).astype(np.float64)
        return cross_entropy(out, y)

    eps = 1e-2
    numerical = (f(eps) - f(-eps)) / (2 * eps)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, dirs))
    assert numerical == pytest.approx(analytic, rel=1e-2, abs=1e-4)
