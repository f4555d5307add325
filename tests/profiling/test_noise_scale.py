import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad.profiling import noise_scale


def test_b_simple_recovers_a_known_gradient_mean_and_covariance():
    """Per-sample gradients g_i ~ N(G, Sigma): B_simple must come out as tr(Sigma) / |G|^2."""
    rng = np.random.default_rng(0)
    d = 50
    G = rng.standard_normal(d) * 0.5
    sigma_diag = rng.uniform(0.5, 2.0, d)
    truth = sigma_diag.sum() / (G @ G)
    est = noise_scale.NoiseScale(b_small=8, b_big=64, ema=0.99)
    for _ in range(2000):
        g = G + rng.standard_normal((64, d)) * np.sqrt(sigma_diag)
        small = g.reshape(8, 8, d).mean(axis=1)
        est.update(float((small * small).sum(axis=1).mean()), float(g.mean(axis=0) @ g.mean(axis=0)))
    assert est.b_simple == pytest.approx(truth, rel=0.1)
    assert est.g2 == pytest.approx(G @ G, rel=0.1) and est.trace == pytest.approx(sigma_diag.sum(), rel=0.1)


def test_identical_micro_batches_have_no_noise_and_leave_the_mean_gradient():
    mg.manual_seed(0)
    model = mg.models.mlp(dtype="float64")
    rng = np.random.default_rng(1)
    half_x, half_y = rng.random((4, 1, 28, 28)), rng.integers(0, 10, 4)
    x, y = np.concatenate([half_x, half_x]), np.concatenate([half_y, half_y])
    small_sq, big_sq = noise_scale.gradient_norms(model, x, y, micro_batches=2)
    assert small_sq == pytest.approx(big_sq, rel=1e-12)
    left = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    F.cross_entropy(model(mg.Tensor(x)), y).backward()
    for a, p in zip(left, model.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-10, atol=1e-14)


def test_track_trains_and_estimates():
    train_set, _ = mg.data.synthetic_mnist(n_train=256, n_test=8)
    mg.manual_seed(0)
    model = mg.models.mlp()
    est = noise_scale.track(model, mg.data.DataLoader(train_set, 32, shuffle=True, seed=0),
                            mg.optim.SGD(model.parameters(), lr=0.05), steps=10, micro_batches=4,
                            allow_few_steps=True)
    assert est.updates == 10 and est.b_small == 8 and est.b_big == 32
    assert np.isfinite(est.b_simple) and est.to_dict()["b_simple"] == est.b_simple
    assert len(est.g2_samples) == len(est.trace_samples) == 10
    iv = est.interval()
    assert iv.samples == 5 and iv.low <= est.b_simple <= iv.high


def test_track_refuses_few_steps_unless_allowed():
    train_set, _ = mg.data.synthetic_mnist(n_train=64, n_test=8)
    model = mg.models.mlp()

    def run(**kw):
        return noise_scale.track(model, mg.data.DataLoader(train_set, 16, shuffle=True, seed=0),
                                 mg.optim.SGD(model.parameters(), lr=0.05), steps=5, **kw)

    with pytest.raises(ValueError, match=f"steps=5 is below MIN_STEPS={noise_scale.MIN_STEPS}.*allow_few_steps"):
        run()
    est = run(allow_few_steps=True)
    d = est.to_dict()
    assert est.updates == 5 and not est.reliable and d["reliable"] is False
    assert f"only 5 steps: at least {noise_scale.MIN_STEPS} needed" in d["why"]
    assert est.summary().startswith("B_simple ≈ ") and "5 steps" in est.summary()
    assert f"not reliable: only 5 steps: at least {noise_scale.MIN_STEPS} needed" in est.summary()


def test_track_rejects_a_loader_without_a_full_batch():
    train_set, _ = mg.data.synthetic_mnist(n_train=8, n_test=8)
    model = mg.models.mlp()
    with pytest.raises(ValueError, match="no full batch of 16"):
        noise_scale.track(model, mg.data.DataLoader(train_set, 16), mg.optim.SGD(model.parameters(), lr=0.05),
                          steps=3, allow_few_steps=True)


def _stream(ratio: float, steps: int, seed: int, noise: float = 0.5, b_small: int = 8, b_big: int = 64):
    """An estimator fed per-step |G|^2 and tr(Sigma) estimates with means 1 and ``ratio`` and relative noise
    ``noise`` (through the squared norms they imply: E|G_B|^2 = |G|^2 + tr(Sigma)/B)."""
    rng = np.random.default_rng(seed)
    est = noise_scale.NoiseScale(b_small, b_big)
    for g2, tr in zip(1.0 + noise * rng.standard_normal(steps), ratio * (1.0 + noise * rng.standard_normal(steps))):
        est.update(g2 + tr / b_small, g2 + tr / b_big)
    return est


