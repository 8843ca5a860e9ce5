"""Train an MLP on MNIST, evaluate it, save it and plot how it went.

    python examples/train_mnist.py [--epochs 5] [--subset 60000]

Writes mnist.npz and mnist_{curves,confusion,mistakes,weights}.png (the plots
need the extra: pip install 'scratchnet[plot]').
"""
import argparse

import scratchnet as sn

parser = argparse.ArgumentParser(description="Train an MLP on MNIST and plot how it went.")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--subset", type=int, default=60000, help="training images used")
args = parser.parse_args()

(X, y), (Xt, yt) = sn.datasets.load_mnist()
sn.manual_seed(0)
model = sn.Sequential(sn.Dense(784, 256), sn.ReLU(), sn.Dense(256, 10))
history = model.fit(X[:args.subset], y[:args.subset], optimizer=sn.Adam(model.parameters()),
                    epochs=args.epochs, batch_size=128, validation_split=0.1, seed=0)
print("test:", model.evaluate(Xt, yt))
model.save("mnist.npz")
sn.plot.training_curves(history, "mnist_curves.png")
sn.plot.confusion_matrix(model, Xt, yt, path="mnist_confusion.png")
sn.plot.mistakes(model, Xt, yt, path="mnist_mistakes.png")
sn.plot.weights(model, path="mnist_weights.png")
