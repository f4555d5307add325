"""benchmarks/gate.py: the calibration arithmetic on hand-made runs, the compare verdicts and exit statuses,
and the whole loop on a real benchmark: calibrate from identical runs, pass an unchanged run, fail an
injected 2x slowdown (MINIGRAD_BENCH_REPEAT=2)."""

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gate

ROOT = Path(__file__).resolve().parents[2]
MACHINE = {"system": "Linux", "machine": "x86_64", "processor": "", "node": "box-1",
           "cpu": {"brand_raw": "Test CPU", "count": 2}, "minigrad": {"usable_cores": 2}}


def write_run(path, medians, machine=MACHINE, extra=None):
    """A minimal pytest-benchmark JSON: what the gate reads of it."""
    benchmarks = [{"fullname": name, "stats": {"median": m}, "extra_info": dict(extra or {})}
                  for name, m in medians.items()]
    path.write_text(json.dumps({"machine_info": machine, "benchmarks": benchmarks}))
    return path


def runs_with_sds(tmp_path, sds, base=1e-3):
    """Three runs in which benchmark i's log-medians are (0, +sd_i, -sd_i): sample sd exactly sd_i."""
    paths = []
    for j, offset in enumerate((0, 1, -1)):
        medians = {f"b{i}": base * math.exp(offset * sd) for i, sd in enumerate(sds)}
        paths.append(write_run(tmp_path / f"run{j}.json", medians))
    return [gate.load_run(p) for p in paths]


def test_calibration_thresholds_follow_the_measured_scatter(tmp_path):
    cal = gate.calibrate(runs_with_sds(tmp_path, [0.01, 0.02, 0.04]))
    b = cal["benchmarks"]
    assert [b[f"b{i}"]["sd"] for i in range(3)] == pytest.approx([0.01, 0.02, 0.04])
    assert b["b2"]["spread"] == pytest.approx(math.exp(0.08) - 1)
    assert b["b0"]["medians"] == pytest.approx([1e-3, 1e-3 * math.exp(0.01), 1e-3 * math.exp(-0.01)])
    # typical: median of sd^2 (0.02^2) over the median of chi2(2)/2, (1 - 2/18)^3 by Wilson-Hilferty
    typical = math.sqrt(0.02**2 / (1 - 2 / 18) ** 3)
    assert cal["typical_sd"] == pytest.approx(typical)
    limit = lambda sd: math.exp(6 * math.sqrt(2) * sd) - 1  # noqa: E731
    assert b["b0"]["threshold"] == pytest.approx(limit(typical))  # looked quiet: gets the typical scatter
    assert b["b1"]["threshold"] == pytest.approx(limit(typical))
    assert b["b2"]["threshold"] == pytest.approx(limit(0.04))  # noisier than typical: its own scatter
    assert b["b0"]["threshold"] <= cal["default_threshold"] <= b["b2"]["threshold"]
    assert cal["machine"] == gate.machine_key(MACHINE) and cal["z"] == gate.Z == 6


def test_calibration_z_scales_the_threshold(tmp_path):
    runs = runs_with_sds(tmp_path, [0.01, 0.02, 0.04])
    low, high = gate.calibrate(runs, z=2)["benchmarks"]["b2"], gate.calibrate(runs, z=4)["benchmarks"]["b2"]
    assert math.log1p(high["threshold"]) == pytest.approx(2 * math.log1p(low["threshold"]))


def test_calibration_needs_two_runs_of_one_machine(tmp_path):
    one = gate.load_run(write_run(tmp_path / "a.json", {"x": 1.0}))
    with pytest.raises(gate.GateError, match="at least 2"):
        gate.calibrate([one])
    other = {**MACHINE, "cpu": {"brand_raw": "Other CPU", "count": 8}}
    two = gate.load_run(write_run(tmp_path / "b.json", {"x": 1.0}, machine=other))
    with pytest.raises(gate.GateError, match="different machines"):
        gate.calibrate([one, two])


