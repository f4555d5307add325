"""The command line: parse and check every argument, set up the run directory, run the study, report.

Every bad argument ends as one ``error: ...`` line on stderr and exit code 2, before anything is written
(``--resume`` checks the stored settings the same way). The run directory is created only once everything
is checked and ``--batch-sizes auto`` has picked, and it is locked (``store.RunDir.lock``) while the run
lives. Ctrl-C (or SIGTERM) leaves every finished entry on disk, rewrites the derived files (a second Ctrl-C
cuts that short, and says so), and says how to ``--resume``; a file that cannot be written (a full disk)
ends the run with one error line naming it and exit code 1.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import shlex
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

from minigrad import backend, data, models

from . import sweep, tune
from .engines import TORCH, check_engine
from ..machine import describe, machine_info, set_threads, usable_cores, versions
from . import ranks
from .outputs import write_outputs
from .report import Results, findings_text, text_table
from .settings import (DEFAULT_BATCH_SIZES, DEFAULT_LR, DEFAULT_LR_GRID, DEFAULT_LR_SCALING, DEFAULT_MEMORY_BUDGET,
                       DEFAULT_SAMPLES, DEFAULT_TARGET_ACCURACY, EVALUATIONS, MAX_SAMPLES, MAX_STEPS,
                       QUICK_BATCH_SIZES, QUICK_SAMPLES, Settings, UsageError, check_fits_data, load_data,
                       parse_batch_sizes, parse_bytes, parse_int, parse_real)
from .store import RESULTS, SCHEMA_VERSION, RunDir, WriteFailed, check_out_dir

DESCRIPTION = """How epoch time, throughput, memory and model quality change with batch size: every batch size
trains a fresh model from the same initial weights on the same data order with the same optimizer, on every
selected backend, and the results go to a run directory (results.jsonl, summary.json, results.csv,
report.md, plots/)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and a second line; the bench prints one line
        raise UsageError(message)


def _power(n: int) -> str:
    """10**9 as "10^9" (help text)."""
    return f"10^{round(math.log10(n))}"


def _sizes(sizes) -> str:
    return ",".join(map(str, sizes))


def _factors(factors) -> str:
    return ",".join(f"{f:.3g}" for f in factors)


