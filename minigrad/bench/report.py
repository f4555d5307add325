"""Everything derived from ``results.jsonl``: the terminal table, summary.json, results.csv, report.md.

Derived files are rewritten whole (atomically) from the records after each entry, so they always agree
with the jsonl and a resumed run rebuilds them without special cases.
"""

from __future__ import annotations

import csv
import io
import math

from minigrad.batch_sizes import KNEE_TOLERANCE, knee

from . import tune
from .settings import (EVAL_BATCH_SIZE, MEMORY_STEPS, STEADY_SKIP_MAX, WARMUP_STEPS, Settings,
                       format_bytes)
from .ranks import COLUMNS as RANKS_COLUMNS, findings_lines as ranks_findings
from .store import SCHEMA_VERSION, clean_json

#: The columns of a result row, in results.csv order (README: "Output schema").
RESULT_COLUMNS = (
    "backend", "mode", "batch_size", "status", "error", "chosen_by",
    "dtype", "threads", "optimizer", "lr", "lr_grid", "lr_at_grid_edge", "momentum", "accumulate", "virtual_batch_size",
    "warmup_updates",
    "samples", "steps", "captured_steps", "updates", "epochs_run",
    "train_seconds", "samples_per_s", "steady_samples_per_s",
    "step_median_s", "step_q1_s", "step_q3_s", "step_iqr_s", "step_min_s", "step_max_s", "step_count", "step_skipped",
    "latency_median_s", "latency_q1_s", "latency_q3_s", "latency_iqr_s", "latency_min_s", "latency_max_s",
    "latency_count", "latency_skipped",
    "data_median_s", "data_fraction", "epoch_seconds", "epoch_measured",
    "warmup_seconds", "warmup_steps", "first_step_s",
    "peak_memory_bytes", "memory_measure", "tracemalloc_peak_bytes", "rss_peak_delta_bytes", "gpu_pool_bytes",
    "model_state_bytes",
    "final_train_loss", "final_train_accuracy", "test_loss", "test_accuracy",
    "eval_every_samples", "target_accuracy", "target_reached", "time_to_target_s", "samples_to_target",
    "updates_to_target",
    "entry_seconds", "session", "finished_at",
) + RANKS_COLUMNS  # --ranks only
#: Test accuracy below this counts as "did not learn" in the findings (chance is 10% on 10 balanced classes).
CHANCE_LEVEL = 0.15
#: A step-time IQR above this share of the median flags an entry as noisy in the findings.
NOISY_IQR = 0.5
#: Run-level columns repeated on every csv row, so that a csv alone still says what produced it.
CONTEXT_COLUMNS = ("model", "dataset", "data_kind", "cpu", "cores", "blas", "blas_threads", "numba_threads",
                   "torch_threads", "gpu", "python", "numpy", "numba", "torch", "minigrad", "command")


class Results:
    """The records of one run directory, read back and organised for reporting."""

    def __init__(self, records: list[dict]):
        self.sessions = [r for r in records if r.get("record") == "run"]
        self.settings = Settings.from_dict(self.sessions[0]["settings"])
        self.data = self.sessions[0]["data"]
        self.autobatch = [r for r in records if r.get("record") == "autobatch"]
        self.noise_scale = next((r for r in records if r.get("record") == "noise_scale"), None)
        order = {name: i for i, name in enumerate(self.settings.backends)}
        self.rows = sorted((r for r in records if r.get("record") == "result"),
                           key=lambda r: (order.get(r["backend"], len(order)), r["batch_size"]))

    @property
    def backends(self) -> list[str]:
        return [b for b in self.settings.backends if any(r["backend"] == b for r in self.rows)]

    def ok_rows(self, backend: str) -> list[dict]:
        return [r for r in self.rows if r["backend"] == backend and r["status"] == "ok"]

    def session(self, number: int) -> dict:
        return next(s for s in self.sessions if s["session"] == number)


# ------------------------------------------------------------------------------------------------- tables


