"""Measure everything the explanation needs for one model and backend, across batch sizes.

``explain(...)`` runs, in order: the machine's ceilings and the cost model's prediction of every batch size
from the machine's calibration, or the GPU's (``predict``: made before anything is timed, it is the held-out
check); a step-time sweep repeated ``repeats`` times (interleaved over batch sizes, so a drift of the machine
hits every size alike) and what the measured curve says (``curve``: the plateau batch with its range, the most
batching can give); the fitted plateau model; one traced run per batch size; cProfile causes; line_profiler at the smallest and largest
batch; every instrument against the untimed step (``reconcile``); a verdict per kernel and the split of the
per-sample floor (``verdict``), with allocation counts from the OS; the analytic cache footprints; the gradient
noise scale; the vectorization ladder; the counterfactuals ("what would help", each measured in a process of
its own); the recommendation; and the warnings a careful reader needs (instruments that disagree, a noisy
sweep, a ladder rung far from the sweep, held-out misses, an unreliable noise scale). The result is a plain
dict that ``report.write`` turns into explain.json, explain.md and PNG plots.
"""

from __future__ import annotations

import math
import resource
import sys
import time
import tracemalloc

import numpy as np

from minigrad import backend, data, models, optim, progress as _progress, rng
from minigrad.batch_sizes import DEFAULT_BATCH_SIZES, KNEE_TOLERANCE, knee
from minigrad.machine import machine_info, versions

from . import (_harness, ceilings, counterfactuals, cprofile_harness, curve, device, ladder, line_harness,
               noise_scale, plateau, predict, reconcile, verdict)
from .tracer import Tracer

#: Relative spread of a point's repeated step medians above which the report warns that the sweep is noisy.
NOISY_SPREAD = 0.10
#: Relative difference between the ladder's rung for this backend and the sweep at the same batch size above
#: which the report warns (both time the same step; a large gap means the machine's load changed).
LADDER_DISAGREE = 0.25
#: Held-out prediction error of the plateau model that the report flags.
HOLDOUT_MISS = 0.10


