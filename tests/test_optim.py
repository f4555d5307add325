import numpy as np
import pytest

import minigrad as mg
from minigrad import optim


def quadratic_steps(opt_factory, steps=200):
    """Minimise |p - 3|^2 from 0; returns the final parameter."""
    p = mg.nn.Parameter(np.zeros(4))
    opt = opt_factory([p])
    for _ in range(steps):
        ((p - 3.0) * (p - 3.0)).sum().backward()
        opt.step()
        opt.zero_grad()
    return p.numpy()


@pytest.mark.parametrize("factory", [
    lambda ps: optim.SGD(ps, lr=0.1),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    lambda ps: optim.Adam(ps, lr=0.1),
], ids=["sgd", "momentum", "nesterov", "adam"])
def test_optimizers_minimise_a_quadratic(backend, factory):
    np.testing.assert_allclose(quadratic_steps(factory), 3.0, atol=1e-2)


def test_sgd_step_is_exactly_lr_times_grad():
    p = mg.nn.Parameter(np.array([1.0, 2.0]))
    p.grad = mg.backend.k.asarray(np.array([0.5, -1.0]))
    optim.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.numpy(), [0.95, 2.1])


def test_zero_grad_and_params_without_grad_are_skipped():
    a, b = mg.nn.Parameter(np.ones(2)), mg.nn.Parameter(np.ones(2))
    a.grad = mg.backend.k.asarray(np.ones(2))
    opt = optim.SGD([a, b], lr=1.0, momentum=0.9)
    opt.step()
    np.testing.assert_allclose(b.numpy(), 1.0)
    opt.zero_grad()
    assert a.grad is None


def test_optimizer_argument_errors():
    p = [mg.nn.Parameter(np.ones(2))]
    with pytest.raises(ValueError, match="lr must be a positive number; got 0"):
        optim.SGD(p, lr=0)
    with pytest.raises(ValueError, match="params is empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="nesterov requires momentum"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas must lie in"):
        optim.Adam(p, betas=(0.9, 1.0))


def test_lr_scaling_rules():
    assert optim.scale_lr(0.1, 256, 64, "linear") == pytest.approx(0.4)
    assert optim.scale_lr(0.1, 256, 64, "sqrt") == pytest.approx(0.2)
    assert optim.scale_lr(0.1, 256, 64, "none") == 0.1
    with pytest.raises(ValueError, match="rule must be"):
        optim.scale_lr(0.1, 256, 64, "cubic")


def test_linear_warmup_ramps_then_holds():
    opt = optim.SGD([mg.nn.Parameter(np.ones(1))], lr=0.4)
    warm = optim.LinearWarmup(opt, 4)
    lrs = []
    for _ in range(6):
        warm.step()
        lrs.append(opt.lr)
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
