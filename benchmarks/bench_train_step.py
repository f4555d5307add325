"""One whole training step of each reference model: forward, loss, backward, SGD update (momentum 0.9),
and reading the loss back to the host, as ``minigrad.train.fit`` does every step.

This is the number the batch-size question is about: samples/s of a step against the batch size. Inputs
are synthetic MNIST-shaped batches (pixel values do not change the work). The step moves the model, so the
check snapshots the state the timed steps left (parameters and momentum buffers), runs the timed function
once more and compares its loss and every updated parameter with the numpy backend stepping from the same
snapshot. On the numpy backend itself only the loss's finiteness is checked here (tests/ holds its steps
to the reference). FLOPs and bytes per step are summed over the kernels of one traced step
(profiling.tracer).
"""

import functools

import numpy as np

import minigrad as mg
import minigrad.functional as F
from benchmarks.conftest import POOL, against_numpy, close
from minigrad import backend as B
from minigrad.models import get_model
from minigrad.profiling.costs import Cost
from minigrad.profiling.tracer import Tracer

CASES = ("mlp", "lenet5", "convnet")
LR, MOMENTUM = 0.01, 0.9


@functools.lru_cache(maxsize=2)
def data(dtype):
    """A pool of MNIST-shaped images in [0, 1) and labels in 0..9."""
    rng = np.random.default_rng(28)
    return rng.random((POOL, 1, 28, 28), dtype=np.dtype(dtype).type), rng.integers(0, 10, size=POOL)


def make_step(model, opt, x, y):
    """The timed step; returns the loss on the host."""
    x = mg.Tensor(x)
    y = B.k.asarray(y)

    def step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return B.k.to_numpy(loss.data)

    return step


def traced_cost(step) -> Cost:
    with Tracer() as tracer:
        step()
    return Cost(sum(e.flops for e in tracer.events), sum(e.bytes for e in tracer.events))


def numpy_step(case, dtype, params, buffers, x, y):
    """Loss and parameters after one numpy step from the given parameters and momentum buffers."""
    with mg.use_backend("numpy"):
        model = get_model(case, dtype)
        for p, value in zip(model.parameters(), params):
            p.data = value.copy()
        opt = mg.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        opt.buffers = [b.copy() for b in buffers]
        loss = make_step(model, opt, x, y)()
        return loss, [p.data for p in model.parameters()]


def test_train_step(case, batch, bench, dtype):
    mg.manual_seed(0)
    model = get_model(case, dtype)
    opt = mg.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    images, labels = data(dtype)
    x, y = images[:batch], labels[:batch]
    step = make_step(model, opt, x, y)
    loss = bench(step, op="train_step", case=case, batch=batch, cost=lambda: traced_cost(step),
                 info={"parameters": model.num_parameters()})
    assert np.isfinite(loss), f"loss {loss}"
    if not against_numpy():
        return
    params = [np.array(B.k.to_numpy(p.data)) for p in model.parameters()]
    buffers = [np.array(B.k.to_numpy(b)) for b in opt.buffers]
    loss = step()
    loss_np, params_np = numpy_step(case, dtype, params, buffers, x, y)
    close(loss, loss_np, dtype, "loss")
    for (name, p), want in zip(model.named_parameters(), params_np):
        close(p.data, want, dtype, name)
