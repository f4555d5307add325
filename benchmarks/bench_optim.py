"""sgd_update / adam_update over every parameter of each reference model: the optimizer part of a step.

An update works in place, so the timed calls keep moving the state; the check therefore snapshots the
state the timed calls left, runs the timed function once more, and compares every parameter (and optimizer
buffer) with the numpy backend applied to the snapshot, and its first HEAD elements with the reference
(updates are elementwise, so a slice is a complete check of those elements). No batch here: the work is
set by the model's parameter count, recorded as extra_info["parameters"].
"""

import functools

import numpy as np

import minigrad as mg
from benchmarks.conftest import close, uniform
from minigrad import backend as B
from minigrad.kernels import numpy_ops
from minigrad.kernels import reference as ref
from minigrad.models import get_model
from minigrad.profiling import costs

CASES = ("mlp", "lenet5", "convnet")
SGD = dict(lr=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4)
ADAM = dict(step=10, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
HEAD = 64


@functools.lru_cache(maxsize=None)
def shapes(model):
    with mg.use_backend("numpy"):
        return tuple(p.shape for p in get_model(model).parameters())


@functools.lru_cache(maxsize=2)
def data(model, dtype, slots):
    """Per parameter: the parameter, its gradient and ``slots`` optimizer buffers (momentum; m and v)."""
    out = []
    for i, shape in enumerate(shapes(model)):
        p, g = uniform(shape, dtype, "p", i), uniform(shape, dtype, "g", i)
        bufs = [uniform(shape, dtype, "buf", i, j) for j in range(slots)]
        if slots == 2:  # Adam's second moment is a running mean of g*g: non-negative
            bufs[1] = np.abs(bufs[1])
        out.append((p, g, *bufs))
    return tuple(out)


def on_backend(model, dtype, slots):
    """Fresh backend copies (the updates write into them, the cached pool must stay as it is)."""
    return [[B.k.asarray(np.array(a)) for a in arrays] for arrays in data(model, dtype, slots)]


def snapshot(state):
    return [[np.array(B.k.to_numpy(a)) for a in arrays] for arrays in state]


def check(state, before, numpy_update, ref_update, dtype):
    """``state`` went through one more timed call from ``before``: compare it with what the numpy backend
    and the reference make of ``before``."""
    for i, (now, was) in enumerate(zip(state, before)):
        want = [np.array(a) for a in was]
        numpy_update(*want)
        head = [a.reshape(-1)[:HEAD].copy() for a in was]
        ref_update(*head)
        for j in (0, *range(2, len(now))):  # the parameter and the buffers; the gradient is read-only
            close(now[j], want[j], dtype, f"parameter {i}, array {j} vs numpy")
            close(B.k.to_numpy(now[j]).reshape(-1)[:HEAD], head[j], dtype,
                  f"parameter {i}, array {j} vs reference")


def test_sgd_update(case, bench, dtype):
    state = on_backend(case, dtype, 1)
    sgd = B.k.sgd_update
    hp = tuple(SGD.values())

    def step():
        for p, g, buf in state:
            sgd(p, g, buf, *hp)

    cost = sum((costs.update_cost("sgd_update", (p, g, buf, *hp)) for p, g, buf in state), costs.Cost(0, 0))
    bench(step, op="sgd_update", case=case, batch=None, cost=cost,
          info={"parameters": sum(int(np.prod(s)) for s in shapes(case))})
    before = snapshot(state)
    step()
    check(state, before, lambda p, g, b: numpy_ops.sgd_update(p, g, b, *hp),
          lambda p, g, b: ref.sgd_update(p, g, b, *hp), dtype)


def test_adam_update(case, bench, dtype):
    state = on_backend(case, dtype, 2)
    adam = B.k.adam_update
    hp = tuple(ADAM.values())

    def step():
        for p, g, m, v in state:
            adam(p, g, m, v, *hp)

    cost = sum((costs.update_cost("adam_update", (p, g, m, v, *hp)) for p, g, m, v in state), costs.Cost(0, 0))
    bench(step, op="adam_update", case=case, batch=None, cost=cost,
          info={"parameters": sum(int(np.prod(s)) for s in shapes(case))})
    before = snapshot(state)
    step()
    check(state, before, lambda p, g, m, v: numpy_ops.adam_update(p, g, m, v, *hp),
          lambda p, g, m, v: ref.adam_update(p, g, m, v, *hp), dtype)
