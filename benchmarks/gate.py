"""The noise-aware regression gate for saved pytest-benchmark runs.

A fixed threshold ("fail above +5%") is wrong both ways: on a quiet machine it misses real regressions of
a few percent, on a shared one it fails unchanged code. So the threshold is measured instead:

``calibrate`` reads two or more runs of the *same tree on the same machine* and, per benchmark, how far
the medians of identical runs scatter (the standard deviation ``s`` of their logarithms; log, because
timings are multiplicative and a ratio is what gets compared). Two or three runs give a poor estimate of
any one benchmark's scatter, and one that happened to look quiet must not get a hair trigger, so each
benchmark's noise is taken as ``max(s, typical)``, where ``typical`` is the machine's typical scatter: the
median of all ``s**2`` (robust to a few disturbed benchmarks), divided by the median of chi-square(k)/k
(k = runs - 1) so that it estimates the variance rather than its median. A compare looks at the ratio of
two medians, whose log has sd ``sqrt(2) * noise``; the threshold is ``Z`` of those, as a relative
slowdown ``exp(Z * sqrt(2) * noise) - 1``. Benchmarks the calibration has not seen get
``default_threshold``, the 90th percentile of the calibrated ones.

Why Z = 6 and a re-run, where Gaussian noise would need Z = 4 and nothing else: timing noise on a shared
machine has heavy tails. On this project's 2-core machine, shared with other work, 240 comparisons of
unchanged runs (tests/benchmarks/test_gate.py's four-benchmark subset, each against a 3-run calibration)
put 2.9% of the ratios beyond 4 sds and 2% beyond 6, most of them in one run that the whole machine
slowed by a third. No threshold separates that from a real regression; repeating the measurement does. So
``compare --rerun=ARGS``, when some benchmark crossed its limit, runs the same selection once more
(``pytest ARGS``) and reports a regression only where the median crossed the limit both times. The whole
selection rather than the benchmarks that crossed alone, so that the confirming measurement is taken the
same way as the one it confirms (same neighbours, process history and warm-up). What a re-run cannot
undo is a shift that lasts: on the same machine, an unchanged convnet train step measured 73 ms in three
calibration runs and 92-127 ms in every run of the next minutes; such a gate failure calls for a fresh
calibration and baseline, not for a code change.

``compare`` divides each benchmark's median in a new run by its median in the baseline (the last run
saved in .benchmarks/ unless given) and fails (exit status 1) when any ratio exceeds its threshold.
Timings only compare on the machine they were taken on: a calibration or baseline from another machine
is an error (exit status 2), as is a missing calibration.

A calibration can be useless: measured while the machine was loaded, its limits are so wide that every
run passes. ``calibrate`` refuses to store one whose typical limit (the median of the per-benchmark
limits) is above ``MAX_TYPICAL_LIMIT`` (+50%; why that value, see there), and ``compare`` and ``check``
refuse a stored one beyond it (exit status 2 both).

``check`` is what ``make benchmark-compare`` runs before it spends minutes benchmarking: it fails at once
(exit status 2, one ``error:`` line) when there is no usable calibration for this machine or no saved
baseline run from it, naming the command that makes the missing piece.

Usage (the Makefile wraps them, from the repository root; see README "Benchmarks"):
    python -m benchmarks.gate calibrate RUN.json RUN.json [...] [-o .benchmarks/calibration.json]
    python -m benchmarks.gate check [--baseline OLD.json] [--calibration FILE]
    python -m benchmarks.gate compare NEW.json [--baseline OLD.json] [--calibration FILE]
                                  [--rerun="benchmarks -k ... --benchmark-max-time=0.5"]
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

STORAGE = Path(".benchmarks")
CALIBRATION = STORAGE / "calibration.json"
Z = 6.0
#: The widest typical limit (median of the per-benchmark limits, as a relative slowdown) a calibration may
#: have. Why +50%: the coarsest regression worth a gate is a 2x slowdown (what tests/benchmarks/test_gate.py
#: injects; also the size of a Numba kernel losing its parallel loop on 2 cores, or float32 work done in
#: float64 by a memory-bound kernel). At Z = 6 a limit L means a noise sd of ln(1 + L) / (6 sqrt 2) per
#: median, so a true 2x ratio sits 6 * (ln 2 / ln(1 + L) - 1) sds of a ratio above the limit: 4.3 sds at
#: +50% (missed about once in 10^5 under Gaussian noise), 1.8 at +70%, 0 at +100%. Beyond +50% the gate
#: starts to wave through the very slowdowns it exists for, and on the heavy-tailed noise of a shared
#: machine sooner than Gaussian arithmetic says. It is also 2.5x the typical limit of this project's busy
#: 2-core machine (+20%, README "Benchmarks"): a calibration above it was taken while something else was
#: loading the machine, and says nothing about the code.
MAX_TYPICAL_LIMIT = 0.5
#: What to do about a calibration beyond MAX_TYPICAL_LIMIT. The suites use every core by default; one
#: thread per pool (OpenBLAS and MKL read OMP_NUM_THREADS, Numba NUMBA_NUM_THREADS) keeps a busy machine's
#: other work from stalling a benchmark's threads, and must then be used for all three make targets alike.
QUIETER = ("calibrate on a quieter machine (stop other work), with one thread per pool (OMP_NUM_THREADS=1 "
           "NUMBA_NUM_THREADS=1 before make benchmark-calibrate, and the same for make benchmark and make "
           "benchmark-compare), or with more runs (make benchmark-calibrate CALIBRATION_RUNS=5)")
#: Exit statuses of the commands (REGRESSION from ``compare`` only).
OK, REGRESSION, ERROR = 0, 1, 2


class GateError(Exception):
    """A comparison that cannot be made (missing file, other machine, nothing in common)."""


@dataclass(frozen=True)
class Run:
    """The parts of a saved pytest-benchmark JSON the gate uses."""

    path: str
    machine_info: dict
    medians: dict[str, float]   # benchmark fullname -> median seconds
    extra_info: dict[str, dict]


def load_run(path) -> Run:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise GateError(f"no such benchmark run: {path}") from None
    except json.JSONDecodeError as exc:
        raise GateError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise GateError(f"{path} is not a pytest-benchmark JSON (no 'benchmarks' list)")
    medians, extra = {}, {}
    try:
        for b in data["benchmarks"]:
            median = float(b["stats"]["median"])
            if not 0 < median < math.inf:
                raise ValueError(median)
            medians[b["fullname"]] = median
            extra[b["fullname"]] = b.get("extra_info", {})
    except (TypeError, KeyError, ValueError, AttributeError):
        raise GateError(f"{path} is not a pytest-benchmark JSON (a benchmark without a fullname or a positive "
                        f"median)") from None
    return Run(str(path), data.get("machine_info", {}), medians, extra)


def machine_key(machine_info: dict) -> dict:
    """What makes two machines the same for timing purposes: OS, architecture, CPU model and count,
    the cores this process could use and the GPU. (Not the host name: containers get a new one each time.)"""
    cpu = machine_info.get("cpu") or {}
    extra = machine_info.get("minigrad") or {}
    return {"system": machine_info.get("system"), "machine": machine_info.get("machine"),
            "cpu": cpu.get("brand_raw") or machine_info.get("processor"), "cpu_count": cpu.get("count"),
            "usable_cores": extra.get("usable_cores"), "gpu": extra.get("gpu")}


def describe_machine(key: dict) -> str:
    cores = key.get("usable_cores") or key.get("cpu_count")
    text = f"{key.get('cpu') or key.get('machine')} x{cores}"
    return text + (f" + {key['gpu']}" if key.get("gpu") else "")


def latest_run(storage=STORAGE) -> Path | None:
    """The most recently saved run in pytest-benchmark's storage (``<storage>/<machine id>/NNNN_*.json``)."""
    runs = list(Path(storage).glob("*/[0-9][0-9][0-9][0-9]_*.json"))
    return max(runs, key=lambda p: (p.stat().st_mtime, p.name)) if runs else None


