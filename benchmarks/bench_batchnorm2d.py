"""batchnorm2d_forward / batchnorm2d_backward in training mode, as a BatchNorm2d(32) after convnet's conv1
would run: x (B, 32, 26, 26). (The reference models have no batch norm; this is the shape it would see.)

Training-mode normalisation uses the batch's statistics, so no output is per-sample: y, dx, dgamma and
dbeta are all checked against the numpy backend on the full batch (see conftest.py).
"""

import functools

import numpy as np

from benchmarks.conftest import POOL, against_numpy, close, uniform
from minigrad import backend as B
from minigrad.kernels import numpy_ops
from minigrad.profiling import costs

#: case -> per-sample shape (C, H, W)
CASES = {"convnet.conv1": (32, 26, 26)}
MOMENTUM, EPS = 0.1, 1e-5


@functools.lru_cache(maxsize=2)
def data(case, dtype):
    """x (offset and scaled, so normalisation has work to do), gamma, beta and dy."""
    C, H, W = CASES[case]
    x = uniform((POOL, C, H, W), dtype, "x") * 3 + 1
    return x, uniform((C,), dtype, "gamma") + 1, uniform((C,), dtype, "beta"), uniform(x.shape, dtype, "dy")


def running_stats(case, dtype):
    """Fresh running mean and variance: the forward updates them in place."""
    C = CASES[case][0]
    return np.zeros(C, dtype=dtype), np.ones(C, dtype=dtype)


@functools.lru_cache(maxsize=2)
def numpy_results(case, dtype, batch):
    """y and (dx, dgamma, dbeta) of the numpy backend on the full batch."""
    x, gamma, beta, dy = data(case, dtype)
    y, cache = numpy_ops.batchnorm2d_forward(x[:batch], gamma, beta, *running_stats(case, dtype), True,
                                             MOMENTUM, EPS)
    return y, numpy_ops.batchnorm2d_backward(dy[:batch], cache)


def inputs(case, dtype, batch):
    x, gamma, beta, dy = data(case, dtype)
    return [B.k.asarray(a) for a in (x[:batch], gamma, beta, *running_stats(case, dtype), dy[:batch])]


def test_batchnorm2d_forward(case, batch, bench, dtype):
    x, gamma, beta, mean, var, _ = inputs(case, dtype, batch)
    fwd = B.k.batchnorm2d_forward
    args = (x, gamma, beta, mean, var, True, MOMENTUM, EPS)
    y, _ = bench(lambda: fwd(*args), op="batchnorm2d_forward", case=case, batch=batch,
                 cost=costs.kernel_costs("batchnorm2d_forward", args)[0])
    if against_numpy():
        close(y, numpy_results(case, dtype, batch)[0], dtype, "y")


def test_batchnorm2d_backward(case, batch, bench, dtype):
    x, gamma, beta, mean, var, dy = inputs(case, dtype, batch)
    args = (x, gamma, beta, mean, var, True, MOMENTUM, EPS)
    _, cache = B.k.batchnorm2d_forward(*args)
    bwd = B.k.batchnorm2d_backward
    grads = bench(lambda: bwd(dy, cache), op="batchnorm2d_backward", case=case, batch=batch,
                  cost=costs.kernel_costs("batchnorm2d_forward", args)[1])
    if against_numpy():
        for got, want, what in zip(grads, numpy_results(case, dtype, batch)[1], ("dx", "dgamma", "dbeta")):
            close(got, want, dtype, what)
