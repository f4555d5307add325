"""The command line: parse and check every argument, set up the run directory, run the study, report.

Every bad argument ends as one ``error: ...`` line on stderr and exit code 2, before any measurement
starts where it can be checked that early. Ctrl-C (or SIGTERM) leaves every finished entry on disk, rewrites
the derived files, and says how to ``--resume``.
"""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
import time
from pathlib import Path

from minigrad import backend, data, models

from . import sweep
from .engines import TORCH, check_engine
from ..machine import describe, machine_info, set_threads, usable_cores, versions
from .outputs import write_outputs
from .report import findings_text, text_table
from .settings import (DEFAULT_BATCH_SIZES, DEFAULT_LR, DEFAULT_MEMORY_BUDGET, DEFAULT_SAMPLES, QUICK_BATCH_SIZES,
                       QUICK_SAMPLES, Settings, UsageError, load_data, parse_batch_sizes, parse_bytes, parse_int,
                       parse_real)
from .store import SCHEMA_VERSION, RunDir, check_out_dir

DESCRIPTION = """How epoch time, throughput, memory and model quality change with batch size: every batch size
trains a fresh model from the same initial weights on the same data order with the same optimizer, on every
selected backend, and the results go to a run directory (results.jsonl, summary.json, results.csv,
report.md, plots/)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and a second line; the bench prints one line
        raise UsageError(message)


def _sizes(sizes) -> str:
    return ",".join(map(str, sizes))


def build_parser() -> argparse.ArgumentParser:
    """Options default to *absent* (SUPPRESS), so the bench knows which ones were given (``--resume`` and
    ``--quick`` depend on it); defaults are applied in ``resolve`` and stated in each help line."""
    p = _Parser(prog="python -m minigrad.bench", description=DESCRIPTION, argument_default=argparse.SUPPRESS,
                allow_abbrev=False)  # "--batch-size 8" must be an error, not a silent --batch-sizes
    add = p.add_argument
    add("--model", choices=sorted(models.MODELS), help="reference model to train (default lenet5)")
    add("--backend", action="append", metavar="NAME",
        help=f"engine, repeatable or comma-separated: {', '.join(backend.registered_backends())} (minigrad "
             f"backends) or torch (the PyTorch peer) (default: numba if present, else numpy)")
    add("--batch-sizes", metavar="LIST",
        help=f"comma-separated positive integers, any (e.g. 16,17), or 'auto' (default {_sizes(DEFAULT_BATCH_SIZES)})")
    add("--epochs", metavar="N", help="train N whole epochs per batch size: epoch time measured, not extrapolated")
    add("--samples", metavar="N",
        help=f"training samples per batch size; epoch time extrapolated from them (default {DEFAULT_SAMPLES})")
    add("--dataset", choices=data.DATASETS,
        help="training data; synthetic is MNIST-shaped random data, always labelled so (default mnist)")
    add("--data-dir", metavar="DIR", help="dataset cache / IDX directory (default $MINIGRAD_DATA or ~/.cache/minigrad)")
    add("--dtype", choices=("float32", "float64"),
        help="float type of weights and data; float64 doubles memory (default float32)")
    add("--optimizer", choices=("sgd", "adam"), help="SGD with --momentum, or Adam (default sgd)")
    add("--lr", metavar="LR", help=f"learning rate at --base-batch-size (default {DEFAULT_LR['sgd']} for sgd, "
                                   f"{DEFAULT_LR['adam']} for adam)")
    add("--momentum", metavar="M", help="SGD momentum in [0, 1) (default 0.9)")
    add("--lr-scaling", choices=("none", "linear", "sqrt"),
        help="scale lr with the virtual batch (K x B) over --base-batch-size: x ratio, x sqrt(ratio) (default none)")
    add("--base-batch-size", metavar="N", help="batch size at which --lr holds unscaled (default 64)")
    add("--warmup", metavar="N", help="ramp lr up linearly over the first N optimizer updates (default 0)")
    add("--accumulate", metavar="K", help="one optimizer update every K batches: a virtual batch of K x B (default 1)")
    add("--mode", choices=("train", "inference"),
        help="train, or inference: forward-only latency and samples/s, eval mode, no autograd (default train)")
    add("--target-accuracy", metavar="FRAC",
        help="also report training time until test accuracy first reaches FRAC, e.g. 0.95 (train mode)")
    add("--eval-every", metavar="N",
        help="evaluate on the test set every N training samples (default with --target-accuracy: budget / 10)")
    add("--memory-budget", metavar="SIZE",
        help=f"memory that --batch-sizes auto must fit in, e.g. 512MiB (default {DEFAULT_MEMORY_BUDGET})")
    add("--threads", metavar="N", help=f"threads for BLAS, numba and torch alike (default: all {usable_cores()} cores)")
    add("--seed", metavar="N", help="seed of the initial weights and the data order, shared by every entry (default 0)")
    add("--out", metavar="DIR", help="run directory to create (default runs/<time>-<model>-<backend>/)")
    add("--resume", metavar="DIR",
        help="continue the interrupted run in DIR with its own settings, skipping finished entries")
    add("--explain", action="store_true",
        help="after the sweep, explain the plateau (profilers, roofline, noise scale, ladder) in <run dir>/explain/")
    add("--quick", action="store_true",
        help=f"a ~30 s study: batch sizes {_sizes(QUICK_BATCH_SIZES)}, {QUICK_SAMPLES} samples each")
    return p


def resolve(given: dict) -> Settings:
    """Settings from the options given (argparse's namespace as a dict), defaults filled in, all checked."""
    s = Settings(quick=bool(given.get("quick", False)))
    s.model = given.get("model", s.model)
    names: list[str] = []
    for item in given.get("backend", []):
        for name in item.split(","):
            if name.strip() and name.strip() not in names:
                names.append(name.strip())
    s.backends = tuple(names) or (backend.default_backend(),)
    for name in s.backends:
        check_engine(name)

    s.mode = given.get("mode", s.mode)
    default_sizes = QUICK_BATCH_SIZES if s.quick else DEFAULT_BATCH_SIZES
    s.batch_sizes = parse_batch_sizes(given["batch_sizes"]) if "batch_sizes" in given else default_sizes
    if s.batch_sizes == "auto":
        if s.mode != "train":
            raise UsageError("--batch-sizes auto picks a training batch size; it needs --mode train")
        s.memory_budget = parse_bytes(given.get("memory_budget", DEFAULT_MEMORY_BUDGET))
    elif "memory_budget" in given:
        raise UsageError("--memory-budget is only used by --batch-sizes auto")

    if "epochs" in given and "samples" in given:
        raise UsageError("--epochs and --samples both set the budget per batch size; give one of them")
    if "epochs" in given:
        s.epochs, s.samples = parse_int(given["epochs"], "--epochs"), None
    else:
        s.samples = parse_int(given["samples"], "--samples") if "samples" in given else \
            (QUICK_SAMPLES if s.quick else DEFAULT_SAMPLES)

    s.explain = bool(given.get("explain", False))
    if s.explain and (s.mode != "train" or s.batch_sizes == "auto"):
        raise UsageError("--explain explains a training sweep over given batch sizes: it needs --mode train "
                         "and a list of batch sizes")
    s.dataset = given.get("dataset", s.dataset)
    # Absolute, so that --resume from another directory finds the same data.
    s.data_dir = str(Path(given["data_dir"]).expanduser().resolve()) if "data_dir" in given else None
    s.dtype = given.get("dtype", s.dtype)
    s.optimizer = given.get("optimizer", s.optimizer)
    s.lr = parse_real(given["lr"], "--lr", 0, math.inf) if "lr" in given else DEFAULT_LR[s.optimizer]
    if "momentum" in given:
        if s.optimizer != "sgd":
            raise UsageError("--momentum applies to --optimizer sgd only")
        s.momentum = parse_real(given["momentum"], "--momentum", 0, 1, low_open=False)
        if s.momentum == 1:
            raise UsageError("--momentum must be in [0, 1); got 1")
    s.lr_scaling = given.get("lr_scaling", s.lr_scaling)
    if "base_batch_size" in given:
        s.base_batch_size = parse_int(given["base_batch_size"], "--base-batch-size")
    if "warmup" in given:
        s.warmup = parse_int(given["warmup"], "--warmup", minimum=0)
    if "accumulate" in given:
        s.accumulate = parse_int(given["accumulate"], "--accumulate")

    if "target_accuracy" in given:
        s.target_accuracy = parse_real(given["target_accuracy"], "--target-accuracy", 0, 1)
    if "eval_every" in given:
        s.eval_every = parse_int(given["eval_every"], "--eval-every")
    if s.mode == "inference" and (s.target_accuracy is not None or s.eval_every is not None):
        raise UsageError("--target-accuracy and --eval-every measure training; they need --mode train")

    s.threads = parse_int(given["threads"], "--threads") if "threads" in given else usable_cores()
    check_threads(s.threads)
    if "seed" in given:
        s.seed = parse_int(given["seed"], "--seed", minimum=0)
    return s


def check_threads(threads: int) -> None:
    cores = usable_cores()
    if threads > cores:
        raise UsageError(f"--threads must be at most the {cores} cores this process may use; got {threads}")


def default_run_dir(settings: Settings) -> Path:
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{settings.model}-{'+'.join(settings.backends)}"
    path, n = Path("runs") / stem, 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{stem}-{n}"
    return path


def run_record(settings: Settings, args: list[str], session: int, train_set, test_set) -> dict:
    """The ``run`` record that opens a session in results.jsonl: everything needed to read its results."""
    data_record = {"dataset": train_set.name, "synthetic": train_set.synthetic,
                   "kind": "synthetic" if train_set.synthetic else "real",
                   "train_samples": len(train_set), "test_samples": len(test_set)}
    return {"record": "run", "schema_version": SCHEMA_VERSION, "session": session, "started_at": sweep.now(),
            "command": "python -m minigrad.bench " + shlex.join(args), "argv": args, "executable": sys.executable,
            "cwd": str(Path.cwd()), "settings": settings.to_dict(), "machine": machine_info(), "versions": versions(),
            "data": data_record}


def _banner(settings: Settings, data_record: dict, machine: dict, run_dir: RunDir) -> str:
    kind = "synthetic MNIST-shaped data (timing only)" if data_record["synthetic"] else f"real {data_record['dataset']}"
    budget = f"{settings.epochs} epoch(s)" if settings.epochs else f"{settings.samples:,} samples"
    sizes = "auto" if settings.batch_sizes == "auto" else _sizes(settings.batch_sizes)
    line = (f"minigrad bench: {settings.model} on {kind}, {settings.mode}, backends {', '.join(settings.backends)}, "
            f"batch sizes {sizes}, {budget} per batch size")
    if settings.mode == "train":
        opt = (f"SGD lr {settings.lr:g} momentum {settings.momentum:g}" if settings.optimizer == "sgd"
               else f"Adam lr {settings.lr:g}")
        line += f", {opt}, lr scaling {settings.lr_scaling}, accumulate {settings.accumulate}"
    return f"{line}\nmachine: {describe(machine)}\nrun directory: {run_dir.path}"


def _explain(settings: Settings, report, run_dir) -> None:
    """profiling.explain over the sweep's own step times, for the first minigrad backend of the study."""
    from minigrad.profiling import explain, report as explain_report

    name = next((b for b in settings.backends if b != TORCH), None)
    if name is None:
        print("--explain: no minigrad backend in this study (torch alone is not explained)", file=sys.stderr)
        return
    rows = [{"batch_size": r["batch_size"], "step_seconds": r["step_median_s"], "step_iqr": r["step_iqr_s"],
             "step_low": r["step_q1_s"], "step_high": r["step_q3_s"], "samples_per_s": r["steady_samples_per_s"]}
            for r in report.rows if r["backend"] == name and r["status"] == "ok"]
    if len(rows) < 2:
        print("--explain: needs two or more finished batch sizes", file=sys.stderr)
        return
    with backend.use_backend(name):
        result = explain.explain(settings.model, [r["batch_size"] for r in rows], settings.dataset, settings.data_dir,
                                 run_dir.path / "explain", quick=settings.quick, step_rows=rows,
                                 threads=settings.threads)
    paths = explain_report.write(result, run_dir.path / "explain")
    print("\n" + explain_report.headline(result) + f"\n\nexplanation: {paths['md']}")


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # a polite kill ends like Ctrl-C: finished entries stay, derived files are rewritten


def main(argv: list[str] | None = None) -> int:
    """``python -m minigrad.bench``; returns the exit code (0 done, 2 bad argument, 130 interrupted)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except UsageError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2


def _run(args: list[str]) -> int:
    given = vars(build_parser().parse_args(args))
    if "resume" in given:
        extra = sorted(set(given) - {"resume"})
        if extra:
            raise UsageError("--resume continues with the run's own settings; drop "
                             + ", ".join("--" + e.replace("_", "-") for e in extra))
        run_dir = RunDir.open_existing(Path(given["resume"]))
        records = run_dir.read()
        settings = Settings.from_dict(records[0]["settings"])
        for name in settings.backends:
            check_engine(name)
        check_threads(settings.threads)
        session = 1 + max(r.get("session", 0) for r in records if r.get("record") == "run")
    else:
        settings, records, session = resolve(given), [], 0
        out = Path(given["out"]) if "out" in given else default_run_dir(settings)
        check_out_dir(out)

    set_threads(settings.threads)  # the torch peer sets its own, in its own process
    train_set, test_set = load_data(settings)
    if session == 0:
        run_dir = RunDir.create(out)
    else:
        run_dir.repair()
    header = run_record(settings, args, session, train_set, test_set)
    run_dir.append(header)
    print(_banner(settings, header["data"], header["machine"], run_dir), flush=True)

    study = sweep.Study(settings, train_set, test_set, session)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    complete = False
    try:
        picks = {r["backend"]: r for r in records if r.get("record") == "autobatch"}
        if settings.batch_sizes == "auto":
            for name in settings.backends:
                if name not in picks:
                    print(f"{name}: probing memory and throughput for --batch-sizes auto ...", flush=True)
                    picks[name] = {**sweep.choose_batch_sizes(study, name), "session": session}
                    run_dir.append(picks[name])
                print(f"{name} auto (memory): {picks[name]['memory_explanation']}\n"
                      f"{name} auto (knee): {picks[name]['knee_explanation']}", flush=True)
        done = {(r["backend"], r["batch_size"]) for r in records if r.get("record") == "result"}
        sweep.run(study, run_dir, sweep.plan(settings, picks), done,
                  on_result=lambda record: write_outputs(run_dir, complete=False, with_plots=False))
        complete = True
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        report = write_outputs(run_dir, complete=complete, with_plots=True)
    print("\n" + text_table(report) + "\n")
    print("\n".join(findings_text(report)))
    print(f"\nresults: {run_dir.path}/ (results.jsonl, summary.json, results.csv, report.md, plots/)")
    if complete and settings.explain:
        _explain(settings, report, run_dir)
    if not complete:
        print(f"error: interrupted after {len(report.rows)} finished entries (kept in {run_dir.results}); "
              f"continue with: python -m minigrad.bench --resume {run_dir.path}", file=sys.stderr)
        return 130
    return 0
