"""The CUDA kernels of kernels/cuda/ verified without a GPU (DESIGN.md, "GPU kernels without a GPU").

1. Every .cu file compiles with ``nvcc -ptx`` (skipped only where nvcc is absent) and exports its extern "C"
   kernels under their readable names.
2. Every kernel is compiled by g++ under the host shim (tests/kernels/cuda_shim.h) into a shared library
   and run over its whole grid on the CPU. cupy_ops' own wrappers drive them: ``cupy_ops._runtime`` is
   swapped for NumPy arrays + the shim (the GEMMs and the few array-library calls, i.e. the bias-gradient
   sums, the loss mean and contiguity copies, then run on NumPy; everything else is the CUDA C), and each
   result is compared with numpy_ops on the same inputs, in float32 and float64 (every kernel has both),
   under the production launch geometry with 32-bit and with 64-bit index arithmetic (every kernel has both
   entry points) and under a tiny geometry (3 threads x 2 blocks) so that every grid-stride loop takes many
   turns. Kernels that use __syncthreads run one fiber per thread (the shim's cooperative launcher).
The shim also checks every launch's arguments against the kernel's C signature (pointer element types,
scalar C types), which is exactly what CuPy's RawKernel passes without checking.

Compiled artefacts are cached in $TMPDIR/minigrad-cuda-build, keyed by a hash of all the sources and flags,
so a second run compiles nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import types

import numpy as np
import pytest

from minigrad.kernels import cupy_ops
from minigrad.kernels import numpy_ops as npo

CUDA_DIR = cupy_ops.CUDA_DIR
SHIM_DIR = pathlib.Path(__file__).parent
SHIM_HEADER = SHIM_DIR / "cuda_shim.h"
CU_FILES = sorted(CUDA_DIR.glob("*.cu"))
BUILD_DIR = pathlib.Path(tempfile.gettempdir()) / "minigrad-cuda-build"

NVCC_FLAGS = ["-ptx", "-arch=compute_80", "-std=c++17", "-Werror", "all-warnings"]
GXX_FLAGS = ["-std=c++17", "-O1", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror"]

# MG_KERNEL(name, (params written with T), (args)): the four extern "C" entries of kernels/cuda/minigrad_cuda.h
_KERNEL_DECL = re.compile(r"^MG_KERNEL\((\w+),\s*\(([^)]*)\),\s*\([^)]*\)\)", re.M)
_ENTRIES = {"_f32": "float", "_f64": "double", "_f32_i32": "float", "_f64_i32": "double"}


@functools.lru_cache(maxsize=None)
def kernel_signatures(cu: pathlib.Path) -> dict[str, list[str]]:
    """name -> parameter C types (without names) of every extern "C" entry point declared in ``cu``."""
    out = {}
    for name, params in _KERNEL_DECL.findall(cu.read_text()):
        types = [" ".join(p.split()[:-1]).replace(" *", "*") for p in params.split(",")]
        for suffix, scalar in _ENTRIES.items():
            out[name + suffix] = [re.sub(r"\bT\b", scalar, t) for t in types]
    return out


ALL_KERNELS = {name: (cu.stem, sig) for cu in CU_FILES for name, sig in kernel_signatures(cu).items()}


def test_kernel_sources_declare_every_entry_point_of_every_kernel():
    assert len(CU_FILES) >= 9 and ALL_KERNELS
    for cu in CU_FILES:  # every extern "C" kernel is declared through MG_KERNEL, which the shim can read
        assert "extern \"C\"" not in cu.read_text() and _KERNEL_DECL.search(cu.read_text()), cu.name
    bases = {n.removesuffix("_i32").rsplit("_", 1)[0] for n in ALL_KERNELS}
    assert {b + s for b in bases for s in _ENTRIES} == set(ALL_KERNELS)


# ----------------------------------------------------------------------------------------------------------
# building (cached by content hash; written atomically, so concurrent test runs can share the cache)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.read_bytes() if isinstance(p, pathlib.Path) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _build(target: pathlib.Path, command: list[str]) -> pathlib.Path:
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    proc = subprocess.run([*command, "-o", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        pytest.fail(f"{' '.join(command)} failed:\n{proc.stdout}{proc.stderr}")
    os.replace(tmp, target)
    return target


def _headers():
    return sorted(CUDA_DIR.glob("*.h"))


@functools.lru_cache(maxsize=None)
def _compiler(tool: str) -> str:
    """Path and version of ``tool``, part of every cache key (a compiler upgrade rebuilds)."""
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    return f"{shutil.which(tool)}\n{version}"


@functools.lru_cache(maxsize=None)
def ptx(stem: str) -> str:
    cu = CUDA_DIR / f"{stem}.cu"
    key = _digest(cu, *_headers(), " ".join(NVCC_FLAGS), _compiler("nvcc"))
    return _build(BUILD_DIR / f"{stem}-{key}.ptx", ["nvcc", *NVCC_FLAGS, str(cu)]).read_text()


@functools.lru_cache(maxsize=None)
def shim_library(stem: str) -> ctypes.CDLL:
    """g++-compiled library of cuda/<stem>.cu under the shim, exporting launch_<kernel> for every kernel."""
    cu = CUDA_DIR / f"{stem}.cu"
    # kernels that synchronise their block run one fiber per thread; the others, each thread in turn
    export = "SHIM_EXPORT_COOPERATIVE" if "__syncthreads" in cu.read_text() else "SHIM_EXPORT"
    unit = "".join([f'#include "{SHIM_HEADER.name}"\n', f'#include "{cu.name}"\n',
                    *(f"{export}({name})\n" for name in kernel_signatures(cu))])
    key = _digest(unit, cu, SHIM_HEADER, *_headers(), " ".join(GXX_FLAGS), _compiler("g++"))
    src = BUILD_DIR / f"{stem}-{key}.cpp"
    if not src.exists():
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        tmp = src.with_name(f".{src.name}.{os.getpid()}")
        tmp.write_text(unit)
        os.replace(tmp, src)
    so = _build(BUILD_DIR / f"lib{stem}-{key}.so",
                ["g++", *GXX_FLAGS, f"-I{SHIM_DIR}", f"-I{CUDA_DIR}", str(src)])
    return ctypes.CDLL(str(so))


# ----------------------------------------------------------------------------------------------------------
# nvcc -ptx


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: p.name)
def test_cu_file_compiles_to_ptx_with_readable_kernel_names(cu):
    text = ptx(cu.stem)
    entries = set(re.findall(r"\.entry\s+(\w+)\s*\(", text))
    assert entries == set(kernel_signatures(cu))  # extern "C": no C++ mangling, nothing else exported


# ----------------------------------------------------------------------------------------------------------
# the host shim as a cupy_ops runtime

# the kernels' C types (pointee or by-value) -> NumPy scalar types
_C_TYPES = {"float": np.float32, "double": np.float64, "idx_t": np.int64, "u64": np.uint64, "int": np.int32}
_CTYPES_SCALAR = {np.float32: ctypes.c_float, np.float64: ctypes.c_double, np.int64: ctypes.c_int64,
                  np.uint64: ctypes.c_uint64, np.int32: ctypes.c_int32}


def _parse_param(c_type: str):
    """``const float*`` -> (True, np.float32); ``idx_t`` -> (False, np.int64)."""
    base = c_type.replace("const", "").replace("*", "").strip()
    return c_type.endswith("*"), np.dtype(_C_TYPES[base]).type


class ShimKernel:
    """One kernel of a shim library, callable like a CuPy RawKernel: ``kernel(grid, block, args)``.

    Before launching it checks each argument against the kernel's C signature: a pointer parameter takes a
    C-contiguous NumPy array of exactly its element type (or None, a null pointer); a scalar parameter
    takes a NumPy scalar of exactly its C type. (CuPy would pass a mismatched scalar's bytes as they are.)
    """

    def __init__(self, stem: str, name: str, launched: set):
        self.name, self.launched = name, launched
        self.params = [_parse_param(t) for t in kernel_signatures(CUDA_DIR / f"{stem}.cu")[name]]
        argtypes = [ctypes.c_void_p if ptr else _CTYPES_SCALAR[t] for ptr, t in self.params]
        address = ctypes.c_void_p.in_dll(shim_library(stem), f"launch_{name}").value
        self.fn = ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.c_uint, *argtypes)(address)

    def __call__(self, grid, block, args):
        assert len(args) == len(self.params), f"{self.name}: {len(args)} arguments for {len(self.params)}"
        converted = []
        for k, (arg, (ptr, t)) in enumerate(zip(args, self.params)):
            where = f"{self.name} argument {k}"
            if ptr:
                if arg is None:
                    converted.append(None)
                    continue
                assert isinstance(arg, np.ndarray), f"{where}: expected an array, got {type(arg).__name__}"
                assert arg.dtype == t, f"{where}: array of {arg.dtype} for a {np.dtype(t)} pointer"
                assert arg.flags.c_contiguous, f"{where}: array is not C-contiguous"
                converted.append(arg.ctypes.data)
            else:
                assert type(arg) is t, f"{where}: {type(arg).__name__} for a {np.dtype(t)} parameter"
                converted.append(arg)
        assert len(grid) == 1 and len(block) == 1 and grid[0] >= 1 and block[0] >= 1
        self.launched.add(self.name)
        self.fn(grid[0], block[0], *converted)


def host_runtime(launched: set, capturing: bool = False) -> cupy_ops._Runtime:
    """NumPy arrays, the shim's kernels, NumPy's matmul; ``capturing`` says a CUDA graph is being recorded."""
    kernel = functools.lru_cache(maxsize=None)(lambda stem, name: ShimKernel(stem, name, launched))
    return cupy_ops._Runtime(xp=np, kernel=kernel, synchronize=lambda: None,
                             matmul=lambda a, b, tf32=False: np.matmul(a, b), capturing=lambda: capturing)


needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

LAUNCHES = {"production": cupy_ops.LaunchConfig(),
            "tiny-grid": cupy_ops.LaunchConfig(block=3, max_grid=2)}


def force_64bit_indices(monkeypatch):
    """Make every launch take the 64-bit entry points (kept for tensors of more than 2^31 elements)."""
    monkeypatch.setattr(cupy_ops, "INT32_MAX", 0)


# (launch geometry, 64-bit indices forced): production with each index width; the tiny grid with the 32-bit
# indices that small tensors get
GEOMETRIES = {"production": ("production", False), "production-64bit-indices": ("production", True),
              "tiny-grid": ("tiny-grid", False)}


@pytest.fixture(params=list(GEOMETRIES))
def cuda_ops(request, monkeypatch):
    """cupy_ops running its real wrappers and kernels on the CPU (NumPy arrays, g++-compiled kernels)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    runtime = host_runtime(set())
    monkeypatch.setattr(cupy_ops, "_runtime", lambda: runtime)
    launch, wide = GEOMETRIES[request.param]
    monkeypatch.setattr(cupy_ops, "LAUNCH", LAUNCHES[launch])
    if wide:
        force_64bit_indices(monkeypatch)
    return cupy_ops


TOL = {np.float64: 1e-10, np.float32: 1e-5}
DTYPES = [np.float32, np.float64]


def close(got, want, dtype):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    tol = TOL[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max(initial=0))))


