import re

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
    with pytest.raises(ValueError, match="lr must be a finite number > 0; got 0"):
        optim.SGD(p, lr=0)
    with pytest.raises(ValueError, match="nesterov requires momentum"):
        optim.SGD(p, lr=0.1, nesterov=True)


def test_lr_scaling_rules():
    assert optim.scale_lr(0.1, 256, 64, "linear") == pytest.approx(0.4)
    assert optim.scale_lr(0.1, 256, 64, "sqrt") == pytest.approx(0.2)
    assert optim.scale_lr(0.1, 256, 64, "none") == 0.1
    assert optim.scale_lr(0.1, 16, 64, "linear-sqrt") == pytest.approx(0.025)
    assert optim.scale_lr(0.1, 256, 64, "linear-sqrt") == pytest.approx(0.2)
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


@pytest.mark.parametrize("opt", [optim.SGD, optim.Adam])
def test_an_empty_parameter_list_is_refused(opt):
    name = opt.__name__
    for empty in ([], (), iter([])):
        with pytest.raises(ValueError, match=rf"^{name}: optimizer got an empty parameter list \(params is empty\)$"):
            opt(empty, lr=0.1)


@pytest.mark.parametrize("opt", [optim.SGD, optim.Adam])
def test_params_that_are_not_trainable_tensors_are_refused_at_construction(opt):
    name, good = opt.__name__, mg.nn.Parameter(np.ones(3))
    with pytest.raises(TypeError, match=rf"^{name}: params\[1\] must be a Tensor that requires grad \(an "
                                        rf"nn.Parameter\); got numpy.ndarray$"):
        opt([good, np.zeros(3, np.float32)], lr=0.1)
    with pytest.raises(TypeError, match=rf"{name}: params\[0\] must be a Tensor .*; got builtins.float$"):
        opt([1.0], lr=0.1)
    with pytest.raises(ValueError, match=rf"^{name}: params\[0\] is a Tensor with requires_grad=False"):
        opt([mg.Tensor(np.ones(3))], lr=0.1)
    with pytest.raises(ValueError, match=rf"^{name}: params\[1\] is not a leaf"):
        opt([good, good * 2.0], lr=0.1)
    with pytest.raises(TypeError, match=rf"^{name}: params must be an iterable of Tensors .*got a single Parameter$"):
        opt(good, lr=0.1)
    opt([mg.Tensor(np.ones(3), requires_grad=True)], lr=0.1)  # a leaf that requires grad is enough


NOT_FINITE = [float("nan"), float("inf"), -float("inf"), np.float32("nan")]


@pytest.mark.parametrize("bad", NOT_FINITE, ids=repr)
@pytest.mark.parametrize("make,name", [pytest.param(m, n, id=i) for m, n, i in [
    (lambda ps, v: optim.SGD(ps, lr=v), "SGD: lr", "SGD.lr"),
    (lambda ps, v: optim.SGD(ps, lr=0.1, momentum=v), "SGD: momentum", "SGD.momentum"),
    (lambda ps, v: optim.SGD(ps, lr=0.1, weight_decay=v), "SGD: weight_decay", "SGD.weight_decay"),
    (lambda ps, v: optim.Adam(ps, lr=v), "Adam: lr", "Adam.lr"),
    (lambda ps, v: optim.Adam(ps, betas=(v, 0.999)), r"Adam: betas\[0\]", "Adam.beta1"),
    (lambda ps, v: optim.Adam(ps, betas=(0.9, v)), r"Adam: betas\[1\]", "Adam.beta2"),
    (lambda ps, v: optim.Adam(ps, eps=v), "Adam: eps", "Adam.eps"),
    (lambda ps, v: optim.Adam(ps, weight_decay=v), "Adam: weight_decay", "Adam.weight_decay"),
]])
def test_non_finite_hyper_parameters_are_refused_naming_the_argument(make, name, bad):
    """Once accepted: SGD(momentum=nan) or SGD(weight_decay=nan) made every parameter NaN after one step."""
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number .*; got {re.escape(repr(bad))}$"):
        make([mg.nn.Parameter(np.ones(2))], bad)


@pytest.mark.parametrize("opt", [optim.SGD, optim.Adam])
def test_sgd_and_adam_share_the_rules_for_what_they_share(opt):
    """lr and weight_decay mean the same in both, so both refuse the same values with the same words."""
    p, name = [mg.nn.Parameter(np.ones(2))], opt.__name__
    for bad in (-1.0, -1e-12):
        with pytest.raises(ValueError, match=rf"^{name}: weight_decay must be a finite number >= 0; got {bad!r}$"):
            opt(p, lr=0.1, weight_decay=bad)
    for bad in (0, -0.1, True, "0.1", None):
        with pytest.raises(ValueError, match=rf"^{name}: lr must be a finite number > 0; got {re.escape(repr(bad))}$"):
            opt(p, lr=bad)
    opt(p, lr=0.1, weight_decay=0.0)
    opt(p, lr=0.1, weight_decay=5e-4)


def test_the_rest_of_the_hyper_parameter_rules():
    p = [mg.nn.Parameter(np.ones(2))]
    with pytest.raises(ValueError, match=r"^SGD: momentum must be a finite number >= 0; got -0.5$"):
        optim.SGD(p, lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match=r"^Adam: eps must be a finite number > 0; got -1.0$"):
        optim.Adam(p, eps=-1.0)
    with pytest.raises(ValueError, match=r"^Adam: eps must be a finite number > 0; got 0.0$"):
        optim.Adam(p, eps=0.0)  # 0/0 = NaN for a coordinate whose gradient has been exactly 0
    with pytest.raises(ValueError, match=r"^Adam: betas\[1\] must be a finite number in \[0, 1\); got 1.0$"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"^Adam: betas\[0\] must be a finite number in \[0, 1\); got -0.1$"):
        optim.Adam(p, betas=(-0.1, 0.999))
    for bad in ((0.9,), (0.9, 0.99, 0.999), 0.9, "ab"):
        with pytest.raises(ValueError, match=r"^Adam: betas must be a pair \(beta1, beta2\)"):
            optim.Adam(p, betas=bad)
    opt = optim.Adam(p, betas=[0.0, 0.5], eps=1e-6, weight_decay=1e-4)
    assert (opt.beta1, opt.beta2, opt.eps, opt.weight_decay) == (0.0, 0.5, 1e-6, 1e-4)
    sgd = optim.SGD(p, lr=np.float32(0.5), momentum=np.float64(0.9))
    assert type(sgd.lr) is float and type(sgd.momentum) is float


def test_one_step_with_valid_hyper_parameters_stays_finite(backend):
    p = mg.nn.Parameter(np.ones(3, np.float32))
    for opt in (optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-4),
                optim.Adam([p], lr=0.1, weight_decay=1e-4)):
        p.grad = mg.backend.k.asarray(np.full(3, 0.5, np.float32))
        opt.step()
        assert np.isfinite(p.numpy()).all()
