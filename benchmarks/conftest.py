"""Shared machinery of the pytest-benchmark suites (``benchmarks/bench_*.py``).

Every benchmark is parametrized over case (the layer or model whose shapes it uses, from its module's
``CASES``) x batch size (where a batch exists) x backend x dtype, with ids such as
``test_conv2d_forward[convnet.conv2-B64-numpy-float32]``, and sets ``group`` so that the backends of one
op, case, batch size and dtype sit in one pytest-benchmark table.

How results are checked (a fast wrong kernel must fail its benchmark)
---------------------------------------------------------------------
The naive reference (kernels/reference.py) is far too slow for a batch of 256, so each benchmark checks
the output of the timed function (``benchmark(fn)`` returns it) in two ways:

* per-sample outputs (y and dx of a layer, whose sample n depends on sample n of the inputs only) on their
  first ``CHECK_SAMPLES`` samples against the reference run on the same samples of the inputs; the inputs
  of every batch size are the leading rows of one seeded pool, so the reference runs once per layer and
  dtype and is cached;
* batch-reduced results (dw, db, dgamma, batch-norm's batch-coupled y and dx, a whole training step)
  against the NumPy backend on the full batch. NumPy is not the oracle; it is held to the reference by
  tests/kernels/test_ops.py, which is what makes it a trustworthy stand-in at full size. (So the numpy
  backend's own batch-reduced results are not compared here: that would compare them with themselves.)
  Where the reference is cheap at full size (the (N, 10) loss) it is used instead.

Tolerances are looser than tests/'s (float32 1e-4, float64 1e-9, relative to the largest magnitude)
because these shapes sum up to ~150k terms per output.

Timing
------
Before timing, the function runs once untimed, so Numba compiles and the GPU context, cuBLAS handles and
memory pools are set up outside the measurement. The timed function ends with ``backend.k.synchronize()``
so that a GPU kernel is timed to completion, not to its launch (a no-op on the host backends). With
``--benchmark-disable`` (as ``make test`` runs it) the function runs exactly once and is still checked:
every benchmark doubles as a correctness test (at batch sizes CHECK_BATCH_SIZES, see below).

``benchmark.extra_info`` carries what a reader wants beside seconds: samples per call, the analytic FLOPs
and bytes (profiling/costs.py) and, from the median, samples/s, GFLOP/s and GB/s.

MINIGRAD_BENCH_REPEAT
---------------------
This environment variable exists only to test the regression gate (tests/benchmarks/test_gate.py): set to
k > 1 it makes every timed function run its work k times per call, a real k-times slowdown that the gate
must catch. It is recorded as ``extra_info["injected_repeat"]`` so a saved run cannot pass for a normal one.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend as B

BACKENDS = ("numpy", "numba", "cupy")
BATCH_SIZES = (1, 16, 64, 256)
#: With --benchmark-disable (``make test``) batch 256 is left out: it holds three quarters of the suite's
#: arithmetic and exercises no code path that 16 and 64 do not (Numba's parallel loops and im2col chunking
#: start well below 16 samples of the conv layers), so it would slow every test run for nothing.
CHECK_BATCH_SIZES = (1, 16, 64)
DTYPES = ("float32", "float64")
#: Inputs of every batch size are the leading rows of one pool of this many samples.
POOL = max(BATCH_SIZES)
#: How many leading samples of a per-sample output are checked against the reference.
CHECK_SAMPLES = 2
TOL = {"float32": 1e-4, "float64": 1e-9}
REPEAT_ENV = "MINIGRAD_BENCH_REPEAT"


def pytest_configure(config):
    raw = os.environ.get(REPEAT_ENV, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise pytest.UsageError(f"{REPEAT_ENV} must be a positive integer; got {raw!r}")
    config.stash[_repeat_key] = int(raw)


_repeat_key = pytest.StashKey[int]()


_unavailable = functools.lru_cache(maxsize=None)(B.unavailable_reason)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """A fast backend made live for the benchmark (skipped where it cannot run on this machine)."""
    reason = _unavailable(request.param)
    if reason:
        pytest.skip(reason)
    with mg.use_backend(request.param):
        yield request.param


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc):
    """Parametrize ``case`` from the module's CASES and ``batch`` from BATCH_SIZES (CHECK_BATCH_SIZES with
    ``--benchmark-disable``), ahead of the backend and dtype fixtures, so that ids read
    ``case-B64-backend-dtype`` and one case's data stays cached while the backends run through it."""
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", list(metafunc.module.CASES))
    if "batch" in metafunc.fixturenames:
        config = metafunc.config
        disabled = config.getoption("benchmark_disable") and not config.getoption("benchmark_enable")
        metafunc.parametrize("batch", CHECK_BATCH_SIZES if disabled else BATCH_SIZES, ids=lambda b: f"B{b}")


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param


