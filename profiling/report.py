"""Turn an explain dict (profiling.explain) into explain.json, explain.md and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import counterfactuals, cprofile_harness, curve, device, noise_scale, plateau, predict, reconcile, verdict
from .ladder import format_ladder


def headline(r: dict) -> str:
    """The plain-language answer, read off the measured curve first, then what the floor is made of."""
    m = r["machine"]
    c = curve.Curve(**{**r["curve"], "points": [curve.Point(**p) for p in r["curve"]["points"]]})
    where = (f"On this machine ({m['cpu']}, {m['usable_cores']} cores, {r.get('threads') or m['blas_threads']} "
             f"thread(s)), {r['model']} on {r['backend']}")
    text = curve.headline(c, where)
    if r.get("gpu_bounds"):  # on the GPU, what bounds the step comes first after the curve
        text += " " + device.gpu_headline(r["model"], r["gpu_bounds"], r["gpu"])
    if r.get("first_principles"):
        text += " " + predict.summary(r["first_principles"])
    return text + " " + verdict.summary(r["floor"])


def _plot_plateau(r: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fit = plateau.PlateauModel.from_dict(r["plateau"])
    c = r["curve"]
    pts = c["points"]
    sizes = np.array([p["batch_size"] for p in pts])
    mid = np.array([p["epoch_seconds"] for p in pts])
    err = np.array([[p["epoch_seconds"] - p["low"] for p in pts], [p["high"] - p["epoch_seconds"] for p in pts]])
    grid = np.unique(np.geomspace(sizes.min(), sizes.max(), 200))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.errorbar(sizes, mid, yerr=err, fmt="o", color="C0", capsize=3, label="measured (median, spread)")
    ax.plot(grid, [fit.predict_epoch_seconds(b) for b in grid], "-", color="C0", alpha=0.4,
            label="model: (N/B)·t_fixed + N·t_sample(B)")
    ax.plot(grid, [r["n_epoch"] * fit.t_sample_at(b) for b in grid], "--", color="gray",
            label="N·t_sample(B): the per-sample part")
    if c["plateau_batch"] is not None:
        lo, hi = c["plateau_earliest"] or c["plateau_batch"], c["plateau_latest"] or sizes.max()
        ax.axvspan(lo, hi, color="C3", alpha=0.08)
        ax.axvline(c["plateau_batch"], color="C3", ls=":",
                   label=f"stops falling (< {100 * c['fall']:.0f}% per doubling): B={c['plateau_batch']}")
    for h in r.get("holdout", []):
        ax.plot(h["batch_size"], h["predicted_epoch_seconds"], "x", color="C2" if not h.get("miss") else "C3")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("epoch time (s, from the median step)")
    held_out = "cost model, predicted before measuring" if r.get("first_principles") else "held-out predictions"
    ax.set_title(f"{r['model']} on {r['backend']}: epoch time vs batch size (x: {held_out})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_causes(r: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = [i for i in r["instruments"] if "causes_us_per_sample_scaled" in i]
    labels = [str(row["batch_size"]) for row in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    bottom = np.zeros(len(rows))
    for i, cause in enumerate(c for c in cprofile_harness.CAUSES if c != reconcile.DATA):
        vals = np.array([row["causes_us_per_sample_scaled"][cause] for row in rows])
        ax.bar(labels, vals, bottom=bottom, label=cause, color=f"C{i}")
        bottom += vals
    ax.set_xlabel("batch size")
    ax.set_ylabel("µs per sample (cProfile, scaled to the untimed step)")
    ax.set_title("Where a sample's time goes: fixed per-step costs shrink with B, the rest does not")
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


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f}%"


def markdown(r: dict) -> str:
    fit = r["plateau"]
    m = r["machine"]
    c = r["curve"]
    parts = [f"# Why epoch time stops falling: {r['model']} on {r['backend']}", "", headline(r), ""]
    if r["warnings"]:
        parts += ["> **Read with care:**"] + [f"> - {w}" for w in r["warnings"]] + [""]
    if r["synthetic"]:
        parts += ["> Data: **synthetic** MNIST-shaped samples (timing only; accuracy figures are meaningless).", ""]
    sweep = {s["batch_size"]: s for s in r["sweep"]}
    falls = {f["to"]: f for f in c["falls"]}
    parts += [
        "## The measured curve", "",
        f"Epoch time from the median step time, T(B) = (N/B)·step(B), N = {r['n_epoch']}; the step is the training "
        f"loop's compute time (forward, loss, backward, update; data loading apart), measured {r['repeats']} time(s) "
        "interleaved over the batch sizes; low-high is the spread of the repeats (one repeat: the quartiles of its "
        f"steps). Epoch time counts as stopped falling where it falls less than {100 * c['fall']:.0f}% per doubling "
        "to every larger measured batch.", "",
        _md_table(["B", "step ms", "low-high ms", "epoch s", "low-high s", "fall per doubling from the previous B"],
                  [[p["batch_size"], f"{1e3 * sweep[p['batch_size']]['step_seconds']:.3f}",
                    f"{1e3 * sweep[p['batch_size']].get('step_low', 0):.3f}-"
                    f"{1e3 * sweep[p['batch_size']].get('step_high', 0):.3f}",
                    f"{p['epoch_seconds']:.1f}", f"{p['low']:.1f}-{p['high']:.1f}",
                    (f"{100 * falls[p['batch_size']]['fall']:.1f}% ({100 * falls[p['batch_size']]['fall_low']:.0f} "
                     f"to {100 * falls[p['batch_size']]['fall_high']:.0f}%)") if p["batch_size"] in falls else ""]
                   for p in c["points"]]), "",
        f"Plateau batch: {c['plateau_batch'] or 'none (still falling)'} (range {c['plateau_earliest']} to "
        f"{c['plateau_latest'] or 'beyond the measured sizes'}); fastest measured B={c['best_batch']}, "
        f"{c['measured_speedup']:.2f}x faster than B={c['points'][0]['batch_size']}; the most batching can "
        f"give by amortizing the fixed cost, 1/(1 - t_fixed/step(1)) = {c['speedup_bound']:.2f}x; the cheapest "
        f"per-sample cost measured, (step(B) - t_fixed)/B, is {1e6 * c['t_sample_best']:.1f} µs at "
        f"B={c['t_sample_best_batch']} against {1e6 * (c['step_1'] - c['t_fixed']):.1f} µs at B=1.", "",
        "![plateau](plateau.png)", "",
        "## The model", "",
        f"step(B) = t_fixed + B·t_sample(B), fitted to the medians: t_fixed = {1e3 * fit['t_fixed']:.3f} ms, global "
        f"t_sample = {1e6 * fit['t_sample']:.1f} µs. The model reproduces the points it was fitted to by "
        "construction (t_sample(B) is taken from each): it describes; the held-out check below tests a prediction.", "",
    ]
    fp = r.get("first_principles")
    if fp:
        parts += ["## First principles: the cost model", "",
                  "Every kernel call of a step priced from the layer shapes and this machine's calibration (GEMM "
                  "times over a grid of shapes, each memory pass and small kernel by size, the fixed costs of a "
                  f"call and a step; on a GPU the device's; calibrated {fp['calibrated_at']}, never on this model), "
                  "predicted before the sweep ran: every batch size is held out. `python -m minigrad.profile "
                  f"predict --model {r['model']} --backend {r['backend']} --measure` lists every call with its "
                  "reason." + (f" The calibration's own noise: {fp['calibration_noise']}."
                               if fp.get("calibration_noise") else ""), "", predict.summary(fp), "",
                  f"Where epoch time stops falling: measured, B={c['plateau_batch'] or 'not within the sizes'}; the "
                  f"model, B={fp['plateau_batch'] or 'not within the sizes'}.", "",
                  "The per-sample floor at the largest batch size, by kernel call (what still falls per sample over "
                  "the last doubling, and the term that dominates it):", "",
                  _md_table(["layer", "kernel", "µs per sample", "share of step", "fell per sample", "dominant term"],
                            [[w["layer"], w["kernel"], f"{w['us_per_sample']:.1f}", f"{100 * w['share']:.0f}%",
                              f"{100 * w['fell']:.0f}% since B={w['fell_since']}" if w["fell"] is not None else "",
                              w["reason"]] for w in fp["why"]]), ""]
    if r["holdout"]:
        parts += [("Held-out check (the cost model's prediction of every batch size, made before measuring; misses "
                   "over 10% are flagged):" if fp else
                   "Held-out check (fitted on every other batch size, predicting the rest; misses over "
                   "10% are flagged):"), "",
                  _md_table(["B", "measured epoch s", "predicted epoch s", "error", ""],
                            [[h["batch_size"], f"{h['measured_epoch_seconds']:.1f}",
                              f"{h['predicted_epoch_seconds']:.1f}", f"{100 * h['error']:+.1f}%",
                              "**miss**" if h.get("miss") else ""] for h in r["holdout"]]), ""]
    parts += ["## Every instrument against the untimed step", "",
              "Share: the step as the instrument saw it, over the untimed step (the sweep's median at that B); "
              "overhead = share - 1. Figures below that come from an instrument are scaled to the untimed step.", ""]
    names = ["tracer", "cprofile", "line_profiler"]
    parts += [_md_table(["B", "untimed ms"] + [f"{n} share" for n in names],
                        [[i["batch_size"], f"{1e3 * i['untimed_step_s']:.3f}"]
                         + [_pct(i["instruments"][n]["share"]) if n in i["instruments"] else "" for n in names]
                         for i in r["instruments"]]), ""]
    parts += ["## Where a sample's time goes (cProfile, scaled to the untimed step)", "", "![causes](causes.png)", "",
              "Each column is cProfile's split of the step, scaled to add up to the untimed step (the scale "
              "undoes the profiler's overhead on average, not per cause: the causes with many small calls, "
              "autograd/tape and optimizer, carry more of it). Data loading is outside the step.", "",
              _md_table(["µs / sample"] + [f"B={i['batch_size']}" for i in r["instruments"]],
                        [[cause] + [f"{i['causes_us_per_sample_scaled'][cause]:.1f}" for i in r["instruments"]]
                         for cause in cprofile_harness.CAUSES if cause != reconcile.DATA]
                        + [["**the untimed step**"] + [f"**{1e6 * i['untimed_step_s'] / i['batch_size']:.1f}**"
                                                       for i in r["instruments"]],
                           ["data loading (outside the step)"] + [f"{i['data_loading_us_per_sample']:.1f}"
                                                                  for i in r["instruments"]],
                           ["cProfile's scale"] + [f"{i['cprofile_scale']:.2f}" for i in r["instruments"]]]), ""]
    if r["causes"] and r["causes"][0].get("prof_path"):
        parts += ["Profiles: " + ", ".join(f"`{Path(x['prof_path']).name}`" for x in r["causes"])
                  + " (open with `snakeviz`; their times include cProfile's own overhead).", ""]
    if r.get("gpu_bounds"):
        parts += [gpu_section(r), ""]
    parts += ["## Kernels: what bounds each one", "",
              f"Ceilings measured here: sgemm {m['gemm_gflops']['float32']:.1f} GFLOP/s (float32), "
              f"{m['gemm_gflops']['float64']:.1f} (float64); stream copy {m['stream_gbps']['copy']:.1f} GB/s, "
              f"triad {m['stream_gbps']['triad']:.1f} GB/s; BLAS threads {m['blas_threads']}; caches "
              + ", ".join(f"{k} {v / 2**10:.0f} KiB" if v < 2**20 else f"{k} {v / 2**20:.1f} MiB"
                          for k, v in m["caches"].items()) + ". "
              "A bandwidth share above 100% means the kernel's data came from cache, not memory. "
              f"A kernel is compute-bound at >= {100 * verdict.BOUND:.0f}% of the sgemm peak, memory-bound at >= "
              f"{100 * verdict.BOUND:.0f}% of the stream bandwidth, else overhead-bound.", "",
              "![roofline](roofline.png)", ""]
    for t in (r["traced"][0], r["traced"][-1]):
        mine = [v for v in r["verdicts"] if v["batch_size"] == t["batch_size"]]
        parts += [f"B={t['batch_size']}: {100 * t['outside_fraction']:.0f}% of the traced step is outside kernels.", "",
                  _md_table(["kernel", "ms / step", "% of sgemm peak", "% of bandwidth", "verdict"],
                            [[v["kernel"], f"{1e3 * v['seconds_per_step']:.3f}", f"{100 * v['compute_share']:.1f}",
                              f"{100 * v['bandwidth_share']:.1f}", v["verdict"]] for v in mine]), ""]
    fl = r["floor"]
    parts += ["## The floor: what batching cannot remove", "", verdict.summary(fl), "",
              _md_table(["part of a sample's time at B=" + str(fl["batch_size"]), "µs"],
                        [["at a hardware ceiling (roofline of every kernel)", f"{fl['ceiling_us_per_sample']:.1f}"]]
                        + [[p["name"], f"{p['us_per_sample']:.1f}"] for p in fl["parts"]]
                        + [["not attributed", f"{fl['unattributed_us_per_sample']:.1f}"],
                           ["**the floor (untimed step / B)**", f"**{fl['floor_us_per_sample']:.1f}**"]]), "",
              _md_table(["B", "minor page faults / step", "per sample", "NumPy bytes live at the peak"],
                        [[a["batch_size"], f"{a['minor_faults_per_step']:.0f}",
                          f"{a['minor_faults_per_step'] / a['batch_size']:.1f}",
                          f"{a['traced_peak_bytes'] / 2**20:.2f} MiB"] for a in r["allocation"]]), ""]
    parts += ["## What would help, measured", ""]
    if r["counterfactuals"]:
        parts += [f"Each change below ran in a process of its own on the same work "
                  f"(B={r['traced'][-1]['batch_size']}); gain = baseline step / changed step.", "", "```",
                  counterfactuals.format_table(r["counterfactuals"]), "```", ""]
    else:
        parts += ["No counterfactual applies here: they change the host's BLAS threads, allocator and backend, "
                  "not a GPU step.", ""]
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
              noise_scale_text(n) + " Below B_simple a larger batch nearly halves the steps needed per doubling; "
              "above it, extra samples per step buy little.", "",
              f"Hardware knee: B={rec['hardware_knee']} (smallest batch within 10% of the best "
              f"{rec['best_samples_per_s']:.0f} samples/s). **Recommended batch size: {rec['recommended']}**, "
              + ("the minimum of the predicted time to a target loss, ∝ (1 + B_simple/B)·step(B)."
                 if rec.get("b_simple") is not None else
                 "the hardware knee alone: the noise scale was not reliable enough to weigh in."), ""]
    if "relative_time_to_target" in rec:
        parts += [_md_table(["B", "relative time to target"],
                            [[b, f"{v:.2f}"] for b, v in rec["relative_time_to_target"].items()]), ""]
    parts += ["## Vectorization ladder", "", "![ladder](ladder.png)", "", "```",
              format_ladder(r["ladder"]), "```", "",
              f"_Measured in {r['seconds']:.0f} s; command: `{' '.join(r['argv'])}`._", ""]
    return "\n".join(parts)


def gpu_section(r: dict) -> str:
    """What bounds the step on the GPU, per batch size, with the GPU's measured ceilings."""
    g, gb = r["gpu"], r["gpu_bounds"]
    return "\n".join([
        "## The GPU step: launch-bound or GPU-bound", "",
        f"{g['device']}: sgemm peak {g['peak_gflops']:,.0f} GFLOP/s, device copy {g['copy_gbps']:,.0f} GB/s, an empty "
        f"kernel launch {g['launch_us']:.1f} µs (CUDA events; the kernel verdicts use these ceilings). Busy share: "
        f"{gb['busy_basis']}.", "",
        _md_table(["B", "traced step ms", "busy share", "launches / step", "launch floor", "verdict"],
                  [[x["batch_size"], f"{x['step_ms']:.2f}", _pct(x["busy_share"]), f"{x['launches_per_step']:.0f}",
                    f"{x['launch_floor_ms']:.2f} ms ({_pct(x['launch_floor_share'])})", x["verdict"]]
                   for x in gb["rows"]])])


def noise_scale_text(n: dict) -> str:
    return (f"{noise_scale.summarize(n)}: B_simple = tr(Σ)/|G|², from {n['updates']} steps at B={n['b_big']} with "
            f"micro-batches of {n['b_small']} (means over the second half of the run; the interval is a block "
            "bootstrap of those steps).")


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
