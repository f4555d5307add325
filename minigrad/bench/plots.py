"""PNG plots of a study: one line per backend (torch included), batch size on a log2 axis.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), which needs no
display and leaves pyplot's global backend alone for any caller that imported the bench.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from minigrad.batch_sizes import KNEE_TOLERANCE

from .store import WriteFailed, atomic_write

_MIB = 1024 * 1024


def _extrapolated(row: dict) -> bool:
    return not row["epoch_measured"]


def _subtitle(study) -> str:
    s, d = study.settings, study.data
    kind = "synthetic data" if d["synthetic"] else f"real {d['dataset']}"
    budget = f"{s.epochs} epoch(s)" if s.epochs else f"{s.samples:,} samples"
    cpu = study.sessions[-1]["machine"]["cpu"]
    return f"{s.model} on {kind}, {s.mode}, {budget} per batch size, {s.dtype}; {cpu}, {s.threads} thread(s)"


def _figure(study, title: str, panels: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(7.5 * panels, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0].tolist()
    fig.suptitle(f"{title}\n{_subtitle(study)}", fontsize=10)
    return fig, axes


def _batch_axis(ax, sizes: list[int]) -> None:
    """log2 x axis with a tick at every measured batch size (17 shows as 17, not as 2^4.09)."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(b) for b in sizes])
    ax.set_xlabel("batch size")
    ax.grid(True, alpha=0.3)


def _minor_label(value: float, _pos) -> str:
    """Label minor ticks at 2, 3 and 5 times a power of ten only: enough to read values without crowding."""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(mantissa) in (2, 3, 5) else ""


