"""The one training step and the one timed loop: every number minigrad reports about step time comes from here.

A training step is: ask the loader for a batch, then forward, loss (on the host, checked for NaN/Inf),
backward and, when the step completes a group of ``accumulate`` micro-batches, the optimizer update. Its two
timed parts are named the same everywhere (StepRecord, the bench's results, the profilers):

- ``data_seconds``: waiting for the loader to hand over the batch;
- ``compute_seconds``: forward + loss + backward + update, from having the batch to the device having
  finished it (``synchronize``). This is **step time** in every minigrad report.

Bookkeeping that is not training (counting correct predictions for the accuracy) runs after the clock stops.

The loop is written once and driven through an *adapter* that knows one engine's tensors: ``MINIGRAD``
(the live minigrad backend) here, ``minigrad.torch_peer.ADAPTER`` for the PyTorch peer. ``train.fit``,
the bench, the profiling harnesses, the vectorization ladder and the CPU comparison all run ``TrainLoop``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from time import perf_counter as _clock  # the loop's one clock (a test can replace it)
from typing import Callable, ContextManager, Iterator

import numpy as np

from . import backend
from . import functional as F
from .graphs import StepGraphs
from .tensor import Tensor, no_grad


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or Inf; the message names the step."""


@dataclass
class StepRecord:
    epoch: int
    step: int              # 1-based index of the micro-batch within the whole run
    update: int            # number of optimizer updates applied after this micro-batch
    samples: int
    loss: float
    correct: int
    data_seconds: float    # waiting for the loader
    compute_seconds: float  # forward + loss + backward (+ update), synchronised: the step time
    # Data-parallel runs only (``TrainLoop(reduce=...)``): the gradient all-reduce, a part of compute_seconds.
    allreduce_seconds: float = 0.0
    allreduce_bytes: int = 0
    # Whether the step was replayed from a CUDA graph (``TrainLoop(capture=True)``, ``minigrad.graphs``).
    captured: bool = False

    @property
    def seconds(self) -> float:
        """Wall time of the whole micro-batch: data + compute."""
        return self.data_seconds + self.compute_seconds


class MinigradAdapter:
    """The loop's view of minigrad: the live backend's arrays and kernels."""

    name = "minigrad"

    def forward(self, model, x):
        return model(Tensor(x))

    def loss(self, logits, y):
        return F.cross_entropy(logits, y)

    def item(self, loss) -> float:
        return float(backend.k.to_numpy(loss.data))

    def backward(self, loss, scale: float | None) -> None:
        loss.backward(scale)

    def scale_grads(self, model, factor: float) -> None:
        # A new array, not ``*=``: a gradient array may be shared between leaves (e.g. both inputs of an add).
        for p in model.parameters():
            if p.grad is not None:
                p.grad = p.grad * p.grad.dtype.type(factor)

    def correct(self, logits, y) -> int:
        pred = backend.k.to_numpy(logits.data).argmax(axis=1)
        return int(np.count_nonzero(pred == backend.k.to_numpy(y)))

    def no_grad(self) -> ContextManager:
        return no_grad()

    def synchronize(self) -> None:
        backend.k.synchronize()


MINIGRAD = MinigradAdapter()