def _chi2_median_over_k(k: int) -> float:
    """Median of chi-square(k) / k (Wilson-Hilferty; within 4% of the exact value at k = 1, closer above)."""
    return (1 - 2 / (9 * k)) ** 3


def calibrate(runs: list[Run], z: float = Z) -> dict:
    """The calibration (a JSON-ready dict) from identical runs of the same tree on one machine."""
    if len(runs) < 2:
        raise GateError(f"calibrate needs at least 2 identical runs; got {len(runs)}")
    key = machine_key(runs[0].machine_info)
    for run in runs[1:]:
        if machine_key(run.machine_info) != key:
            raise GateError(f"calibration runs come from different machines: {runs[0].path} "
                            f"({describe_machine(key)}) and {run.path} "
                            f"({describe_machine(machine_key(run.machine_info))})")
    names = sorted(set.intersection(*(set(r.medians) for r in runs)))
    if not names:
        raise GateError("the calibration runs have no benchmark in common")
    sds, per = {}, {}
    for name in names:
        medians = [r.medians[name] for r in runs]
        sds[name] = statistics.stdev(math.log(m) for m in medians)
        per[name] = {"medians": medians, "spread": max(medians) / min(medians) - 1, "sd": sds[name]}
    typical = math.sqrt(statistics.median(s * s for s in sds.values()) / _chi2_median_over_k(len(runs) - 1))
    for name in names:
        per[name]["threshold"] = math.exp(z * math.sqrt(2) * max(sds[name], typical)) - 1
    thresholds = sorted(p["threshold"] for p in per.values())
    default = statistics.quantiles(thresholds, n=10, method="inclusive")[-1] if len(thresholds) > 1 \
        else thresholds[0]
    return {"version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": key, "machine_info": runs[0].machine_info, "runs": [r.path for r in runs],
            "z": z, "typical_sd": typical, "default_threshold": default,
            "dropped": sorted(set().union(*(set(r.medians) for r in runs)) - set(names)),
            "benchmarks": per}


