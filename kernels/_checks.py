"""Argument validation shared by every backend's public wrappers.

Each check raises with a message that names the kernel, the argument, what was expected and what came, e.g.
``conv2d: x must be 4-D (N, C, H, W); got shape (28, 28)``. Checks read only shapes and dtypes (plus the
target range, which needs one reduction), so they work unchanged on NumPy and CuPy arrays.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _float_array(op: str, name: str, a, ndim: int | None = None, layout: str = ""):
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(f"{op}: {name} must be an array; got {type(a).__name__}")
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D {layout}; got shape {tuple(shape)}".replace("  ", " "))
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64; got {np.dtype(dtype)}")


def _same_dtype(op: str, ref_name: str, ref, **others) -> None:
    for name, a in others.items():
        if a is not None and a.dtype != ref.dtype:
            raise TypeError(f"{op}: {name} dtype {a.dtype} does not match {ref_name} dtype {ref.dtype}")


def _bias(op: str, b, n: int, layout: str) -> None:
    """An optional bias must be a float vector of length n."""
    if b is None:
        return
    _float_array(op, "b", b, 1, layout)
    if b.shape[0] != n:
        raise ValueError(f"{op}: b must have shape ({n},); got {tuple(b.shape)}")


def _positive_int(op: str, name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{op}: {name} must be an integer >= {minimum}; got {v!r}")
    return int(v)


def check_conv2d(x, w, b, stride, padding):
    """Validate conv2d arguments; return (N, C, H, W, F, KH, KW, OH, OW)."""
    _float_array("conv2d", "x", x, 4, "(N, C, H, W)")
    _float_array("conv2d", "w", w, 4, "(F, C, KH, KW)")
    N, C, H, W = x.shape
    F, Cw, KH, KW = w.shape
    if Cw != C:
        raise ValueError(f"conv2d: w has {Cw} input channels but x has {C} (x shape {tuple(x.shape)}, "
                         f"w shape {tuple(w.shape)})")
    _bias("conv2d", b, F, "(F,)")
    _same_dtype("conv2d", "x", x, w=w, b=b)
    stride = _positive_int("conv2d", "stride", stride)
    padding = _positive_int("conv2d", "padding", padding, minimum=0)
    OH = (H + 2 * padding - KH) // stride + 1
    OW = (W + 2 * padding - KW) // stride + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"conv2d: kernel {KH}x{KW} does not fit input {H}x{W} with padding {padding}")
    return N, C, H, W, F, KH, KW, OH, OW


def check_maxpool2d(x, kernel, stride, op="maxpool2d"):
    """Validate max-pool arguments (of ``op``: maxpool2d or relu_maxpool2d); return (N, C, H, W, OH, OW) (floor
    mode, no padding, like PyTorch)."""
    _float_array(op, "x", x, 4, "(N, C, H, W)")
    kernel = _positive_int(op, "kernel", kernel)
    stride = _positive_int(op, "stride", stride)
    N, C, H, W = x.shape
    if kernel > H or kernel > W:
        raise ValueError(f"{op}: kernel {kernel} is larger than the input {H}x{W}")
    return N, C, H, W, (H - kernel) // stride + 1, (W - kernel) // stride + 1


def check_linear(x, w, b):
    """Validate linear arguments; return (N, IN, OUT)."""
    _float_array("linear", "x", x, 2, "(N, in_features)")
    _float_array("linear", "w", w, 2, "(out_features, in_features)")
    N, IN = x.shape
    OUT, INw = w.shape
    if INw != IN:
        raise ValueError(f"linear: w expects {INw} input features but x has {IN} (x shape {tuple(x.shape)}, "
                         f"w shape {tuple(w.shape)})")
    _bias("linear", b, OUT, "(out_features,)")
    _same_dtype("linear", "x", x, w=w, b=b)
    return N, IN, OUT


def check_float(op: str, name: str, x) -> None:
    _float_array(op, name, x)


def check_flag(op: str, name: str, value) -> None:
    """A switch argument must be a bool (numpy's bool included), so that a shape or an array passed by mistake
    is refused instead of read as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool; got {type(value).__name__}")


def check_grad(op: str, dout, like_shape) -> None:
    """The upstream gradient must have the forward output's shape."""
    if tuple(dout.shape) != tuple(like_shape):
        raise ValueError(f"{op}: dout must have shape {tuple(like_shape)}; got {tuple(dout.shape)}")


def check_logits(op: str, logits) -> None:
    _float_array(op, "logits", logits, 2, "(N, classes)")


def check_xent(logits, targets, check_range: bool = True) -> None:
    """Validate softmax-xent arguments: logits (N, C) float with N >= 1, targets (N,) integers in [0, C).

    An empty batch is refused here, once for every backend: the loss is a mean over the batch, and a mean of
    nothing would otherwise be a ZeroDivisionError on some backends and a NaN with warnings on others.
    ``check_range=False`` skips the range of the targets, the one check that reads their values (on a GPU, a
    wait for the device that a CUDA-graph capture does not allow).
    """
    check_logits("cross_entropy", logits)
    N, C = logits.shape
    if N == 0:
        raise ValueError(f"cross_entropy: logits must have at least one row (a batch of 0 samples has no mean "
                         f"loss); got shape {tuple(logits.shape)}")
    shape = getattr(targets, "shape", None)
    if shape is None or len(shape) != 1:
        raise ValueError(f"cross_entropy: targets must be 1-D (N,); got shape {shape}")
    if shape[0] != N:
        raise ValueError(f"cross_entropy: targets has {shape[0]} entries but logits has a batch of {N}")
    if np.dtype(targets.dtype).kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices; got {np.dtype(targets.dtype)}")
    if check_range and (int(targets.min()) < 0 or int(targets.max()) >= C):
        raise ValueError(f"cross_entropy: targets must lie in [0, {C}); got values in "
                         f"[{int(targets.min())}, {int(targets.max())}]")


def check_dropout(x, p) -> None:
    _float_array("dropout", "x", x)
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1]; got {p}")


def check_batchnorm2d(x, gamma, beta, running_mean, running_var) -> int:
    """Validate batchnorm2d arguments; return C."""
    _float_array("batchnorm2d", "x", x, 4, "(N, C, H, W)")
    C = x.shape[1]
    for name, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        _float_array("batchnorm2d", name, a, 1, "(C,)")
        if a.shape[0] != C:
            raise ValueError(f"batchnorm2d: {name} must have shape ({C},); got {tuple(a.shape)}")
    _same_dtype("batchnorm2d", "x", x, gamma=gamma, beta=beta)
    return C


def check_update(op: str, p, g, **state) -> None:
    """Optimizer updates work in place: every state array must match the parameter exactly."""
    _float_array(op, "p", p)
    if not p.flags.c_contiguous:
        raise ValueError(f"{op}: p must be C-contiguous (it is updated in place)")
    for name, a in (("g", g), *state.items()):
        if a is None:
            continue
        if tuple(a.shape) != tuple(p.shape):
            raise ValueError(f"{op}: {name} must have the parameter's shape {tuple(p.shape)}; "
                             f"got {tuple(a.shape)}")
        if a.dtype != p.dtype:
            raise TypeError(f"{op}: {name} dtype {a.dtype} does not match p dtype {p.dtype}")
