"""The vectorization ladder: the same model and batch sizes through ever more vectorized code.

Rungs:
  (a) ``loop``:  a per-sample Python loop over the batch calling the NumPy kernels on batches of one, with
                 gradients accumulated and one optimizer update per batch. This is how much code in the wild
                 is written, and it reproduces the shape of the classic report (1200 s at B=1, ~850 s from
                 B=16 on): only the per-step update is amortised by B, the per-sample work is not.
  (b) ``numpy``: the batch vectorized (one GEMM per conv over the whole batch).
  (c) ``numba``: compiled kernels (when numba is installed).
  (d) ``cupy``:  the GPU (when a CUDA device is present).
Each rung is timed at each batch size (median step time after warm-up) and gets its own plateau fit, so the
report shows where each one stops improving and why.
"""

from __future__ import annotations

import numpy as np

from minigrad import backend, progress as _progress

from . import _harness, plateau

RUNGS = ("loop", "numpy", "numba", "cupy")
_RUNG_BACKEND = {"loop": "numpy", "numpy": "numpy", "numba": "numba", "cupy": "cupy"}


def available_rungs() -> list[str]:
    names = set(backend.available_backends())
    return [r for r in RUNGS if _RUNG_BACKEND[r] in names]


def time_rung(rung: str, model_name: str, batch_size: int, train_set, steps: int, warmup: int = 2,
              seed: int = 0) -> dict:
    """Median and spread of the step time of ``rung`` at ``batch_size`` over ``steps`` timed steps (the
    loop's compute seconds per optimizer update; the ``loop`` rung sums its batch's per-sample steps), and
    ``captured_share``: the share of the timed micro-batches replayed from a CUDA graph (cupy)."""
    with backend.use_backend(_RUNG_BACKEND[rung]):
        run = _harness.Harness(model_name, batch_size, train_set, warmup + steps, seed, per_sample=rung == "loop")
        run.updates(warmup)
        t = run.updates(steps)
    q1, median, q3 = np.percentile(t, [25, 50, 75])
    return {"rung": rung, "batch_size": batch_size, "steps": steps, "step_seconds": float(median),
            "step_q1": float(q1), "step_q3": float(q3), "step_iqr": float(q3 - q1),
            "samples_per_s": batch_size / float(median), "captured_share": run.captured / (steps * run.loop.accumulate)}


def run(model_name: str, batch_sizes, train_set, rungs=None, samples_per_point: int = 512, max_steps: int = 20,
        n_epoch: int = 60000, progress=None) -> dict:
    """Time every rung at every batch size; fit a plateau model per rung (epoch of ``n_epoch`` samples)."""
    rungs = list(rungs or available_rungs())
    points = [(r, b) for r in rungs for b in batch_sizes]
    rows = []
    for r, b in _progress.bar(progress, iterable=points, desc="ladder"):
        steps = int(min(max_steps, max(3, samples_per_point // b)))
        rows.append(time_rung(r, model_name, b, train_set, steps))
    fits = {}
    for r in rungs:
        mine = [row for row in rows if row["rung"] == r]
        for row in mine:
            row["epoch_seconds"] = n_epoch / row["samples_per_s"]
        if len({row["batch_size"] for row in mine}) >= 2:
            fits[r] = plateau.fit([row["batch_size"] for row in mine], [row["step_seconds"] for row in mine],
                                  n_epoch).to_dict()
    return {"model": model_name, "n_epoch": n_epoch, "rows": rows, "plateau": fits}


def format_ladder(result: dict) -> str:
    rows = result["rows"]
    sizes = sorted({r["batch_size"] for r in rows})
    rungs = [r for r in RUNGS if any(row["rung"] == r for row in rows)]
    head = f"{'epoch s (est.)':<15}" + "".join(f"{'B=' + str(b):>10}" for b in sizes)
    lines = [head, "-" * len(head)]
    for r in rungs:
        cells = {row["batch_size"]: row["epoch_seconds"] for row in rows if row["rung"] == r}
        lines.append(f"{r:<15}" + "".join(f"{cells[b]:>10.1f}" if b in cells else f"{'':>10}" for b in sizes))
    return "\n".join(lines)
