"""minigrad.data.loader: the DataLoader."""

from __future__ import annotations

import numpy as np
import pytest

import minigrad.rng
from minigrad import data
from minigrad.backend import k


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
