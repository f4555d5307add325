"""fit / evaluate: the training loop, with the timings every study in minigrad is built on.

A step's wall time is measured from asking the loader for a batch to having the loss on the host, so it
includes data loading, forward, backward and (on the step that applies it) the optimizer update; the part
spent waiting for data is recorded apart.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import backend
from . import functional as F
from .tensor import Tensor, no_grad


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or Inf; the message names the step."""


@dataclass
class StepRecord:
    epoch: int
    step: int           # 1-based index of the micro-batch within the whole run
    update: int         # number of optimizer updates applied after this micro-batch
    samples: int
    loss: float
    correct: int
    seconds: float      # wall time of the whole micro-batch (data + forward + backward + update if any)
    data_seconds: float  # of which waiting for the loader


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
        return np.array([s.seconds for s in self.steps])

    @property
    def updates(self) -> int:
        return self.steps[-1].update if self.steps else 0

    def to_dict(self) -> dict:
        return {"steps": [asdict(s) for s in self.steps], "epochs": [asdict(e) for e in self.epochs]}


def _progress_enabled(progress) -> bool:
    if progress is not None:
        return bool(progress)
    return sys.stderr.isatty() and not os.environ.get("CI")


def _count_correct(logits: Tensor, y) -> int:
    pred = backend.k.to_numpy(logits.data).argmax(axis=1)
    return int((pred == backend.k.to_numpy(y)).sum())


def fit(model, loader, optimizer, epochs: int = 1, accumulate: int = 1, eval_loader=None, max_steps=None,
        warmup=None, progress=None, desc: str = "train") -> History:
    """Train ``model`` with minibatch SGD over ``loader`` for ``epochs``.

    accumulate: apply the optimizer every ``accumulate`` micro-batches with the sample-weighted mean of their
        gradients, which equals one step on the concatenated batch (a partial group at the end of an epoch is
        averaged over the samples it has).
    eval_loader: evaluated after every epoch (test loss/accuracy in the History).
    max_steps: stop after this many micro-batches in total (for timing studies on a sample budget).
    warmup: an object with ``step()`` called before every optimizer update (e.g. optim.LinearWarmup).
    progress: a tqdm bar per epoch; None shows it only on a terminal outside CI.
    Raises NonFiniteLoss naming the step when the loss becomes NaN or Inf.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive integer; got {epochs!r}")
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(f"fit: accumulate must be a positive integer; got {accumulate!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"fit: max_steps must be a positive integer or None; got {max_steps!r}")
    from tqdm.auto import tqdm

    history = History()
    params = model.parameters()
    model.train()
    step = update = 0
    for epoch in range(1, epochs + 1):
        t_epoch = time.perf_counter()
        seen = correct_sum = 0
        loss_sum = 0.0
        pending = in_group = batch = 0  # samples / micro-batches accumulated but not yet applied
        total = len(loader) if max_steps is None else min(len(loader), max_steps - step)
        bar = tqdm(total=total, desc=f"{desc} epoch {epoch}/{epochs}", unit="batch", leave=False,
                   disable=not _progress_enabled(progress))
        batches = iter(loader)
        while max_steps is None or step < max_steps:
            t0 = time.perf_counter()
            try:
                x, y = next(batches)
            except StopIteration:
                break
            t_data = time.perf_counter() - t0
            n = int(x.shape[0])
            step += 1
            batch += 1
            logits = model(Tensor(x))
            loss = F.cross_entropy(logits, y)
            loss_value = float(backend.k.to_numpy(loss.data))
            if not math.isfinite(loss_value):
                bar.close()
                raise NonFiniteLoss(f"fit: loss became {loss_value} at step {step} (epoch {epoch}, batch "
                                    f"{batch} of the epoch); lower the lr or check the data")
            # With accumulation, backpropagate the batch *sum* (loss * n) and divide by the group's sample count
            # at update time; without it, the plain mean gradient is already what the optimizer wants.
            loss.backward(None if accumulate == 1 else float(n))
            pending += n
            in_group += 1
            if in_group == accumulate or seen + n >= loader.n_samples:  # a partial last group is applied too
                _apply_update(params, optimizer, warmup, pending if accumulate > 1 else None)
                update += 1
                pending = in_group = 0
            correct = _count_correct(logits, y)
            seconds = time.perf_counter() - t0
            history.steps.append(StepRecord(epoch, step, update, n, loss_value, correct, seconds, t_data))
            seen += n
            loss_sum += loss_value * n
            correct_sum += correct
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        bar.close()
        if pending:  # max_steps cut a group short: apply what was accumulated
            _apply_update(params, optimizer, warmup, pending)
            update += 1
            history.steps[-1].update = update
        record = EpochRecord(epoch, time.perf_counter() - t_epoch, seen, update,
                             loss_sum / max(seen, 1), correct_sum / max(seen, 1))
        if eval_loader is not None:
            ev = evaluate(model, eval_loader)
            record.test_loss, record.test_accuracy = ev["loss"], ev["accuracy"]
            model.train()
        history.epochs.append(record)
        if max_steps is not None and step >= max_steps:
            break
    return history


def _apply_update(params, optimizer, warmup, group_samples: int | None) -> None:
    """One optimizer update. With accumulation the grads hold per-sample sums: divide by the group's size.

    (A new array, not ``*=``: a gradient array may be shared between leaves, e.g. both inputs of an add.)
    """
    if group_samples is not None:
        for p in params:
            if p.grad is not None:
                p.grad = p.grad * p.grad.dtype.type(1.0 / group_samples)
    if warmup is not None:
        warmup.step()
    optimizer.step()
    optimizer.zero_grad()


@no_grad()
def evaluate(model, loader) -> dict:
    """Mean loss and accuracy of ``model`` over ``loader`` in eval mode (no tape recorded)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in loader:
        logits = model(Tensor(x))
        n = int(x.shape[0])
        loss_sum += float(backend.k.to_numpy(F.cross_entropy(logits, y).data)) * n
        correct += _count_correct(logits, y)
        seen += n
    model.train(was_training)
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "samples": seen}
