"""The package builds cleanly: no setuptools warnings, and the CUDA sources ship inside it."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_builds_without_warnings_and_ships_the_cuda_sources(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "src"  # a copy: building in place would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "minigrad", "kernels", "profiling"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is
                                            shutil.copytree else {}))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), "-v", str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Python warnings (SetuptoolsDeprecationWarning, ...) and setuptools' "!!" notice blocks; not distutils'
    # informational "warning: byte-compiling is disabled" lines that -v shows on every build
    warned = [line for line in (proc.stdout + proc.stderr).splitlines()
              if re.search(r"\w+Warning\b", line) or line.strip() == "!!"]
    assert not warned, "\n".join(warned[:20])
    names = zipfile.ZipFile(next(tmp_path.glob("minigrad-*.whl"))).namelist()
    cuda = {Path(n).name for n in names if n.startswith("minigrad/kernels/cuda/")}
    assert cuda == {p.name for p in (ROOT / "kernels" / "cuda").iterdir() if p.suffix in (".cu", ".h")}
    assert "minigrad/data/loader.py" in names and "minigrad/profiling/plateau.py" in names
