"""Float64 finite-difference gradcheck of every op (on every fast backend), and shape/argument errors."""

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F

from .gradcheck import gradcheck, relative_error

TOL = 1e-6


def away_from_kinks(a, margin=1e-2):
    """Move values off 0 (relu's kink) so central differences never straddle it."""
    a = np.array(a)
    a[np.abs(a) < margin] += 2 * margin
    return a


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (1, 2), (3, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_gradcheck(backend, rng, stride, padding, bias):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    if bias:
        err = gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride, padding), x, w, rng.standard_normal(4))
    else:
        err = gradcheck(lambda x, w: F.conv2d(x, w, None, stride, padding), x, w)
    assert err < TOL


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (2, 1)])
def test_max_pool2d_gradcheck(backend, rng, kernel, stride):
    # distinct values spaced well apart so a +-eps nudge never changes which element is the max
    x = rng.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) * 0.1
    assert gradcheck(lambda x: F.max_pool2d(x, kernel, stride), x) < TOL


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (2, 1)])
def test_relu_max_pool2d_gradcheck(backend, rng, kernel, stride):
    # distinct values spaced apart, half of them negative: windows whose maximum is negative pass no gradient
    x = (rng.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) - 2 * 3 * 7 * 7 / 2 + 0.5) * 0.1
    assert gradcheck(lambda x: F.relu_max_pool2d(x, kernel, stride), x) < TOL


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(backend, rng, bias):
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((3, 7)), rng.standard_normal(3)
    if bias:
        assert gradcheck(F.linear, x, w, b) < TOL
    else:
        assert gradcheck(lambda x, w: F.linear(x, w), x, w) < TOL


def test_relu_gradcheck(backend, rng):
    assert gradcheck(F.relu, away_from_kinks(rng.standard_normal((3, 4, 5)))) < TOL


def test_flatten_gradcheck(backend, rng):
    assert gradcheck(F.flatten, rng.standard_normal((2, 3, 4, 5))) < TOL


def test_log_softmax_gradcheck(backend, rng):
    assert gradcheck(F.log_softmax, rng.standard_normal((4, 10)) * 3) < TOL


def test_cross_entropy_gradcheck(backend, rng):
    t = mg.backend.k.asarray(rng.integers(0, 10, size=6))
    assert gradcheck(lambda z: F.cross_entropy(z, t), rng.standard_normal((6, 10)) * 3) < TOL


def test_dropout_gradcheck_with_a_fixed_seed(backend, rng):
    assert gradcheck(lambda x: F.dropout(x, 0.4, training=True, seed=11), rng.standard_normal((4, 5, 6))) < TOL


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm2d_gradcheck(backend, rng, training):
    C = 3
    rm, rv = mg.backend.k.zeros((C,), "float64"), mg.backend.k.asarray(np.ones(C))

    def op(x, g, b):
        # running stats are updated in place when training; the check only needs them to not feed back into y
        return F.batch_norm2d(x, rm, rv, g, b, training=training)

    x = rng.standard_normal((4, C, 3, 3)) * 2 + 1
    assert gradcheck(op, x, rng.standard_normal(C), rng.standard_normal(C)) < TOL


