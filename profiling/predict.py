"""Epoch time from first principles: every kernel call of a training step, priced by the machine calibration.

From a model's layer shapes alone (nothing of it is run), ``predict`` lists the kernel calls of one training
step (forward, the loss, backward, one optimizer update per parameter), prices each with its backend's plan
(``plans.py``) and this machine's calibration (``calibration.py``), and adds the fixed costs:

    step(B)  = sum over kernel calls of (GEMMs + memory passes + whole kernels + the call's cost in a step)
             + layers x (module call, autograd node, optimizer entries: per run of layers and the loss)
             + the loop's own cost per step
    epoch(B) = (samples per epoch / B) x step(B)

The fixed costs come out of the calibration's raw times on synthetic models: the training loop's time outside
kernel calls on an eight-run CNN against a two-run model, per run (``calibration.synthetic_cnn``,
``calibration.step_model``), and what is left of the two-run model's for the loop itself (per step); the CNN's
at several batch sizes gives a run's cost against the step's working set, since Python run between kernels
slows as their data grows (``CostModel.layer_seconds``). A call's own cost in a step (its wrapper, and whether
the step leaves that warm) is what each kernel's calls took in the synthetic CNN's step at B=4 beyond their
priced terms, for the first call of a kernel in a step and for the calls after it (``CostModel._call_costs``),
and what the synthetic CNN's update calls, whose work is the same at every batch size, gained at its larger batch
sizes, against the step's working set (``CostModel.call_growth``: the wrapper's code and objects evicted by the
data the step passed over).
``measure`` runs the same batch sizes for the errors.

A whole kernel (relu, pooling, the loss, the update) is priced between its cache-warm curve and its ``~deep``
one (memory from DRAM) by the step's working set (``working_set``: the bytes a step touches between two uses
of the same array), through the calibration's measured ``reach``: a step that fits the last-level cache
finds its arrays there, one that overflows it finds them in DRAM. A term that reads or writes arrays last used
a step ago (``Term.far``: a weight matrix, the forward's activations in the backward) is priced the same way
between its hot time and the time to bring those bytes from DRAM (``Calibration.far_seconds``, at its own rate
for a matrix-vector product: ``calibration.matrix_vector``), through the ``far`` reach.

On a GPU (cupy) the same calls are read by the cupy plans and priced by the device's calibration
(``gpu_calibration``) in ``GpuCostModel``: a replayed CUDA graph's kernels' device time and the replay's fixed
cost (``load_calibration`` and ``cost_model`` choose by backend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import calibration, plans
from .plans import Call, Term

if TYPE_CHECKING:
    from . import gpu_calibration

INPUT_SHAPE = (1, 28, 28)   # the reference models' input: one MNIST image
LOSS_KERNEL = "softmax_xent"  # cross_entropy: the loss every reference model trains with


# -- a training step's kernel calls, from the layers' shapes ----------------------------------------------------


@dataclass
class StepCalls:
    calls: list[tuple[str, Call]]   # (layer, call) in the order the step makes them
    layers: int                     # ops on the autograd tape (every layer, and the loss)
    outputs: list[tuple[str, tuple]]  # (layer, the shape of its output) in the forward's order
    batch_size: int
    parameter_elements: int


def step_calls(model, batch_size: int, itemsize: int) -> StepCalls:
    """The kernel calls of one training step of ``model`` (an ``nn.Sequential``) at ``batch_size``."""
    from minigrad import nn

    shape = (batch_size, *INPUT_SHAPE)
    forward, backward, outputs = [], [], []
    need_dx = False  # the input needs no gradient until a layer with parameters has run
    runs, i = model.runs(), 0
    for run in runs:
        layer = run[-1]
        name = f"{i}:{'+'.join(type(r).__name__ for r in run)}"
        i += len(run)
        if len(run) == 2:  # ReLU + MaxPool2d: one fused kernel (nn.Sequential.runs)
            k, st = layer.kernel_size, layer.stride or layer.kernel_size
            forward.append((name, Call("relu_maxpool2d_forward", {"x": shape, "kernel": k, "itemsize": itemsize})))
            backward.append((name, Call("relu_maxpool2d_backward", {"x": shape, "kernel": k, "itemsize": itemsize})))
            shape = (*shape[:2], (shape[2] - k) // st + 1, (shape[3] - k) // st + 1)
        elif isinstance(layer, nn.Conv2d):
            N, C, H, W = shape
            s = dict(N=N, C=C, H=H, W=W, F=layer.out_channels, KH=layer.kernel_size, KW=layer.kernel_size,
                     stride=layer.stride, padding=layer.padding, bias=layer.bias is not None, need_dx=need_dx,
                     itemsize=itemsize)
            forward.append((name, Call("conv2d_forward", s)))
            backward.append((name, Call("conv2d_backward", s)))
            OH = (H + 2 * layer.padding - layer.kernel_size) // layer.stride + 1
            OW = (W + 2 * layer.padding - layer.kernel_size) // layer.stride + 1
            shape, need_dx = (N, layer.out_channels, OH, OW), True
        elif isinstance(layer, nn.Linear):
            s = dict(N=shape[0], IN=layer.in_features, OUT=layer.out_features, bias=layer.bias is not None,
                     need_dx=need_dx, itemsize=itemsize)
            forward.append((name, Call("linear_forward", s)))
            backward.append((name, Call("linear_backward", s)))
            shape, need_dx = (shape[0], layer.out_features), True
        elif isinstance(layer, nn.ReLU):
            forward.append((name, Call("relu_forward", {"x": shape, "itemsize": itemsize})))
            backward.append((name, Call("relu_backward", {"x": shape, "itemsize": itemsize})))
        elif isinstance(layer, nn.MaxPool2d):
            k, st = layer.kernel_size, layer.stride or layer.kernel_size
            forward.append((name, Call("maxpool2d_forward", {"x": shape, "kernel": k, "itemsize": itemsize})))
            backward.append((name, Call("maxpool2d_backward", {"x": shape, "kernel": k, "itemsize": itemsize})))
            shape = (*shape[:2], (shape[2] - k) // st + 1, (shape[3] - k) // st + 1)
        elif isinstance(layer, nn.Flatten):
            shape = (shape[0], int(math.prod(shape[1:])))
        else:
            raise KeyError(f"predict: no plan for layer {type(layer).__name__} (plans cover Conv2d, Linear, ReLU, "
                           "MaxPool2d, Flatten)")
        outputs.append((name, shape))
    loss = [("loss", Call(f"{LOSS_KERNEL}_forward", {"x": shape, "itemsize": itemsize})),
            ("loss", Call(f"{LOSS_KERNEL}_backward", {"x": shape, "itemsize": itemsize}))]
    params = list(model.parameters())
    updates = [(f"param {tuple(p.shape)}", Call("sgd_update", {"x": tuple(p.shape), "itemsize": itemsize}))
               for p in params]
    return StepCalls(forward + loss + backward[::-1] + updates, len(runs) + 1, outputs, batch_size,
                     sum(int(math.prod(p.shape)) for p in params))


def working_set(calls: StepCalls, backend: str, itemsize: int) -> int:
    """Bytes a training step touches between two uses of one array: the input, every layer's output and its
    gradient, each parameter with its gradient and momentum buffer, and on numpy each convolution's im2col
    matrix (kept from the forward for the backward), its gradient and the GEMM-layout copies of the output and
    its gradient (the Numba backend works on them chunk by chunk, in buffers that stay in cache)."""
    elements = math.prod((calls.batch_size, *INPUT_SHAPE)) + 2 * sum(math.prod(s) for _, s in calls.outputs)
    elements += 3 * calls.parameter_elements
    if backend == "numpy":
        for _, call in calls.calls:
            if call.kernel == "conv2d_forward":
                s = call.shape
                _, _, K, P = plans.conv_geometry(*(s[k] for k in ("N", "C", "H", "W", "F", "KH", "KW", "stride",
                                                                  "padding")))
                elements += 2 * s["N"] * P * (K + s["F"])
    return elements * itemsize


# -- pricing ---------------------------------------------------------------------------------------------------


@dataclass
class PricedTerm:
    term: Term
    seconds: float
    reason: str


@dataclass
class KernelCost:
    layer: str
    kernel: str
    seconds: float                 # its share of the step
    terms: list[PricedTerm]
    traced: float | None = None    # what the tracer, synchronising around it, would time where that differs
                                   # (on the GPU: the call's host cost and its device time; None: ``seconds``)


@dataclass
class StepPrediction:
    batch_size: int
    kernels: list[KernelCost]
    fixed: dict                      # {name: seconds per step} (FIXED: what each is)
    n_samples: int

    @property
    def kernel_seconds(self) -> float:
        return sum(k.seconds for k in self.kernels)

    @property
    def step_seconds(self) -> float:
        return self.kernel_seconds + sum(self.fixed.values())

    @property
    def epoch_seconds(self) -> float:
        return self.n_samples / self.batch_size * self.step_seconds

    def by_kernel(self, traced: bool = False) -> dict[str, float]:
        """Seconds per step by kernel name (every call of it summed); with ``traced``, what the tracer's table
        would report for them (``KernelCost.traced`` where a kernel has one)."""
        out: dict[str, float] = {}
        for k in self.kernels:
            seconds = k.traced if traced and k.traced is not None else k.seconds
            out[k.kernel] = out.get(k.kernel, 0.0) + seconds
        return out

    def to_dict(self) -> dict:
        return {"batch_size": self.batch_size, "step_seconds": self.step_seconds, "epoch_seconds": self.epoch_seconds,
                "fixed": self.fixed, "by_kernel": self.by_kernel(),
                "kernels": [{"layer": k.layer, "kernel": k.kernel, "seconds": k.seconds, "traced": k.traced,
                             "terms": [{"kind": t.term.kind, "what": t.term.what, "size": list(t.term.size),
                                        "count": t.term.count, "seconds": t.seconds, "reason": t.reason}
                                       for t in k.terms]} for k in self.kernels]}


@dataclass
class CostModel:
    """Prices kernel calls on one calibration and derives the fixed costs from its raw times."""
    cal: calibration.Calibration
    itemsize: int
    overheads: dict = field(default_factory=dict)

    def __post_init__(self):
        tiny = self.cal.data["tiny"]
        dtype = _DTYPES[self.itemsize]
        net = calibration.synthetic_cnn(dtype)
        small, cnn = len(calibration.step_model(dtype).runs()) + 1, len(net.runs()) + 1  # + the loss
        outside = dict(tiny["outside_cnn"])
        layer = max(0.0, (outside[calibration.OUTSIDE_BATCH] - tiny["outside_step"]) / (cnn - small))
        self.overheads["step"] = max(0.0, tiny["outside_step"] - small * layer)
        # a run's cost against the step's working set: the synthetic CNN's outside time at each batch size
        self.overheads["layer"] = self._against_working_set(
            net, {b: max(0.0, (seconds - self.overheads["step"]) / cnn) for b, seconds in outside.items()})
        # what a call pays beyond its cost in the synthetic CNN's step at OUTSIDE_BATCH for the data its step
        # passed over: the growth of that step's update calls, whose work is the same at every batch size
        updates = dict(tiny["update_calls"])
        self.overheads["call_growth"] = self._against_working_set(
            net, {b: max(0.0, seconds - updates[calibration.OUTSIDE_BATCH]) for b, seconds in updates.items()})
        self.overheads["calls"] = self._call_costs(net, tiny["cnn_calls"])

    def _against_working_set(self, net, by_batch: dict) -> list[tuple[float, float]]:
        """[(working set, seconds), ...]: a fixed cost measured in the synthetic CNN ``net``'s step at each batch
        size, against that step's working set, made non-decreasing (Python run between kernels never runs
        faster for more data between them: a dip is the noise of a difference of two times, largest where the
        step is longest; numpy, float32: a run's cost came out at 465 us at B=64 and 56 at B=256, where a step
        took 10 ms)."""
        points = sorted((working_set(step_calls(net, b, self.itemsize), self.cal.backend, self.itemsize), s)
                        for b, s in by_batch.items())
        return [(ws, float(s)) for (ws, _), s in zip(points, np.maximum.accumulate([s for _, s in points]))]

    @staticmethod
    def _at_working_set(points, working_set_bytes: float) -> float:
        """``_against_working_set``'s points interpolated in log working set (the nearest one outside them)."""
        sizes, seconds = zip(*points)
        return float(np.interp(math.log(max(working_set_bytes, 1.0)), np.log(sizes), seconds))

    def layer_seconds(self, working_set_bytes: float) -> float:
        """A run of layers' cost outside kernel calls in a step whose working set is ``working_set_bytes``: the
        synthetic CNN's, interpolated in log working set between its batch sizes (the nearest one outside)."""
        return self._at_working_set(self.overheads["layer"], working_set_bytes)

    def call_growth(self, working_set_bytes: float) -> float:
        """What each kernel call of a step whose working set is ``working_set_bytes`` pays beyond its cost in the
        synthetic CNN's step at OUTSIDE_BATCH: its wrapper's code and objects evicted by the data the step
        passed over since the call last ran (numba, float32: the loss's forward took 21-24 us in lenet5's step at
        B=16, 55-70 at B=256; mlp's four updates, the same parameters at both, 79 and 161 us)."""
        return self._at_working_set(self.overheads["call_growth"], working_set_bytes)

    def _call_costs(self, net, measured: list) -> dict:
        """{(kernel, again): seconds}: what a call of each kernel took in the step of the synthetic CNN ``net``
        (``measured``: ``calibration._in_step``'s calls) beyond its other priced terms at the same shapes (the
        mean over its calls), apart for the first call of the kernel in the step (``again`` False) and the calls
        after it."""
        calls = step_calls(net, calibration.OUTSIDE_BATCH, self.itemsize)
        if [name for name, _ in measured] != [call.kernel for _, call in calls.calls]:
            raise ValueError("calibration: its synthetic CNN's step made other kernel calls than the model plans "
                             "for it; measure the calibration again (profile predict --recalibrate)")
        ws = working_set(calls, self.cal.backend, self.itemsize)
        residuals: dict = {}
        for (_, call, again, priced), (_, seconds) in zip(self._priced_calls(calls, ws, with_call_terms=False),
                                                         measured):
            residuals.setdefault((call.kernel, again), []).append(seconds - sum(p.seconds for p in priced))
        return {key: max(float(np.mean(v)), -self._warm_floor(key[0])) for key, v in residuals.items()}

    def _priced_calls(self, calls: StepCalls, ws: float, with_call_terms: bool = True):
        """(layer, call, again, its priced terms) for each kernel call of a step, in order, at the step's working
        set ``ws`` (``again``: the same kernel ran earlier in the step); without ``with_call_terms``, their terms but
        the call's own cost (what ``_call_costs`` derives)."""
        deep, far = self.cal.deep_fraction(ws), self.cal.deep_fraction(ws, far=True)
        growth = self.call_growth(ws)
        for (layer, call), again in zip(calls.calls, _again(calls)):
            terms = plans.plan(self.cal.backend, call, self.cal.threads)
            yield layer, call, again, [self._price(t, deep, far, again, growth) for t in terms
                                       if with_call_terms or t.kind != "call"]

    def _warm_floor(self, kernel: str) -> float:
        """How much cheaper than priced a step's call of ``kernel`` may be: a GEMM kernel's terms are priced hot,
        so nothing; a whole kernel's curve is timed cold, and a warm step can save at most its cost on the
        smallest size measured (where the wrapper is nearly all of it)."""
        if kernel not in plans.CURVE_KERNELS:
            return 0.0
        return self.cal.curve_seconds(kernel, 1, calibration.WIDTHS[0] if kernel in plans.wide(self.cal.backend)
                                      else None)

    def _price(self, term: Term, deep: float = 0.0, far: float = 0.0, again: bool = False,
               growth: float = 0.0) -> PricedTerm:
        if term.kind == "gemm":
            m, n, k = term.size
            s = self.cal.gemm_seconds(term.what, m, n, k)
            base = plans.grid_layout(term.what)
            path = (", BLAS small-matrix path" if self.cal.splits_paths(base)
                    and calibration.small_path(base, m, n, k) else "")
            edge = self.cal.edge_factor(base, m, n, k)
            reason = (f"GEMM {m}x{n}x{k} ({term.what}{path}) at {2 * m * n * k / s / 1e9:.1f} GFLOP/s"
                      + (f", x{edge:.2f} for its sides that are not a power of two" if edge != 1.0 else ""))
            if term.what == plans.RUN:
                reason += f", x{self.cal.run_factor(m, n, k):.2f} in a run of products"
            elif term.what.endswith(plans.CHUNK):
                reason += f", x{self.cal.chunk_factor(base, m, n, k):.2f} in an im2col chunk's loop"
        elif term.kind in ("pass", "kernel"):
            elements, width = term.size[0], (term.size[1] if len(term.size) > 1 else None)
            deep = deep if term.kind == "kernel" else 0.0
            s = self.cal.curve_seconds(term.what, elements, width, deep)
            reason = (f"{term.what}: {elements:,} elements{f' in rows of {width}' if width else ''} at "
                      f"{_rate(elements / s)} elements/s ({_rate(elements * self.itemsize / s)}B/s)"
                      + (f", {100 * deep:.0f}% of the way to DRAM" if deep > 0 else ""))
            if term.strided:
                run, stride = term.strided
                missed = elements * self.cal.l1_conflict_seconds(run, stride)
                if missed > 0:
                    s += missed
                    reason += (f"; runs of {run} reads {stride:,} B apart overflow their L1 sets: "
                               f"+{1e6 * missed:.0f} us of L1 misses")
        elif term.kind == "call":
            calls = self.overheads["calls"]
            measured = (term.what, again) if (term.what, again) in calls else (term.what, False)
            s = calls.get(measured, 0.0)
            reason = (f"in a step, beyond its terms ({'a later' if measured[1] else 'the first'} call of the "
                      "kernel in the synthetic CNN's step)" if measured in calls
                      else "no call cost: the synthetic CNN's step does not call this kernel")
            if growth > 0:
                s += growth
                reason += f"; +{1e6 * growth:.1f} us for the data its step passed over since it last ran"
        elif term.kind == "split":
            s = self.cal.data["split_seconds"]
            reason = f"hand-off of a block to each of {term.size[0] - 1} worker thread(s)"
        else:
            raise KeyError(f"unknown term kind {term.kind!r}")
        if term.far and far > 0:
            vector = term.kind == "gemm" and calibration.matrix_vector(*term.size[:2])
            from_dram = self.cal.far_seconds(term.far * self.itemsize, vector)
            if from_dram > s:
                s += far * (from_dram - s)
                reason += (f"; {term.far * self.itemsize / 2**20:.1f} MiB last used a step ago, {100 * far:.0f}% of "
                           f"the way to {1e6 * from_dram:.0f} us from DRAM{' (matrix-vector)' if vector else ''}")
        if term.count > 1:
            reason += f", x{term.count}"
        return PricedTerm(term, s * term.count, reason)

    def predict(self, model, batch_size: int, n_samples: int) -> StepPrediction:
        calls = step_calls(model, batch_size, self.itemsize)
        ws = working_set(calls, self.cal.backend, self.itemsize)
        kernels = [KernelCost(layer, call.kernel, sum(p.seconds for p in priced), priced)
                   for layer, call, _, priced in self._priced_calls(calls, ws)]
        fixed = {"layers": calls.layers * self.layer_seconds(ws), "step": self.overheads["step"]}
        return StepPrediction(batch_size, kernels, fixed, n_samples)


