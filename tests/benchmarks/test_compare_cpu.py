"""benchmarks/compare_cpu.py end to end on a tiny configuration: every engine's worker in interleaved rounds,
the table, and its own checks (first-step parity, losses finite and falling where enough was trained)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_a_tiny_comparison_runs_its_rounds_and_passes_its_checks():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compare_cpu", "--models", "mlp", "--batch-sizes", "4",
                           "--samples", "16", "--repeats", "1", "--rounds", "2", "--threads", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "median of 1 repeats, best of 2 interleaved rounds" in out
    assert "## mlp (samples/s)" in out and "# checks passed: first-step parity" in out
    # each engine's worker ran once per round (their progress lines go to stderr)
    assert proc.stderr.count("minigrad-numba  mlp      B=4") == 2
