"""Analytic work of every kernel call: floating-point operations and the bytes it must move at minimum.

One place for the formulas, used by the tracer, the roofline and the benchmarks' ``extra_info``. Counts are
of the mathematical operation, not of an implementation: a multiply-add is 2 FLOPs, a comparison in a max is
1, an exp/log/sqrt/divide is 1. Bytes are the compulsory traffic: every input read once and every output
written once, at the arrays' item size (a kernel that re-reads from DRAM moves more; that is what the
achieved GB/s reveals). A backward's cost is computed from the shapes its forward saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Cost:
    flops: float
    bytes: float

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.bytes + other.bytes)


def _size(a) -> int:
    return int(np.prod(a.shape)) if a is not None else 0


def _item(a) -> int:
    return np.dtype(a.dtype).itemsize


def conv2d(N, C, H, W, F, KH, KW, OH, OW, bias: bool, itemsize: int) -> tuple[Cost, Cost]:
    """(forward, backward) of a conv: the forward is N*F*OH*OW dot products of length C*KH*KW; the backward
    does that work twice (dx and dw) plus the bias sum."""
    macs = N * F * OH * OW * C * KH * KW
    out = N * F * OH * OW
    fwd = Cost(2 * macs + (out if bias else 0), itemsize * (N * C * H * W + F * C * KH * KW + (F if bias else 0) + out))
    bwd = Cost(4 * macs + (out if bias else 0),
               itemsize * (out + N * C * H * W + F * C * KH * KW  # read dy, x, w
                           + N * C * H * W + F * C * KH * KW + (F if bias else 0)))  # write dx, dw, db
    return fwd, bwd


def linear(N, IN, OUT, bias: bool, itemsize: int) -> tuple[Cost, Cost]:
    fwd = Cost(2 * N * IN * OUT + (N * OUT if bias else 0), itemsize * (N * IN + OUT * IN + (OUT if bias else 0) + N * OUT))
    bwd = Cost(4 * N * IN * OUT + (N * OUT if bias else 0),
               itemsize * (N * OUT + N * IN + OUT * IN + N * IN + OUT * IN + (OUT if bias else 0)))
    return fwd, bwd


def maxpool2d(N, C, H, W, OH, OW, kernel: int, itemsize: int) -> tuple[Cost, Cost]:
    """Forward: kernel*kernel - 1 comparisons per output; backward: one add per output into dx."""
    out = N * C * OH * OW
    fwd = Cost(out * (kernel * kernel - 1), itemsize * (N * C * H * W + out))
    bwd = Cost(out, itemsize * (out + N * C * H * W))
    return fwd, bwd


def elementwise(n: int, fwd_flops_per: float, bwd_flops_per: float, fwd_arrays: int, bwd_arrays: int,
                itemsize: int) -> tuple[Cost, Cost]:
    """An op touching n elements: ``*_arrays`` is how many n-sized arrays it reads plus writes."""
    return Cost(n * fwd_flops_per, itemsize * n * fwd_arrays), Cost(n * bwd_flops_per, itemsize * n * bwd_arrays)


def _conv_shape(args: tuple) -> tuple:
    """(N, C, H, W, F, KH, KW, OH, OW) of conv2d_forward's arguments (x, w, b, stride, padding)."""
    x, w, _, stride, padding = args
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    return N, C, H, W, F, KH, KW, (H + 2 * padding - KH) // stride + 1, (W + 2 * padding - KW) // stride + 1


def kernel_costs(name: str, args: tuple) -> tuple[Cost, Cost]:
    """(forward cost, backward cost) of the op whose forward kernel ``name`` was called with ``args``."""
    op = name[: -len("_forward")]
    x = args[0]
    it = _item(x)
    if op == "conv2d":
        return conv2d(*_conv_shape(args), args[2] is not None, it)
    if op == "linear":
        _, w, b = args
        return linear(x.shape[0], x.shape[1], w.shape[0], b is not None, it)
    if op in ("maxpool2d", "relu_maxpool2d"):  # the fused relu: one compare per output, counted in the pool's
        _, kernel, stride = args
        N, C, H, W = x.shape
        return maxpool2d(N, C, H, W, (H - kernel) // stride + 1, (W - kernel) // stride + 1, kernel, it)
    n = _size(x)
    if op == "relu":  # y = max(x, 0): 1 op; dx = dy where y > 0: 1 op
        return elementwise(n, 1, 1, 2, 3, it)
    if op == "log_softmax":  # max, subtract, exp, sum, log-subtract | sum, exp, multiply-subtract
        return elementwise(n, 5, 4, 2, 3, it)
    if op == "softmax_xent":  # max, subtract, exp, sum, divide | subtract onehot, scale
        return elementwise(n, 5, 2, 2, 2, it)
    if op == "dropout":  # mask multiply (the mask's generation is counted as 1 op per element)
        return elementwise(n, 2, 1, 3, 3, it)
    if op == "batchnorm2d":  # mean, var (2), normalise (2), scale-shift (2) | two reductions (3), dx (5)
        return elementwise(n, 7, 8, 2, 4, it)
    raise KeyError(f"no cost formula for kernel {name!r}")


def input_gradient_cost(name: str, args: tuple) -> Cost:
    """The part of the backward cost of the op whose forward kernel ``name`` got ``args`` that computes dx (its
    GEMM and its write): what a backward called with ``need_dx=False`` (a first layer) does not do. Zero for
    ops without that flag."""
    op = name[: -len("_forward")]
    x = args[0]
    if op == "conv2d":
        N, C, H, W, F, KH, KW, OH, OW = _conv_shape(args)
        return Cost(2 * N * F * OH * OW * C * KH * KW, _item(x) * N * C * H * W)
    if op == "linear":
        N, IN = x.shape
        return Cost(2 * N * IN * args[1].shape[0], _item(x) * N * IN)
    return Cost(0.0, 0.0)


def update_cost(name: str, args: tuple) -> Cost:
    """Cost of an optimizer update call (sgd_update / adam_update) on one parameter."""
    p = args[0]
    n, it = _size(p), _item(p)
    if name == "sgd_update":
        _, _, buf, _, momentum, nesterov, weight_decay = args
        flops = 2 + (2 if weight_decay else 0) + (2 if momentum else 0) + (2 if nesterov else 0)
        arrays = 3 + (2 if buf is not None else 0)  # read p, g, write p (+ read/write buf)
        return Cost(n * flops, it * n * arrays)
    if name == "adam_update":
        weight_decay = args[9]
        # m (3), v (4), bias corrections and the step (sqrt, divide, add eps, divide, multiply-subtract: 6)
        return Cost(n * (13 + (2 if weight_decay else 0)), it * n * 7)  # read p, g, m, v; write p, m, v
    raise KeyError(f"no cost formula for kernel {name!r}")
