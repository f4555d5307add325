"""Numba backend specifics: activate, warmup, every code path the wrappers can pick (direct and im2col
conv, serial and parallel loops, thread-split blocks), non-contiguous inputs, and float64 parity on the
reference models' layer shapes at 1e-10 relative. The shared parity suite (test_ops.py) runs on numba too.
Thresholds in numba_runtime.TUNING are forced to 0 or "never" here so that small inputs take every path;
the runtime itself (threads, tuned, the thread policy) is tested in test_numba_runtime.py.
"""

import subprocess
import sys

import numpy as np
import pytest

from minigrad import backend as B
from minigrad.kernels import numpy_ops as npo
from minigrad.kernels import reference as ref

nb = pytest.importorskip("minigrad.kernels.numba_ops")
rt = pytest.importorskip("minigrad.kernels.numba_runtime")

NEVER = 1 << 62
ALL_SERIAL = {"split_min_work": NEVER, "parallel_min_elements": NEVER, "pool_parallel_min_elements": NEVER}
ALL_PARALLEL = {"split_min_work": 0, "parallel_min_elements": 0, "pool_parallel_min_elements": 0}
DIRECT, IM2COL = ({"conv_direct_max_filters": n, "conv_direct_wgrad_max_channels": n,
                   "conv_winograd_min_channels": NEVER} for n in (NEVER, 0))
WINOGRAD = {**IM2COL, "conv_winograd_min_channels": 0}  # every stride-1 3x3 layer with an even output
PATHS = {
    "direct-serial": {**ALL_SERIAL, **DIRECT},
    "direct-parallel": {**ALL_PARALLEL, **DIRECT},
    "im2col-serial": {**ALL_SERIAL, **IM2COL},
    "im2col-parallel-tiny-chunks": {**ALL_PARALLEL, **IM2COL, "conv_chunk_bytes": 1},
    "winograd-serial": {**ALL_SERIAL, **WINOGRAD},
    "winograd-parallel": {**ALL_PARALLEL, **WINOGRAD},
}


def close(got, want, tol):
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        if w is None:
            assert g is None
            continue
        assert g.dtype == w.dtype and g.shape == w.shape
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * scale)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_activate_is_the_runtime_thread_policy():
    assert nb.activate() == rt.apply_thread_policy() == rt.APPLIED


def test_own_gemms_leave_the_blas_thread_count_as_it_was(rng):
    before = rt.get_threads()["blas"]
    x, w = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((3, 8)).astype(np.float32)
    with rt.tuned(split_min_work=0):
        nb.linear_forward(x, w, None)
    assert rt.get_threads()["blas"] == before


def test_warmup_compiles_every_kernel_and_reports_seconds():
    times = nb.warmup(("float32", "float64"))
    assert set(times) == set(B.KERNELS)
    assert all(isinstance(t, float) and t >= 0 for t in times.values())


def test_warmup_rejects_other_dtypes():
    with pytest.raises(ValueError, match="float32 or float64"):
        nb.warmup(("int32",))


# (N, C, H, W, F, K, stride, padding): the reference models' layers plus padding and stride
CONV_SHAPES = [(3, 1, 28, 28, 6, 5, 1, 0), (3, 6, 12, 12, 16, 5, 1, 0), (2, 1, 28, 28, 32, 3, 1, 0),
               (2, 32, 10, 10, 64, 3, 1, 0), (3, 3, 9, 8, 4, 3, 1, 2), (3, 2, 11, 9, 5, 3, 2, 1),
               (2, 2, 7, 1, 3, 1, 2, 0),  # stride 2 with an output as wide as the input (R = OW = W)
               (2, 3, 8, 6, 4, 3, 1, 1)]  # Winograd's forward and dx on a padded, non-square input


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda c: "N{}C{}H{}W{}F{}K{}s{}p{}".format(*c))
def test_conv2d_every_path_matches_reference_in_float64(rng, shape, path):
    N, C, H, W, F, K, s, p = shape
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((F, C, K, K))
    b = rng.standard_normal(F)
    want_y, want_cache = npo.conv2d_forward(x, w, b, s, p)  # numpy_ops == reference per test_ops
    dy = rng.standard_normal(want_y.shape)
    with rt.tuned(**PATHS[path]):
        y, cache = nb.conv2d_forward(x, w, b, s, p)
        close(y, want_y, 1e-10)
        want = npo.conv2d_backward(dy, want_cache)
        close(nb.conv2d_backward(dy, cache), want, 1e-10)
        close(nb.conv2d_backward(dy, cache, False), (None,) + want[1:], 1e-10)