def test_tensor_arithmetic_gradcheck(backend, rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert gradcheck(lambda a, b: (a * b - a + 2.0 * b) / 3.0, a, b) < TOL
    assert gradcheck(lambda a: a.reshape(4, 3).sum() + a.mean(), a) < TOL


def test_whole_lenet5_loss_gradcheck(backend):
    """Float64 gradient of lenet5's loss w.r.t. the input and every parameter tensor (25 sampled coordinates
    each, central differences), and a directional derivative through all parameters at once."""
    mg.manual_seed(3)
    model = mg.models.lenet5(dtype="float64")
    params = model.parameters()
    rng = np.random.default_rng(5)
    x = rng.random((3, 1, 28, 28))
    t = mg.backend.k.asarray(rng.integers(0, 10, size=3))
    eps = 1e-6

    def loss_at(x_arr):
        with mg.no_grad():
            return F.cross_entropy(model(mg.Tensor(x_arr)), t).item()

    xt = mg.Tensor(x, requires_grad=True)
    F.cross_entropy(model(xt), t).backward()

    coords = rng.choice(x.size, 25, replace=False)
    num = []
    for c in coords:
        xp, xm = x.copy(), x.copy()
        xp.flat[c] += eps
        xm.flat[c] -= eps
        num.append((loss_at(xp) - loss_at(xm)) / (2 * eps))
    assert relative_error(mg.backend.k.to_numpy(xt.grad).flat[coords],
                          num) < TOL

    for p in params:
        base = p.numpy().copy()
        analytic = mg.backend.k.to_numpy(p.grad).reshape(-1)
        coords = rng.choice(base.size, min(25, base.size), replace=False)
        num = []
        for c in coords:
            vals = []
            for sign in (1, -1):
                arr = base.copy()
                arr.flat[c] += sign * eps
                p.data = mg.backend.k.asarray(arr)
                vals.append(loss_at(x))
            num.append((vals[0] - vals[1]) / (2 * eps))
        p.data = mg.backend.k.asarray(base)
        assert relative_error(analytic[coords], num) < TOL

    direction = [rng.standard_normal(p.shape) for p in params]
    bases = [p.numpy().copy() for p in params]
    vals = []
    for sign in (1, -1):
        for p, b, d in zip(params, bases, direction):
            p.data = mg.backend.k.asarray(b + sign * eps * d)
        vals.append(loss_at(x))
    for p, b in zip(params, bases):
        p.data = mg.backend.k.asarray(b)
    numeric = (vals[0] - vals[1]) / (2 * eps)
    analytic = sum(float((mg.backend.k.to_numpy(p.grad) * d).sum()) for p, d in zip(params, direction))
    assert relative_error([analytic], [numeric]) < TOL


# -- errors from the functional layer --------------------------------------------------------------------------

def test_functional_errors_name_the_argument():
    x = mg.Tensor(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="kernel_size must be an int or a square pair"):
        F.max_pool2d(x, (2, 3))
    with pytest.raises(ValueError, match="dropout: p must lie in"):
        F.dropout(x, 1.5)
    with pytest.raises(ValueError, match="only dim=1"):
        F.log_softmax(mg.Tensor(np.zeros((2, 3), np.float32)), dim=0)
    with pytest.raises(ValueError, match="targets has 2 entries but logits has a batch of 3"):
        F.cross_entropy(mg.Tensor(np.zeros((3, 10), np.float32)), np.array([1, 2]))


def test_dropout_is_identity_in_eval_and_reproducible_with_manual_seed():
    x = mg.Tensor(np.ones((100,), np.float32))
    assert F.dropout(x, 0.5, training=False) is x
    mg.manual_seed(1)
    a = F.dropout(x, 0.5).numpy()
    mg.manual_seed(1)
    b = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["reference", "numpy", "numba", "cupy"])
def test_cross_entropy_on_an_empty_batch_is_the_same_error_everywhere(name):
    """Backends once disagreed (ZeroDivisionError on numba and reference, NaN with warnings on numpy)."""
    reason = mg.backend.unavailable_reason(name)
    if reason:
        pytest.skip(reason)
    with mg.use_backend(name):
        logits = mg.Tensor(np.zeros((0, 10), np.float32), requires_grad=True)
        for targets in (np.zeros(0, np.int64), mg.Tensor(np.zeros(0, np.int64)), []):
            with pytest.raises(ValueError, match=r"cross_entropy: logits must have at least one row \(a batch of "
                                                 r"0 samples has no mean loss\); got shape \(0, 10\)"):
                F.cross_entropy(logits, targets)


def test_a_layer_whose_input_needs_no_gradient_asks_its_kernel_for_none():
    """conv2d and linear pass need_dx = whether their input needs a gradient, so a first layer skips dx."""
    from minigrad import backend
    from minigrad.tensor import Tensor

    seen = []

    def record(name, fn):
        def call(*args):
            if name.endswith("_backward") and name.startswith(("conv2d", "linear")):
                seen.append((name, args[2]))
            return fn(*args)
        return call

    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), requires_grad=True)
    v = Tensor(rng.standard_normal((3, 2 * 4 * 4)).astype(np.float32), requires_grad=True)
    for x_needs in (False, True):
        x = Tensor(rng.standard_normal((2, 1, 6, 6)).astype(np.float32), requires_grad=x_needs)
        backend.set_kernel_hook(record)
        try:
            h = F.conv2d(x, w)
            loss = F.cross_entropy(F.linear(F.flatten(h), v), np.array([0, 1]))
            loss.backward()
        finally:
            backend.set_kernel_hook(None)
        assert (x.grad is not None) == x_needs
    assert seen == [("linear_backward", True), ("conv2d_backward", False),
                    ("linear_backward", True), ("conv2d_backward", True)]
