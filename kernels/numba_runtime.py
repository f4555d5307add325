"""How the Numba backend runs its kernels: threads, the tunables, and the OpenMP wait policy.

``numba_ops.py`` holds the kernels and their wrappers; this module holds everything they share about running:
``TUNING`` (every launch threshold, with the race results behind it) and ``tuned()`` to change it for a
while, the threshold tests, the block split over worker threads (``run_split``) with BLAS held to one
thread (``OneBlasThread``), ``set_threads``/``get_threads``, and ``apply_thread_policy()``.

Threads (``set_threads(n)``; the machine this was tuned on has 2 cores). GEMMs go to NumPy's BLAS (``@``
outside njit: ``np.dot`` inside njit would need SciPy). Three pools could compete for the cores, so:
* conv2d and linear split their work into one block per thread themselves (``run_split``) and call BLAS
  single-threaded from each block. OpenBLAS's own workers busy-wait for ~0.1 s after every threaded call,
  i.e. forever in a training step, and would steal a core from everything else.
* memory-bound loops (relu, pooling, optimizers, ...) use Numba's ``prange`` above a size threshold.
  Numba's OpenMP layer by default also spins after each loop; against OpenBLAS's spinning workers that
  made a 1000-element loop after a 256x256 SGEMM take 7.6 ms instead of 4 us. ``apply_thread_policy()``
  therefore asks OpenMP for a passive wait policy (``OMP_WAIT_POLICY=PASSIVE``) unless the environment
  already sets one.
Waking a sleeping thread costs 15-100 us on this VM, which is what the thresholds in TUNING pay for.

The wait policy is not set at import. libgomp reads it once, when Numba starts its OpenMP pool: at the
first compile or cache load of a parallel kernel, or the first ``numba.get_num_threads()`` /
``set_num_threads()``. ``apply_thread_policy()`` must therefore run before that; it does when the backend
is selected (``minigrad.backend.set_backend`` calls ``numba_ops.activate()``), in ``set_threads``,
``get_threads``, ``numba_ops.warmup`` and ahead of the first parallel loop or block split. It writes the
process's C environment only (``os.putenv``), never ``os.environ``: Python's view stays the user's own, so
a child started with ``env=dict(os.environ)`` gets the user's environment without minigrad's policy (one
started without ``env`` inherits the C environment, policy included). The policy holds unless another
library loaded libgomp first (PyTorch bundles one: import minigrad before torch, or time torch in another
process).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor, wait

import numba
import numpy as np
import threadpoolctl

#: Launch parameters, chosen by benchmarks/race_numba_kernels.py on this project's 2-core AVX-512 machine.
TUNING = {
    # conv2d's forward runs the direct kernel for stride-1 layers with at most this many filters (LeNet's
    # first, 6): a GEMM that few rows tall runs poorly in BLAS. From 16 filters on, im2col + GEMM won.
    "conv_direct_max_filters": 8,
    # The im2col path builds columns for this many bytes of input patches at a time and runs the GEMMs on
    # them while they are still in cache, instead of materialising the whole batch (256 KiB won or tied
    # 1 and 4 MiB at every layer and batch size).
    "conv_chunk_bytes": 1 << 18,
    # conv2d and linear split their work over the threads from this many multiply-adds on: handing a block
    # to a sleeping worker thread costs 50-150 us here, ~4M multiply-adds of single-threaded SGEMM.
    "split_min_work": 1 << 22,
    # Elementwise loops (relu, dropout, batchnorm, the optimizers) run on Numba's threads from this many
    # elements on. They are bound by memory bandwidth, which a second core raises only ~1.5x, and waking
    # a sleeping thread costs 15-100 us on this VM: serial won up to 262k elements, parallel from 1M.
    "parallel_min_elements": 1 << 20,
    # Max-pooling does more per element: parallel won from ~200k input elements (LeNet pool1 at batch 64).
    "pool_parallel_min_elements": 1 << 17,
    # linear's weight gradient for batches up to this size is a Numba sum of outer products instead of a
    # GEMM with that inner dimension (convnet's 128x9216 at batch 1: see the race).
    "linear_outer_max_batch": 1,
}


@contextlib.contextmanager
def tuned(**settings):
    """Run with TUNING temporarily changed (how the race times a variant and the tests force each path)."""
    unknown = set(settings) - set(TUNING)
    if unknown:
        raise KeyError(f"tuned: unknown TUNING keys {sorted(unknown)}")
    saved = dict(TUNING)
    TUNING.update(settings)
    try:
        yield
    finally:
        TUNING.clear()
        TUNING.update(saved)


# ----------------------------------------------------------------------------------------------------------
# the OpenMP wait policy

#: What minigrad asks of the OpenMP runtime, each variable only where the user's environment does not set it.
THREAD_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}

#: The variables apply_thread_policy() wrote into the C environment (name -> value); empty before its first
#: call, and after it for every variable the user's environment already set.
APPLIED: dict[str, str] = {}

_policy_done = False


def apply_thread_policy() -> dict:
    """Set THREAD_POLICY in this process's C environment, each variable only if ``os.environ`` lacks it.

    Written with ``os.putenv`` only, so ``os.environ`` is left exactly as the user gave it. The first call
    decides; later ones return at once (a user's later ``os.environ[...] = ...`` still wins, as it writes
    the C environment too). Effective only before Numba starts its OpenMP pool (see the module docstring).
    Returns a copy of APPLIED.
    """
    global _policy_done
    if not _policy_done:
        for name, value in THREAD_POLICY.items():
            if name not in os.environ:
                os.putenv(name, value)
                APPLIED[name] = value
        _policy_done = True
    return dict(APPLIED)


# ----------------------------------------------------------------------------------------------------------
# thresholds


def parallel(size: int) -> bool:
    """Whether an elementwise loop over ``size`` elements runs on Numba's threads (TUNING)."""
    if not _policy_done:
        apply_thread_policy()  # before the kernel's first compile starts the OpenMP pool
    return size >= TUNING["parallel_min_elements"]