def _rate(per_second: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.3g} {prefix}"
    return f"{per_second:.3g} "


def _again(calls: StepCalls) -> list[bool]:
    """For each call of the step, whether the same kernel ran earlier in the step."""
    seen: set = set()
    out = []
    for _, call in calls.calls:
        out.append(call.kernel in seen)
        seen.add(call.kernel)
    return out


_DTYPES = {4: "float32", 8: "float64"}


# -- the GPU: a replayed graph of kernels --------------------------------------------------------------------------


@dataclass
class GpuCostModel:
    """Prices a cupy training step on one GPU calibration (``gpu_calibration.GpuCalibration``).

    The training loop replays the step from a CUDA graph, whose kernels the device runs back to back while the
    host waits for the loss, so a replayed step is

        step(B) = sum over kernel calls of their device time in the graph (GEMMs and passes, each measured as a
                  node of a replayed graph: a node's cost is a floor under every one of them)
                + the replay's fixed cost (the loop's Python, the inputs' copies into the graph, its launch, the
                  loss read back)

    the fixed cost being what the synthetic CNN's replayed step took beyond its kernels' device time, priced by
    this same model (interpolated in log batch size between the batch sizes it ran at, the nearest outside).
    The tracer times each call eagerly between two synchronisations, so what it reports of a call is
    ``KernelCost.traced``: a synchronisation, then the call's host cost (its wrapper and launches) or, when the
    device takes longer, one launch and the device's time."""
    cal: "gpu_calibration.GpuCalibration"
    itemsize: int
    overheads: dict = field(default_factory=dict)

    def __post_init__(self):
        net = calibration.synthetic_cnn(_DTYPES[self.itemsize])
        self.overheads["replay"] = [
            (b, max(0.0, seconds - sum(k.seconds for k in self._kernels(step_calls(net, b, self.itemsize)))))
            for b, seconds in self.cal.data["tiny"]["replayed"]]

    def _kernels(self, calls: StepCalls) -> list[KernelCost]:
        out = []
        for layer, call in calls.calls:
            priced = [self._price(t) for t in plans.plan(self.cal.backend, call, 1) if t.kind != "call"]
            device = sum(p.seconds for p in priced)
            host = self.cal.host_seconds(call.kernel, call.shape.get("need_dx", True))
            traced = self.cal.sync_seconds + max(host, self.cal.launch_seconds + device)
            out.append(KernelCost(layer, call.kernel, device, priced, traced))
        return out

    def _price(self, term: Term) -> PricedTerm:
        if term.kind == "gemm":
            m, n, k, batch = term.size
            s = self.cal.gemm_seconds(term.what, m, n, k, batch)
            reason = (f"GEMM {f'{batch} x ' if batch > 1 else ''}{m}x{n}x{k} ({term.what}) at "
                      f"{2 * batch * m * n * k / s / 1e9:.1f} GFLOP/s")
        elif term.kind in ("pass", "kernel"):
            elements = term.size[0]
            s = self.cal.curve_seconds(term.what, elements)
            reason = (f"{term.what}: {elements:,} elements at {_rate(elements / s)} elements/s "
                      f"({_rate(elements * self.itemsize / s)}B/s)")
        else:
            raise KeyError(f"no GPU price for a {term.kind!r} term")
        return PricedTerm(term, s * term.count, reason + (f", x{term.count}" if term.count > 1 else ""))

    def replay_seconds(self, batch_size: int) -> float:
        sizes, seconds = zip(*self.overheads["replay"])
        return float(np.interp(math.log(batch_size), np.log(sizes), seconds))

    def predict(self, model, batch_size: int, n_samples: int) -> StepPrediction:
        kernels = self._kernels(step_calls(model, batch_size, self.itemsize))
        return StepPrediction(batch_size, kernels, {"replay": self.replay_seconds(batch_size)}, n_samples)


