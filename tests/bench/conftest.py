"""Shared helpers for the bench tests: run the CLI (as a subprocess or in-process) on tiny synthetic studies.

In-process runs change process-wide state (the live backend, BLAS/numba/torch thread counts); the
``isolated`` fixture puts it back so that other test modules see what they expect.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from minigrad import backend, data

HAS_TORCH = importlib.util.find_spec("torch") is not None
#: The smallest study worth checking: mlp on synthetic data, 64 samples per batch size, one thread.
TINY = ["--dataset", "synthetic", "--model", "mlp", "--samples", "64", "--threads", "1"]


def run_cli(*args, cwd, timeout=120):
    """``python -m minigrad.bench ARGS`` with progress bars off; the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "minigrad.bench", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "CI": "1"})


def read_jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def results(run_dir):
    return [r for r in read_jsonl(run_dir / "results.jsonl") if r["record"] == "result"]


@pytest.fixture(scope="session")
def synthetic_sets():
    return data.synthetic_mnist(n_train=600, n_test=200, seed=0)


@pytest.fixture
def isolated(monkeypatch):
    """One BLAS thread during the test; the live backend and every thread pool restored after it."""
    monkeypatch.setenv("CI", "1")
    name = backend.get_backend()
    blas = {p["user_api"]: p["num_threads"] for p in threadpool_info()}
    numba = sys.modules.get("numba")
    numba_threads = numba.get_num_threads() if numba else None
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch else None
    threadpool_limits(limits=1)  # as the CLI runs do (--threads 1): spinning BLAS threads only add noise here
    yield
    backend.set_backend(name)
    threadpool_limits(limits=blas)
    if numba_threads is not None:
        numba.set_num_threads(numba_threads)
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
