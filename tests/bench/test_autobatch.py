"""--batch-sizes auto: the knee rule, and the memory pick on a real probe."""

import pytest

from minigrad import models, rng
from minigrad.bench import autobatch
from minigrad.bench.engines import MinigradEngine
from minigrad.bench.settings import Settings, UsageError


def _choose(synthetic_sets, budget):
    s = Settings(model="mlp", backends=("numpy",), batch_sizes="auto", memory_budget=budget, samples=64, threads=1)
    rng.manual_seed(0)
    init = models.get_model("mlp").state_dict()
    return autobatch.choose(MinigradEngine("numpy"), s, synthetic_sets[0], init)


def test_memory_pick_is_the_largest_predicted_fit_capped_at_the_data(synthetic_sets, isolated):
    record = _choose(synthetic_sets, 2**40)  # a budget far beyond the 600 training samples
    assert record["memory_pick"] == 600 and record["memory_pick_capped"] is True
    assert "capped at the 600 training samples" in record["memory_explanation"]
    assert record["memory_fit"]["slope_bytes_per_sample"] > 0
    assert record["knee_pick"] in [p["batch_size"] for p in record["throughput_probe"]]
    assert record["throughput_probe"][-1]["batch_size"] <= 600


def test_batch_1_that_does_not_fit_is_a_usage_error(synthetic_sets, isolated):
    with pytest.raises(UsageError, match="even batch 1 does not fit"):
        _choose(synthetic_sets, 1024)