def test_the_per_step_estimates_are_the_unsmoothed_ones():
    est = noise_scale.NoiseScale(8, 64, ema=0.5)
    est.update(1.0 + 40.0 / 8, 1.0 + 40.0 / 64)
    est.update(3.0 + 80.0 / 8, 3.0 + 80.0 / 64)
    assert est.g2_samples == pytest.approx([1.0, 3.0]) and est.trace_samples == pytest.approx([40.0, 80.0])
    assert est.g2 == pytest.approx(2.0) and est.trace == pytest.approx(60.0)
    assert est.b_simple_ema == pytest.approx(30.0)
    assert est.b_simple == pytest.approx(80.0 / 3.0)  # the second half: step 2 alone


def test_interval_contains_a_known_ratio_and_narrows_with_more_steps():
    widths = []
    for steps in (100, 400, 1600):
        est = _stream(100.0, steps, seed=1)
        iv = est.interval()
        assert iv.samples == steps // 2 and iv.level == 0.8
        assert iv.low <= est.b_simple <= iv.high
        assert iv.low <= 100.0 <= iv.high, (steps, iv)
        widths.append(est.relative_width)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.6 * widths[0]


def test_interval_coverage_is_near_its_level():
    """Over many independent streams the 80% interval holds the true ratio in roughly 80% of them."""
    hits = [(lambda iv: iv.low <= 100.0 <= iv.high)(_stream(100.0, 200, seed=s).interval()) for s in range(100)]
    assert 0.65 <= np.mean(hits) <= 0.95


def test_interval_is_reproducible_with_its_seed():
    a, b = _stream(100.0, 150, seed=3), _stream(100.0, 150, seed=3)
    assert a.interval() == b.interval() and a.to_dict() == b.to_dict() and a.summary() == b.summary()
    assert a.interval(seed=1) == b.interval(seed=1) != a.interval()
    assert a.interval() == noise_scale.ratio_of_means_interval(a.g2_samples[75:], a.trace_samples[75:])


def test_enough_steps_and_a_narrow_interval_are_reliable():
    est = _stream(100.0, noise_scale.MIN_STEPS, seed=0)
    d = est.to_dict()
    assert est.reliable and d["reliable"] is True and d["why"] is None
    assert d["relative_width"] < noise_scale.MAX_RELATIVE_WIDTH
    low, high = round(d["b_simple_low"]), round(d["b_simple_high"])
    assert est.summary() == (f"B_simple ≈ {d['b_simple']:.0f} (80% interval {low}-{high}, "
                             f"{noise_scale.MIN_STEPS} steps)")


def test_a_wide_interval_is_not_reliable_however_many_steps():
    est = _stream(100.0, 2 * noise_scale.MIN_STEPS, seed=0, noise=8.0)
    assert est.updates >= noise_scale.MIN_STEPS and est.relative_width >= noise_scale.MAX_RELATIVE_WIDTH
    assert not est.reliable and est.to_dict()["why"] == "interval wider than the estimate"
    assert est.summary().endswith("; not reliable: interval wider than the estimate")


def test_to_dict_has_the_interval_keys():
    d = _stream(100.0, 40, seed=0).to_dict()
    for key in ("b_simple", "b_simple_low", "b_simple_high", "samples", "relative_width", "reliable", "why",
                "b_simple_ema", "level", "min_steps", "updates", "g2", "trace_sigma"):
        assert key in d, key
    assert d["samples"] == 20 and d["b_simple_low"] <= d["b_simple"] <= d["b_simple_high"]
    assert d["relative_width"] == pytest.approx((d["b_simple_high"] - d["b_simple_low"]) / d["b_simple"])
    assert noise_scale.summarize(d) == _stream(100.0, 40, seed=0).summary()
    empty = noise_scale.NoiseScale(8, 64).to_dict()
    assert empty["b_simple"] is None and empty["reliable"] is False and empty["samples"] == 0
    assert noise_scale.summarize(empty).startswith("B_simple: no estimate (0 steps)")


def test_a_non_positive_gradient_estimate_is_inf_and_unreliable():
    est = noise_scale.NoiseScale(8, 64)
    for _ in range(noise_scale.MIN_STEPS):
        est.update(-0.5 + 10.0 / 8, -0.5 + 10.0 / 64)  # |G|^2 estimate -0.5 every step
    assert est.b_simple == float("inf") and not est.reliable
    assert est.to_dict()["why"] == "the |G|^2 estimate is not positive"
    assert "∞" in est.summary()


def test_bad_arguments():
    with pytest.raises(ValueError, match="1 <= b_small < b_big"):
        noise_scale.NoiseScale(8, 8)
    with pytest.raises(ValueError, match="no update yet"):
        noise_scale.NoiseScale(8, 64).b_simple
    with pytest.raises(ValueError, match="split into micro_batches"):
        noise_scale.gradient_norms(mg.models.mlp(), np.zeros((5, 1, 28, 28), np.float32), np.zeros(5, int), 2)
