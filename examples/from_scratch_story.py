"""A neural network from scratch, one step at a time, the way the write-up this
project grew from tells it: one neuron, a layer, ReLU, softmax, cross-entropy,
backpropagation, an optimizer step, and then MNIST.

Each step runs the scratchnet kernel that does it (a function of
scratchnet._core, the compiled C; see scratchnet/_core.pyi) and checks it
against a few lines of NumPy that say the same thing in plain arithmetic.

    python examples/from_scratch_story.py [--epochs 3] [--subset 60000]
"""
import argparse

import numpy as np

import scratchnet as sn
from scratchnet import _core

rng = np.random.default_rng(0)
f32 = np.float32


def check(step, ours, numpy_says, tolerance=1e-5):
    np.testing.assert_allclose(ours, numpy_says, rtol=tolerance, atol=tolerance)
    print(f"  {step}: scratchnet's kernel agrees with NumPy")


def one_neuron():
    print("1. One neuron: the inputs times their weights, summed, plus a bias")
    inputs = np.array([[1.0, 2.0, 3.0, 2.5]], f32)       # one sample, 4 features
    weights = np.array([[0.2], [0.8], [-0.5], [1.0]], f32)  # 4 inputs -> 1 output
    bias = np.array([2.0], f32)
    out = np.empty((1, 1), f32)
    _core.dense_forward(inputs, weights, bias, out)       # the C GEMM, bias in its write-back
    print(f"  output {out[0, 0]:.3f}")
    check("dot product", out[0, 0], np.dot(inputs[0], weights[:, 0]) + bias[0])


def a_layer():
    print("2. A layer: many neurons over a batch of samples, one matrix multiply")
    X = rng.standard_normal((3, 4), dtype=f32)   # 3 samples
    W = rng.standard_normal((4, 5), dtype=f32)   # 5 neurons, a column each
    b = rng.standard_normal(5, dtype=f32)
    out = np.empty((3, 5), f32)
    _core.gemm(X, W, out)                         # out = X @ W
    _core.bias_add(out, b)                        # out += b, row by row
    check("X @ W + b", out, X @ W + b)
    return X, W, b


def relu():
    print("3. ReLU: negatives become 0, the rest pass")
    z = rng.standard_normal((3, 5), dtype=f32)
    check("max(0, z)", _core.relu_forward(z, np.empty_like(z)), np.maximum(0, z))


def softmax():
    print("4. Softmax: scores become probabilities (the row maximum subtracted first)")
    z = rng.standard_normal((3, 10), dtype=f32) * 5
    p = _core.softmax_forward(z, np.empty_like(z))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    check("exp / sum of exp", p, e / e.sum(axis=1, keepdims=True))
    print(f"  each row sums to 1: {np.allclose(p.sum(axis=1), 1)}")


def cross_entropy():
    print("5. Cross-entropy: minus the log of the probability given to the right class")
    z = rng.standard_normal((4, 10), dtype=f32)
    labels = np.array([3, 0, 9, 3], np.int64)
    probs = np.empty_like(z)
    loss = _core.xent_forward(z, labels, probs)   # mean loss; writes softmax(z) to probs
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    check("mean -log p[label]", loss, -np.log(p[np.arange(4), labels]).mean())


def backpropagation():
    print("6. Backpropagation: the chain rule, from the loss back to every weight")
    X = rng.standard_normal((8, 6), dtype=f32)
    W1, b1 = rng.standard_normal((6, 5), dtype=f32), np.zeros(5, f32)
    W2, b2 = rng.standard_normal((5, 3), dtype=f32), np.zeros(3, f32)
    labels = rng.integers(0, 3, 8)
    # forward: dense - ReLU - dense - softmax cross-entropy
    z1 = _core.dense_forward(X, W1, b1, np.empty((8, 5), f32))
    h = _core.relu_forward(z1, np.empty_like(z1))
    z2 = _core.dense_forward(h, W2, b2, np.empty((8, 3), f32))
    probs = np.empty_like(z2)
    _core.xent_forward(z2, labels, probs)
    # backward, each step the C kernel that does it
    dz2 = _core.xent_backward(probs, labels, np.empty_like(z2), 1.0 / 8)  # (p - onehot) / N
    dW2 = _core.gemm(h, dz2, np.empty_like(W2), trans_a=True)            # h^T dz2
    db2 = _core.bias_grad(dz2, np.empty_like(b2))                         # sum over the batch
    dh = _core.gemm(dz2, W2, np.empty_like(h), trans_b=True)              # dz2 W2^T
    dz1 = _core.relu_backward(dh, z1, np.empty_like(z1))                  # where z1 > 0
    dW1 = _core.gemm(X, dz1, np.empty_like(W1), trans_a=True)
    # the same in NumPy
    onehot = np.eye(3, dtype=f32)[labels]
    n_dz2 = (probs - onehot) / 8
    n_dz1 = (n_dz2 @ W2.T) * (z1 > 0)
    check("dW2 = h^T dz2", dW2, h.T @ n_dz2)
    check("db2 = sum of dz2", db2, n_dz2.sum(axis=0))
    check("dW1 = X^T ((dz2 W2^T) * relu'(z1))", dW1, X.T @ n_dz1)
    # and against the slope of the loss itself, by finite differences on one weight
    def loss_at(w):
        W = W1.copy()
        W[2, 1] = w
        z = np.maximum(X.astype(np.float64) @ W + b1, 0) @ W2 + b2
        z = z - z.max(axis=1, keepdims=True)
        return (np.log(np.exp(z).sum(axis=1)) - z[np.arange(8), labels]).mean()
    eps = 1e-3
    slope = (loss_at(W1[2, 1] + eps) - loss_at(W1[2, 1] - eps)) / (2 * eps)
    check("dW1[2, 1] = the loss's slope", dW1[2, 1], slope, tolerance=1e-3)


