"""The GPU calibration's arithmetic on planted numbers, and a real quick calibration where a GPU is present."""

import math

import numpy as np
import pytest

from minigrad import backend
from minigrad.profiling import gpu_calibration as gc

DIMS = [1, 4, 16, 64, 256]
BATCHES = [1, 8, 64]
NODE = 2e-6          # every GEMM cell: NODE + its FLOPs at RATE
RATE = 1e13


def planted(batch, m, n, k):
    return NODE + 2 * batch * m * n * k / RATE


def synthetic(**extra) -> gc.GpuCalibration:
    grid = [[[[planted(b, m, n, k) for k in DIMS] for n in DIMS] for m in DIMS] for b in BATCHES]
    data = {"backend": "cupy", "device": "a planted GPU", "measured_at": "synthetic", "gemm_dims": DIMS,
            "gemm_batches": BATCHES, "gemm": {layout: grid for layout in gc.GEMM_LAYOUTS},
            "curves": {"relu_forward": [[16, 3e-6], [1 << 20, 12e-6]]},
            "host": {"conv2d_backward": 40e-6, "conv2d_backward/no_dx": 30e-6, "relu_forward": 9e-6},
            "node_seconds": 1e-6, "launch_seconds": 5e-6, "sync_seconds": 4e-6}
    return gc.GpuCalibration({**data, **extra})


def test_one_call_is_the_difference_of_the_two_graphs_over_the_repeats():
    recorded = []

    def record(n):
        recorded.append(n)
        return n

    seconds = gc.in_graph_seconds(lambda: None, repeats=8, record=record, timer=lambda n: 9e-6 + n * 3e-6)
    assert recorded == [8, 16]
    assert seconds == pytest.approx(3e-6)


def test_a_noisy_negative_difference_falls_back_to_the_longer_graphs_time_per_call():
    times = iter([50e-6, 40e-6])
    seconds = gc.in_graph_seconds(lambda: None, repeats=4, record=lambda n: n, timer=lambda n: next(times))
    assert seconds == pytest.approx(40e-6 / 8)


def test_which_cells_fit():
    assert gc.gemm_fits(1, 1024, 1024, 4096)
    assert not gc.gemm_fits(1, 4096, 4096, 4096)           # too much work
    assert not gc.gemm_fits(4096, 65536, 1, 1024)          # an operand too large over the batch


def test_unmeasured_cells_are_filled_at_the_rate_of_the_largest_measured_one_below_them():
    axes = ([1, 8], [1, 4], [1, 4], [1, 4])
    grid = np.full((2, 2, 2, 2), np.nan)
    grid[0] = 1e-6                   # every batch-1 cell measured at 1 us
    grid[1, 0, 0, 0] = 2e-6          # one batched cell
    filled = gc.fill_grid(grid, axes)
    assert not np.isnan(filled).any()
    np.testing.assert_allclose(filled[0], 1e-6)
    # (8, 4, 4, 4): the largest measured cell below it by work is (1, 4, 4, 4) (64 vs 8): 1 us x 512 / 64
    assert filled[1, 1, 1, 1] == pytest.approx(1e-6 * 512 / 64)
    # (8, 4, 1, 1): below it (1, 4, 1, 1) of work 4 and (8, 1, 1, 1) of work 8: the latter, 2 us x 32 / 8
    assert filled[1, 1, 0, 0] == pytest.approx(2e-6 * 32 / 8)


def test_gemm_lookups_hit_the_grid_interpolate_between_and_scale_beyond():
    cal = synthetic()
    for b, m, n, k in [(1, 1, 1, 1), (8, 16, 64, 4), (64, 256, 256, 256)]:
        assert cal.gemm_seconds("nn", m, n, k, b) == pytest.approx(planted(b, m, n, k))
    # between two grid points along one axis: the geometric mean of the two times at the midpoint in log
    between = cal.gemm_seconds("nt", 64, 8, 16, 8)
    assert between == pytest.approx(math.sqrt(planted(8, 64, 4, 16) * planted(8, 64, 16, 16)))
    # beyond the largest value: the largest cell's time scaled by the work
    assert cal.gemm_seconds("nn", 1024, 256, 256, 64) == pytest.approx(planted(64, 256, 256, 256) * 4)
    assert cal.gemm_seconds("nt", 16, 16, 16, 512) == pytest.approx(planted(64, 16, 16, 16) * 8)
    assert cal.gemm_seconds("tn", 16, 64, 4) == pytest.approx(planted(1, 16, 64, 4))


