"""Shared fixtures: `backend` runs a test once per fast backend available here (numpy, numba, cupy)."""

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend as B

FAST_BACKENDS = ("numpy", "numba", "cupy")


@pytest.fixture(params=FAST_BACKENDS)
def backend(request):
    """Name of a fast backend, made live for the test (skipped where it cannot run on this machine)."""
    reason = B.unavailable_reason(request.param)
    if reason:
        pytest.skip(reason)
    with mg.use_backend(request.param):
        yield request.param


@pytest.fixture
def cuda():
    """Skips the test where the cupy backend cannot run (no CuPy or no CUDA device)."""
    reason = B.unavailable_reason("cupy")
    if reason:
        pytest.skip(reason)


@pytest.fixture
def ops(backend):
    """The live fast backend's kernel module."""
    return B.backend_module()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
