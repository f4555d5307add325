"""linear_forward / linear_backward on the widest fully connected layers: mlp's first and convnet's first."""

import functools

from benchmarks.conftest import CHECK_SAMPLES, POOL, against_numpy, close, close_head, uniform
from minigrad import backend as B
from minigrad.kernels import numpy_ops
from minigrad.kernels import reference as ref
from minigrad.profiling import costs

#: case -> (IN, OUT): x (B, IN), w (OUT, IN), b (OUT,)
CASES = {"mlp.fc1": (784, 256), "convnet.fc1": (9216, 128)}


@functools.lru_cache(maxsize=2)
def data(case, dtype):
    """x, w, b and dy for POOL samples; w is scaled like PyTorch's init so outputs stay O(1)."""
    IN, OUT = CASES[case]
    bound = IN ** -0.5
    return (uniform((POOL, IN), dtype, "x"), uniform((OUT, IN), dtype, "w") * bound,
            uniform((OUT,), dtype, "b") * bound, uniform((POOL, OUT), dtype, "dy"))


@functools.lru_cache(maxsize=None)
def reference(case, dtype):
    """y and dx of the reference on the first CHECK_SAMPLES samples."""
    x, w, b, dy = data(case, dtype)
    y, cache = ref.linear_forward(x[:CHECK_SAMPLES], w, b)
    dx, _, _ = ref.linear_backward(dy[:CHECK_SAMPLES], cache)
    return y, dx


@functools.lru_cache(maxsize=2)
def numpy_grads(case, dtype, batch):
    """dw and db of the numpy backend on the full batch."""
    x, w, b, dy = data(case, dtype)
    _, cache = numpy_ops.linear_forward(x[:batch], w, b)
    _, dw, db = numpy_ops.linear_backward(dy[:batch], cache)
    return dw, db


def inputs(case, dtype, batch):
    x, w, b, dy = data(case, dtype)
    return B.k.asarray(x[:batch]), B.k.asarray(w), B.k.asarray(b), B.k.asarray(dy[:batch])


def test_linear_forward(case, batch, bench, dtype):
    x, w, b, _ = inputs(case, dtype, batch)
    fwd = B.k.linear_forward
    y, _ = bench(lambda: fwd(x, w, b), op="linear_forward", case=case, batch=batch,
                 cost=costs.kernel_costs("linear_forward", (x, w, b))[0])
    close_head(y, reference(case, dtype)[0], dtype, "y")


def test_linear_backward(case, batch, bench, dtype):
    x, w, b, dy = inputs(case, dtype, batch)
    _, cache = B.k.linear_forward(x, w, b)
    bwd = B.k.linear_backward
    dx, dw, db = bench(lambda: bwd(dy, cache), op="linear_backward", case=case, batch=batch,
                       cost=costs.kernel_costs("linear_forward", (x, w, b))[1])
    close_head(dx, reference(case, dtype)[1], dtype, "dx")
    if against_numpy():
        dw_np, db_np = numpy_grads(case, dtype, batch)
        close(dw, dw_np, dtype, "dw")
        close(db, db_np, dtype, "db")
