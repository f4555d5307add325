"""Array plumbing shared by the host (NumPy-array) backends: reference, numpy_ops and numba_ops."""

from __future__ import annotations

import numpy as np


def asarray(a, dtype=None) -> np.ndarray:
    """A C-contiguous host array (no copy when ``a`` already is one of the right dtype; 0-d stays 0-d)."""
    a = np.asarray(a, dtype=dtype)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def to_numpy(a) -> np.ndarray:
    """The array as a NumPy array (host backends hold NumPy arrays already)."""
    return np.asarray(a)


def zeros(shape, dtype="float32") -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def synchronize() -> None:
    """Host kernels are synchronous: nothing to wait for."""


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine (the message says what is missing)."""
