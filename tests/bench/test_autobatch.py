"""--batch-sizes auto: the knee rule, the memory pick on a real probe, its caps and its verification."""

import pytest

from minigrad import models, rng
from minigrad.bench import autobatch
from minigrad.bench.engines import MinigradEngine
from minigrad.bench.settings import Settings, UsageError


def _choose(synthetic_sets, budget, samples=6000):
    s = Settings(model="mlp", backends=("numpy",), batch_sizes="auto", memory_budget=budget, samples=samples,
                 threads=1)
    rng.manual_seed(0)
    init = models.get_model("mlp").state_dict()
    return autobatch.choose(MinigradEngine("numpy"), s, synthetic_sets[0], init)


def test_memory_pick_is_the_largest_predicted_fit_capped_at_the_data(synthetic_sets, isolated):
    record = _choose(synthetic_sets, 2**40)  # a budget far beyond the 600 training samples
    assert record["memory_pick"] == 600 and record["memory_pick_capped"] is True
    assert record["memory_cap"] == "training set"
    assert "capped by the training set: 600 training samples" in record["memory_explanation"]
    assert record["memory_fit"]["slope_bytes_per_sample"] > 0
    assert record["knee_pick"] in [p["batch_size"] for p in record["throughput_probe"]]
    assert record["throughput_probe"][-1]["batch_size"] <= 600
    # the pick was measured, and it fits
    assert [c["batch_size"] for c in record["memory_check"]] == [600] and record["memory_check"][0]["fits"]


def test_memory_pick_leaves_steps_in_the_sample_budget(synthetic_sets, isolated):
    record = _choose(synthetic_sets, 2**40, samples=640)
    assert record["memory_pick"] == 640 // autobatch.AUTO_MIN_STEPS == 64
    assert record["memory_cap"] == "sample budget"
    assert "B <= budget / 10 = 64" in record["memory_explanation"]


def test_a_pick_measured_over_the_budget_steps_down_until_it_fits(synthetic_sets, isolated, monkeypatch):
    """The line predicts too little (here: the real step needs 1 MiB more than any probe showed): the verification
    measures the pick, finds it over the budget, and steps down until a measured peak fits."""
    calls = []

    def fake_memory(engine, run_steps):
        """A peak of 1 KiB per sample: exactly linear, so the probe's line is right until the check adds 1 MiB."""
        history = run_steps()
        b = history.steps[0].samples
        peak = 1024 * b + (2**20 if len(calls) >= len(autobatch.MEMORY_PROBE_SIZES) else 0)
        calls.append(b)
        return {"rss_peak_delta_bytes": peak, "tracemalloc_peak_bytes": None, "gpu_pool_bytes": None,
                "peak_memory_bytes": peak, "memory_measure": "rss"}

    monkeypatch.setattr(autobatch, "measure_memory", fake_memory)
    engine = MinigradEngine("numpy")
    model = models.get_model("mlp")
    state = engine.state_bytes(model, engine.optimizer(model, Settings(), 0.1))  # parameters + momentum buffers
    budget = state + 1024 * 500 + 2**20  # the line: 1,524 fit (capped at 600); measured, only B <= 500 fit
    record = _choose(synthetic_sets, budget)
    checks = record["memory_check"]
    assert checks[0]["batch_size"] == record["memory_predicted"] and not checks[0]["fits"]
    assert all(not c["fits"] for c in checks[:-1]) and checks[-1]["fits"]
    assert [c["batch_size"] for c in checks] == sorted({c["batch_size"] for c in checks}, reverse=True)
    assert record["memory_predicted"] == 600
    assert record["memory_pick"] == checks[-1]["batch_size"] <= 500
    assert checks[-1]["needed_bytes"] <= budget
    assert "over the budget" in record["memory_explanation"] and "fits" in record["memory_explanation"]


def test_batch_1_that_does_not_fit_is_a_usage_error(synthetic_sets, isolated):
    with pytest.raises(UsageError, match="even batch 1 does not fit"):
        _choose(synthetic_sets, 1024)