def load_calibration(backend: str, dtype: str = "float32", threads: int = 1, quick: bool = False,
                     remeasure: bool = False, progress=None) -> calibration.Measured:
    """The calibration a prediction on ``backend`` uses: this device's (cupy) or this machine's."""
    if backend in plans.GPU_BACKENDS:
        from . import gpu_calibration

        return gpu_calibration.load(dtype, quick=quick, remeasure=remeasure, progress=progress)
    return calibration.load(backend, dtype, threads, quick=quick, remeasure=remeasure, progress=progress)


def cost_model(cal: calibration.Measured, itemsize: int):
    """The cost model of ``cal``'s backend."""
    return (GpuCostModel if cal.backend in plans.GPU_BACKENDS else CostModel)(cal, itemsize)


def predict(model_name: str, batch_sizes, backend: str, dtype: str = "float32", threads: int = 1,
            n_samples: int = 60000, cal: calibration.Measured | None = None) -> list[StepPrediction]:
    """The predicted step of ``model_name`` at each batch size (``cal``: a calibration to use instead of this
    machine's cached one)."""
    from minigrad import models

    model = cost_model(cal or load_calibration(backend, dtype, threads), np.dtype(dtype).itemsize)
    net = models.get_model(model_name, dtype=dtype)
    return [model.predict(net, b, n_samples) for b in batch_sizes]


