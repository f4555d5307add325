"""What bounds a training step on the GPU: the device's measured ceilings and the step's launch-bound test.

The CPU's ceilings (``profiling.ceilings``) say nothing about a step that runs on a GPU, and neither does a
plateau fitted to its step times: on the GPU a small model's step takes the same time from B=1 to B=256
because the device is idle most of it, waiting for the host (Python, the autograd tape, kernel launches).

- ``measure_gpu()`` / ``load_gpu()``: this device's sgemm GFLOP/s at a few sizes, device-to-device copy
  bandwidth and the cost of one kernel launch, timed with CUDA events (cached per device name).
- ``from_recorded(d)``: ceilings recorded elsewhere (``gpu_ceilings.json``) in the same shape.
- ``parse_trace_table(text)`` / ``parse_chrome_trace(trace)``: the output of ``python -m minigrad.profile
  trace`` (the per-kernel table, the Chrome trace) back into ``explain.traced_sweep``'s rows.
- ``gpu_bounds(traced, ceilings)``: per batch size, how much of the step the GPU is busy, the launch-cost
  floor, GEMM efficiency and the verdict, launch/Python-bound or GPU-bound; ``gpu_headline`` says it in words.

How busy the GPU is, from the tracer: the tracer synchronises the device around every kernel call, so a
call's time (host-timed, or CUDA-event-timed on the GPU backend) holds the host's cost of the call (the
wrapper's Python, each launch, the synchronisation) as well as the device's work, and at small batches it is
almost all host cost (about 100 µs a call in the recorded H100 runs of lenet5, at B=1 as at B=256). A kernel's device work is
estimated as the part of its time above its *per-call floor*, the least one call of it took at any traced
batch size (the cost that does not grow with B), or its roofline time (FLOPs at the sgemm peak, bytes at the
copy bandwidth) where the FLOPs are known and that is larger. The estimate needs a small batch size in the
sweep (the floor is read there); with a single batch size it falls back to the kernels' whole time, an
upper bound. Importing this module never needs CuPy.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import time
from pathlib import Path

from .tracer import OUTSIDE

#: Kernels whose FLOPs are cuBLAS GEMMs on the cupy backend (im2col + GEMM for conv2d).
GEMM_KERNELS = ("conv2d_forward", "conv2d_backward", "linear_forward", "linear_backward")
#: sgemm sizes measure_gpu times (n x n x n).
SGEMM_SIZES = (256, 1024, 4096)
#: A step is launch/Python-bound when the GPU is busy for less than this share of it, or when the launch
#: floor explains more than this share.
BOUND = 0.5
LAUNCH_BOUND = "launch/Python-bound"
GPU_BOUND = "GPU-bound"
#: The keys of a GPU ceilings dict, whether measured here or recorded elsewhere.
KEYS = ("device", "cupy", "measured_at", "sgemm_gflops", "peak_gflops", "copy_gbps", "launch_us", "launch_us_host")

_EMPTY_KERNEL = 'extern "C" __global__ void minigrad_empty_kernel() {}'


# ----------------------------------------------------------------------------------------------------------
# the device's ceilings


def current_device_name() -> str:
    """The name of CuPy's current CUDA device (e.g. "NVIDIA H100 80GB HBM3")."""
    cupy = importlib.import_module("cupy")
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def measure_gpu(repeats: int = 10, sizes=SGEMM_SIZES, copy_mb: int = 256, launches: int = 2000) -> dict:
    """Measure this GPU's ceilings now (a few seconds), every time on the device with CUDA events.

    sgemm_gflops: best-of-``repeats`` GFLOP/s of an n x n x n float32 ``cupy.matmul`` (2 n^3 FLOPs) for each n
    of ``sizes``, keyed by str(n); peak_gflops: the best of them. copy_gbps: a device-to-device copy of
    ``copy_mb`` MiB of float32, the bytes read plus the bytes written. launch_us: an empty ``RawKernel``
    launched ``launches`` times back to back between two events, per launch: the rate at which the device can
    be handed work by this host, the least a kernel call costs. launch_us_host: the same loop by the host's
    clock, including the final synchronisation. Each measurement runs once untimed first (cuBLAS handle and
    heuristics, NVRTC compilation, pool growth).
    """
    cupy = importlib.import_module("cupy")

    def sync():
        cupy.cuda.Device().synchronize()

    def best_ms(fn) -> float:
        fn()  # warm-up
        sync()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        best = math.inf
        for _ in range(repeats):
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, float(cupy.cuda.get_elapsed_time(start, end)))
        return best

    sgemm = {}
    for n in sizes:
        a = cupy.ones((n, n), dtype=cupy.float32)
        b = cupy.ones((n, n), dtype=cupy.float32)
        out = cupy.empty((n, n), dtype=cupy.float32)
        sgemm[str(n)] = 2 * n**3 / (best_ms(lambda: cupy.matmul(a, b, out=out)) / 1e3) / 1e9

    count = copy_mb * 2**20 // 4
    src = cupy.ones(count, dtype=cupy.float32)
    dst = cupy.empty(count, dtype=cupy.float32)
    copy_gbps = 2 * 4 * count / (best_ms(lambda: cupy.copyto(dst, src)) / 1e3) / 1e9

    empty = cupy.RawKernel(_EMPTY_KERNEL, "minigrad_empty_kernel")

    def launch_all():
        for _ in range(launches):
            empty((1,), (1,), ())

    launch_us = 1e3 * best_ms(launch_all) / launches
    host = math.inf
    for _ in range(max(1, repeats // 2)):
        t0 = time.perf_counter()
        launch_all()
        sync()
        host = min(host, time.perf_counter() - t0)
    return {"device": current_device_name(), "cupy": getattr(cupy, "__version__", None),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sgemm_gflops": sgemm,
            "peak_gflops": max(sgemm.values()), "copy_gbps": copy_gbps, "launch_us": launch_us,
            "launch_us_host": 1e6 * host / launches}


def load_gpu(remeasure: bool = False, cache_dir=None, **measure_kwargs) -> dict:
    """The cached ceilings of the current GPU (keyed by its name, in ``minigrad.data.default_data_dir()`` like
    ``ceilings.load``), measuring them first if there are none or ``remeasure``. Needs CuPy and a device."""
    from .ceilings import cached_measurement

    return cached_measurement("gpu-ceilings", current_device_name(), measure_gpu, remeasure, cache_dir,
                              **measure_kwargs)


def from_recorded(d) -> dict:
    """GPU ceilings in ``measure_gpu``'s shape from a recorded dict (or a path to its JSON).

    Accepts the recorded format (``sgemm_<n>_gflops``, ``gemm_float32_gflops``, ``copy_GBps_read_plus_write``,
    ``launch_us_event_timed``, ``launch_us_host_loop``; see tests/profiling/recorded_gpu/gpu_ceilings.json)
    and ``measure_gpu``'s own shape, so recorded and live ceilings take the same path. peak_gflops is the best
    sgemm figure given, the large ``gemm_float32_gflops`` included. Other recorded keys are dropped.
    """
    if isinstance(d, (str, Path)):
        d = json.loads(Path(d).read_text())
    if "launch_us" in d and "sgemm_gflops" in d:  # already in measure_gpu's shape
        out = {k: d.get(k) for k in KEYS}
        out["sgemm_gflops"] = {str(n): float(v) for n, v in d["sgemm_gflops"].items()}
        if out["peak_gflops"] is None:
            out["peak_gflops"] = max(out["sgemm_gflops"].values())
        return out
    sgemm = {m.group(1): float(v) for k, v in d.items() if (m := re.fullmatch(r"sgemm_(\d+)_gflops", k))}
    sgemm = dict(sorted(sgemm.items(), key=lambda kv: int(kv[0])))
    peaks = list(sgemm.values()) + ([float(d["gemm_float32_gflops"])] if "gemm_float32_gflops" in d else [])
    missing = [k for k in ("launch_us_event_timed", "copy_GBps_read_plus_write") if k not in d]
    if missing or not peaks:
        raise ValueError(f"from_recorded: not a recorded GPU ceilings dict; missing {missing or 'sgemm_<n>_gflops'}"
                         f" (keys given: {sorted(d)})")
    return {"device": d.get("device"), "cupy": d.get("cupy"), "measured_at": d.get("measured_at"),
            "sgemm_gflops": sgemm, "peak_gflops": max(peaks), "copy_gbps": float(d["copy_GBps_read_plus_write"]),
            "launch_us": float(d["launch_us_event_timed"]),
            "launch_us_host": float(d["launch_us_host_loop"]) if "launch_us_host_loop" in d else None}


# ----------------------------------------------------------------------------------------------------------
# recorded traces back into the tracer's rows

_HEADER = re.compile(r"^\s*B=(\d+):\s*([\d.]+)% of the step outside kernels\s*$")
_ROW = re.compile(r"^\s*(\S.*?)\s+(\d+) calls\s+([\d.]+) ms\s*$")


def _row(kernel: str, calls: int, total_ms: float, step_ms_total: float, flops: float = 0.0, nbytes: float = 0.0,
         device_ms: float | None = None) -> dict:
    """A row as ``Tracer.table()`` gives it (GFLOP/s and GB/s over the host time; None where not known)."""
    outside = kernel == OUTSIDE
    seconds = total_ms / 1e3
    return {"kernel": kernel, "calls": calls, "total_ms": total_ms,
            "pct_of_steps": 100 * total_ms / step_ms_total if step_ms_total else None,
            "gflops": flops / seconds / 1e9 if flops and seconds and not outside else None,
            "gbps": nbytes / seconds / 1e9 if nbytes and seconds and not outside else None,
            "flops": float(flops), "bytes": float(nbytes), "device_ms": device_ms}


def _traced_entry(batch_size: int, steps: int, rows: list[dict]) -> dict:
    """``explain.traced_sweep``'s per-batch-size dict from (kernel, calls, total_ms, ...) row tuples."""
    total_ms = sum(r[2] for r in rows)
    outside_ms = sum(r[2] for r in rows if r[0] == OUTSIDE)
    return {"batch_size": batch_size, "steps": steps, "step_seconds": total_ms / 1e3 / steps,
            "outside_fraction": outside_ms / total_ms if total_ms else 0.0,
            "kernels": [_row(*r[:3], total_ms, *r[3:]) for r in rows]}


def parse_trace_table(text: str) -> list[dict]:
    """The tables printed by ``python -m minigrad.profile trace`` back into ``explain.traced_sweep``'s shape.

    One dict per ``B=..: NN% of the step outside kernels`` block: batch_size, steps (the calls of the
    ``(outside kernels)`` row: one per step), step_seconds (all rows' time / steps), outside_fraction,
    outside_pct_printed (the header's rounded figure), and kernels: rows as ``Tracer.table()`` gives them
    (kernel, calls, total_ms, pct_of_steps; flops and bytes 0.0 and gflops, gbps, device_ms None, since the
    table does not hold them), in the printed order, the ``(outside kernels)`` row last.
    """
    blocks = []
    for line in text.splitlines():
        if m := _HEADER.match(line):
            blocks.append({"batch_size": int(m.group(1)), "pct": float(m.group(2)), "rows": []})
        elif (m := _ROW.match(line)) and blocks:
            blocks[-1]["rows"].append((m.group(1), int(m.group(2)), float(m.group(3))))
    if not blocks:
        raise ValueError("parse_trace_table: no 'B=<n>: <p>% of the step outside kernels' header in the text")
    out = []
    for b in blocks:
        outside = [r for r in b["rows"] if r[0] == OUTSIDE]
        if len(outside) != 1:
            raise ValueError(f"parse_trace_table: B={b['batch_size']} has {len(outside)} '{OUTSIDE}' rows; "
                             "expected one (its calls are the steps)")
        rows = [r for r in b["rows"] if r[0] != OUTSIDE] + outside
        entry = _traced_entry(b["batch_size"], outside[0][1], rows)
        entry["outside_pct_printed"] = b["pct"]
        out.append(entry)
    return out


def parse_chrome_trace(trace, batch_size: int | None = None) -> dict:
    """A Chrome trace written by ``Tracer.save_chrome_trace`` (a dict or a path) as one ``traced_sweep`` entry,
    with the FLOPs and bytes the trace holds (so GFLOP/s are known) and device_ms where it was recorded.

    batch_size: default, the leading dimension of the first kernel call's first array.
    """
    if isinstance(trace, (str, Path)):
        trace = json.loads(Path(trace).read_text())
    complete = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    steps = [e for e in complete if e["tid"] == 1]
    kernels = [e for e in complete if e["tid"] == 2]
    if not steps or not kernels:
        raise ValueError("parse_chrome_trace: the trace has no steps or no kernel calls")
    if batch_size is None:
        batch_size = int(kernels[0]["args"]["shapes"][0][0])
    acc: dict[str, dict] = {}
    for e in kernels:
        a = acc.setdefault(e["name"], {"calls": 0, "ms": 0.0, "flops": 0.0, "bytes": 0.0, "device": None})
        a["calls"] += 1
        a["ms"] += e["dur"] / 1e3
        a["flops"] += e["args"].get("flops", 0.0)
        a["bytes"] += e["args"].get("bytes", 0.0)
        if e["args"].get("device_ms") is not None:
            a["device"] = (a["device"] or 0.0) + e["args"]["device_ms"]
    inside = sum(a["ms"] for a in acc.values())
    outside = sum(e["dur"] for e in steps) / 1e3 - inside
    rows = [(n, a["calls"], a["ms"], a["flops"], a["bytes"], a["device"])
            for n, a in sorted(acc.items(), key=lambda kv: -kv[1]["ms"])]
    return _traced_entry(batch_size, len(steps), rows + [(OUTSIDE, len(steps), outside)])


# ----------------------------------------------------------------------------------------------------------
# what bounds the step


def _kernels(entry: dict) -> list[dict]:
    return [k for k in entry["kernels"] if k["kernel"] != OUTSIDE]


def gpu_bounds(traced: list[dict], ceilings: dict, step_rows: list[dict] | None = None) -> dict:
    """Per batch size, what bounds the step on the GPU.

    traced: ``explain.traced_sweep``'s output (or ``parse_trace_table``'s): dicts with batch_size, steps,
    step_seconds, outside_fraction and kernels (``Tracer.table()`` rows). ceilings: ``measure_gpu``/``load_gpu``
    or a recorded dict (read through ``from_recorded``). step_rows: optional untraced step times (dicts with
    batch_size and step_seconds, e.g. explain's sweep), shown beside the traced step.

    Returns {"device", "launch_us", "peak_gflops", "timing" ("cuda-events" when every kernel row has
    device_ms, else "host"), "busy_basis" (how busy_ms was estimated, in words), "floor_batch_size" (the
    smallest traced B, where the per-call floors come from; None with one batch size), "rows": [...],
    "launch_bound_until", "gpu_bound_from"}, one row per batch size, ascending, each with (times per step):

    - step_ms: the traced step (eager: the tracer times each kernel call); untraced_step_ms: from step_rows,
      else None; untraced_captured_share: the share of those untraced steps replayed from a CUDA graph
      (step_rows' ``captured_share``), else None;
    - kernel_ms: the kernels' time as timed (device_ms where recorded, else host); kernel_share: over the
      step, an upper bound on the share the GPU is busy; per_call_us: kernel_ms per call;
    - busy_ms / busy_share: the estimated device work (module docstring); busiest_kernel, busiest_share:
      the kernel with the most of it and its share of it;
    - launches_per_step: kernel calls per step (each launches at least one CUDA kernel; conv2d and linear
      launch several, so this is a floor); launch_floor_ms = launches_per_step x launch_us;
      launch_floor_share: its share of the step;
    - gemm: [{kernel, gflops, sgemm_share}] for the GEMM kernels whose FLOPs are known (achieved over the
      timed kernel time, against peak_gflops); gemm_gflops / gemm_sgemm_share: the same over all of them
      (None where no FLOPs are known);
    - verdict: LAUNCH_BOUND when busy_share < BOUND or launch_floor_share > BOUND, else GPU_BOUND.

    launch_bound_until: the largest measured batch size whose verdict is LAUNCH_BOUND (None if none);
    gpu_bound_from: the smallest GPU-bound batch size above it (None if none).
    """
    c = from_recorded(ceilings)
    peak, bandwidth, launch_us = c["peak_gflops"], c["copy_gbps"], c["launch_us"]
    traced = sorted(traced, key=lambda t: t["batch_size"])
    device_timed = bool(traced) and all(k.get("device_ms") is not None for t in traced for k in _kernels(t))

    def timed_ms(k) -> float:
        return k["device_ms"] if device_timed else k["total_ms"]

    floor: dict[str, float] = {}  # the least one call of each kernel took at any batch size (ms)
    if len(traced) >= 2:
        for t in traced:
            for k in _kernels(t):
                if k["calls"]:
                    floor[k["kernel"]] = min(floor.get(k["kernel"], math.inf), timed_ms(k) / k["calls"])
    untraced = {r["batch_size"]: r for r in step_rows or []}

    rows = []
    for t in traced:
        steps, step_ms = t["steps"], 1e3 * t["step_seconds"]
        ks = _kernels(t)
        kernel_ms = sum(timed_ms(k) for k in ks) / steps
        calls = sum(k["calls"] for k in ks) / steps
        busy_by_kernel = {}
        for k in ks:
            m = timed_ms(k)
            roof = 1e3 * max((k.get("flops") or 0.0) / (peak * 1e9), (k.get("bytes") or 0.0) / (bandwidth * 1e9))
            grown = max(0.0, m - k["calls"] * floor.get(k["kernel"], 0.0)) if floor else m
            busy_by_kernel[k["kernel"]] = min(m, max(grown, roof)) / steps
        busy_ms = sum(busy_by_kernel.values())
        busiest = max(busy_by_kernel, key=busy_by_kernel.get) if busy_ms > 0 else None
        gemm_rows = [k for k in ks if k["kernel"] in GEMM_KERNELS and k.get("flops") and timed_ms(k) > 0]
        gemm = [{"kernel": k["kernel"], "gflops": k["flops"] / (timed_ms(k) / 1e3) / 1e9,
                 "sgemm_share": k["flops"] / (timed_ms(k) / 1e3) / 1e9 / peak} for k in gemm_rows]
        gemm_gflops = (sum(k["flops"] for k in gemm_rows) / (sum(timed_ms(k) for k in gemm_rows) / 1e3) / 1e9
                       if gemm_rows else None)
        floor_ms = calls * launch_us / 1e3
        busy_share = busy_ms / step_ms if step_ms else 0.0
        floor_share = floor_ms / step_ms if step_ms else 0.0
        b = t["batch_size"]
        rows.append({
            "batch_size": b, "steps": steps, "step_ms": step_ms,
            "untraced_step_ms": 1e3 * untraced[b]["step_seconds"] if b in untraced else None,
            "untraced_captured_share": untraced[b].get("captured_share") if b in untraced else None,
            "kernel_ms": kernel_ms, "kernel_share": kernel_ms / step_ms if step_ms else 0.0,
            "per_call_us": 1e3 * kernel_ms / calls if calls else None,
            "busy_ms": busy_ms, "busy_share": busy_share,
            "busiest_kernel": busiest, "busiest_share": busy_by_kernel[busiest] / busy_ms if busiest else None,
            "launches_per_step": calls, "launch_floor_ms": floor_ms, "launch_floor_share": floor_share,
            "gemm": gemm, "gemm_gflops": gemm_gflops,
            "gemm_sgemm_share": gemm_gflops / peak if gemm_gflops is not None else None,
            "verdict": LAUNCH_BOUND if busy_share < BOUND or floor_share > BOUND else GPU_BOUND,
        })
    launch_bound = [r["batch_size"] for r in rows if r["verdict"] == LAUNCH_BOUND]
    until = max(launch_bound) if launch_bound else None
    after = [r["batch_size"] for r in rows if r["verdict"] == GPU_BOUND and (until is None or r["batch_size"] > until)]
    return {"device": c["device"], "launch_us": launch_us, "peak_gflops": peak,
            "timing": "cuda-events" if device_timed else "host",
            "busy_basis": ("time above each kernel's per-call floor (its least time per call at any traced B), "
                           "or its roofline time if larger" if floor else
                           "the kernels' whole time (one batch size: an upper bound)"),
            "floor_batch_size": traced[0]["batch_size"] if floor else None,
            "rows": rows, "launch_bound_until": until, "gpu_bound_from": min(after) if after else None}


def _span(values, fmt: str) -> str:
    """"a" when the values print the same, else "lo–hi" (formatted with ``fmt``)."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def _batches(sizes: list[int], all_sizes: list[int]) -> str:
    """B=1..256 when ``sizes`` are consecutive measured sizes, else B=1, 16 and 256."""
    i, j = all_sizes.index(sizes[0]), all_sizes.index(sizes[-1])
    if len(sizes) > 1 and all_sizes[i:j + 1] == sizes:
        return f"B={sizes[0]}..{sizes[-1]}"
    return "B=" + (str(sizes[0]) if len(sizes) == 1 else ", ".join(map(str, sizes[:-1])) + f" and {sizes[-1]}")


def gpu_headline(model: str, bounds: dict, ceilings: dict) -> str:
    """One paragraph in plain words, numbers attached: what bounds the step of ``model`` on the GPU.

    bounds: ``gpu_bounds(...)``; ceilings: as given to it. Figures are printed from the bounds' fields:
    shares as ``{100 * x:.0f}%``, launch_us as ``{:.1f} µs``, the launch floor as ``{:.2f} ms``, ranges as
    "lo–hi". Over the launch/Python-bound batch sizes up to ``launch_bound_until`` it quotes the range of
    busy_share and of kernel_share and the launch floor of the largest of them; then the first GPU-bound batch
    size above them (``gpu_bound_from``): its busy_share, step, busiest kernel and GEMM share of the peak.
    """
    c = from_recorded(ceilings)
    rows = bounds["rows"]
    if not rows:
        return f"{model}: no traced steps on the GPU to explain."
    sizes = [r["batch_size"] for r in rows]
    until = bounds["launch_bound_until"]
    low = [r for r in rows if r["verdict"] == LAUNCH_BOUND and r["batch_size"] <= (until or 0)]
    timing = "timed with CUDA events" if bounds["timing"] == "cuda-events" else "timed by the host"
    text = [f"{model} on {c['device'] or 'the GPU'}:"]
    if low:
        last = low[-1]
        steps = [r["step_ms"] for r in low]
        flat = max(steps) <= 1.25 * min(steps)
        untraced = [r["untraced_step_ms"] for r in low if r["untraced_step_ms"] is not None]
        replayed = bool(untraced) and all((r["untraced_captured_share"] or 0.0) >= 0.5 for r in low
                                          if r["untraced_step_ms"] is not None)
        per_call = [r["per_call_us"] for r in low if r["per_call_us"] is not None] or [0.0]
        host = [100 * (1 - r["busy_share"] / r["kernel_share"]) for r in low if r["kernel_share"]]
        text.append(
            f"at {_batches([r['batch_size'] for r in low], sizes)} the traced step takes {_span(steps, '.1f')} ms"
            + (" whatever B" if flat and len(low) > 1 else "")
            + (f" ({_span(untraced, '.1f')} ms untraced{', replayed from a CUDA graph' if replayed else ''})"
               if untraced else "")
            + f", and the GPU is busy for {_span([100 * r['busy_share'] for r in low], '.0f')}% of it. The kernels "
            f"take {_span([100 * r['kernel_share'] for r in low], '.0f')}% of the step ({timing}), but a kernel "
            f"call costs {_span(per_call, '.0f')} µs"
            + (" whatever B" if len(low) > 1 and max(per_call) <= 1.25 * min(per_call) else "")
            + f", {_span(host, '.0f')}% of it the host's (the wrapper's Python, the launch, the wait), not work on "
            "the GPU."
            f" {last['launches_per_step']:.0f} kernel launches per step x {c['launch_us']:.1f} µs = "
            f"{last['launch_floor_ms']:.2f} ms, {100 * last['launch_floor_share']:.0f}% of the step"
            + (": launching alone bounds it." if last["launch_floor_share"] > BOUND else
               " (a floor: conv2d and linear calls launch several kernels each), so the launches themselves are "
               "not the bound; the Python around them is (each kernel call's wrapper, the autograd tape, the "
               "optimizer's per-parameter calls). Fewer, larger kernel calls help here; faster kernels do not.")
            + (" The untraced steps remove exactly that cost: the loop replays the whole step as one CUDA graph "
               "(minigrad.graphs), so no Python and one launch run per step."
               if replayed else "")
            + (f" Up to B={last['batch_size']} a larger batch costs next to nothing per step, so epoch time falls "
               "almost as 1/B."
               if flat and len(low) > 1 else ""))
    high = next((r for r in rows if r["batch_size"] == bounds["gpu_bound_from"]), None)
    if high is not None:
        lead = "The step stops being launch/Python-bound at" if low else "The step is GPU-bound from"
        gemm = (f"; the GEMM kernels reach {100 * high['gemm_sgemm_share']:.1f}% of the "
                f"{c['peak_gflops'] / 1e3:.1f} TFLOP/s sgemm peak") if high["gemm_sgemm_share"] is not None else ""
        text.append(f"{lead} B={high['batch_size']}: the GPU is busy for {100 * high['busy_share']:.0f}% of a "
                    f"{high['step_ms']:.1f} ms step, {high['busiest_kernel']} "
                    f"{100 * high['busiest_share']:.0f}% of that{gemm}.")
    elif low:
        text.append(f"It is launch/Python-bound at every measured batch size up to B={sizes[-1]}.")
    return " ".join(text)
