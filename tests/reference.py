"""float64 NumPy references of scratchnet's layers and losses, written from
docs/formulas.md, and a central-difference numerical gradient."""
import numpy as np

import scratchnet as sn


def layer_forward(layer, x, mask=None):
    """The float64 output of one layer for input x (the layer's parameters)."""
    if isinstance(layer, sn.Dense):
        return x @ layer.weight.data.astype(np.float64) + layer.bias.data.astype(np.float64)
    if isinstance(layer, sn.ReLU):
        return np.maximum(x, 0.0)
    if isinstance(layer, sn.LeakyReLU):
        return np.where(x > 0, x, layer.negative_slope * x)
    if isinstance(layer, sn.Sigmoid):
        return 1.0 / (1.0 + np.exp(-x))
    if isinstance(layer, sn.Tanh):
        return np.tanh(x)
    if isinstance(layer, sn.Softmax):
        return softmax(x)
    if isinstance(layer, sn.Dropout):
        return x if mask is None else x * mask
    raise TypeError(layer)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_sum_exp(z):
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def cross_entropy(z, targets):
    lse = log_sum_exp(z)
    if targets.ndim == 2:
        return float((targets * (lse[:, None] - z)).sum(axis=1).mean())
    return float((lse - z[np.arange(len(z)), targets]).mean())


def mse(p, t):
    return float(((p - t) ** 2).mean())


def bce_logits(z, t):
    return float((np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).mean())


def numgrad(f, x, eps=1e-6):
    """df/dx by central differences, element by element (x is float64, changed
    and restored in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g
