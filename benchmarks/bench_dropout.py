"""dropout_forward / dropout_backward where PyTorch's MNIST example (convnet's origin) puts Dropout(0.25):
on the pooled activation, (B, 64, 12, 12).

The mask of element i comes from a counter-based stream at flat index i, so the first samples of a batch
get the same mask as those samples alone: the per-sample check against the reference holds.
"""

import functools

from benchmarks.conftest import CHECK_SAMPLES, POOL, close_head, uniform
from minigrad import backend as B
from minigrad.kernels import reference as ref
from minigrad.profiling import costs

#: case -> per-sample shape
CASES = {"convnet.pool": (64, 12, 12)}
P = 0.25
SEED = 20240601


@functools.lru_cache(maxsize=2)
def data(case, dtype):
    shape = (POOL, *CASES[case])
    return uniform(shape, dtype, "x"), uniform(shape, dtype, "dy")


@functools.lru_cache(maxsize=None)
def reference(case, dtype):
    """y and dx of the reference on the first CHECK_SAMPLES samples."""
    x, dy = data(case, dtype)
    y, mask = ref.dropout_forward(x[:CHECK_SAMPLES], P, SEED)
    return y, ref.dropout_backward(dy[:CHECK_SAMPLES], mask)


def test_dropout_forward(case, batch, bench, dtype):
    x = B.k.asarray(data(case, dtype)[0][:batch])
    fwd = B.k.dropout_forward
    y, _ = bench(lambda: fwd(x, P, SEED), op="dropout_forward", case=case, batch=batch,
                 cost=costs.kernel_costs("dropout_forward", (x, P, SEED))[0])
    close_head(y, reference(case, dtype)[0], dtype, "y")


def test_dropout_backward(case, batch, bench, dtype):
    x, dy = (B.k.asarray(a[:batch]) for a in data(case, dtype))
    _, mask = B.k.dropout_forward(x, P, SEED)
    bwd = B.k.dropout_backward
    dx = bench(lambda: bwd(dy, mask), op="dropout_backward", case=case, batch=batch,
               cost=costs.kernel_costs("dropout_forward", (x, P, SEED))[1])
    close_head(dx, reference(case, dtype)[1], dtype, "dx")
