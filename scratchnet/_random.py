"""The library's default random stream, for layers created without a seed
and fit without one. sn.manual_seed(n) makes everything that follows
reproducible: initial weights, fit's shuffle and dropout."""
import numpy as np

_default = np.random.default_rng()


def _seeded(seed):
    """np.random.default_rng(seed) for any seed NumPy takes (a whole number
    >= 0, a SeedSequence, a Generator, a list of them), refusing with the
    word seed what NumPy refused in its own words, and a float or a bool,
    which it would take (3.0 as 3, True as 1)."""
    if isinstance(seed, (bool, np.bool_, float, np.floating)):
        raise ValueError(f"seed must be None or a whole number >= 0, got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"seed must be None or a whole number >= 0 (or a NumPy seed), got "
                         f"{seed!r} ({exc})") from None


def manual_seed(seed):
    """Reseed the generator used by layers created with seed=None and by fit
    with seed=None."""
    global _default
    _default = _seeded(seed)


def generator(seed=None):
    """A generator of its own for seed (a whole number >= 0), or a child of
    the default stream."""
    if seed is not None:
        return _seeded(seed)
    return np.random.default_rng(_default.integers(2**63))
