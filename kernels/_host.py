"""Array plumbing shared by the host (NumPy-array) backends: reference, numpy_ops and numba_ops."""

from __future__ import annotations

import ctypes

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


#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: With keep_freed_memory(), blocks up to this size come from the heap and the heap keeps this much free.
KEEP_FREED_BYTES = 1 << 30
#: False before a host backend is selected leaves glibc's defaults (explain's counterfactual measures that).
KEEP_FREED = True
_kept = {}


def keep_freed_memory() -> bool:
    """Make glibc keep the memory a training step frees for the next step, instead of returning it to the OS.

    By default glibc maps each block of 128 KiB or more fresh from the OS (raising that threshold as such
    blocks are freed, up to 32 MiB) and trims the heap once more than twice the threshold is free at its top,
    so a step's large arrays fault their pages in again on every step: about 1,400-1,800 minor page faults per
    step for convnet at B=64 and 1,700 for lenet5 at B=256, each a few hundred nanoseconds of kernel time and a
    page zeroed. With both thresholds at KEEP_FREED_BYTES a steady-state step is served from the blocks the
    previous one freed (tests/kernels/test_host.py counts the faults). The process then keeps its largest heap
    until it exits or calls malloc_trim (the bench's memory measurement does, and still sees each step's
    growth). The host backends call this when selected (their ``activate()``); it is set once per process.
    Returns whether glibc accepted both settings (False elsewhere, where nothing changes).
    """
    if not KEEP_FREED:
        return False
    if "ok" not in _kept:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc
            _kept["ok"] = False
        else:
            _kept["ok"] = bool(mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and bool(
                mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
    return _kept["ok"]


def keeps_freed_memory() -> bool:
    """Whether keep_freed_memory() has been applied in this process."""
    return bool(_kept.get("ok"))
