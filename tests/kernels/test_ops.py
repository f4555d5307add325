"""Every fast backend equals kernels/reference.py, forward and backward, on a matrix of shapes.

Tolerances: float64 1e-10 relative, float32 1e-5 relative (scaled by the output's magnitude, since a sum of
K float32 products carries ~K ulps of its largest terms).
"""

import numpy as np
import pytest

from minigrad.kernels import reference as ref

TOL = {np.float64: 1e-10, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]


def close(ops, got, want, dtype):
    got = ops.to_numpy(got)
    want = np.asarray(want)
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    tol = TOL[dtype]
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def dev(ops, *arrays):
    return [None if a is None else ops.asarray(a) for a in arrays]


# (N, C, H, W, F, K, stride, padding): batch 1, odd sizes, stride 2/3, padding 1/2, 1x1 kernels, non-square input
CONV_CASES = [
    (1, 1, 5, 5, 1, 3, 1, 0),
    (2, 3, 7, 6, 4, 3, 2, 1),
    (3, 2, 9, 9, 5, 5, 1, 2),
    (2, 1, 8, 8, 3, 2, 2, 0),
    (1, 4, 6, 7, 2, 1, 1, 0),
    (2, 3, 5, 5, 2, 3, 3, 2),
    (1, 2, 11, 9, 3, 4, 2, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "N{}C{}H{}W{}F{}K{}s{}p{}".format(*c))
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_reference(ops, rng, case, dtype, bias):
    N, C, H, W, F, K, s, p = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, K, K)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype) if bias else None
    y_ref, c_ref = ref.conv2d_forward(x, w, b, s, p)
    y, cache = ops.conv2d_forward(*dev(ops, x, w, b), s, p)
    close(ops, y, y_ref, dtype)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    grads_ref = ref.conv2d_backward(dy, c_ref)
    grads = ops.conv2d_backward(ops.asarray(dy), cache)
    for g, g_ref in zip(grads, grads_ref):
        if g_ref is None:
            assert g is None
        else:
            close(ops, g, g_ref, dtype)


POOL_CASES = [(1, 1, 4, 4, 2, 2), (2, 3, 7, 9, 2, 2), (2, 2, 9, 9, 3, 2), (1, 3, 8, 6, 3, 3), (2, 2, 6, 6, 2, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "N{}C{}H{}W{}k{}s{}".format(*c))
def test_maxpool2d_matches_reference(ops, rng, case, dtype):
    N, C, H, W, k, s = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    y_ref, c_ref = ref.maxpool2d_forward(x, k, s)
    y, cache = ops.maxpool2d_forward(ops.asarray(x), k, s)
    close(ops, y, y_ref, dtype)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    close(ops, ops.maxpool2d_backward(ops.asarray(dy), cache), ref.maxpool2d_backward(dy, c_ref), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "N{}C{}H{}W{}k{}s{}".format(*c))
def test_relu_maxpool2d_is_maxpool_of_relu(ops, rng, case, dtype):
    """The fused kernel against its reference, maxpool2d(relu(x)) in a model's order: windows whose maximum
    is negative, zero, tied or NaN, overlapping and not."""
    N, C, H, W, k, s = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    x[0, 0, :k, :k] = -1.0                  # a window with no positive value: its gradient is dropped
    x[-1, -1, :k, :k] = 0.0                 # ties at zero
    x[-1, 0, -k:, -k:] = 2.0                # ties at a positive maximum: the first one takes the gradient
    x[0, -1, 0, -1] = np.nan                # a NaN passes forward and takes no gradient
    y_ref, c_ref = ref.relu_maxpool2d_forward(x, k, s)
    y, cache = ops.relu_maxpool2d_forward(ops.asarray(x), k, s)
    got = ops.to_numpy(y)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(y_ref))
    close(ops, np.nan_to_num(got), np.nan_to_num(y_ref), dtype)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    close(ops, ops.relu_maxpool2d_backward(ops.asarray(dy), cache), ref.relu_maxpool2d_backward(dy, c_ref), dtype)


