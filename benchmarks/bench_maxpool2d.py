"""maxpool2d and the fused relu_maxpool2d (2x2, stride 2), forward and backward, on the pooling layers of the
reference models (where the models run the fused kernel: each pool follows a ReLU)."""

import functools

import pytest

from benchmarks.conftest import CHECK_SAMPLES, POOL, close_head, uniform
from minigrad import backend as B
from minigrad.kernels import reference as ref
from minigrad.profiling import costs

#: case -> per-sample input shape (C, H, W); every pool is 2x2 with stride 2
CASES = {"lenet5.pool1": (6, 24, 24), "convnet.pool": (64, 24, 24)}
KERNEL = STRIDE = 2
OPS = ("maxpool2d", "relu_maxpool2d")


@functools.lru_cache(maxsize=2)
def data(case, dtype):
    C, H, W = CASES[case]
    return uniform((POOL, C, H, W), dtype, "x"), uniform((POOL, C, H // STRIDE, W // STRIDE), dtype, "dy")


@functools.lru_cache(maxsize=None)
def reference(op, case, dtype):
    """y and dx of the reference on the first CHECK_SAMPLES samples (pooling never mixes samples)."""
    x, dy = data(case, dtype)
    y, cache = getattr(ref, f"{op}_forward")(x[:CHECK_SAMPLES], KERNEL, STRIDE)
    return y, getattr(ref, f"{op}_backward")(dy[:CHECK_SAMPLES], cache)


@pytest.mark.parametrize("op", OPS)
def test_maxpool2d_forward(op, case, batch, bench, dtype):
    x = B.k.asarray(data(case, dtype)[0][:batch])
    fwd = getattr(B.k, f"{op}_forward")
    y, _ = bench(lambda: fwd(x, KERNEL, STRIDE), op=f"{op}_forward", case=case, batch=batch,
                 cost=costs.kernel_costs(f"{op}_forward", (x, KERNEL, STRIDE))[0])
    close_head(y, reference(op, case, dtype)[0], dtype, "y")


@pytest.mark.parametrize("op", OPS)
def test_maxpool2d_backward(op, case, batch, bench, dtype):
    x, dy = (B.k.asarray(a[:batch]) for a in data(case, dtype))
    _, cache = getattr(B.k, f"{op}_forward")(x, KERNEL, STRIDE)
    bwd = getattr(B.k, f"{op}_backward")
    dx = bench(lambda: bwd(dy, cache), op=f"{op}_backward", case=case, batch=batch,
               cost=costs.kernel_costs(f"{op}_forward", (x, KERNEL, STRIDE))[1])
    close_head(dx, reference(op, case, dtype)[1], dtype, "dx")
