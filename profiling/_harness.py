"""The profilers' set-up around the one training loop (``minigrad.loop``): a seeded model, SGD with momentum,
a shuffled loader, and steps taken through ``TrainLoop``, so that every harness (tracer, cProfile,
line_profiler, ladder, explain's sweep) times exactly what the bench and ``fit`` time."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np

from minigrad import data, models, optim, rng
from minigrad.loop import StepRecord, TrainLoop


class Harness:
    """A fresh model and optimizer, and a stream of training steps over one loader.

    per_sample: the vectorization ladder's first rung: every batch of ``batch_size`` is fed one sample at a
        time (micro-batches of 1, gradients accumulated, one optimizer update per batch), the way much code
        in the wild is written.
    """

    def __init__(self, model_name: str, batch_size: int, train_set, n_batches: int, seed: int = 0,
                 per_sample: bool = False, dtype: str = "float32"):
        rng.manual_seed(seed)
        self.batch_size = batch_size
        self.model = models.get_model(model_name, dtype=dtype)
        self.optimizer = optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        micro = 1 if per_sample else batch_size
        self.loader = data.DataLoader(train_set, micro, shuffle=True, seed=seed, drop_last=True, dtype=dtype)
        have = len(self.loader) * micro // batch_size
        if have < n_batches:
            raise ValueError(f"profile: {len(train_set)} samples give {have} batches of {batch_size}; "
                             f"need {n_batches} (warm-up + steps)")
        self.loop = TrainLoop(self.model, self.optimizer, accumulate=batch_size // micro)
        self._records = self.loop.epoch(self.loader)

    def steps(self, n: int, around=None) -> list[StepRecord]:
        """The next ``n`` micro-batches (``around``: a context-manager factory entered around each one)."""
        self.loop.around = around or contextlib.nullcontext
        try:
            return list(itertools.islice(self._records, n))
        finally:
            self.loop.around = contextlib.nullcontext

    def updates(self, n: int, around=None) -> np.ndarray:
        """Step time (the loop's compute seconds) of each of the next ``n`` optimizer updates: one
        micro-batch each, or ``batch_size`` of them summed on the per-sample rung. ``captured`` holds how many
        of their micro-batches were replayed from a CUDA graph (``minigrad.graphs``)."""
        records = self.steps(n * self.loop.accumulate, around)
        self.captured = sum(r.captured for r in records)
        return np.array([sum(r.compute_seconds for r in records[i:i + self.loop.accumulate])
                         for i in range(0, len(records), self.loop.accumulate)])