def _num(key: str, fmt: str, scale: float = 1.0):
    """A cell getter: ``row[key] * scale`` formatted with ``fmt``, "-" when missing."""
    return lambda r: "-" if r.get(key) is None else format(r[key] * scale if scale != 1 else r[key], fmt)


def _epoch(r: dict) -> str:
    return f"{r['epoch_seconds']:,.1f}{'' if r['epoch_measured'] else '*'}"


def _accuracy(r: dict) -> str:
    return "-" if r.get("test_accuracy") is None else f"{100 * r['test_accuracy']:.2f}%"


def _to_target(r: dict) -> str:
    return "not reached" if r.get("time_to_target_s") is None else f"{r['time_to_target_s']:,.1f}"


def _updates_to_target(r: dict) -> str:
    if r.get("updates_to_target") is None:
        return "not reached"
    return ("<= " if _at_first_evaluation(r) else "") + f"{r['updates_to_target']:,}"


def _at_first_evaluation(r: dict) -> bool:
    """The target was met at the first evaluation: the counts to it are upper bounds, not measurements."""
    return r.get("samples_to_target") is not None and r["samples_to_target"] <= (r.get("eval_every_samples") or 0)


def _lr_grid(r: dict) -> str:
    """The lrs tried (--tune-lr), the chosen one in brackets, a diverged one crossed (x)."""
    return " ".join(f"[{t['lr']:.2g}]" if t.get("chosen") else f"{t['lr']:.2g}" + ("x" if t["status"] != "ok" else "")
                    for t in r.get("lr_grid") or [])


def _columns(study: Results) -> list[tuple[str, object]]:
    """(header, cell getter) for the table of this study's mode."""
    s = study.settings
    cols = [("backend", lambda r: r["backend"]), ("batch", lambda r: str(r["batch_size"]))]
    memory = ("memory", lambda r: format_bytes(r.get("peak_memory_bytes")))
    if s.mode == "train":
        cols += [("epoch s", _epoch), ("samples/s", _num("samples_per_s", ",.0f")),
                 ("step ms", _num("step_median_s", ".2f", 1e3)), ("IQR ms", _num("step_iqr_s", ".2f", 1e3)),
                 ("warm-up s", _num("warmup_seconds", ".2f")), memory, ("updates", _num("updates", ",d")),
                 ("lr", _num("lr", ".4g"))]
        if s.tune_lr:
            cols.append(("lr grid", _lr_grid))
        cols += [("loss", _num("final_train_loss", ".3f")), ("test acc", _accuracy)]
        if s.target_accuracy is not None:
            cols += [(f"to {100 * s.target_accuracy:g}% s", _to_target),
                     (f"to {100 * s.target_accuracy:g}% updates", _updates_to_target)]
    else:
        cols += [("latency ms", _num("latency_median_s", ".3f", 1e3)), ("IQR ms", _num("latency_iqr_s", ".3f", 1e3)),
                 ("us/sample", lambda r: f"{1e6 * r['latency_median_s'] / r['batch_size']:.1f}"),
                 ("samples/s", _num("samples_per_s", ",.0f")), ("test set s", _epoch),
                 ("warm-up s", _num("warmup_seconds", ".3f")), memory]
    return cols


def _cells(study: Results, row: dict) -> list[str]:
    columns = _columns(study)
    if row["status"] != "ok":  # the status in the first measurement column, the rest left blank
        return [row["backend"], str(row["batch_size"]), row["status"].replace("_", " ")] + [""] * (len(columns) - 3)
    return [get(row) for _, get in columns]