def _targets() -> str:
    return ", ".join(f"{t:g} on {name}" for name, t in DEFAULT_TARGET_ACCURACY.items()) + ", else none"


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
        help=f"comma-separated positive integers, any (e.g. 16,17), each at most the training set's size (the test "
             f"set's in inference), or 'auto' (default {_sizes(DEFAULT_BATCH_SIZES)})")
    add("--epochs", metavar="N",
        help=f"train N whole epochs per batch size: epoch time measured, not extrapolated (at most "
             f"{_power(MAX_SAMPLES)} samples and {_power(MAX_STEPS)} steps per batch size)")
    add("--samples", metavar="N",
        help=f"training samples per batch size; epoch time extrapolated from them (default {DEFAULT_SAMPLES}; at "
             f"most {_power(MAX_SAMPLES)}, and at most {_power(MAX_STEPS)} steps per batch size)")
    add("--dataset", choices=data.DATASETS,
        help="training data; synthetic is MNIST-shaped random data, always labelled so (default mnist)")
    add("--data-dir", metavar="DIR", help="dataset cache / IDX directory (default $MINIGRAD_DATA or ~/.cache/minigrad)")
    add("--dtype", choices=("float32", "float64"),
        help="float type of weights and data; float64 doubles memory (default float32)")
    add("--optimizer", choices=("sgd", "adam"), help="SGD with --momentum, or Adam (default sgd)")
    add("--lr", metavar="LR", help=f"learning rate at --base-batch-size (default {DEFAULT_LR['sgd']} for sgd, "
                                   f"{DEFAULT_LR['adam']} for adam)")
    add("--momentum", metavar="M", help="SGD momentum in [0, 1) (default 0.9)")
    add("--lr-scaling", choices=("none", "linear", "sqrt", "linear-sqrt"),
        help="scale lr with the virtual batch (K x B) over --base-batch-size: x ratio, x sqrt(ratio), or x ratio "
             f"below it and x sqrt(ratio) above (default {DEFAULT_LR_SCALING['sgd']} for sgd, "
             f"{DEFAULT_LR_SCALING['adam']} for adam)")
    add("--base-batch-size", metavar="N", help="batch size at which --lr holds unscaled (default 64)")
    add("--warmup", metavar="N", help="ramp lr up linearly over the first N optimizer updates (default 0)")
    add("--accumulate", metavar="K", help="one optimizer update every K batches: a virtual batch of K x B (default 1)")
    add("--mode", choices=("train", "inference"),
        help="train, or inference: forward-only latency and samples/s, eval mode, no autograd; training options "
             "(--optimizer, --lr, ...) are refused there (default train)")
    add("--target-accuracy", metavar="FRAC",
        help="report training time and updates until test accuracy first reaches FRAC, e.g. 0.95, or 'none' "
             f"(train mode; default {_targets()}; none with --quick)")
    add("--eval-every", metavar="N",
        help="evaluate on the test set every N training samples (default with a target: budget / "
             f"{EVALUATIONS})")
    add("--tune-lr", metavar="FACTORS", nargs="?", const=DEFAULT_LR_GRID,
        help=f"train each batch size at a grid of lrs (its lr times FACTORS, default "
             f"{_factors(DEFAULT_LR_GRID)}) and keep the best: {tune.CRITERION}")
    add("--train-subset", metavar="N", help="train on the first N training samples only (default: all)")
    add("--memory-budget", metavar="SIZE",
        help=f"memory that --batch-sizes auto must fit in, e.g. 512MiB (default {DEFAULT_MEMORY_BUDGET})")
    add("--threads", metavar="N", help=f"threads for BLAS, numba and torch alike (default: all {usable_cores()} cores)")
    add("--ranks", metavar="R",
        help="also measure every entry on R data-parallel ranks (mpiexec -n R, launched by the bench; needs the "
             ".[mpi] extra): samples/s, the gradient all-reduce and scaling efficiency against one rank (default 1; "
             "with R > 1, --threads defaults to cores / R)")
    add("--seed", metavar="N", help="seed of the initial weights and the data order, shared by every entry (default 0)")
    add("--out", metavar="DIR", help="run directory to create (default runs/<time>-<model>-<backend>/); one process "
                                     "at a time may use it")
    add("--resume", metavar="DIR",
        help="continue the interrupted run in DIR with its own settings (checked again), skipping finished entries; "
             "refused while another process runs it")
    add("--explain", action="store_true",
        help="after the sweep, explain the plateau (profilers, roofline, noise scale, ladder) in <run dir>/explain/")
    add("--quick", action="store_true",
        help=f"a ~30 s study: batch sizes {_sizes(QUICK_BATCH_SIZES)}, {QUICK_SAMPLES} samples each")
    return p


#: Options that only mean something when training (dest names); inference refuses them.
TRAIN_ONLY = ("optimizer", "lr", "momentum", "lr_scaling", "base_batch_size", "warmup", "accumulate",
              "target_accuracy", "eval_every", "tune_lr", "train_subset")


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def path_argument(text: str, option: str) -> Path:
    """A directory given on the command line; an empty one would silently mean the current directory."""
    if not text.strip():
        raise UsageError(f"{option}: empty directory name; give a directory")
    return Path(text).expanduser()


