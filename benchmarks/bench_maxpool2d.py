"""maxpool2d_forward / maxpool2d_backward (2x2, stride 2) on the pooling layers of the reference models."""

import functools

from benchmarks.conftest import CHECK_SAMPLES, POOL, close_head, uniform
from minigrad import backend as B
from minigrad.kernels import reference as ref
from minigrad.profiling import costs

#: case -> per-sample input shape (C, H, W); every pool is 2x2 with stride 2
CASES = {"lenet5.pool1": (6, 24, 24), "convnet.pool": (64, 24, 24)}
KERNEL = STRIDE = 2


@functools.lru_cache(maxsize=2)
def data(case, dtype):
    C, H, W = CASES[case]
    return uniform((POOL, C, H, W), dtype, "x"), uniform((POOL, C, H // STRIDE, W // STRIDE), dtype, "dy")


@functools.lru_cache(maxsize=None)
def reference(case, dtype):
    """y and dx of the reference on the first CHECK_SAMPLES samples (pooling never mixes samples)."""
    x, dy = data(case, dtype)
    y, cache = ref.maxpool2d_forward(x[:CHECK_SAMPLES], KERNEL, STRIDE)
    return y, ref.maxpool2d_backward(dy[:CHECK_SAMPLES], cache)


def test_maxpool2d_forward(case, batch, bench, dtype):
    x = B.k.asarray(data(case, dtype)[0][:batch])
    fwd = B.k.maxpool2d_forward
    y, _ = bench(lambda: fwd(x, KERNEL, STRIDE), op="maxpool2d_forward", case=case, batch=batch,
                 cost=costs.kernel_costs("maxpool2d_forward", (x, KERNEL, STRIDE))[0])
    close_head(y, reference(case, dtype)[0], dtype, "y")


def test_maxpool2d_backward(case, batch, bench, dtype):
    x, dy = (B.k.asarray(a[:batch]) for a in data(case, dtype))
    _, cache = B.k.maxpool2d_forward(x, KERNEL, STRIDE)
    bwd = B.k.maxpool2d_backward
    dx = bench(lambda: bwd(dy, cache), op="maxpool2d_backward", case=case, batch=batch,
               cost=costs.kernel_costs("maxpool2d_forward", (x, KERNEL, STRIDE))[1])
    close_head(dx, reference(case, dtype)[1], dtype, "dx")