_CACHE_KEY = """
import hashlib
from numba.core.serialize import dumps
from minigrad.kernels import numba_ops
kernel = {}.py_func
print(hashlib.sha256(dumps(tuple(c.cell_contents for c in kernel.__closure__))).hexdigest())
"""


@pytest.mark.parametrize("kernel", ["numba_ops._direct_forward(5, 5)", "numba_ops._direct_weight_grad(5, 5)",
                                    "numba_ops._maxpool_kernels(2, 2)[0]",
                                    "numba_ops._maxpool_kernels(2, 2)[1]"])
def test_per_shape_kernels_have_the_same_cache_key_in_every_process(kernel):
    """Numba keys a cached closure on the pickle of its closure values: one that differs per process (a
    jitted function's does) makes every process compile the kernel again instead of loading it."""
    keys = {subprocess.run([sys.executable, "-c", _CACHE_KEY.format(kernel)], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)}
    assert len(keys) == 1 and len(keys.pop().strip()) == 64


def test_conv2d_small_case_matches_the_oracle_itself(rng):
    x, w = rng.standard_normal((2, 2, 7, 7)), rng.standard_normal((3, 2, 3, 3))
    dy = rng.standard_normal((2, 3, 5, 5))
    for path in PATHS.values():
        with rt.tuned(**path):
            y, cache = nb.conv2d_forward(x, w, None, 1, 0)
            y_ref, c_ref = ref.conv2d_forward(x, w, None, 1, 0)
            close(y, y_ref, 1e-10)
            close(nb.conv2d_backward(dy, cache), ref.conv2d_backward(dy, c_ref), 1e-10)


@pytest.mark.parametrize("path", ["serial", "parallel"])
@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (2, 1), (3, 3)])
@pytest.mark.parametrize("op", ["maxpool2d", "relu_maxpool2d"])
def test_maxpool2d_both_loops_match_reference(rng, path, k, s, op):
    x = rng.standard_normal((3, 4, 13, 11))
    x[0, 0, :4, :4] = 1.0  # ties
    x[1, 1, :4, :4] = -1.0  # negative ties: relu_maxpool2d drops their gradient
    forward, backward = getattr(nb, f"{op}_forward"), getattr(nb, f"{op}_backward")
    with rt.tuned(**(ALL_SERIAL if path == "serial" else ALL_PARALLEL)):
        y, cache = forward(x, k, s)
        y_ref, c_ref = getattr(ref, f"{op}_forward")(x, k, s)
        close(y, y_ref, 0)
        dy = rng.standard_normal(y.shape)
        close(backward(dy, cache), getattr(ref, f"{op}_backward")(dy, c_ref), 1e-12)  # overlaps: add order


def test_maxpool2d_windows_over_255_elements_use_a_wider_index(rng):
    x = rng.standard_normal((1, 1, 17, 17))
    y, cache = nb.maxpool2d_forward(x, 17, 1)
    assert cache[0].dtype == np.int32
    assert y[0, 0, 0, 0] == x.max()


