"""The library's default random stream, for layers created without a seed
and fit without one. sn.manual_seed(n) makes everything that follows
reproducible: initial weights, fit's shuffle and dropout."""
import numpy as np

_default = np.random.default_rng()


def manual_seed(seed):
    """Reseed the generator used by layers created with seed=None and by fit
    with seed=None."""
    global _default
    _default = np.random.default_rng(seed)


def generator(seed=None):
    """A generator of its own for seed (a whole number >= 0), or a child of
    the default stream."""
    if seed is not None:
        # NumPy's own refusals ("SeedSequence expects int...") did not say
        # which argument; 3.0 and True are no seeds
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
                or seed < 0:
            raise ValueError(f"seed must be None or a whole number >= 0, got {seed!r}")
        return np.random.default_rng(int(seed))
    return np.random.default_rng(_default.integers(2**63))
