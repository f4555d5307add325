import json

import numpy as np
import pytest

from minigrad.profiling import plateau

BS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def test_recovers_a_known_fixed_and_per_sample_cost():
    t_fixed, t_sample, N = 1e-3, 2e-5, 60000
    m = plateau.fit(BS, [t_fixed + b * t_sample for b in BS], N)
    assert m.t_fixed == pytest.approx(t_fixed, rel=1e-9) and m.t_sample == pytest.approx(t_sample, rel=1e-9)
    assert m.predict_epoch_seconds(32) == pytest.approx(N / 32 * t_fixed + N * t_sample)
    # fixed part under 10% of the step: t_fixed / (t_fixed + B t_sample) < 0.1  <=>  B > 9 t_fixed / t_sample = 450
    assert m.batch_where_fixed_below(0.10) == 451
    assert m.batch_where_fixed_below(0.05) == 951   # B > 19 t_fixed / t_sample = 950
    assert m.to_dict()["plateau_batch_10pct"] == 451


def test_the_1200_to_850_second_report_has_this_shape():
    """The classic report (5 epochs: 1200 s at B=1, 940 at 4, 890 at 8, ~850 at 16+) is a fixed cost of ~1.2 ms
    per step over a per-sample cost of ~2.8 ms: the model reproduces it within a few percent."""
    N = 5 * 60000
    measured = {1: 1200, 4: 940, 8: 890, 16: 850, 32: 850, 256: 850}
    steps = [measured[b] / (N / b) for b in measured]
    m = plateau.fit(list(measured), steps, N)
    for b, seconds in measured.items():
        assert m.predict_epoch_seconds(b) == pytest.approx(seconds, rel=0.05)
    assert 2e-4 < m.t_fixed < 2e-3


def test_predicts_held_out_batch_sizes_when_per_sample_cost_varies():
    # per-sample cost falls as BLAS gets bigger matrices, then rises past a cache cliff at 128
    t_s = {1: 4e-5, 2: 3.5e-5, 4: 3e-5, 8: 2.6e-5, 16: 2.3e-5, 32: 2.1e-5, 64: 2.0e-5, 128: 2.2e-5, 256: 2.6e-5}
    steps = {b: 5e-4 + b * t for b, t in t_s.items()}
    fit_on = [1, 4, 16, 64, 256]
    m = plateau.fit(fit_on, [steps[b] for b in fit_on], 60000)
    for b in (2, 8, 32, 128):
        assert m.predict_step_seconds(b) == pytest.approx(steps[b], rel=0.10)
    for b in fit_on:  # measured points are reproduced exactly
        assert m.predict_step_seconds(b) == pytest.approx(steps[b], rel=1e-9)


def test_no_fixed_cost_and_noise():
    rng = np.random.default_rng(0)
    m = plateau.fit(BS, [b * 1e-5 * (1 + 0.01 * rng.standard_normal()) for b in BS], 1000)
    assert m.t_fixed == pytest.approx(0.0, abs=2e-6) and m.t_sample == pytest.approx(1e-5, rel=0.05)


def test_round_trip_through_explain_json(tmp_path):
    m = plateau.fit(BS, [1e-3 + b * 1e-5 for b in BS], 60000)
    path = tmp_path / "explain.json"
    path.write_text(json.dumps({"headline": "...", "plateau": m.to_dict()}))
    back = plateau.load(path)
    assert back.predict_epoch_seconds(100) == pytest.approx(m.predict_epoch_seconds(100))


@pytest.mark.parametrize("args,msg", [(([1, 1], [1.0, 2.0], 10), "two or more distinct"),
                                      (([1, 2], [1.0], 10), "same length"),
                                      (([1, 2], [1.0, -1.0], 10), "positive and finite"),
                                      (([1, 2], [1.0, 2.0], 0), "n_samples must be a positive")])
def test_bad_input(args, msg):
    with pytest.raises(ValueError, match=msg):
        plateau.fit(*args)
