"""The training loop underneath fit(), written out: forward, loss, backward
(which sets every parameter's .grad), optimizer step.

    python examples/custom_loop.py [--epochs 3] [--subset 60000]
"""
import argparse

import numpy as np

import scratchnet as sn

parser = argparse.ArgumentParser(description="A training loop written out.")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--subset", type=int, default=60000, help="training images used")
args = parser.parse_args()

(X, y), (Xt, yt) = sn.datasets.load_mnist()
X, y = X[:args.subset], y[:args.subset]
model = sn.Sequential(sn.Dense(784, 128, seed=0), sn.ReLU(), sn.Dense(128, 10, seed=1))
loss_fn = sn.CrossEntropy()
opt = sn.SGD(model.parameters(), lr=0.1, momentum=0.9, decay=1e-4)
rng = np.random.default_rng(0)

for epoch in range(args.epochs):
    order = rng.permutation(len(X))
    for start in range(0, len(X), 128):
        idx = order[start:start + 128]
        logits = model.forward(X[idx], training=True)
        loss = loss_fn.forward(logits, y[idx])
        model.backward(loss_fn.backward())
        opt.step()
    print(f"epoch {epoch + 1}: last batch loss {loss:.4f}, lr now {opt.current_lr():.4f}, "
          f"test accuracy {model.evaluate(Xt, yt)['accuracy']:.4f}")