def _notes(study: Results) -> list[str]:
    s = study.settings
    notes = []
    if "numpy" not in s.backends:
        notes.append("the classic NumPy plateau (epoch time that stops falling) shows with --backend numpy; "
                     "--backend numpy,numba,torch puts it beside the fast engine and the PyTorch peer")
    if any(r["status"] == "ok" and not r["epoch_measured"] for r in study.rows):
        unit = "training samples" if s.mode == "train" else "test samples"
        notes.append(f"* extrapolated to one epoch from {s.samples:,} {unit} per batch size at the measured "
                     f"samples/s (--epochs N measures whole epochs)")
    if s.mode == "train":
        notes.append(f"step ms: median step time (forward + loss + backward + update, synchronised; the wait for "
                     f"data is apart, in samples/s and epoch time), IQR its spread; the first <= {STEADY_SKIP_MAX} "
                     f"timed steps are left out, and {WARMUP_STEPS} warm-up steps ran before on a throwaway copy "
                     "(warm-up s)")
    else:
        notes.append(f"latency: median time of one forward pass in eval mode without autograd (data loading "
                     f"excluded); {WARMUP_STEPS} warm-up batches ran before (warm-up s)")
    measures = sorted({r["memory_measure"] for r in study.rows if r.get("memory_measure")})
    if measures:
        what = "a training step, above the model and optimizer state" if s.mode == "train" else \
            "a forward pass, above the model"
        notes.append(f"memory: peak bytes allocated during {what} ({', '.join(measures)}; measured over "
                     f"{MEMORY_STEPS} separate untimed steps)")
    if s.mode == "train":
        notes.append(_lr_note(s))
    if s.mode == "train" and s.accumulate > 1:
        notes.append(f"--accumulate {s.accumulate}: one optimizer update every {s.accumulate} batches "
                     f"(virtual batch = {s.accumulate} x batch)")
    every = sorted({r["eval_every_samples"] for r in study.rows if r.get("eval_every_samples")})
    if every:
        notes.append(f"test set evaluated every {', '.join(f'{e:,}' for e in every)} training samples (and at the "
                     f"end); time to target counts training step time only, evaluations excluded")
    failed = [r for r in study.rows if r["status"] != "ok"]
    for r in failed:
        notes.append(f"{r['backend']} B={r['batch_size']} {r['status'].replace('_', ' ')}: {r['error']}")
    return notes


def _lr_note(s: Settings) -> str:
    """Where each row's lr came from: the scaling rule, and with --tune-lr the grid and the criterion."""
    rule = {"none": f"{s.lr:g} at every batch size", "linear": f"{s.lr:g} x B/{s.base_batch_size}",
            "sqrt": f"{s.lr:g} x sqrt(B/{s.base_batch_size})"}.get(s.lr_scaling, f"{s.lr:g}, {s.lr_scaling} "
                                                                                f"from B={s.base_batch_size}")
    if s.accumulate > 1 and s.lr_scaling != "none":
        rule += f" (B: the virtual batch, {s.accumulate} x batch)"
    text = f"lr: {rule}"
    if s.tune_lr:
        factors = ", ".join(f"{f:.3g}" for f in s.tune_lr)
        text = (f"lr: the best of a grid per batch size (lr grid: that lr times {factors}; chosen in brackets, x: "
                f"diverged; {rule}), by {tune.CRITERION}")
    return text


def text_table(study: Results) -> str:
    """The table printed in the terminal at the end of a run, with its footnotes."""
    heads = [c[0] for c in _columns(study)]
    body = [_cells(study, r) for r in study.rows]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines + [""] + _notes(study))