@pytest.mark.parametrize("path", ["serial", "parallel"])
def test_elementwise_and_optimizer_loops_match_reference_on_the_pool(rng, path):
    with rt.tuned(**(ALL_SERIAL if path == "serial" else ALL_PARALLEL)):
        x = rng.standard_normal((4, 3, 5, 5))
        y, cache = nb.relu_forward(x)
        y_ref, c_ref = ref.relu_forward(x)
        close(y, y_ref, 0)
        close(nb.relu_backward(x, cache), ref.relu_backward(x, c_ref), 0)
        close(nb.dropout_forward(x, 0.3, 5)[0], ref.dropout_forward(x, 0.3, 5)[0], 0)
        g = rng.standard_normal(x.shape)
        p, buf = x.copy(), np.zeros_like(x)
        p_ref, buf_ref = x.copy(), np.zeros_like(x)
        nb.sgd_update(p, g, buf, 0.1, 0.9, True, 1e-3)
        ref.sgd_update(p_ref, g, buf_ref, 0.1, 0.9, True, 1e-3)
        close((p, buf), (p_ref, buf_ref), 1e-12)
        m, v, m_ref, v_ref = (np.zeros_like(x) for _ in range(4))
        nb.adam_update(p, g, m, v, 2, 1e-3, 0.9, 0.999, 1e-8, 0.0)
        ref.adam_update(p_ref, g, m_ref, v_ref, 2, 1e-3, 0.9, 0.999, 1e-8, 0.0)
        close((p, m, v), (p_ref, m_ref, v_ref), 1e-12)


@pytest.mark.parametrize("shape", [(1, 9216, 128), (64, 256, 120), (3, 84, 10)], ids=str)
@pytest.mark.parametrize("split", [False, True])
def test_linear_split_over_threads_matches_reference_in_float64(rng, shape, split):
    N, IN, OUT = shape
    x, w, b = rng.standard_normal((N, IN)), rng.standard_normal((OUT, IN)), rng.standard_normal(OUT)
    dy = rng.standard_normal((N, OUT))
    with rt.tuned(split_min_work=0 if split else NEVER):
        y, cache = nb.linear_forward(x, w, b)
        y_ref, c_ref = npo.linear_forward(x, w, b)
        close(y, y_ref, 1e-10)
        close(nb.linear_backward(dy, cache), npo.linear_backward(dy, c_ref), 1e-10)


def test_dropout_mask_is_the_reference_stream_for_large_and_negative_seeds(rng):
    x = np.ones(1000, dtype=np.float32)
    for seed in (0, 2**63 - 1, 2**64 - 1, -3):
        np.testing.assert_array_equal(nb.dropout_forward(x, 0.5, seed)[1][:50],
                                      ref.dropout_forward(x[:50], 0.5, seed)[1])


def test_non_contiguous_inputs_are_handled(rng):
    x = rng.standard_normal((2, 3, 12, 10)).astype(np.float32)[:, :, ::2, :].transpose(0, 1, 3, 2)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32).transpose(1, 0, 2, 3)
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    y, cache = nb.conv2d_forward(x, w, None, 1, 1)
    y_ref, c_ref = ref.conv2d_forward(np.ascontiguousarray(x), np.ascontiguousarray(w), None, 1, 1)
    close(y, y_ref, 1e-5)
    dy = np.asfortranarray(rng.standard_normal(y.shape).astype(np.float32))
    close(nb.conv2d_backward(dy, cache), ref.conv2d_backward(np.ascontiguousarray(dy), c_ref), 1e-5)
    close(nb.maxpool2d_forward(x, 2, 2)[0], ref.maxpool2d_forward(np.ascontiguousarray(x), 2, 2)[0], 0)
    close(nb.relu_forward(x)[0], ref.relu_forward(np.ascontiguousarray(x))[0], 0)
    logits = rng.standard_normal((10, 4)).astype(np.float32).T
    t = np.arange(4, dtype=np.uint8)
    close(nb.softmax_xent_forward(logits, t)[0], ref.softmax_xent_forward(np.ascontiguousarray(logits), t)[0],
          1e-5)


