"""log_softmax_forward / log_softmax_backward on a batch of 10-class logits (the output of every model)."""

import functools

from benchmarks.conftest import CHECK_SAMPLES, POOL, close_head, uniform
from minigrad import backend as B
from minigrad.kernels import reference as ref
from minigrad.profiling import costs

#: case -> classes
CASES = {"logits10": 10}


@functools.lru_cache(maxsize=2)
def data(case, dtype):
    """Logits spread over +-20, so that the max-subtraction matters, and an upstream gradient."""
    shape = (POOL, CASES[case])
    return uniform(shape, dtype, "x") * 20, uniform(shape, dtype, "dy")


@functools.lru_cache(maxsize=None)
def reference(case, dtype):
    """y and dx of the reference on the first CHECK_SAMPLES rows (log_softmax works row by row)."""
    x, dy = data(case, dtype)
    y, cache = ref.log_softmax_forward(x[:CHECK_SAMPLES])
    return y, ref.log_softmax_backward(dy[:CHECK_SAMPLES], cache)


def test_log_softmax_forward(case, batch, bench, dtype):
    x = B.k.asarray(data(case, dtype)[0][:batch])
    fwd = B.k.log_softmax_forward
    y, _ = bench(lambda: fwd(x), op="log_softmax_forward", case=case, batch=batch,
                 cost=costs.kernel_costs("log_softmax_forward", (x,))[0])
    close_head(y, reference(case, dtype)[0], dtype, "y")


def test_log_softmax_backward(case, batch, bench, dtype):
    x, dy = (B.k.asarray(a[:batch]) for a in data(case, dtype))
    _, cache = B.k.log_softmax_forward(x)
    bwd = B.k.log_softmax_backward
    dx = bench(lambda: bwd(dy, cache), op="log_softmax_backward", case=case, batch=batch,
               cost=costs.kernel_costs("log_softmax_forward", (x,))[1])
    close_head(dx, reference(case, dtype)[1], dtype, "dx")
