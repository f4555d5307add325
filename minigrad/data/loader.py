"""The DataLoader: batches of an ArrayDataset as backend arrays, the one data path every training step runs."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from minigrad.data.datasets import MNIST_MEAN, MNIST_STD, ArrayDataset, _is_int
from minigrad.rng import generator as _global_generator


class DataLoader:
    """Batches of an ArrayDataset as backend arrays: ``x`` (B, 1, H, W) float, ``y`` (B,) int64.

    Pixels become ``uint8 / 255`` in [0, 1], then ``(x - MNIST_MEAN) / MNIST_STD`` if ``normalize`` (MNIST's
    statistics, also used for the other datasets: close enough for benchmarking). The batch is gathered as
    uint8 and converted with one vectorized multiply, since this runs every training step.

    shuffle: a fresh permutation at every ``iter()`` (every epoch), drawn from ``np.random.default_rng(seed)``
    made once here when ``seed`` is given, else from minigrad's global generator (``mg.manual_seed``).
    drop_last: skip the final partial batch. ``n_samples`` is the number of samples one epoch yields.
    sampler: which part of each epoch's order this process takes, as ``sampler.spans(len(dataset),
        batch_size)`` -> [(start, stop), ...] into the order, one per batch (``minigrad.distributed.
        DistributedSampler``: a rank's shard); None takes every batch in turn.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 seed: int | None = None, normalize: bool = False, dtype: str | np.dtype = "float32", sampler=None):
        if not isinstance(dataset, ArrayDataset):
            raise TypeError(f"DataLoader: dataset must be an ArrayDataset; got {type(dataset).__name__}")
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer; got {batch_size!r}")
        if seed is not None and (not _is_int(seed) or seed < 0):
            raise ValueError(f"DataLoader: seed must be a non-negative integer or None; got {seed!r}")
        try:
            float_dtype = np.dtype(dtype)
        except TypeError:
            float_dtype = None
        if float_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"DataLoader: dtype must be float32 or float64; got {dtype!r}")
        if sampler is not None and drop_last:
            raise ValueError("DataLoader: drop_last cannot be combined with a sampler (the sampler decides what "
                             "each batch holds); drop one of them")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.normalize = bool(normalize)
        self.dtype = float_dtype
        self.seed, self.sampler = seed, sampler
        self._rng = np.random.default_rng(seed) if seed is not None else None
        n = len(dataset)
        if sampler is not None:
            self._spans = sampler.spans(n, self.batch_size)
            self.n_samples = sum(stop - start for start, stop in self._spans)
        else:
            self.n_samples = n - n % self.batch_size if self.drop_last else n
            self._spans = [(s, min(s + self.batch_size, self.n_samples)) for s in range(0, self.n_samples,
                                                                                          self.batch_size)]
        # Scaling to [0, 1] and normalising folded into one affine map: x = pixels * scale - shift.
        if self.normalize:
            self._scale, self._shift = 1.0 / (255.0 * MNIST_STD), MNIST_MEAN / MNIST_STD
        else:
            self._scale, self._shift = 1.0 / 255.0, 0.0

    def __len__(self) -> int:
        return len(self._spans)

    def __iter__(self) -> Iterator[tuple[object, object]]:
        order = None
        if self.shuffle:
            rng = self._rng if self._rng is not None else _global_generator()
            order = rng.permutation(len(self.dataset))
        return self._batches(order)

    def _batches(self, order: np.ndarray | None) -> Iterator[tuple[object, object]]:
        # Imported here, not at the top: fetching data (the CLI, `make data`) must not need the kernels.
        from minigrad.backend import k

        images, labels = self.dataset.images, self.dataset.labels
        height, width = images.shape[1:]
        for start, stop in self._spans:
            index = order[start:stop] if order is not None else slice(start, stop)
            x = np.multiply(images[index], self._scale, dtype=self.dtype)
            if self._shift:
                x -= self._shift
            y = labels[index].astype(np.int64)
            yield k.asarray(x.reshape(-1, 1, height, width)), k.asarray(y)