def test_optimizer_state_that_is_not_contiguous_is_still_updated_in_place(rng):
    p = rng.standard_normal((4, 6))
    g = rng.standard_normal((6, 4)).T  # a view: the gradient may be strided
    buf = np.zeros((6, 4)).T
    p_ref, buf_ref = p.copy(), np.zeros((4, 6))
    for _ in range(2):
        nb.sgd_update(p, g, buf, 0.1, 0.9, False, 0.0)
        ref.sgd_update(p_ref, np.ascontiguousarray(g), buf_ref, 0.1, 0.9, False, 0.0)
    close((p, np.ascontiguousarray(buf)), (p_ref, buf_ref), 1e-12)


def test_softmax_xent_accepts_any_integer_target_dtype(rng):
    logits = rng.standard_normal((5, 10))
    for dtype in (np.uint8, np.int32, np.int64):
        t = np.array([0, 3, 9, 2, 2], dtype=dtype)
        close(nb.softmax_xent_forward(logits, t)[0], ref.softmax_xent_forward(logits, t)[0], 1e-10)


def test_training_step_on_numba_equals_numpy():
    """Two lenet5 training steps, float64, identical on both backends (to 1e-10 relative)."""
    import minigrad as mg
    import minigrad.functional as F
    from minigrad.models import get_model

    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 28, 28)), rng.integers(0, 10, 8)
    params = {}
    for name in ("numpy", "numba"):
        with mg.use_backend(name):
            mg.manual_seed(3)
            model = get_model("lenet5", dtype="float64")
            opt = mg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            for _ in range(2):
                loss = F.cross_entropy(model(mg.Tensor(x)), y)
                loss.backward()
                opt.step()
                opt.zero_grad()
            params[name] = [p.numpy() for p in model.parameters()]
    for a, b in zip(params["numpy"], params["numba"]):
        close(b, a, 1e-10)


@pytest.mark.parametrize("shape", [(2, 32, 10, 10, 64, 3, 1, 0), (2, 3, 8, 6, 4, 3, 1, 1)],
                         ids=lambda c: "N{}C{}H{}W{}F{}K{}s{}p{}".format(*c))
def test_winograd_is_the_path_taken_and_matches_in_float32(rng, shape):
    """Winograd's transforms add rounding of their own: float32 stays within 1e-5 of the NumPy backend on convnet's
    second layer's channels, and the choice rule picks it for the forward and for dx."""
    N, C, H, W, F, K, s, p = shape
    x, w, b = (rng.standard_normal(a).astype(np.float32) for a in ((N, C, H, W), (F, C, K, K), (F,)))
    want_y, want_cache = npo.conv2d_forward(x, w, b, s, p)
    dy = rng.standard_normal(want_y.shape).astype(np.float32)
    with rt.tuned(**WINOGRAD):
        assert nb._winograd(s, K, K, C, F, *want_y.shape[2:]) and nb._winograd(s, K, K, F, C, H + 2 * p, W + 2 * p)
        y, cache = nb.conv2d_forward(x, w, b, s, p)
        close(y, want_y, 1e-5)
        close(nb.conv2d_backward(dy, cache), npo.conv2d_backward(dy, want_cache), 1e-5)


def test_winograd_gradcheck_in_float64(rng):
    import minigrad as mg
    import minigrad.functional as F

    from ..gradcheck import gradcheck

    x, w, b = rng.standard_normal((2, 3, 8, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    with mg.use_backend("numba"), rt.tuned(**WINOGRAD):
        assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, 1, 1), x, w, b) < 1e-6


def test_winograd_needs_stride_1_3x3_an_even_output_and_enough_channels_on_both_sides():
    C = rt.TUNING["conv_winograd_min_channels"]
    assert nb._winograd(1, 3, 3, C, C, 24, 24)
    assert not nb._winograd(1, 3, 3, C - 1, 64, 24, 24) and not nb._winograd(1, 3, 3, 64, C - 1, 24, 24)
    assert not nb._winograd(2, 3, 3, C, C, 24, 24)
    assert not nb._winograd(1, 5, 5, C, C, 24, 24)
    assert not nb._winograd(1, 3, 3, C, C, 23, 24) and not nb._winograd(1, 3, 3, C, C, 24, 23)