def close_all(got, want, dtype):
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None
        else:
            close(g, w, dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


# ----------------------------------------------------------------------------------------------------------
# per-channel sums (reduce.cu: block reductions in shared memory)

# (A, C, B): a column sum of rows (B = 1) narrower and wider than a warp, batch norm's (N, C, H*W) layout
SUM_CASES = [(1, 1, 1), (7, 3, 1), (300, 6, 1), (517, 40, 1), (90, 70, 1), (5, 3, 7), (33, 4, 10), (1, 2, 5)]
# block sizes and split thresholds: production; a two-pass split at every size on an odd block; a block
# narrower than a warp (so the column groups are narrower than the rows)
SUM_LAUNCHES = {
    "production": cupy_ops.LaunchConfig(),
    "split-odd-block": cupy_ops.LaunchConfig(block=48, max_grid=5, reduce_single_pass_rows=1,
                                             reduce_rows_per_thread=1, reduce_blocks=7),
    "tiny-block": cupy_ops.LaunchConfig(block=3, max_grid=2, reduce_single_pass_rows=2, reduce_rows_per_thread=2),
}


@needs_gxx
@pytest.mark.parametrize("order", ["reverse", "forward"])
@pytest.mark.parametrize("launch", list(SUM_LAUNCHES))
@pytest.mark.parametrize("case", SUM_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_sums_equal_numpy(monkeypatch, rng, case, launch, order, dtype):
    A, C, B = case
    launched = set()
    runtime = host_runtime(launched)
    monkeypatch.setattr(cupy_ops, "_runtime", lambda: runtime)
    monkeypatch.setattr(cupy_ops, "LAUNCH", SUM_LAUNCHES[launch])
    monkeypatch.setenv("MINIGRAD_SHIM_ORDER", order)  # a missing barrier fails in one order or the other
    x = rng.standard_normal((A, C, B)).astype(dtype)
    y = rng.standard_normal((A, C, B)).astype(dtype)
    shift = rng.standard_normal(C).astype(dtype)
    s = shift[None, :, None]
    close(cupy_ops.channel_sums(x, A, C, B), x.sum(axis=(0, 2)), dtype)
    close(cupy_ops.channel_sums(x, A, C, B, y=y, scale=0.5), 0.5 * (x * y).sum(axis=(0, 2)), dtype)
    close(cupy_ops.channel_sums(x, A, C, B, y=x, shift=shift, scale=1 / 3), ((x - s) ** 2).sum(axis=(0, 2)) / 3,
          dtype)
    split = SUM_LAUNCHES[launch].reduce_rows(A, C * B) < A
    assert ("segment_sums" in {n.split("_f")[0] for n in launched}) == (split or B > 1)


@pytest.mark.parametrize("launch", ["split-odd-block", "tiny-block"])
def test_channel_sum_cases_take_both_the_one_pass_and_the_split_path(launch):
    assert {SUM_LAUNCHES[launch].reduce_rows(A, C * B) < A for A, C, B in SUM_CASES} == {True, False}


def test_reduce_rows_splits_tall_matrices_over_blocks_and_keeps_short_ones_in_one_pass():
    launch = cupy_ops.LaunchConfig()
    assert launch.reduce_rows(676, 32) == 676  # convnet conv1's bias at B=1: 8 row-lanes x 85 rows, one pass
    assert launch.reduce_rows(1024, 32) == 1024
    rows = launch.reduce_rows(1024 * 26 * 26, 32)  # ... at B=1024: 692k rows over 512 blocks
    assert -(-1024 * 26 * 26 // rows) == launch.reduce_blocks
    assert launch.reduce_rows(5_000, 6) == 5_000  # 6 columns: 42 row-lanes, <= 128 rows each
    assert launch.reduce_rows(1024, 32 * 676) == 1024  # batch norm: 676 column groups fill the GPU already


# ----------------------------------------------------------------------------------------------------------
# conv2d: im2col / col2im and the whole layer

# (N, C, H, W, F, K, stride, padding): batch 1, odd sizes, padding 1/2, stride 2/3, 1x1 kernels, non-square
CONV_CASES = [
    (1, 1, 5, 5, 1, 3, 1, 0),
    (2, 3, 7, 6, 4, 3, 2, 1),
    (3, 2, 9, 9, 5, 5, 1, 2),
    (2, 1, 8, 8, 3, 2, 2, 0),
    (1, 4, 6, 7, 2, 1, 1, 0),
    (2, 3, 5, 5, 2, 3, 3, 2),
    (1, 2, 11, 9, 3, 4, 2, 1),
]
conv_ids = ["N{}C{}H{}W{}F{}K{}s{}p{}".format(*c) for c in CONV_CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_ids)
def test_im2col_and_col2im_equal_numpy_ops(cuda_ops, rng, case, dtype):
    N, C, H, W, F, K, s, p = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    OH, OW = (H + 2 * p - K) // s + 1, (W + 2 * p - K) // s + 1
    CKK = C * K * K
    per_image = npo.im2col(x, K, K, s, p).reshape(N, OH * OW, CKK).transpose(0, 2, 1)
    for ones in (0, 1):  # a pure copy, each image's block transposed: bit-identical; then the bias's ones row
        cols = cuda_ops.im2col_t(x, K, K, s, p, ones_rows=ones)
        assert cols.shape == (N, CKK + ones, OH * OW)
        np.testing.assert_array_equal(cols[:, :CKK], per_image)
        np.testing.assert_array_equal(cols[:, CKK:], 1)
        dcols = rng.standard_normal((N * OH * OW, CKK)).astype(dtype)  # numpy_ops' orientation
        ours = np.full((N, CKK + ones, OH * OW), np.nan, dtype)  # rows past C*K*K must not be read
        ours[:, :CKK] = dcols.reshape(N, OH * OW, CKK).transpose(0, 2, 1)
        close(cuda_ops.col2im_t(ours, x.shape, K, K, s, p, OH, OW), npo.col2im(dcols, x.shape, K, K, s, p, OH, OW),
              dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_ids)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_equals_numpy_ops(cuda_ops, rng, case, dtype, bias):
    N, C, H, W, F, K, s, p = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, K, K)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype) if bias else None
    y, cache = cuda_ops.conv2d_forward(x, w, b, s, p)
    y_np, cache_np = npo.conv2d_forward(x, w, b, s, p)
    close(y, y_np, dtype)
    dy = rng.standard_normal(y_np.shape).astype(dtype)
    close_all(cuda_ops.conv2d_backward(dy, cache), npo.conv2d_backward(dy, cache_np), dtype)
    close_all(cuda_ops.conv2d_backward(dy, cache, False), npo.conv2d_backward(dy, cache_np, False), dtype)


# ----------------------------------------------------------------------------------------------------------
# CublasGemm's calls, against a host stand-in of cuBLAS (tests/kernels/cublas_shim.cpp)


class _DeviceArray(np.ndarray):
    """A NumPy array that CublasGemm can take for a CuPy one: ``.data.ptr`` is its first element's address."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


@pytest.fixture
def host_cublas():
    """(CublasGemm on cublas_shim.cpp, the shim library): each call checked the way cuBLAS checks it."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    src = SHIM_DIR / "cublas_shim.cpp"
    lib = ctypes.CDLL(str(_build(BUILD_DIR / f"libcublas-shim-{_digest(src, ' '.join(GXX_FLAGS))}.so",
                                 ["g++", *GXX_FLAGS, str(src)])))
    allocators = []  # the allocator each using_allocator put in effect, innermost last

    @contextlib.contextmanager
    def using_allocator(malloc):
        allocators.append(malloc)
        try:
            yield
        finally:
            allocators.pop()

    def empty(shape, dtype):
        empty.under.append(allocators[-1] if allocators else None)
        return np.empty(shape, dtype).view(_DeviceArray)
    empty.under = []  # the allocator in effect at each allocation
    cuda = types.SimpleNamespace(device=types.SimpleNamespace(get_cublas_handle=lambda: 1),
                                 get_current_stream=lambda: types.SimpleNamespace(ptr=0),
                                 using_allocator=using_allocator)
    cupy = types.SimpleNamespace(cuda=cuda, empty=empty,
                                 get_default_memory_pool=lambda: types.SimpleNamespace(malloc="the default pool"))
    return cupy_ops.CublasGemm(cupy, lib), lib


@pytest.mark.parametrize("dtype", DTYPES)
def test_cublas_calls_compute_each_operand_layout_and_batch(host_cublas, rng, dtype):
    """Every view the wrappers pass, as cuBLAS would read it: C- and F-ordered matrices, slices along K, a
    matrix shared by a batch (stride 0, plain and transposed: conv2d's weights), per-image column blocks and
    their transposes (conv2d's dW products), single rows and columns, and views with no unit stride (every
    other column, reversed rows: copied first)."""
    gemm, lib = host_cublas
    x = rng.standard_normal((7, 60)).astype(dtype).view(_DeviceArray)
    y = rng.standard_normal((60, 5)).astype(dtype).view(_DeviceArray)
    yt = np.ascontiguousarray(y.T).view(_DeviceArray)
    cases = [(x, y), (np.asfortranarray(x), y), (x, yt.T), (x[::-1], y), (x[:, :0], y[:0]), (x[:, 10:20], y[10:20]),
             (x.reshape(7, 4, 15).transpose(1, 0, 2), yt.T.reshape(4, 15, 5)),
             (np.broadcast_to(x[:, :15], (4, 7, 15)), y.reshape(4, 15, 5)),
             (np.broadcast_to(yt[:, :7], (3, 5, 7)), x.reshape(7, 3, 20).transpose(1, 0, 2)[:, :, :9]),
             (x[:1], y), (x, y[:, :1]), (np.asfortranarray(x)[:1], y), (x[:, ::2], y[::2]),
             (yt.reshape(5, 3, 20).transpose(1, 0, 2), x.reshape(7, 3, 20).transpose(1, 2, 0)),
             (x.reshape(7, 3, 20).transpose(1, 0, 2), yt.reshape(5, 3, 20).transpose(1, 2, 0)),
             (np.broadcast_to(yt.T[:7], (3, 7, 5)), y.reshape(3, 5, 20)[:, :, :9])]
    for a, b in cases:
        a, b = a.view(_DeviceArray), b.view(_DeviceArray)
        for tf32 in (False, True):
            got = gemm(a, b, tf32=tf32)
            assert got.flags.c_contiguous and got.dtype == dtype
            close(np.asarray(got), np.matmul(np.asarray(a), np.asarray(b)), dtype)
            if a.ndim == 3 or tf32:
                assert lib.shim_last_compute_type() == (77 if tf32 and dtype == np.float32 else
                                                        68 if dtype == np.float32 else 70)
    with pytest.raises(ValueError, match="gemm needs operands"):
        gemm(x, x)


def test_cublas_takes_its_workspace_from_the_default_pool_even_inside_a_capture(host_cublas):
    """A first GEMM recorded into a CUDA graph must not take cuBLAS's workspace from the graph's own pool, which
    frees it with the graph while cuBLAS keeps the pointer: the product's array comes from the pool in effect,
    the workspace (once per handle) from the default pool."""
    gemm, _ = host_cublas
    x = np.ones((2, 3), np.float32).view(_DeviceArray)
    with gemm.cupy.cuda.using_allocator("a graph's pool"):
        gemm(x, x.T.view(_DeviceArray))
        gemm(x, x.T.view(_DeviceArray))
    assert gemm.cupy.empty.under == ["a graph's pool", "the default pool", "a graph's pool"]


@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_gemms_through_the_cublas_stand_in(host_cublas, monkeypatch, rng, bias):
    """conv2d's batched GEMMs (shared weights, per-image column blocks and their transposes) as cuBLAS reads
    them: the layer through the shim's kernels and CublasGemm on the stand-in equals numpy_ops."""
    gemm, _ = host_cublas
    runtime = dataclasses.replace(host_runtime(set()), matmul=lambda a, b, tf32=False: np.asarray(
        gemm(a.view(_DeviceArray), b.view(_DeviceArray), tf32=tf32)))
    monkeypatch.setattr(cupy_ops, "_runtime", lambda: runtime)
    for N, C, H, W, F, K, s, p in CONV_CASES:
        x, w = rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C, K, K))
        b = rng.standard_normal(F) if bias else None
        y, cache = cupy_ops.conv2d_forward(x, w, b, s, p)
        y_np, cache_np = npo.conv2d_forward(x, w, b, s, p)
        close(y, y_np, np.float64)
        dy = rng.standard_normal(y_np.shape)
        close_all(cupy_ops.conv2d_backward(dy, cache), npo.conv2d_backward(dy, cache_np), np.float64)