# -- measuring what was predicted --------------------------------------------------------------------------------


def measure(model_name: str, batch_size: int, train_set, dtype: str = "float32", samples: int = 4096,
            kernels: bool = False) -> dict:
    """The measured step at ``batch_size`` through the training loop (median of at least 10 and at most 200
    steps covering about ``samples`` samples, after 3 warm-up steps); with ``kernels``, the tracer's
    seconds per step by kernel (the median over as many further steps of each step's sum of its calls), timed
    without the tracer's detail (``Tracer.detail``), whose own Python would slow the calls it times."""
    from ._harness import Harness
    from .tracer import Tracer

    steps = int(min(200, max(10, math.ceil(samples / batch_size))))
    run = Harness(model_name, batch_size, train_set, 3 + steps * (2 if kernels else 1), dtype=dtype)
    run.updates(3)
    out = {"batch_size": batch_size, "steps": steps, "step_seconds": float(np.median(run.updates(steps)))}
    if kernels:
        with Tracer(detail=False) as tr:
            run.steps(steps, around=tr.step)
        per_step: dict[str, np.ndarray] = {}
        for e in tr.events:
            if e.step is not None:
                per_step.setdefault(e.name, np.zeros(len(tr.steps)))[e.step] += e.seconds
        out["by_kernel"] = {name: float(np.median(v)) for name, v in per_step.items()}
    return out