def test_the_host_name_is_not_part_of_the_machine():
    assert gate.machine_key(MACHINE) == gate.machine_key({**MACHINE, "node": "box-2"})


def test_benchmarks_missing_from_a_calibration_run_are_dropped(tmp_path):
    a = write_run(tmp_path / "a.json", {"x": 1.0, "y": 2.0})
    b = write_run(tmp_path / "b.json", {"x": 1.1})
    cal = gate.calibrate([gate.load_run(a), gate.load_run(b)])
    assert list(cal["benchmarks"]) == ["x"] and cal["dropped"] == ["y"]


def calibration(threshold=0.1, default=0.2, names=("fast", "slow")):
    return {"machine": gate.machine_key(MACHINE), "default_threshold": default, "runs": ["r1", "r2"],
            "typical_sd": 0.01, "z": 4.0, "benchmarks": {n: {"threshold": threshold} for n in names}}


def test_compare_judges_each_ratio_against_its_threshold(tmp_path):
    base = gate.load_run(write_run(tmp_path / "base.json", {"fast": 1.0, "slow": 1.0, "new": 1.0, "gone": 1.0}))
    new = gate.load_run(write_run(tmp_path / "new.json", {"fast": 0.8, "slow": 1.15, "new": 1.15, "added": 1.0}))
    result = gate.compare(base, new, calibration())
    status = {r.name: r.status for r in result.rows}
    assert status == {"fast": "improvement", "slow": "regression", "new": "ok"}  # "new" gets the default 20%
    assert [r.name for r in result.regressions] == ["slow"]
    assert result.regressions[0].ratio == pytest.approx(1.15)
    assert result.only_in_base == ["gone"] and result.only_in_new == ["added"]
    text = gate.format_comparison(result, base, new, calibration())
    assert "REGRESSIONS (1)" in text and text.endswith("FAIL")


def test_compare_passes_within_the_noise(tmp_path):
    base = gate.load_run(write_run(tmp_path / "base.json", {"fast": 1.0, "slow": 1.0}))
    new = gate.load_run(write_run(tmp_path / "new.json", {"fast": 1.09, "slow": 0.95}))
    result = gate.compare(base, new, calibration())
    assert not result.regressions and not result.improvements
    assert gate.format_comparison(result, base, new, calibration()).endswith("PASS")


def test_compare_refuses_another_machine(tmp_path):
    base = gate.load_run(write_run(tmp_path / "base.json", {"fast": 1.0}))
    other = {**MACHINE, "minigrad": {"usable_cores": 2, "gpu": "Some GPU"}}
    new = gate.load_run(write_run(tmp_path / "new.json", {"fast": 1.0}, machine=other))
    with pytest.raises(gate.GateError, match="another machine"):
        gate.compare(base, new, calibration())


def test_latest_run_is_the_newest_saved_file(tmp_path):
    assert gate.latest_run(tmp_path) is None
    folder = tmp_path / "Linux-CPython-3.11-64bit"
    folder.mkdir()
    old = write_run(folder / "0001_abc_20240101_000000.json", {"x": 1.0})
    new = write_run(folder / "0002_abc_20240102_000000.json", {"x": 1.0})
    write_run(tmp_path / "compare.json", {"x": 1.0})  # not a saved run
    os.utime(old, (1, 1))
    os.utime(new, (2, 2))
    assert gate.latest_run(tmp_path) == new