def optimizer_step():
    print("7. An optimizer step: move each weight a little against its gradient")
    p = rng.standard_normal(10, dtype=f32)
    g = rng.standard_normal(10, dtype=f32)
    before = p.copy()
    _core.sgd_step(p, g, None, 0.1)                       # in place: p -= lr g
    check("SGD: p - lr g", p, before - f32(0.1) * g)
    p, m, v = before.copy(), np.zeros(10, f32), np.zeros(10, f32)
    _core.adam_step(p, g, m, v, 1e-3, 1)                  # Adam's first step
    m_hat, v_hat = (0.1 * g) / (1 - 0.9), (0.001 * g * g) / (1 - 0.999)
    check("Adam: p - lr m^ / (sqrt(v^) + eps)", p, before - 1e-3 * m_hat / (np.sqrt(v_hat) + 1e-8))


def mnist(epochs, subset):
    print(f"8. MNIST: all of it together, {epochs} epoch(s) over {subset} images")
    (X, y), (Xt, yt) = sn.datasets.load_mnist()
    X, y = X[:subset], y[:subset]
    sizes, batch, lr = (784, 128, 10), 64, 0.1
    Ws = [rng.standard_normal((a, b), dtype=f32) * f32(np.sqrt(2 / a))
          for a, b in zip(sizes, sizes[1:])]                      # He initialisation
    bs = [np.zeros(b, f32) for b in sizes[1:]]
    z1, h, z2 = (np.empty((batch, n), f32) for n in (128, 128, 10))
    probs, dz2, dh = np.empty_like(z2), np.empty_like(z2), np.empty_like(h)
    grads = [np.empty_like(a) for a in Ws + bs]
    for epoch in range(epochs):
        order = rng.permutation(len(X))
        total = 0.0
        for start in range(0, len(X) - batch + 1, batch):      # whole batches only
            xb, yb = X[order[start:start + batch]], y[order[start:start + batch]]
            _core.dense_forward(xb, Ws[0], bs[0], z1)
            _core.relu_forward(z1, h)
            _core.dense_forward(h, Ws[1], bs[1], z2)
            total += _core.xent_forward(z2, yb, probs) * batch
            _core.xent_backward(probs, yb, dz2, 1.0 / batch)
            _core.gemm(h, dz2, grads[1], trans_a=True)
            _core.bias_grad(dz2, grads[3])
            _core.gemm(dz2, Ws[1], dh, trans_b=True)
            _core.relu_backward(dh, z1, dh)
            _core.gemm(xb, dh, grads[0], trans_a=True)
            _core.bias_grad(dh, grads[2])
            if epoch == 0 and start == 0:  # the first batch's gradients, in NumPy
                n_dz2 = (probs - np.eye(10, dtype=f32)[yb]) / batch
                n_dz1 = (n_dz2 @ Ws[1].T) * (z1 > 0)
                check("the first batch's dW1", grads[0], xb.T @ n_dz1, tolerance=1e-4)
            for p, g in zip(Ws + bs, grads):
                _core.sgd_step(p.reshape(-1), g.reshape(-1), None, lr)
        print(f"  epoch {epoch + 1}: mean loss {total / (len(X) // batch * batch):.4f}")
    logits = _core.dense_forward(
        _core.relu_forward(_core.dense_forward(Xt, Ws[0], bs[0], np.empty((len(Xt), 128), f32)),
                           np.empty((len(Xt), 128), f32)),
        Ws[1], bs[1], np.empty((len(Xt), 10), f32))
    check("the network's outputs", logits, np.maximum(Xt @ Ws[0] + bs[0], 0) @ Ws[1] + bs[1],
          tolerance=1e-3)
    accuracy = (logits.argmax(axis=1) == yt).mean()
    print(f"  test accuracy by hand: {100 * accuracy:.2f}%")
    # the same network, the library's way: the layers hold exactly these weights
    model = sn.Sequential(sn.Dense(784, 128), sn.ReLU(), sn.Dense(128, 10))
    model.load_state_dict({"0.weight": Ws[0], "0.bias": bs[0],
                           "2.weight": Ws[1], "2.bias": bs[1]})
    same = model.evaluate(Xt, yt)["accuracy"]
    print(f"  and through sn.Sequential: {100 * same:.2f}%")
    assert abs(same - accuracy) < 1e-9
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="passes over MNIST in step 8")
    parser.add_argument("--subset", type=int, default=60000, help="training images in step 8")
    args = parser.parse_args(argv)
    one_neuron()
    a_layer()
    relu()
    softmax()
    cross_entropy()
    backpropagation()
    optimizer_step()
    return mnist(args.epochs, args.subset)


if __name__ == "__main__":
    main()