def measure_rounds(model_name: str, sizes, train_set, dtype: str = "float32", kernels_at=(), rounds: int = 2,
                   say=lambda text: None, measure_one=None, reference_one=None) -> dict:
    """{batch size: ``measure``'s record} over ``rounds`` rounds through every size, each round in the reverse
    order of the one before, so that a size's rounds lie minutes apart; its step time is the fastest round's
    median (``round_seconds`` keeps each), since a slow burst of the machine only ever slows a round (on this
    class of machine one round at B=5 measured 0.969 ms between 0.513 and 0.739 ms at B=3 and 8, the next
    0.596). The tracer runs in every round at ``kernels_at`` (``round_by_kernel``), and a kernel's time is its
    fastest round's, by the same rule. Right before each measurement the synthetic CNN's step is
    timed at calibration.REFERENCE_BATCHES (``reference_one``, default ``calibration.reference``); a record's
    ``reference`` is the one of its fastest round: against the calibration's (``machine_speed``), how fast the
    machine ran while that round was measured."""
    if rounds < 1:
        raise ValueError(f"measure_rounds: rounds must be at least 1; got {rounds}")
    measure_one = measure_one or measure
    reference_one = reference_one or calibration.reference
    out: dict = {}
    order = sorted(sizes)
    for r in range(rounds):
        for b in (order if r % 2 == 0 else order[::-1]):
            reference = {rb: reference_one(dtype, rb) for rb in calibration.REFERENCE_BATCHES}
            m = measure_one(model_name, b, train_set, dtype, kernels=b in kernels_at)
            record = out.setdefault(b, {**m, "round_seconds": [], "round_reference": []})
            record["round_seconds"].append(m["step_seconds"])
            record["round_reference"].append(reference)
            fastest = int(np.argmin(record["round_seconds"]))
            record["step_seconds"] = record["round_seconds"][fastest]
            record["reference"] = record["round_reference"][fastest]
            if "by_kernel" in m:
                record.setdefault("round_by_kernel", []).append(m["by_kernel"])
                record["by_kernel"] = {k: min(t[k] for t in record["round_by_kernel"] if k in t)
                                       for k in m["by_kernel"]}
            say(f"measured B={b} (round {r + 1} of {rounds}): {1e3 * m['step_seconds']:.3f} ms per step")
    return out


