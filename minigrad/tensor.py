"""Tensor and the reverse-mode tape.

A Tensor wraps one backend array (``.data``). An op is a ``Function`` subclass: ``Function.apply`` runs its
``forward`` on arrays, and when any input requires grad it records the Function (holding the kernel's cache)
and its parents on the output. ``loss.backward()`` walks that graph in reverse topological order, calling
each Function's ``backward`` once and accumulating into ``.grad`` of the leaves that require grad.

A graph serves one backward, as in PyTorch: a second ``backward`` through any op already backpropagated
raises ``RuntimeError`` (it would add the same gradients to the leaves a second time) unless the earlier
backward was called with ``retain_graph=True``. Gradient accumulation builds a new graph per micro-batch
(a new forward), and each of those gets its own backward.

A Tensor holds numbers: floating-point data, or integers (class targets). Strings, objects, booleans and
complex numbers are refused with a ``TypeError`` naming the dtype.

Tensor never imports numpy for array math: arithmetic uses the arrays' own operators, so it works unchanged
on CuPy arrays. Only ``minigrad.backend`` knows which kernels run.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np

from . import backend

_grad_enabled = [True]


class no_grad(contextlib.ContextDecorator):
    """Context manager / decorator: ops inside record nothing on the tape (evaluation, optimizer steps)."""

    def __enter__(self):
        _grad_enabled.append(False)
        return self

    def __exit__(self, *exc):
        _grad_enabled.pop()
        return False


def is_grad_enabled() -> bool:
    return _grad_enabled[-1]


class Function:
    """One differentiable op. Subclasses implement ``forward(*arrays, **params) -> array`` (storing what the
    backward needs on ``self``) and ``backward(dout) -> tuple of input gradients`` (None where no gradient)."""

    __slots__ = ("parents", "needs_grad", "used", "__dict__")

    def forward(self, *arrays, **params):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, dout):  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params) -> "Tensor":
        fn = cls()
        arrays = [t.data if isinstance(t, Tensor) else t for t in inputs]
        out = fn.forward(*arrays, **params)
        needs = [isinstance(t, Tensor) and t.requires_grad for t in inputs]
        if is_grad_enabled() and any(needs):
            fn.parents = inputs
            fn.needs_grad = needs
            fn.used = False  # set by the backward that goes through it (unless that one retains the graph)
            return Tensor(out, requires_grad=True, _ctx=fn)
        return Tensor(out)


class Tensor:
    """A backend array with an optional gradient and the op that produced it."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx")

    def __init__(self, data, requires_grad: bool = False, dtype=None, _ctx: Function | None = None):
        if isinstance(data, Tensor):
            data = data.data
        # NumPy/CuPy arrays carry a NumPy dtype; Python scalars, lists and other libraries' arrays are looked at
        # through NumPy first, so that every backend refuses the same non-numeric data the same way
        if getattr(getattr(data, "dtype", None), "kind", None) is None:
            data = np.asarray(data)
        if data.dtype.kind not in "fiu":
            _refuse_dtype(data.dtype)
        if dtype is not None and np.dtype(dtype).kind not in "fiu":
            _refuse_dtype(dtype)
        self.data = backend.k.asarray(data, dtype=dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = _ctx

    # -- views of the array ------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def __len__(self) -> int:
        return self.data.shape[0]

    def numpy(self) -> np.ndarray:
        """A host NumPy copy/view of the data (copies from the GPU on cupy)."""
        return backend.k.to_numpy(self.data)

    def item(self) -> float:
        return self.numpy().item()

    def detach(self) -> "Tensor":
        return Tensor(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{grad})"

    # -- autograd ----------------------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``. ``grad`` defaults to 1 for a scalar.

        Gradients accumulate across backward calls on *different* graphs (zero them between steps). A graph
        is backpropagated once: a second backward through an op that a backward already went through raises
        ``RuntimeError`` before touching any ``.grad``, instead of adding the same gradients again. Pass
        ``retain_graph=True`` to the backward that should leave the graph usable for another one.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input of it requires grad)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: grad must be given for a non-scalar output of shape {self.shape}")
            grad = backend.k.asarray(np.ones(self.shape), dtype=self.dtype)
        elif isinstance(grad, Tensor):
            grad = grad.data
        elif isinstance(grad, numbers.Number):
            grad = backend.k.asarray(np.full(self.shape, grad), dtype=self.dtype)
        if tuple(grad.shape) != self.shape:
            raise ValueError(f"backward: grad must have shape {self.shape}; got {tuple(grad.shape)}")

        order = _topological_order(self)
        if any(node._ctx is not None and node._ctx.used for node in order):
            raise RuntimeError("backward: this graph was already used by a backward, and a second one would "
                               "add the same gradients to the leaves again; run the forward again for a new "
                               "graph, or pass retain_graph=True to the first backward")
        if not retain_graph:
            for node in order:
                if node._ctx is not None:
                    node._ctx.used = True
        grads = {id(self): grad}
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            fn = node._ctx
            if fn is None:  # a leaf
                node.grad = g if node.grad is None else node.grad + g
                continue
            in_grads = fn.backward(g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for parent, needs, pg in zip(fn.parents, fn.needs_grad, in_grads):
                if not needs or pg is None:
                    continue
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg

    def zero_grad(self) -> None:
        self.grad = None

    # -- a few arithmetic ops (enough for losses and tests; layers live in functional.py) ---------------
    def __add__(self, other):
        return Add.apply(self, _as_tensor(other, self))

    __radd__ = __add__

    def __sub__(self, other):
        return Add.apply(self, Neg.apply(_as_tensor(other, self)))

    def __rsub__(self, other):
        return Add.apply(_as_tensor(other, self), Neg.apply(self))

    def __neg__(self):
        return Neg.apply(self)

    def __mul__(self, other):
        if isinstance(other, numbers.Number):
            return Scale.apply(self, factor=other)
        return Mul.apply(self, _as_tensor(other, self))

    __rmul__ = __mul__

    def __truediv__(self, other):
        if not isinstance(other, numbers.Number):
            raise TypeError("Tensor division is supported by a Python number only")
        return Scale.apply(self, factor=1.0 / other)

    def sum(self) -> "Tensor":
        return Sum.apply(self)

    def mean(self) -> "Tensor":
        return Scale.apply(Sum.apply(self), factor=1.0 / self.data.size)

    def reshape(self, *shape) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=shape)