def uniform(shape, dtype: str, *key) -> np.ndarray:
    """Uniform values in [-1, 1) of ``dtype``, seeded by ``key`` (the same in every process and run).

    Uniform rather than normal: drawing the largest pools (tens of millions of values) must stay cheap,
    since ``make test`` runs every benchmark once.
    """
    rng = np.random.default_rng(list(repr((shape, dtype) + key).encode()))
    return rng.random(shape, dtype=np.dtype(dtype).type) * 2 - 1


def close(got, want, dtype: str, what: str) -> None:
    """Assert a result (any backend's array) equals ``want`` to the dtype's tolerance, naming ``what``."""
    got = np.asarray(B.k.to_numpy(got))
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    tol = TOL[dtype]
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=f"{what} ({B.get_backend()})")


def against_numpy() -> bool:
    """Whether full-batch results are to be compared with the numpy backend: not when numpy is live."""
    return B.get_backend() != "numpy"


def close_head(got, want, dtype: str, what: str) -> None:
    """Compare the leading samples (rows) of a per-sample result with ``want``, the reference on the same
    leading samples of the inputs: as many as both have (a batch of 1 has one)."""
    n = min(len(want), got.shape[0])
    close(got[:n], want[:n], dtype, what)


class Bench:
    """Times one function under pytest-benchmark and records what the JSON should say about it."""

    def __init__(self, benchmark, backend: str, dtype: str, repeat: int):
        self.benchmark, self.backend, self.dtype, self.repeat = benchmark, backend, dtype, repeat

    def __call__(self, fn, *, op: str, case: str, batch: int | None, cost, samples: int | None = None,
                 info: dict | None = None):
        """Warm ``fn`` up, time it (synchronised) and return the result of the timed function.

        op: the kernel or workload ("conv2d_backward", "train_step"); case: the layer or model it runs
        ("convnet.conv2"); batch: the batch size, None where there is none (optimizer updates);
        cost: profiling.costs.Cost of one call, or a zero-argument callable that returns it (for costs that
        are only known by running the function once, and that are needed only when timing);
        samples: samples processed per call (defaults to ``batch``); info: more facts for extra_info.
        """
        sync = B.k.synchronize
        repeat = self.repeat

        if repeat == 1:
            def timed():
                out = fn()
                sync()
                return out
        else:
            def timed():
                for _ in range(repeat):
                    out = fn()
                sync()
                return out

        size = f" B={batch}" if batch is not None else ""
        self.benchmark.group = f"{op} {case}{size} {self.dtype}"
        if self.benchmark.enabled:
            timed()  # Numba compile, GPU context and pools, first-touch of memory: never timed
        result = self.benchmark(timed)
        samples = batch if samples is None else samples
        info = {"op": op, "case": case, "backend": self.backend, "dtype": self.dtype, "batch": batch,
                "samples": samples, **(info or {})}
        if repeat > 1:
            info["injected_repeat"] = repeat
        if self.benchmark.enabled:
            c = cost() if callable(cost) else cost
            median = self.benchmark.stats.stats.median
            info.update(flops=c.flops, bytes=c.bytes, median_s=median,
                        gflop_per_s=c.flops / median / 1e9, gb_per_s=c.bytes / median / 1e9)
            if samples:
                info["samples_per_s"] = samples / median
        self.benchmark.extra_info.update(info)
        return result


@pytest.fixture
def bench(request, backend, dtype, benchmark):
    """``bench(fn, op=..., case=..., batch=..., cost=...)`` times ``fn`` on the live backend."""
    return Bench(benchmark, backend, dtype, request.config.stash[_repeat_key])


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what pytest-benchmark leaves out and a timing depends on: thread pools, usable cores, GPU."""
    from threadpoolctl import threadpool_info

    info = {"usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "blas": [{k: p.get(k) for k in ("internal_api", "version", "num_threads")}
                     for p in threadpool_info() if p.get("user_api") == "blas"],
            "numpy": np.__version__}
    if not _unavailable("numba"):
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    if not _unavailable("cupy"):
        import cupy

        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    machine_info["minigrad"] = info