def test_cli_exit_statuses(tmp_path, capsys):
    runs = [write_run(tmp_path / f"r{i}.json", {"x": 1.0 + 0.01 * i, "y": 2.0 - 0.01 * i}) for i in range(3)]
    cal = tmp_path / "cal.json"
    assert gate.main(["calibrate", *map(str, runs), "-o", str(cal)]) == gate.OK
    assert json.loads(cal.read_text())["benchmarks"].keys() == {"x", "y"}
    same = write_run(tmp_path / "same.json", {"x": 1.01, "y": 1.99})
    slow = write_run(tmp_path / "slow.json", {"x": 2.02, "y": 1.99})
    common = ["--baseline", str(runs[1]), "--calibration", str(cal)]
    assert gate.main(["compare", str(same), *common]) == gate.OK
    assert gate.main(["compare", str(slow), *common]) == gate.REGRESSION
    assert gate.main(["compare", str(same), "--baseline", str(runs[1]),
                      "--calibration", str(tmp_path / "none.json")]) == gate.ERROR
    assert "make benchmark-calibrate" in capsys.readouterr().err
    assert gate.main(["compare", str(same), "--calibration", str(cal), "--storage", str(tmp_path / "empty")]) \
        == gate.ERROR
    assert "make benchmark" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{")
    assert gate.main(["compare", str(tmp_path / "junk.json"), *common]) == gate.ERROR


def test_a_rerun_clears_a_one_off_spike_and_confirms_a_real_slowdown(tmp_path):
    base = gate.load_run(write_run(tmp_path / "base.json", {"fast": 1.0, "slow": 1.0}))
    new = gate.load_run(write_run(tmp_path / "new.json", {"fast": 1.5, "slow": 2.0}))
    again = gate.load_run(write_run(tmp_path / "again.json", {"fast": 1.02, "slow": 2.1}))
    result = gate.compare(base, new, calibration(), again)
    assert [(r.name, r.ratio) for r in result.regressions] == [("slow", pytest.approx(2.0))]
    assert {r.name: r.status for r in result.rows}["fast"] == "ok"


# The whole loop on a real benchmark. Four tiny NumPy benchmarks (relu on mlp's hidden layer, 16 samples,
# both directions and dtypes) at 0.05 s each keep every run to a few seconds.
SUBSET = ["benchmarks/bench_relu.py", "-k", "mlp.hidden and B16 and numpy"]
BENCH_ARGS = "--benchmark-max-time=0.05"


def run_benchmarks(out: Path) -> Path:
    """Run the subset as `make benchmark` would, in a fresh process (MINIGRAD_BENCH_REPEAT inherited)."""
    cmd = [sys.executable, "-m", "pytest", *SUBSET, "-q", "-p", "no:cacheprovider", "--benchmark-quiet",
           BENCH_ARGS, f"--benchmark-json={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(json.loads(out.read_text())["benchmarks"]) == 4
    return out


def test_gate_passes_an_unchanged_run_and_fails_an_injected_2x_slowdown(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the subset's paths are relative to the repository root
    monkeypatch.setenv("MINIGRAD_BENCH_REPEAT", "1")
    runs = [run_benchmarks(tmp_path / f"identical-{i}.json") for i in range(3)]
    cal = tmp_path / "calibration.json"
    assert gate.main(["calibrate", *map(str, runs), "-o", str(cal)]) == gate.OK
    thresholds = [b["threshold"] for b in json.loads(cal.read_text())["benchmarks"].values()]
    if max(thresholds) > 0.8:  # an honest calibration of a machine too busy right now to resolve 2x
        pytest.skip(f"the machine is too noisy at the moment to resolve a 2x slowdown: calibrated thresholds "
                    f"{[f'{t:.0%}' for t in thresholds]}")
    rerun = shlex.join([*SUBSET, BENCH_ARGS])  # the same selection, as the Makefile passes it
    common = ["--baseline", str(runs[-1]), "--calibration", str(cal), f"--rerun={rerun}"]
    unchanged = run_benchmarks(tmp_path / "unchanged.json")
    assert gate.main(["compare", str(unchanged), *common]) == gate.OK, capsys.readouterr().out
    monkeypatch.setenv("MINIGRAD_BENCH_REPEAT", "2")  # the slow "tree", for the run and for its re-run
    slowed = run_benchmarks(tmp_path / "slowed.json")
    assert gate.main(["compare", str(slowed), *common]) == gate.REGRESSION, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "running the selection again to confirm" in out and "injected slowdown" in out and "REGRESSIONS (4)" in out
