"""Where the arrays come from besides the cache: the four standard IDX files, on disk or from the mirrors.

IDX files (optionally gzipped) are read from the data directory for MNIST, and from its ``fashion-mnist/``
sub-directory for Fashion-MNIST (both datasets use the same file names). The download mirrors are tried
with urllib, a short timeout and a progress bar. ``MNIST_MIRRORS``, ``FASHION_MNIST_MIRRORS`` and
``DOWNLOAD_TIMEOUT`` are read from this module when a loader runs, so assigning them here redirects it.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import math
import os
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from minigrad.data.errors import DataFormatError, _SourceMissing
from minigrad.progress import bar as progress_bar

log = logging.getLogger(__name__)

#: Base URLs tried in order; each must serve ``<IDX name>.gz``. Module attributes so a test (or a user with
#: a local mirror) can point the downloader elsewhere; the loaders also take ``mirrors=``.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
FASHION_MNIST_MIRRORS = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
]

#: Seconds a mirror may stay silent (connect or read) before it counts as unreachable.
DOWNLOAD_TIMEOUT = 10.0

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

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
        with progress_bar(progress, total=int(length) if length else None, unit="B", unit_scale=True,
                          unit_divisor=1024, desc=url.rsplit("/", 1)[-1], leave=False) as bar:
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
