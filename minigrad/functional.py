"""Differentiable ops with PyTorch's names and signatures, each a thin Function over one kernel pair.

Every op calls ``minigrad.backend.k.<kernel>_forward`` and keeps the kernel's cache for
``<kernel>_backward``; none of them knows which backend is live.
"""

from __future__ import annotations

import numbers

import numpy as np

from minigrad.kernels import _checks

from . import backend, rng
from .tensor import Function, Tensor

k = backend.k


def _pair_to_int(name: str, op: str, v) -> int:
    """Square kernels/strides only: accept n or (n, n)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError(f"{op}: {name} must be an int or a square pair (n, n); got {v!r}")
        v = v[0]
    return v


class _Conv2d(Function):
    def forward(self, x, w, b, stride, padding):
        y, self.cache = k.conv2d_forward(x, w, b, stride, padding)
        return y

    def backward(self, dy):
        return k.conv2d_backward(dy, self.cache, self.needs_grad[0])


def conv2d(x: Tensor, w: Tensor, b: Tensor | None = None, stride=1, padding=0) -> Tensor:
    """2-D cross-correlation. x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) -> (N, F, OH, OW)."""
    return _Conv2d.apply(x, w, b, stride=_pair_to_int("stride", "conv2d", stride),
                         padding=_pair_to_int("padding", "conv2d", padding))


def _pool_window(op: str, kernel_size, stride) -> dict:
    """The pooling ops' window as the kernels take it: an int kernel, and a stride that defaults to it."""
    kernel = _pair_to_int("kernel_size", op, kernel_size)
    return {"kernel": kernel, "stride": kernel if stride is None else _pair_to_int("stride", op, stride)}


class _MaxPool2d(Function):
    def forward(self, x, kernel, stride):
        y, self.cache = k.maxpool2d_forward(x, kernel, stride)
        return y

    def backward(self, dy):
        return (k.maxpool2d_backward(dy, self.cache),)


def max_pool2d(x: Tensor, kernel_size, stride=None) -> Tensor:
    """Max over kernel_size x kernel_size windows (stride defaults to kernel_size, floor mode).

    Ties send the gradient to the first maximum in row-major window order.
    """
    return _MaxPool2d.apply(x, **_pool_window("max_pool2d", kernel_size, stride))


class _ReLUMaxPool2d(Function):
    def forward(self, x, kernel, stride):
        y, self.cache = k.relu_maxpool2d_forward(x, kernel, stride)
        return y

    def backward(self, dy):
        return (k.relu_maxpool2d_backward(dy, self.cache),)


def relu_max_pool2d(x: Tensor, kernel_size, stride=None) -> Tensor:
    """``max_pool2d(relu(x), kernel_size, stride)`` as one kernel (relu_maxpool2d): the same values and
    gradients, with the relu on the pooled output instead of a pass over x (kernels/_fused.py says why they
    are equal). ``nn.Sequential`` runs a ReLU followed by a MaxPool2d through it."""
    return _ReLUMaxPool2d.apply(x, **_pool_window("relu_max_pool2d", kernel_size, stride))


class _Linear(Function):
    def forward(self, x, w, b):
        y, self.cache = k.linear_forward(x, w, b)
        return y

    def backward(self, dy):
        return k.linear_backward(dy, self.cache, self.needs_grad[0])


def linear(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """y = x w^T + b. x: (N, in), w: (out, in), b: (out,)."""
    return _Linear.apply(x, w, b)


class _ReLU(Function):
    def forward(self, x):
        y, self.cache = k.relu_forward(x)
        return y

    def backward(self, dy):
        return (k.relu_backward(dy, self.cache),)


def relu(x: Tensor) -> Tensor:
    return _ReLU.apply(x)


class _Flatten(Function):
    def forward(self, x, start_dim):
        self.shape = x.shape
        return x.reshape(x.shape[:start_dim] + (-1,))

    def backward(self, dy):
        return (dy.reshape(self.shape),)


def flatten(x: Tensor, start_dim: int = 1) -> Tensor:
    """Collapse dims from ``start_dim`` on (a view; the backward reshapes back)."""
    return _Flatten.apply(x, start_dim=start_dim)


class _LogSoftmax(Function):
    def forward(self, x):
        y, self.cache = k.log_softmax_forward(x)
        return y

    def backward(self, dy):
        return (k.log_softmax_backward(dy, self.cache),)


def log_softmax(x: Tensor, dim: int = 1) -> Tensor:
    """Row-wise log-softmax of a (N, C) tensor (dim must be 1 or -1)."""
    if dim not in (1, -1):
        raise ValueError(f"log_softmax: only dim=1 (the class axis of (N, C)) is supported; got dim={dim}")
    return _LogSoftmax.apply(x)


class _SoftmaxXent(Function):
    def forward(self, logits, targets):
        loss, self.cache = k.softmax_xent_forward(logits, targets)
        return loss

    def backward(self, dloss):
        return k.softmax_xent_backward(dloss, self.cache), None


def cross_entropy(logits: Tensor, targets) -> Tensor:
    """Mean cross-entropy of logits (N, C) against integer targets (N,) (array or Tensor), fused with softmax."""
    if isinstance(targets, Tensor):
        targets = targets.data
    elif not hasattr(targets, "dtype"):
        targets = k.asarray(np.asarray(targets))
    return _SoftmaxXent.apply(logits, targets)


def check_targets(logits: Tensor, targets) -> None:
    """cross_entropy's checks of its arguments (shapes, dtypes, the targets' range) without computing it: a
    ValueError or TypeError naming what is wrong, else nothing."""
    _checks.check_xent(logits.data, targets.data if isinstance(targets, Tensor) else targets)


class _Dropout(Function):
    def forward(self, x, p, seed):
        y, self.cache = k.dropout_forward(x, p, seed)
        return y

    def backward(self, dy):
        return (k.dropout_backward(dy, self.cache),)


def dropout(x: Tensor, p: float = 0.5, training: bool = True, seed: int | None = None) -> Tensor:
    """Inverted dropout; the identity when not training or p == 0. The mask comes from ``seed`` (drawn from
    minigrad's global generator when None, so ``mg.manual_seed`` makes it reproducible)."""
    if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1]; got {p!r}")
    if not training or p == 0:
        return x
    return _Dropout.apply(x, p=float(p), seed=rng.next_seed() if seed is None else int(seed))


class _BatchNorm2d(Function):
    def forward(self, x, gamma, beta, running_mean, running_var, training, momentum, eps):
        y, self.cache = k.batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)
        return y

    def backward(self, dy):
        dx, dgamma, dbeta = k.batchnorm2d_backward(dy, self.cache)
        return dx, dgamma, dbeta, None, None


def batch_norm2d(x: Tensor, running_mean, running_var, weight: Tensor, bias: Tensor, training: bool = True,
                 momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalisation over (N, H, W) per channel; running stats (arrays) are updated in place."""
    rm = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    rv = running_var.data if isinstance(running_var, Tensor) else running_var
    return _BatchNorm2d.apply(x, weight, bias, rm, rv, training=bool(training), momentum=float(momentum),
                              eps=float(eps))

