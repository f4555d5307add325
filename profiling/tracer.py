"""Per-kernel tracing through the one dispatch point.

``with Tracer() as tr:`` installs a hook on ``minigrad.backend`` that times every kernel call (synchronising
the device before reading the clock, so GPU work is attributed to the kernel that launched it) and records its
shapes, dtype and analytic cost (``profiling.costs``). When the tracer is not active the kernel table holds
the bare functions: tracing that is off costs nothing.

Steps: ``with tr.step():`` around one training step records the step's wall time; the time not spent inside
kernels is recorded as ``outside`` (Python, the autograd tape, allocation, data loading), so for every step
kernels + outside = step time exactly.

On a backend whose arrays live on the GPU (``backend.device() == "cuda"``) each kernel call is also timed on
the device: CUDA events are recorded on the current stream just before and just after the call and read once
the step has ended (``KernelEvent.device_seconds``, ``device_ms`` in ``table()``). The host time of a call
covers the Python of its wrapper, the launches and the wait for the device; the event time is the span on
the device from the first event to the last, which excludes the host's wait but still includes any moment
the device sat idle while the host prepared the call's next launch. On an otherwise idle GPU it is therefore
an upper bound on the device's busy time, and close to it only when the call's kernels are long. On the CPU
no event is made and ``device_seconds`` stays None.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

from minigrad import backend

from . import costs

#: The table's row for the time of each step spent outside kernels.
OUTSIDE = "(outside kernels)"


class CudaEvent:
    """A CUDA event (``cupy.cuda.Event``) recorded on the current stream.

    ``start.elapsed_ms(end)`` waits for ``end`` and returns the device milliseconds between the two.
    """

    def __init__(self):
        import cupy

        self._elapsed = cupy.cuda.get_elapsed_time
        self.event = cupy.cuda.Event()

    def record(self) -> None:
        self.event.record()

    def elapsed_ms(self, end: "CudaEvent") -> float:
        end.event.synchronize()
        return float(self._elapsed(self.event, end.event))


def device_event():
    """A new, unrecorded device event. The one place the tracer makes events (tests replace it with a fake
    whose elapsed times they choose)."""
    return CudaEvent()


@dataclass
class KernelEvent:
    name: str
    start: float     # perf_counter seconds
    seconds: float
    shapes: tuple
    dtype: str
    flops: float
    bytes: float
    step: int | None  # index of the enclosing tr.step(), None outside any step
    device_seconds: float | None = None  # CUDA-event time on the GPU backend; None on the CPU


@dataclass
class StepEvent:
    index: int
    start: float
    seconds: float
    kernel_seconds: float = 0.0
    device_kernel_seconds: float | None = None  # sum of the kernels' device_seconds (GPU backend only)

    @property
    def outside_seconds(self) -> float:
        return self.seconds - self.kernel_seconds


@dataclass
class Tracer:
    """Records KernelEvents (and StepEvents) while active. Not re-entrant; one tracer at a time.

    detail: record each call's shapes, dtype and analytic cost, and on the GPU its device time. With False a
        call records its name and host time only: the Python a detailed record runs between two kernel calls
        makes the calls themselves slower (numba lenet5 at B=1, one thread: its kernel calls took 323 us per
        step timed alone, 376 us under the detailed tracer; numpy's 626 and 662 us), so a measurement of
        kernel times to compare with a prediction uses ``detail=False``.
    """

    events: list[KernelEvent] = field(default_factory=list)
    steps: list[StepEvent] = field(default_factory=list)
    _current: StepEvent | None = None
    _backward_costs: dict = field(default_factory=dict)
    _pending: list = field(default_factory=list)  # (KernelEvent, start event, end event) not yet read
    detail: bool = True

    # -- activation ----------------------------------------------------------------------------------------
    def __enter__(self) -> "Tracer":
        backend.set_kernel_hook(self._wrap)
        return self

    def __exit__(self, *exc) -> bool:
        backend.set_kernel_hook(None)
        self._backward_costs.clear()
        self._read_device_times()  # calls made outside any step
        return False

    @contextlib.contextmanager
    def step(self):
        """Mark one training step: its wall time and the part of it spent outside kernels."""
        backend.k.synchronize()
        ev = StepEvent(len(self.steps), time.perf_counter(), 0.0)
        self._current = ev
        try:
            yield ev
        finally:
            backend.k.synchronize()
            ev.seconds = time.perf_counter() - ev.start
            self._read_device_times()  # after the step, so reading the events adds nothing to its time
            self._current = None
            self.steps.append(ev)

    def _read_device_times(self) -> None:
        """Fill in ``device_seconds`` of the calls whose events have not been read yet."""
        pending, self._pending = self._pending, []
        for event, start, end in pending:
            event.device_seconds = start.elapsed_ms(end) / 1e3
            if self._current is not None and event.step == self._current.index:
                self._current.device_kernel_seconds = (self._current.device_kernel_seconds or 0.0) + \
                    event.device_seconds

    def _wrap(self, name, fn):
        sync = backend.k.synchronize
        if not self.detail:
            def timed(*args):
                sync()
                t0 = time.perf_counter()
                out = fn(*args)
                sync()
                seconds = time.perf_counter() - t0
                step = self._current
                if step is not None:
                    step.kernel_seconds += seconds
                self.events.append(KernelEvent(name, t0, seconds, (), "", 0.0, 0.0, step.index if step else None))
                return out
            return timed
        is_forward = name.endswith("_forward")
        is_backward = name.endswith("_backward")
        on_gpu = backend.device() == "cuda"

        def traced(*args):
            sync()
            t0 = time.perf_counter()
            if on_gpu:
                start = device_event()
                start.record()
            out = fn(*args)
            if on_gpu:
                end = device_event()
                end.record()
            sync()
            seconds = time.perf_counter() - t0
            if is_forward:
                fwd, bwd = costs.kernel_costs(name, args)
                # the backward receives the forward's cache: remember its cost under the cache's identity
                self._backward_costs[id(out[1])] = (bwd, costs.input_gradient_cost(name, args))
                cost = fwd
            elif is_backward:
                bwd, dx = self._backward_costs.pop(id(args[1]), (costs.Cost(0.0, 0.0), costs.Cost(0.0, 0.0)))
                need_dx = len(args) < 3 or args[2]  # conv2d and linear skip dx for an input without a gradient
                cost = bwd if need_dx else costs.Cost(bwd.flops - dx.flops, bwd.bytes - dx.bytes)
            else:
                cost = costs.update_cost(name, args)
            event = self._record(name, t0, seconds, args, cost)
            if on_gpu:
                self._pending.append((event, start, end))
            return out

        return traced

    def _record(self, name, t0, seconds, args, cost):
        shapes = tuple(tuple(a.shape) for a in args if hasattr(a, "shape") and not isinstance(a, tuple))
        dtype = next((str(a.dtype) for a in args if hasattr(a, "dtype")), "")
        step = self._current.index if self._current is not None else None
        if self._current is not None:
            self._current.kernel_seconds += seconds
        event = KernelEvent(name, t0, seconds, shapes, dtype, cost.flops, cost.bytes, step)
        self.events.append(event)
        return event

    # -- summaries -----------------------------------------------------------------------------------------
    def table(self) -> list[dict]:
        """One row per kernel name: calls, total ms (host), % of traced step time, GFLOP/s and GB/s achieved
        (over the host time), and ``device_ms``: the CUDA-event time of its calls on the GPU backend, else
        None. The last row, ``OUTSIDE``, is the steps' time outside kernels (its calls: the steps)."""
        self._read_device_times()
        step_total = sum(s.seconds for s in self.steps)
        acc = defaultdict(lambda: {"calls": 0, "seconds": 0.0, "flops": 0.0, "bytes": 0.0, "device": None})
        for e in self.events:
            row = acc[e.name]
            row["calls"] += 1
            row["seconds"] += e.seconds
            row["flops"] += e.flops
            row["bytes"] += e.bytes
            if e.device_seconds is not None:
                row["device"] = (row["device"] or 0.0) + e.device_seconds
        rows = []
        for name, r in sorted(acc.items(), key=lambda kv: -kv[1]["seconds"]):
            rows.append({"kernel": name, "calls": r["calls"], "total_ms": 1e3 * r["seconds"],
                         "pct_of_steps": 100 * r["seconds"] / step_total if step_total else None,
                         "gflops": r["flops"] / r["seconds"] / 1e9 if r["seconds"] else 0.0,
                         "gbps": r["bytes"] / r["seconds"] / 1e9 if r["seconds"] else 0.0,
                         "flops": r["flops"], "bytes": r["bytes"],
                         "device_ms": 1e3 * r["device"] if r["device"] is not None else None})
        if self.steps:
            outside = sum(s.outside_seconds for s in self.steps)
            rows.append({"kernel": OUTSIDE, "calls": len(self.steps), "total_ms": 1e3 * outside,
                         "pct_of_steps": 100 * outside / step_total if step_total else None,
                         "gflops": None, "gbps": None, "flops": 0.0, "bytes": 0.0, "device_ms": None})
        return rows

    def format_table(self) -> str:
        rows = self.table()
        device = any(r["device_ms"] is not None for r in rows)  # the column exists on the GPU backend only
        head = f"{'kernel':<24} {'calls':>6} {'total ms':>10} {'% step':>7} {'GFLOP/s':>9} {'GB/s':>7}"
        head += f" {'device ms':>10}" if device else ""
        lines = [head, "-" * len(head)]
        for r in rows:
            pct = f"{r['pct_of_steps']:>6.1f}%" if r["pct_of_steps"] is not None else f"{'':>7}"
            gf = f"{r['gflops']:>9.2f}" if r["gflops"] is not None else f"{'':>9}"
            gb = f"{r['gbps']:>7.2f}" if r["gbps"] is not None else f"{'':>7}"
            line = f"{r['kernel']:<24} {r['calls']:>6d} {r['total_ms']:>10.2f} {pct} {gf} {gb}"
            if device:
                line += f" {r['device_ms']:>10.2f}" if r["device_ms"] is not None else f" {'':>10}"
            lines.append(line)
        if self.steps:
            lines.append(f"{len(self.steps)} steps, {1e3 * sum(s.seconds for s in self.steps):.2f} ms in total")
        return "\n".join(lines)

    def chrome_trace(self) -> dict:
        """The events in Chrome's trace-event format (open in https://ui.perfetto.dev or chrome://tracing).
        On the GPU backend a kernel's args also hold ``device_ms`` and a step's ``device_kernel_ms``."""
        self._read_device_times()
        t0 = min([e.start for e in self.events] + [s.start for s in self.steps], default=0.0)
        us = lambda t: (t - t0) * 1e6  # noqa: E731
        events = [{"name": f"step {s.index}", "ph": "X", "pid": 1, "tid": 1, "ts": us(s.start),
                   "dur": s.seconds * 1e6, "args": {"kernel_ms": 1e3 * s.kernel_seconds,
                                                     "outside_ms": 1e3 * s.outside_seconds,
                                                     **({"device_kernel_ms": 1e3 * s.device_kernel_seconds}
                                                        if s.device_kernel_seconds is not None else {})}}
                  for s in self.steps]
        events += [{"name": e.name, "ph": "X", "pid": 1, "tid": 2, "ts": us(e.start), "dur": e.seconds * 1e6,
                    "args": {"shapes": [list(s) for s in e.shapes], "dtype": e.dtype, "flops": e.flops,
                             "bytes": e.bytes,
                             **({"device_ms": 1e3 * e.device_seconds} if e.device_seconds is not None else {})}}
                   for e in self.events]
        meta = [{"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "steps"}},
                {"name": "thread_name", "ph": "M", "pid": 1, "tid": 2,
                 "args": {"name": f"kernels ({backend.get_backend()})"}}]
        return {"traceEvents": meta + events, "displayTimeUnit": "ms"}

    def save_chrome_trace(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f)
