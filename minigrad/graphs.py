"""Captured training steps: when the training loop records its step as a CUDA graph and replays it.

On a GPU, a small batch's step is launch- and Python-bound: each of its ~100 kernels costs a launch and a
pass through the tape and the wrappers, whatever the batch. A backend whose kernel module has a
``StepGraph`` (cupy: ``kernels/cupy_ops.py``) can record the step's device work once and replay it with one
launch. This module owns the policy of ``TrainLoop(capture=True)``, the loop's default:

- which loops can be replayed at all (``unsupported``): minigrad's adapter, one micro-batch per update, no
  data-parallel reduce, SGD (Adam's bias correction is a host scalar that changes every step) and no active
  dropout (its seed is drawn on the host per call). Anything else runs eagerly, with ``reason`` saying why.
  A step with a per-step hook (``TrainLoop.around``) or a kernel hook set runs eagerly too: the tracer,
  which sets both, times each kernel, which a graph would hide;
- what a graph is valid for (its key): the batch's shapes and dtypes, the model's mode and the optimizer's
  hyperparameters, which are recorded into the graph as scalars. A new learning rate (a warmup, a
  schedule) is a new key, so the step runs eagerly until it holds still;
- when to record: on the second consecutive step with the same key. The first runs eagerly (it compiles
  the kernels and sizes the memory pool), and a one-off shape such as an epoch's last partial batch never
  pays for a recording. At most ``MAX_GRAPHS`` graphs are kept, the oldest dropped first;
- a recording that fails turns capture off for the loop, with a warning naming the error, and that step
  runs eagerly.

The replayed step is the loop's own step (``TrainLoop.device_step``: forward, loss, backward, update) with
one difference, documented where it shows: the loss is read after the update has been applied, so when it
is not finite the parameters have already taken that step (the eager step stops before it).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict

from . import backend
from . import nn, optim

#: Graphs kept per loop (one per batch shape and hyperparameters in use).
MAX_GRAPHS = 4


def _modules(module):
    yield module
    for child in module.children():
        yield from _modules(child)


def unsupported(loop) -> str | None:
    """Why ``loop``'s steps cannot be replayed from a graph on the live backend, or None when they can. A loop
    driving another engine is answered before the backend is looked at (looking selects the default one)."""
    if loop.adapter.name != "minigrad":
        return f"the loop drives {loop.adapter.name}, not minigrad"
    if getattr(backend.backend_module(), "StepGraph", None) is None:
        return f"backend {backend.get_backend()!r} does not record CUDA graphs"
    if loop.accumulate != 1:
        return "gradients are accumulated over micro-batches"
    if loop.reduce is not None:
        return "gradients are all-reduced between processes"
    if type(loop.optimizer) is not optim.SGD:
        return f"the optimizer is {type(loop.optimizer).__name__}, not SGD (its host-side state changes every step)"
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in _modules(loop.model)):
        return "the model has dropout (its mask's seed is drawn on the host at every call)"
    return None


class StepGraphs:
    """The graphs of one TrainLoop and the decision, per step, to replay, record or run eagerly."""

    def __init__(self, loop):
        self.loop = loop
        self.reason = unsupported(loop)
        self._graphs: OrderedDict = OrderedDict()
        self._last_key = None

    @property
    def enabled(self) -> bool:
        return self.reason is None

    def _key(self, x, y) -> tuple:
        opt = self.loop.optimizer
        return (tuple(x.shape), str(x.dtype), tuple(y.shape), str(y.dtype), self.loop.model.training, opt.lr,
                opt.momentum, opt.nesterov, opt.weight_decay)

    def step(self, x, y):
        """Run the loop's device step on (x, y) from a graph: its (logits, loss) arrays, or None when this
        step must run eagerly (the caller then runs it)."""
        if not self.enabled or self.loop.around is not contextlib.nullcontext or backend.kernel_hook() is not None:
            return None
        key = self._key(x, y)
        graph = self._graphs.get(key)
        if graph is None:
            previous, self._last_key = self._last_key, key
            if key != previous:
                return None
            try:
                graph = backend.backend_module().StepGraph(self.loop.device_step, x, y)
            except Exception as exc:
                self.reason = f"recording the step failed ({type(exc).__name__}: {exc})"
                self.loop.optimizer.zero_grad()  # gradients the failed recording assigned were never computed
                warnings.warn(f"TrainLoop: CUDA-graph capture is off for this loop: {self.reason}; steps run "
                              "eagerly", RuntimeWarning, stacklevel=3)
                return None
            self._graphs[key] = graph
            while len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        self._last_key = key
        return graph.replay(x, y)