def test_conv2d_takes_non_contiguous_inputs(cuda_ops, rng):
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32).transpose(0, 1, 3, 2)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)[:, :, ::-1]
    close(cuda_ops.conv2d_forward(x, w, None, 1, 1)[0], npo.conv2d_forward(x, w, None, 1, 1)[0], np.float32)


# ----------------------------------------------------------------------------------------------------------
# maxpool2d

# (N, C, H, W, kernel, stride): odd sizes (floor mode crops), overlapping windows (stride < kernel), windows
# that tile the input (maxpool2d_backward_tiled: the first, and the last two)
POOL_CASES = [(1, 1, 4, 4, 2, 2), (2, 3, 7, 9, 2, 2), (2, 2, 9, 9, 3, 2), (1, 3, 8, 6, 3, 3), (2, 2, 6, 6, 2, 1),
              (1, 2, 7, 5, 3, 1), (3, 2, 8, 6, 2, 2), (2, 3, 6, 9, 3, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=["N{}C{}H{}W{}k{}s{}".format(*c) for c in POOL_CASES])
def test_maxpool2d_equals_numpy_ops(cuda_ops, rng, case, dtype):
    N, C, H, W, k, s = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    x[:, :, ::3, ::2] = 0.5  # plant ties
    y, (arg, *rest) = cuda_ops.maxpool2d_forward(x, k, s)
    y_np, cache_np = npo.maxpool2d_forward(x, k, s)
    np.testing.assert_array_equal(y, y_np)
    np.testing.assert_array_equal(arg, cache_np[0])  # the same window index, so ties resolve alike
    assert arg.dtype == np.int32
    dy = rng.standard_normal(y_np.shape).astype(dtype)
    close(cuda_ops.maxpool2d_backward(dy, (arg, *rest)), npo.maxpool2d_backward(dy, cache_np), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_through_relu_and_maxpool_like_numpy_ops(cuda_ops, rng, dtype):
    # A diverged run must reach the loss as NaN (training stops on it), not be zeroed on the way.
    x = rng.standard_normal((2, 2, 6, 6)).astype(dtype)
    x[0, 0, 0, 0] = x[0, 1, 3, 2] = x[1, 0, 5, 5] = np.nan
    x[1, 1, 2:4, 2:4] = [[np.nan, 1e30], [np.nan, -np.inf]]
    np.testing.assert_array_equal(cuda_ops.relu_forward(x)[0], npo.relu_forward(x)[0])
    for k, s in ((2, 2), (3, 1)):
        y, (arg, *_) = cuda_ops.maxpool2d_forward(x, k, s)
        y_np, (arg_np, *_) = npo.maxpool2d_forward(x, k, s)
        assert np.isnan(y).any()
        np.testing.assert_array_equal(y, y_np)
        np.testing.assert_array_equal(arg, arg_np)


@pytest.mark.parametrize("stride", [2, 1])
def test_maxpool2d_ties_send_the_gradient_to_the_first_maximum(cuda_ops, stride):
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    y, cache = cuda_ops.maxpool2d_forward(x, 2, stride)
    dx = cuda_ops.maxpool2d_backward(np.ones(y.shape, np.float32), cache)
    want = np.zeros_like(x)
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            want[0, 0, i * stride, j * stride] += 1
    np.testing.assert_array_equal(dx, want)


# ----------------------------------------------------------------------------------------------------------
# linear, relu, log_softmax, softmax-xent, dropout


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 3), (5, 16, 9), (33, 9, 10)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_numpy_ops(cuda_ops, rng, shape, dtype, bias):
    N, IN, OUT = shape
    x = rng.standard_normal((N, IN)).astype(dtype)
    w = rng.standard_normal((OUT, IN)).astype(dtype)
    b = rng.standard_normal(OUT).astype(dtype) if bias else None
    y, cache = cuda_ops.linear_forward(x, w, b)
    y_np, cache_np = npo.linear_forward(x, w, b)
    close(y, y_np, dtype)
    dy = rng.standard_normal((N, OUT)).astype(dtype)
    close_all(cuda_ops.linear_backward(dy, cache), npo.linear_backward(dy, cache_np), dtype)
    close_all(cuda_ops.linear_backward(dy, cache, False), npo.linear_backward(dy, cache_np, False), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_equals_numpy_ops_including_exact_zeros(cuda_ops, rng, dtype):
    x = rng.standard_normal((3, 4, 5, 7)).astype(dtype)
    x[0, 0, 0, :3] = 0.0
    y, cache = cuda_ops.relu_forward(x)
    y_np, cache_np = npo.relu_forward(x)
    np.testing.assert_array_equal(y, y_np)
    dy = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(cuda_ops.relu_backward(dy, cache), npo.relu_backward(dy, cache_np))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 10), (7, 3), (33, 10)], ids=str)