def machine_speed(cal: calibration.Measured, reference: dict) -> dict:
    """{batch size: the synthetic CNN's step in ``reference`` over its time at calibration} for each reference
    batch size both timed: above 1, the machine ran slower than while it was calibrated, and a prediction's
    error carries that (a calibration without ``cnn_step`` gives {})."""
    then = dict(cal.data["tiny"].get("cnn_step", []))
    return {b: reference[b] / then[b] for b in sorted(reference) if b in then}


def speed_at(batch_size: int, speed: dict) -> float | None:
    """``machine_speed``'s ratio at ``batch_size``: interpolated in log batch size between the reference batch
    sizes, the nearest one's beyond them (None without any)."""
    if not speed:
        return None
    sizes = sorted(speed)
    return float(np.interp(math.log(batch_size), np.log(sizes), [speed[b] for b in sizes]))


# -- the report ------------------------------------------------------------------------------------------------


def _error(pred: float, meas: float) -> str:
    return f"{100 * (pred / meas - 1):+.1f}%"


def with_machine_speed(measured: dict, cal: calibration.Measured) -> dict:
    """``measure_rounds``' records, each with its ``machine_speed`` against ``cal`` (records without a
    ``reference`` as they are)."""
    return {b: {**m, "machine_speed": machine_speed(cal, m["reference"])} if "reference" in m else m
            for b, m in measured.items()}


