"""minigrad.data.cli: ``python -m minigrad.data fetch``."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import tiny_arrays, write_idx_dir


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINIGRAD_BACKEND": "numpy"}
    return subprocess.run([sys.executable, "-m", "minigrad.data", "fetch", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_cli_fetch_succeeds(tmp_path):
    # Fashion-MNIST: tiny IDX files pass (no pinned hashes); for MNIST they would fail the pinned check.
    write_idx_dir(tmp_path / "fashion-mnist", tiny_arrays(), gz=True)
    done = run_cli("--data-dir", str(tmp_path), "--dataset", "fashion-mnist", "--no-download")
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "fashion-mnist.npz") in done.stdout and "train 20, test 10" in done.stdout
    done = run_cli("--data-dir", str(tmp_path), "--dataset", "fashion-mnist", "--no-download")
    assert done.returncode == 0 and "source: cache" in done.stdout


def test_cli_errors_are_one_line(tmp_path):
    done = run_cli("--data-dir", str(tmp_path), "--no-download", "--no-offline")
    assert done.returncode == 2
    assert done.stderr.startswith("error: mnist: no source worked") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr

    write_idx_dir(tmp_path, tiny_arrays())
    done = run_cli("--data-dir", str(tmp_path), "--no-download", "--no-offline")
    assert done.returncode == 2 and "SHA-256 mismatch" in done.stderr and done.stderr.count("\n") == 1


def test_import_is_light():
    # Fetching data (`make data`) must not pull in the kernels' compilers, torch or plotting: whatever
    # `import minigrad` loads, `import minigrad.data` adds none of them.
    code = ("import sys, minigrad; before = set(sys.modules); import minigrad.data; "
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} & {'numba', 'torch', 'matplotlib'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