def step_sweep(model_name: str, batch_sizes, train_set, samples_per_point: int, max_steps: int,
               repeats: int = 1) -> list[dict]:
    """Median step time of the live backend at every batch size (the batched rung of the ladder), measured
    ``repeats`` times interleaved over the batch sizes. Each row: the median of the repeats' medians, and as
    its spread the extremes of those medians (or, with one repeat, the step times' quartiles)."""
    rung = backend.get_backend()
    runs: dict[int, list[dict]] = {b: [] for b in batch_sizes}
    for _ in range(repeats):
        for b in batch_sizes:
            runs[b].append(ladder.time_rung(rung, model_name, b, train_set,
                                            int(min(max_steps, max(5, samples_per_point // b)))))
    rows = []
    for b in batch_sizes:
        medians = [r["step_seconds"] for r in runs[b]]
        step = float(np.median(medians))
        low, high = (min(medians), max(medians)) if repeats > 1 else (runs[b][0]["step_q1"], runs[b][0]["step_q3"])
        rows.append({"batch_size": b, "step_seconds": step, "step_low": low, "step_high": high,
                     "step_iqr": float(np.median([r["step_iqr"] for r in runs[b]])), "repeats": medians,
                     "spread": (high - low) / step, "samples_per_s": b / step,
                     "captured_share": float(np.mean([r["captured_share"] for r in runs[b]]))})
    return rows


def holdout_check(rows: list[dict], n_epoch: int) -> list[dict]:
    """Fit on every other batch size, predict the others: the fit's honesty check."""
    fit_rows, test_rows = rows[::2], rows[1::2]
    model = plateau.fit([r["batch_size"] for r in fit_rows], [r["step_seconds"] for r in fit_rows], n_epoch)
    out = []
    for r in test_rows:
        measured = n_epoch / r["batch_size"] * r["step_seconds"]
        predicted = model.predict_epoch_seconds(r["batch_size"])
        error = predicted / measured - 1
        out.append({"batch_size": r["batch_size"], "measured_epoch_seconds": measured,
                    "predicted_epoch_seconds": predicted, "error": error, "miss": abs(error) > HOLDOUT_MISS})
    return out


def allocation_sweep(model_name: str, batch_sizes, train_set, steps: int) -> list[dict]:
    """Per batch size, from the OS and NumPy: minor page faults per step (getrusage, over ``steps`` steps after
    warm-up) and the peak bytes of NumPy arrays live during one step (tracemalloc, in a step of its own since
    tracing slows every allocation)."""
    out = []
    for b in batch_sizes:
        run = _harness.Harness(model_name, b, train_set, steps + 3)
        run.updates(2)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        run.updates(steps)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps
        tracemalloc.start()
        try:
            run.updates(1)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        out.append({"batch_size": b, "minor_faults_per_step": faults, "traced_peak_bytes": peak})
    return out


def traced_sweep(model_name: str, batch_sizes, train_set, steps: int) -> list[dict]:
    """Per batch size: the tracer's per-kernel table over ``steps`` steps (after one untraced warm-up)."""
    out = []
    for b in batch_sizes:
        run = _harness.Harness(model_name, b, train_set, steps + 1)
        run.steps(1)
        with Tracer() as tr:
            run.steps(steps, around=tr.step)
        total = sum(s.seconds for s in tr.steps)
        out.append({"batch_size": b, "steps": steps, "step_seconds": total / steps,
                    "outside_fraction": sum(s.outside_seconds for s in tr.steps) / total,
                    "kernels": tr.table()})
    return out


def footprints(model_name: str, batch_sizes, itemsize: int = 4) -> list[dict]:
    """Analytic bytes per layer and batch size: each conv's im2col matrix and each layer's output (the shapes
    from the cost model's walk of the layers)."""
    calls = predict.step_calls(models.get_model(model_name), 1, itemsize)
    convs = {layer: call.shape for layer, call in calls.calls if call.kernel == "conv2d_forward"}
    layers = []
    for name, shape in calls.outputs:
        if name in convs:
            c = convs[name]
            layers.append({"layer": name, "kind": "im2col",
                           "bytes_per_sample": shape[2] * shape[3] * c["C"] * c["KH"] * c["KW"] * itemsize})
        layers.append({"layer": name, "kind": "activation", "bytes_per_sample": int(np.prod(shape[1:])) * itemsize})
    return [{"batch_size": b, "layers": [dict(l, bytes=l["bytes_per_sample"] * b) for l in layers]}
            for b in batch_sizes]

def recommend(sweep_fit: plateau.PlateauModel, rows: list[dict], b_simple: float | None) -> dict:
    """The best batch size for time-to-target, with the two reasons that bound it.

    Hardware knee: the smallest batch within KNEE_TOLERANCE of the best measured samples/s. Statistics: with noise scale
    B_noise, the steps to a target scale as S_min (1 + B_noise / B) (McCandlish et al. 2018, eq. 2.11), so the
    predicted time to target is proportional to (1 + B_noise / B) * step_seconds(B).
    """
    knee_b, _, best = knee([(r["batch_size"], r["samples_per_s"]) for r in rows], KNEE_TOLERANCE)
    out = {"hardware_knee": knee_b, "best_samples_per_s": best, "b_simple": b_simple}
    if b_simple is not None and math.isfinite(b_simple) and b_simple > 0:
        cost = {r["batch_size"]: (1 + b_simple / r["batch_size"]) * sweep_fit.predict_step_seconds(r["batch_size"])
                for r in rows}
        best_b = min(cost, key=cost.get)
        out.update(recommended=best_b, relative_time_to_target={b: c / cost[best_b] for b, c in cost.items()})
    else:
        out["recommended"] = knee_b
    return out


def explain(model_name: str = "lenet5", batch_sizes=DEFAULT_BATCH_SIZES, dataset: str = "mnist", data_dir=None,
            out_dir=None, quick: bool = False, noise_steps: int | None = None, progress=None,
            step_rows: list[dict] | None = None, repeats: int | None = None, threads: int | None = None,
            fall: float = curve.DEFAULT_FALL, counterfactual_steps: int | None = None) -> dict:
    """Run every measurement for ``model_name`` on the live backend; return the explain dict.

    step_rows: median step times already measured (e.g. by the bench sweep), as dicts with ``batch_size``,
        ``step_seconds``, ``step_iqr``, ``samples_per_s`` and optionally ``step_low``/``step_high``; the curve
        and the plateau are then read from them instead of from a sweep of its own.
    repeats: how often the sweep is repeated (default 1 with ``quick``, else 3).
    threads: the thread count the caller set (``machine.set_threads``), recorded and handed to the
        counterfactual runs.
    """
    t_start = time.perf_counter()
    batch_sizes = sorted(set(int(b) for b in batch_sizes))
    if dataset == "synthetic":
        train_set, _ = data.synthetic_mnist()
    else:
        train_set, _ = data.load_dataset(dataset, data_dir=data_dir)
    n_epoch = len(train_set)
    budget = 256 if quick else 2048
    repeats = repeats or (1 if quick else 3)
    name = backend.get_backend()
    stages = _progress.bar(progress, total=11, desc="explain")

    def stage(label):
        stages.set_postfix_str(label)
        stages.update(1)

    machine = ceilings.load(**({"gemm_n": 1024, "stream_mb": 64} if quick else {}))
    peak, bandwidth = machine["gemm_gflops"]["float32"], machine["stream_gbps"]["copy"]
    gpu = device.load_gpu() if backend.device() == "cuda" else None
    if gpu is not None:  # the kernels run on the GPU: its ceilings, not the host's, bound them
        peak, bandwidth = gpu["peak_gflops"], gpu["copy_gbps"]
    # the cost model predicts every batch size before anything is timed (on cupy from the device's calibration)
    cal = predict.load_calibration(name, "float32", threads or 1, quick=quick)
    preds = predict.predict(model_name, batch_sizes, name, "float32", threads or 1, n_epoch, cal)
    stage("ceilings, calibration")
    rows = step_rows or step_sweep(model_name, batch_sizes, train_set, budget, 10 if quick else 30, repeats)
    fit = plateau.fit([r["batch_size"] for r in rows], [r["step_seconds"] for r in rows], n_epoch)
    measured = curve.analyse(curve.points(rows, n_epoch), n_epoch, fall, fit)
    for r in rows:
        r["epoch_seconds"] = n_epoch / r["batch_size"] * r["step_seconds"]
        r["predicted_epoch_seconds"] = fit.predict_epoch_seconds(r["batch_size"])
    first_principles = predict.explanation(preds, rows, fall, cal) if preds else None
    # held out: every batch size against the cost model where there is one, else the fit on every other size
    holdout = first_principles["rows"] if first_principles else (holdout_check(rows, n_epoch) if len(rows) >= 4 else [])
    stage("step sweep")
    traced = traced_sweep(model_name, batch_sizes, train_set, 3 if quick else 5)
    stage("tracer")
    causes = cprofile_harness.sweep(model_name, batch_sizes, budget // 2, train_set, out_dir)
    stage("cProfile")
    lines = [line_harness.profile_lines(model_name, b, 3, train_set, out_dir)
             for b in sorted({batch_sizes[0], batch_sizes[-1]})] if out_dir is not None else []
    stage("line_profiler")
    instruments = reconcile.instruments(rows, traced, causes, lines)
    alloc = allocation_sweep(model_name, batch_sizes, train_set, 3 if quick else 10)
    verdicts = verdict.kernel_verdicts(traced, peak, bandwidth)
    largest = batch_sizes[-1]
    at = {r["batch_size"]: r for r in instruments}[largest]
    copies = (at["causes_us_per_sample_scaled"]["im2col/col2im"] * largest / 1e6
              if "causes_us_per_sample_scaled" in at else None)
    floor = verdict.floor_split(largest, {r["batch_size"]: r for r in rows}[largest]["step_seconds"],
                                {t["batch_size"]: t for t in traced}[largest], verdicts, copies,
                                {a["batch_size"]: a for a in alloc}[largest])
    stage("reconcile, verdicts")
    feet = footprints(model_name, batch_sizes)
    rng.manual_seed(0)
    noise_model = models.get_model(model_name)
    noise = noise_scale.track(noise_model, data.DataLoader(train_set, 64, shuffle=True, seed=0),
                              optim.SGD(noise_model.parameters(), lr=0.05, momentum=0.9),
                              steps=noise_steps or (noise_scale.MIN_STEPS if quick else 150), micro_batches=4,
                              allow_few_steps=noise_steps is not None)
    stage("noise scale")
    ladder_sizes = [b for b in batch_sizes if b <= 64] if quick else batch_sizes
    lad = ladder.run(model_name, ladder_sizes, train_set, samples_per_point=budget // 4, max_steps=5 if quick else 10,
                     n_epoch=n_epoch)
    stage("ladder")
    # the counterfactuals change the host's BLAS, allocator and backend: none of them applies to the GPU
    what_helps = [] if gpu is not None else counterfactuals.run(
        model_name, name, largest, dataset=dataset, data_dir=data_dir, threads=threads or 1,
        steps=counterfactual_steps or (5 if quick else 20))
    baseline = next((row for row in what_helps if row["name"] == "baseline" and row["applicable"]), None)
    if baseline is not None:  # the same step's page faults in a fresh process, where the heap has not grown yet
        floor["allocation"]["fresh_process_minor_faults_per_step"] = baseline["minor_faults_per_step"]
    stage("counterfactuals")
    # an unreliable noise scale (too few steps, too wide an interval) does not steer the recommendation
    rec = recommend(fit, rows, noise.b_simple if noise.reliable else None)
    stage("recommendation")
    stages.close()
    result = {
        "model": model_name, "backend": name, "dataset": train_set.name, "synthetic": train_set.synthetic,
        "n_epoch": n_epoch, "quick": quick, "repeats": repeats, "threads": threads, "machine": machine,
        "machine_info": machine_info(), "versions": versions(), "argv": sys.argv,
        "curve": measured.to_dict(), "sweep": rows, "plateau": fit.to_dict(), "holdout": holdout,
        "first_principles": first_principles,
        "traced": traced, "causes": causes, "lines": lines, "instruments": instruments, "allocation": alloc,
        "verdicts": verdicts, "floor": floor, "footprints": feet, "noise": noise.to_dict(), "ladder": lad,
        "counterfactuals": what_helps, "recommendation": rec, "seconds": time.perf_counter() - t_start,
        "gpu": gpu, "gpu_bounds": device.gpu_bounds(traced, gpu, step_rows=rows) if gpu is not None else None,
    }
    result["warnings"] = warnings(result)
    return result


def warnings(r: dict) -> list[str]:
    """What a careful reader must know before trusting the numbers, in plain words."""
    out = reconcile.warnings(r["instruments"])
    for row in r["sweep"]:
        if row.get("spread", 0.0) > NOISY_SPREAD:
            out.append(f"the sweep is noisy at B={row['batch_size']}: its repeated step medians spread "
                       f"{100 * row['spread']:.0f}% ({1e3 * row['step_low']:.3f}-{1e3 * row['step_high']:.3f} ms); "
                       + ("more --repeats or a quieter machine" if r.get("threads") == 1
                          else "--threads 1, more --repeats or a quieter machine"))
    sweep = {row["batch_size"]: row["step_seconds"] for row in r["sweep"]}
    for row in r["ladder"]["rows"]:
        if row["rung"] == r["backend"] and row["batch_size"] in sweep:
            gap = row["step_seconds"] / sweep[row["batch_size"]] - 1
            if abs(gap) > LADDER_DISAGREE:
                out.append(f"the ladder's {row['rung']} rung disagrees with the sweep by {100 * gap:+.0f}% at "
                           f"B={row['batch_size']} (the same step, timed minutes apart: the machine's load changed)")
    model = "the cost model" if r.get("first_principles") else "the plateau model"
    for h in r["holdout"]:
        if h["miss"]:
            out.append(f"{model} misses the held-out B={h['batch_size']} by {100 * h['error']:+.0f}%")
    if not r["noise"].get("reliable", True):
        out.append(f"the gradient noise scale is not reliable: {r['noise'].get('why', 'see its interval')}")
    return out
