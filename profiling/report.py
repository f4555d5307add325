"""Turn an explain dict (profiling.explain) into explain.json, explain.md and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import cprofile_harness, plateau
from .ladder import format_ladder


def headline(r: dict) -> str:
    """The plain-language answer, numbers attached."""
    fit = plateau.PlateauModel.from_dict(r["plateau"])
    rows = {row["batch_size"]: row for row in r["sweep"]}
    sizes = sorted(rows)
    b10 = r["plateau"]["plateau_batch_10pct"]
    first, last = sizes[0], sizes[-1]
    per_epoch_sample = r["n_epoch"] * fit.t_sample_at(last)
    causes_small = r["causes"][0]["causes_us_per_sample"]
    fixed_named = sorted(((v, k) for k, v in causes_small.items() if k in ("autograd/tape", "optimizer", "loss",
                                                                          "data loading", "other Python")),
                         reverse=True)[:2]
    where = " and ".join(f"{k} {v:.0f} us" for v, k in fixed_named)
    stop = f"B≈{b10}" if b10 is not None else f"no batch size up to {1 << 16}"
    return (
        f"On this machine ({r['machine']['cpu']}, {r['machine']['cores']} cores, backend {r['backend']}), "
        f"{r['model']}'s epoch time stops falling at {stop}: from there on the fixed cost of a step "
        f"(t_fixed = {1e3 * fit.t_fixed:.2f} ms: Python, the autograd tape, kernel dispatch and the optimizer's "
        f"per-parameter calls; at B={first} the largest parts are {where} per sample) is under 10% of the step, "
        f"and what remains, N·t_sample ≈ {per_epoch_sample:.1f} s per epoch of {r['n_epoch']} samples, is "
        f"arithmetic and memory traffic that a larger batch does not remove. Measured: "
        f"{rows[first]['epoch_seconds']:.1f} s per epoch at B={first}, "
        + ", ".join(f"{rows[b]['epoch_seconds']:.1f} s at B={b}" for b in sizes[1:] if b in (16, 64, last))
        + "."
    )


def _plot_plateau(r: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fit = plateau.PlateauModel.from_dict(r["plateau"])
    sizes = np.array([row["batch_size"] for row in r["sweep"]])
    grid = np.unique(np.geomspace(sizes.min(), sizes.max(), 200))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(grid, [fit.predict_epoch_seconds(b) for b in grid], "-", color="C0", label="model: (N/B)·t_fixed + N·t_sample(B)")
    ax.plot(sizes, [row["epoch_seconds"] for row in r["sweep"]], "o", color="C0", label="measured")
    ax.plot(grid, [r["n_epoch"] * fit.t_sample_at(b) for b in grid], "--", color="gray",
            label="N·t_sample(B): the floor no batch size removes")
    for frac, style in ((0.10, ":"), (0.05, "-.")):
        b = r["plateau"][f"plateau_batch_{int(frac * 100)}pct"]
        if b is not None and b <= sizes.max():
            ax.axvline(b, color="C3", ls=style, label=f"fixed part < {int(frac * 100)}% of a step (B={b})")
    for h in r.get("holdout", []):
        ax.plot(h["batch_size"], h["measured_epoch_seconds"], "s", mfc="none", color="C2")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("epoch time (s)")
    ax.set_title(f"{r['model']} on {r['backend']}: epoch time vs batch size")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_causes(r: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = r["causes"]
    labels = [str(row["batch_size"]) for row in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    bottom = np.zeros(len(rows))
    for i, cause in enumerate(cprofile_harness.CAUSES):
        vals = np.array([row["causes_us_per_sample"][cause] for row in rows])
        ax.bar(labels, vals, bottom=bottom, label=cause, color=f"C{i}")
        bottom += vals
    ax.set_xlabel("batch size")
    ax.set_ylabel("µs per sample (cProfile)")
    ax.set_title("Where a sample's time goes: fixed per-step costs shrink with B, arithmetic does not")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_roofline(r: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    peak = r["machine"]["gemm_gflops"]["float32"]
    bw = r["machine"]["stream_gbps"]["copy"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ai = np.geomspace(0.01, 1000, 200)
    ax.plot(ai, np.minimum(peak, ai * bw), "k-", lw=1,
            label=f"ceiling: sgemm {peak:.0f} GFLOP/s, stream {bw:.1f} GB/s")
    names = sorted({k["kernel"] for t in r["traced"] for k in t["kernels"] if k["flops"] and k["bytes"]})
    color = {n: plt.cm.tab20(i % 20) for i, n in enumerate(names)}  # one colour per kernel at both sizes
    for traced, marker in ((r["traced"][0], "o"), (r["traced"][-1], "^")):
        for k in traced["kernels"]:
            if k["flops"] and k["bytes"] and k["gflops"]:
                ax.plot(k["flops"] / k["bytes"], k["gflops"], marker, color=color[k["kernel"]],
                        mfc="none" if marker == "o" else None, label=k["kernel"] if marker == "^" else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title(f"Roofline: kernels at B={r['traced'][0]['batch_size']} (o) and B={r['traced'][-1]['batch_size']} (^)")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_ladder(r: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = r["ladder"]["rows"]
    for i, rung in enumerate(dict.fromkeys(row["rung"] for row in rows)):
        mine = [row for row in rows if row["rung"] == rung]
        ax.plot([m["batch_size"] for m in mine], [m["epoch_seconds"] for m in mine], "o-", color=f"C{i}", label=rung)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("epoch time (s, from median step time)")
    ax.set_title("Vectorization ladder: where each rung stops improving")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def markdown(r: dict) -> str:
    fit = r["plateau"]
    m = r["machine"]
    parts = [f"# Why epoch time stops falling: {r['model']} on {r['backend']}", "", headline(r), ""]
    if r["synthetic"]:
        parts += ["> Data: **synthetic** MNIST-shaped samples (timing only; accuracy figures are meaningless).", ""]
    parts += [
        "## The model", "",
        f"step(B) = t_fixed + B·t_sample(B), T_epoch(B) = (N/B)·t_fixed + N·t_sample(B), N = {r['n_epoch']}.",
        f"Fitted: t_fixed = {1e3 * fit['t_fixed']:.3f} ms, global t_sample = {1e6 * fit['t_sample']:.1f} µs; "
        f"fixed part under 10% of a step from B={fit['plateau_batch_10pct']}, under 5% from "
        f"B={fit['plateau_batch_5pct']}.", "", "![plateau](plateau.png)", "",
        _md_table(["B", "median step ms", "IQR ms", "samples/s", "epoch s (from step)", "model epoch s"],
                  [[s["batch_size"], f"{1e3 * s['step_seconds']:.3f}", f"{1e3 * s['step_iqr']:.3f}",
                    f"{s['samples_per_s']:.0f}", f"{s['epoch_seconds']:.1f}", f"{s['predicted_epoch_seconds']:.1f}"]
                   for s in r["sweep"]]), "",
    ]
    if r["holdout"]:
        parts += ["Held-out check (fitted on every other batch size, predicting the rest):", "",
                  _md_table(["B", "measured epoch s", "predicted epoch s", "error"],
                            [[h["batch_size"], f"{h['measured_epoch_seconds']:.1f}",
                              f"{h['predicted_epoch_seconds']:.1f}", f"{100 * h['error']:+.1f}%"]
                             for h in r["holdout"]]), ""]
    parts += ["## Where the time goes, per sample (cProfile)", "", "![causes](causes.png)", "", "```",
              cprofile_harness.format_causes(r["causes"]), "```", ""]
    if r["causes"] and r["causes"][0].get("prof_path"):
        parts += ["Profiles: " + ", ".join(f"`{Path(c['prof_path']).name}`" for c in r["causes"])
                  + " (open with `snakeviz`).", ""]
    parts += ["## Kernels (tracer) and the roofline", "",
              f"Ceilings measured here: sgemm {m['gemm_gflops']['float32']:.1f} GFLOP/s (float32), "
              f"{m['gemm_gflops']['float64']:.1f} (float64); stream copy {m['stream_gbps']['copy']:.1f} GB/s, "
              f"triad {m['stream_gbps']['triad']:.1f} GB/s; BLAS threads {m['blas_threads']}; caches "
              + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in m["caches"].items()) + ".", "",
              "![roofline](roofline.png)", ""]
    for t in (r["traced"][0], r["traced"][-1]):
        parts += [f"B={t['batch_size']}: {100 * t['outside_fraction']:.0f}% of the step is outside kernels.", "",
                  _md_table(["kernel", "calls", "ms", "% of step", "GFLOP/s", "GB/s"],
                            [[k["kernel"], k["calls"], f"{k['total_ms']:.2f}",
                              f"{k['pct_of_steps']:.1f}" if k["pct_of_steps"] is not None else "",
                              f"{k['gflops']:.2f}" if k["gflops"] is not None else "",
                              f"{k['gbps']:.2f}" if k["gbps"] is not None else ""] for k in t["kernels"]]), ""]
    l2, l3 = m["caches"].get("L2"), m["caches"].get("L3")
    parts += ["## Cache footprints (analytic, float32)", "",
              "Per layer, the im2col matrix and the output activation at each batch size; `>L2` / `>L3` mark "
              "what no longer fits, which is where per-sample time can rise again at large B.", ""]
    layers = [l["layer"] + " " + l["kind"] for l in r["footprints"][0]["layers"]]

    def mark(nbytes):
        tag = " >L3" if l3 and nbytes > l3 else (" >L2" if l2 and nbytes > l2 else "")
        return f"{nbytes / 2**20:.2f} MiB{tag}"

    parts += [_md_table(["layer"] + [f"B={f['batch_size']}" for f in r["footprints"]],
                        [[name] + [mark(f["layers"][i]["bytes"]) for f in r["footprints"]]
                         for i, name in enumerate(layers)]), ""]
    if r["lines"]:
        parts += ["## line_profiler excerpts", ""]
        for ln in r["lines"]:
            parts += [f"B={ln['batch_size']} (`{Path(ln['text_path']).name}`, `{Path(ln['lprof_path']).name}`):", ""]
            for f in ln["functions"][:4]:
                top = f["top_lines"][0]
                parts.append(f"- `{f['function']}` {1e3 * f['seconds']:.2f} ms; hottest line {top['line']} "
                             f"({100 * top['share']:.0f}%): `{top['source']}`")
            parts.append("")
    n = r["noise"]
    rec = r["recommendation"]
    parts += ["## Gradient noise scale and the recommendation", "",
              f"B_simple = tr(Σ)/|G|² = {n['b_simple']:.1f} (from {n['updates']} steps at B={n['b_big']}, "
              f"micro-batches of {n['b_small']}, EMA {n['ema']}). Below it, a larger batch nearly halves the "
              "steps needed per doubling; above it, extra samples per step buy little.", "",
              f"Hardware knee: B={rec['hardware_knee']} (smallest batch within 10% of the best "
              f"{rec['best_samples_per_s']:.0f} samples/s). **Recommended batch size: {rec['recommended']}**, the "
              "minimum of the predicted time to a target loss, ∝ (1 + B_simple/B)·step(B).", ""]
    if "relative_time_to_target" in rec:
        parts += [_md_table(["B", "relative time to target"],
                            [[b, f"{v:.2f}"] for b, v in rec["relative_time_to_target"].items()]), ""]
    parts += ["## Vectorization ladder", "", "![ladder](ladder.png)", "", "```",
              format_ladder(r["ladder"]), "```", "",
              f"_Measured in {r['seconds']:.0f} s; command: `{' '.join(r['argv'])}`._", ""]
    return "\n".join(parts)


def write(r: dict, out_dir) -> dict:
    """Write explain.json, explain.md and the PNGs into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "explain.json", "md": out / "explain.md", "plateau": out / "plateau.png",
             "causes": out / "causes.png", "roofline": out / "roofline.png", "ladder": out / "ladder.png"}
    paths["json"].write_text(json.dumps(r, indent=2, default=str))
    _plot_plateau(r, paths["plateau"])
    _plot_causes(r, paths["causes"])
    _plot_roofline(r, paths["roofline"])
    _plot_ladder(r, paths["ladder"])
    paths["md"].write_text(markdown(r))
    return {k: str(v) for k, v in paths.items()}
