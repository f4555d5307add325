"""minigrad.data.datasets: ArrayDataset and synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from minigrad import data


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
