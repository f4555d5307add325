"""benchmarks/gpu/probe_gemm.py: its skip without a GPU (its timings and checks need one)."""

from __future__ import annotations

import pytest

from benchmarks import compare_gpu
from tests.benchmarks.test_compare_gpu import skip_line_without_gpu


@pytest.mark.skipif(compare_gpu.gpu_unavailable() is None, reason="a usable GPU is present here")
def test_without_a_gpu_it_skips_with_one_line_naming_what_is_missing():
    assert skip_line_without_gpu("benchmarks.gpu.probe_gemm").startswith(
        "probe_gemm: skipped, no GPU to measure on (backend 'cupy' is not available: ")
