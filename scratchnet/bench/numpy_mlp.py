"""The MLP table's NumPy competitor, a reference implementation: an MLP with
ReLU hidden layers and softmax cross-entropy, backpropagation written out,
and PyTorch's SGD (momentum) and Adam update rules."""
import math

import numpy as np

from .workload import OPTIMIZER_ARGS, epoch_order


def softmax_(z):
    """Row-wise softmax of z, in place."""
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class NumpySGD:
    """torch.optim.SGD's rule with momentum: buf = momentum * buf + g; p -= lr * buf."""

    def __init__(self, params, lr, momentum):
        self.params, self.lr, self.momentum = params, lr, momentum
        self.buffers = None

    def step(self, grads):
        if self.buffers is None:
            self.buffers = [g.copy() for g in grads]
        else:
            for buf, g in zip(self.buffers, grads):
                buf *= self.momentum
                buf += g
        for p, buf in zip(self.params, self.buffers):
            p -= self.lr * buf


class NumpyAdam:
    """torch.optim.Adam's rule (bias-corrected moments, eps outside the root)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)
        root_correction = math.sqrt(1 - b2 ** self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= step_size * m / (np.sqrt(v) / root_correction + self.eps)


class NumpyMLP:
    """A plain NumPy MLP: ReLU hidden layers, softmax cross-entropy, backprop."""

    def __init__(self, weights, optimizer, batch_size):
        self.layers = [(w.copy(), b.copy()) for w, b in weights]
        params = [p for layer in self.layers for p in layer]
        if optimizer:
            self.optimizer = {"sgd": NumpySGD, "adam": NumpyAdam}[optimizer](
                params, **OPTIMIZER_ARGS[optimizer])
        self.batch_size = batch_size

    def forward(self, x):
        """The input and every layer's output (logits last)."""
        outputs = [x]
        for i, (w, b) in enumerate(self.layers):
            z = outputs[-1] @ w
            z += b
            if i < len(self.layers) - 1:
                np.maximum(z, 0, out=z)
            outputs.append(z)
        return outputs

    def train_step(self, x, labels):
        outputs = self.forward(x)
        grad = softmax_(outputs[-1])  # d(mean loss)/d(logits) = (softmax - onehot) / batch
        grad[np.arange(len(labels)), labels] -= 1
        grad /= len(labels)
        grads = []
        for i in range(len(self.layers) - 1, -1, -1):
            grads[:0] = [outputs[i].T @ grad, grad.sum(axis=0)]
            if i > 0:
                grad = grad @ self.layers[i][0].T
                grad *= outputs[i] > 0
        self.optimizer.step(grads)

    def epoch(self, X, y):
        order = epoch_order(len(X))
        for start in range(0, len(X), self.batch_size):
            idx = order[start:start + self.batch_size]
            self.train_step(X[idx], y[idx])

    def predict_proba(self, x):
        return softmax_(self.forward(x)[-1])

    def accuracy(self, X, y):
        return float((self.predict_proba(X).argmax(axis=1) == y).mean())