def test_log_softmax_equals_numpy_ops(cuda_ops, rng, shape, dtype):
    x = (rng.standard_normal(shape) * 20).astype(dtype)
    y, cache = cuda_ops.log_softmax_forward(x)
    y_np, cache_np = npo.log_softmax_forward(x)
    close(y, y_np, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    close(cuda_ops.log_softmax_backward(dy, cache), npo.log_softmax_backward(dy, cache_np), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 10), (7, 3), (33, 10)], ids=str)
@pytest.mark.parametrize("target_dtype", [np.int64, np.uint8])
def test_softmax_xent_equals_numpy_ops(cuda_ops, rng, shape, dtype, target_dtype):
    N, C = shape
    logits = (rng.standard_normal(shape) * 30).astype(dtype)
    t = rng.integers(0, C, size=N).astype(target_dtype)
    loss, cache = cuda_ops.softmax_xent_forward(logits, t)
    loss_np, cache_np = npo.softmax_xent_forward(logits, t)
    close(loss, loss_np, dtype)
    close(cache[0], cache_np[0], dtype)
    dl = np.asarray(0.7, dtype=dtype)
    close(cuda_ops.softmax_xent_backward(dl, cache), npo.softmax_xent_backward(dl, cache_np), dtype)


def test_softmax_xent_is_finite_for_huge_logits(cuda_ops):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=np.float32)
    loss, _ = cuda_ops.softmax_xent_forward(logits, np.array([0, 1]))
    np.testing.assert_allclose(loss, np.log(2) / 2, rtol=1e-6)


