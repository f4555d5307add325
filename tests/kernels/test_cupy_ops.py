"""The CuPy backend: selecting it (everywhere) and what is specific to it on a real GPU.

Kernel-by-kernel parity with the reference runs in the shared suite (tests/kernels/test_ops.py), which
picks up "cupy" wherever ``load_module("cupy")`` succeeds. The tests here marked ``on_gpu`` add what only a
device shows: arrays and caches stay on it, bit-identical dropout masks at scale, realistic layer sizes,
the tiny-grid launch on hardware, one whole training step against NumPy, kernels compiled once, and the
memory-pool and CUDA-event helpers. They skip when CuPy is missing or sees no CUDA device (the device
count, not merely whether ``import cupy`` works). The selection tests run on every machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend as B
from minigrad import functional as F
from minigrad import models, optim
from minigrad.kernels import cupy_ops
from minigrad.kernels import numpy_ops as npo
from minigrad.tensor import Tensor


def _device_skip_reason() -> str | None:
    try:
        import cupy
    except ImportError:
        return "cupy is not installed"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, driver too old, ...: no usable device either way
        return f"no usable CUDA device ({exc})"
    return None if count > 0 else "no CUDA device"


GPU_SKIP = _device_skip_reason()
on_gpu = pytest.mark.skipif(GPU_SKIP is not None, reason=f"needs a CUDA device: {GPU_SKIP}")


# ----------------------------------------------------------------------------------------------------------
# selecting the backend (every machine)


@pytest.mark.skipif(GPU_SKIP is None, reason="a CUDA device is present here")
def test_set_backend_cupy_without_a_gpu_says_what_is_missing():
    before = mg.get_backend()
    with pytest.raises(B.BackendUnavailable) as err:
        mg.set_backend("cupy")
    assert re.search(r"cupy is not installed|no CUDA device|NVIDIA driver|CUDA could not be initialised|"
                     r"failed to import", str(err.value)), str(err.value)
    assert mg.get_backend() == before
    assert "cupy" not in B.available_backends()


def _fake_cupy(count=1, status=None, driver=12040, built_for=12040):
    """A stand-in for the cupy module with just the runtime calls check_available makes."""

    class CUDARuntimeError(RuntimeError):
        def __init__(self, status):
            super().__init__(f"cudaError {status}")
            self.status = status

    def get_device_count():
        if status is not None:
            raise CUDARuntimeError(status)
        return count

    runtime = types.SimpleNamespace(CUDARuntimeError=CUDARuntimeError, getDeviceCount=get_device_count,
                                    driverGetVersion=lambda: driver, runtimeGetVersion=lambda: built_for)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


@pytest.mark.parametrize("fake,message", [
    (None, r"cupy is not installed \(pip install 'minigrad\[gpu\]' installs cupy-cuda12x\)"),
    (_fake_cupy(count=0), "cupy is installed but there is no CUDA device"),
    (_fake_cupy(status=100), "cupy is installed but there is no CUDA device"),
    (_fake_cupy(status=35, driver=0), r"cupy is installed but no NVIDIA driver was found \(libcuda is missing\)"),
    (_fake_cupy(status=35, driver=11080, built_for=12040),
     r"the NVIDIA driver is too old: it supports CUDA 11\.8, cupy was built for CUDA 12\.4"),
    (_fake_cupy(status=999), r"CUDA could not be initialised \(cudaError 999\)"),
], ids=["not-installed", "zero-devices", "no-device-error", "no-driver", "old-driver", "other-error"])
def test_backend_unavailable_names_what_is_missing(monkeypatch, fake, message):
    monkeypatch.setitem(sys.modules, "cupy", fake)  # None makes `import cupy` raise ImportError
    before = mg.get_backend()
    with pytest.raises(B.BackendUnavailable, match="backend 'cupy' is not available: " + message):
        mg.set_backend("cupy")
    assert mg.get_backend() == before


@pytest.mark.parametrize("error,message", [
    (ModuleNotFoundError("No module named 'cuda'", name="cuda"), "No module named 'cuda'"),
    (RuntimeError("two cupy packages are installed"), "two cupy packages are installed"),
], ids=["missing-dependency", "other-error"])
def test_a_broken_cupy_install_is_not_reported_as_missing(monkeypatch, error, message):
    def broken_import(name, *args):
        if name == "cupy":
            raise error
        return real_import(name, *args)

    real_import = cupy_ops.importlib.import_module
    monkeypatch.setattr(cupy_ops.importlib, "import_module", broken_import)
    with pytest.raises(B.BackendUnavailable, match=rf"cupy is installed but failed to import \({message}\)"):
        cupy_ops.check_available()


def test_a_visible_device_passes_the_check(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=2))
    cupy_ops.check_available()


def test_the_module_imports_and_exports_the_contract_where_cupy_cannot_be_imported():
    # A fresh interpreter in which `import cupy` fails: importing the backend module must still work (the
    # contract test in tests/test_backend.py would only skip it), and every contract name must be there.
    code = ("import sys; sys.modules['cupy'] = None\n"
            "from minigrad.backend import CONTRACT\n"
            "from minigrad.kernels import cupy_ops\n"
            "missing = [n for n in CONTRACT if not callable(getattr(cupy_ops, n, None))]\n"
            "assert not missing, missing\n")
    env = {**os.environ, "MINIGRAD_BACKEND": "numpy"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------------------------------------
# on a GPU


@pytest.fixture
def cp():
    import cupy

    return cupy


@on_gpu
def test_results_and_caches_stay_on_the_device(cp):
    x = cupy_ops.asarray(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    w = cupy_ops.asarray(np.ones((4, 3, 3, 3), np.float32))
    y, cache = cupy_ops.conv2d_forward(x, w, None, 1, 1)
    assert isinstance(y, cp.ndarray) and isinstance(cache[0], cp.ndarray)
    y, cache = cupy_ops.maxpool2d_forward(y, 2, 2)
    assert isinstance(y, cp.ndarray) and isinstance(cache[0], cp.ndarray) and cache[0].dtype == np.int32
    assert isinstance(cupy_ops.maxpool2d_backward(y, cache), cp.ndarray)


@on_gpu
def test_host_arrays_are_an_error_not_a_hidden_transfer():
    with pytest.raises(TypeError, match="expected a cupy array on the device; got numpy.ndarray"):
        cupy_ops.relu_forward(np.ones(3, np.float32))


@on_gpu
@pytest.mark.parametrize("p,seed", [(0.5, 0), (0.1, 12345), (0.9, 2**63 + 7)])
def test_dropout_mask_is_bit_identical_to_numpy_ops_at_scale(p, seed):
    x = np.random.default_rng(1).standard_normal((64, 32, 26, 26)).astype(np.float32)  # 1.4M elements
    y, mask = cupy_ops.dropout_forward(cupy_ops.asarray(x), p, seed)
    y_np, mask_np = npo.dropout_forward(x, p, seed)
    np.testing.assert_array_equal(cupy_ops.to_numpy(mask), mask_np)
    np.testing.assert_array_equal(cupy_ops.to_numpy(y), y_np)


def _close(got, want, rtol):
    want = np.asarray(want)
    np.testing.assert_allclose(cupy_ops.to_numpy(got), want, rtol=rtol,
                               atol=rtol * max(1.0, float(np.abs(want).max(initial=0))))


@on_gpu
@pytest.mark.parametrize("launch", [cupy_ops.LaunchConfig(), cupy_ops.LaunchConfig(block=32, max_grid=2)],
                         ids=["production", "tiny-grid"])
def test_lenet_sized_layers_match_numpy_ops(monkeypatch, launch):
    monkeypatch.setattr(cupy_ops, "LAUNCH", launch)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 6, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    y, cache = cupy_ops.conv2d_forward(*map(cupy_ops.asarray, (x, w, b)), 1, 0)
    y_np, cache_np = npo.conv2d_forward(x, w, b, 1, 0)
    _close(y, y_np, 1e-5)
    dy = rng.standard_normal(y_np.shape).astype(np.float32)
    for g, g_np in zip(cupy_ops.conv2d_backward(cupy_ops.asarray(dy), cache), npo.conv2d_backward(dy, cache_np)):
        _close(g, g_np, 1e-5)
    p, pcache = cupy_ops.maxpool2d_forward(y, 2, 2)
    p_np, pcache_np = npo.maxpool2d_forward(y_np, 2, 2)
    _close(p, p_np, 1e-5)
    dp = rng.standard_normal(p_np.shape).astype(np.float32)
    _close(cupy_ops.maxpool2d_backward(cupy_ops.asarray(dp), pcache), npo.maxpool2d_backward(dp, pcache_np), 1e-5)


@on_gpu
@pytest.mark.parametrize("shape", [(1024 * 26 * 26, 32, 1), (64 * 24 * 24, 64, 1), (4096, 10, 1), (256, 32, 676)],
                         ids=["convnet-conv1-B1024", "convnet-conv2-B64", "linear-B4096", "batchnorm-B256"])
def test_channel_sums_at_scale_match_numpy(shape):
    A, C, B = shape
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32)
    want = x.astype(np.float64).sum(axis=(0, 2))
    _close(cupy_ops.channel_sums(cupy_ops.asarray(x), A, C, B), want, 1e-5)


@on_gpu
def test_conv2d_with_64bit_indices_matches_the_32bit_path(monkeypatch):
    rng = np.random.default_rng(5)
    shapes = ((8, 6, 12, 12), (16, 6, 5, 5), 16)
    x, w, b = (cupy_ops.asarray(rng.standard_normal(s).astype(np.float32)) for s in shapes)
    y32, cache32 = cupy_ops.conv2d_forward(x, w, b, 1, 0)
    grads32 = cupy_ops.conv2d_backward(y32, cache32)
    monkeypatch.setattr(cupy_ops, "INT32_MAX", 0)  # every launch takes the 64-bit entry points
    y64, cache64 = cupy_ops.conv2d_forward(x, w, b, 1, 0)
    _close(y64, cupy_ops.to_numpy(y32), 1e-6)  # the same kernels but for the index width (cuBLAS in between)
    for g64, g32 in zip(cupy_ops.conv2d_backward(y64, cache64), grads32):
        _close(g64, cupy_ops.to_numpy(g32), 1e-6)


@on_gpu
def test_one_lenet5_training_step_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, size=16)
    states = {}
    for name in ("numpy", "cupy"):
        with mg.use_backend(name):
            mg.manual_seed(0)
            model = models.lenet5()
            if name == "cupy":
                model.load_state_dict(states["numpy-before"])
            else:
                states["numpy-before"] = model.state_dict()
            opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            loss = F.cross_entropy(model(Tensor(x)), t)
            loss.backward()
            opt.step()
            states[name] = (float(B.k.to_numpy(loss.data)), model.state_dict())
    assert states["cupy"][0] == pytest.approx(states["numpy"][0], rel=1e-5)
    for key, want in states["numpy"][1].items():
        _close(states["cupy"][1][key], want, 1e-4)


@on_gpu
def test_each_kernel_is_compiled_and_looked_up_once():
    rt = cupy_ops._runtime()
    assert rt is cupy_ops._runtime()
    assert rt.kernel("relu", "relu_forward_f32") is rt.kernel("relu", "relu_forward_f32")


@on_gpu
def test_memory_info_follows_the_pool_and_keeps_the_peak(cp):
    mib64 = 64 * 2**20
    cupy_ops.reset_peak()
    before = cupy_ops.memory_info()
    assert set(before) == {"used_bytes", "total_bytes", "peak_bytes"}
    a = cp.empty(mib64, dtype=np.uint8)
    during = cupy_ops.memory_info()
    assert during["used_bytes"] >= before["used_bytes"] + mib64
    assert during["peak_bytes"] >= during["used_bytes"]
    del a
    after = cupy_ops.memory_info()
    assert after["used_bytes"] <= during["used_bytes"] - mib64
    assert after["peak_bytes"] >= during["peak_bytes"]  # freed blocks stay in the pool: the peak remains
    cupy_ops.reset_peak()
    assert cupy_ops.memory_info()["peak_bytes"] <= during["peak_bytes"] - mib64


@on_gpu
def test_time_gpu_returns_device_seconds_per_call(cp):
    a = cp.ones((512, 512), dtype=np.float32)
    t = cupy_ops.time_gpu(lambda: cp.matmul(a, a), repeats=5)
    assert t.shape == (5,) and np.all(np.isfinite(t)) and np.all(t > 0)
    cupy_ops.synchronize()


@on_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_through_cublas_equals_cupy_matmul_for_every_operand_layout(cp, dtype):
    """The backend's GEMM (cuBLAS through ctypes, the one path eager and captured steps share) gives exactly
    what cupy.matmul gives, for C- and F-contiguous operands (the transposed views the wrappers pass)."""
    rng = np.random.default_rng(0)
    a = cp.asarray(rng.standard_normal((37, 19)).astype(dtype))
    b = cp.asarray(rng.standard_normal((19, 23)).astype(dtype))
    gemm = cupy_ops._runtime().matmul
    for x in (a, cp.ascontiguousarray(a.T).T):
        for y in (b, cp.ascontiguousarray(b.T).T):
            got = gemm(x, y)
            assert got.flags.c_contiguous and got.dtype == dtype
            cp.testing.assert_array_equal(got, cp.matmul(x, y))
    cp.testing.assert_array_equal(gemm(a[:, :0], b[:0]), cp.zeros((37, 23), dtype))
    with pytest.raises(ValueError, match="gemm needs operands"):
        gemm(a, a)


@on_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_gemm_equals_cupy_matmul_for_strided_and_shared_operands(cp, dtype):
    """A batch through cublasGemmStridedBatchedEx: a shared matrix (batch stride 0), slices along K of one
    matrix and of a transposed one, and per-image column blocks (ld > cols)."""
    rng = np.random.default_rng(1)
    gemm = cupy_ops._runtime().matmul
    a = cp.asarray(rng.standard_normal((7, 60)).astype(dtype))
    bt = cp.asarray(rng.standard_normal((5, 60)).astype(dtype))
    a_k = a.reshape(7, 4, 15).transpose(1, 0, 2)             # (4, 7, 15), ld 60, batch stride 15
    b_k = bt.T.reshape(4, 15, 5)                             # (4, 15, 5), column-major, ld 60
    got = gemm(a_k, b_k)
    assert got.shape == (4, 7, 5) and got.flags.c_contiguous
    cp.testing.assert_allclose(got, cp.matmul(a_k, b_k), rtol=1e-5)
    shared = cp.broadcast_to(a[:, :15], (4, 7, 15))          # batch stride 0
    cp.testing.assert_allclose(gemm(shared, b_k), cp.matmul(shared, b_k), rtol=1e-5)
    with pytest.raises(ValueError, match="gemm needs operands"):
        gemm(a_k, b_k[:3])


@on_gpu
def test_tf32_gemm_is_close_to_fp32(cp):
    rng = np.random.default_rng(2)
    gemm = cupy_ops._runtime().matmul
    a = cp.asarray(rng.standard_normal((64, 200_000), dtype=np.float32))
    b = cp.asarray(rng.standard_normal((288, 200_000), dtype=np.float32)).T
    want = gemm(a, b)
    scale = float(cp.abs(want).max())
    assert float(cp.abs(gemm(a, b, tf32=True) - want).max()) < 1e-2 * scale
    cp.testing.assert_array_equal(gemm(a.astype(np.float64), b.astype(np.float64), tf32=True),
                                  gemm(a.astype(np.float64), b.astype(np.float64)))  # TF32 is for fp32 only


@on_gpu
def test_a_step_graph_replays_what_it_recorded_on_new_inputs(cp):
    """StepGraph: recording runs nothing; each replay reads the new inputs and writes the same outputs."""
    x = cp.arange(6, dtype=cp.float32).reshape(2, 3)
    w = cp.ones((3, 4), cp.float32)
    acc = cp.zeros((2, 4), cp.float32)

    def step(xs):
        out = cupy_ops._runtime().matmul(xs, w)
        acc[...] += out
        return out

    graph = cupy_ops.StepGraph(step, x)
    assert float(abs(acc).max()) == 0.0  # recorded, not run
    for scale in (1, 2):
        out = graph.replay(x * scale)
        cp.testing.assert_array_equal(out, cp.matmul(x * scale, w))
    cp.testing.assert_array_equal(acc, 3 * cp.matmul(x, w))
    with pytest.raises(ValueError, match="recorded for"):
        graph.replay(x[:1])


@on_gpu
def test_a_first_gemm_recorded_in_a_graph_leaves_cublas_a_workspace_that_outlives_the_graph(cp):
    """cuBLAS keeps its workspace's address: taken from a graph's own pool, it would be freed with the graph."""
    gemm = cupy_ops.CublasGemm(cp)  # no workspace set yet: its first call is the recorded one
    rng = np.random.default_rng(3)
    a = cp.asarray(rng.standard_normal((16, 1 << 16), dtype=np.float32))
    b = cp.asarray(rng.standard_normal((1 << 16, 16), dtype=np.float32))
    try:
        graph = cupy_ops.StepGraph(lambda: gemm(a, b))
        graph.replay()
        del graph
        cp.get_default_memory_pool().free_all_blocks()
        filler = cp.full(1 << 24, 7.0, cp.float32)  # memory the graph held, handed out again
        cp.testing.assert_allclose(gemm(a, b), cp.matmul(a, b), rtol=1e-4, atol=1e-3)
        del filler
    finally:
        cupy_ops._runtime().matmul.workspaces.clear()  # the handle's workspace is this test's: set it again


@on_gpu
def test_memory_info_counts_the_pools_of_live_step_graphs(cp):
    """A recorded graph's arrays live in its own pool for as long as the graph: memory_info() counts it, and
    the peak holds it after the graph is gone."""
    cupy_ops.reset_peak()
    x = cp.ones(1024, cp.float32)
    before = cupy_ops.memory_info()["total_bytes"]
    graph = cupy_ops.StepGraph(lambda xs: xs + cp.ones(1 << 20, cp.float32)[:1024], x)
    assert cupy_ops.memory_info()["total_bytes"] >= before + (4 << 20)
    del graph
    after = cupy_ops.memory_info()
    assert after["total_bytes"] < before + (4 << 20) <= after["peak_bytes"]
