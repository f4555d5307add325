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