def pool_parallel(size: int) -> bool:
    """Whether max-pooling over an array of ``size`` elements runs on Numba's threads (TUNING)."""
    if not _policy_done:
        apply_thread_policy()
    return size >= TUNING["pool_parallel_min_elements"]


def num_threads() -> int:
    """Numba's thread count for the calling thread (``numba.get_num_threads``, which starts the OpenMP pool
    on its first call: the policy is applied before)."""
    if not _policy_done:
        apply_thread_policy()
    return numba.get_num_threads()


# ----------------------------------------------------------------------------------------------------------
# BLAS on one thread, and the block split over worker threads


_BLAS = threadpoolctl.ThreadpoolController().select(user_api="blas")
_workers = {"pool": None, "size": 0}


def _pool(size):
    """The worker threads that run all but the first block of a split (created on first use, resized when
    set_threads changes the count)."""
    if _workers["size"] != size:
        if _workers["pool"] is not None:
            _workers["pool"].shutdown()
        _workers["pool"] = ThreadPoolExecutor(max_workers=size, thread_name_prefix="minigrad-numba")
        _workers["size"] = size
    return _workers["pool"]


class OneBlasThread:
    """BLAS on one thread (the caller's) for the duration; the previous counts are restored on exit.

    The GEMMs of the Numba backend always run single-threaded: parallelism comes from run_split's blocks.
    OpenBLAS's own workers busy-wait (sched_yield) for ~0.1 s after every multi-threaded call, so in a
    training step, where a GEMM comes every few ms, they would never sleep and would take a core from
    the block threads and Numba's loops (measured: convnet at batch 64 trained 517 samples/s with BLAS
    threads left on, 798 with them held to one). Setting the count through the library's own call
    costs ~1 us, against ~7 us for threadpoolctl's context manager.
    """

    def __enter__(self):
        self.saved = [c.num_threads for c in _BLAS.lib_controllers]
        for c in _BLAS.lib_controllers:
            c.set_num_threads(1)

    def __exit__(self, *exc):
        for c, n in zip(_BLAS.lib_controllers, self.saved):
            c.set_num_threads(n)


def run_split(block, N, work):
    """Run ``block(s, e)`` over [0, N) split into one contiguous block per thread; return their results.

    A job smaller than TUNING["split_min_work"] (multiply-adds) runs as one block on this thread: handing
    a block to a sleeping worker thread costs 50-150 us on this VM. Split jobs run the first block on this
    thread and the others on the worker threads. BLAS stays on one thread throughout (OneBlasThread).
    """
    T = min(N, num_threads()) if work >= TUNING["split_min_work"] else 1
    with OneBlasThread():
        if T <= 1:
            return [block(0, N)]
        bounds = [(t * N // T, (t + 1) * N // T) for t in range(T)]
        futures = [_pool(T - 1).submit(block, s, e) for s, e in bounds[1:]]
        try:
            first = block(*bounds[0])
        finally:
            wait(futures)
    return [first] + [f.result() for f in futures]


# ----------------------------------------------------------------------------------------------------------
# the thread count


def set_threads(n: int) -> dict:
    """Run the Numba backend on ``n`` threads: Numba's parallel loops and the conv2d/linear block split use
    ``n`` (``numba.set_num_threads``: per calling thread, at most ``NUMBA_NUM_THREADS``, the pool size fixed
    at start-up), and BLAS is limited to ``n`` as well (threadpoolctl, process-wide, until changed), so
    that the other backends in the process see the same budget. The backend's own GEMMs run BLAS on one
    thread per block (see the module docstring), so nothing ever runs more than ``n`` threads.
    Applies the thread policy first (this starts Numba's pool). Returns ``get_threads()``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_threads: n must be an integer >= 1; got {n!r}")
    n = int(n)
    if n > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"set_threads: n must be at most NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS} "
                         f"(Numba's pool size, fixed at start-up); got {n}")
    apply_thread_policy()
    numba.set_num_threads(n)
    threadpoolctl.threadpool_limits(limits=n, user_api="blas")
    return get_threads()


def get_threads() -> dict:
    """{"numba": threads of Numba's parallel loops, "blas": threads of the BLAS NumPy uses (None if unknown)}."""
    blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    return {"numba": num_threads(), "blas": max(blas) if blas else None}
