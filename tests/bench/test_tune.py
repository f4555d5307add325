"""--tune-lr: the grid per batch size, the criterion that picks from it, and the outputs that show both."""

import csv
import json
import math

import pytest

from minigrad import models, rng
from minigrad.bench import cli, tune
from minigrad.bench.engines import MinigradEngine
from minigrad.bench.measure import measure_train
from minigrad.bench.settings import Settings
from minigrad.loop import NonFiniteLoss

from .conftest import TINY, read_jsonl, results


def _trial(lr, reached=None, samples=None, loss=1.0, status="ok"):
    return {"lr": lr, "status": status, "target_reached": reached, "samples_to_target": samples,
            "final_train_loss": loss}


def test_the_criterion_prefers_the_target_then_fewer_samples_then_the_lower_loss():
    grid = [_trial(0.1, True, 3000, 0.5), _trial(0.3, True, 1500, 0.9), _trial(1.0, True, 1500, 0.4),
            _trial(3.0, False, None, 0.01), _trial(10.0, status="diverged", loss=None)]
    assert tune.best(grid) == 2  # reached in 1,500 samples like 0.3, with the lower loss
    assert tune.best([_trial(0.1, False, None, 0.7), _trial(0.3, False, None, 0.2)]) == 1  # none reached: the loss
    assert tune.best([_trial(0.1, None, None, 0.7), _trial(0.3, None, None, float("nan"))]) == 0  # NaN never wins
    assert tune.best([_trial(0.1, status="diverged", loss=None)]) is None


def test_tune_keeps_the_best_run_and_records_the_grid():
    rows = {0.1: {"final_train_loss": 0.8, "target_reached": False},
            0.3: {"final_train_loss": 0.3, "target_reached": False}}

    def run(lr):
        if lr == 1.0:
            raise NonFiniteLoss("loss became nan at step 4")
        return dict(rows[lr], lr=lr)

    said = []
    row = tune.tune(run, [0.1, 0.3, 1.0], said.append)
    assert row["lr"] == 0.3 and not row["lr_at_grid_edge"]
    assert [(t["lr"], t["status"], t["chosen"]) for t in row["lr_grid"]] == [
        (0.1, "ok", False), (0.3, "ok", True), (1.0, "diverged", False)]
    assert row["lr_grid"][2]["error"] == "loss became nan at step 4"
    assert said == ["  lr 0.1: loss 0.800", "  lr 0.3: loss 0.300", "  lr 1: diverged"]
    with pytest.raises(NonFiniteLoss, match="every lr of the grid"):
        tune.tune(lambda lr: run(1.0), [1.0, 2.0])


def test_on_real_runs_the_chosen_lr_is_the_best_of_its_grid(synthetic_sets, isolated):
    """Every run of the grid is a full entry from the same weights and data order: rerunning each lr alone gives
    the outcome the grid recorded, and the chosen one is the best of them by the criterion."""
    s = Settings(model="mlp", backends=("numpy",), samples=480, threads=1, dataset="synthetic", lr=0.05,
                 lr_scaling="linear-sqrt", target_accuracy=0.3, eval_every=48, tune_lr=(0.01, 1.0, 30.0))
    rng.manual_seed(0)
    init = models.get_model("mlp").state_dict()
    engine = MinigradEngine("numpy")

    def run(lr):
        return measure_train(engine, s, 8, *synthetic_sets, init, False, lr)

    lrs = tune.grid(s, 8)
    assert lrs == pytest.approx([0.05 * 8 / 64 * f for f in (0.01, 1.0, 30.0)])
    row = tune.tune(run, lrs)
    alone = [tune.outcome(lr, run(lr)) for lr in lrs]
    for kept, again in zip(row["lr_grid"], alone, strict=True):  # all but the seconds, which are timed afresh
        assert {k: kept[k] for k in again if k != "time_to_target_s"} == {k: v for k, v in again.items()
                                                                          if k != "time_to_target_s"}
    ranks = [tune.rank(t) for t in alone]
    assert row["lr"] == lrs[ranks.index(min(ranks))]
    assert [t["chosen"] for t in row["lr_grid"]].count(True) == 1
    assert len({r[:2] for r in ranks}) > 1  # the grid really differs (a tiny lr does not reach the target as soon)


def test_tune_lr_reaches_every_output_and_survives_resume(tmp_path, isolated, capsys):
    out = tmp_path / "run"
    args = [*TINY, "--backend", "numpy", "--batch-sizes", "4,8", "--tune-lr", "0.5,2", "--target-accuracy", "0.2",
            "--out", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "lr grid (2 runs)" in printed and "lr grid" in printed.split("\n\n")[-3]
    head = read_jsonl(out / "results.jsonl")[0]
    assert head["settings"]["tune_lr"] == [0.5, 2.0]
    rows = results(out)
    for r in rows:
        grid = [t["lr"] for t in r["lr_grid"]]
        assert grid == pytest.approx([f * 0.05 * r["batch_size"] / 64 for f in (0.5, 2.0)])
        assert r["lr"] == next(t["lr"] for t in r["lr_grid"] if t["chosen"])
    with open(out / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert all("(chosen)" in c["lr_grid"] for c in csv_rows)
    report = (out / "report.md").read_text()
    assert "| lr grid |" in report and "lr: the best of a grid per batch size" in report
    summary = json.loads((out / "summary.json").read_text())
    assert all(len(r["lr_grid"]) == 2 for r in summary["results"])
    assert any(r["record"] == "noise_scale" for r in read_jsonl(out / "results.jsonl"))

    # a kill after the first entry: resume measures the second with the same grid
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if '"record": "result"' not in ln or '"batch_size": 4,' in ln]
    (out / "results.jsonl").write_text("".join(keep))
    assert cli.main(["--resume", str(out)]) == 0
    resumed = results(out)
    assert sorted(r["batch_size"] for r in resumed) == [4, 8]
    assert all(len(r["lr_grid"]) == 2 for r in resumed)
    assert sum(r["record"] == "noise_scale" for r in read_jsonl(out / "results.jsonl")) == 1  # measured once


@pytest.mark.parametrize("args,message", [
    (["--tune-lr", "1"], "--tune-lr needs two or more distinct factors"),
    (["--tune-lr", "1,x"], "--tune-lr: each factor must be a finite positive number; got 'x'"),
    (["--mode", "inference", "--tune-lr"], "--tune-lr applies to training only"),
])
def test_bad_grids_are_refused(args, message, tmp_path, capsys):
    assert cli.main([*TINY, *args, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_default_grid_is_log_spaced():
    ratios = [b / a for a, b in zip(cli.DEFAULT_LR_GRID, cli.DEFAULT_LR_GRID[1:])]
    assert all(math.isclose(r, ratios[0]) for r in ratios) and 1.0 in cli.DEFAULT_LR_GRID
