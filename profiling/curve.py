"""What the measured epoch-time curve says on its own: where it stops falling, and the most batching can give.

The headline of the explanation is read off the measurements, never off a fitted curve:

- epoch time at each measured batch size, T(B) = (N / B) · step(B), with its spread (the step time's
  quartiles, or the extremes of repeated sweeps);
- the fall per doubling between two measured sizes, 1 - (T(b) / T(a)) ** (1 / log2(b / a));
- the **plateau batch**: the smallest measured B from which epoch time falls less than ``fall`` per doubling
  to *every* larger measured size (so a curve that keeps falling is never said to stop). Its range comes
  from the same test on the spread: the earliest B where even the least favourable reading qualifies and the
  latest where the most favourable one does;
- **the most batching can give**: with step(B) = t_fixed + B·t_sample, epoch time falls from N·step(1) at
  B = 1 towards N·t_sample, so amortizing the fixed cost can give at most 1 / (1 - f), f = t_fixed / step(1)
  the fixed share of the B=1 step (t_fixed from the fit). It sits next to the measured T(1) / T(best); where
  the measurement beats it, larger batches also made each sample's own work cheaper (BLAS on larger matrices),
  and the headline says so with the per-sample costs (step(B) - t_fixed) / B at B=1 and at their cheapest.

``parse_times`` reads the classic report's form ("1:1200,4:940,...": batch size and seconds), so
``python -m minigrad.profile explain --from-times ... --epochs 5`` explains a curve measured elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from . import plateau

#: Epoch time that falls less than this per doubling of the batch size counts as having stopped falling.
DEFAULT_FALL = 0.05


@dataclass
class Point:
    batch_size: int
    epoch_seconds: float   # the central reading (median)
    low: float             # the most favourable reading
    high: float            # the least favourable reading


def points(rows: list[dict], n_epoch: int) -> list[Point]:
    """Epoch-time points from step rows (``batch_size``, ``step_seconds`` and optionally ``step_low`` /
    ``step_high``, else ``step_q1`` / ``step_q3``), sorted by batch size."""
    out = []
    for r in sorted(rows, key=lambda r: r["batch_size"]):
        b = int(r["batch_size"])
        scale = n_epoch / b
        low = r.get("step_low", r.get("step_q1", r["step_seconds"]))
        high = r.get("step_high", r.get("step_q3", r["step_seconds"]))
        out.append(Point(b, scale * r["step_seconds"], scale * min(low, r["step_seconds"]),
                         scale * max(high, r["step_seconds"])))
    return out


def fall_per_doubling(t_a: float, t_b: float, b_a: float, b_b: float) -> float:
    """The fraction epoch time falls per doubling of the batch from (b_a, t_a) to (b_b, t_b); negative: it rose."""
    if not b_b > b_a:
        raise ValueError(f"fall_per_doubling: need b_b > b_a; got {b_a}, {b_b}")
    return 1.0 - (t_b / t_a) ** (1.0 / math.log2(b_b / b_a))


def plateau_batch(pts: list[Point], fall: float = DEFAULT_FALL, reading: str = "mid") -> int | None:
    """The smallest measured B from which epoch time falls less than ``fall`` per doubling to every larger
    measured B; None when no such B has a larger point after it (the curve keeps falling to the end).

    reading: "mid" (medians), "pessimistic" (from B's low reading to later high ones: the smallest falls, so
    the earliest plateau) or "optimistic" (high to low: the largest falls, the latest plateau).
    """
    start, later = {"mid": ("epoch_seconds", "epoch_seconds"), "pessimistic": ("low", "high"),
                    "optimistic": ("high", "low")}[reading]
    for i, p in enumerate(pts[:-1]):
        t_a = getattr(p, start)
        if all(fall_per_doubling(t_a, getattr(q, later), p.batch_size, q.batch_size) < fall for q in pts[i + 1:]):
            return p.batch_size
    return None


def batching_bound(t_fixed: float, step_1: float) -> float:
    """1 / (1 - f), f = t_fixed / step(1): the largest epoch-time speedup that amortizing the fixed cost of a
    step can give over B=1."""
    f = t_fixed / step_1
    return math.inf if f >= 1 else 1.0 / (1.0 - f)


@dataclass
class Curve:
    points: list[Point]
    fall: float
    plateau_batch: int | None          # None: still falling at the largest measured B
    plateau_earliest: int | None
    plateau_latest: int | None
    falls: list[dict]                  # per consecutive pair: from, to, fall per doubling (mid, and its range)
    best_batch: int
    measured_speedup: float            # T(first) / T(best)
    t_fixed: float
    t_sample: float
    fixed_fraction_at_first: float     # t_fixed / step(first measured B)
    t_sample_best: float               # the cheapest per-sample cost measured, (step(B) - t_fixed) / B
    t_sample_best_batch: int           # where it was measured
    step_1: float                      # the B=1 step (measured, else predicted by the fit)
    speedup_bound: float               # 1 / (1 - t_fixed / step(1))
    n_epoch: int

    def to_dict(self) -> dict:
        return asdict(self)


def analyse(pts: list[Point], n_epoch: int, fall: float = DEFAULT_FALL, fit: plateau.PlateauModel | None = None) -> Curve:
    """Read the curve: the plateau batch and its range, the falls between neighbours, the speedups. ``fit``: the
    plateau model of the same points when the caller has it already (else fitted here)."""
    if len(pts) < 2:
        raise ValueError("analyse: need epoch times at two or more batch sizes")
    if not 0 < fall < 1:
        raise ValueError(f"analyse: fall must lie in (0, 1); got {fall}")
    falls = []
    for a, b in zip(pts, pts[1:]):
        falls.append({"from": a.batch_size, "to": b.batch_size,
                      "fall": fall_per_doubling(a.epoch_seconds, b.epoch_seconds, a.batch_size, b.batch_size),
                      "fall_low": fall_per_doubling(a.low, b.high, a.batch_size, b.batch_size),
                      "fall_high": fall_per_doubling(a.high, b.low, a.batch_size, b.batch_size)})
    best = min(pts, key=lambda p: p.epoch_seconds)
    steps = [p.epoch_seconds * p.batch_size / n_epoch for p in pts]
    fit = fit or plateau.fit([p.batch_size for p in pts], steps, n_epoch)
    first = pts[0]
    step_1 = fit.t_fixed + fit.t_sample_at(1) if first.batch_size > 1 else steps[0]
    best_i = min(range(len(pts)), key=lambda i: fit.sample_seconds[i])
    return Curve(points=pts, fall=fall, plateau_batch=plateau_batch(pts, fall),
                 plateau_earliest=plateau_batch(pts, fall, "pessimistic"),
                 plateau_latest=plateau_batch(pts, fall, "optimistic"), falls=falls, best_batch=best.batch_size,
                 measured_speedup=first.epoch_seconds / best.epoch_seconds, t_fixed=fit.t_fixed,
                 t_sample=fit.t_sample, fixed_fraction_at_first=fit.t_fixed / steps[0],
                 t_sample_best=fit.sample_seconds[best_i], t_sample_best_batch=fit.batch_sizes[best_i], step_1=step_1,
                 speedup_bound=batching_bound(fit.t_fixed, step_1), n_epoch=n_epoch)


def headline(c: Curve, where: str, epochs: int = 1) -> str:
    """The answer in plain words, first: where the measured curve stops falling, and the most batching gives."""
    unit = f"{epochs} epochs" if epochs != 1 else "an epoch"
    first, last = c.points[0], c.points[-1]

    def t(p):
        return f"{epochs * p.epoch_seconds:,.1f} s at B={p.batch_size}"

    if c.plateau_batch is None:
        total = 1 - last.epoch_seconds / first.epoch_seconds
        stop = (f"epoch time has not stopped falling by the largest batch measured: {unit} takes {t(first)} and "
                f"{t(last)} ({100 * total:.0f}% less), still falling more than {100 * c.fall:.0f}% per doubling")
    else:
        p = next(q for q in c.points if q.batch_size == c.plateau_batch)
        rng = ("" if c.plateau_earliest == c.plateau_latest else
               f" (between B={c.plateau_earliest} and "
               f"{'beyond the largest measured' if c.plateau_latest is None else 'B=' + str(c.plateau_latest)} "
               "given the spread of the step times)")
        shown = [first] + [q for q in (p, last) if q.batch_size != first.batch_size]
        shown = list({q.batch_size: q for q in shown}.values())
        stop = (f"epoch time stops falling at B={c.plateau_batch}{rng}: from there on it falls less than "
                f"{100 * c.fall:.0f}% per doubling ({' -> '.join(t(q) for q in shown)})")
    f = c.t_fixed / c.step_1
    text = (f"{where}: {stop}. Amortizing the fixed cost of a step can give at most {c.speedup_bound:.2f}x over "
            f"B=1: {100 * f:.0f}% of the {1e3 * c.step_1:.2f} ms B=1 step is paid once per step (t_fixed = "
            f"{1e3 * c.t_fixed:.2f} ms) and the rest per sample, whatever the batch; measured: "
            f"{c.measured_speedup:.2f}x (B={first.batch_size} to the fastest, B={c.best_batch})")
    if c.measured_speedup > 1.02 * c.speedup_bound:
        text += (f", more than the fixed cost allows, because larger batches also made each sample's own work "
                 f"cheaper: {1e6 * (c.step_1 - c.t_fixed):.0f} µs per sample at B=1, "
                 f"{1e6 * c.t_sample_best:.0f} µs at B={c.t_sample_best_batch}")
    return text + "."


def parse_times(text: str) -> list[tuple[int, float]]:
    """"1:1200,4:940,16:850" -> [(1, 1200.0), (4, 940.0), (16, 850.0)]; ValueError naming the bad item."""
    out = []
    for item in str(text).split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            b, seconds = int(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"--from-times: each item must be BATCH:SECONDS (e.g. 16:850); got {item.strip()!r}") \
                from None
        if b < 1 or not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"--from-times: batch sizes must be positive and seconds positive; got {item.strip()!r}")
        out.append((b, seconds))
    if len({b for b, _ in out}) < 2:
        raise ValueError("--from-times: need times at two or more distinct batch sizes")
    return sorted(out)


def from_times(times: list[tuple[int, float]], epochs: int, n_epoch: int, fall: float = DEFAULT_FALL) -> Curve:
    """Analyse epoch times measured elsewhere: ``times`` are seconds for ``epochs`` epochs of ``n_epoch``."""
    pts = [Point(b, s / epochs, s / epochs, s / epochs) for b, s in times]
    return analyse(pts, n_epoch, fall)
