"""The datasets themselves: ArrayDataset, synthetic MNIST-shaped data, the names and the normalisation constants.

``DATASETS`` is the one list of dataset names: command lines take their ``--dataset`` choices from it.
"""

from __future__ import annotations

import numpy as np

#: Mean and standard deviation of MNIST's training pixels scaled to [0, 1] (the usual torchvision values).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

#: The four arrays every real dataset consists of, whatever its source.
KEYS = ("train_images", "train_labels", "test_images", "test_labels")
#: Every dataset ``load_dataset`` knows. "synthetic" is generated, never fetched or cached.
DATASETS = ("mnist", "fashion-mnist", "synthetic")


class ArrayDataset:
    """Images and labels kept as uint8 numpy arrays.

    uint8 is 4x smaller than float32, so a whole dataset stays in memory and in cache; the DataLoader
    converts one batch at a time. ``synthetic`` marks data that must never be reported as a real dataset.

    images: (N, H, W) uint8 (28 x 28 for every loader here); labels: (N,) uint8.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str, synthetic: bool = False):
        for arg, value in (("images", images), ("labels", labels)):
            if not isinstance(value, np.ndarray):
                raise TypeError(f"ArrayDataset: {arg} must be a numpy array; got {type(value).__name__}")
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(
                f"ArrayDataset: images must be uint8 of shape (N, H, W); got {images.dtype} {images.shape}")
        if labels.dtype != np.uint8 or labels.shape != (len(images),):
            raise ValueError(f"ArrayDataset: labels must be uint8 of shape ({len(images)},), one per image; "
                             f"got {labels.dtype} {labels.shape}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"ArrayDataset: name must be a non-empty string; got {name!r}")
        self.images = images
        self.labels = labels
        self.name = name
        self.synthetic = bool(synthetic)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ArrayDataset(name={self.name!r}, n={len(self)}, image_shape={self.images.shape[1:]}, "
                f"synthetic={self.synthetic})")

    def subset(self, n_or_slice: int | slice) -> ArrayDataset:
        """The first ``n`` samples, or those a slice selects, as a new dataset (a view: no copy)."""
        if isinstance(n_or_slice, slice):
            index = n_or_slice
        elif _is_int(n_or_slice) and 0 <= n_or_slice <= len(self):
            index = slice(0, int(n_or_slice))
        else:
            raise ValueError(f"ArrayDataset.subset: n_or_slice must be an int in [0, {len(self)}] or a slice; "
                             f"got {n_or_slice!r}")
        return ArrayDataset(self.images[index], self.labels[index], self.name, self.synthetic)


def synthetic_mnist(n_train: int = 60000, n_test: int = 10000,
                    seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """MNIST-shaped random data for timing and tests, named ``synthetic`` and flagged ``synthetic=True``.

    Each class has a fixed template (a random 7x7 on/off grid blown up to 28x28 blocks of value 192) and
    every image is its class's template plus uniform noise in [0, 64): distinct enough that any model here
    learns it, so loss curves move like real training, and cheap (one gather and one add per split).
    Train and test share the templates, so test accuracy is meaningful.
    """
    for arg, n in (("n_train", n_train), ("n_test", n_test)):
        if not _is_int(n) or n < 0:
            raise ValueError(f"synthetic_mnist: {arg} must be a non-negative integer; got {n!r}")
    rng = np.random.default_rng(seed)
    grids = rng.random((10, 7, 7)) < 0.35
    templates = grids.repeat(4, axis=1).repeat(4, axis=2).astype(np.uint8) * np.uint8(192)

    def draw(n: int) -> ArrayDataset:
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        images = templates[labels]
        images += rng.integers(0, 64, size=images.shape, dtype=np.uint8)  # 192 + 63 <= 255: no overflow
        return ArrayDataset(images, labels, "synthetic", synthetic=True)

    return draw(int(n_train)), draw(int(n_test))


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
