"""PyTorch twins of minigrad models, trained exactly the way minigrad trains, for like-for-like timing.

Import this only when torch is importable (``python -m minigrad.bench --backend torch`` checks first);
minigrad itself never depends on torch.

Like for like means:
- architecture: the twin is translated layer by layer from the minigrad model itself, so it has the same
  layers, sizes and order, hence the same state-dict keys (``1.weight`` ...), for any of the reference models;
- initial weights: loaded from the minigrad model's ``state_dict()``;
- data order: the twin consumes the same minigrad ``DataLoader`` (host arrays), batch for batch;
- optimizer: torch's SGD (momentum, dampening 0) or Adam, the rules minigrad's optimizers copy;
- timing and accounting: not a copy of the loop but the loop itself: ``ADAPTER`` lets
  ``minigrad.train.fit`` / ``minigrad.loop.TrainLoop`` drive a torch model (same timing points, same
  gradient-accumulation rule, NaN/Inf check, update counting, same ``History``).

The bench runs the peer in a child process with the user's environment (``minigrad.bench.child``), so that
no thread setting of minigrad's reaches torch.
"""

from __future__ import annotations

import numpy as np
import torch

from minigrad import nn as mnn

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: The minigrad backend a PyTorch process selects for what it shares with minigrad (the loaders' host arrays,
#: the initial weights): the numpy and numba backends tune the process when selected (threads, the allocator,
#: ``kernels/_host.keep_freed_memory``), which the peer must not inherit; the reference backend changes nothing.
PLUMBING_BACKEND = "reference"


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


def _as_tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array))


class TorchAdapter:
    """``minigrad.loop``'s view of a torch model fed numpy batches (the CPU build: nothing to synchronise)."""

    name = "torch"

    def forward(self, model, x):
        return model(_as_tensor(x))

    def loss(self, logits, y):
        return torch.nn.functional.cross_entropy(logits, _as_tensor(y))

    def item(self, loss) -> float:
        return loss.item()

    def backward(self, loss, scale: float | None) -> None:
        (loss if scale is None else loss * scale).backward()

    def scale_grads(self, model, factor: float) -> None:
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.mul_(factor)

    def correct(self, logits, y) -> int:
        return int((logits.argmax(dim=1) == _as_tensor(y)).sum().item())

    def no_grad(self):
        return torch.no_grad()

    def synchronize(self) -> None:
        pass


ADAPTER = TorchAdapter()


@torch.no_grad()
def predict(model: torch.nn.Module, x) -> np.ndarray:
    """Logits for one batch as a numpy array (inference: no autograd; call ``model.eval()`` first)."""
    return model(_as_tensor(x)).numpy()
