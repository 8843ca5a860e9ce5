"""The training loop underneath fit(), written out: forward, loss, backward
(which sets every parameter's .grad), optimizer step.

    python examples/custom_loop.py
"""
import numpy as np

import scratchnet as sn

(X, y), (Xt, yt) = sn.datasets.load_mnist()
model = sn.Sequential(sn.Dense(784, 128, seed=0), sn.ReLU(), sn.Dense(128, 10, seed=1))
loss_fn = sn.CrossEntropy()
opt = sn.SGD(model.parameters(), lr=0.1, momentum=0.9, decay=1e-4)
rng = np.random.default_rng(0)

for epoch in range(3):
    order = rng.permutation(len(X))
    for start in range(0, len(X), 128):
        idx = order[start:start + 128]
        logits = model.forward(X[idx], training=True)
        loss = loss_fn.forward(logits, y[idx])
        model.backward(loss_fn.backward())
        opt.step()
    print(f"epoch {epoch + 1}: last batch loss {loss:.4f}, lr now {opt.current_lr():.4f}, "
          f"test accuracy {model.evaluate(Xt, yt)['accuracy']:.4f}")