def test_curves_host_costs_and_launch_terms():
    cal = synthetic()
    assert cal.curve_seconds("relu_forward", 8) == pytest.approx(3e-6)
    assert cal.curve_seconds("relu_forward", 1 << 21) == pytest.approx(24e-6)
    assert cal.host_seconds("conv2d_backward") == pytest.approx(40e-6)
    assert cal.host_seconds("conv2d_backward", need_dx=False) == pytest.approx(30e-6)
    assert cal.host_seconds("relu_forward", need_dx=False) == pytest.approx(9e-6)
    assert cal.host_seconds("sgd_update") == 0.0
    assert (cal.node_seconds, cal.launch_seconds, cal.sync_seconds) == (1e-6, 5e-6, 4e-6)
    assert cal.where == "a planted GPU"
    noisy = synthetic(pass_disagreement={"gemm": {"cells": 10, "median": 0.02, "p90": 0.1}})
    assert "its GEMMs by a median of 2% (90th percentile 10%, 10 cells)" in noisy.pass_disagreement()


# -- every case through cupy_ops' own wrappers, run on the CPU under the host shim ---------------------------------


@pytest.fixture
def host_cupy(monkeypatch):
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    from minigrad.kernels import cupy_ops
    from tests.kernels.test_cuda_host import host_runtime

    runtime = host_runtime(set())
    monkeypatch.setattr(cupy_ops, "_runtime", lambda: runtime)
    return cupy_ops


def test_every_curve_and_gemm_cell_of_the_calibration_runs_through_the_backends_wrappers(host_cupy):
    from minigrad.profiling import plans

    ran = []

    def once(fn):  # what in_graph_seconds records: a call of the backend, here run once on the CPU
        ran.append(fn())
        return 1e-6
    curves = gc.measure_curves("float32", sizes=(16, 5000), seconds=once)
    assert set(curves) == set(plans.CURVE_KERNELS) | {"im2col_t", "col2im_t", "channel_sums", "strided_copy",
                                                      "concatenate", "add_bias_rows"}
    assert all(1 <= len(points) <= 2 and points[0][0] >= 1 for points in curves.values())
    assert curves["channel_sums"][-1][0] == 19 * 256 and curves["im2col_t"][0][0] == 36 * 256
    disagreement = []
    grid = gc.measure_gemm("float64", dims=(1, 4), batches=(1, 3), seconds=once, disagreement=disagreement)
    assert all(np.asarray(grid[layout]).shape == (2, 2, 2, 2) for layout in gc.GEMM_LAYOUTS)
    assert len(disagreement) == 3 * 16 and disagreement == [0.0] * 48
    products = ran[-2 * 48:]
    assert {p.shape for p in products} >= {(1, 1), (4, 4), (3, 4, 4)} and all(p.dtype == np.float64 for p in products)


def test_every_kernels_host_cost_is_timed_on_a_call_of_its_own(host_cupy):
    cases = gc._host_cases(host_cupy, "float32")
    assert {"conv2d_forward", "conv2d_backward/no_dx", "linear_backward", "sgd_update"} <= set(cases)
    synced = []
    seconds = {name: gc.host_seconds(fn, lambda: synced.append(1), calls=3) for name, fn in cases.items()}
    assert all(s > 0 for s in seconds.values()) and len(synced) == 4 * len(cases)


def test_a_replayed_step_that_ran_eagerly_is_an_error():
    with backend.use_backend("numpy"):  # no CUDA graphs: every step runs eagerly
        with pytest.raises(RuntimeError, match="ran eagerly"):
            gc.replayed_step("float32", 4, steps=3)


# -- on a real GPU (skipped without one) -------------------------------------------------------------------------


def test_a_quick_calibration_of_this_device_measures_every_section(cuda, tmp_path):
    """(Named without "cupy": benchmarks/gpu/run.sh's test part leaves it to its predict part, which calibrates.)"""
    from minigrad.profiling import plans, predict

    said = []
    cal = gc.load("float32", quick=True, cache_dir=tmp_path, progress=said.append)
    assert cal.backend == "cupy" and said
    for layout in gc.GEMM_LAYOUTS:
        grid = np.asarray(cal.data["gemm"][layout])
        assert grid.shape == (len(gc.QUICK_GEMM_BATCHES), *[len(gc.QUICK_GEMM_DIMS)] * 3)
        assert np.isfinite(grid).all() and (grid > 0).all()
    names = set(plans.CURVE_KERNELS) | {"im2col_t", "col2im_t", "channel_sums", "strided_copy", "concatenate",
                                        "add_bias_rows"}
    assert names <= set(cal.data["curves"])
    assert all(s > 0 for points in cal.data["curves"].values() for _, s in points)
    assert cal.node_seconds > 0 and cal.launch_seconds > 0 and cal.sync_seconds > 0
    assert cal.data["host"]["conv2d_forward"] > cal.launch_seconds  # Python, then at least one launch
    assert [b for b, _ in cal.data["tiny"]["replayed"]] == list(gc.TINY_BATCHES)
    preds = predict.predict("lenet5", [1, 64], "cupy", cal=cal)
    assert all(p.step_seconds > 0 and p.fixed["replay"] >= 0 for p in preds)
