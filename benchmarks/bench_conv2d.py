"""conv2d_forward / conv2d_backward on the convolutions of the reference models (stride 1, no padding).

lenet5.conv2 is small and channel-rich, convnet.conv1 has a single input channel (little arithmetic per
byte moved), convnet.conv2 carries most of convnet's FLOPs.
"""

import functools

from benchmarks.conftest import CHECK_SAMPLES, POOL, against_numpy, close, close_head, uniform
from minigrad import backend as B
from minigrad.kernels import numpy_ops
from minigrad.kernels import reference as ref
from minigrad.profiling import costs

#: case -> (C, H, W, F, K): x (B, C, H, W), w (F, C, K, K), b (F,)
CASES = {
    "lenet5.conv2": (6, 12, 12, 16, 5),
    "convnet.conv1": (1, 28, 28, 32, 3),
    "convnet.conv2": (32, 26, 26, 64, 3),
}


@functools.lru_cache(maxsize=2)
def data(case, dtype):
    """x, w, b and dy for POOL samples; w is scaled like PyTorch's init so outputs stay O(1)."""
    C, H, W, F, K = CASES[case]
    bound = (C * K * K) ** -0.5
    x = uniform((POOL, C, H, W), dtype, "x")
    w = uniform((F, C, K, K), dtype, "w") * bound
    b = uniform((F,), dtype, "b") * bound
    dy = uniform((POOL, F, H - K + 1, W - K + 1), dtype, "dy")
    return x, w, b, dy


@functools.lru_cache(maxsize=None)
def reference(case, dtype):
    """y and dx of the reference on the first CHECK_SAMPLES samples."""
    x, w, b, dy = data(case, dtype)
    y, cache = ref.conv2d_forward(x[:CHECK_SAMPLES], w, b, 1, 0)
    dx, _, _ = ref.conv2d_backward(dy[:CHECK_SAMPLES], cache)
    return y, dx


@functools.lru_cache(maxsize=2)
def numpy_grads(case, dtype, batch):
    """dw and db of the numpy backend on the full batch."""
    x, w, b, dy = data(case, dtype)
    _, cache = numpy_ops.conv2d_forward(x[:batch], w, b, 1, 0)
    _, dw, db = numpy_ops.conv2d_backward(dy[:batch], cache)
    return dw, db


def inputs(case, dtype, batch):
    x, w, b, dy = data(case, dtype)
    return B.k.asarray(x[:batch]), B.k.asarray(w), B.k.asarray(b), B.k.asarray(dy[:batch])


def test_conv2d_forward(case, batch, bench, dtype):
    x, w, b, _ = inputs(case, dtype, batch)
    fwd = B.k.conv2d_forward
    y, _ = bench(lambda: fwd(x, w, b, 1, 0), op="conv2d_forward", case=case, batch=batch,
                 cost=costs.kernel_costs("conv2d_forward", (x, w, b, 1, 0))[0])
    close_head(y, reference(case, dtype)[0], dtype, "y")


def test_conv2d_backward(case, batch, bench, dtype):
    x, w, b, dy = inputs(case, dtype, batch)
    _, cache = B.k.conv2d_forward(x, w, b, 1, 0)
    bwd = B.k.conv2d_backward
    dx, dw, db = bench(lambda: bwd(dy, cache), op="conv2d_backward", case=case, batch=batch,
                       cost=costs.kernel_costs("conv2d_forward", (x, w, b, 1, 0))[1])
    close_head(dx, reference(case, dtype)[1], dtype, "dx")
    if against_numpy():
        dw_np, db_np = numpy_grads(case, dtype, batch)
        close(dw, dw_np, dtype, "dw")
        close(db, db_np, dtype, "db")