@pytest.mark.parametrize("stride", [2, 1])
def test_maxpool2d_ties_send_the_gradient_to_the_first_maximum(ops, stride):
    # A constant input ties every window: the whole gradient must land on each window's top-left element.
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    y, cache = ops.maxpool2d_forward(ops.asarray(x), 2, stride)
    dy = np.ones(ops.to_numpy(y).shape, dtype=np.float32)
    dx = ops.to_numpy(ops.maxpool2d_backward(ops.asarray(dy), cache))
    want = np.zeros_like(x)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            want[0, 0, i * stride, j * stride] += 1
    np.testing.assert_array_equal(dx, want)
    # A tie between the 2nd and 4th element of a window: the 2nd (row-major first) wins.
    x = np.array([[[[0.0, 5.0], [1.0, 5.0]]]], dtype=np.float32)
    y, cache = ops.maxpool2d_forward(ops.asarray(x), 2, 2)
    dx = ops.to_numpy(ops.maxpool2d_backward(ops.asarray(np.ones((1, 1, 1, 1), np.float32)), cache))
    np.testing.assert_array_equal(dx, [[[[0, 1], [0, 0]]]])


def test_nan_propagates_through_relu_and_maxpool(ops):
    """A diverged run must keep its NaN up to the loss, where training stops naming the step."""
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 2, 2] = np.nan  # a NaN on a window's first tap stays, though larger values follow
    for mod in (ref, ops):
        y = mod.to_numpy(mod.maxpool2d_forward(mod.asarray(x), 2, 2)[0])
        assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 1, 1]) and not np.isnan(y[0, 0, 0, 1])
        r = mod.to_numpy(mod.relu_forward(mod.asarray(np.array([np.nan, -1.0, 2.0], np.float32)))[0])
        assert np.isnan(r[0]) and r[1] == 0 and r[2] == 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES[:3], ids=lambda c: "N{}C{}H{}W{}F{}K{}s{}p{}".format(*c))
def test_without_an_input_gradient_the_weight_gradients_are_unchanged(ops, rng, case, dtype):
    """need_dx=False (a first layer): dx comes back None and dw, db equal the reference's, for conv and linear."""
    N, C, H, W, F, K, s, p = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, K, K)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    y_ref, c_ref = ref.conv2d_forward(x, w, b, s, p)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    _, dw_ref, db_ref = ref.conv2d_backward(dy, c_ref)
    for mod in (ref, ops):
        cache = mod.conv2d_forward(*dev(mod, x, w, b), s, p)[1]
        dx, dw, db = mod.conv2d_backward(mod.asarray(dy), cache, False)
        assert dx is None
        close(mod, dw, dw_ref, dtype)
        close(mod, db, db_ref, dtype)
    xl, wl = x.reshape(N, -1), rng.standard_normal((F, C * H * W)).astype(dtype)
    cache_ref = ref.linear_forward(xl, wl, b)[1]
    dyl = rng.standard_normal((N, F)).astype(dtype)
    _, dw_ref, db_ref = ref.linear_backward(dyl, cache_ref)
    for mod in (ref, ops):
        dx, dw, db = mod.linear_backward(mod.asarray(dyl), mod.linear_forward(*dev(mod, xl, wl, b))[1], False)
        assert dx is None
        close(mod, dw, dw_ref, dtype)
        close(mod, db, db_ref, dtype)


