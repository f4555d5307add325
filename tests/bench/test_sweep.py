"""The sweep loop: a diverging or out-of-memory batch size is recorded and the sweep goes on."""

import pytest

from minigrad.bench import cli, sweep
from minigrad.bench.outputs import write_outputs
from minigrad.bench.report import text_table
from minigrad.bench.settings import Settings
from minigrad.bench.store import RunDir


def _study(tmp_path, synthetic_sets, **kw):
    settings = Settings(**{**dict(model="mlp", backends=("numpy",), samples=64, threads=1, dataset="synthetic"), **kw})
    run_dir = RunDir.create(tmp_path / "run")
    run_dir.append(cli.run_record(settings, ["--test"], 0, *synthetic_sets))
    return sweep.Study(settings, *synthetic_sets, session=0, progress=False), run_dir


def test_plan_is_batch_major_and_auto_merges_equal_picks():
    s = Settings(backends=("numpy", "torch"), batch_sizes=(1, 17))
    assert sweep.plan(s, {}) == [(1, "numpy", []), (1, "torch", []), (17, "numpy", []), (17, "torch", [])]
    auto = Settings(backends=("numpy",), batch_sizes="auto")
    same = {"numpy": {"knee_pick": 64, "memory_pick": 64}}
    assert sweep.plan(auto, same) == [(64, "numpy", ["throughput knee", "memory budget"])]
    apart = {"numpy": {"knee_pick": 32, "memory_pick": 5000}}
    assert sweep.plan(auto, apart) == [(32, "numpy", ["throughput knee"]), (5000, "numpy", ["memory budget"])]


def test_divergence_and_out_of_memory_are_recorded_and_the_sweep_goes_on(tmp_path, synthetic_sets, isolated,
                                                                         monkeypatch):
    study, run_dir = _study(tmp_path, synthetic_sets, batch_sizes=(2, 4, 8), lr=1e12, lr_scaling="none")
    engine = study.engines["numpy"]
    real_fit = engine.fit

    def fit(model, loader, optimizer, **kwargs):
        if loader.batch_size == 8:
            raise MemoryError("Unable to allocate 1.00 TiB for an array")
        return real_fit(model, loader, optimizer, **kwargs)

    monkeypatch.setattr(engine, "fit", fit)
    seen = []
    sweep.run(study, run_dir, sweep.plan(study.settings, {}), set(), on_result=seen.append)
    assert [(r["batch_size"], r["status"]) for r in seen] == [(2, "diverged"), (4, "diverged"), (8, "out_of_memory")]
    assert "loss became" in seen[0]["error"] and "step" in seen[0]["error"]
    # lr 1e12 blows up on the throwaway copy already, and the message says so (not "step 1" of the timed run)
    assert seen[0]["error"].startswith(("in the warm-up (untimed steps on a throwaway copy): loss became",
                                        "in the memory measurement (untimed steps on the throwaway copy): loss became"))
    assert all(r["threads"] == 1 for r in seen)  # failed rows carry the thread count too
    assert seen[2]["error"] == "MemoryError: Unable to allocate 1.00 TiB for an array"
    assert all(r["lr"] == 1e12 and r["session"] == 0 and r["finished_at"] for r in seen)

    table = text_table(write_outputs(run_dir, complete=True, with_plots=True))
    assert "diverged" in table and "out of memory" in table
    assert (run_dir.path / "plots" / "epoch_time.png").exists() is False  # nothing finished: no lines to draw


def test_a_failed_entry_is_shown_beside_finished_ones(tmp_path, synthetic_sets, isolated, monkeypatch):
    study, run_dir = _study(tmp_path, synthetic_sets, batch_sizes=(4, 16))
    engine = study.engines["numpy"]
    real_fit = engine.fit

    def fit(model, loader, optimizer, **kwargs):
        if loader.batch_size == 16:
            raise MemoryError("out of memory")
        return real_fit(model, loader, optimizer, **kwargs)

    monkeypatch.setattr(engine, "fit", fit)
    sweep.run(study, run_dir, sweep.plan(study.settings, {}), set(), on_result=lambda r: None)
    report = write_outputs(run_dir, complete=True, with_plots=True)
    assert [r["status"] for r in report.rows] == ["ok", "out_of_memory"]
    assert (run_dir.path / "plots" / "epoch_time.png").is_file()
    assert "numpy: B=16 out of memory." in (run_dir.path / "report.md").read_text()


def test_other_errors_are_not_swallowed(tmp_path, synthetic_sets, isolated, monkeypatch):
    study, run_dir = _study(tmp_path, synthetic_sets, batch_sizes=(4,))
    monkeypatch.setattr(study.engines["numpy"], "fit", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        sweep.run(study, run_dir, sweep.plan(study.settings, {}), set(), on_result=lambda r: None)


def test_finished_entries_are_skipped(tmp_path, synthetic_sets, isolated):
    study, run_dir = _study(tmp_path, synthetic_sets, batch_sizes=(4, 8))
    seen = []
    sweep.run(study, run_dir, sweep.plan(study.settings, {}), {("numpy", 4)}, on_result=seen.append)
    assert [r["batch_size"] for r in seen] == [8]


@pytest.mark.parametrize("phase", ["warm-up", "memory measurement", "timed run"])
def test_a_diverged_entry_says_in_which_phase_the_loss_became_nan(tmp_path, synthetic_sets, isolated, monkeypatch,
                                                                  phase):
    """The warm-up and memory steps train a throwaway copy: their "step 1" is not the timed run's."""
    from minigrad.bench.settings import MEMORY_STEPS, WARMUP_STEPS
    from minigrad.loop import NonFiniteLoss

    study, run_dir = _study(tmp_path, synthetic_sets, batch_sizes=(4,))
    engine = study.engines["numpy"]
    real_fit = engine.fit

    def which(kwargs) -> str:
        if "desc" in kwargs:
            return "timed run"
        return {WARMUP_STEPS: "warm-up", MEMORY_STEPS: "memory measurement"}[kwargs["max_steps"]]

    def fit(model, loader, optimizer, **kwargs):
        if which(kwargs) == phase:
            raise NonFiniteLoss("fit: loss became nan at step 1 (epoch 1, batch 1 of the epoch)")
        return real_fit(model, loader, optimizer, **kwargs)

    monkeypatch.setattr(engine, "fit", fit)
    row = sweep.measure_entry(study, "numpy", 4, [])
    assert row["status"] == "diverged"
    assert row["error"].startswith(f"in the {phase}") and "loss became nan at step 1" in row["error"]
