"""How the Numba backend runs its kernels: threads, BLAS, the tunables, and the OpenMP wait policy.

``numba_ops.py`` holds the kernels and their wrappers; this module holds everything they share about running:
``TUNING`` (every launch threshold, with the race results behind it) and ``tuned()`` to change it for a
while, the threshold tests, the block split over Numba's threads (``blocks``, ``block_bounds``), the GEMM
called from jitted code (``gemm``, NumPy's own BLAS) with its library held to one thread (``OneBlasThread``),
``set_threads``/``get_threads``, and ``apply_thread_policy()``.

Threads (``set_threads(n)``; the machine this was tuned on has 2 cores). Everything runs on Numba's own
thread pool; no Python thread is ever started:
* conv2d and linear run their batch (or their output's rows or columns) as one contiguous block per thread, a
  ``prange`` over the blocks inside one jitted kernel, and each block calls BLAS's GEMM directly from jitted code
  (``gemm``: the Fortran ``sgemm``/``dgemm`` of the OpenBLAS that NumPy's wheels bundle, ILP64, found through
  NumPy's own extension module, whose addresses the kernels take as an argument). That BLAS library is held
  to one thread while a kernel runs (``OneBlasThread``): OpenBLAS's own workers busy-wait for ~0.1 s after
  every threaded call, i.e. forever in a training step, and would steal a core from the blocks.
* memory-bound loops (relu, pooling, optimizers, ...) use Numba's ``prange`` above a size threshold.
  Numba's OpenMP layer by default spins after each loop; against OpenBLAS's spinning workers that made a
  1000-element loop after a 256x256 SGEMM take 7.6 ms instead of 4 us. ``apply_thread_policy()``
  therefore asks OpenMP for a passive wait policy (``OMP_WAIT_POLICY=PASSIVE``) after a short spin
  (GNU OpenMP's ``GOMP_SPINCOUNT=10000``), unless the environment already sets a wait policy.
Waking a sleeping thread costs 15-150 us on this VM, which is what the thresholds in TUNING pay for. The short
spin keeps Numba's threads awake across the Python between one kernel and the next of a step: convnet on 2
threads, samples/s against torch at B=2, 4, 8, 16: 0.95, 0.96, 1.01, 1.11x passive; 1.09, 1.08, 1.12, 1.10x
with 10,000 spins; 1.23, 1.24, 1.13, 1.18x with 100,000, which brought back the SGEMM case above (a parallel
1000-element loop right after a threaded SGEMM: median 7 us passive, 26 us at 10,000 spins, 2.9 ms at 100,000).

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
import functools
import os

import numba
import numpy as np
import threadpoolctl
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

#: Launch parameters, chosen by benchmarks/race_numba_kernels.py on this project's 2-core AVX-512 machine.
TUNING = {
    # conv2d's forward runs the direct kernel for stride-1 layers with at most this many filters (LeNet's
    # first, 6): a GEMM that few rows tall runs poorly in BLAS. From 16 filters on, im2col + GEMM won.
    "conv_direct_max_filters": 8,
    # conv2d's backward without dx (a first layer) computes dw and db by the direct weight-gradient kernel for
    # stride-1 layers with at most this many input channels: it beat im2col + GEMM on 1 channel (lenet's first
    # layer at B=256 0.66 against 1.66 ms, convnet's 2.2 against 3.8 ms) and on 6 (LeNet's second layer's
    # shape at B=64, 0.54 against 0.74 ms), and lost on 32 (convnet's second, 15.1 against 11.8 ms).
    "conv_direct_wgrad_max_channels": 16,
    # conv2d runs Winograd F(2x2, 3x3) (numba_ops._winograd) for stride-1 3x3 layers with at least this many
    # channels in and out and an even output: convnet's second layer (32 channels in, 64 out).
    "conv_winograd_min_channels": 16,
    # The im2col path builds columns for this many bytes of input patches at a time and runs the GEMMs on
    # them while they are still in cache, instead of materialising the whole batch (256 KiB won or tied
    # 1 and 4 MiB at every layer and batch size).
    "conv_chunk_bytes": 1 << 18,
    # conv2d and linear split their work over the threads from this many multiply-adds on: waking a sleeping
    # thread for a block costs 15-150 us here, ~4M multiply-adds of single-threaded SGEMM.
    "split_min_work": 1 << 22,
    # Elementwise loops (relu, dropout, batchnorm, the optimizers) run on Numba's threads from this many
    # elements on. They are bound by memory bandwidth, which a second core raises only ~1.5x, and waking
    # a sleeping thread costs 15-100 us on this VM: serial won up to 262k elements, parallel from 1M.
    "parallel_min_elements": 1 << 20,
    # Max-pooling does more per element: parallel won from ~200k input elements (LeNet pool1 at batch 64).
    "pool_parallel_min_elements": 1 << 17,
    # linear's weight gradient for batches up to this size is a Numba sum of outer products instead of a
    # GEMM with that inner dimension. Convnet's 128x9216 on 2 threads: 260 against 371 us at batch 2, 613
    # against 279 at batch 4 (GEMM: OpenBLAS scales the output first, one more pass over it).
    "linear_outer_max_batch": 2,
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

#: What minigrad asks of the OpenMP runtime, none of it where the user's environment sets a wait policy, and each
#: variable only where that environment does not set it.
THREAD_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}

#: The variables apply_thread_policy() wrote into the C environment (name -> value); empty before its first
#: call, and after it for every variable the user's environment already set.
APPLIED: dict[str, str] = {}

_policy_done = False


def apply_thread_policy() -> dict:
    """Set THREAD_POLICY in this process's C environment: nothing if ``os.environ`` sets OMP_WAIT_POLICY (the
    user chose how OpenMP waits; GNU OpenMP would let our spin count override it), else each variable that
    ``os.environ`` lacks.

    Written with ``os.putenv`` only, so ``os.environ`` is left exactly as the user gave it. The first call
    decides; later ones return at once (a user's later ``os.environ[...] = ...`` still wins, as it writes
    the C environment too). Effective only before Numba starts its OpenMP pool (see the module docstring).
    Returns a copy of APPLIED.
    """
    global _policy_done
    if not _policy_done:
        for name, value in THREAD_POLICY.items() if "OMP_WAIT_POLICY" not in os.environ else ():
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
# BLAS from inside jitted code, on one thread, and the block split over Numba's threads


_N, _T = ord("N"), ord("T")


#: The Fortran BLAS routines the kernels call, in the order of gemm_pointers(): those of NumPy's own OpenBLAS.
#: NumPy's wheels bundle it as scipy-openblas64, an ILP64 build (64-bit integers) whose every symbol carries the
#: prefix ``scipy_`` and the suffix ``64_``.
BLAS_SYMBOLS = ("scipy_sgemm_64_", "scipy_dgemm_64_", "scipy_sgemv_64_", "scipy_dgemv_64_")


def _resolve(names) -> tuple:
    """(addresses of ``names``, threadpoolctl's controllers of the library that holds them), looked up through
    NumPy's own extension module, i.e. in the BLAS NumPy loaded. Raises RuntimeError naming what is missing."""
    import ctypes

    from numpy._core import _multiarray_umath

    handle = ctypes.CDLL(_multiarray_umath.__file__)  # already loaded: dlsym searches it and the libraries it loaded
    missing = [name for name in names if not hasattr(handle, name)]
    if missing:
        raise RuntimeError(f"the Numba backend calls NumPy's bundled ILP64 OpenBLAS, but NumPy's BLAS exports none "
                           f"of {missing} (looked up through {_multiarray_umath.__file__}): install NumPy >= 2 from "
                           f"its PyPI wheel, which bundles scipy-openblas64")
    addresses = tuple(ctypes.cast(getattr(handle, name), ctypes.c_void_p).value for name in names)
    library = _file_of(ctypes, addresses[0])
    held = [c for c in threadpoolctl.ThreadpoolController().lib_controllers
            if library and os.path.realpath(c.filepath) == library]
    if not held:
        raise RuntimeError(f"threadpoolctl does not see the BLAS library holding {names[0]} ({library}), so the "
                           f"Numba backend cannot hold it to one thread: install threadpoolctl >= 3.5")
    return addresses, held


def _file_of(ctypes, address):
    """The real path of the loaded file that holds ``address`` (the dynamic linker's dladdr), or None."""

    class DlInfo(ctypes.Structure):
        _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p),
                    ("saddr", ctypes.c_void_p)]

    dladdr = ctypes.CDLL(None).dladdr
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
    info = DlInfo()
    return os.path.realpath(info.fname.decode()) if dladdr(address, ctypes.byref(info)) and info.fname else None


