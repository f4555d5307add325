"""minigrad/machine.py: the thread limit, whichever of it and the numba backend comes first."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("numba")

# A child process (its thread pools are its own): set_threads before the numba backend is loaded, then after.
_LIMIT_FIRST = """
from minigrad import backend, machine
machine.set_threads(1)
backend.set_backend("numba")
from minigrad.kernels import numba_runtime
print(numba_runtime.get_threads()["numba"])
machine.set_threads(2)
print(numba_runtime.get_threads()["numba"])
"""


def test_a_thread_limit_set_before_the_numba_backend_loads_holds_for_it():
    proc = subprocess.run([sys.executable, "-c", _LIMIT_FIRST], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    first, then = proc.stdout.split()
    assert first == "1"
    import numba

    assert then == str(min(2, numba.config.NUMBA_NUM_THREADS))
