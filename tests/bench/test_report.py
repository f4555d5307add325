"""The report's findings: powers of two put to the test against their neighbours."""

import pytest

from minigrad.bench import report
from minigrad.bench.settings import Settings


def _row(b, step, iqr, **kw):
    return {"record": "result", "backend": "numpy", "mode": "inference", "batch_size": b, "status": "ok",
            "step_median_s": step, "step_iqr_s": iqr, "samples_per_s": b / step, "latency_median_s": step,
            "epoch_measured": False, "data_median_s": 0.0, **kw}


def test_neighbours_say_whether_a_power_of_two_is_beyond_the_noise():
    rows = [_row(15, 15.0, 0.15), _row(16, 16.0, 0.16), _row(17, 18.7, 0.187), _row(32, 32.0, 0.3)]
    found = report.neighbours(rows)
    assert [(n["smaller"], n["larger"]) for n in found] == [(15, 16), (16, 17)]
    assert found[0]["per_sample_change"] == pytest.approx(0.0) and not found[0]["beyond_noise"]
    assert found[1]["per_sample_change"] == pytest.approx(18.7 / 17 / 1.0 - 1) and found[1]["beyond_noise"]
    assert found[1]["noise"] == pytest.approx(0.01)


def test_the_findings_state_the_neighbours_measured_difference():
    settings = Settings(model="mlp", backends=("numpy",), batch_sizes=(16, 17), mode="inference", threads=1)
    records = [{"record": "run", "settings": settings.to_dict(), "data": {}, "session": 0},
               _row(16, 16.0, 0.16), _row(17, 17.0, 0.17)]
    results = report.Results(records)
    text = report.findings_text(results)
    assert ("numpy: B=17 against B=16: 0.0% less time per sample (noise ±1.0%), within the noise: the power of "
            "two buys nothing measurable here.") in text
    assert not any("--backend numpy" in n for n in report._notes(results))  # numpy is in this study


def test_a_study_without_numpy_says_which_flag_shows_the_classic_plateau():
    settings = Settings(model="mlp", backends=("numba",), batch_sizes=(16,), mode="inference", threads=1)
    records = [{"record": "run", "settings": settings.to_dict(), "data": {}, "session": 0}]
    assert any("classic NumPy plateau" in n and "--backend numpy" in n for n in report._notes(report.Results(records)))


def test_inference_explains_samples_per_s_against_the_latency():
    row = _row(1, 410e-6, 1e-6, latency_median_s=115e-6, data_median_s=200e-6)
    row["samples_per_s"] = 1 / 410e-6
    text = report.inference_split("numpy", row)
    assert text.startswith("numpy: at B=1 a sample takes 410.0 µs by samples/s (2,439/s) and 115.0 µs by the latency")
    assert "waiting for the loader, 200.0 µs, and the loop around them, 95.0 µs" in text


def test_inference_columns_are_the_rows_numbers_with_one_definition_each(synthetic_sets, isolated):
    """On real (synthetic-data) inference runs: us/sample is the forward latency over B, samples/s the whole loop's
    rate, and the split sentence states both with the same numbers."""
    from minigrad import models, rng
    from minigrad.bench.engines import MinigradEngine
    from minigrad.bench.measure import measure_inference

    settings = Settings(model="mlp", backends=("numpy",), batch_sizes=(1, 8), mode="inference", samples=64,
                        threads=1, dataset="synthetic")
    rng.manual_seed(0)
    init = models.get_model("mlp").state_dict()
    rows = [{"record": "result", **measure_inference(MinigradEngine("numpy"), settings, b, synthetic_sets[1], init,
                                                     False)} for b in (1, 8)]
    study = report.Results([{"record": "run", "settings": settings.to_dict(), "data": {}, "session": 0}, *rows])
    heads = [h for h, _ in report._columns(study)]
    for row in rows:
        cells = dict(zip(heads, report._cells(study, row), strict=True))
        b = row["batch_size"]
        assert row["samples"] == 64 and row["samples_per_s"] == pytest.approx(64 / row["train_seconds"])
        assert cells["us/sample"] == f"{1e6 * row['latency_median_s'] / b:.1f}"
        assert cells["samples/s"] == f"{row['samples_per_s']:,.0f}"
        assert cells["latency ms"] == f"{1e3 * row['latency_median_s']:.3f}"
        assert row["latency_median_s"] <= row["step_median_s"]  # the forward alone is part of the step
        split = report.inference_split("numpy", row)
        assert f"{1e6 / row['samples_per_s']:,.1f} µs by samples/s" in split
        assert f"{cells['us/sample']} µs by the latency" in split


def test_an_auto_study_reports_the_probes_knee_never_a_batch_the_auto_step_rejected():
    settings = Settings(model="mlp", backends=("numpy",), batch_sizes="auto", mode="train", threads=1)
    auto = {"record": "autobatch", "backend": "numpy", "knee_pick": 64, "best_throughput_batch": 128,
            "throughput_probe": [{"batch_size": b, "samples_per_s": s} for b, s in ((32, 500.0), (64, 950.0),
                                                                                   (128, 1000.0))],
            "memory_explanation": "m", "knee_explanation": "k"}
    rows = [_row(64, 0.064, 0.001, mode="train"), _row(5000, 2.5, 0.01, mode="train")]  # 2,000/s at the memory pick
    for r in rows:
        r.update(epoch_seconds=1.0, test_accuracy=0.9, updates=10, final_train_loss=0.1)
    study = report.Results([{"record": "run", "settings": settings.to_dict(), "data": {}, "session": 0}, auto, *rows])
    found = report.findings(study)["numpy"]
    assert found["knee_batch"] == 64 and found["best_throughput_batch"] == 128 and found["best_samples_per_s"] == 1000
    assert any("is B=64." in line and "in the auto probe" in line for line in report.findings_text(study))


def test_the_regimes_measured_per_doubling_and_predicted_by_b_simple():
    rows = [{"batch_size": b, "updates_to_target": u, "samples_to_target": b * u, "eval_every_samples": 100}
            for b, u in ((1, 4000), (2, 2000), (4, 1400), (16, 1300), (32, 1250))]
    found = report.scaling(rows)
    assert [(p["smaller"], p["larger"], p["regime"]) for p in found] == [
        (1, 2, "perfect scaling"), (2, 4, "diminishing returns"), (4, 16, "no further benefit"),
        (16, 32, "no further benefit")]
    assert found[2]["updates_share_per_doubling"] == pytest.approx((1300 / 1400) ** 0.5)
    bounded = report.scaling([{**rows[0], "samples_to_target": 100}, rows[1]])  # met at the first evaluation
    assert bounded[0]["bounded"] and bounded[0]["regime"] is None
    # McCandlish et al.'s model puts the borders at B_simple/4 and 4 B_simple
    assert [report.predicted_regime(b, 100) for b in (25, 26, 399, 400)] == [
        "perfect scaling", "diminishing returns", "diminishing returns", "no further benefit"]