@functools.cache
def _numpy_blas() -> tuple:
    """_resolve(BLAS_SYMBOLS), once."""
    return _resolve(BLAS_SYMBOLS)


def gemm_pointers() -> tuple:
    """(sgemm, dgemm, sgemv, dgemv) addresses (BLAS_SYMBOLS) as integers: the kernels pass them to ``gemm`` as an
    argument (an address compiled in as a constant would not survive Numba's on-disk cache into another process)."""
    return _numpy_blas()[0]


def blas_controllers() -> list:
    """threadpoolctl's controllers of the BLAS library the kernels' GEMMs run in: NumPy's own (see _resolve)."""
    return _numpy_blas()[1]


def _fortran_call(kinds, first):
    """Code for a call of the Fortran BLAS routine at ``pointers[first]`` (float32) or ``pointers[first + 1]``
    (float64, by the last array's dtype), whose arguments are of ``kinds``: c (a character), i (a 64-bit integer:
    the library is ILP64), r (a real of the arrays' dtype), a (an array). Every scalar is stored in a stack slot
    and passed by reference (Fortran), each array by its data pointer."""

    def codegen(context, builder, signature, args):
        dtype = [t for t in signature.args if isinstance(t, types.Array)][-1].dtype
        real, i8, i64 = context.get_value_type(dtype), ir.IntType(8), ir.IntType(64)
        llvm = {"c": (i8, types.int8), "i": (i64, types.int64), "r": (real, dtype)}
        fnty = ir.FunctionType(ir.VoidType(), [(real if k == "a" else llvm[k][0]).as_pointer() for k in kinds])
        which = first if dtype == types.float32 else first + 1
        fn = builder.inttoptr(builder.extract_value(args[0], which), fnty.as_pointer())
        refs = []
        for kind, ty, value in zip(kinds, signature.args[1:], args[1:]):
            if kind == "a":
                refs.append(context.make_array(ty)(context, builder, value).data)
            else:
                slot = cgutils.alloca_once(builder, llvm[kind][0])
                builder.store(context.cast(builder, value, ty, llvm[kind][1]), slot)
                refs.append(slot)
        builder.call(fn, refs)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _gemm_call(typingctx, pointers, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Fortran ``?gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)``."""
    sig = types.void(pointers, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    return sig, _fortran_call("cciiiraiairai", 0)


@intrinsic
def _gemv_call(typingctx, pointers, trans, m, n, alpha, a, lda, x, incx, beta, y, incy):
    """Fortran ``?gemv(trans, m, n, alpha, a, lda, x, incx, beta, y, incy)``."""
    sig = types.void(pointers, trans, m, n, alpha, a, lda, x, incx, beta, y, incy)
    return sig, _fortran_call("ciiraiairai", 2)


@njit(inline="always")
def _ld(a):
    """The leading dimension of a row-major 2-D view (its row stride; any valid one for a single row)."""
    return max(1, a.strides[0] // a.itemsize if a.shape[0] > 1 else a.shape[1])


@njit(inline="always")
def _step(a):
    """The element stride of a 2-D view holding a vector (one row or one column)."""
    return max(1, a.strides[0] // a.itemsize) if a.shape[1] == 1 else max(1, a.strides[1] // a.itemsize)


@njit(inline="always")
def _gemv(pointers, a, trans_a, x, y, beta):
    """y = op(a) @ x + beta * y for a row-major matrix view a and vector views x, y (2-D, one row or column).
    Row-major a is column-major a^T, so the Fortran transpose flag is the opposite of trans_a."""
    rows, cols = a.shape
    _gemv_call(pointers, _N if trans_a else _T, cols, rows, 1.0, a, _ld(a), x, _step(x), beta, y, _step(y))


@njit(inline="always")
def gemm(pointers, a, trans_a, b, trans_b, c, beta):
    """c = op(a) @ op(b) + beta * c on row-major 2-D views (rows of any stride, unit column stride), op
    transposing when its flag is set; ``pointers`` from gemm_pointers(). Called from jitted code, on the
    calling thread, with the guard (OneBlasThread) held by the wrapper. Row-major c is column-major c^T =
    op(b)^T op(a)^T, so the Fortran routine gets the operands swapped. A product with a single column or
    row of c runs as a matrix-vector product (GEMM would pack the whole matrix first: a batch of 1 through a
    large layer)."""
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    if N == 1 and M > 1:  # c = op(a) @ (one column of op(b))
        _gemv(pointers, a, trans_a, b, c, beta)
    elif M == 1 and N > 1:  # c^T = op(b)^T @ (one row of op(a))^T
        _gemv(pointers, b, not trans_b, a, c, beta)
    else:
        _gemm_call(pointers, _T if trans_b else _N, _T if trans_a else _N, N, M, K, 1.0, b, _ld(b), a, _ld(a),
                   beta, c, _ld(c))


@njit(inline="always")
def gemm_run(pointers, a, b, c):
    """c[:, i] = a[:, i] @ b[i] for each i of b's first axis, back to back: Winograd's products of one sample's
    transformed tiles (a: (tiles, 16, C), b: (16, C, F), c: (tiles, 16, F)), each on strided rows."""
    for i in range(b.shape[0]):
        gemm(pointers, a[:, i], False, b[i], False, c[:, i], 0.0)


@njit(cache=True)
def _gemm_times(pointers, a, trans_a, b, trans_b, c, times):
    for _ in range(times):
        gemm(pointers, a, trans_a, b, trans_b, c, 0.0)


@njit(cache=True)
def _gemm_run_once(pointers, a, b, c):
    gemm_run(pointers, a, b, c)


def matmul(a, trans_a: bool, b, trans_b: bool, c, times: int = 1) -> None:
    """c = op(a) @ op(b) from Python, through the kernels' own BLAS call on the calling thread (how the
    calibration times the backend's GEMMs; hold OneBlasThread around it as the kernels do); ``times`` products
    back to back from jitted code, as an im2col chunk's loop runs its product on operands that stay hot."""
    _gemm_times(gemm_pointers(), a, trans_a, b, trans_b, c, times)


