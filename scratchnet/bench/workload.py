"""What every competitor of a table is given, so that they do the same work:
the seed, the optimizer settings, the initial weights and each epoch's order."""
import numpy as np

SEED = 0
EPOCH_IMAGES = 60_000  # an epoch of MNIST's training set
OPTIMIZER_ARGS = {"sgd": dict(lr=0.1, momentum=0.9), "adam": dict(lr=1e-3)}


def initial_weights(sizes):
    """He-initialised float32 (weight (in, out), zero bias) pairs, the same for all three."""
    rng = np.random.default_rng(SEED)
    return [((rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32),
             np.zeros(b, np.float32)) for a, b in zip(sizes, sizes[1:])]


def epoch_order(n):
    """The shuffle of one epoch: what fit(seed=SEED) draws for a network without dropout."""
    return np.random.default_rng(SEED).permutation(n)
