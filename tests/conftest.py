"""Shared fixtures: `backend` runs a test once per fast backend available here (numpy, numba, cupy)."""

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend as B

FAST_BACKENDS = ("numpy", "numba", "cupy")


def _skip_reason(name):
    if name not in B.registered_backends():
        return f"backend {name!r} is not registered"
    try:
        B.load_module(name)
    except B.BackendUnavailable as exc:
        return str(exc)
    return None


@pytest.fixture(params=FAST_BACKENDS)
def backend(request):
    """Name of a fast backend, made live for the test (skipped where it cannot run on this machine)."""
    reason = _skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    with mg.use_backend(request.param):
        yield request.param


@pytest.fixture
def ops(backend):
    """The live fast backend's kernel module."""
    return B.backend_module()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
