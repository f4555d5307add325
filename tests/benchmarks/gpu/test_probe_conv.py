"""benchmarks/gpu/probe_conv.py: its skip without a GPU (its timings and its check against PyTorch need one)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from benchmarks import compare_gpu

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.mark.skipif(compare_gpu.gpu_unavailable() is None, reason="a usable GPU is present here")
def test_without_a_gpu_it_skips_with_one_line_naming_what_is_missing():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu.probe_conv"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("probe_conv: skipped, no GPU to measure on (backend 'cupy' is not available: ")
    assert len(proc.stdout.splitlines()) == 1 and proc.stderr == ""