class TrainLoop:
    """Trains ``model`` with ``optimizer`` step by step, keeping the step and update counts across epochs.

    accumulate: apply the optimizer every ``accumulate`` micro-batches with the sample-weighted mean of their
        gradients, which equals one step on the concatenated batch (a partial group at the end of an epoch is
        averaged over the samples it has). The batch *sum* of the loss is backpropagated and the gradients are
        divided by the group's sample count at update time; with ``accumulate=1`` the plain mean is used.
    warmup: an object with ``step()`` called before every optimizer update (e.g. optim.LinearWarmup).
    around: a context-manager factory entered around the compute part of every step (the tracer's
        ``Tracer.step``), or None.
    reduce: data parallelism's hook between backward and the optimizer update (``minigrad.distributed``), or
        None. Called as ``reduce(samples, summed)`` with this process's sample count of the group and whether
        its gradients hold the batch *sum* (``accumulate > 1``) rather than the mean; it must leave the mean
        over every process's samples and return the bytes it reduced. Its time is part of the step time and
        is also recorded apart (``StepRecord.allreduce_seconds``/``allreduce_bytes``).
    capture: replay the step from a CUDA graph where the backend and the loop allow it (``minigrad.graphs``
        owns when; ``self.graphs.reason`` says why not); False always runs it eagerly.
    """

    def __init__(self, model, optimizer, *, accumulate: int = 1, warmup=None, adapter=MINIGRAD,
                 around: Callable[[], ContextManager] | None = None,
                 reduce: Callable[[int, bool], int] | None = None, capture: bool = True):
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f"TrainLoop: accumulate must be a positive integer; got {accumulate!r}")
        self.model, self.optimizer, self.accumulate, self.warmup = model, optimizer, accumulate, warmup
        self.adapter, self.around, self.reduce = adapter, around or contextlib.nullcontext, reduce
        self.step = self.update = 0
        self._pending = self._in_group = 0  # samples / micro-batches accumulated but not yet applied
        self._reduced_seconds, self._reduced_bytes = 0.0, 0  # the current step's all-reduce
        self.graphs = StepGraphs(self) if capture else None

    def epoch(self, loader, epoch: int = 1, max_steps: int | None = None) -> Iterator[StepRecord]:
        """One pass over ``loader`` (at most ``max_steps`` micro-batches counted over the whole run), one
        StepRecord per micro-batch. The group open at the end of the pass is applied when the pass covered
        the loader's ``n_samples``; ``flush()`` applies one that ``max_steps`` cut short."""
        a, model = self.adapter, self.model
        model.train()
        seen = batch = 0
        n_samples = getattr(loader, "n_samples", None)
        batches = iter(loader)
        while max_steps is None or self.step < max_steps:
            t0 = _clock()
            try:
                x, y = next(batches)
            except StopIteration:
                return
            t1 = _clock()
            n = int(x.shape[0])
            self.step += 1
            batch += 1
            seen += n
            with self.around():
                if self.warmup is not None and self.accumulate == 1:
                    self.warmup.step()  # the update's lr is set before the step (and its graph key) is chosen
                replayed = self.graphs.step(x, y) if self.graphs is not None else None
                if replayed is not None:
                    logits, loss = (Tensor(array) for array in replayed)
                    value = a.item(loss)
                    self._check(value, epoch, batch, logits, y)
                    self.update += 1
                else:
                    logits = a.forward(model, x)
                    loss = a.loss(logits, y)
                    value = a.item(loss)
                    self._check(value, epoch, batch)
                    a.backward(loss, None if self.accumulate == 1 else float(n))
                    self._pending += n
                    self._in_group += 1
                    if self._in_group == self.accumulate or (n_samples is not None and seen >= n_samples):
                        self._apply()
                a.synchronize()
            t2 = _clock()
            record = StepRecord(epoch, self.step, self.update, n, value, a.correct(logits, y), t1 - t0,
                                t2 - t1, self._reduced_seconds, self._reduced_bytes, replayed is not None)
            self._reduced_seconds, self._reduced_bytes = 0.0, 0
            yield record

    def device_step(self, x, y):
        """The step's device work with one micro-batch per update, as a graph records it: forward, loss,
        backward, update; (logits, loss) arrays. No host read: the loop checks the loss after the replay."""
        logits = self.adapter.forward(self.model, x)
        loss = self.adapter.loss(logits, y)
        self.adapter.backward(loss, None)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return logits.data, loss.data

    def _check(self, value: float, epoch: int, batch: int, logits=None, y=None) -> None:
        """Raise NonFiniteLoss unless the loss is finite. After a replay (``logits`` given) the update has
        already been applied, and out-of-range targets (which the recorded loss kernel turns into NaN rows)
        are named by the host check of the targets first."""
        if math.isfinite(value):
            return
        if logits is not None:
            F.check_targets(logits, y)
        raise NonFiniteLoss(f"fit: loss became {value} at step {self.step} (epoch {epoch}, batch {batch} of the "
                            f"epoch); lower the lr or check the data")

    def flush(self) -> bool:
        """Apply a group that ``max_steps`` cut short; True when there was one."""
        if not self._pending:
            return False
        self._apply()
        self._reduced_seconds, self._reduced_bytes = 0.0, 0  # outside any step: no StepRecord holds it
        return True

    def _apply(self) -> None:
        if self.reduce is not None:
            t0 = _clock()
            self._reduced_bytes += self.reduce(self._pending, self.accumulate > 1)
            self._reduced_seconds += _clock() - t0
        elif self.accumulate > 1:
            self.adapter.scale_grads(self.model, 1.0 / self._pending)
        if self.warmup is not None and self.accumulate > 1:
            self.warmup.step()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.update += 1
        self._pending = self._in_group = 0


def evaluate(model, loader, adapter=MINIGRAD) -> dict:
    """Mean loss and accuracy of ``model`` over ``loader`` in eval mode (no tape recorded); the model's mode
    is restored afterwards."""
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    with adapter.no_grad():
        for x, y in loader:
            logits = adapter.forward(model, x)
            n = int(x.shape[0])
            loss_sum += adapter.item(adapter.loss(logits, y)) * n
            correct += adapter.correct(logits, y)
            seen += n
    model.train(was_training)
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "samples": seen}
