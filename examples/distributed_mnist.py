"""Data-parallel training over MPI: every rank runs this same script, trains on
its share of every batch, and all end with the same model, the one a single
process would train with these batches. Rank 0 prints and saves.

    pip install "scratchnet[mpi]"
    mpiexec -n 2 python examples/distributed_mnist.py [--epochs 2] [--subset 60000]

(as root, in a container: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
before mpiexec; with more ranks than cores, mpiexec --oversubscribe)
"""
import argparse

import scratchnet as sn
from scratchnet import distributed as dist

parser = argparse.ArgumentParser(description="MNIST on several MPI ranks.")
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--subset", type=int, default=60000, help="training images used")
args = parser.parse_args()

dist.init()  # ImportError with the pip command when mpi4py is missing
(X, y), (Xt, yt) = sn.datasets.load_mnist()  # every rank loads the same data
X, y = X[:args.subset], y[:args.subset]
model = sn.Sequential(sn.Dense(784, 256), sn.ReLU(), sn.Dropout(0.2), sn.Dense(256, 10))
opt = sn.Adam(model.parameters(), lr=1e-3)
# rank 0's initial weights are sent to every rank; the seed is shared
history = model.fit(X, y, opt, epochs=args.epochs, batch_size=128, seed=0,
                    validation=(Xt, yt), distributed=True)
if dist.is_main():
    print(f"{dist.size()} ranks: test accuracy {history['val_accuracy'][-1]:.4f}")
    model.save("mnist-distributed.npz")