def _log_y(ax) -> None:
    """Log y axis labelled with plain numbers (0.2, 30, 100), not 2x10^-1."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))


def _failures(ax, study, backend: str, color) -> None:
    """Mark batch sizes that diverged or ran out of memory at the bottom of the panel."""
    for r in study.rows:
        if r["backend"] == backend and r["status"] != "ok":
            ax.annotate(r["status"].replace("_", " "), xy=(r["batch_size"], 0.02), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=7, color=color, ha="center", va="bottom")


def _lines(ax, study, key: str, scale: float = 1.0, hollow_when=None, label_suffix: str = "", style: str = "-"):
    """One line per backend of ``row[key] * scale`` against batch size; hollow markers where ``hollow_when``."""
    for i, name in enumerate(study.backends):
        color = f"C{i}"
        rows = [r for r in study.ok_rows(name) if r.get(key) is not None]
        if rows:
            xs, ys = [r["batch_size"] for r in rows], [r[key] * scale for r in rows]
            ax.plot(xs, ys, style, color=color, label=name + label_suffix)
            for r, x, y in zip(rows, xs, ys, strict=True):
                hollow = hollow_when is not None and hollow_when(r)
                ax.plot([x], [y], "o", color=color, markerfacecolor="white" if hollow else color)
        _failures(ax, study, name, color)


def _sizes(study) -> list[int]:
    return sorted({r["batch_size"] for r in study.rows})


def _metadata(study) -> dict:
    """PNG text chunks: the command, machine, versions and data kind travel with the image itself."""
    from ..machine import describe

    session = study.sessions[-1]
    versions = ", ".join(f"{k} {v}" for k, v in session["versions"].items() if v)
    kind = "synthetic" if study.data["synthetic"] else "real"
    return {"Software": f"minigrad {session['versions']['minigrad']}",
            "Description": f"{study.sessions[0]['command']} | data: {kind} {study.data['dataset']} | machine: "
                           f"{describe(session['machine'])} | versions: {versions}"}


def _save(fig: Figure, out: Path, name: str, written: list[str], study) -> None:
    for ax in fig.axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    metadata = _metadata(study)
    # Through a temporary file renamed into place: a failed write (a full disk) leaves no half PNG behind.
    atomic_write(out / name, lambda f: fig.savefig(f, format="png", metadata=metadata))
    written.append(f"plots/{name}")


def write_plots(run_dir: Path, study, findings: dict) -> list[str]:
    """Write the study's PNGs under ``run_dir/plots`` (``findings``: report.findings(study), for the knee
    stars); returns their paths relative to ``run_dir``."""
    out = Path(run_dir) / "plots"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteFailed(out, exc) from exc
    sizes, s, written = _sizes(study), study.settings, []

    if s.mode == "train":
        fig, (ax,) = _figure(study, "Epoch time vs batch size (hollow: extrapolated from the sample budget)")
        _lines(ax, study, "epoch_seconds", hollow_when=_extrapolated)
        _batch_axis(ax, sizes)
        ax.set_ylabel("seconds per epoch")
        ax.set_ylim(bottom=0)
        _save(fig, out, "epoch_time.png", written, study)

    title = f"Throughput vs batch size (star: knee, the smallest batch within {KNEE_TOLERANCE:.0%} of the best)"
    fig, (ax,) = _figure(study, title)
    _lines(ax, study, "samples_per_s")
    for i, (name, f) in enumerate(findings.items()):
        row = next((r for r in study.ok_rows(name) if r["batch_size"] == f.get("knee_batch")), None)
        if row is not None:
            ax.plot([row["batch_size"]], [row["samples_per_s"]], "*", color=f"C{i}", markersize=16,
                    markeredgecolor="black")
    _batch_axis(ax, sizes)
    ax.set_ylabel("samples / s (training)" if s.mode == "train" else "samples / s (inference)")
    ax.set_ylim(bottom=0)
    _save(fig, out, "throughput.png", written, study)

    if s.mode == "train":
        title = "Model quality vs batch size (same samples seen; labels: optimizer updates, lr)"
        fig, (acc, loss) = _figure(study, title, 2)
        _lines(acc, study, "test_accuracy", scale=100)
        for r in study.ok_rows(study.backends[0]):  # the first backend's counts (every backend's are the same)
            acc.annotate(f"{r['updates']:,}\nlr {r['lr']:.2g}", (r["batch_size"], 100 * r["test_accuracy"]), fontsize=7,
                         textcoords="offset points", xytext=(0, 6), ha="center", color="C0")
        acc.set_ylabel("test accuracy (%)")
        _lines(loss, study, "final_train_loss")
        loss.set_ylabel("final training loss (mean of the last 10% of steps)")
        for ax in (acc, loss):
            _batch_axis(ax, sizes)
        _save(fig, out, "quality.png", written, study)
    else:
        fig, (lat, per) = _figure(study, "Inference latency vs batch size (eval mode, no autograd)", 2)
        _lines(lat, study, "latency_median_s", scale=1e3)
        lat.set_ylabel("latency per batch (ms, median)")
        _log_y(lat)
        for i, name in enumerate(study.backends):
            rows = study.ok_rows(name)
            per.plot([r["batch_size"] for r in rows], [1e6 * r["latency_median_s"] / r["batch_size"] for r in rows],
                     "o-", color=f"C{i}", label=name)
        per.set_ylabel("latency per sample (us)")
        _log_y(per)
        for ax in (lat, per):
            _batch_axis(ax, sizes)
        _save(fig, out, "latency.png", written, study)

    if any(r.get("peak_memory_bytes") for r in study.rows):
        fig, (ax,) = _figure(study, "Peak step memory vs batch size (above model and optimizer state)")
        _lines(ax, study, "peak_memory_bytes", scale=1 / _MIB)
        if any(r.get("memory_measure") != "rss" and r.get("rss_peak_delta_bytes") for r in study.rows):
            _lines(ax, study, "rss_peak_delta_bytes", scale=1 / _MIB, label_suffix=" (peak RSS growth)", style="--")
        measures = sorted({r["memory_measure"] for r in study.rows if r.get("memory_measure")})
        ax.set_ylabel(f"MiB ({', '.join(measures)})")
        _log_y(ax)
        _batch_axis(ax, sizes)
        _save(fig, out, "memory.png", written, study)

    if any(len(r.get("evaluations") or []) > 1 for r in study.rows):
        _accuracy_vs_time(study, out, written)
    if s.mode == "train" and any(r.get("updates_to_target") for r in study.rows):
        _to_target(study, out, written)
    return written


def _to_target(study, out: Path, written: list[str]) -> None:
    """The headline: updates and time to the target against B, with B_simple and the regimes it predicts
    (McCandlish et al.'s updates = S_min (1 + B_simple / B), S_min fitted to the first backend's counts)."""
    from .report import REGIME_FACTOR

    target = f"{100 * study.settings.target_accuracy:g}%"
    title = f"Updates and time to {target} test accuracy vs batch size (labels: lr)"
    fig, (upd, sec) = _figure(study, title, 2)
    _lines(upd, study, "updates_to_target", hollow_when=lambda r: r["samples_to_target"] <= r["eval_every_samples"])
    _lines(sec, study, "time_to_target_s")
    for r in study.ok_rows(study.backends[0]):
        if r.get("updates_to_target"):
            upd.annotate(f"{r['lr']:.2g}", (r["batch_size"], r["updates_to_target"]), fontsize=7,
                         textcoords="offset points", xytext=(0, 6), ha="center", color="C0")
    upd.set_ylabel(f"updates to {target} (hollow: upper bound)")
    sec.set_ylabel(f"training seconds to {target}")
    sizes = _sizes(study)
    est = (study.noise_scale or {}).get("estimate", {})
    b = est.get("b_simple")
    if b is not None and math.isfinite(b) and b > 0:
        lo, hi = min(sizes) / 2, max(sizes) * 2
        for ax in (upd, sec):
            ax.axvspan(lo, min(hi, b / REGIME_FACTOR), color="green", alpha=0.07,
                       label=f"perfect scaling (B < B_simple/{REGIME_FACTOR})")
            if b / REGIME_FACTOR < hi:
                ax.axvspan(b / REGIME_FACTOR, min(hi, REGIME_FACTOR * b), color="orange", alpha=0.07,
                           label="diminishing returns")
            if REGIME_FACTOR * b < hi:
                ax.axvspan(REGIME_FACTOR * b, hi, color="red", alpha=0.07, label="no further benefit")
            ax.axvline(b, color="gray", linestyle="--", label=f"B_simple ~ {b:,.0f}")
            ax.set_xlim(lo, hi)
        rows = [r for r in study.ok_rows(study.backends[0]) if r.get("updates_to_target")]
        exact = [r for r in rows if r["samples_to_target"] > r["eval_every_samples"]]  # not upper bounds
        rows = exact or rows
        s_min = float(sorted(r["updates_to_target"] / (1 + b / r["batch_size"]) for r in rows)[len(rows) // 2])
        xs = [lo * (hi / lo) ** (i / 100) for i in range(101)]
        upd.plot(xs, [s_min * (1 + b / x) for x in xs], ":", color="black",
                 label=f"S_min (1 + B_simple/B), S_min = {s_min:,.0f}")
    for ax in (upd, sec):
        _batch_axis(ax, sizes)
        _log_y(ax)
    _save(fig, out, "time_to_accuracy.png", written, study)


def _accuracy_vs_time(study, out: Path, written: list[str]) -> None:
    """Test accuracy against training seconds: one panel per backend, one line per batch size."""
    from matplotlib import colormaps

    fig, axes = _figure(study, "Test accuracy vs training time (evaluation time excluded)", len(study.backends))
    sizes = _sizes(study)
    cmap = colormaps["viridis"]
    for ax, name in zip(axes, study.backends, strict=True):
        for r in study.ok_rows(name):
            evals = r.get("evaluations") or []
            color = cmap(sizes.index(r["batch_size"]) / max(1, len(sizes) - 1))
            ax.plot([e["train_seconds"] for e in evals], [100 * e["test_accuracy"] for e in evals], "o-",
                    markersize=3, color=color, label=f"B={r['batch_size']}")
        if study.settings.target_accuracy is not None:
            ax.axhline(100 * study.settings.target_accuracy, color="gray", linestyle=":", label="target")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training seconds")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
    _save(fig, out, "accuracy_vs_time.png", written, study)
