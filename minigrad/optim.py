"""Optimizers (one in-place backend kernel per parameter), learning-rate scaling rules and warmup."""

from __future__ import annotations

import math
import numbers

from . import backend
from .tensor import no_grad


class Optimizer:
    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: params is empty")
        if isinstance(lr, bool) or not (isinstance(lr, numbers.Real) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"{type(self).__name__}: lr must be a positive number; got {lr!r}")
        self.lr = float(lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class SGD(Optimizer):
    """PyTorch's SGD: momentum (dampening 0), optional Nesterov, L2 weight decay added to the gradient."""

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if momentum < 0:
            raise ValueError(f"SGD: momentum must be >= 0; got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"SGD: weight_decay must be >= 0; got {weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov requires momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)
        self.buffers = [backend.k.zeros(p.shape, dtype=p.dtype) if momentum else None for p in self.params]

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
        super().__init__(params, lr)
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adam: betas must lie in [0, 1); got {betas}")
        self.beta1, self.beta2 = map(float, betas)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
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
    "none" (unchanged).
    """
    ratio = batch_size / base_batch_size
    if rule == "none":
        return base_lr
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    raise ValueError(f"scale_lr: rule must be 'none', 'linear' or 'sqrt'; got {rule!r}")


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
