"""Per-kernel tracing through the one dispatch point.

``with Tracer() as tr:`` installs a hook on ``minigrad.backend`` that times every kernel call (synchronising
the device before reading the clock, so GPU work is attributed to the kernel that launched it) and records its
shapes, dtype and analytic cost (``profiling.costs``). When the tracer is not active the kernel table holds
the bare functions: tracing that is off costs nothing.

Steps: ``with tr.step():`` around one training step records the step's wall time; the time not spent inside
kernels is recorded as ``outside`` (Python, the autograd tape, allocation, data loading), so for every step
kernels + outside = step time exactly.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

from minigrad import backend

from . import costs


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


@dataclass
class StepEvent:
    index: int
    start: float
    seconds: float
    kernel_seconds: float = 0.0

    @property
    def outside_seconds(self) -> float:
        return self.seconds - self.kernel_seconds


@dataclass
class Tracer:
    """Records KernelEvents (and StepEvents) while active. Not re-entrant; one tracer at a time."""

    events: list[KernelEvent] = field(default_factory=list)
    steps: list[StepEvent] = field(default_factory=list)
    _current: StepEvent | None = None
    _backward_costs: dict = field(default_factory=dict)

    # -- activation ----------------------------------------------------------------------------------------
    def __enter__(self) -> "Tracer":
        backend.set_kernel_hook(self._wrap)
        return self

    def __exit__(self, *exc) -> bool:
        backend.set_kernel_hook(None)
        self._backward_costs.clear()
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
            self._current = None
            self.steps.append(ev)

    def _wrap(self, name, fn):
        sync = backend.k.synchronize
        is_forward = name.endswith("_forward")
        is_backward = name.endswith("_backward")

        def traced(*args):
            sync()
            t0 = time.perf_counter()
            out = fn(*args)
            sync()
            seconds = time.perf_counter() - t0
            if is_forward:
                fwd, bwd = costs.kernel_costs(name, args)
                # the backward receives the forward's cache: remember its cost under the cache's identity
                self._backward_costs[id(out[1])] = bwd
                cost = fwd
            elif is_backward:
                cost = self._backward_costs.pop(id(args[1]), costs.Cost(0.0, 0.0))
            else:
                cost = costs.update_cost(name, args)
            self._record(name, t0, seconds, args, cost)
            return out

        return traced

    def _record(self, name, t0, seconds, args, cost):
        shapes = tuple(tuple(a.shape) for a in args if hasattr(a, "shape") and not isinstance(a, tuple))
        dtype = next((str(a.dtype) for a in args if hasattr(a, "dtype")), "")
        step = self._current.index if self._current is not None else None
        if self._current is not None:
            self._current.kernel_seconds += seconds
        self.events.append(KernelEvent(name, t0, seconds, shapes, dtype, cost.flops, cost.bytes, step))

    # -- summaries -----------------------------------------------------------------------------------------
    def table(self) -> list[dict]:
        """One row per kernel name: calls, total ms, % of traced step time, GFLOP/s and GB/s achieved."""
        step_total = sum(s.seconds for s in self.steps)
        acc = defaultdict(lambda: {"calls": 0, "seconds": 0.0, "flops": 0.0, "bytes": 0.0})
        for e in self.events:
            row = acc[e.name]
            row["calls"] += 1
            row["seconds"] += e.seconds
            row["flops"] += e.flops
            row["bytes"] += e.bytes
        rows = []
        for name, r in sorted(acc.items(), key=lambda kv: -kv[1]["seconds"]):
            rows.append({"kernel": name, "calls": r["calls"], "total_ms": 1e3 * r["seconds"],
                         "pct_of_steps": 100 * r["seconds"] / step_total if step_total else None,
                         "gflops": r["flops"] / r["seconds"] / 1e9 if r["seconds"] else 0.0,
                         "gbps": r["bytes"] / r["seconds"] / 1e9 if r["seconds"] else 0.0,
                         "flops": r["flops"], "bytes": r["bytes"]})
        if self.steps:
            outside = sum(s.outside_seconds for s in self.steps)
            rows.append({"kernel": "(outside kernels)", "calls": len(self.steps), "total_ms": 1e3 * outside,
                         "pct_of_steps": 100 * outside / step_total if step_total else None,
                         "gflops": None, "gbps": None, "flops": 0.0, "bytes": 0.0})
        return rows

    def format_table(self) -> str:
        head = f"{'kernel':<24} {'calls':>6} {'total ms':>10} {'% step':>7} {'GFLOP/s':>9} {'GB/s':>7}"
        lines = [head, "-" * len(head)]
        for r in self.table():
            pct = f"{r['pct_of_steps']:>6.1f}%" if r["pct_of_steps"] is not None else f"{'':>7}"
            gf = f"{r['gflops']:>9.2f}" if r["gflops"] is not None else f"{'':>9}"
            gb = f"{r['gbps']:>7.2f}" if r["gbps"] is not None else f"{'':>7}"
            lines.append(f"{r['kernel']:<24} {r['calls']:>6d} {r['total_ms']:>10.2f} {pct} {gf} {gb}")
        if self.steps:
            lines.append(f"{len(self.steps)} steps, {1e3 * sum(s.seconds for s in self.steps):.2f} ms in total")
        return "\n".join(lines)

    def chrome_trace(self) -> dict:
        """The events in Chrome's trace-event format (open in https://ui.perfetto.dev or chrome://tracing)."""
        t0 = min([e.start for e in self.events] + [s.start for s in self.steps], default=0.0)
        us = lambda t: (t - t0) * 1e6  # noqa: E731
        events = [{"name": f"step {s.index}", "ph": "X", "pid": 1, "tid": 1, "ts": us(s.start),
                   "dur": s.seconds * 1e6, "args": {"kernel_ms": 1e3 * s.kernel_seconds,
                                                     "outside_ms": 1e3 * s.outside_seconds}}
                  for s in self.steps]
        events += [{"name": e.name, "ph": "X", "pid": 1, "tid": 2, "ts": us(e.start), "dur": e.seconds * 1e6,
                    "args": {"shapes": [list(s) for s in e.shapes], "dtype": e.dtype, "flops": e.flops,
                             "bytes": e.bytes}}
                   for e in self.events]
        meta = [{"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "steps"}},
                {"name": "thread_name", "ph": "M", "pid": 1, "tid": 2,
                 "args": {"name": f"kernels ({backend.get_backend()})"}}]
        return {"traceEvents": meta + events, "displayTimeUnit": "ms"}

    def save_chrome_trace(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f)
