"""Train an MLP on MNIST with scratchnet's Python API and save it.

    python examples/train_mnist.py
"""
import time

import scratchnet as sn

(X, y), (Xt, yt) = sn.datasets.load_mnist()
sn.manual_seed(0)
model = sn.Sequential(sn.Dense(784, 256), sn.ReLU(), sn.Dense(256, 10))
opt = sn.Adam(model.parameters(), lr=1e-3)

start = time.perf_counter()
history = model.fit(X, y, optimizer=opt, loss=sn.CrossEntropy(), epochs=10, batch_size=128,
                    validation=(Xt, yt), seed=0, verbose=1)
print(f"trained in {time.perf_counter() - start:.1f} s")
print("test:", model.evaluate(Xt, yt))
model.save("mnist.npz")
print("reloaded model agrees:", (sn.load("mnist.npz").predict(Xt) == model.predict(Xt)).all())