def typical_limit(calibration: dict) -> float:
    """The median of a calibration's per-benchmark limits (a relative slowdown): the slowdown the machine
    can resolve on a typical benchmark. (By construction, about the limit of the typical scatter.)"""
    return statistics.median(b["threshold"] for b in calibration["benchmarks"].values())


def check_resolution(calibration: dict, source: str = "the calibration") -> None:
    """Raise GateError when the calibration's typical limit is beyond MAX_TYPICAL_LIMIT."""
    limit = typical_limit(calibration)
    if limit > MAX_TYPICAL_LIMIT:
        raise GateError(f"{source} is too noisy to gate on: its typical limit is +{100 * limit:.0f}% (typical "
                        f"scatter of a median {100 * calibration['typical_sd']:.1f}%), above the "
                        f"+{100 * MAX_TYPICAL_LIMIT:.0f}% beyond which a 2x slowdown can pass unnoticed; "
                        f"{QUIETER}")


def load_calibration(path) -> dict:
    """A stored calibration, checked: present, well-formed and fine enough to gate on (GateError if not)."""
    try:
        cal = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GateError(f"no calibration at {path}; measure one first (make benchmark-calibrate)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GateError(f"cannot read the calibration {path} ({exc}); measure a new one "
                        f"(make benchmark-calibrate)") from None
    try:
        well_formed = (isinstance(cal["machine"], dict) and isinstance(cal["runs"], list)
                       and float(cal["typical_sd"]) >= 0 and float(cal["z"]) > 0
                       and float(cal["default_threshold"]) >= 0 and cal["benchmarks"]
                       and all(float(b["threshold"]) >= 0 for b in cal["benchmarks"].values()))
    except (TypeError, KeyError, ValueError, AttributeError):
        well_formed = False
    if not well_formed:
        raise GateError(f"{path} is not a calibration written by this gate; measure a new one "
                        f"(make benchmark-calibrate)")
    check_resolution(cal, f"the calibration {path}")
    return cal


@dataclass(frozen=True)
class Row:
    name: str
    base: float
    new: float
    threshold: float
    calibrated: bool
    rerun: float | None = None  # the median in a confirming re-run, where there was one

    @property
    def ratio(self) -> float:
        """new / base, with the faster of the two new medians where there was a re-run."""
        return min(self.new, self.rerun if self.rerun is not None else self.new) / self.base

    @property
    def status(self) -> str:
        if self.ratio > 1 + self.threshold:
            return "regression"
        if self.ratio < 1 / (1 + self.threshold):
            return "improvement"
        return "ok"


@dataclass(frozen=True)
class Comparison:
    rows: list[Row]
    only_in_base: list[str]
    only_in_new: list[str]

    @property
    def regressions(self) -> list[Row]:
        return sorted((r for r in self.rows if r.status == "regression"), key=lambda r: -r.ratio)

    @property
    def improvements(self) -> list[Row]:
        return sorted((r for r in self.rows if r.status == "improvement"), key=lambda r: r.ratio)


def check_machines(calibration: dict, *runs: Run) -> None:
    """Raise GateError unless every run was measured on the calibration's machine."""
    for run in runs:
        key = machine_key(run.machine_info)
        if key != calibration["machine"]:
            diff = {k: (calibration["machine"].get(k), v) for k, v in key.items()
                    if calibration["machine"].get(k) != v}
            raise GateError(f"{run.path} was measured on another machine than the calibration "
                            f"(calibration vs run: {diff}); calibrate here (make benchmark-calibrate) and "
                            f"save a baseline here (make benchmark)")


