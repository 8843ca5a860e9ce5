"""A small convolutional network on Fashion-MNIST, with its plots: the training
curves, the confusion matrix (T-shirt/top ... Ankle boot), the most confident
mistakes, the first convolution's filters and one image's feature maps.

    python examples/fashion_cnn.py [--epochs 3] [--subset 20000]

Needs the Fashion-MNIST files (found or downloaded: see the README's Data) and,
for the plots, pip install 'scratchnet[plot]'. Writes fashion_*.png.
"""
import argparse

import scratchnet as sn

parser = argparse.ArgumentParser(description="A small CNN on Fashion-MNIST, with plots.")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--subset", type=int, default=20000, help="training images used")
parser.add_argument("--test", type=int, default=10000, help="test images used")
args = parser.parse_args()

(X, y), (Xt, yt) = sn.datasets.load_fashion_mnist(flatten=False)  # images (N, 1, 28, 28)
X, y, Xt, yt = X[:args.subset], y[:args.subset], Xt[:args.test], yt[:args.test]
sn.manual_seed(0)
model = sn.Sequential(
    sn.Conv2D(1, 8, 5), sn.MaxPool2D(2), sn.BatchNorm2d(8), sn.ReLU(),    # 8 x 12 x 12
    sn.Conv2D(8, 16, 5), sn.MaxPool2D(2), sn.ReLU(),                      # 16 x 4 x 4
    sn.Flatten(), sn.Dense(16 * 4 * 4, 64), sn.ReLU(), sn.Dense(64, 10))
model.metadata["dataset"] = "fashion-mnist"  # the plots name the classes from it
model.summary(in_shape=(1, 28, 28))
history = model.fit(X, y, optimizer=sn.Adam(model.parameters(), lr=2e-3), epochs=args.epochs,
                    batch_size=64, validation=(Xt, yt), seed=0)
print(f"test accuracy {100 * model.evaluate(Xt, yt)['accuracy']:.2f}%")

sn.plot.training_curves(history, "fashion_curves.png", val_label="test")
sn.plot.confusion_matrix(model, Xt, yt, path="fashion_confusion.png")
sn.plot.mistakes(model, Xt, yt, path="fashion_mistakes.png")
sn.plot.weights(model, path="fashion_filters.png")
sn.plot.activations(model, Xt[0], path="fashion_activations.png")