def format_table(preds: list[StepPrediction], measured: dict | None = None) -> str:
    """One row per batch size: predicted step and epoch (and measured ones with the error), the fixed share
    and the kernel with the largest predicted time. Measured rows over several rounds give their ``spread``
    (the slowest round over the fastest: what the machine alone did to the same measurement), and rows that
    carry a ``machine_speed`` (``with_machine_speed``) the machine's speed in the kept round against the
    calibration's at the row's batch size (``speed_at``)."""
    speeds = {b: speed_at(b, m["machine_speed"]) for b, m in (measured or {}).items() if "machine_speed" in m}
    speeds = {b: s for b, s in speeds.items() if s is not None}
    head = f"{'B':>6} {'step ms':>10} {'epoch s':>9}"
    if measured:
        head += f" {'measured':>10} {'epoch s':>9} {'error':>7} {'spread':>7}"
    if speeds:
        head += f" {'machine':>8}"
    lines = [head + f" {'fixed':>6}  largest kernel"]
    for p in preds:
        row = f"{p.batch_size:>6} {1e3 * p.step_seconds:>10.3f} {p.epoch_seconds:>9.2f}"
        m = (measured or {}).get(p.batch_size)
        if measured:
            rounds = (m or {}).get("round_seconds", [])
            spread = f"{100 * (max(rounds) / min(rounds) - 1):.0f}%" if len(rounds) > 1 else ""
            row += (f" {1e3 * m['step_seconds']:>10.3f} {p.n_samples / p.batch_size * m['step_seconds']:>9.2f} "
                    f"{_error(p.step_seconds, m['step_seconds']):>7} {spread:>7}") if m else f" {'':>36}"
        if speeds:
            row += f" {'x%.2f' % speeds[p.batch_size] if p.batch_size in speeds else '':>8}"
        name, seconds = max(p.by_kernel().items(), key=lambda kv: kv[1])
        fixed = sum(p.fixed.values()) / p.step_seconds
        lines.append(row + f" {100 * fixed:>5.0f}%  {name} ({100 * seconds / p.step_seconds:.0f}%)")
    return "\n".join(lines)


#: The fixed costs of a predicted step, by their names in ``StepPrediction.fixed``.
FIXED = {"step": "loop", "layers": "layers, tape and optimizer entries",
         "replay": "the replayed graph's launch, input copies, loss read and the loop"}


def format_kernels(p: StepPrediction, measured: dict | None = None) -> str:
    """Every kernel call of the step at one batch size with its predicted time and the reason (its largest
    term); with ``measured`` (the tracer's seconds by kernel name), the error of each kernel's total against
    what the tracer would time of it (``StepPrediction.by_kernel(traced=True)``)."""
    fixed = ", ".join(f"{1e6 * seconds:.0f} us {FIXED[name]}" for name, seconds in p.fixed.items())
    lines = [f"B={p.batch_size}: predicted step {1e3 * p.step_seconds:.3f} ms "
             f"(kernels {1e3 * p.kernel_seconds:.3f} ms; per step: {fixed})"]
    for k in p.kernels:
        top = max(k.terms, key=lambda t: t.seconds)
        lines.append(f"  {k.layer:<12} {k.kernel:<22} {1e6 * k.seconds:>10.1f} us  {top.reason}")
    if measured:
        lines.append(f"  {'by kernel':<35} {'predicted':>10} {'traced':>10} {'error':>7}")
        predicted = p.by_kernel(traced=True)
        for name, seconds in sorted(measured.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:<35} {1e6 * predicted.get(name, 0.0):>8.1f}us {1e6 * seconds:>8.1f}us "
                         f"{_error(predicted.get(name, 0.0), seconds):>7}")
    return "\n".join(lines)


# -- what the explanation takes from the model ---------------------------------------------------------------------

#: Prediction error of a batch size's epoch time that the explanation flags.
MISS = 0.10


def compare(preds: list[StepPrediction], rows: list[dict]) -> list[dict]:
    """Predicted against measured (``rows``: the sweep's ``batch_size`` and median ``step_seconds``)."""
    measured = {r["batch_size"]: r["step_seconds"] for r in rows}
    out = []
    for p in preds:
        if p.batch_size in measured:
            m = measured[p.batch_size]
            error = p.step_seconds / m - 1
            out.append({"batch_size": p.batch_size, "predicted_step_seconds": p.step_seconds,
                        "measured_step_seconds": m, "predicted_epoch_seconds": p.epoch_seconds,
                        "measured_epoch_seconds": p.n_samples / p.batch_size * m, "error": error,
                        "miss": abs(error) > MISS})
    return out


