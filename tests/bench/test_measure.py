"""One entry measured in-process: accumulation, lr rules, periodic evaluation and time to target, inference."""

import math
import time

import numpy as np
import pytest

from minigrad import models, rng
from minigrad.bench import measure
from minigrad.bench.engines import MinigradEngine
from minigrad.bench.settings import Settings


def _settings(**kw):
    base = dict(model="mlp", backends=("numpy",), samples=96, threads=1, dataset="synthetic")
    return Settings(**{**base, **kw})


def _init(settings):
    rng.manual_seed(settings.seed)
    return models.get_model(settings.model).state_dict()


def _train(synthetic_sets, batch_size, **kw):
    s = _settings(**kw)
    train_set, test_set = synthetic_sets
    return measure.measure_train(MinigradEngine("numpy"), s, batch_size, train_set, test_set, _init(s), False)


@pytest.mark.parametrize("accumulate", [1, 3])
def test_accumulate_divides_the_updates(synthetic_sets, isolated, accumulate):
    row = _train(synthetic_sets, 8, accumulate=accumulate)
    assert row["steps"] == 12 and row["samples"] == 96
    assert row["updates"] == math.ceil(12 / accumulate) and row["virtual_batch_size"] == 8 * accumulate


@pytest.mark.parametrize("rule,expected", [("none", 0.01), ("linear", 0.01 * 32 / 64),
                                           ("sqrt", 0.01 * math.sqrt(32 / 64)), ("linear-sqrt", 0.01 * 32 / 64)])
def test_lr_follows_the_scaling_rule_on_the_virtual_batch(synthetic_sets, isolated, rule, expected):
    row = _train(synthetic_sets, 16, lr=0.01, lr_scaling=rule, accumulate=2)
    assert row["lr"] == pytest.approx(expected)


def test_same_conditions_give_the_same_run(synthetic_sets, isolated):
    """Fresh model from the same initial weights and the same data order: identical losses and accuracy."""
    a, b = _train(synthetic_sets, 8), _train(synthetic_sets, 8)
    assert a["final_train_loss"] == b["final_train_loss"] and a["test_accuracy"] == b["test_accuracy"]


def test_periodic_evaluation_and_time_to_target(synthetic_sets, isolated):
    """The test set is evaluated between steps; its (here artificially slow) time stays out of every timing."""
    s = _settings(samples=480, eval_every=96, target_accuracy=0.5, lr=0.05)
    engine = MinigradEngine("numpy")
    real_evaluate = engine.evaluate

    def slow_evaluate(model, loader):
        time.sleep(0.3)
        return real_evaluate(model, loader)

    engine.evaluate = slow_evaluate
    row = measure.measure_train(engine, s, 8, *synthetic_sets, _init(s), False)
    evals = row["evaluations"]
    assert [e["samples"] for e in evals] == [96, 192, 288, 384, 480]  # four between steps, one at the end
    assert [e["updates"] for e in evals] == [12, 24, 36, 48, 60]
    assert all(e["eval_seconds"] >= 0.3 for e in evals[:-1])
    assert row["step_max_s"] < 0.3 and row["train_seconds"] < 4 * 0.3
    times = [e["train_seconds"] for e in evals]
    assert times == sorted(times) and times[-1] <= row["train_seconds"]
    assert row["target_reached"] is True
    first = next(e for e in evals if e["test_accuracy"] >= 0.5)
    assert row["time_to_target_s"] == first["train_seconds"] and row["updates_to_target"] == first["updates"]
    assert row["samples_to_target"] == first["samples"]


def test_default_eval_every_is_a_thirtieth_of_the_budget(synthetic_sets, isolated):
    row = _train(synthetic_sets, 16, samples=480, target_accuracy=0.99)
    assert row["eval_every_samples"] == 480 // 30 == 16 and len(row["evaluations"]) == 30


def test_without_a_target_there_are_no_evaluations(synthetic_sets, isolated):
    row = _train(synthetic_sets, 16)
    assert row["evaluations"] == [] and row["target_reached"] is None and row["eval_every_samples"] is None


def test_epochs_measure_the_epoch_time(synthetic_sets, isolated):
    row = _train(synthetic_sets, 100, samples=None, epochs=2)
    assert row["epoch_measured"] is True and row["epochs_run"] == 2 and row["samples"] == 1200
    assert row["epoch_seconds"] == pytest.approx(row["train_seconds"] / 2)


def test_inference_latency_and_throughput(synthetic_sets, isolated):
    s = _settings(mode="inference", samples=64)
    row = measure.measure_inference(MinigradEngine("numpy"), s, 16, synthetic_sets[1], _init(s), False)
    assert row["steps"] == 4 and row["samples"] == 64 and row["updates"] is None
    assert 0 < row["latency_median_s"] <= row["step_median_s"]
    assert row["steady_samples_per_s"] == pytest.approx(16 / row["step_median_s"])
    assert row["peak_memory_bytes"] is not None and row["warmup_steps"] == 3


def test_memory_grows_with_the_batch(synthetic_sets, isolated):
    small, large = _train(synthetic_sets, 4, samples=16), _train(synthetic_sets, 256, samples=256)
    assert large["tracemalloc_peak_bytes"] > small["tracemalloc_peak_bytes"]
    assert large["peak_memory_bytes"] > small["peak_memory_bytes"]


def test_step_statistics_leave_out_the_first_steps():
    seconds = np.array([9.0, 9.0] + [1.0, 2.0, 3.0, 4.0, 5.0] * 2)
    stats = measure.step_statistics(seconds)
    assert stats["step_skipped"] == 2 and stats["step_count"] == 10
    assert stats["step_median_s"] == 3.0 and stats["step_max_s"] == 5.0
    assert stats["step_iqr_s"] == stats["step_q3_s"] - stats["step_q1_s"] == 2.0
    assert measure.step_statistics(np.array([1.0, 2.0]), prefix="latency")["latency_skipped"] == 0
