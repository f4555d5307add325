"""minigrad.data.sources: IDX parsing and the IDX-directory source, the download mirrors."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from minigrad import data

from .conftest import assert_same, closed_port_url, hashes, serve, tiny_arrays, write_idx_dir


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


def test_partial_idx_dir_is_reported(tmp_path):
    write_idx_dir(tmp_path, tiny_arrays())
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(data.DataUnavailable, match="missing t10k-labels-idx1-ubyte"):
        data.load_mnist(tmp_path, download=False, offline=False)