def matmul_run(a, b, c) -> None:
    """``gemm_run`` from Python (how the calibration times a run of Winograd's products)."""
    _gemm_run_once(gemm_pointers(), a, b, c)


class OneBlasThread:
    """The kernels' BLAS library on one thread (the caller's) for the duration; the previous count is
    restored on exit.

    The Numba backend's GEMMs run inside its own blocks on Numba's threads, so BLAS must not start threads
    of its own: OpenBLAS's workers would also busy-wait (sched_yield) for ~0.1 s after every
    multi-threaded call, i.e. forever in a training step, and take a core from Numba's loops (measured:
    convnet at batch 64 trained 517 samples/s with BLAS threads left on, 798 with them held to one).
    Setting the count through the library's own call costs ~1 us, against ~7 us for threadpoolctl's
    context manager.
    """

    def __enter__(self):
        self.controllers = blas_controllers()
        self.saved = [c.num_threads for c in self.controllers]
        for c in self.controllers:
            c.set_num_threads(1)

    def __exit__(self, *exc):
        for c, n in zip(self.controllers, self.saved):
            c.set_num_threads(n)


def blocks(n: int, work: int, elements: int = 0) -> int:
    """How many blocks of Numba's threads a job of ``n`` rows and ``work`` multiply-adds streaming ``elements`` is
    split into (``blocks_on``, on Numba's current thread count)."""
    return blocks_on(num_threads(), n, work, elements)


def blocks_on(threads: int, n: int, work: int, elements: int = 0) -> int:
    """The split rule on ``threads`` threads (the cost model prices other thread counts with it): one block per
    thread (at most one per row) from TUNING["split_min_work"] multiply-adds on, or when the job streams
    ``elements`` (a linear layer's weights, read or written once: a product with a thin inner dimension, bound
    by memory) from TUNING["parallel_min_elements"] on as the elementwise loops do; else a single block on the
    calling thread (waking Numba's sleeping threads costs 15-150 us on this VM)."""
    split = work >= TUNING["split_min_work"] or elements >= TUNING["parallel_min_elements"]
    return min(n, threads) if split else 1


@njit(inline="always")
def block_bounds(n, t, T):
    """Rows [s, e) of block ``t`` of ``T`` contiguous blocks over ``n`` rows."""
    return t * n // T, (t + 1) * n // T


@njit(cache=True, parallel=True)
def _empty_blocks(out, T):
    for t in prange(T):
        out[t] = t


def handoff(T: int) -> None:
    """Start ``T`` empty blocks on Numba's threads, as a split kernel does: what the cost model's ``split``
    term prices (profiling/calibration.py times it)."""
    _empty_blocks(np.empty(T, dtype=np.int64), T)


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
