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
                            mg.optim.SGD(model.parameters(), lr=0.05), steps=10, micro_batches=4)
    assert est.updates == 10 and est.b_small == 8 and est.b_big == 32
    assert np.isfinite(est.b_simple) and est.to_dict()["b_simple"] == est.b_simple


def test_bad_arguments():
    with pytest.raises(ValueError, match="1 <= b_small < b_big"):
        noise_scale.NoiseScale(8, 8)
    with pytest.raises(ValueError, match="split into micro_batches"):
        noise_scale.gradient_norms(mg.models.mlp(), np.zeros((5, 1, 28, 28), np.float32), np.zeros(5, int), 2)