def compare(base: Run, new: Run, calibration: dict, rerun: Run | None = None) -> Comparison:
    """Median ratios new/base with each benchmark's calibrated threshold (and a re-run's median, if any)."""
    check_resolution(calibration)
    check_machines(calibration, base, new, *([rerun] if rerun else []))
    common = sorted(set(base.medians) & set(new.medians))
    if not common:
        raise GateError(f"{base.path} and {new.path} have no benchmark in common")
    known = calibration["benchmarks"]
    again = rerun.medians if rerun else {}
    rows = [Row(name, base.medians[name], new.medians[name],
                known[name]["threshold"] if name in known else calibration["default_threshold"], name in known,
                again.get(name))
            for name in common]
    return Comparison(rows, sorted(set(base.medians) - set(new.medians)),
                      sorted(set(new.medians) - set(base.medians)))


def this_machine_info() -> dict:
    """This machine's ``machine_info`` as a benchmark run here would record it (pytest-benchmark's own,
    completed by benchmarks/conftest.py's hook), without running a benchmark: about a second."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

    from benchmarks import conftest

    info = pytest_benchmark_generate_machine_info()
    conftest.pytest_benchmark_update_machine_info(None, info)
    return info


def check(calibration_path=CALIBRATION, storage=STORAGE, baseline=None, machine_info=None) -> str:
    """Whether ``compare`` can judge a run made here now, checked before any benchmark runs: a usable
    calibration from this machine and a saved baseline run from it. Raises GateError naming every missing
    piece and the command that makes it; returns a one-line summary otherwise."""
    here = machine_key(this_machine_info() if machine_info is None else machine_info)
    problems, cal = [], None
    try:
        cal = load_calibration(calibration_path)
    except GateError as exc:
        problems.append(str(exc))
    else:
        if cal["machine"] != here:
            problems.append(f"no calibration for this machine ({describe_machine(here)}): {calibration_path} "
                            f"was measured on {describe_machine(cal['machine'])}; measure one here "
                            f"(make benchmark-calibrate)")
            cal = None
    baseline = baseline or latest_run(storage)
    base = None
    if baseline is None:
        problems.append(f"no saved baseline run in {storage}/ to compare with; save one (make benchmark)")
    else:
        try:
            base = load_run(baseline)
        except GateError as exc:
            problems.append(f"the baseline: {exc}; save a new one (make benchmark)")
        else:
            if machine_key(base.machine_info) != here:
                problems.append(f"the baseline {baseline} was measured on "
                                f"{describe_machine(machine_key(base.machine_info))}, not on this machine "
                                f"({describe_machine(here)}); save one here (make benchmark)")
                base = None
    if problems:
        raise GateError("; ".join(problems))
    return (f"gate: ready on {describe_machine(here)}: calibration {calibration_path} ({len(cal['benchmarks'])} "
            f"benchmarks, typical limit +{100 * typical_limit(cal):.0f}%), baseline {baseline} "
            f"({len(base.medians)} benchmarks)")


def rerun_benchmarks(pytest_args: str, out) -> Run:
    """Run pytest with ``pytest_args`` (the selection and options of the run being judged) once more and
    load the result."""
    cmd = [sys.executable, "-m", "pytest", *shlex.split(pytest_args), "-q", "-p", "no:cacheprovider",
           "--benchmark-quiet", f"--benchmark-json={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GateError(f"the re-run failed (exit status {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return load_run(out)


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _row(r: Row) -> str:
    again = f" (re-run {_time(r.rerun)})" if r.rerun is not None else ""
    mark = "" if r.calibrated else " (default threshold)"
    return (f"  {r.ratio:6.3f}x  limit {1 + r.threshold:.3f}x  {_time(r.base):>9} -> {_time(r.new):>9}{again}  "
            f"{r.name}{mark}")


def format_comparison(result: Comparison, base: Run, new: Run, calibration: dict) -> str:
    lines = [f"gate: {len(result.rows)} benchmarks, {new.path} against baseline {base.path}",
             f"      thresholds from {len(calibration['runs'])} identical runs on "
             f"{describe_machine(calibration['machine'])} (typical scatter {100 * calibration['typical_sd']:.2f}%,"
             f" Z = {calibration['z']:g})"]
    injected = {e.get("injected_repeat") for e in new.extra_info.values()} - {None}
    if injected:
        lines.append(f"      note: the new run has an injected slowdown (MINIGRAD_BENCH_REPEAT={max(injected)})")
    if result.regressions:
        lines.append(f"REGRESSIONS ({len(result.regressions)}): median slower than its calibrated limit")
        lines += [_row(r) for r in result.regressions]
    if result.improvements:
        lines.append(f"improvements ({len(result.improvements)}):")
        lines += [_row(r) for r in result.improvements]
    ok = [r for r in result.rows if r.status == "ok"]
    if ok:
        closest = max(ok, key=lambda r: r.ratio / (1 + r.threshold))
        lines.append(f"ok ({len(ok)}), the closest to its limit:")
        lines.append(_row(closest))
    if result.only_in_base:
        lines.append(f"not in the new run ({len(result.only_in_base)}), not compared")
    if result.only_in_new:
        lines.append(f"not in the baseline ({len(result.only_in_new)}), not compared")
    lines.append("FAIL" if result.regressions else "PASS")
    return "\n".join(lines)


def format_calibration(cal: dict) -> str:
    thresholds = sorted(b["threshold"] for b in cal["benchmarks"].values())
    lines = [f"calibration: {len(thresholds)} benchmarks, {len(cal['runs'])} identical runs on "
             f"{describe_machine(cal['machine'])}",
             f"  typical scatter of a median: {100 * cal['typical_sd']:.2f}% (sd of log)",
             f"  thresholds (Z = {cal['z']:g}): min {100 * thresholds[0]:.1f}%, "
             f"median {100 * statistics.median(thresholds):.1f}%, max {100 * thresholds[-1]:.1f}%; "
             f"default for unseen benchmarks {100 * cal['default_threshold']:.1f}%"]
    blind = [n for n, b in cal["benchmarks"].items() if b["threshold"] >= 1.0]
    if blind:
        lines.append(f"  warning: {len(blind)} benchmarks are too noisy here to catch even a 2x slowdown, e.g. "
                     f"{blind[0]}")
    if cal["dropped"]:
        lines.append(f"  {len(cal['dropped'])} benchmarks were not in every run and are not calibrated")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cal = sub.add_parser("calibrate", help="measure the thresholds from identical runs")
    cal.add_argument("runs", nargs="+", help="pytest-benchmark JSON files of identical runs (2 or more)")
    cal.add_argument("-o", "--output", default=str(CALIBRATION), help="where to store it (default %(default)s)")
    cal.add_argument("--z", type=float, default=Z, help="threshold in noise sds (default %(default)s)")
    chk = sub.add_parser("check", help="fail at once unless compare could run: a usable calibration and a "
                                       "saved baseline, both from this machine")
    chk.add_argument("--baseline", help=f"the run compare will use (default: the latest in {STORAGE}/)")
    chk.add_argument("--calibration", default=str(CALIBRATION), help="default %(default)s")
    chk.add_argument("--storage", default=str(STORAGE), help="pytest-benchmark storage (default %(default)s)")
    cmp_ = sub.add_parser("compare", help="fail when a benchmark got slower than its threshold")
    cmp_.add_argument("new", help="pytest-benchmark JSON of the run to judge")
    cmp_.add_argument("--baseline", help=f"the run to compare with (default: the latest in {STORAGE}/)")
    cmp_.add_argument("--calibration", default=str(CALIBRATION), help="default %(default)s")
    cmp_.add_argument("--storage", default=str(STORAGE), help="pytest-benchmark storage (default %(default)s)")
    cmp_.add_argument("--rerun", metavar="PYTEST_ARGS",
                      help="when a benchmark is over its limit, run `pytest PYTEST_ARGS` (the same selection "
                           "and options as NEW) once more and fail only benchmarks slow both times")
    args = parser.parse_args(argv)
    try:
        if args.command == "calibrate":
            result = calibrate([load_run(p) for p in args.runs], z=args.z)
            print(format_calibration(result))
            try:
                check_resolution(result, "this calibration")
            except GateError as exc:
                kept = " (the one there is left as it was)" if Path(args.output).exists() else ""
                raise GateError(f"not written to {args.output}{kept}: {exc}") from None
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
            print(f"  written to {args.output}")
            return OK
        if args.command == "check":
            print(check(args.calibration, args.storage, args.baseline))
            return OK
        baseline = args.baseline or latest_run(args.storage)
        if baseline is None:
            raise GateError(f"no saved run in {args.storage}/ to compare with; save one first (make benchmark)")
        calibration = load_calibration(args.calibration)
        base, new = load_run(baseline), load_run(args.new)
        result = compare(base, new, calibration)
        if result.regressions and args.rerun is not None:
            print(f"gate: {len(result.regressions)} benchmarks over their limit; running the selection again to "
                  f"confirm")
            with tempfile.TemporaryDirectory() as tmp:
                again = rerun_benchmarks(args.rerun, Path(tmp) / "rerun.json")
            result = compare(base, new, calibration, again)
        print(format_comparison(result, base, new, calibration))
        return REGRESSION if result.regressions else OK
    except GateError as exc:
        print(f"gate: error: {exc}", file=sys.stderr)
        return ERROR


if __name__ == "__main__":
    sys.exit(main())
