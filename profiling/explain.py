"""Measure everything the explanation needs for one model and backend, across batch sizes.

``explain(...)`` runs, in order: the machine's ceilings; a step-time sweep and its plateau fit (plus a
held-out check of the fit's predictions); one traced run per batch size (per-kernel time, FLOPs, bytes, the
time outside kernels); cProfile causes per sample; line_profiler at the smallest and largest batch; the
analytic cache footprints; the gradient noise scale; the vectorization ladder; and the recommendation. The
result is a plain dict that ``report.write`` turns into explain.json, explain.md and PNG plots.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from minigrad import backend, data, models, optim, progress as _progress, rng
from minigrad.batch_sizes import DEFAULT_BATCH_SIZES, KNEE_TOLERANCE, knee
from minigrad.machine import machine_info, versions

from . import _harness, ceilings, cprofile_harness, ladder, line_harness, noise_scale, plateau
from .tracer import Tracer



def step_sweep(model_name: str, batch_sizes, train_set, samples_per_point: int, max_steps: int) -> list[dict]:
    """Median step time of the live backend at every batch size (the batched rung of the ladder)."""
    rung = "numpy" if backend.get_backend() == "numpy" else backend.get_backend()
    return [ladder.time_rung(rung, model_name, b, train_set, int(min(max_steps, max(5, samples_per_point // b))))
            for b in batch_sizes]


def holdout_check(rows: list[dict], n_epoch: int) -> list[dict]:
    """Fit on every other batch size, predict the others: the fit's honesty check."""
    fit_rows, test_rows = rows[::2], rows[1::2]
    model = plateau.fit([r["batch_size"] for r in fit_rows], [r["step_seconds"] for r in fit_rows], n_epoch)
    out = []
    for r in test_rows:
        measured = n_epoch / r["batch_size"] * r["step_seconds"]
        predicted = model.predict_epoch_seconds(r["batch_size"])
        out.append({"batch_size": r["batch_size"], "measured_epoch_seconds": measured,
                    "predicted_epoch_seconds": predicted, "error": predicted / measured - 1})
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
    """Analytic bytes per layer and batch size: each conv's im2col matrix and each layer's output."""
    model = models.get_model(model_name)
    shape = (1, 28, 28)
    layers = []
    for i, layer in enumerate(model):
        name = f"{i}:{type(layer).__name__}"
        if isinstance(layer, models.nn.Conv2d):
            C, H, W = shape
            k, s, p = layer.kernel_size, layer.stride, layer.padding
            OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
            layers.append({"layer": name, "kind": "im2col", "bytes_per_sample": OH * OW * C * k * k * itemsize})
            shape = (layer.out_channels, OH, OW)
        elif isinstance(layer, models.nn.MaxPool2d):
            C, H, W = shape
            k = layer.kernel_size
            st = layer.stride or k
            shape = (C, (H - k) // st + 1, (W - k) // st + 1)
        elif isinstance(layer, models.nn.Flatten):
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, models.nn.Linear):
            shape = (layer.out_features,)
        layers.append({"layer": name, "kind": "activation", "bytes_per_sample": int(np.prod(shape)) * itemsize})
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
            step_rows: list[dict] | None = None) -> dict:
    """Run every measurement for ``model_name`` on the live backend; return the explain dict.

    step_rows: median step times already measured (e.g. by the bench sweep), as dicts with ``batch_size``,
        ``step_seconds``, ``step_iqr`` and ``samples_per_s``; the plateau is then fitted to them instead of
        to a sweep of its own.
    """
    t_start = time.perf_counter()
    batch_sizes = sorted(set(int(b) for b in batch_sizes))
    if dataset == "synthetic":
        train_set, _ = data.synthetic_mnist()
    else:
        train_set, _ = data.load_dataset(dataset, data_dir=data_dir)
    n_epoch = len(train_set)
    budget = 256 if quick else 2048
    stages = _progress.bar(progress, total=8, desc="explain")

    def stage(name):
        stages.set_postfix_str(name)
        stages.update(1)

    machine = ceilings.load(**({"gemm_n": 1024, "stream_mb": 64} if quick else {}))
    stage("ceilings")
    rows = step_rows or step_sweep(model_name, batch_sizes, train_set, budget, 10 if quick else 30)
    fit = plateau.fit([r["batch_size"] for r in rows], [r["step_seconds"] for r in rows], n_epoch)
    for r in rows:
        r["epoch_seconds"] = n_epoch / r["batch_size"] * r["step_seconds"]
        r["predicted_epoch_seconds"] = fit.predict_epoch_seconds(r["batch_size"])
    holdout = holdout_check(rows, n_epoch) if len(rows) >= 4 else []
    stage("step sweep")
    traced = traced_sweep(model_name, batch_sizes, train_set, 3 if quick else 5)
    stage("tracer")
    causes = cprofile_harness.sweep(model_name, batch_sizes, budget // 2, train_set, out_dir)
    stage("cProfile")
    lines = [line_harness.profile_lines(model_name, b, 3, train_set, out_dir)
             for b in sorted({batch_sizes[0], batch_sizes[-1]})] if out_dir is not None else []
    stage("line_profiler")
    feet = footprints(model_name, batch_sizes)
    rng.manual_seed(0)
    noise_model = models.get_model(model_name)
    noise = noise_scale.track(noise_model, data.DataLoader(train_set, 64, shuffle=True, seed=0),
                              optim.SGD(noise_model.parameters(), lr=0.05, momentum=0.9),
                              steps=noise_steps or (20 if quick else 150), micro_batches=4)
    stage("noise scale")
    ladder_sizes = [b for b in batch_sizes if b <= 64] if quick else batch_sizes
    lad = ladder.run(model_name, ladder_sizes, train_set, samples_per_point=budget // 4, max_steps=5 if quick else 10,
                     n_epoch=n_epoch)
    stage("ladder")
    rec = recommend(fit, rows, noise.b_simple)
    stage("recommendation")
    stages.close()
    return {
        "model": model_name, "backend": backend.get_backend(), "dataset": train_set.name,
        "synthetic": train_set.synthetic, "n_epoch": n_epoch, "quick": quick,
        "machine": machine, "machine_info": machine_info(), "versions": versions(), "argv": sys.argv,
        "sweep": rows, "plateau": fit.to_dict(), "holdout": holdout, "traced": traced, "causes": causes,
        "lines": lines, "footprints": feet, "noise": noise.to_dict(), "ladder": lad, "recommendation": rec,
        "seconds": time.perf_counter() - t_start,
    }