def test_need_dx_must_be_a_bool(ops):
    x, w = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 2, 2), np.float32)
    y, cache = ops.conv2d_forward(*dev(ops, x, w, None), 1, 0)
    with pytest.raises(TypeError, match="conv2d_backward: need_dx must be a bool; got tuple"):
        ops.conv2d_backward(ops.asarray(np.ones((1, 1, 2, 2), np.float32)), cache, (1,))
    _, cache = ops.linear_forward(*dev(ops, np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), None))
    with pytest.raises(TypeError, match="linear_backward: need_dx must be a bool; got int"):
        ops.linear_backward(ops.asarray(np.ones((2, 4), np.float32)), cache, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 3), (5, 16, 9), (4, 9, 1)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_reference(ops, rng, shape, dtype, bias):
    N, IN, OUT = shape
    x = rng.standard_normal((N, IN)).astype(dtype)
    w = rng.standard_normal((OUT, IN)).astype(dtype)
    b = rng.standard_normal(OUT).astype(dtype) if bias else None
    y_ref, c_ref = ref.linear_forward(x, w, b)
    y, cache = ops.linear_forward(*dev(ops, x, w, b))
    close(ops, y, y_ref, dtype)
    dy = rng.standard_normal((N, OUT)).astype(dtype)
    for g, g_ref in zip(ops.linear_backward(ops.asarray(dy), cache), ref.linear_backward(dy, c_ref)):
        if g_ref is None:
            assert g is None
        else:
            close(ops, g, g_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_matches_reference_including_exact_zeros(ops, rng, dtype):
    x = rng.standard_normal((3, 4, 5, 5)).astype(dtype)
    x[0, 0, 0, :3] = 0.0  # the gradient at exactly 0 is 0
    y_ref, c_ref = ref.relu_forward(x)
    y, cache = ops.relu_forward(ops.asarray(x))
    close(ops, y, y_ref, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    close(ops, ops.relu_backward(ops.asarray(dy), cache), ref.relu_backward(dy, c_ref), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 10), (7, 3), (16, 10)], ids=str)
def test_log_softmax_matches_reference(ops, rng, shape, dtype):
    x = (rng.standard_normal(shape) * 20).astype(dtype)  # large logits: the max-subtraction matters
    y_ref, c_ref = ref.log_softmax_forward(x)
    y, cache = ops.log_softmax_forward(ops.asarray(x))
    close(ops, y, y_ref, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    close(ops, ops.log_softmax_backward(ops.asarray(dy), cache), ref.log_softmax_backward(dy, c_ref), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 10), (7, 3), (32, 10)], ids=str)
def test_softmax_xent_matches_reference(ops, rng, shape, dtype):
    N, C = shape
    logits = (rng.standard_normal(shape) * 30).astype(dtype)
    t = rng.integers(0, C, size=N)
    loss_ref, c_ref = ref.softmax_xent_forward(logits, t)
    loss, cache = ops.softmax_xent_forward(ops.asarray(logits), ops.asarray(t))
    close(ops, loss, loss_ref, dtype)
    dl = np.asarray(0.7, dtype=dtype)
    close(ops, ops.softmax_xent_backward(ops.asarray(dl), cache), ref.softmax_xent_backward(dl, c_ref), dtype)


EMPTY_BATCH = r"cross_entropy: logits must have at least one row \(a batch of 0 samples has no mean loss\); got shape \(0, 10\)"


@pytest.mark.parametrize("tdtype", [np.int64, np.uint8])
def test_softmax_xent_refuses_an_empty_batch_on_every_backend(ops, tdtype):
    """A mean over 0 samples: once a ZeroDivisionError (numba, reference) or a NaN with warnings (numpy);
    now the same ValueError from the shared check on every backend, the oracle included."""
    logits, t = np.zeros((0, 10), np.float32), np.zeros(0, tdtype)
    for module, wrap in ((ops, ops.asarray), (ref, np.asarray)):
        with pytest.raises(ValueError, match=EMPTY_BATCH):
            module.softmax_xent_forward(wrap(logits), wrap(t))