def resolve(given: dict) -> Settings:
    """Settings from the options given (argparse's namespace as a dict), defaults filled in, all checked.

    This is the one validation of a study's settings: ``--resume`` runs a stored run's settings through it
    too (``resume_settings``)."""
    s = Settings(quick=bool(given.get("quick", False)))
    s.model = given.get("model", s.model)
    names: list[str] = []
    for item in given.get("backend", []):
        for name in item.split(","):
            name = name.strip()
            if not name:
                raise UsageError(f"--backend: empty backend name in {item!r}; expected one of "
                                 f"{', '.join(backend.registered_backends() + [TORCH])}")
            if name not in names:
                names.append(name)
    s.backends = tuple(names) or (backend.default_backend(),)
    for name in s.backends:
        check_engine(name)

    s.mode = given.get("mode", s.mode)
    if s.mode != "train":
        used = [_option(k) for k in TRAIN_ONLY if k in given]
        if used:
            raise UsageError(f"{', '.join(used)} {'applies' if len(used) == 1 else 'apply'} to training only; "
                             f"drop {'it' if len(used) == 1 else 'them'} or use --mode train")
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
        s.epochs, s.samples = parse_int(given["epochs"], "--epochs", maximum=MAX_SAMPLES), None
    else:
        s.samples = parse_int(given["samples"], "--samples", maximum=MAX_SAMPLES) if "samples" in given else \
            (QUICK_SAMPLES if s.quick else DEFAULT_SAMPLES)

    s.explain = bool(given.get("explain", False))
    if s.explain and (s.mode != "train" or s.batch_sizes == "auto"):
        raise UsageError("--explain explains a training sweep over given batch sizes: it needs --mode train "
                         "and a list of batch sizes")
    s.dataset = given.get("dataset", s.dataset)
    # Absolute, so that --resume from another directory finds the same data.
    s.data_dir = str(path_argument(given["data_dir"], "--data-dir").resolve()) if "data_dir" in given else None
    s.dtype = given.get("dtype", s.dtype)
    s.optimizer = given.get("optimizer", s.optimizer)
    s.lr = parse_real(given["lr"], "--lr", 0, math.inf) if "lr" in given else DEFAULT_LR[s.optimizer]
    if "momentum" in given:
        if s.optimizer != "sgd":
            raise UsageError("--momentum applies to --optimizer sgd only")
        s.momentum = parse_real(given["momentum"], "--momentum", 0, 1, low_open=False, high_open=True)
    s.lr_scaling = given.get("lr_scaling", DEFAULT_LR_SCALING[s.optimizer])
    if "base_batch_size" in given:
        s.base_batch_size = parse_int(given["base_batch_size"], "--base-batch-size")
    if "warmup" in given:
        s.warmup = parse_int(given["warmup"], "--warmup", minimum=0)
    if "accumulate" in given:
        s.accumulate = parse_int(given["accumulate"], "--accumulate")

    if "target_accuracy" in given:
        text = given["target_accuracy"]
        s.target_accuracy = (None if str(text).strip().lower() == "none" else
                             parse_real(text, "--target-accuracy", 0, 1))
    elif s.mode == "train" and not s.quick:  # --quick is for timing: no evaluations unless asked
        s.target_accuracy = DEFAULT_TARGET_ACCURACY.get(s.dataset)
    if "eval_every" in given:
        s.eval_every = parse_int(given["eval_every"], "--eval-every")
    if "tune_lr" in given:
        s.tune_lr = parse_factors(given["tune_lr"])
    if "train_subset" in given:
        s.train_subset = parse_int(given["train_subset"], "--train-subset")

    s.threads = parse_int(given["threads"], "--threads") if "threads" in given else usable_cores()
    check_threads(s.threads)
    if "seed" in given:
        s.seed = parse_int(given["seed"], "--seed", minimum=0)
    if "ranks" in given:
        s.ranks = parse_int(given["ranks"], "--ranks")
        if "threads" not in given:
            s.threads = max(1, usable_cores() // s.ranks)
    ranks.check(s)
    return s


def settings_arguments(stored: dict) -> list[str]:
    """The command line that a run's stored settings came from (every option spelled out), for ``resolve``.

    Options that ``resolve`` refuses in the stored settings' mode are left out (training options in
    inference, --momentum with Adam, --memory-budget without auto): they hold their defaults there."""
    train = stored.get("mode") != "inference"
    argv = []

    def add(dest: str, value) -> None:
        if value is None:
            return
        if isinstance(value, list):
            value = ",".join(map(str, value))
        argv.append(f"{_option(dest)}={value}")

    for dest in ("model", "backends", "batch_sizes", "epochs", "samples", "dataset", "data_dir", "dtype", "mode",
                 "memory_budget", "threads", "seed", "ranks"):
        add("backend" if dest == "backends" else dest, stored.get(dest))
    if train:
        for dest in ("optimizer", "lr", "lr_scaling", "base_batch_size", "warmup", "accumulate", "eval_every",
                     "train_subset"):
            add(dest, stored.get(dest))
        add("target_accuracy", "none" if stored.get("target_accuracy") is None else stored["target_accuracy"])
        if stored.get("tune_lr"):
            add("tune_lr", stored["tune_lr"])
        if stored.get("optimizer") == "sgd":
            add("momentum", stored.get("momentum"))
    argv += [_option(flag) for flag in ("quick", "explain") if stored.get(flag)]
    return argv


def resume_settings(stored, run_dir: RunDir) -> Settings:
    """The settings of the run in ``run_dir`` (its first ``run`` record), checked exactly like fresh arguments:
    they go through the parser and ``resolve``, and must come back unchanged."""
    where = f"--resume {run_dir.path}: the run's settings in {run_dir.results}"
    if not isinstance(stored, dict):
        raise UsageError(f"{where} are not a JSON object; cannot resume it")
    if not stored:
        raise UsageError(f"{where} are empty; cannot resume it")
    expected = [f.name for f in fields(Settings)]
    missing = [k for k in expected if k not in stored]
    unknown = sorted(set(stored) - set(expected))
    if missing or unknown:
        parts = ([f"lack {', '.join(missing)}"] if missing else []) + \
                ([f"have unknown keys {', '.join(unknown)}"] if unknown else [])
        raise UsageError(f"{where} {' and '.join(parts)}; cannot resume it")
    try:
        settings = resolve(vars(build_parser().parse_args(settings_arguments(stored))))
    except UsageError as exc:
        raise UsageError(f"{where} are not valid: {exc}; cannot resume it") from None
    resolved = settings.to_dict()
    changed = [f"{k} is {json.dumps(stored[k])}, which reads as {json.dumps(resolved[k])}" for k in expected
               if stored[k] != resolved[k]]
    if changed:
        raise UsageError(f"{where} are not valid: {'; '.join(changed)}; cannot resume it")
    return settings


def parse_factors(value) -> tuple[float, ...]:
    """``--tune-lr``'s factors: the default grid, or a comma list of two or more distinct positive numbers."""
    if not isinstance(value, str):
        return tuple(value)
    factors = sorted({parse_real(part, "--tune-lr: each factor", 0, math.inf) for part in value.split(",")})
    if len(factors) < 2:
        raise UsageError(f"--tune-lr needs two or more distinct factors (e.g. {_factors(DEFAULT_LR_GRID)}); "
                         f"got {value!r}")
    return tuple(factors)


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


def _banner(settings: Settings, data_record: dict, machine: dict, path: Path) -> str:
    kind = "synthetic MNIST-shaped data (timing only)" if data_record["synthetic"] else f"real {data_record['dataset']}"
    budget = f"{settings.epochs} epoch(s)" if settings.epochs else f"{settings.samples:,} samples"
    sizes = "auto" if settings.batch_sizes == "auto" else _sizes(settings.batch_sizes)
    line = (f"minigrad bench: {settings.model} on {kind}, {settings.mode}, backends {', '.join(settings.backends)}, "
            f"batch sizes {sizes}, {budget} per batch size")
    if settings.mode == "train":
        opt = (f"SGD lr {settings.lr:g} momentum {settings.momentum:g}" if settings.optimizer == "sgd"
               else f"Adam lr {settings.lr:g}")
        line += f", {opt}, lr scaling {settings.lr_scaling}, accumulate {settings.accumulate}"
        if settings.tune_lr:
            line += f", lr grid x {_factors(settings.tune_lr)} per batch size"
        if settings.target_accuracy is not None:
            line += f", target {100 * settings.target_accuracy:g}% test accuracy"
    return f"{line}\nmachine: {describe(machine)}\nrun directory: {path}"


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


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _resume_hint(run_dir: RunDir) -> str:
    return f"continue with: python -m minigrad.bench --resume {run_dir.path}"


class _Stopped(Exception):
    """The run ends early with ``code`` after its message went to stderr."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def main(argv: list[str] | None = None) -> int:
    """``python -m minigrad.bench``; returns the exit code: 0 done, 1 the run directory could not be written
    (e.g. a full disk), 2 bad argument, 130 interrupted."""
    args = list(sys.argv[1:] if argv is None else argv)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        return _run(args)
    except UsageError as exc:
        print("error: " + _one_line(exc), file=sys.stderr)
        return 2
    except _Stopped as stop:
        return stop.code
    except KeyboardInterrupt:
        print("error: interrupted before the study started; nothing was written", file=sys.stderr)
        return 130
    finally:
        if signal.getsignal(signal.SIGINT) is not sigint:
            signal.signal(signal.SIGINT, sigint)


def _run(args: list[str]) -> int:
    """Check everything, load the data, pick auto's batch sizes; only then write to the run directory."""
    given = vars(build_parser().parse_args(args))
    run_dir = None
    try:
        if "resume" in given:
            extra = sorted(set(given) - {"resume"})
            if extra:
                raise UsageError("--resume continues with the run's own settings; drop "
                                 + ", ".join(_option(e) for e in extra))
            run_dir = RunDir.open_existing(path_argument(given["resume"], "--resume"))
            run_dir.lock()
            records = run_dir.read()  # read under the lock: what the last owner left
            settings = resume_settings(records[0]["settings"], run_dir)
            session = 1 + max(r.get("session", 0) for r in records if r.get("record") == "run")
            out = run_dir.path
        else:
            settings, records, session = resolve(given), [], 0
            out = path_argument(given["out"], "--out") if "out" in given else default_run_dir(settings)
            check_out_dir(out)

        set_threads(settings.threads)  # the torch peer sets its own, in its own process
        train_set, test_set = load_data(settings)
        if settings.batch_sizes != "auto":
            check_fits_data(settings, settings.batch_sizes, train_set, test_set)
        header = run_record(settings, args, session, train_set, test_set)
        picks = {r["backend"]: r for r in records if r.get("record") == "autobatch"}
        done = {(r["backend"], r["batch_size"]) for r in records if r.get("record") == "result"}
        to_probe = [n for n in settings.backends if n not in picks] if settings.batch_sizes == "auto" else []
        if session and not to_probe:
            entries = sweep.plan(settings, picks)
            if all((name, b) in done for b, name, _ in entries):
                return _nothing_to_do(run_dir, len(entries))

        print(_banner(settings, header["data"], header["machine"], out), flush=True)
        study = sweep.Study(settings, train_set, test_set, session)
        new_picks = []
        for name in to_probe:
            print(f"{name}: probing memory and throughput for --batch-sizes auto ...", flush=True)
            picks[name] = {**sweep.choose_batch_sizes(study, name), "session": session}
            new_picks.append(picks[name])
        for name in settings.backends if settings.batch_sizes == "auto" else ():
            print(f"{name} auto (memory): {picks[name]['memory_explanation']}\n"
                  f"{name} auto (knee): {picks[name]['knee_explanation']}", flush=True)
        entries = sweep.plan(settings, picks)
        if settings.batch_sizes == "auto":
            check_fits_data(settings, [b for b, _, _ in entries], train_set, test_set)

        noise = None
        if settings.mode == "train" and settings.target_accuracy is not None and \
                not any(r.get("record") == "noise_scale" for r in records):
            print("measuring the gradient noise scale B_simple (the headline's regimes) ...", flush=True)
            noise = sweep.measure_noise_scale(study)
            print(noise["summary"], flush=True)

        # Everything checked and probed: from here on, the run directory is written.
        made_dir = not out.exists()
        if session == 0:
            run_dir = RunDir.create(out)
        try:
            if session:
                run_dir.repair()
            run_dir.append(header)
            for record in new_picks + ([noise] if noise else []):
                run_dir.append(record)
        except BaseException as exc:
            if session == 0:
                run_dir.discard(made_dir)  # nothing measured: leave --out as it was
            if isinstance(exc, KeyboardInterrupt):
                print("error: interrupted before anything was measured; "
                      + ("nothing was written" if session == 0 else _resume_hint(run_dir)), file=sys.stderr)
                raise _Stopped(130) from None
            if isinstance(exc, WriteFailed):
                print(f"error: {_one_line(exc)}; nothing was measured", file=sys.stderr)
                raise _Stopped(1) from None
            raise
        return _sweep(settings, study, run_dir, entries, done, fresh_dir=made_dir if session == 0 else None)
    finally:
        if run_dir is not None:
            run_dir.unlock()


def _nothing_to_do(run_dir: RunDir, n: int) -> int:
    """``--resume`` of a finished run: nothing is measured or appended; the derived files are rewritten (they
    may have been cut short by a second Ctrl-C or a full disk)."""
    print(f"nothing to do: all {n} entries finished in {run_dir.path}")
    try:
        write_outputs(run_dir, complete=True, with_plots=True)
    except WriteFailed as exc:
        print(f"error: {_one_line(exc)}; {run_dir.results} is complete and unchanged", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: interrupted while rewriting the derived files; {run_dir.results} is complete and unchanged "
              f"(--resume {run_dir.path} rewrites them)", file=sys.stderr)
        return 130
    print(f"results: {run_dir.path}/ (results.jsonl, summary.json, results.csv, report.md, plots/; the derived "
          f"files rewritten from {RESULTS})")
    return 0


def _sweep(settings: Settings, study, run_dir: RunDir, entries, done: set, fresh_dir: bool | None) -> int:
    """Measure the entries, then write the derived files and report. ``fresh_dir``: None on resume, else
    whether this run made the directory (a fresh run that measured nothing is removed again)."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    complete = interrupted = cut_short = False
    failure: WriteFailed | None = None
    report = None
    try:
        try:
            sweep.run(study, run_dir, entries, done,
                      on_result=lambda record: write_outputs(run_dir, complete=False, with_plots=False))
            complete = True
        except KeyboardInterrupt:
            interrupted = True
        except WriteFailed as exc:
            failure = exc
        except BaseException:
            if fresh_dir is not None and not Results(run_dir.read()).rows:
                run_dir.discard(fresh_dir)  # e.g. the torch child failed at once: leave --out as it was
            else:
                _derive_quietly(run_dir)
            raise
        if failure is None:
            try:
                report = write_outputs(run_dir, complete=complete, with_plots=True)
            except KeyboardInterrupt:  # a second Ctrl-C while the derived files are written
                interrupted = cut_short = True
            except WriteFailed as exc:
                failure = exc
        if interrupted or cut_short:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the closing lines are left: let them out
    finally:
        signal.signal(signal.SIGTERM, previous)

    if report is None:
        report = Results(run_dir.read())  # the table still shows what is on disk
    print("\n" + text_table(report) + "\n")
    print("\n".join(findings_text(report)))
    if failure is not None:
        advice = "free some space" if failure.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
        print(f"error: {_one_line(failure)}; the {len(report.rows)} finished entries are kept in {run_dir.results}; "
              f"{advice}, then {_resume_hint(run_dir)}", file=sys.stderr)
        return 1
    print(f"\nresults: {run_dir.path}/ (results.jsonl, summary.json, results.csv, report.md, plots/)")
    if interrupted:
        derived = (" (the derived files summary.json, results.csv, report.md and plots/ may be incomplete; "
                   "--resume rewrites them)" if cut_short else "")
        print(f"error: interrupted after {len(report.rows)} finished entries (kept in {run_dir.results}){derived}; "
              f"{_resume_hint(run_dir)}", file=sys.stderr)
        return 130
    if settings.explain:
        try:
            _explain(settings, report, run_dir)
        except KeyboardInterrupt:
            print(f"error: interrupted during --explain; the sweep itself is complete in {run_dir.path}",
                  file=sys.stderr)
            return 130
    return 0


def _derive_quietly(run_dir: RunDir) -> None:
    """Bring the derived files in line with results.jsonl on the way out of an unexpected error (which then
    propagates): a failure to do so must not hide that error."""
    try:
        write_outputs(run_dir, complete=False, with_plots=False)
    except (WriteFailed, KeyboardInterrupt):
        pass
