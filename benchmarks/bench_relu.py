"""relu_forward / relu_backward on mlp's hidden activation and on convnet's largest activation (conv2's)."""

import functools

from benchmarks.conftest import CHECK_SAMPLES, POOL, close_head, uniform
from minigrad import backend as B
from minigrad.kernels import reference as ref
from minigrad.profiling import costs

#: case -> per-sample shape of the activation
CASES = {"mlp.hidden": (256,), "convnet.conv2": (64, 24, 24)}


@functools.lru_cache(maxsize=2)
def data(case, dtype):
    shape = (POOL, *CASES[case])
    return uniform(shape, dtype, "x"), uniform(shape, dtype, "dy")


@functools.lru_cache(maxsize=None)
def reference(case, dtype):
    x, dy = data(case, dtype)
    y, cache = ref.relu_forward(x[:CHECK_SAMPLES])
    return y, ref.relu_backward(dy[:CHECK_SAMPLES], cache)


def test_relu_forward(case, batch, bench, dtype):
    x = B.k.asarray(data(case, dtype)[0][:batch])
    fwd = B.k.relu_forward
    y, _ = bench(lambda: fwd(x), op="relu_forward", case=case, batch=batch,
                 cost=costs.kernel_costs("relu_forward", (x,))[0])
    close_head(y, reference(case, dtype)[0], dtype, "y")


def test_relu_backward(case, batch, bench, dtype):
    x, dy = (B.k.asarray(a[:batch]) for a in data(case, dtype))
    _, cache = B.k.relu_forward(x)
    bwd = B.k.relu_backward
    dx = bench(lambda: bwd(dy, cache), op="relu_backward", case=case, batch=batch,
               cost=costs.kernel_costs("relu_forward", (x,))[1])
    close_head(dx, reference(case, dtype)[1], dtype, "dx")
