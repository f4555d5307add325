"""CuPy backend: GEMMs through cuBLAS (``gemm``), every other kernel hand-written in ``cuda/*.cu``.

Same names, shapes and caches' meaning as ``numpy_ops.py``; arrays are CuPy arrays on the current device.
Each ``cuda/<layer>.cu`` file is compiled once by NVRTC through ``cupy.RawModule`` on first use; its
kernels are extern "C" (``<kernel>_f32`` / ``<kernel>_f64``, and ``..._i32`` with 32-bit index arithmetic,
chosen by ``_launch`` whenever the sizes allow) and run grid-stride loops whose launch geometry is chosen in
one place, ``LAUNCH``.

Importing this module never needs CuPy: ``check_available()`` (called by ``minigrad.backend.load_module``)
says what is missing on a machine without a usable GPU. The wrappers reach CuPy only through
``_runtime()``; tests/kernels/test_cuda_host.py swaps it for NumPy plus the same ``.cu`` kernels compiled
by g++ under a host shim, which runs these exact wrappers and kernels on the CPU.

``StepGraph`` records a whole training step as a CUDA graph and replays it (one launch for the step's
hundred-odd kernels, no Python per kernel); ``minigrad.graphs`` decides when the training loop uses it.

GPU measurement helpers (not part of the kernel contract): ``memory_info()`` / ``reset_peak()`` read the
CuPy memory pool, ``time_gpu(fn, repeats)`` times with CUDA events.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import gc
import importlib
import os
import pathlib
import sys
import types
import weakref
from typing import Callable

import numpy as np

from ._host import BackendUnavailable

from . import _checks, _fused

#: Where this backend's arrays live (minigrad.backend.device): CuPy arrays are on the GPU.
DEVICE = "cuda"

#: The kernel sources (installed as package data next to this module).
CUDA_DIR = pathlib.Path(__file__).with_name("cuda")

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_MASK64 = (1 << 64) - 1

# CUDA runtime error codes that name what is missing (cudaError_t).
_CUDA_ERROR_INSUFFICIENT_DRIVER = 35
_CUDA_ERROR_NO_DEVICE = 100
_NO_DEVICE = "cupy is installed but there is no CUDA device"


# ----------------------------------------------------------------------------------------------------------
# availability and runtime


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def _driver_problem(runtime, exc) -> str:
    """Turn the error of cudaGetDeviceCount into what is missing: a driver, a newer driver, or a device."""
    status = getattr(exc, "status", None)
    if status == _CUDA_ERROR_NO_DEVICE:
        return _NO_DEVICE
    if status == _CUDA_ERROR_INSUFFICIENT_DRIVER:
        try:
            driver, needed = runtime.driverGetVersion(), runtime.runtimeGetVersion()
        except Exception:  # the versions only refine the message
            return f"the NVIDIA driver is missing or too old for this cupy build ({exc})"
        if driver == 0:
            return "cupy is installed but no NVIDIA driver was found (libcuda is missing)"
        return (f"the NVIDIA driver is too old: it supports CUDA {_cuda_version(driver)}, cupy was built for "
                f"CUDA {_cuda_version(needed)}")
    return f"CUDA could not be initialised ({exc})"


def check_available() -> None:
    """Raise BackendUnavailable naming what is missing unless CuPy imports and sees a CUDA device.

    Checks device presence (cudaGetDeviceCount), not merely that ``import cupy`` works: CuPy installs and
    imports fine on a machine without a GPU or driver, and fails only at the first device call.
    """
    prefix = "backend 'cupy' is not available: "
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        if exc.name == "cupy":
            raise BackendUnavailable(prefix + "cupy is not installed (pip install 'minigrad[gpu]' installs "
                                     "cupy-cuda12x)") from exc
        raise BackendUnavailable(prefix + f"cupy is installed but failed to import ({exc})") from exc
    except Exception as exc:  # a broken install (e.g. two cupy wheels at once) raises other errors too
        raise BackendUnavailable(prefix + f"cupy is installed but failed to import ({exc})") from exc
    runtime = cupy.cuda.runtime
    try:
        count = runtime.getDeviceCount()
    except runtime.CUDARuntimeError as exc:
        raise BackendUnavailable(prefix + _driver_problem(runtime, exc)) from exc
    if count == 0:
        raise BackendUnavailable(prefix + _NO_DEVICE)


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """Launch geometry of every kernel: ``block`` threads per block, at most ``max_grid`` blocks.

    256 threads (8 warps) keeps a streaming multiprocessor busy without shared memory to budget for. The
    grid covers the work one element per thread up to ``max_grid`` blocks (about a million threads, several
    times what an H100 holds resident); beyond that each thread's grid-stride loop takes more elements
    instead of the launch queueing blocks that could not be resident anyway.
    """

    block: int = 256
    max_grid: int = 4096
    #: Per-channel reductions (cuda/reduce.cu): one pass while each thread sums at most this many rows ...
    reduce_single_pass_rows: int = 128
    #: ... else the rows are split into chunks of about this many rows per thread, over at most
    #: ``reduce_blocks`` blocks, and a second pass adds the chunks' partial sums. Sized to fill an H100
    #: (132 SMs) a few blocks deep; first guesses, to be tuned on the device.
    reduce_rows_per_thread: int = 32
    reduce_blocks: int = 512

    def grid(self, work: int) -> int:
        return max(1, min(self.max_grid, -(-work // self.block)))

    def reduce_rows(self, A: int, L: int) -> int:
        """Rows per chunk for column_sums over an (A, L) matrix: A itself for one pass."""
        lanes = min(L, 32, self.block)
        row_lanes = self.block // lanes
        if A <= row_lanes * self.reduce_single_pass_rows:
            return max(A, 1)
        groups = -(-L // lanes)
        chunks = min(-(-A // (row_lanes * self.reduce_rows_per_thread)), max(1, self.reduce_blocks // groups))
        return -(-A // chunks)


#: The one place launch parameters are chosen.
LAUNCH = LaunchConfig()

#: Whether conv2d's GEMMs may round fp32 inputs to TF32 on tensor cores (fp32 accumulation): PyTorch's default
#: for cuDNN convolutions (``torch.backends.cudnn.allow_tf32``), off here unless MINIGRAD_CUPY_TF32=1 is set
#: when this module is imported, or the attribute is set before a training loop records its step graph.
#: Linear layers stay IEEE fp32, as PyTorch's ``torch.backends.cuda.matmul.allow_tf32`` default. The bias
#: rides conv2d's GEMMs, so under TF32 it and its gradient's terms are rounded like the weights.
ALLOW_TF32 = os.environ.get("MINIGRAD_CUPY_TF32", "0") == "1"


@dataclasses.dataclass(frozen=True)
class _Runtime:
    """What the wrappers need from the device: an array module, kernel lookup and a device barrier.

    ``kernel(file_stem, name)`` returns a callable ``f(grid, block, args)`` with CuPy's RawKernel calling
    convention: args are arrays (passed as pointers), None (a null pointer) or NumPy scalars (passed by
    value with their exact C type, so each must match the kernel's parameter type).
    """

    xp: types.ModuleType
    kernel: Callable[[str, str], Callable]
    synchronize: Callable[[], None]
    #: ``matmul(a, b)``: the 2-D product as a new C-contiguous array, each operand C- or F-contiguous.
    matmul: Callable
    #: Whether the current stream is being captured into a CUDA graph (nothing may wait for the device then).
    capturing: Callable[[], bool]


#: cuBLAS's workspace (its recommendation for Hopper), allocated once: with a fixed workspace a cuBLAS call
#: allocates nothing, which is what lets a CUDA graph capture it.
CUBLAS_WORKSPACE_BYTES = 32 << 20


class CublasGemm:
    """GEMMs through cuBLAS's C API (ctypes), on CuPy's handle and CuPy's current stream.

    CuPy refuses every cuBLAS call while a stream is being captured into a CUDA graph (its wrapper will not
    point the handle at a capturing stream, because of the workspace cuBLAS might allocate); cuBLAS itself
    captures fine once it has a fixed workspace. So this backend calls cuBLAS directly, in the eager step and
    in the captured one alike: one GEMM path. A single fp32/fp64 product goes through
    ``cublasSgemm_v2``/``cublasDgemm_v2``, with results identical to ``cupy.matmul`` (the same library and
    algorithm; the GPU tests compare them); a batch, or a product allowed TF32, through
    ``cublasGemmStridedBatchedEx``. The library is the one CuPy loaded, found by its path in this process's
    memory map.

    ``gemm(a, b, tf32=False)``: a (m, k) @ b (k, n), or a batch of them: (batch, m, k) @ (batch, k, n), either
    operand a strided view (each matrix row- or column-major with any leading dimension, any batch stride,
    0 included: a matrix shared by the batch), returned as a new C-contiguous (m, n) or (batch, m, n).
    ``tf32=True`` lets cuBLAS round fp32 inputs to TF32 on tensor cores (fp32 accumulation), as PyTorch's
    ``cudnn.allow_tf32`` lets cuDNN; it changes nothing for fp64.
    """

    _N, _T = 0, 1  # cublasOperation_t
    _DATA_TYPE = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}  # cudaDataType: CUDA_R_32F, CUDA_R_64F
    _COMPUTE = {(np.dtype(np.float32), False): 68, (np.dtype(np.float32), True): 77,  # cublasComputeType_t:
                (np.dtype(np.float64), False): 70, (np.dtype(np.float64), True): 70}  # 32F, 32F_FAST_TF32, 64F
    _GEMM_DEFAULT = -1  # cublasGemmAlgo_t

    def __init__(self, cupy, lib: ctypes.CDLL | None = None):
        """``lib``: the cuBLAS library to call (the tests pass a host stand-in); by default CuPy's own."""
        self.cupy = cupy
        cupy.cuda.device.get_cublas_handle()  # makes CuPy load libcublas
        if lib is None:
            with open("/proc/self/maps") as maps:
                paths = sorted({line.split()[-1] for line in maps if "/libcublas.so" in line})
            if not paths:
                raise BackendUnavailable("backend 'cupy' is not available: CuPy's cuBLAS library is not loaded "
                                         "in this process (looked for libcublas.so in /proc/self/maps)")
            lib = ctypes.CDLL(paths[0])
        self.lib = lib
        self.workspaces = {}
        scalars = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}
        self.routines = {dt: (getattr(self.lib, "cublasSgemm_v2" if dt == np.float32 else "cublasDgemm_v2"),
                              ctypes.byref(c(1.0)), ctypes.byref(c(0.0))) for dt, c in scalars.items()}
        self.batched = self.lib.cublasGemmStridedBatchedEx
        self.batched.argtypes = ([ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_int, ctypes.c_void_p]
                                 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_longlong] * 2
                                 + [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_longlong,
                                    ctypes.c_int, ctypes.c_int, ctypes.c_int])

    def _handle(self) -> ctypes.c_void_p:
        handle = self.cupy.cuda.device.get_cublas_handle()
        if handle not in self.workspaces:  # one workspace per handle (per device), set once, from the default
            # pool: a first GEMM inside a capture would take it from the graph's own pool, which frees it with
            # the graph while cuBLAS goes on using it
            with self.cupy.cuda.using_allocator(self.cupy.get_default_memory_pool().malloc):
                ws = self.cupy.empty(CUBLAS_WORKSPACE_BYTES, dtype=np.uint8)
            self._check("cublasSetWorkspace_v2", self.lib.cublasSetWorkspace_v2(
                ctypes.c_void_p(handle), ctypes.c_void_p(ws.data.ptr), ctypes.c_size_t(ws.nbytes)))
            self.workspaces[handle] = ws
        return ctypes.c_void_p(handle)

    @staticmethod
    def _check(call: str, status: int) -> None:
        if status != 0:
            raise RuntimeError(f"cupy backend: {call} failed with cuBLAS status {status}")

    def __call__(self, a, b, tf32: bool = False):
        batched = a.ndim == 3
        if (a.ndim not in (2, 3) or b.ndim != a.ndim or a.shape[-1] != b.shape[-2] or a.dtype != b.dtype
                or a.dtype not in self._DATA_TYPE or (batched and a.shape[0] != b.shape[0])):
            raise ValueError(f"cupy backend: gemm needs operands (m, k) @ (k, n), or (batch, m, k) @ (batch, k, n), "
                             f"of one float dtype; got {a.shape} {a.dtype} @ {b.shape} {b.dtype}")
        a3, b3 = (a, b) if batched else (a[None], b[None])
        (batch, m, k), n = a3.shape, b3.shape[2]
        c = self.cupy.empty((batch, m, n), dtype=a.dtype)
        if c.size == 0:
            return c if batched else c[0]
        if k == 0:
            c.fill(0)
            return c if batched else c[0]
        (op_a, lda, sa, a3), (op_b, ldb, sb, b3) = _gemm_operand(a3), _gemm_operand(b3)
        handle = self._handle()
        self._check("cublasSetStream_v2", self.lib.cublasSetStream_v2(
            handle, ctypes.c_void_p(self.cupy.cuda.get_current_stream().ptr)))
        gemm, one, zero = self.routines[np.dtype(a.dtype)]
        # Row-major C = A B is column-major C^T = B^T A^T: cuBLAS gets B first and writes C with ldc = n.
        if batch == 1 and not tf32:
            self._check(gemm.__name__, gemm(handle, op_b, op_a, n, m, k, one, ctypes.c_void_p(b3.data.ptr), ldb,
                                            ctypes.c_void_p(a3.data.ptr), lda, zero, ctypes.c_void_p(c.data.ptr), n))
        else:
            dtype = self._DATA_TYPE[np.dtype(a.dtype)]
            self._check("cublasGemmStridedBatchedEx", self.batched(
                handle, op_b, op_a, n, m, k, one, b3.data.ptr, dtype, ldb, sb, a3.data.ptr, dtype, lda, sa, zero,
                c.data.ptr, dtype, n, m * n, batch, self._COMPUTE[np.dtype(a.dtype), bool(tf32)],
                self._GEMM_DEFAULT))
        return c if batched else c[0]