@needs_gxx
def test_while_recording_a_graph_bad_targets_make_nan_rows_and_host_state_kernels_refuse(monkeypatch):
    """In a CUDA-graph capture the targets' range is not read on the host (the loss kernel makes a row with
    a target outside [0, C) NaN, which the loop then explains), and dropout and Adam refuse to be recorded."""
    runtime = host_runtime(set(), capturing=True)
    monkeypatch.setattr(cupy_ops, "_runtime", lambda: runtime)
    logits = np.zeros((3, 4), np.float32)
    loss, (probs, _) = cupy_ops.softmax_xent_forward(logits, np.array([0, 4, 1]))
    assert np.isnan(loss)
    good, _ = cupy_ops.softmax_xent_forward(logits, np.array([0, 3, 1]))
    assert np.isclose(good, np.log(4))
    with pytest.raises(cupy_ops.NotCapturable, match="dropout_forward"):
        cupy_ops.dropout_forward(logits, 0.5, 1)
    p = np.zeros(3, np.float32)
    with pytest.raises(cupy_ops.NotCapturable, match="adam_update"):
        cupy_ops.adam_update(p, p.copy(), p.copy(), p.copy(), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 42, 2**63 + 12345])
def test_dropout_mask_is_bit_identical_to_numpy_ops(cuda_ops, rng, p, seed, dtype):
    x = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
    y, mask = cuda_ops.dropout_forward(x, p, seed)
    y_np, mask_np = npo.dropout_forward(x, p, seed)
    np.testing.assert_array_equal(mask, mask_np)
    np.testing.assert_array_equal(y, y_np)
    dy = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(cuda_ops.dropout_backward(dy, mask), npo.dropout_backward(dy, mask_np))


