"""The CLI end to end: one tiny real run and every file it writes, inference and auto runs, the error corpus."""

import csv
import json
import math

import pytest

from minigrad.bench import cli
from minigrad.bench.report import CONTEXT_COLUMNS, RANKS_COLUMNS, RESULT_COLUMNS
from minigrad.bench.settings import DEFAULT_LR

from .conftest import HAS_TORCH, TINY, read_jsonl, results, run_cli

BACKENDS = ["numpy", "torch"] if HAS_TORCH else ["numpy"]
#: Keys of a train-mode result row (the latency_* keys belong to inference mode, RANKS_COLUMNS to --ranks).
TRAIN_KEYS = [k for k in RESULT_COLUMNS if not k.startswith("latency_") and k not in RANKS_COLUMNS]
PLOTS = ["epoch_time.png", "throughput.png", "quality.png", "memory.png"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny study through the real command line: two batch sizes (17 is not a power of two),
    accumulation and linear lr scaling, on numpy and (where importable) torch."""
    out = tmp_path_factory.mktemp("bench") / "run"
    proc = run_cli(*TINY, "--batch-sizes", "4,17", "--backend", ",".join(BACKENDS), "--accumulate", "2",
                   "--lr-scaling", "linear", "--out", out, cwd=out.parent)
    return proc, out


def test_run_succeeds_and_prints_the_table(run):
    proc, out = run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for text in ("samples/s", "step ms", "test acc", "extrapolated", str(out)):
        assert text in proc.stdout


def test_every_output_file_is_written(run):
    _, out = run
    for name in ["results.jsonl", "summary.json", "results.csv", "report.md"] + [f"plots/{p}" for p in PLOTS]:
        assert (out / name).is_file(), name
    for p in PLOTS:
        assert (out / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_jsonl_opens_with_the_run_record(run):
    _, out = run
    head = read_jsonl(out / "results.jsonl")[0]
    assert head["record"] == "run" and head["session"] == 0 and head["schema_version"] == 1
    assert "--batch-sizes 4,17" in head["command"] and head["argv"][0] == "--dataset"
    assert head["data"] == {"dataset": "synthetic", "synthetic": True, "kind": "synthetic",
                            "train_samples": 60000, "test_samples": 10000}
    machine = head["machine"]
    assert machine["cpu"] and machine["usable_cores"] >= 1 and machine["gpu"] is None
    assert machine["blas"] and all(b["threads"] == 1 for b in machine["blas"])
    assert {"python", "numpy", "numba", "torch", "minigrad"} <= set(head["versions"])
    settings = head["settings"]
    assert settings["batch_sizes"] == [4, 17] and settings["backends"] == BACKENDS and settings["threads"] == 1


def test_result_rows_follow_the_schema(run):
    _, out = run
    rows = results(out)
    assert sorted((r["backend"], r["batch_size"]) for r in rows) == sorted((b, s) for b in BACKENDS for s in (4, 17))
    for r in rows:
        assert r["status"] == "ok" and r["error"] is None and r["mode"] == "train"
        assert r["threads"] == 1  # every result carries the thread count it was measured with (torch's too)
        missing = [k for k in TRAIN_KEYS if k not in r]
        assert not missing, missing
        assert r["samples_per_s"] > 0 and r["train_seconds"] > 0 and r["epoch_seconds"] > 0
        assert r["step_q1_s"] <= r["step_median_s"] <= r["step_q3_s"] and r["step_iqr_s"] >= 0
        assert r["epoch_measured"] is False and r["warmup_steps"] == 3 and r["warmup_seconds"] > 0
        assert r["peak_memory_bytes"] >= 0 and r["memory_measure"] in ("rss", "tracemalloc")
        assert 0 <= r["test_accuracy"] <= 1 and math.isfinite(r["final_train_loss"])


def test_accumulate_divides_updates_and_lr_scales_with_the_virtual_batch(run):
    _, out = run
    for r in results(out):
        b = r["batch_size"]
        steps = math.ceil(64 / b)
        assert r["steps"] == steps and r["samples"] == steps * b
        assert r["updates"] == math.ceil(steps / 2)  # --accumulate 2: one update per two batches
        assert r["accumulate"] == 2 and r["virtual_batch_size"] == 2 * b
        assert r["lr"] == pytest.approx(DEFAULT_LR["sgd"] * 2 * b / 64)  # --lr-scaling linear from B=64


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not importable")
def test_torch_peer_trains_like_minigrad(run):
    """Same initial weights, data order and optimizer: the same losses and accuracy, up to float32 rounding."""
    _, out = run
    rows = {(r["backend"], r["batch_size"]): r for r in results(out)}
    for b in (4, 17):
        mg, pt = rows["numpy", b], rows["torch", b]
        assert pt["updates"] == mg["updates"]
        assert pt["final_train_loss"] == pytest.approx(mg["final_train_loss"], rel=1e-3, abs=1e-5)
        assert pt["test_accuracy"] == pytest.approx(mg["test_accuracy"], abs=2e-3)


def test_summary_json(run):
    _, out = run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["schema_version"] == 1
    assert summary["data"]["synthetic"] is True and summary["command"].startswith("python -m minigrad.bench")
    assert summary["machine"]["cpu"] and summary["versions"]["minigrad"]
    assert len(summary["results"]) == 2 * len(BACKENDS) and summary["autobatch"] == []
    assert set(summary["findings"]) == set(BACKENDS)
    assert {"knee_batch", "fastest_epoch_batch", "best_accuracy_batch"} <= set(summary["findings"]["numpy"])
    assert sorted(summary["plots"]) == sorted(f"plots/{p}" for p in PLOTS)
    assert summary["method"]["warmup_steps"] == 3


def test_results_csv(run):
    _, out = run
    with open(out / "results.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == list(RESULT_COLUMNS) + list(CONTEXT_COLUMNS)
    assert len(rows) == 2 * len(BACKENDS)
    for r in rows:
        assert r["data_kind"] == "synthetic" and r["model"] == "mlp" and r["cpu"] and r["gpu"] == "none"
        assert r["command"].startswith("python -m minigrad.bench") and r["latency_median_s"] == ""
        assert float(r["samples_per_s"]) > 0 and int(r["updates"]) > 0
        assert r["threads"] == "1"


def test_report_md(run):
    _, out = run
    text = (out / "report.md").read_text()
    for snippet in ("synthetic MNIST-shaped data", "| backend | batch |", "## Findings", "--accumulate 2",
                    "![plots/epoch_time.png](plots/epoch_time.png)", "python -m minigrad.bench"):
        assert snippet in text


def test_inference_mode(tmp_path, isolated, capsys):
    out = tmp_path / "inf"
    args = [*TINY, "--mode", "inference", "--batch-sizes", "1,8", "--backend", "numpy", "--out", str(out)]
    assert cli.main(args) == 0
    rows = results(out)
    assert [r["batch_size"] for r in rows] == [1, 8]
    for r in rows:
        assert r["mode"] == "inference" and r["updates"] is None and r["samples"] == 64
        assert 0 < r["latency_median_s"] <= r["step_median_s"] and r["samples_per_s"] > 0
        assert "test_accuracy" not in r
    assert (out / "plots" / "latency.png").is_file() and not (out / "plots" / "quality.png").exists()
    assert "latency ms" in capsys.readouterr().out


def test_explain_after_the_sweep_fits_the_sweeps_own_step_times(tmp_path, isolated, capsys):
    out = tmp_path / "explain"
    assert cli.main([*TINY, "--quick", "--batch-sizes", "1,2,4,8", "--backend", "numpy", "--explain",
                     "--out", str(out)]) == 0
    explained = json.loads((out / "explain" / "explain.json").read_text())
    measured = {r["batch_size"]: r["step_median_s"] for r in results(out)}
    assert {s["batch_size"]: s["step_seconds"] for s in explained["sweep"]} == measured
    assert (out / "explain" / "explain.md").is_file() and (out / "explain" / "plateau.png").is_file()
    printed = capsys.readouterr().out
    assert "epoch time stops falling" in printed or "epoch time has not stopped falling" in printed
    assert "Amortizing the fixed cost of a step can give at most" in printed


def test_explain_needs_a_training_sweep(tmp_path, isolated, capsys):
    assert cli.main([*TINY, "--mode", "inference", "--explain", "--out", str(tmp_path / "x")]) == 2
    assert "--explain explains a training sweep" in capsys.readouterr().err


def test_auto_picks_by_memory_and_by_knee_and_explains_both(tmp_path, isolated, capsys):
    out = tmp_path / "auto"
    assert cli.main([*TINY, "--batch-sizes", "auto", "--memory-budget", "12MiB", "--backend", "numpy",
                     "--out", str(out)]) == 0
    record = next(r for r in read_jsonl(out / "results.jsonl") if r["record"] == "autobatch")
    fit = record["memory_fit"]
    line = int((12 * 2**20 - fit["state_bytes"] - fit["intercept_bytes"]) // fit["slope_bytes_per_sample"])
    # the largest that the line says fits, capped by the 64-sample budget (at least 10 steps), then measured
    assert record["memory_predicted"] == min(line, 64 // 10) and record["memory_cap"] == "sample budget"
    assert record["memory_check"][-1]["fits"] and record["memory_pick"] == record["memory_check"][-1]["batch_size"]
    assert [p["batch_size"] for p in record["memory_probe"]][:5] == [1, 2, 4, 8, 16]
    probed = {p["batch_size"]: p["samples_per_s"] for p in record["throughput_probe"]}
    assert probed[record["knee_pick"]] >= 0.9 * max(probed.values())
    assert all(v < 0.9 * max(probed.values()) for b, v in probed.items() if b < record["knee_pick"])
    rows = results(out)
    assert {r["batch_size"] for r in rows} == {record["knee_pick"], record["memory_pick"]}
    assert all(r["chosen_by"] for r in rows)
    shown = capsys.readouterr().out
    assert "auto (memory): largest batch" in shown and "auto (knee): smallest batch" in shown


# ------------------------------------------------------------------------------------------- bad arguments


#: Each bad command line; "{tmp}" is the test's temporary directory, prepared by ``_prepare``.
CORPUS = {
    "zero batch": ["--batch-sizes", "0"],
    "negative batch": ["--batch-sizes", "4,-4"],
    "fractional batch": ["--batch-sizes", "1.5"],
    "word batch": ["--batch-sizes", "8,abc"],
    "empty batch": ["--batch-sizes", ""],
    "unknown model": ["--model", "resnet50"],
    "unknown backend": ["--backend", "tpu"],
    "unknown dataset": ["--dataset", "cifar10"],
    "out is a file": ["--out", "{tmp}/a_file"],
    "out under a file": ["--out", "{tmp}/a_file/run"],
    "out holds a run": ["--out", "{tmp}/garbage"],
    "resume empty dir": ["--resume", "{tmp}/empty"],
    "resume missing dir": ["--resume", "{tmp}/nowhere"],
    "resume without header": ["--resume", "{tmp}/garbage"],
    "resume with settings": ["--resume", "{tmp}/garbage", "--samples", "5"],
    "zero samples": ["--samples", "0"],
    "negative epochs": ["--epochs", "-1"],
    "samples and epochs": ["--samples", "10", "--epochs", "1"],
    "zero accumulate": ["--accumulate", "0"],
    "zero threads": ["--threads", "0"],
    "too many threads": ["--threads", "100000"],
    "negative lr": ["--lr", "-0.1"],
    "nan lr": ["--lr", "nan"],
    "momentum 1": ["--momentum", "1"],
    "momentum with adam": ["--optimizer", "adam", "--momentum", "0.9"],
    "target above 1": ["--target-accuracy", "1.5"],
    "target in inference": ["--mode", "inference", "--target-accuracy", "0.9"],
    "auto in inference": ["--mode", "inference", "--batch-sizes", "auto"],
    "budget without auto": ["--memory-budget", "2GiB"],
    "bad budget": ["--batch-sizes", "auto", "--memory-budget", "lots"],
    "unknown option": ["--batch-size", "8"],
    "batch 1 does not fit": [*TINY, "--backend", "numpy", "--batch-sizes", "auto", "--memory-budget", "1KiB",
                             "--out", "{tmp}/nofit"],
    "empty backend": ["--backend", ""],
    "empty backend in a list": ["--backend", "numpy,"],
    "empty out": ["--out", ""],
    "empty resume": ["--resume", ""],
    "empty data dir": ["--data-dir", ""],
    "infinite lr": ["--lr", "inf"],
    "momentum 1.5": ["--momentum", "1.5"],
    "optimizer in inference": ["--mode", "inference", "--optimizer", "adam", "--lr", "5"],
    "accumulate in inference": ["--mode", "inference", "--accumulate", "2"],
    "samples past the limit": ["--samples", "1000000000000000000000000000000"],
    "epochs past the limit": ["--epochs", "1000000001"],
    "auto diverges": [*TINY, "--backend", "numpy", "--batch-sizes", "auto", "--lr", "1e12", "--out", "{tmp}/diverged"],
}
#: What the one error line says, for cases where the wording is part of the fix.
EXPECTED = {
    "empty backend": "--backend: empty backend name in ''",
    "empty backend in a list": "--backend: empty backend name in 'numpy,'",
    "empty out": "--out: empty directory name",
    "empty resume": "--resume: empty directory name",
    "empty data dir": "--data-dir: empty directory name",
    "infinite lr": "--lr must be a finite positive number; got 'inf'",
    "momentum 1": "--momentum must be a number in [0, 1); got '1'",
    "momentum 1.5": "--momentum must be a number in [0, 1); got '1.5'",
    "optimizer in inference": "--optimizer, --lr apply to training only; drop them or use --mode train",
    "accumulate in inference": "--accumulate applies to training only",
    "target in inference": "--target-accuracy applies to training only",
    "samples past the limit": "--samples must be at most 1,000,000,000",
    "epochs past the limit": "--epochs must be at most 1,000,000,000",
    "auto diverges": "--batch-sizes auto: training diverged while probing numpy (loss became nan at step",
}
#: Cases given an --out that must not exist afterwards: a failed run leaves nothing that blocks the same --out.
NOT_CREATED = {"batch 1 does not fit": "nofit", "auto diverges": "diverged"}


def _prepare(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "results.jsonl").write_text('{"record": "result"}\n')


@pytest.mark.parametrize("name", list(CORPUS))
def test_bad_argument_is_one_error_line_and_exit_2(name, tmp_path, isolated, capsys):
    _prepare(tmp_path)
    assert cli.main([a.format(tmp=tmp_path) for a in CORPUS[name]]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    assert EXPECTED.get(name, "") in lines[0]
    if name in NOT_CREATED:
        assert not (tmp_path / NOT_CREATED[name]).exists()


#: Bad command lines through the real entry point (a subprocess): the ones checked only once the data is loaded.
LATE_CORPUS = {
    "batch above the training set": ([*TINY, "--backend", "numpy", "--batch-sizes", "4,100000"],
                                     "batch size 100,000 is larger than the training set (60,000 samples"),
    "batch above the test set": ([*TINY, "--backend", "numpy", "--mode", "inference", "--batch-sizes", "10001"],
                                 "batch size 10,001 is larger than the test set (10,000 samples of synthetic)"),
    "budget past the step limit": ([*TINY[:4], "--threads", "1", "--backend", "numpy", "--samples", "20000000",
                                    "--batch-sizes", "1,64"],
                                   "--samples 20000000: 20,000,000 steps at batch size 1; at most 10,000,000 steps"),
    "epochs past the sample limit": ([*TINY[:4], "--threads", "1", "--backend", "numpy", "--epochs", "20000"],
                                     "--epochs 20000: 1,200,000,000 samples per batch size"),
    "empty cache file": (["--data-dir", "{tmp}/cache", "--model", "mlp", "--samples", "64", "--threads", "1",
                          "--backend", "numpy"], "mnist.npz: not a readable .npz file: the file is empty (0 bytes)"),
}


@pytest.mark.parametrize("name", list(LATE_CORPUS))
def test_bad_run_is_one_error_line_and_exit_2_before_anything_is_written(name, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mnist.npz").write_bytes(b"")
    args, expected = LATE_CORPUS[name]
    proc = run_cli(*[a.format(tmp=tmp_path) for a in args], "--out", tmp_path / "out", cwd=tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and expected in lines[0]
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "cache" / "mnist.npz").read_bytes() == b""  # a bad cache is left as it is


def test_a_failed_auto_run_leaves_the_out_directory_free(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*TINY, "--backend", "numpy", "--batch-sizes", "auto", "--memory-budget", "1KiB", "--out", out,
                   cwd=tmp_path)
    assert proc.returncode == 2 and "even batch 1 does not fit" in proc.stderr and not out.exists()
    proc = run_cli(*TINY, "--backend", "numpy", "--batch-sizes", "4", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["batch_size"] for r in results(out)] == [4]


# --------------------------------------------------------------------------------- --resume checks its settings


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-entry run, to be copied and tampered with."""
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = run_cli(*TINY, "--batch-sizes", "4,8", "--backend", "numpy", "--out", out, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out


def _copy_with_settings(finished, tmp_path, settings):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    lines = (out / "results.jsonl").read_text().splitlines()
    head = json.loads(lines[0])
    head["settings"] = settings(head["settings"])
    (out / "results.jsonl").write_text("\n".join([json.dumps(head)] + lines[1:]) + "\n")
    return out


#: Stored settings as a hand edit or another tool could leave them, and what --resume says about them.
BAD_STORED = {
    "empty": (lambda s: {}, "the run's settings in {out}/results.jsonl are empty"),
    "incomplete": (lambda s: {k: v for k, v in s.items() if k not in ("threads", "seed")},
                   "the run's settings in {out}/results.jsonl lack threads, seed"),
    "threads as a string": (lambda s: {**s, "threads": "2"}, 'are not valid: threads is "2", which reads as 2'),
    "zero batch": (lambda s: {**s, "batch_sizes": [0, 4]},
                   "are not valid: --batch-sizes: each batch size must be a positive integer; got 0"),
    "unknown model": (lambda s: {**s, "model": "resnet"}, "are not valid: argument --model: invalid choice: 'resnet'"),
    "no budget": (lambda s: {**s, "samples": None}, "are not valid: samples is null, which reads as 60000"),
    "unknown key": (lambda s: {**s, "colour": "red"}, "have unknown keys colour"),
    "batch above the data": (lambda s: {**s, "batch_sizes": [4, 100000]},
                             "batch size 100,000 is larger than the training set"),
}


@pytest.mark.parametrize("name", list(BAD_STORED))
def test_resume_checks_the_stored_settings_like_fresh_arguments(name, finished, tmp_path):
    tamper, expected = BAD_STORED[name]
    out = _copy_with_settings(finished, tmp_path, tamper)
    before = (out / "results.jsonl").read_bytes()
    proc = run_cli("--resume", out, cwd=tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""  # not even the banner
    assert expected.format(out=out) in lines[0]
    assert (out / "results.jsonl").read_bytes() == before  # nothing appended


def test_stored_settings_become_the_arguments_they_came_from():
    for args in ([*TINY, "--batch-sizes", "4,17", "--lr", "0.3", "--warmup", "5", "--accumulate", "2"],
                 ["--dataset", "synthetic", "--mode", "inference", "--batch-sizes", "1,8", "--epochs", "2"],
                 [*TINY, "--optimizer", "adam", "--target-accuracy", "0.9", "--quick"],
                 [*TINY, "--batch-sizes", "auto", "--memory-budget", "1GiB", "--data-dir", "/tmp"]):
        settings = cli.resolve(vars(cli.build_parser().parse_args(args)))
        again = cli.resolve(vars(cli.build_parser().parse_args(cli.settings_arguments(settings.to_dict()))))
        assert again == settings


def test_resume_of_a_finished_run_appends_nothing(finished, tmp_path):
    out = _copy_with_settings(finished, tmp_path, lambda s: s)
    before = (out / "results.jsonl").read_bytes()
    (out / "summary.json").unlink()
    for _ in range(2):
        proc = run_cli("--resume", out, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert f"nothing to do: all 2 entries finished in {out}" in proc.stdout
    assert (out / "results.jsonl").read_bytes() == before
    assert json.loads((out / "summary.json").read_text())["complete"] is True  # derived files rewritten


def test_cupy_without_a_gpu_is_a_clean_error(tmp_path):
    """Through the real entry point: exit code 2 and one line, never a traceback."""
    from minigrad import backend

    try:
        backend.load_module("cupy")
        pytest.skip("cupy runs here")
    except backend.BackendUnavailable:
        pass
    proc = run_cli("--backend", "numpy,cupy", "--dataset", "synthetic", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: --backend cupy") and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing is created before the arguments are all good


def test_help_explains_every_option():
    text = cli.build_parser().format_help()
    for option in ("--model", "--backend", "--batch-sizes", "--epochs", "--samples", "--dataset", "--data-dir",
                   "--dtype", "--optimizer", "--lr", "--momentum", "--lr-scaling", "--warmup", "--accumulate",
                   "--mode", "--threads", "--seed", "--out", "--resume", "--quick", "--target-accuracy",
                   "--memory-budget", "--eval-every", "--base-batch-size"):
        assert option in text
    actions = [a for a in cli.build_parser()._actions if a.option_strings]
    assert all(a.help for a in actions)


def test_target_accuracy_reports_time_to_target_and_how_often_it_evaluated(tmp_path, isolated, capsys):
    out = tmp_path / "target"
    assert cli.main([*TINY, "--samples", "128", "--batch-sizes", "4,64", "--backend", "numpy", "--lr", "0.05",
                     "--target-accuracy", "0.5", "--eval-every", "32", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "to 50% s" in shown and "test set evaluated every 32 training samples" in shown
    rows = {r["batch_size"]: r for r in results(out)}
    assert rows[4]["target_reached"] is True and rows[4]["time_to_target_s"] <= rows[4]["train_seconds"]
    assert len(rows[4]["evaluations"]) == 4 and rows[4]["eval_every_samples"] == 32
    assert (out / "plots" / "accuracy_vs_time.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["findings"]["numpy"]["fastest_to_target_batch"] in (4, 64)


def test_the_default_recipe_target_and_their_round_trip_through_resume():
    s = cli.resolve({})
    assert (s.lr, s.momentum, s.lr_scaling, s.samples, s.target_accuracy) == (0.05, 0.9, "linear-sqrt", 60000, 0.9)
    assert s.lr_for(1) == pytest.approx(0.05 / 64) and s.lr_for(256) == pytest.approx(0.1)
    assert cli.resolve({"quick": True}).target_accuracy is None  # --quick times; it evaluates only when asked
    assert cli.resolve({"dataset": "synthetic"}).target_accuracy is None
    assert cli.resolve({"mode": "inference"}).target_accuracy is None
    assert cli.resolve({"optimizer": "adam"}).lr_scaling == "none"
    for given in ({"target_accuracy": "none"}, {"tune_lr": "0.5,2", "train_subset": "1000"},
                  {"tune_lr": cli.DEFAULT_LR_GRID}):
        stored = cli.resolve(given).to_dict()
        again = cli.resolve(vars(cli.build_parser().parse_args(cli.settings_arguments(stored))))
        assert again.to_dict() == stored