def _gemm_operand(a):
    """(operation, leading dimension, batch stride, array) that cuBLAS's column-major view needs for a batch of
    row-major matrices ``a`` (batch, rows, cols): each matrix must have a unit stride along one axis and a
    non-negative batch stride; anything else is copied to C order first."""
    batch, rows, cols = a.shape
    sb, s0, s1 = (s // a.itemsize for s in a.strides)
    if sb >= 0 or batch == 1:
        sb = max(sb, 0) if batch > 1 else 0
        if (s1 == 1 or cols == 1) and (rows == 1 or s0 >= cols):
            return CublasGemm._N, max(1, cols, s0 if rows > 1 else 0), sb, a
        if (s0 == 1 or rows == 1) and (cols == 1 or s1 >= rows):
            return CublasGemm._T, max(1, rows, s1 if cols > 1 else 0), sb, a
    a = a.copy()
    return CublasGemm._N, max(1, cols), rows * cols, a


@functools.lru_cache(maxsize=None)
def _runtime() -> _Runtime:
    check_available()
    cupy = importlib.import_module("cupy")

    @functools.lru_cache(maxsize=None)
    def module(stem: str):
        # RawModule compiles with NVRTC on first get_function and caches the binary on disk (~/.cupy).
        source = (CUDA_DIR / f"{stem}.cu").read_text()
        return cupy.RawModule(code=source, options=(f"-I{CUDA_DIR}",))

    @functools.lru_cache(maxsize=None)
    def kernel(stem: str, name: str):
        return module(stem).get_function(name)

    return _Runtime(xp=cupy, kernel=kernel, synchronize=lambda: cupy.cuda.Device().synchronize(),
                    matmul=CublasGemm(cupy), capturing=lambda: cupy.cuda.get_current_stream().is_capturing())


#: The largest index a 32-bit entry point may meet (C's INT_MAX).
INT32_MAX = 2**31 - 1


def _index_suffix(work: int, args) -> str:
    """"_i32" (the 32-bit index entry point) when every index the kernel forms fits in an int, else "".

    A kernel's indices never exceed the size of an array it reads or writes, and its grid-stride loop's
    counter stops below ``work`` plus the threads of the largest grid: the check covers both, so the
    64-bit entry is kept exactly for tensors of more than about 2^31 elements.
    """
    largest = max([int(work), *(a.size for a in args if a is not None and not isinstance(a, np.generic))])
    return "_i32" if largest + LAUNCH.block * LAUNCH.max_grid <= INT32_MAX else ""


def _launch(stem: str, kernel: str, dtype, work: int, *args, blocks: int | None = None) -> None:
    """Run ``<kernel>_<f32|f64>[_i32]`` from ``cuda/<stem>.cu`` over ``work`` items (grid-stride), or over
    ``blocks`` units of one block each (block-stride, for the block reductions)."""
    fn = _runtime().kernel(stem, f"{kernel}_{_SUFFIX[np.dtype(dtype)]}{_index_suffix(work, args)}")
    grid = LAUNCH.grid(int(work)) if blocks is None else max(1, min(LAUNCH.max_grid, int(blocks)))
    fn((grid,), (LAUNCH.block,), args)


def _i(v) -> np.int64:
    """A size or flag as the kernels' idx_t (int64 by value)."""
    return np.int64(v)


def _on_device(a):
    """Check that ``a`` is a device array; return the array module.

    A host array is an error rather than a silent copy: CuPy would pass a NumPy array to a kernel by value,
    and a hidden transfer per call is exactly the cost this backend exists to avoid.
    """
    xp = _runtime().xp
    if not isinstance(a, xp.ndarray):
        raise TypeError(f"cupy backend: expected a {xp.__name__} array on the device; got "
                        f"{type(a).__module__}.{type(a).__name__} (move it there with asarray)")
    return xp


def _c(a):
    """``a`` as a C-contiguous device array (the kernels index raw memory); no copy when it already is."""
    xp = _on_device(a)
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)


