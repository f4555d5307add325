"""fit / evaluate: epochs of the one training loop (``minigrad.loop``), with evaluation and a History.

Step time is defined once, in ``minigrad.loop``: ``compute_seconds`` (forward, loss, backward, update,
synchronised) with the wait for the loader recorded apart as ``data_seconds``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import progress as _progress
from .loop import MINIGRAD, NonFiniteLoss, StepRecord, TrainLoop, evaluate  # noqa: F401  (fit's vocabulary)


@dataclass
class EpochRecord:
    epoch: int
    seconds: float
    samples: int
    updates: int
    train_loss: float      # sample-weighted mean over the epoch's micro-batches
    train_accuracy: float
    test_loss: float | None = None
    test_accuracy: float | None = None


@dataclass
class History:
    steps: list[StepRecord] = field(default_factory=list)
    epochs: list[EpochRecord] = field(default_factory=list)

    @property
    def step_seconds(self) -> np.ndarray:
        """Step time of every micro-batch: ``compute_seconds`` (minigrad.loop's one definition)."""
        return np.array([s.compute_seconds for s in self.steps])

    @property
    def updates(self) -> int:
        return self.steps[-1].update if self.steps else 0

    def to_dict(self) -> dict:
        return {"steps": [asdict(s) for s in self.steps], "epochs": [asdict(e) for e in self.epochs]}


def fit(model, loader, optimizer, epochs: int = 1, accumulate: int = 1, eval_loader=None, max_steps=None,
        warmup=None, progress=None, desc: str = "train", adapter=MINIGRAD, reduce=None,
        capture: bool = True) -> History:
    """Train ``model`` with minibatch SGD over ``loader`` for ``epochs`` (``minigrad.loop.TrainLoop``).

    accumulate: apply the optimizer every ``accumulate`` micro-batches with the sample-weighted mean of their
        gradients, which equals one step on the concatenated batch (a partial group at the end of an epoch is
        averaged over the samples it has).
    eval_loader: evaluated after every epoch (test loss/accuracy in the History).
    max_steps: stop after this many micro-batches in total (for timing studies on a sample budget).
    warmup: an object with ``step()`` called before every optimizer update (e.g. optim.LinearWarmup).
    progress: a tqdm bar per epoch; None shows it only on a terminal outside CI (``minigrad.progress``).
    adapter: the engine the loop drives (``minigrad.loop.MINIGRAD``, or ``torch_peer.ADAPTER``).
    reduce: the gradient all-reduce of a data-parallel run (``TrainLoop``'s hook; ``minigrad.distributed.fit``).
    capture: replay the step from a CUDA graph where possible (``TrainLoop``; False: always eagerly).
    Raises NonFiniteLoss naming the step when the loss becomes NaN or Inf.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive integer; got {epochs!r}")
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(f"fit: accumulate must be a positive integer; got {accumulate!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"fit: max_steps must be a positive integer or None; got {max_steps!r}")
    history = History()
    loop = TrainLoop(model, optimizer, accumulate=accumulate, warmup=warmup, adapter=adapter, reduce=reduce,
                     capture=capture)
    for epoch in range(1, epochs + 1):
        t_epoch = time.perf_counter()
        total = len(loader) if max_steps is None else min(len(loader), max_steps - loop.step)
        first = len(history.steps)
        with _progress.bar(progress, total=total, desc=f"{desc} epoch {epoch}/{epochs}", unit="batch",
                           leave=False) as bar:
            for record in loop.epoch(loader, epoch, max_steps):
                history.steps.append(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record.loss:.4f}", refresh=False)
        if loop.flush():  # max_steps cut a group short: apply what was accumulated
            history.steps[-1].update = loop.update
        steps = history.steps[first:]
        seen = sum(s.samples for s in steps)
        record = EpochRecord(epoch, time.perf_counter() - t_epoch, seen, loop.update,
                             sum(s.loss * s.samples for s in steps) / max(seen, 1),
                             sum(s.correct for s in steps) / max(seen, 1))
        if eval_loader is not None:
            ev = evaluate(model, eval_loader, adapter)
            record.test_loss, record.test_accuracy = ev["loss"], ev["accuracy"]
        history.epochs.append(record)
        if max_steps is not None and loop.step >= max_steps:
            break
    return history

