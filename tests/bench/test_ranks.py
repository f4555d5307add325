import json

import pytest

from minigrad import models
from minigrad.bench import cli, ranks
from minigrad.bench.settings import UsageError
from minigrad.machine import usable_cores

from .conftest import TINY, read_jsonl, results, run_cli

needs_two_ranks = pytest.mark.skipif(ranks.mpiexec() is None or usable_cores() < 2,
                                     reason="--ranks tests skipped: mpi4py/mpiexec missing (pip install '.[mpi]') "
                                            "or fewer than 2 cores")


def _resolve(*argv):
    return cli.resolve(vars(cli.build_parser().parse_args(["--dataset", "synthetic", *argv])))


@pytest.mark.parametrize("argv, match", [
    (["--mode", "inference"], "--mode inference"),
    (["--batch-sizes", "auto"], "--batch-sizes auto"),
    (["--eval-every", "100"], "--eval-every"),
])
def test_ranks_refuses_what_it_does_not_measure(argv, match):
    with pytest.raises(UsageError, match=f"cannot be combined with .*{match}"):
        _resolve("--ranks", "2", "--threads", "1", *argv)


def test_ranks_refuses_more_threads_than_cores():
    with pytest.raises(UsageError, match="more than the .* cores"):
        _resolve("--ranks", str(usable_cores() + 1), "--threads", "1")


def test_ranks_without_mpi_names_the_extra(monkeypatch):
    monkeypatch.setattr(ranks, "mpiexec", lambda: None)
    with pytest.raises(UsageError, match=r"minigrad\[mpi\]"):
        _resolve("--ranks", "2", "--threads", "1")


@needs_two_ranks
def test_ranks_threads_default_to_the_cores_shared_between_ranks():
    assert _resolve("--ranks", "2").threads == max(1, usable_cores() // 2)
    assert _resolve().ranks == 1


@needs_two_ranks
def test_the_bench_on_two_ranks_end_to_end_with_resume(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("--ranks", "2", "--backend", "numpy", "--batch-sizes", "8,16", *TINY, "--out", out, cwd=tmp_path,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = results(out)
    n_params = sum(p.data.size for p in models.get_model("mlp").parameters())
    for row, b in zip(rows, (8, 16), strict=True):
        assert (row["status"], row["ranks"], row["batch_size"], row["global_batch_size"]) == ("ok", 2, b, 2 * b)
        assert row["samples"] == 64  # the budget is global: 32 samples on each rank
        assert row["allreduce_bytes"] == 4 * (n_params + 1)  # float32 gradients and the sample count
        assert 0 < row["allreduce_share"] < 1
        assert row["steady_samples_per_s"] == pytest.approx(2 * b / row["step_median_s"])
        assert row["scaling_efficiency"] == pytest.approx(row["steady_samples_per_s"]
                                                          / (2 * row["single_rank_samples_per_s"]))
        assert sorted({p["ranks"] for p in row["predictions"]}) == [8, 64]
    assert "x 2 ranks (global batch 16)" in (out / "report.md").read_text()
    assert "allreduce_share" in (out / "results.csv").read_text().splitlines()[0]

    # Lose the last entry as a kill would, then resume: only that entry is measured again, on 2 ranks.
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if json.loads(line)["record"] == "result")
    (out / "results.jsonl").write_text("".join(lines[:last] + lines[last + 1:]))
    proc = run_cli("--resume", out, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "1 of 2 entries already finished" in proc.stdout + proc.stderr
    again = results(out)
    assert [(r["batch_size"], r["ranks"]) for r in again] == [(8, 2), (16, 2)]
    assert [r["session"] for r in again] == [0, 1]
    assert [r["record"] for r in read_jsonl(out / "results.jsonl")].count("run") == 2