def plateau_batch(preds: list[StepPrediction], fall: float) -> int | None:
    """Where the predicted epoch time stops falling (the measured curve's criterion, on the model's points)."""
    from . import curve

    rows = [{"batch_size": p.batch_size, "step_seconds": p.step_seconds} for p in preds]
    return curve.plateau_batch(curve.points(rows, preds[0].n_samples), fall)


def why(preds: list[StepPrediction], top: int = 4) -> list[dict]:
    """The kernel calls that make up the per-sample floor at the largest batch size, largest first, with how
    much their time per sample still fell over the last doubling the prediction covers, and the term that
    dominates each (the GEMM shape and its rate, or the pass and its throughput)."""
    last = preds[-1]
    before = next((p for p in reversed(preds[:-1]) if p.batch_size <= last.batch_size // 2), None)
    rows = []
    for i, k in enumerate(last.kernels):
        per_sample = k.seconds / last.batch_size
        fell = None
        if before is not None:
            then = before.kernels[i].seconds / before.batch_size
            fell = 1 - per_sample / then if then > 0 else None
        term = max(k.terms, key=lambda t: t.seconds)
        rows.append({"layer": k.layer, "kernel": k.kernel, "us_per_sample": 1e6 * per_sample,
                     "share": k.seconds / last.step_seconds, "fell_since": before.batch_size if before else None,
                     "fell": fell, "reason": term.reason})
    rows.sort(key=lambda r: -r["us_per_sample"])
    return rows[:top]


def explanation(preds: list[StepPrediction], rows: list[dict], fall: float, cal: calibration.Measured) -> dict:
    """The cost model's part of the explain report: its rows against the sweep, its plateau, the floor's why, and
    when ``cal`` was measured and how far its passes came apart (``Calibration.pass_disagreement``)."""
    return {"calibrated_at": cal.data["measured_at"], "calibration_noise": cal.pass_disagreement(),
            "rows": compare(preds, rows), "plateau_batch": plateau_batch(preds, fall), "why": why(preds),
            "predicted": [p.to_dict() for p in preds]}


def summary(fp: dict) -> str:
    """One paragraph: how close the prediction came, and what the floor is made of."""
    errors = [r["error"] for r in fp["rows"]]
    head = (f"From layer shapes and this machine's calibration alone, the cost model predicted every step time "
            f"within {100 * min(errors):+.0f}% to {100 * max(errors):+.0f}% of the sweep's (predicted before it ran); "
            + (f"its epoch time stops falling at B={fp['plateau_batch']}." if fp["plateau_batch"]
               else "its epoch time is still falling at the largest size."))
    parts = []
    for w in fp["why"][:2]:
        fell = f", {100 * w['fell']:.0f}% less per sample than at B={w['fell_since']}" if w["fell"] is not None else ""
        parts.append(f"{w['kernel']} of layer {w['layer']} ({w['us_per_sample']:.1f} µs per sample{fell}: "
                     f"{w['reason']})")
    return head + (" The per-sample floor is led by " + "; then ".join(parts) + "." if parts else "")


def plot(preds: list[StepPrediction], measured: dict, path, title: str) -> None:
    """predict.png: predicted epoch time against B (measured points where --measure ran) and, below, the
    predicted time per sample stacked by kernel, so that what makes the floor shows at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [p.batch_size for p in preds]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    top.plot(sizes, [p.epoch_seconds for p in preds], "-o", ms=3, label="predicted (cost model)")
    points = [(p.batch_size, p.n_samples / p.batch_size * measured[p.batch_size]["step_seconds"]) for p in preds
              if p.batch_size in measured]
    if points:
        top.plot(*zip(*points), "x", color="C3", ms=7, label="measured (median step)")
    top.set_ylabel("epoch time (s)")
    top.set_title(f"{title}: epoch time from first principles", fontsize=10)
    top.legend(fontsize=8)
    top.grid(alpha=0.3)
    kernels = sorted({k for p in preds for k in p.by_kernel()}, key=lambda k: -preds[-1].by_kernel().get(k, 0.0))
    layers = [[1e6 * p.by_kernel().get(k, 0.0) / p.batch_size for p in preds] for k in kernels]
    fixed = [1e6 * sum(p.fixed.values()) / p.batch_size for p in preds]
    colors = plt.get_cmap("tab20").colors
    bottom.stackplot(sizes, *layers, fixed, labels=kernels + ["fixed per step"], alpha=0.85,
                     colors=[colors[i % len(colors)] for i in range(len(kernels) + 1)])
    bottom.set_xscale("log", base=2)
    bottom.set_xlabel("batch size")
    bottom.set_ylabel("predicted µs per sample")
    bottom.legend(fontsize=7, ncol=2)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
