"""A saved pytest-benchmark run as the batch-size table and a plot of samples/s against batch size.

One row per (op, case, dtype, backend), one column per batch size, so the question the project exists for
reads straight off it: does throughput keep growing with the batch, and where does it stop? The PNG has
one panel per (op, case), one line per backend and dtype, both axes logarithmic.

    python -m benchmarks.table                      # the latest run saved in .benchmarks/
    python -m benchmarks.table RUN.json --ops train_step conv2d_backward --metric gflop_per_s

Values are computed from each benchmark's median and the work recorded in its extra_info (samples, flops,
bytes per call; see benchmarks/conftest.py), so any of the metrics can be asked of any saved run.
Benchmarks without a batch (optimizer updates) have no place on a batch axis and are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python benchmarks/table.py): make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.gate import STORAGE, latest_run  # noqa: E402

METRICS = {  # name -> (label, value from (median seconds, extra_info))
    "samples_per_s": ("samples/s", lambda t, e: e["samples"] / t),
    "median_ms": ("median ms per call", lambda t, e: t * 1e3),
    "gflop_per_s": ("GFLOP/s", lambda t, e: e["flops"] / t / 1e9),
    "gb_per_s": ("GB/s", lambda t, e: e["bytes"] / t / 1e9),
}
BACKEND_ORDER = ("numpy", "numba", "cupy")


def load_rows(path) -> list[dict]:
    """The benchmarks of a saved run that have a batch size: extra_info plus the median."""
    data = json.loads(Path(path).read_text())
    rows = []
    for b in data["benchmarks"]:
        e = b.get("extra_info", {})
        if e.get("batch") is not None and "op" in e:
            rows.append({**e, "median": b["stats"]["median"]})
    return rows


def _op_key(op: str):
    return (op != "train_step", op)


def _backend_key(backend: str):
    return (BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else len(BACKEND_ORDER), backend)


def pivot(rows: list[dict], metric: str, ops=None) -> tuple[list[int], dict]:
    """(batch sizes, {(op, case, dtype, backend): {batch: value}}), rows in reading order."""
    value = METRICS[metric][1]
    table = defaultdict(dict)
    for r in rows:
        if ops and r["op"] not in ops:
            continue
        table[(r["op"], r["case"], r["dtype"], r["backend"])][r["batch"]] = value(r["median"], r)
    batches = sorted({b for cells in table.values() for b in cells})
    order = sorted(table, key=lambda k: (_op_key(k[0]), k[1], k[2], _backend_key(k[3])))
    return batches, {k: table[k] for k in order}


def fmt(v: float) -> str:
    """Three significant digits with a k/M/G suffix: 1234567 -> 1.23M."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def markdown(batches: list[int], table: dict, metric: str) -> str:
    head = ["op", "case", "dtype", "backend"] + [f"B={b}" for b in batches]
    lines = [f"{METRICS[metric][0]} by batch size", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * 4 + "--:|" * len(batches)]
    for (op, case, dtype, backend), cells in table.items():
        values = [fmt(cells[b]) if b in cells else "" for b in batches]
        lines.append("| " + " | ".join([op, case, dtype, backend] + values) + " |")
    return "\n".join(lines)


def plot(table: dict, metric: str, path, title: str) -> None:
    """One panel per (op, case); colour = backend, line style = dtype."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(op, case) for op, case, _, _ in table}, key=lambda p: (_op_key(p[0]), p[1]))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colours = {}
    for ax, (op, case) in zip(axes.flat, panels):
        for (o, c, dtype, backend), cells in table.items():
            if (o, c) != (op, case):
                continue
            colour = colours.setdefault(backend, f"C{len(colours)}")
            bs = sorted(cells)
            ax.plot(bs, [cells[b] for b in bs], marker="o", color=colour,
                    linestyle="-" if dtype == "float32" else "--", label=f"{backend} {dtype}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        sizes = sorted({b for (o, c, _, _), cells in table.items() if (o, c) == (op, case) for b in cells})
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_title(f"{op} {case}")
        ax.set_xlabel("batch size")
        ax.set_ylabel(METRICS[metric][0])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.table", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help=f"a pytest-benchmark JSON (default: the latest in {STORAGE}/)")
    parser.add_argument("--metric", choices=METRICS, default="samples_per_s")
    parser.add_argument("--ops", nargs="+", help="only these ops (e.g. train_step conv2d_forward)")
    parser.add_argument("--png", help="where to write the plot (default: next to the run, <run>-<metric>.png); "
                                      "the plot shows train_step when the run has it, unless --ops says otherwise")
    parser.add_argument("--no-png", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    run = Path(args.run) if args.run else latest_run()
    if run is None:
        print(f"table: error: no saved run in {STORAGE}/; run `make benchmark` first", file=sys.stderr)
        return 2
    rows = load_rows(run)
    batches, table = pivot(rows, args.metric, args.ops)
    if not table:
        print(f"table: error: {run} has no benchmark with a batch size" + (f" among {args.ops}" if args.ops else ""),
              file=sys.stderr)
        return 2
    print(f"{run}\n")
    print(markdown(batches, table, args.metric))
    if not args.no_png:
        plot_ops = args.ops or (["train_step"] if any(r["op"] == "train_step" for r in rows) else None)
        png = Path(args.png) if args.png else run.with_name(f"{run.stem}-{args.metric}.png")
        plot(pivot(rows, args.metric, plot_ops)[1], args.metric, png, f"{run.name}: {METRICS[args.metric][0]}")
        print(f"\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