def test_softmax_xent_is_finite_for_huge_logits(ops):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=np.float32)
    loss, _ = ops.softmax_xent_forward(ops.asarray(logits), ops.asarray(np.array([0, 1])))
    assert np.isfinite(ops.to_numpy(loss))
    np.testing.assert_allclose(ops.to_numpy(loss), np.log(2) / 2, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_dropout_matches_reference_for_the_same_seed(ops, rng, p, dtype):
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    y_ref, c_ref = ref.dropout_forward(x, p, 42)
    y, cache = ops.dropout_forward(ops.asarray(x), p, 42)
    close(ops, y, y_ref, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    close(ops, ops.dropout_backward(ops.asarray(dy), cache), ref.dropout_backward(dy, c_ref), dtype)


def test_dropout_keeps_about_1_minus_p_and_scales(ops):
    x = np.ones(200_000, dtype=np.float32)
    y, _ = ops.dropout_forward(ops.asarray(x), 0.25, 7)
    y = ops.to_numpy(y)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.005
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    y2, _ = ops.dropout_forward(ops.asarray(x), 0.25, 8)
    assert (ops.to_numpy(y2) != y).any()  # another seed, another mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (1, 2, 3, 4)], ids=str)
def test_batchnorm2d_matches_reference(ops, rng, shape, training, dtype):
    C = shape[1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    gamma = rng.standard_normal(C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    rm, rv = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    y_ref, c_ref = ref.batchnorm2d_forward(x, gamma, beta, rm_ref, rv_ref, training, 0.1, 1e-5)
    rm_d, rv_d = ops.asarray(rm.copy()), ops.asarray(rv.copy())
    y, cache = ops.batchnorm2d_forward(*dev(ops, x, gamma, beta), rm_d, rv_d, training, 0.1, 1e-5)
    close(ops, y, y_ref, dtype)
    close(ops, rm_d, rm_ref, dtype)
    close(ops, rv_d, rv_ref, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    for g, g_ref in zip(ops.batchnorm2d_backward(ops.asarray(dy), cache), ref.batchnorm2d_backward(dy, c_ref)):
        close(ops, g, g_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 1e-2),
                                                  (0.5, False, 1e-3)])
def test_sgd_update_matches_reference_over_several_steps(ops, rng, momentum, nesterov, wd, dtype):
    p = rng.standard_normal((3, 4)).astype(dtype)
    buf = np.zeros_like(p) if momentum else None
    p_d = ops.asarray(p.copy())
    buf_d = ops.asarray(buf.copy()) if momentum else None
    for _ in range(3):
        g = rng.standard_normal(p.shape).astype(dtype)
        g_d = ops.asarray(g.copy())
        ref.sgd_update(p, g, buf, 0.1, momentum, nesterov, wd)
        ops.sgd_update(p_d, g_d, buf_d, 0.1, momentum, nesterov, wd)
        close(ops, g_d, g, dtype)  # the gradient is not modified
    close(ops, p_d, p, dtype)
    if momentum:
        close(ops, buf_d, buf, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_adam_update_matches_reference_over_several_steps(ops, rng, wd, dtype):
    p = rng.standard_normal((5, 2)).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    p_d, m_d, v_d = dev(ops, p.copy(), m.copy(), v.copy())
    for step in range(1, 4):
        g = rng.standard_normal(p.shape).astype(dtype)
        ref.adam_update(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, wd)
        ops.adam_update(p_d, ops.asarray(g), m_d, v_d, step, 1e-2, 0.9, 0.999, 1e-8, wd)
    close(ops, p_d, p, dtype)
    close(ops, m_d, m, dtype)
    close(ops, v_d, v, dtype)


def test_plumbing_round_trip(ops):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(ops.to_numpy(ops.asarray(a)), a)
    z = ops.zeros((2, 3), dtype="float64")
    assert ops.to_numpy(z).dtype == np.float64 and not ops.to_numpy(z).any()
    assert ops.to_numpy(ops.asarray(np.float32(3.0))).shape == ()
    ops.synchronize()


# -- bad input: every message names the argument -------------------------------------------------------------

BAD = [
    ("conv2d_forward", lambda: (np.zeros((28, 28), np.float32), np.zeros((1, 1, 3, 3), np.float32), None, 1, 0),
     ValueError, r"conv2d: x must be 4-D \(N, C, H, W\); got shape \(28, 28\)"),
    ("conv2d_forward", lambda: (np.zeros((1, 3, 8, 8), np.float32), np.zeros((2, 1, 3, 3), np.float32), None, 1, 0),
     ValueError, "w has 1 input channels but x has 3"),
    ("conv2d_forward", lambda: (np.zeros((1, 1, 8, 8), np.int32), np.zeros((2, 1, 3, 3), np.float32), None, 1, 0),
     TypeError, "x must be float32 or float64; got int32"),
    ("conv2d_forward", lambda: (np.zeros((1, 1, 8, 8), np.float32), np.zeros((2, 1, 3, 3), np.float64), None, 1, 0),
     TypeError, "w dtype float64 does not match x dtype float32"),
    ("conv2d_forward", lambda: (np.zeros((1, 1, 8, 8), np.float32), np.zeros((2, 1, 3, 3), np.float32),
                                np.zeros(3, np.float32), 1, 0), ValueError, r"b must have shape \(2,\)"),
    ("conv2d_forward", lambda: (np.zeros((1, 1, 8, 8), np.float32), np.zeros((2, 1, 3, 3), np.float32), None, 0, 0),
     ValueError, "stride must be an integer >= 1"),
    ("conv2d_forward", lambda: (np.zeros((1, 1, 2, 2), np.float32), np.zeros((2, 1, 3, 3), np.float32), None, 1, 0),
     ValueError, "does not fit input"),
    ("maxpool2d_forward", lambda: (np.zeros((4, 4), np.float32), 2, 2), ValueError, "maxpool2d: x must be 4-D"),
    ("maxpool2d_forward", lambda: (np.zeros((1, 1, 4, 4), np.float32), 0, 2), ValueError, "kernel must be"),
    ("relu_maxpool2d_forward", lambda: (np.zeros((4, 4), np.float32), 2, 2), ValueError,
     "relu_maxpool2d: x must be 4-D"),
    ("relu_maxpool2d_forward", lambda: (np.zeros((1, 1, 4, 4), np.float32), 5, 2), ValueError,
     "relu_maxpool2d: kernel 5 is larger than the input 4x4"),
    ("linear_forward", lambda: (np.zeros((2, 5), np.float32), np.zeros((3, 4), np.float32), None),
     ValueError, "w expects 4 input features but x has 5"),
    ("linear_forward", lambda: (np.zeros(5, np.float32), np.zeros((3, 5), np.float32), None),
     ValueError, "linear: x must be 2-D"),
    ("softmax_xent_forward", lambda: (np.zeros((2, 3), np.float32), np.array([0, 1, 2])),
     ValueError, "targets has 3 entries but logits has a batch of 2"),
    ("softmax_xent_forward", lambda: (np.zeros((2, 3), np.float32), np.array([0, 3])),
     ValueError, r"targets must lie in \[0, 3\)"),
    ("softmax_xent_forward", lambda: (np.zeros((2, 3), np.float32), np.array([0.0, 1.0])),
     TypeError, "targets must be integer class indices"),
    ("relu_forward", lambda: (np.zeros(3, np.int64),), TypeError, "relu: x must be float32 or float64"),
    ("dropout_forward", lambda: (np.zeros(3, np.float32), 1.5, 0), ValueError, r"dropout: p must lie in \[0, 1\]"),
    ("sgd_update", lambda: (np.zeros(3, np.float32), np.zeros(4, np.float32), None, 0.1, 0.0, False, 0.0),
     ValueError, "g must have the parameter's shape"),
    ("adam_update", lambda: (np.zeros(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float64),
                             np.zeros(3, np.float32), 1, 0.1, 0.9, 0.999, 1e-8, 0.0),
     TypeError, "m dtype float64 does not match p dtype float32"),
    ("batchnorm2d_forward", lambda: (np.zeros((1, 2, 3, 3), np.float32), *[np.zeros(3, np.float32)] * 4, True, 0.1,
                                     1e-5), ValueError, r"gamma must have shape \(2,\)"),
]


@pytest.mark.parametrize("name,make,exc,msg", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_clear_error_naming_the_argument(ops, name, make, exc, msg):
    args = [ops.asarray(a) if isinstance(a, np.ndarray) else a for a in make()]
    with pytest.raises(exc, match=msg):
        getattr(ops, name)(*args)


@pytest.mark.parametrize("name,make,exc,msg", BAD[:3], ids=["ref-ndim", "ref-channels", "ref-dtype"])
def test_reference_validates_like_every_backend(name, make, exc, msg):
    with pytest.raises(exc, match=msg):
        getattr(ref, name)(*make())
