"""softmax_xent_forward / softmax_xent_backward: the fused loss of every training step (10 classes).

The loss is a batch mean and the gradient is scaled by 1/N, so nothing here is per-sample; the reference
is cheap at (N, 10), so both directions are checked against it on the full batch.
"""

import functools

import numpy as np

from benchmarks.conftest import POOL, close, uniform
from minigrad import backend as B
from minigrad.kernels import reference as ref
from minigrad.profiling import costs

#: case -> classes
CASES = {"logits10": 10}


@functools.lru_cache(maxsize=2)
def data(case, dtype):
    """Logits spread over +-20 (the max-subtraction matters) and integer targets."""
    C = CASES[case]
    targets = np.random.default_rng(C).integers(0, C, size=POOL)
    return uniform((POOL, C), dtype, "logits") * 20, targets


@functools.lru_cache(maxsize=2)
def reference(case, dtype, batch):
    """loss and dlogits (for dloss = 1) of the reference on the full batch."""
    logits, t = data(case, dtype)
    loss, cache = ref.softmax_xent_forward(logits[:batch], t[:batch])
    return loss, ref.softmax_xent_backward(np.asarray(1.0, dtype=dtype), cache)


def inputs(case, dtype, batch):
    logits, t = data(case, dtype)
    return B.k.asarray(logits[:batch]), B.k.asarray(t[:batch])


def test_softmax_xent_forward(case, batch, bench, dtype):
    logits, t = inputs(case, dtype, batch)
    fwd = B.k.softmax_xent_forward
    loss, _ = bench(lambda: fwd(logits, t), op="softmax_xent_forward", case=case, batch=batch,
                    cost=costs.kernel_costs("softmax_xent_forward", (logits, t))[0])
    close(loss, reference(case, dtype, batch)[0], dtype, "loss")


def test_softmax_xent_backward(case, batch, bench, dtype):
    logits, t = inputs(case, dtype, batch)
    _, cache = B.k.softmax_xent_forward(logits, t)
    dloss = B.k.asarray(np.asarray(1.0, dtype=dtype))
    bwd = B.k.softmax_xent_backward
    dlogits = bench(lambda: bwd(dloss, cache), op="softmax_xent_backward", case=case, batch=batch,
                    cost=costs.kernel_costs("softmax_xent_forward", (logits, t))[1])
    close(dlogits, reference(case, dtype, batch)[1], dtype, "dlogits")