def _like(a, dtype):
    """``a`` as a C-contiguous array of ``dtype`` (the upstream gradient must match the cached arrays)."""
    return _c(a.astype(dtype, copy=False))


def _check_in_place(op: str, dtype, **arrays) -> None:
    """Arrays the kernels update in place must already be contiguous device arrays of the kernel's dtype:
    a converted copy would take the update and the caller's array would silently keep its old values."""
    for name, a in arrays.items():
        if a is None:
            continue
        _on_device(a)
        if a.dtype != dtype:
            raise TypeError(f"{op}: {name} dtype {a.dtype} does not match {np.dtype(dtype)} (it is updated in "
                            f"place)")
        if not a.flags.c_contiguous:
            raise ValueError(f"{op}: {name} must be C-contiguous (it is updated in place)")


class NotCapturable(RuntimeError):
    """A kernel call that a CUDA graph cannot replay correctly was met while a step was being recorded."""


def _refuse_capture(op: str, why: str) -> None:
    if _runtime().capturing():
        raise NotCapturable(f"{op} cannot be recorded in a CUDA graph: {why}")


# ----------------------------------------------------------------------------------------------------------
# per-channel sums (bias gradients, batch norm's statistics)


def channel_sums(x, A: int, C: int, B: int, y=None, shift=None, scale: float = 1.0):
    """(C,) sums of ``x`` viewed as (A, C, B) over A and B, times ``scale``; with ``y`` and/or ``shift`` the
    summed term is ``(x - shift[c]) * (y - shift[c])`` (``y`` of x's shape, ``shift`` of shape (C,)).

    Block reductions of cuda/reduce.cu (coalesced reads, shared-memory trees, no atomics, so the result is
    deterministic): one pass when the rows are few, else partial sums over chunks of rows and a second
    pass over them; the split is ``LAUNCH.reduce_rows``.
    """
    xp = _runtime().xp
    L = C * B
    rows = LAUNCH.reduce_rows(A, L)
    chunks = -(-A // rows)
    groups = -(-L // min(L, 32, LAUNCH.block))
    one_pass = chunks == 1 and B == 1
    partial = xp.empty(C if one_pass else (chunks, L), dtype=x.dtype)
    _launch("reduce", "column_sums", x.dtype, x.size, x, y, shift, partial, _i(A), _i(C), _i(B), _i(rows),
            np.float64(scale if one_pass else 1.0), blocks=groups * chunks)
    if one_pass:
        return partial
    out = xp.empty(C, dtype=x.dtype)
    _launch("reduce", "segment_sums", x.dtype, partial.size, partial, out, _i(chunks), _i(C), _i(B),
            np.float64(scale), blocks=C)
    return out


# ----------------------------------------------------------------------------------------------------------
# conv2d: im2col kernel, batches of per-image cuBLAS GEMMs, col2im kernel


def im2col_t(x, KH, KW, stride, padding, ones_rows=0):
    """Patches of x as per-image column blocks: (N, C*KH*KW + ones_rows, OH*OW), row (c, kh, kw), column
    (i, j): each image's block of numpy_ops.im2col transposed (hence the name), the orientation in which the
    GPU's threads read and write consecutive pixels (cuda/conv2d.cu), followed by ``ones_rows`` rows of ones
    (the bias's row of the forward GEMM)."""
    N, C, H, W = x.shape
    OH = (H + 2 * padding - KH) // stride + 1
    OW = (W + 2 * padding - KW) // stride + 1
    R = C * KH * KW + ones_rows
    cols = _runtime().xp.empty((N, R, OH * OW), dtype=x.dtype)
    _launch("conv2d", "im2col", x.dtype, C * N * OH * OW, _c(x), cols, _i(N), _i(C), _i(H), _i(W), _i(KH), _i(KW),
            _i(stride), _i(padding), _i(OH), _i(OW), _i(R))
    return cols


def col2im_t(dcols, x_shape, KH, KW, stride, padding, OH, OW):
    """Adjoint of im2col_t, as a gather (one thread per input pixel, no atomics): dcols (N, R, OH*OW), R >=
    C*KH*KW (rows past C*KH*KW are not read) -> dx of x_shape."""
    N, C, H, W = x_shape
    dx = _runtime().xp.empty((N, C, H, W), dtype=dcols.dtype)
    _launch("conv2d", "col2im", dcols.dtype, dx.size, _c(dcols), dx, _i(N), _i(C), _i(H), _i(W), _i(KH),
            _i(KW), _i(stride), _i(padding), _i(OH), _i(OW), _i(dcols.shape[1]))
    return dx


def conv2d_forward(x, w, b, stride, padding):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) or None -> y: (N, F, OH, OW).

    One batch of per-image GEMMs: W (F, C*KH*KW) @ cols[n] for every image n writes y (N, F, OH*OW), NCHW as it
    stands. With a bias, W gains the bias as one more column and the columns a row of ones, so the GEMM adds
    it. cache: (columns, w, x shape, has_bias, stride, padding), as numpy_ops: the columns cost KH*KW x the
    input in device memory and spare rebuilding them for dW.
    """
    N, C, H, W, F, KH, KW, OH, OW = _checks.check_conv2d(x, w, b, stride, padding)
    xp = _runtime().xp
    cols = im2col_t(x, KH, KW, stride, padding, ones_rows=0 if b is None else 1)
    w2 = _c(w).reshape(F, -1)
    if b is not None:
        w2 = xp.concatenate((w2, _c(b).reshape(F, 1)), axis=1)
    y = _runtime().matmul(xp.broadcast_to(w2, (N, *w2.shape)), cols, tf32=ALLOW_TF32)  # (N, F, OH*OW)
    return y.reshape(N, F, OH, OW), (cols, w, x.shape, b is not None, stride, padding)


def conv2d_backward(dy, cache, need_dx=True):
    """Batches of per-image GEMMs on dy (N, F, OH*OW) as it stands: dW's per-image products dy[n] cols[n]^T,
    summed over the images by channel_sums (the per-image batch is a split of the long N*OH*OW inner dimension
    that fills the GPU, where one GEMM would give each multiprocessor a sliver of the small (F, C*KH*KW) output
    to sweep all of it with); with a bias, the ones row of the columns makes the sums' last column db.
    dcols[n] = W^T dy[n], dx = col2im_t(dcols) (None, skipped, with ``need_dx=False``). The products' sum
    costs F/(OH*OW) of the columns' memory for the per-image partials."""
    _checks.check_flag("conv2d_backward", "need_dx", need_dx)
    cols, w, x_shape, has_bias, stride, padding = cache
    F, C, KH, KW = w.shape
    N, _, H, W = x_shape
    OH = (H + 2 * padding - KH) // stride + 1
    OW = (W + 2 * padding - KW) // stride + 1
    _checks.check_grad("conv2d", dy, (N, F, OH, OW))
    xp, gemm = _runtime().xp, _runtime().matmul
    dy = _like(dy, cols.dtype).reshape(N, F, OH * OW)
    R = cols.shape[1]
    parts = gemm(dy, cols.transpose(0, 2, 1), tf32=ALLOW_TF32)  # (N, F, R)
    dwb = parts[0] if N == 1 else channel_sums(parts, N, F * R, 1).reshape(F, R)
    CKK = C * KH * KW
    dw = _c(dwb[:, :CKK]).reshape(w.shape)
    db = _c(dwb[:, CKK]) if has_bias else None
    dx = None
    if need_dx:
        wt = _c(w).reshape(F, CKK).T
        dcols = gemm(xp.broadcast_to(wt, (N, CKK, F)), dy, tf32=ALLOW_TF32)  # (N, C*KH*KW, OH*OW)
        dx = col2im_t(dcols, x_shape, KH, KW, stride, padding, OH, OW)
    return dx, dw, db


# ----------------------------------------------------------------------------------------------------------
# maxpool2d


def maxpool2d_forward(x, kernel, stride):
    """x: (N, C, H, W) -> y: (N, C, OH, OW), floor mode. cache: (argmax within window, x shape, dtype,
    kernel, stride); the argmax is int32 here (half numpy_ops' int64; a window index fits easily).

    Ties: the first maximum in row-major window order takes the gradient (as reference.py). A NaN in a
    window is its maximum (the first NaN, as numpy_ops' argmax), so NaN propagates.
    """
    N, C, H, W, OH, OW = _checks.check_maxpool2d(x, kernel, stride)
    xp = _runtime().xp
    y = xp.empty((N, C, OH, OW), dtype=x.dtype)
    arg = xp.empty((N, C, OH, OW), dtype=np.int32)
    _launch("maxpool2d", "maxpool2d_forward", x.dtype, y.size, _c(x), y, arg, _i(N), _i(C), _i(H), _i(W),
            _i(kernel), _i(stride), _i(OH), _i(OW))
    return y, (arg, x.shape, x.dtype, kernel, stride)


def maxpool2d_backward(dy, cache):
    """dx: each input pixel gathers dy of the windows whose argmax it is (overlapping windows add); where the
    windows tile the input exactly, one thread per window writes its pixels instead (maxpool2d.cu)."""
    arg, x_shape, dtype, kernel, stride = cache
    N, C, H, W = x_shape
    _checks.check_grad("maxpool2d", dy, arg.shape)
    OH, OW = arg.shape[2:]
    dx = _runtime().xp.empty(x_shape, dtype=dtype)
    if stride == kernel and H == OH * kernel and W == OW * kernel:
        _launch("maxpool2d", "maxpool2d_backward_tiled", dtype, arg.size, _like(dy, dtype), arg, dx, _i(N), _i(C),
                _i(kernel), _i(OH), _i(OW))
    else:
        _launch("maxpool2d", "maxpool2d_backward", dtype, dx.size, _like(dy, dtype), arg, dx, _i(N), _i(C), _i(H),
                _i(W), _i(kernel), _i(stride), _i(OH), _i(OW))
    return dx


# ----------------------------------------------------------------------------------------------------------
# relu + maxpool2d, fused: the relu on the pooled output (kernels/_fused.py)


def relu_maxpool2d_forward(x, kernel, stride):
    """maxpool2d(relu(x)) as relu after the pool. cache: the pool's and the relu's."""
    return _fused.relu_maxpool2d_forward(sys.modules[__name__], x, kernel, stride)


def relu_maxpool2d_backward(dy, cache):
    return _fused.relu_maxpool2d_backward(sys.modules[__name__], dy, cache)


# ----------------------------------------------------------------------------------------------------------
# linear: cuBLAS GEMMs and a bias kernel


def linear_forward(x, w, b):
    """x: (N, IN), w: (OUT, IN), b: (OUT,) or None -> y = x w^T + b: (N, OUT). cache: (x, w, has_bias)."""
    N, IN, OUT = _checks.check_linear(x, w, b)
    y = _runtime().matmul(_c(x), _c(w).T)
    if b is not None:
        _launch("linear", "add_bias_rows", y.dtype, y.size, y, _c(b), _i(N), _i(OUT))
    return y, (x, w, b is not None)


def linear_backward(dy, cache, need_dx=True):
    """dx = dy w (None with ``need_dx=False``), dw = dy^T x (cuBLAS); db = column sums of dy (channel_sums, as
    in conv2d)."""
    _checks.check_flag("linear_backward", "need_dx", need_dx)
    x, w, has_bias = cache
    N, OUT = x.shape[0], w.shape[0]
    _checks.check_grad("linear", dy, (N, OUT))
    gemm = _runtime().matmul
    dy = _like(dy, x.dtype)
    return ((gemm(dy, _c(w)) if need_dx else None), gemm(dy.T, _c(x)),
            (channel_sums(dy, N, OUT, 1) if has_bias else None))


# ----------------------------------------------------------------------------------------------------------
# relu


def relu_forward(x):
    """y = max(x, 0), NaN passing through as in numpy_ops. cache: y (y > 0 exactly where x > 0, so the
    input need not be kept)."""
    _checks.check_float("relu", "x", x)
    x = _c(x)
    y = _runtime().xp.empty_like(x)
    _launch("relu", "relu_forward", x.dtype, x.size, x, y, _i(x.size))
    return y, y


def relu_backward(dy, cache):
    y = cache
    _checks.check_grad("relu", dy, y.shape)
    dx = _runtime().xp.empty_like(y)
    _launch("relu", "relu_backward", y.dtype, y.size, _like(dy, y.dtype), y, dx, _i(y.size))
    return dx


# ----------------------------------------------------------------------------------------------------------
# log_softmax


def log_softmax_forward(x):
    """x: (N, C) -> x - logsumexp(x) row-wise, max-subtracted. cache: y."""
    _checks.check_logits("log_softmax", x)
    N, C = x.shape
    x = _c(x)
    y = _runtime().xp.empty_like(x)
    _launch("log_softmax", "log_softmax_forward", x.dtype, N, x, y, _i(N), _i(C))
    return y, y


def log_softmax_backward(dy, cache):
    y = cache
    N, C = y.shape
    _checks.check_grad("log_softmax", dy, y.shape)
    dx = _runtime().xp.empty_like(y)
    _launch("log_softmax", "log_softmax_backward", y.dtype, N, _like(dy, y.dtype), y, dx, _i(N), _i(C))
    return dx


# ----------------------------------------------------------------------------------------------------------
# softmax + cross-entropy


def softmax_xent_forward(logits, targets):
    """logits: (N, C), targets: (N,) int -> mean cross-entropy (0-d, logits' dtype). cache: (probs, targets
    as int64 on the device)."""
    _checks.check_xent(logits, targets, check_range=not _runtime().capturing())  # in a graph: NaN rows instead
    N, C = logits.shape
    xp = _runtime().xp
    logits = _c(logits)
    targets = _c(xp.asarray(targets, dtype=np.int64))
    probs = xp.empty_like(logits)
    row_loss = xp.empty(N, dtype=logits.dtype)
    _launch("softmax_xent", "softmax_xent_forward", logits.dtype, N, logits, targets, probs, row_loss, _i(N),
            _i(C))
    return xp.asarray(row_loss.mean(), dtype=logits.dtype), (probs, targets)


def softmax_xent_backward(dloss, cache):
    """dlogits = dloss * (probs - onehot) / N; dloss stays on the device (no host round trip)."""
    probs, targets = cache
    N, C = probs.shape
    xp = _runtime().xp
    dloss = xp.asarray(dloss, dtype=probs.dtype)
    if dloss.size != 1:
        raise ValueError(f"cross_entropy: dloss must be a scalar; got shape {tuple(dloss.shape)}")
    dlogits = xp.empty_like(probs)
    _launch("softmax_xent", "softmax_xent_backward", probs.dtype, N * C, _c(dloss), probs, targets, dlogits,
            _i(N), _i(C))
    return dlogits


# ----------------------------------------------------------------------------------------------------------
# dropout


def dropout_forward(x, p, seed):
    """y = x * mask, mask = (u >= p) / (1 - p), u from the counter-based stream ``seed`` (the same stream
    as reference.uniform_from_seed, so the mask is bit-identical to every other backend's). cache: mask."""
    _checks.check_dropout(x, p)
    _refuse_capture("dropout_forward", "its mask's seed is drawn on the host at every call, so every replay of "
                    "the graph would reuse the one mask drawn while it was recorded")
    x = _c(x)
    xp = _runtime().xp
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    y, mask = xp.empty_like(x), xp.empty_like(x)
    _launch("dropout", "dropout_forward", x.dtype, x.size, x, y, mask, np.uint64(int(seed) & _MASK64),
            np.float64(p), x.dtype.type(scale), _i(x.size))
    return y, mask


def dropout_backward(dy, cache):
    mask = cache
    _checks.check_grad("dropout", dy, mask.shape)
    dx = _runtime().xp.empty_like(mask)
    _launch("dropout", "dropout_backward", mask.dtype, mask.size, _like(dy, mask.dtype), mask, dx, _i(mask.size))
    return dx


# ----------------------------------------------------------------------------------------------------------
# batchnorm2d


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """x: (N, C, H, W) -> gamma * xhat + beta. Running stats updated in place when training (unbiased var);
    they must be contiguous and of x's dtype (the kernel writes them). The batch mean and (biased, two-pass)
    variance are channel_sums over N, H, W. cache: (xhat, gamma, inv_std, training)."""
    C = _checks.check_batchnorm2d(x, gamma, beta, running_mean, running_var)
    _check_in_place("batchnorm2d", x.dtype, running_mean=running_mean, running_var=running_var)
    N, _, H, W = x.shape
    xp = _runtime().xp
    x, gamma, beta = _c(x), _c(gamma), _c(beta)
    m = N * H * W
    if training:
        mean = channel_sums(x, N, C, H * W, scale=1.0 / m)
        var = channel_sums(x, N, C, H * W, y=x, shift=mean, scale=1.0 / m)
    else:
        mean, var = xp.empty(C, dtype=x.dtype), None
    inv_std = xp.empty(C, dtype=x.dtype)
    _launch("batchnorm2d", "batchnorm2d_stats", x.dtype, C, var, running_mean, running_var, mean, inv_std, _i(C),
            _i(m), np.float64(momentum), np.float64(eps))
    xhat, y = xp.empty_like(x), xp.empty_like(x)
    _launch("batchnorm2d", "batchnorm2d_normalize", x.dtype, x.size, x, mean, inv_std, gamma, beta, xhat, y,
            _i(N), _i(C), _i(H * W))
    return y, (xhat, gamma, inv_std, training)


def batchnorm2d_backward(dy, cache):
    """dbeta = sum(dy), dgamma = sum(dy * xhat) per channel (channel_sums), then dx one thread per element."""
    xhat, gamma, inv_std, training = cache
    N, C, H, W = xhat.shape
    _checks.check_grad("batchnorm2d", dy, xhat.shape)
    xp = _runtime().xp
    dy = _like(dy, xhat.dtype)
    dbeta = channel_sums(dy, N, C, H * W)
    dgamma = channel_sums(dy, N, C, H * W, y=xhat)
    dx = xp.empty_like(xhat)
    _launch("batchnorm2d", "batchnorm2d_input_grad", xhat.dtype, dx.size, dy, xhat, gamma, inv_std, dgamma,
            dbeta, dx, _i(N), _i(C), _i(H * W), _i(bool(training)))
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------------------------------------
# optimizers (in place, one fused pass per parameter)


def sgd_update(p, g, buf, lr, momentum, nesterov, weight_decay):
    """PyTorch's SGD (see reference.sgd_update). p and buf are updated in place; g is left as it was."""
    _checks.check_update("sgd_update", p, g, buf=buf)
    if momentum and buf is None:
        raise ValueError("sgd_update: buf is required when momentum != 0")
    _check_in_place("sgd_update", p.dtype, p=p, buf=buf)
    t = p.dtype.type
    _launch("optim", "sgd_update", p.dtype, p.size, p, _c(g), buf if momentum else None, t(lr), t(momentum),
            _i(bool(nesterov)), t(weight_decay), _i(p.size))


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """PyTorch's Adam with bias correction (see reference.adam_update). p, m, v updated in place."""
    _checks.check_update("adam_update", p, g, m=m, v=v)
    _refuse_capture("adam_update", "its bias correction is computed on the host from the step count, so every "
                    "replay of the graph would reuse the step it was recorded at")
    _check_in_place("adam_update", p.dtype, p=p, m=m, v=v)
    t = p.dtype.type
    bc1, bc2 = 1 - beta1**step, 1 - beta2**step
    _launch("optim", "adam_update", p.dtype, p.size, p, _c(g), m, v, t(lr / bc1), t(beta1), t(beta2), t(eps),
            t(weight_decay), t(bc2), _i(p.size))


# ----------------------------------------------------------------------------------------------------------
# array plumbing


def asarray(a, dtype=None):
    """A C-contiguous device array (no copy when ``a`` already is one of the right dtype; 0-d stays 0-d)."""
    a = _runtime().xp.asarray(a, dtype=dtype)
    return _c(a)


def to_numpy(a) -> np.ndarray:
    """The array as a host NumPy array (a device-to-host copy, which waits for the work producing it)."""
    return a.get() if hasattr(a, "__cuda_array_interface__") else np.asarray(a)


def zeros(shape, dtype="float32"):
    return _runtime().xp.zeros(shape, dtype=dtype)


def synchronize() -> None:
    """Wait for all work queued on the device: kernel launches return at once, so a host clock read
    without this measures only the launch."""
    _runtime().synchronize()


# ----------------------------------------------------------------------------------------------------------
# CUDA graphs: a whole training step recorded once, replayed per batch


#: The StepGraphs alive now: their memory pools count in memory_info().
_GRAPHS: weakref.WeakSet = weakref.WeakSet()


class StepGraph:
    """``fn``'s device work recorded once as a CUDA graph, then replayed: one launch per step.

    ``fn(*inputs)`` is called once, while the private stream of this graph is being captured: its kernels
    and cuBLAS calls are recorded, not run, and ``outputs`` (what ``fn`` returned) are arrays the replays
    write. ``inputs`` are copied into arrays of this graph (the recorded kernels read those addresses), and
    ``replay(*arrays)`` copies each new batch into them before launching the graph.

    What makes a replay equal to running ``fn`` again (the GPU tests compare them bit for bit):
    - every array ``fn`` allocates comes from a memory pool of this graph alone, so the addresses baked into
      the graph are never handed to anything else, and the arrays ``fn`` freed are reused only by itself;
    - the arrays ``fn`` updates in place (parameters, momentum buffers, running statistics) keep their
      addresses, and the scalars it passes to kernels (learning rate, momentum) are recorded as they were:
      the caller records a new graph when they change (``minigrad.graphs``);
    - the wrappers do no host read while recording (``_runtime().capturing()``): the targets' range is left
      to the loss kernel, which makes a bad row's loss NaN, and kernels whose arguments come from host state
      that changes per call (dropout's seed, Adam's step) refuse to be recorded (``NotCapturable``).
    Replays run on the graph's stream, ordered after the work queued on the current stream before them, and
    the current stream waits for them (events), so eager work before and after sees the step in order.
    """

    def __init__(self, fn: Callable, *inputs):
        cupy = _runtime().xp
        self.inputs = [_on_device(a).empty_like(a) for a in inputs]
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._pool = cupy.cuda.MemoryPool()
        self._before, self._after = cupy.cuda.Event(disable_timing=True), cupy.cuda.Event(disable_timing=True)
        _GRAPHS.add(self)
        collecting = gc.isenabled()
        gc.disable()  # a collection during the capture could free another graph's pool: a cudaFree mid-capture
        try:
            with cupy.cuda.using_allocator(self._pool.malloc), self._stream:
                self._stream.begin_capture()
                try:
                    self.outputs = fn(*self.inputs)
                except BaseException:
                    try:
                        self._stream.end_capture()
                    except Exception:  # the capture is broken by what fn raised; that error is the one to report
                        pass
                    raise
                self._graph = self._stream.end_capture()
        finally:
            if collecting:
                gc.enable()
        self._graph.upload(self._stream)
        memory_info()  # the peak now includes this graph's pool (its arrays live as long as the graph)

    def replay(self, *arrays):
        """Copy ``arrays`` (the shapes and dtypes of the recorded inputs) into the graph's inputs and run it;
        returns ``outputs``."""
        cupy = _runtime().xp
        current = cupy.cuda.get_current_stream()
        for dst, src in zip(self.inputs, arrays, strict=True):
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise ValueError(f"StepGraph.replay: got an input of shape {src.shape} {src.dtype}; the graph was "
                                 f"recorded for {dst.shape} {dst.dtype}")
            cupy.copyto(dst, src)
        current.record(self._before)
        self._stream.wait_event(self._before)
        self._graph.launch(self._stream)
        self._stream.record(self._after)
        current.wait_event(self._after)
        return self.outputs


# ----------------------------------------------------------------------------------------------------------
# GPU measurement helpers (memory pool, CUDA-event timing)


_peak = {"bytes": 0}  # the pool's high-water mark since reset_peak(), updated whenever it is read


def memory_info() -> dict:
    """Device memory as CuPy's default memory pool and the pools of the live StepGraphs see it, in bytes.

    used_bytes: held by live arrays. total_bytes: held by the pool (live arrays + freed blocks it keeps
    for reuse). peak_bytes: the most the pool has held since ``reset_peak()``. The pool never returns
    memory on its own, so this is its high-water mark: the device memory a workload needed, including the
    pool's rounding (512-byte units) and blocks it could not reuse, which is what decides whether a batch
    size fits.
    """
    pools = [_runtime().xp.get_default_memory_pool(), *(g._pool for g in list(_GRAPHS))]
    used, total = sum(p.used_bytes() for p in pools), sum(p.total_bytes() for p in pools)
    _peak["bytes"] = max(_peak["bytes"], total)
    return {"used_bytes": used, "total_bytes": total, "peak_bytes": _peak["bytes"]}


def reset_peak() -> None:
    """Return the pool's cached free blocks to the device and restart the peak from what is live now.

    Call it before the workload to measure (e.g. before each batch size of a sweep); then
    ``memory_info()["peak_bytes"]`` afterwards is the most device memory the pool held while it ran,
    the arrays that were already live included.
    """
    synchronize()  # let queued work finish, so that what is measured next belongs to the work that follows
    pool = _runtime().xp.get_default_memory_pool()
    pool.free_all_blocks()
    _peak["bytes"] = pool.total_bytes()


def time_gpu(fn: Callable[[], object], repeats: int = 10, warmup: int = 1) -> np.ndarray:
    """Seconds per call of ``fn`` measured on the device with CUDA events, ``repeats`` times.

    Events are recorded on the current stream around each call and read only after the end event has
    completed, so the time is the stream's elapsed time from the first queued operation to the last, not
    the host's time to enqueue them. It includes any gaps in which the device waited for the host to launch
    the next kernel: the launch overhead that small batches pay is part of the measurement, as it should be.
    ``warmup`` untimed calls first absorb NVRTC compilation, cuBLAS handle creation and pool growth.
    """
    cupy = _runtime().xp
    for _ in range(warmup):
        fn()
    synchronize()
    out = np.empty(repeats)
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    for r in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        out[r] = cupy.cuda.get_elapsed_time(start, end) / 1e3
    return out