def markdown_table(study: Results) -> str:
    heads = [c[0] for c in _columns(study)]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---:" for _ in heads) + "|"]
    lines += ["| " + " | ".join(_cells(study, r)).replace("*", "\\*") + " |" for r in study.rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- findings


def neighbours(ok_rows: list[dict]) -> list[dict]:
    """Powers of two put to the test: for every pair of measured batch sizes one apart (15/16, 16/17, ...), the
    change in time per sample from the smaller to the larger (steady state: median step / B) and whether it is
    beyond the noise, the sum of the two steps' half relative IQRs."""
    by_b = {r["batch_size"]: r for r in ok_rows}
    out = []
    for b in sorted(by_b):
        if b + 1 not in by_b:
            continue
        lo, hi = by_b[b], by_b[b + 1]
        change = (hi["step_median_s"] / (b + 1)) / (lo["step_median_s"] / b) - 1
        noise = 0.5 * (lo["step_iqr_s"] / lo["step_median_s"] + hi["step_iqr_s"] / hi["step_median_s"])
        out.append({"smaller": b, "larger": b + 1, "per_sample_change": change, "noise": noise,
                    "beyond_noise": abs(change) > noise})
    return out


#: Shallue et al. (2019)'s regimes, read off the updates to the target when the batch doubles, as a share of the
#: updates before: at most PERFECT_SCALING is perfect scaling (ideal: 0.5), at least NO_FURTHER_BENEFIT is no further
#: benefit, in between diminishing returns. Under McCandlish et al.'s model (updates = S_min (1 + B_simple / B)) the
#: share is (1 + B_simple / 2B) / (1 + B_simple / B): at most 0.6 for B <= B_simple / 4, at least 0.9 for
#: B >= 4 B_simple, so these thresholds put the predicted regimes' borders at B_simple / 4 and 4 B_simple.
PERFECT_SCALING = 0.6
NO_FURTHER_BENEFIT = 0.9
REGIME_FACTOR = 4


def regime(share_per_doubling: float) -> str:
    if share_per_doubling <= PERFECT_SCALING:
        return "perfect scaling"
    return "no further benefit" if share_per_doubling >= NO_FURTHER_BENEFIT else "diminishing returns"


def predicted_regime(batch_size: int, b_simple: float) -> str:
    """The regime that B_simple predicts at ``batch_size`` (McCandlish et al.'s model; thresholds above)."""
    x = b_simple / batch_size
    return regime((1 + x / 2) / (1 + x))


def scaling(ok_rows: list[dict]) -> list[dict]:
    """The measured regimes: for each pair of consecutive batch sizes that reached the target, the share of the
    updates to it that remain per doubling of B, (U_large / U_small) ** (1 / log2(B_large / B_small)).
    ``bounded``: one of the two reached the target at the first evaluation, so its count is only an upper bound."""
    reached = [r for r in ok_rows if r.get("updates_to_target")]
    out = []
    for lo, hi in zip(reached, reached[1:]):
        share = (hi["updates_to_target"] / lo["updates_to_target"]) ** (
            1 / math.log2(hi["batch_size"] / lo["batch_size"]))
        bounded = _at_first_evaluation(lo) or _at_first_evaluation(hi)
        out.append({"smaller": lo["batch_size"], "larger": hi["batch_size"], "updates_share_per_doubling": share,
                    "regime": None if bounded else regime(share), "bounded": bounded})
    return out


def noise_scale_text(record: dict) -> str:
    """B_simple as measured, and the batch sizes where its model puts the three regimes."""
    est = record["estimate"]
    text = (f"gradient noise scale ({record['backend']}, B={record['batch_size']} in {record['micro_batches']} "
            f"micro-batches, lr {record['lr']:.4g}, {record['steps']} steps from the initial weights): "
            f"{record['summary']}")
    b = est.get("b_simple")
    if b is not None and math.isfinite(b) and b > 0:
        text += (f". Under McCandlish et al.'s model (updates to a target = S_min (1 + B_simple / B)), doubling the "
                 f"batch is perfect scaling below about B_simple/{REGIME_FACTOR} = {b / REGIME_FACTOR:,.0f}, "
                 f"diminishing returns up to about {REGIME_FACTOR} B_simple = {REGIME_FACTOR * b:,.0f}, and no "
                 f"further benefit beyond (Shallue et al. 2019's regimes); B_simple grows as training goes on, so "
                 f"these borders move up for a higher target")
    return text


def inference_split(name: str, row: dict) -> str:
    """Why samples/s and the latency per sample disagree: the latency is the forward pass alone (logits on the
    host); samples/s is measured over the whole loop, which also waits for the loader and runs the loop itself."""
    b = row["batch_size"]
    total = 1e6 / row["samples_per_s"]
    forward = 1e6 * row["latency_median_s"] / b
    data = 1e6 * row["data_median_s"] / b
    return (f"{name}: at B={b} a sample takes {total:,.1f} µs by samples/s ({row['samples_per_s']:,.0f}/s) and "
            f"{forward:,.1f} µs by the latency (the forward pass alone, logits on the host); the difference is "
            f"waiting for the loader, {data:,.1f} µs, and the loop around them, {total - forward - data:,.1f} µs "
            "(Python, the timer; medians against a mean, so the parts need not add up exactly).")


def findings(study: Results) -> dict:
    """Per backend: the batch sizes that answer the study's questions (fastest, knee, most accurate, ...)."""
    out = {}
    auto = {r["backend"]: r for r in study.autobatch}
    for name in study.backends:
        ok = study.ok_rows(name)
        f = {"failed": {str(r["batch_size"]): r["status"] for r in study.rows
                        if r["backend"] == name and r["status"] != "ok"}}
        if ok and name in auto:  # --batch-sizes auto: the knee is the probe's, never one the auto step rejected
            record = auto[name]
            f.update(best_throughput_batch=record["best_throughput_batch"], knee_batch=record["knee_pick"],
                     best_samples_per_s=max(p["samples_per_s"] for p in record["throughput_probe"]),
                     knee_from="the auto probe")
        elif ok:
            knee_b, best_b, best = knee([(r["batch_size"], r["samples_per_s"]) for r in ok])
            f.update(best_throughput_batch=best_b, best_samples_per_s=best, knee_batch=knee_b)
        if ok:
            pairs = neighbours(ok)
            if pairs:
                f["neighbours"] = pairs
            if study.settings.mode == "train":
                fastest = min(ok, key=lambda r: r["epoch_seconds"])
                accurate = max(ok, key=lambda r: r["test_accuracy"])
                f.update(fastest_epoch_batch=fastest["batch_size"], fastest_epoch_seconds=fastest["epoch_seconds"],
                         best_accuracy_batch=accurate["batch_size"], best_test_accuracy=accurate["test_accuracy"])
                reached = [r for r in ok if r.get("target_reached")]
                if reached:
                    first = min(reached, key=lambda r: r["time_to_target_s"])
                    fewest = min(reached, key=lambda r: r["updates_to_target"])
                    f.update(fastest_to_target_batch=first["batch_size"], fastest_to_target_s=first["time_to_target_s"],
                             fewest_updates_to_target_batch=fewest["batch_size"],
                             fewest_updates_to_target=fewest["updates_to_target"], scaling=scaling(ok))
                f["lr_at_grid_edge"] = [r["batch_size"] for r in ok if r.get("lr_at_grid_edge")]
            else:
                quick = min(ok, key=lambda r: r["latency_median_s"])
                f.update(lowest_latency_batch=quick["batch_size"], lowest_latency_s=quick["latency_median_s"])
        out[name] = f
    return out


def _target_findings(study: Results, name: str, f: dict) -> list[str]:
    """The headline in sentences: the fastest batch to the target, the fewest updates, the regimes measured."""
    target = f"{100 * study.settings.target_accuracy:g}%"
    if "fastest_to_target_batch" not in f:
        return [f"{name}: no batch size reached {target} test accuracy within the budget."]
    lines = [f"{name}: reached {target} test accuracy fastest at B={f['fastest_to_target_batch']}, after "
             f"{f['fastest_to_target_s']:,.1f} s of training; in the fewest updates at "
             f"B={f['fewest_updates_to_target_batch']} ({f['fewest_updates_to_target']:,})."]
    missed = [f"B={r['batch_size']}" for r in study.ok_rows(name) if not r.get("target_reached")]
    if missed:
        lines.append(f"{name}: {', '.join(missed)} did not reach {target} within the budget.")
    if f["scaling"]:
        pairs = [f"B={p['smaller']}->{p['larger']} x{p['updates_share_per_doubling']:.2f} ("
                 + (p["regime"] or "no regime: a count is bounded by the first evaluation") + ")" for p in f["scaling"]]
        lines.append(f"{name}: updates to {target} per doubling of the batch (0.5: perfect scaling, 1: no benefit): "
                     + "; ".join(pairs) + ".")
    return lines


def findings_text(study: Results) -> list[str]:
    """Findings in sentences (report.md and the end of the terminal output)."""
    lines = []
    found = findings(study)
    for name in study.backends:
        f, ok = found[name], study.ok_rows(name)
        if not ok:
            lines.append(f"{name}: no batch size finished ({', '.join(f'B={b} {s}' for b, s in f['failed'].items())}).")
            continue
        by_b = {r["batch_size"]: r for r in ok}
        first, last = ok[0], ok[-1]
        if study.settings.mode == "train":
            lines.append(
                f"{name}: epoch time goes from {first['epoch_seconds']:,.1f} s at B={first['batch_size']} to "
                f"{last['epoch_seconds']:,.1f} s at B={last['batch_size']} (fastest {f['fastest_epoch_seconds']:,.1f}"
                f" s at B={f['fastest_epoch_batch']}); the throughput knee, the smallest batch within "
                f"{KNEE_TOLERANCE:.0%} of the best ({f['best_samples_per_s']:,.0f} samples/s at "
                f"B={f['best_throughput_batch']}{', in ' + f['knee_from'] if 'knee_from' in f else ''}), "
                f"is B={f['knee_batch']}.")
            lines.append(
                f"{name}: best test accuracy {100 * f['best_test_accuracy']:.2f}% at B={f['best_accuracy_batch']} "
                f"({by_b[f['best_accuracy_batch']]['updates']:,} updates); with the same samples, "
                f"B={last['batch_size']} made {last['updates']:,} updates and reached "
                f"{100 * last['test_accuracy']:.2f}%.")
            chance = [f"B={r['batch_size']} ({100 * r['test_accuracy']:.1f}%)" for r in ok
                      if r["test_accuracy"] < CHANCE_LEVEL]
            if chance:
                lines.append(f"{name}: {', '.join(chance)} stayed near chance level (10 classes): no learning with "
                             f"these settings at that batch size (try --tune-lr, --lr, --lr-scaling or --warmup).")
            if study.settings.target_accuracy is not None:
                lines += _target_findings(study, name, f)
            if f["lr_at_grid_edge"]:
                lines.append(f"{name}: the best lr of {', '.join(f'B={b}' for b in f['lr_at_grid_edge'])} is at the "
                             f"edge of its grid: a wider grid (--tune-lr with more factors) may do better there.")
        else:
            lines.append(inference_split(name, first))
            lines.append(
                f"{name}: lowest latency {1e3 * f['lowest_latency_s']:.3f} ms per batch at B="
                f"{f['lowest_latency_batch']}; best throughput {f['best_samples_per_s']:,.0f} samples/s at "
                f"B={f['best_throughput_batch']}; the knee (smallest batch within {KNEE_TOLERANCE:.0%} of it) is "
                f"B={f['knee_batch']}.")
        for n in f.get("neighbours", []):
            verdict = ("beyond the noise" if n["beyond_noise"] else
                       "within the noise: the power of two buys nothing measurable here")
            lines.append(f"{name}: B={n['larger']} against B={n['smaller']}: "
                         f"{100 * abs(n['per_sample_change']):.1f}% {'more' if n['per_sample_change'] > 0 else 'less'}"
                         f" time per sample (noise ±{100 * n['noise']:.1f}%), {verdict}.")
        noisy = [f"B={r['batch_size']}" for r in ok if r["step_iqr_s"] > NOISY_IQR * r["step_median_s"]]
        if noisy:
            lines.append(f"{name}: {', '.join(noisy)}: step times varied widely (IQR above {NOISY_IQR:.0%} of the "
                         f"median), the mark of a busy machine; rerun them, or use fewer --threads than cores.")
        if f["failed"]:
            lines.append(f"{name}: " + ", ".join(f"B={b} {s.replace('_', ' ')}" for b, s in f["failed"].items()) + ".")
    if study.noise_scale is not None:
        lines.append(noise_scale_text(study.noise_scale) + ".")
    lines += ranks_findings(study.rows)
    for record in study.autobatch:
        lines.append(f"{record['backend']} auto (memory): {record['memory_explanation']}.")
        lines.append(f"{record['backend']} auto (knee): {record['knee_explanation']}.")
    return lines


# ---------------------------------------------------------------------------------------- files on disk


def data_kind(data: dict) -> str:
    return "synthetic" if data["synthetic"] else "real"


def summary(study: Results, complete: bool, plots: list[str]) -> dict:
    first, last = study.sessions[0], study.sessions[-1]
    return clean_json({
        "schema_version": SCHEMA_VERSION,
        "complete": complete,
        "settings": study.settings.to_dict(),
        "data": study.data,
        "command": first["command"],
        "machine": last["machine"],
        "versions": last["versions"],
        "sessions": [{k: s[k] for k in ("session", "started_at", "command", "machine", "versions")}
                     for s in study.sessions],
        "method": {
            "warmup_steps": WARMUP_STEPS, "memory_steps": MEMORY_STEPS, "steady_skip_max": STEADY_SKIP_MAX,
            "eval_batch_size": EVAL_BATCH_SIZE, "knee_tolerance": KNEE_TOLERANCE,
            "epoch_time": "measured (--epochs)" if study.settings.epochs else
                          "extrapolated: samples per epoch / measured samples/s",
            "final_train_loss": "sample-weighted mean over the last 10% of steps",
            "inputs": "pixels / 255, normalised with MNIST's mean and standard deviation (every dataset)",
        },
        "autobatch": study.autobatch,
        "noise_scale": study.noise_scale,
        "results": [{k: v for k, v in r.items() if k != "record"} for r in study.rows],
        "findings": findings(study),
        "plots": plots,
    })


def csv_text(study: Results) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS) + list(CONTEXT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in study.rows:
        session = study.session(r["session"])
        machine, versions = session["machine"], session["versions"]
        row = {k: r.get(k) for k in RESULT_COLUMNS}
        if row["threads"] is None and "threads" not in r:  # rows recorded before they carried their threads
            row["threads"] = study.settings.threads
        row["chosen_by"] = "; ".join(r.get("chosen_by") or [])
        row["lr_grid"] = tune.grid_text(r.get("lr_grid"))
        row.update(model=study.settings.model, dataset=study.data["dataset"], data_kind=data_kind(study.data),
                   cpu=machine["cpu"], cores=machine["usable_cores"],
                   blas="; ".join(f"{b['library']} {b['version']}" for b in machine["blas"]),
                   blas_threads="; ".join(str(b["threads"]) for b in machine["blas"]),
                   numba_threads=machine["numba_threads"], torch_threads=machine["torch_threads"],
                   gpu=machine["gpu"] or "none", command=session["command"],
                   **{k: versions.get(k) for k in ("python", "numpy", "numba", "torch", "minigrad")})
        writer.writerow({k: "" if v is None else v for k, v in clean_json(row).items()})
    return buf.getvalue()


def headline(study: Results) -> list[str]:
    """report.md's first section in a training study with a target: time and updates to it against B, with the
    regimes measured between neighbours and those B_simple predicts (empty without a target)."""
    s = study.settings
    if s.mode != "train" or s.target_accuracy is None:
        return []
    target = f"{100 * s.target_accuracy:g}%"
    b_simple = (study.noise_scale or {}).get("estimate", {}).get("b_simple")
    b_simple = b_simple if b_simple is not None and math.isfinite(b_simple) and b_simple > 0 else None
    found = findings(study)
    lines = [f"## Headline: time and updates to {target} test accuracy", "",
             f"| backend | batch | lr | updates to {target} | samples to {target} | time to {target} s | "
             "updates per doubling, to the next batch | regime B_simple predicts |", "|---:" * 8 + "|"]
    for name in study.backends:
        pairs = {p["smaller"]: p for p in found[name].get("scaling", [])}
        for r in study.ok_rows(name):
            p = pairs.get(r["batch_size"])
            measured = "-" if p is None else (f"x{p['updates_share_per_doubling']:.2f} "
                                             + (p["regime"] or "(bounded by the first evaluation)"))
            samples = "not reached" if r.get("samples_to_target") is None else \
                ("<= " if _at_first_evaluation(r) else "") + f"{r['samples_to_target']:,}"
            lines.append(f"| {name} | {r['batch_size']} | {r['lr']:.4g} | {_updates_to_target(r)} | {samples} | "
                         f"{_to_target(r)} | {measured} | "
                         f"{'-' if b_simple is None else predicted_regime(r['batch_size'], b_simple)} |")
    every = ", ".join(f"{e:,}" for e in sorted({r["eval_every_samples"] for r in study.rows
                                                 if r.get("eval_every_samples")}))
    lines += ["", f"- Counts are read at the periodic evaluations (every {every} training samples): '<=' marks a "
              "target met at the first one, an upper bound; time counts training steps only.",
              "- Updates per doubling: the share of the updates to the target left when the batch doubles (0.5: "
              f"perfect scaling; <= {PERFECT_SCALING} perfect scaling, >= {NO_FURTHER_BENEFIT} no further benefit, "
              "diminishing returns between; Shallue et al. 2019)."]
    if study.noise_scale is not None:
        lines.append("- " + noise_scale_text(study.noise_scale) + ".")
    return lines + [""]


def markdown(study: Results, complete: bool, plots: list[str]) -> str:
    from ..machine import describe

    s, d = study.settings, study.data
    first, last = study.sessions[0], study.sessions[-1]
    kind = "synthetic MNIST-shaped data (timing only; accuracy is not MNIST's)" if d["synthetic"] else \
        f"real {d['dataset']}"
    budget = f"{s.epochs} epoch(s)" if s.epochs else f"{s.samples:,} samples"
    what = (f"`{s.model}` on {kind} ({d['train_samples']:,} train / {d['test_samples']:,} test), "
            f"mode **{s.mode}**, {budget} per batch size, {s.dtype}")
    if s.mode == "train":
        opt = f"SGD lr {s.lr:g} momentum {s.momentum:g}" if s.optimizer == "sgd" else f"Adam lr {s.lr:g}"
        what += (f", {opt} (lr scaling {s.lr_scaling} from B={s.base_batch_size}, warm-up {s.warmup} updates, "
                 f"accumulate {s.accumulate}), seed {s.seed}")
    lines = [f"# minigrad batch-size study: {s.model}, {', '.join(s.backends)}", ""]
    if not complete:
        lines += ["**Incomplete**: the sweep was interrupted; continue it with "
                  "`python -m minigrad.bench --resume <this directory>`.", ""]
    lines += [f"- What: {what}", f"- Command: `{first['command']}`",
              f"- Machine: {describe(last['machine'])}; {s.threads} thread(s) per engine",
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in last["versions"].items() if v),
              f"- Started {first['started_at']}" + (f", resumed {len(study.sessions) - 1} time(s)"
                                                    if len(study.sessions) > 1 else ""), ""]
    notes = [f"- {n}".replace("- * ", "- \\* ", 1) for n in _notes(study)]  # a bare "* " would start a list
    lines += headline(study)
    lines += ["## Results", "", markdown_table(study), ""] + notes + [""]
    lines += ["## Findings", ""] + [f"- {t}" for t in findings_text(study)] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += ["Every number comes from `results.jsonl` in this directory (schema: README, \"The batch-size study\")."]
    return "\n".join(lines) + "\n"

