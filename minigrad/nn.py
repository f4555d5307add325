"""Layers with PyTorch's names, shapes and default initialisation."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterator

import numpy as np

from . import backend, functional as F, rng
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad=True)."""

    __slots__ = ()

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)


class BackendMismatch(RuntimeError):
    """A module was called under a backend whose arrays live elsewhere than the module's (host vs GPU)."""


class Module:
    """Base class: parameters and submodules are found by attribute, in definition order.

    A module knows the backend its arrays were made under (``.backend``) and where they live (``.device``:
    "host" for reference/numpy/numba, which share NumPy arrays, "cuda" for cupy). Moving between host
    backends needs nothing; calling a module under a backend on another device raises BackendMismatch
    naming both, instead of failing somewhere inside a kernel: ``to_backend()`` moves it.
    """

    def __init__(self):
        self.training = True
        self._adopt_live_backend()

    def forward(self, *args):  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, *args):
        if self.device != backend.device():
            raise BackendMismatch(
                f"{type(self).__name__}: its arrays are {self.device} arrays (made under backend "
                f"{self.backend!r}) but the live backend is {backend.get_backend()!r} ({backend.device()} "
                "arrays); call .to_backend() on the model after set_backend, or build it after switching")
        return self.forward(*args)

    def _adopt_live_backend(self) -> None:
        self.backend, self.device = backend.get_backend(), backend.device()

    def children(self) -> Iterator["Module"]:
        for v in vars(self).values():
            if isinstance(v, Module):
                yield v

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, v in vars(self).items():
            if isinstance(v, Parameter):
                yield prefix + name, v
            elif isinstance(v, Module):
                yield from v.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def buffers(self) -> Iterator[tuple[str, object]]:
        """Non-trainable state arrays (BatchNorm running stats), for state_dict and backend moves."""
        for name in getattr(self, "_buffer_names", ()):
            yield name, getattr(self, name)

    def train(self, mode: bool = True) -> "Module":
        self.training = mode
        for c in self.children():
            c.train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def num_parameters(self) -> int:
        return sum(int(p.data.size) for p in self.parameters())

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Host copies of parameters and buffers, keyed like PyTorch (``0.weight``, ``3.running_mean``)."""
        out = OrderedDict((n, backend.k.to_numpy(p.data).copy()) for n, p in self.named_parameters())
        for prefix, m in self._modules_with_prefix():
            for name, buf in m.buffers():
                out[prefix + name] = backend.k.to_numpy(buf).copy()
        return out

    def load_state_dict(self, state: dict) -> None:
        params = dict(self.named_parameters())
        expected = set(params) | {p + n for p, m in self._modules_with_prefix() for n, _ in m.buffers()}
        if set(state) != expected:
            raise KeyError(f"load_state_dict: keys differ; missing {sorted(expected - set(state))}, "
                           f"unexpected {sorted(set(state) - expected)}")
        for name, p in params.items():
            if tuple(state[name].shape) != p.shape:
                raise ValueError(f"load_state_dict: {name} must have shape {p.shape}; got {state[name].shape}")
            p.data = backend.k.asarray(np.array(state[name], dtype=p.dtype))
        for prefix, m in self._modules_with_prefix():
            for name, buf in list(m.buffers()):
                setattr(m, name, backend.k.asarray(np.array(state[prefix + name], dtype=buf.dtype)))
        for _, m in self._modules_with_prefix():
            m._adopt_live_backend()

    def to_backend(self) -> "Module":
        """Move parameters and buffers to the live backend's arrays (needed after switching to/from cupy)."""
        self.load_state_dict(self.state_dict())
        return self

    def astype(self, dtype) -> "Module":
        """Cast every parameter and buffer (float32 <-> float64)."""
        dtype = np.dtype(dtype)
        for p in self.parameters():
            p.data = backend.k.asarray(backend.k.to_numpy(p.data), dtype=dtype)
        for _, m in self._modules_with_prefix():
            for name, buf in list(m.buffers()):
                setattr(m, name, backend.k.asarray(backend.k.to_numpy(buf), dtype=dtype))
            m._adopt_live_backend()
        return self

    def _modules_with_prefix(self, prefix: str = ""):
        yield prefix, self
        for name, v in vars(self).items():
            if isinstance(v, Module):
                yield from v._modules_with_prefix(prefix + name + ".")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        kids = [f"  ({n}): " + repr(v).replace("\n", "\n  ") for n, v in vars(self).items() if isinstance(v, Module)]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(kids) + "\n)" if kids else ")")


def _uniform(shape, bound: float, dtype) -> Parameter:
    return Parameter(rng.generator().uniform(-bound, bound, size=shape), dtype=dtype)


class Conv2d(Module):
    """PyTorch's Conv2d: weight (out, in, k, k) and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (Kaiming-uniform with a=sqrt(5) reduces to that bound, which is PyTorch's default.)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, dtype="float32"):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("kernel_size", kernel_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Conv2d: {name} must be a positive integer; got {v!r}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding = stride, padding
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.weight = _uniform((out_channels, in_channels, kernel_size, kernel_size), bound, dtype)
        self.bias = _uniform((out_channels,), bound, dtype) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")


class Linear(Module):
    """PyTorch's Linear: weight (out, in), weight and bias ~ U(-1/sqrt(in), 1/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype="float32"):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Linear: {name} must be a positive integer; got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = _uniform((out_features, in_features), bound, dtype)
        self.bias = _uniform((out_features,), bound, dtype) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class MaxPool2d(Module):
    def __init__(self, kernel_size: int, stride: int | None = None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}"


class Flatten(Module):
    def forward(self, x):
        return F.flatten(x, 1)


class Dropout(Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must lie in [0, 1]; got {p!r}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class BatchNorm2d(Module):
    """Per-channel batch norm; weight=1, bias=0, running_mean=0, running_var=1 at start (PyTorch)."""

    _buffer_names = ("running_mean", "running_var")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype="float32"):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features), dtype=dtype)
        self.bias = Parameter(np.zeros(num_features), dtype=dtype)
        self.running_mean = backend.k.asarray(np.zeros(num_features), dtype=dtype)
        self.running_var = backend.k.asarray(np.ones(num_features), dtype=dtype)

    def forward(self, x):
        return F.batch_norm2d(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                              self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class Sequential(Module):
    """Layers applied in order; children are named "0", "1", ... like PyTorch.

    A ReLU directly followed by a MaxPool2d runs as one fused kernel (``F.relu_max_pool2d``): the same values
    and gradients, without the relu's pass over the unpooled activation. ``runs()`` lists the layers as they
    run; the layers themselves, their names and the state dict are unchanged.
    """

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} must be a Module; got {type(layer).__name__}")
            setattr(self, str(i), layer)

    def __iter__(self):
        return iter(self.children())

    def __len__(self):
        return sum(1 for _ in self.children())

    def __getitem__(self, i):
        return list(self.children())[i]

    def runs(self) -> list[tuple[Module, ...]]:
        """The layers grouped as they run: (ReLU, MaxPool2d) pairs fused, every other layer on its own."""
        layers, out = list(self.children()), []
        while layers:
            if len(layers) > 1 and type(layers[0]) is ReLU and type(layers[1]) is MaxPool2d:
                out.append((layers.pop(0), layers.pop(0)))
            else:
                out.append((layers.pop(0),))
        return out

    def forward(self, x):
        for run in self.runs():
            if len(run) == 2:
                pool = run[1]
                x = F.relu_max_pool2d(x, pool.kernel_size, pool.stride)
            else:
                x = run[0](x)
        return x