def _refuse_dtype(dtype) -> None:
    """A Tensor holds floating-point data or integers (class targets); nothing else has kernels here."""
    raise TypeError(f"Tensor: data must be numeric (floating point, or integers such as class targets); "
                    f"got dtype {np.dtype(dtype)}")


def _as_tensor(x, like: Tensor) -> Tensor:
    if isinstance(x, Tensor):
        return x
    return Tensor(backend.k.asarray(np.broadcast_to(np.asarray(x, dtype=like.dtype), like.shape)))


def _topological_order(root: Tensor) -> list[Tensor]:
    """Nodes reachable from root, each after all of its parents (iterative: deep graphs must not recurse)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for parent, needs in zip(node._ctx.parents, node._ctx.needs_grad):
                if needs and id(parent) not in seen:
                    stack.append((parent, False))
    return order


def _same_shape(op, a, b):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{op}: operands must have the same shape (no silent broadcasting); "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


class Add(Function):
    def forward(self, a, b):
        _same_shape("add", a, b)
        return a + b

    def backward(self, dout):
        return dout, dout


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, dout):
        return (-dout,)


class Mul(Function):
    def forward(self, a, b):
        _same_shape("mul", a, b)
        self.a, self.b = a, b
        return a * b

    def backward(self, dout):
        return dout * self.b, dout * self.a


class Scale(Function):
    def forward(self, a, factor):
        self.factor = factor
        return a * a.dtype.type(factor)

    def backward(self, dout):
        return (dout * dout.dtype.type(self.factor),)


class Sum(Function):
    def forward(self, a):
        self.shape, self.dtype = a.shape, a.dtype
        return a.sum()

    def backward(self, dout):
        return (backend.k.zeros(self.shape, dtype=self.dtype) + dout,)


class Reshape(Function):
    def forward(self, a, shape):
        self.in_shape = a.shape
        return a.reshape(shape)

    def backward(self, dout):
        return (dout.reshape(self.in_shape),)

