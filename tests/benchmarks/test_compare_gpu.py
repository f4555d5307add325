"""benchmarks/compare_gpu.py: its skip without a GPU, its steps, its checks and its table (measured figures
need a GPU: the tests here drive the report with stated inputs)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from benchmarks import compare_gpu

ROOT = pathlib.Path(__file__).resolve().parents[2]


def skip_line_without_gpu(module: str) -> str:
    """Run ``python -m module`` where no GPU is usable: it must exit 0 with one line on stdout and nothing on
    stderr; that line."""
    proc = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    return lines[0]


@pytest.mark.skipif(compare_gpu.gpu_unavailable() is None, reason="a usable GPU is present here")
def test_without_a_gpu_it_skips_with_one_line_naming_what_is_missing():
    assert skip_line_without_gpu("benchmarks.compare_gpu").startswith(
        "compare_gpu: skipped, no GPU to measure on (backend 'cupy' is not available: ")


def test_steps_per_repeat_are_bounded_both_ways():
    assert compare_gpu.steps_per_repeat(1, 8192) == compare_gpu.MAX_STEPS
    assert compare_gpu.steps_per_repeat(64, 8192) == 128
    assert compare_gpu.steps_per_repeat(4096, 8192) == compare_gpu.MIN_STEPS


def _point(rate, loss_start=2.3, loss_end=1.0, trained=4096, captured=0):
    return {"rate": rate, "loss_start": loss_start, "loss_end": loss_end, "trained": trained, "repeats": [1.0],
            "captured_steps": captured, "timed_steps": 10}


def test_report_gives_each_pairs_ratio_and_names_the_batch_sizes_that_miss_the_target():
    results = {"minigrad-cupy": {"lenet5": {1: _point(300.0, captured=10), 64: _point(9000.0, captured=5)}},
               "minigrad-cupy-tf32": {"lenet5": {1: _point(330.0), 64: _point(12000.0)}},
               "minigrad-cupy-eager": {"lenet5": {1: _point(100.0), 64: _point(5000.0)}},
               "torch-cuda": {"lenet5": {1: _point(600.0), 64: _point(6000.0)}},
               "torch-cuda-fp32": {"lenet5": {1: _point(600.0), 64: _point(3000.0)}}}
    lines = compare_gpu.report(results, ["lenet5"], [1, 64])
    assert lines[1].split() == ["batch", "cupy", "cupy-tf32", "cupy-eager", "torch", "torch-fp32",
                                "cupy/torch-fp32", "cupy-tf32/torch", "cupy/torch", "graphs"]
    assert lines[2].split() == ["1", "300", "330", "100", "600", "600", "0.50x", "0.55x", "0.50x", "100%"]
    assert lines[3].split() == ["64", "9000", "12000", "5000", "6000", "3000", "3.00x", "2.00x", "1.50x", "50%"]
    assert lines[-3:] == [
        "lenet5 minigrad-cupy vs torch-cuda-fp32: missed at B=1 (0.50x); worst 0.50x, best 3.00x",
        "lenet5 minigrad-cupy-tf32 vs torch-cuda: missed at B=1 (0.55x); worst 0.55x, best 2.00x",
        "lenet5 minigrad-cupy vs torch-cuda: missed at B=1 (0.50x); worst 0.50x, best 1.50x"]


def test_loss_failures_name_non_finite_and_non_decreasing_losses_once_enough_was_trained():
    results = {"minigrad-cupy": {"convnet": {1: _point(1.0, loss_end=float("nan")),
                                             16: _point(1.0, loss_end=2.5),
                                             64: _point(1.0, loss_end=2.5, trained=64)}},  # too few to judge
               "torch-cuda": {"convnet": {1: _point(1.0)}}}
    failures = compare_gpu.loss_failures(results)
    assert len(failures) == 2
    assert failures[0].startswith("minigrad-cupy convnet B=1: loss 2.3000 -> nan")
    assert failures[1].startswith("minigrad-cupy convnet B=16: loss 2.3000 -> 2.5000")