# ----------------------------------------------------------------------------------------------------------
# batchnorm2d and the optimizers (in place)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (1, 2, 3, 4), (1, 1, 1, 1)], ids=str)
def test_batchnorm2d_equals_numpy_ops(cuda_ops, rng, shape, training, dtype):
    C = shape[1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    rm, rv = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    rm_np, rv_np = rm.copy(), rv.copy()
    y, cache = cuda_ops.batchnorm2d_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5)
    y_np, cache_np = npo.batchnorm2d_forward(x, gamma, beta, rm_np, rv_np, training, 0.1, 1e-5)
    close(y, y_np, dtype)
    close(rm, rm_np, dtype)
    close(rv, rv_np, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    close_all(cuda_ops.batchnorm2d_backward(dy, cache), npo.batchnorm2d_backward(dy, cache_np), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 1e-2),
                                                  (0.5, False, 1e-3)])
def test_sgd_update_equals_numpy_ops_over_several_steps(cuda_ops, rng, momentum, nesterov, wd, dtype):
    p = rng.standard_normal((3, 5)).astype(dtype)
    buf = np.zeros_like(p) if momentum else None
    p_np, buf_np = p.copy(), (buf.copy() if momentum else None)
    for _ in range(3):
        g = rng.standard_normal(p.shape).astype(dtype)
        g_before = g.copy()
        cuda_ops.sgd_update(p, g, buf, 0.1, momentum, nesterov, wd)
        npo.sgd_update(p_np, g, buf_np, 0.1, momentum, nesterov, wd)
        np.testing.assert_array_equal(g, g_before)  # the gradient is not modified
    close(p, p_np, dtype)
    if momentum:
        close(buf, buf_np, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_adam_update_equals_numpy_ops_over_several_steps(cuda_ops, rng, wd, dtype):
    p = rng.standard_normal((5, 3)).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    p_np, m_np, v_np = p.copy(), m.copy(), v.copy()
    for step in range(1, 4):
        g = rng.standard_normal(p.shape).astype(dtype)
        cuda_ops.adam_update(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, wd)
        npo.adam_update(p_np, g, m_np, v_np, step, 1e-2, 0.9, 0.999, 1e-8, wd)
    close(p, p_np, dtype)
    close(m, m_np, dtype)
    close(v, v_np, dtype)


# ----------------------------------------------------------------------------------------------------------
# coverage, plumbing, errors


def _tour(ops, dtype, rng):
    """Call every contract function once (forward and backward) in ``dtype``."""
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    y, c = ops.conv2d_forward(x, rng.standard_normal((4, 3, 3, 3)).astype(dtype), np.ones(4, dtype), 1, 1)
    ops.conv2d_backward(y, c)
    for k, s in ((2, 2), (3, 2)):  # windows that tile the input, and overlapping ones
        y, c = ops.maxpool2d_forward(x, k, s)
        ops.maxpool2d_backward(y, c)
    y, c = ops.linear_forward(x.reshape(2, -1), rng.standard_normal((5, 108)).astype(dtype), np.ones(5, dtype))
    ops.linear_backward(y, c)
    for fwd, bwd in ((ops.relu_forward, ops.relu_backward), (ops.log_softmax_forward, ops.log_softmax_backward)):
        y, c = fwd(x.reshape(6, -1))
        bwd(y, c)
    loss, c = ops.softmax_xent_forward(x.reshape(6, -1), np.arange(6))
    ops.softmax_xent_backward(np.asarray(1.0, dtype), c)
    y, c = ops.dropout_forward(x, 0.5, 1)
    ops.dropout_backward(y, c)
    y, c = ops.batchnorm2d_forward(x, np.ones(3, dtype), np.zeros(3, dtype), np.zeros(3, dtype), np.ones(3, dtype),
                                   True, 0.1, 1e-5)
    ops.batchnorm2d_backward(y, c)
    p = np.ones(4, dtype)
    ops.sgd_update(p, p.copy(), np.zeros_like(p), 0.1, 0.9, True, 0.0)
    ops.adam_update(p, p.copy(), np.zeros_like(p), np.zeros_like(p), 1, 0.1, 0.9, 0.999, 1e-8, 0.0)


@needs_gxx
def test_every_kernel_of_every_cu_file_runs_under_the_shim(monkeypatch, rng):
    launched = set()
    runtime = host_runtime(launched)
    monkeypatch.setattr(cupy_ops, "_runtime", lambda: runtime)
    for dtype in DTYPES:
        _tour(cupy_ops, dtype, rng)
    assert launched == {n for n in ALL_KERNELS if n.endswith("_i32")}  # small tensors: 32-bit indices
    force_64bit_indices(monkeypatch)
    for dtype in DTYPES:
        _tour(cupy_ops, dtype, rng)
    assert launched == set(ALL_KERNELS)


def test_plumbing_under_the_shim(cuda_ops):
    a = cuda_ops.asarray(np.arange(6, dtype=np.float32).reshape(3, 2).T)
    assert a.flags.c_contiguous
    np.testing.assert_array_equal(cuda_ops.to_numpy(a), [[0, 2, 4], [1, 3, 5]])
    assert cuda_ops.asarray(np.float32(3.0)).shape == ()
    assert cuda_ops.zeros((2, 3), dtype="float64").dtype == np.float64
    cuda_ops.synchronize()


@needs_gxx
def test_the_shim_rejects_arguments_that_do_not_match_the_kernel_signature():
    relu = ShimKernel("relu", "relu_forward_f32", set())
    x = np.ones(4, np.float32)
    with pytest.raises(AssertionError, match="float64 for a float32 pointer"):
        relu((1,), (4,), (x.astype(np.float64), x, np.int64(4)))
    with pytest.raises(AssertionError, match="int for a int64 parameter"):
        relu((1,), (4,), (x, x, 4))
    with pytest.raises(AssertionError, match="2 arguments for 3"):
        relu((1,), (4,), (x, x))


def test_32bit_indices_are_chosen_exactly_when_every_index_fits_in_an_int():
    threads = cupy_ops.LAUNCH.block * cupy_ops.LAUNCH.max_grid  # the grid-stride counter's overshoot
    fits = cupy_ops.INT32_MAX - threads

    def array(size):
        return types.SimpleNamespace(size=size)

    assert cupy_ops._index_suffix(10, (array(fits), np.int64(2**40), None)) == "_i32"  # scalars are no index
    assert cupy_ops._index_suffix(10, (array(fits + 1),)) == ""
    assert cupy_ops._index_suffix(fits + 1, (array(10),)) == ""
    assert cupy_ops._index_suffix(fits, ()) == "_i32"


def test_tiny_launch_grid_is_smaller_than_the_work():
    tiny = LAUNCHES["tiny-grid"]
    assert tiny.grid(10_000) * tiny.block == 6  # every thread loops over ~1700 elements


def test_launch_config_covers_small_work_with_one_element_per_thread():
    assert cupy_ops.LAUNCH.grid(1) == 1 and cupy_ops.LAUNCH.grid(0) == 1
    assert cupy_ops.LAUNCH.grid(257) == 2
    assert cupy_ops.LAUNCH.grid(10**9) == cupy_ops.LAUNCH.max_grid


def test_in_place_arrays_must_be_contiguous_and_of_the_kernels_dtype(cuda_ops):
    x = np.ones((2, 3, 2, 2), np.float32)
    ones = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="running_mean dtype float64 does not match float32"):
        cuda_ops.batchnorm2d_forward(x, ones, ones, np.zeros(3), ones.copy(), True, 0.1, 1e-5)
    with pytest.raises(ValueError, match="running_var must be C-contiguous"):
        cuda_ops.batchnorm2d_forward(x, ones, ones, ones.copy(), np.ones(6, np.float32)[::2], True, 0.1, 1e-5)
    p = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="buf is required when momentum != 0"):
        cuda_ops.sgd_update(p, p.copy(), None, 0.1, 0.9, False, 0.0)


def test_upstream_gradient_of_the_wrong_shape_is_an_error_not_an_out_of_bounds_read(cuda_ops):
    y, cache = cuda_ops.relu_forward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"relu: dout must have shape \(2, 3\); got \(3, 2\)"):
        cuda_ops.relu_backward(np.ones((3, 2), np.float32), cache)
    y, cache = cuda_ops.conv2d_forward(np.ones((1, 1, 5, 5), np.float32), np.ones((2, 1, 3, 3), np.float32), None, 1, 0)
    with pytest.raises(ValueError, match=r"conv2d: dout must have shape \(1, 2, 3, 3\)"):
        cuda_ops.conv2d_backward(np.ones((1, 2, 3, 4), np.float32), cache)


def test_bad_input_gets_the_shared_messages(cuda_ops):
    with pytest.raises(ValueError, match=r"conv2d: x must be 4-D \(N, C, H, W\); got shape \(28, 28\)"):
        cuda_ops.conv2d_forward(np.zeros((28, 28), np.float32), np.zeros((1, 1, 3, 3), np.float32), None, 1, 0)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        cuda_ops.softmax_xent_forward(np.zeros((2, 3), np.float32), np.array([0, 3]))
