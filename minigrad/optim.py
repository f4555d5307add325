"""Optimizers (one in-place backend kernel per parameter), learning-rate scaling rules and warmup.

Both optimizers validate their arguments when they are built, through the same rules, so a bad value fails
at construction with a message naming the argument instead of turning every parameter into NaN at the first
``step()``: ``params`` must be a non-empty iterable of leaf Tensors that require grad (``nn.Parameter``s);
``lr`` is a finite number > 0; ``momentum`` and ``weight_decay`` are finite numbers >= 0; ``betas`` is a
pair of finite numbers in [0, 1); ``eps`` is a finite number > 0 (with eps = 0 a coordinate whose gradient
has been exactly 0 so far would update by 0/0 = NaN).
"""

from __future__ import annotations

import math
import numbers

from . import backend
from .tensor import Tensor, no_grad


def _check_params(owner: str, params) -> list:
    """``params`` as a list; every entry a leaf Tensor that requires grad, and at least one of them."""
    if isinstance(params, Tensor):
        raise TypeError(f"{owner}: params must be an iterable of Tensors (e.g. model.parameters()); "
                        f"got a single {type(params).__name__}")
    params = list(params)
    if not params:
        raise ValueError(f"{owner}: optimizer got an empty parameter list (params is empty)")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{owner}: params[{i}] must be a Tensor that requires grad (an nn.Parameter); "
                            f"got {type(p).__module__}.{type(p).__qualname__}")
        if not p.requires_grad:
            raise ValueError(f"{owner}: params[{i}] is a Tensor with requires_grad=False; it would never get "
                             f"a gradient (use nn.Parameter or requires_grad=True)")
        if p._ctx is not None:
            raise ValueError(f"{owner}: params[{i}] is not a leaf (it was computed by an op), so backward never "
                             f"sets its .grad; optimize the leaf Tensors it was computed from")
    return params


def _check_hyper(owner: str, name: str, value, low: float = 0.0, low_open: bool = False,
                 high: float | None = None) -> float:
    """``value`` as a float: a finite real number (not a bool) >= low (> low when low_open), < high if given."""
    interval = (f"> {low:g}" if low_open else f">= {low:g}") if high is None else f"in [{low:g}, {high:g})"
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and (value > low if low_open else value >= low) and (high is None or value < high))
    if not ok:
        raise ValueError(f"{owner}: {name} must be a finite number {interval}; got {value!r}")
    return float(value)


class Optimizer:
    """What SGD and Adam share: the parameter list, ``lr`` and ``weight_decay``, validated the same way."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        owner = type(self).__name__
        self.params = _check_params(owner, params)
        self.lr = _check_hyper(owner, "lr", lr, low_open=True)
        self.weight_decay = _check_hyper(owner, "weight_decay", weight_decay)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class SGD(Optimizer):
    """PyTorch's SGD: momentum (dampening 0), optional Nesterov, L2 weight decay added to the gradient."""

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        self.momentum = _check_hyper("SGD", "momentum", momentum)
        if nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov requires momentum > 0")
        self.nesterov = bool(nesterov)
        self.buffers = [backend.k.zeros(p.shape, dtype=p.dtype) if self.momentum else None for p in self.params]

    @no_grad()
    def step(self) -> None:
        for p, buf in zip(self.params, self.buffers):
            if p.grad is not None:
                backend.k.sgd_update(p.data, p.grad, buf, self.lr, self.momentum, self.nesterov,
                                     self.weight_decay)


class Adam(Optimizer):
    """PyTorch's Adam (non-decoupled weight decay), bias-corrected."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair (beta1, beta2); got {betas!r}")
        self.beta1 = _check_hyper("Adam", "betas[0]", betas[0], high=1.0)
        self.beta2 = _check_hyper("Adam", "betas[1]", betas[1], high=1.0)
        self.eps = _check_hyper("Adam", "eps", eps, low_open=True)
        self.m = [backend.k.zeros(p.shape, dtype=p.dtype) for p in self.params]
        self.v = [backend.k.zeros(p.shape, dtype=p.dtype) for p in self.params]
        self.steps = 0

    @no_grad()
    def step(self) -> None:
        self.steps += 1
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is not None:
                backend.k.adam_update(p.data, p.grad, m, v, self.steps, self.lr, self.beta1, self.beta2,
                                      self.eps, self.weight_decay)


def scale_lr(base_lr: float, batch_size: int, base_batch_size: int = 64, rule: str = "none") -> float:
    """Learning rate for ``batch_size`` given one tuned at ``base_batch_size``.

    "linear" (Goyal et al. 2017: lr grows with B), "sqrt" (keeps the gradient-noise scale: lr ~ sqrt(B)),
    "linear-sqrt" (linear below ``base_batch_size``, sqrt above: small batches get the small lr their noisy
    gradients need, large ones do not grow it as fast as linear), "none" (unchanged).
    """
    ratio = batch_size / base_batch_size
    if rule == "none":
        return base_lr
    if rule == "linear" or (rule == "linear-sqrt" and ratio < 1):
        return base_lr * ratio
    if rule in ("sqrt", "linear-sqrt"):
        return base_lr * math.sqrt(ratio)
    raise ValueError(f"scale_lr: rule must be 'none', 'linear', 'sqrt' or 'linear-sqrt'; got {rule!r}")


class LinearWarmup:
    """Ramp the optimizer's lr linearly from lr/warmup_steps to lr over ``warmup_steps`` calls to ``step()``.

    Call ``step()`` once per optimizer update, before ``optimizer.step()``.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int):
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"LinearWarmup: warmup_steps must be an integer >= 0; got {warmup_steps!r}")
        self.optimizer, self.warmup_steps = optimizer, warmup_steps
        self.target_lr = optimizer.lr
        self.count = 0

    def step(self) -> None:
        self.count += 1
        if self.warmup_steps:
            self.optimizer.lr = self.target_lr * min(1.0, self.count / self.warmup_steps)
