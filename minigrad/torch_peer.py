"""PyTorch twins of minigrad models, trained exactly the way minigrad trains, for like-for-like timing.

Import this only when torch is importable (``python -m minigrad.bench --backend torch`` checks first);
minigrad itself never depends on torch.

Like for like means:
- architecture: the twin is translated layer by layer from the minigrad model itself, so it has the same
  layers, sizes and order, hence the same state-dict keys (``1.weight`` ...), for any of the reference models;
- initial weights: loaded from the minigrad model's ``state_dict()``;
- data order: ``fit`` consumes the same minigrad ``DataLoader`` (numpy backend), batch for batch;
- optimizer: torch's SGD (momentum, dampening 0) or Adam, the rules minigrad's optimizers copy;
- timing and accounting: ``fit`` mirrors ``minigrad.train.fit`` step for step (same timing points, same
  gradient-accumulation rule, NaN/Inf check, update counting) and returns minigrad's ``History``.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import torch

from minigrad import nn as mnn
from minigrad.train import EpochRecord, History, NonFiniteLoss, StepRecord

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def set_threads(n: int) -> None:
    """torch's intra-op thread pool (the one its GEMMs and convolutions use)."""
    torch.set_num_threads(n)


def _twin_layer(layer: mnn.Module) -> torch.nn.Module:
    if isinstance(layer, mnn.Conv2d):
        return torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                               padding=layer.padding, bias=layer.bias is not None)
    if isinstance(layer, mnn.Linear):
        return torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if isinstance(layer, mnn.ReLU):
        return torch.nn.ReLU()
    if isinstance(layer, mnn.MaxPool2d):
        return torch.nn.MaxPool2d(layer.kernel_size, stride=layer.stride)
    if isinstance(layer, mnn.Flatten):
        return torch.nn.Flatten(1)
    if isinstance(layer, mnn.Dropout):
        return torch.nn.Dropout(layer.p)
    if isinstance(layer, mnn.BatchNorm2d):
        return torch.nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    raise TypeError(f"torch_peer: no PyTorch equivalent for minigrad layer {type(layer).__name__}")


def twin(model: mnn.Sequential, dtype: str = "float32") -> torch.nn.Sequential:
    """A torch ``nn.Sequential`` with ``model``'s layers and its current weights (in training mode)."""
    if not isinstance(model, mnn.Sequential):
        raise TypeError(f"torch_peer.twin: model must be a minigrad Sequential; got {type(model).__name__}")
    if dtype not in _DTYPES:
        raise ValueError(f"torch_peer.twin: dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
    peer = torch.nn.Sequential(*(_twin_layer(layer) for layer in model.children())).to(_DTYPES[dtype])
    state = {name: torch.from_numpy(np.array(value, dtype=dtype)) for name, value in model.state_dict().items()}
    missing, unexpected = peer.load_state_dict(state, strict=False)
    # BatchNorm's step counter exists in torch only; every other key must match exactly.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KeyError(f"torch_peer.twin: state dicts differ; missing {missing}, unexpected {unexpected}")
    return peer.train()


class Optimizer:
    """A torch optimizer seen through minigrad's optimizer interface: ``lr`` (read and set, so that
    ``minigrad.optim.LinearWarmup`` drives it unchanged), ``step()`` and ``zero_grad()``."""

    def __init__(self, model: torch.nn.Module, name: str, lr: float, momentum: float = 0.0):
        if name == "sgd":
            self.torch = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        elif name == "adam":
            self.torch = torch.optim.Adam(model.parameters(), lr=lr)
        else:
            raise ValueError(f"torch_peer.Optimizer: name must be 'sgd' or 'adam'; got {name!r}")
        self.params = [p for group in self.torch.param_groups for p in group["params"]]

    @property
    def lr(self) -> float:
        return self.torch.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.torch.param_groups:
            group["lr"] = value

    def step(self) -> None:
        self.torch.step()

    def zero_grad(self) -> None:
        self.torch.zero_grad(set_to_none=True)

    def state_bytes(self) -> int:
        """Bytes of the optimizer's per-parameter state (momentum buffers, Adam moments) allocated so far."""
        return sum(v.nbytes for state in self.torch.state.values() for v in state.values()
                   if isinstance(v, torch.Tensor) and v.dim() > 0)


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    return sys.stderr.isatty() and not os.environ.get("CI")


def _as_tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array))


def fit(model: torch.nn.Module, loader, optimizer: Optimizer, epochs: int = 1, accumulate: int = 1,
        max_steps: int | None = None, warmup=None, progress: bool | None = None, desc: str = "train") -> History:
    """``minigrad.train.fit`` for a torch model: same loader contract, same timing points, same History.

    A step's time runs from asking the loader for a batch to having the loss and the correct count on the
    host. With ``accumulate`` > 1 the batch *sum* of the loss is backpropagated and the gradients divided by
    the group's sample count at update time, so a group equals one step on the concatenated batch.
    """
    from tqdm.auto import tqdm

    history = History()
    model.train()
    step = update = 0
    for epoch in range(1, epochs + 1):
        t_epoch = time.perf_counter()
        seen = correct_sum = pending = in_group = batch = 0
        loss_sum = 0.0
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
            xt, yt = _as_tensor(x), _as_tensor(y)
            n = int(xt.shape[0])
            step += 1
            batch += 1
            logits = model(xt)
            loss = torch.nn.functional.cross_entropy(logits, yt)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                bar.close()
                raise NonFiniteLoss(f"fit: loss became {loss_value} at step {step} (epoch {epoch}, batch "
                                    f"{batch} of the epoch); lower the lr or check the data")
            (loss if accumulate == 1 else loss * n).backward()
            pending += n
            in_group += 1
            if in_group == accumulate or seen + n >= loader.n_samples:
                _apply_update(optimizer, warmup, pending if accumulate > 1 else None)
                update += 1
                pending = in_group = 0
            correct = int((logits.argmax(dim=1) == yt).sum().item())
            seconds = time.perf_counter() - t0
            history.steps.append(StepRecord(epoch, step, update, n, loss_value, correct, seconds, t_data))
            seen += n
            loss_sum += loss_value * n
            correct_sum += correct
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        bar.close()
        if pending:  # max_steps cut a group short: apply what was accumulated, as minigrad does
            _apply_update(optimizer, warmup, pending)
            update += 1
            history.steps[-1].update = update
        history.epochs.append(EpochRecord(epoch, time.perf_counter() - t_epoch, seen, update,
                                          loss_sum / max(seen, 1), correct_sum / max(seen, 1)))
        if max_steps is not None and step >= max_steps:
            break
    return history


def _apply_update(optimizer: Optimizer, warmup, group_samples: int | None) -> None:
    if group_samples is not None:
        with torch.no_grad():
            for p in optimizer.params:
                if p.grad is not None:
                    p.grad.mul_(1.0 / group_samples)
    if warmup is not None:
        warmup.step()
    optimizer.step()
    optimizer.zero_grad()


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader) -> dict:
    """Mean loss and accuracy over ``loader`` in eval mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in loader:
        xt, yt = _as_tensor(x), _as_tensor(y)
        logits = model(xt)
        n = int(xt.shape[0])
        loss_sum += torch.nn.functional.cross_entropy(logits, yt).item() * n
        correct += int((logits.argmax(dim=1) == yt).sum().item())
        seen += n
    model.train(was_training)
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "samples": seen}


@torch.no_grad()
def predict(model: torch.nn.Module, x) -> np.ndarray:
    """Logits for one batch as a numpy array (inference: no autograd; call ``model.eval()`` first)."""
    return model(_as_tensor(x)).numpy()
