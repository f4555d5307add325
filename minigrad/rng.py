"""The global random stream: ``manual_seed(n)`` makes initialisation, dropout and shuffling reproducible."""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed minigrad's global generator (weights init, dropout masks, DataLoader shuffling)."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int; got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))


def generator() -> np.random.Generator:
    """The global generator (host side; arrays drawn from it are moved to the backend)."""
    return _generator


def next_seed() -> int:
    """A fresh 63-bit seed drawn from the global generator (for kernels that make their own randomness)."""
    return int(_generator.integers(0, 2**63 - 1))
