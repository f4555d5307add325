"""The plans read each backend as it runs: the calls of a step are the kernels a traced step makes, and the
Numba plans follow the backend's own decisions (direct or im2col, chunks, threads) through its TUNING."""

import numpy as np
import pytest

from minigrad import backend, data, models
from minigrad.profiling import plans, predict
from minigrad.profiling._harness import Harness
from minigrad.profiling.tracer import Tracer
from minigrad.profiling.plans import Call, Term


def _numba():
    reason = backend.unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    from minigrad.kernels import numba_runtime

    return numba_runtime


@pytest.mark.parametrize("name", ["numpy", "numba"])
@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_a_steps_calls_are_the_kernels_a_traced_step_makes(name, model):
    if name == "numba":
        _numba()
    train = data.synthetic_mnist(n_train=64, n_test=8)[0]
    with backend.use_backend(name):
        run = Harness(model, 3, train, 3)
        run.steps(1)
        with Tracer() as tr:
            run.steps(1, around=tr.step)
    expected = [call.kernel for _, call in predict.step_calls(models.get_model(model), 3, 4).calls]
    assert [e.name for e in tr.events] == expected


def conv(N=16, C=6, H=12, W=12, F=16, K=5, stride=1, padding=0, need_dx=True):
    return dict(N=N, C=C, H=H, W=W, F=F, KH=K, KW=K, stride=stride, padding=padding, bias=True, need_dx=need_dx,
                itemsize=4)


def test_numpy_conv_is_im2col_one_gemm_and_the_layout_passes():
    # widths: NumPy's innermost runs: the kernel's width in im2col, the filters in the layout changes and sums
    terms = plans.plan("numpy", Call("conv2d_forward", conv(N=2, padding=1)), threads=1)
    assert terms == [Term("call", "conv2d_forward", ()), Term("pass", "pad", (2 * 6 * 14 * 14,)),
                     Term("pass", "im2col", (2 * 100 * 150, 5)), Term("gemm", "nt", (200, 16, 150)),
                     Term("pass", "gemm_out_to_nchw", (200 * 16, 16), strided=(100, 16 * 4))]
    back = plans.plan("numpy", Call("conv2d_backward", conv(N=2)), threads=1)
    assert [t.what for t in back] == ["conv2d_backward", "nchw_to_gemm_in", "tn", "nn", "col2im_planes", "fill",
                                      "shifted_add", "column_sum"]
    # col2im: one copy of the columns into planes of 8-pixel rows, then a slice-add per patch position (25)
    assert [(t.size, t.count) for t in back if t.what in ("col2im_planes", "shifted_add")] == [
        ((2 * 64 * 150, 8), 1), ((2 * 6 * 64, 8), 25)]
    # the transposing copies' strided runs: P = 64 reads of K*4 bytes apart into planes, F reads P*4 apart
    assert [t.strided for t in back if t.strided] == [(16, 64 * 4), (64, 150 * 4)]
    padded = plans.plan("numpy", Call("conv2d_backward", conv(N=2, padding=1)), threads=1)
    assert [t.what for t in padded][-2:] == ["crop", "column_sum"]
    first = plans.plan("numpy", Call("conv2d_backward", conv(N=2, need_dx=False)), threads=1)
    assert [t.what for t in first] == ["conv2d_backward", "nchw_to_gemm_in", "tn", "column_sum"]


def test_a_models_first_layer_with_parameters_computes_no_input_gradient():
    calls = [c for _, c in predict.step_calls(models.get_model("lenet5"), 2, 4).calls if "need_dx" in c.shape]
    assert [(c.kernel, c.shape["need_dx"]) for c in calls if c.kernel.endswith("backward")] == [
        ("linear_backward", True), ("linear_backward", True), ("linear_backward", True),
        ("conv2d_backward", True), ("conv2d_backward", False)]


def test_numba_conv_plans_follow_its_tuning():
    rt = _numba()
    # The plane layout: 7 rows of 12 + 8 = 92 columns per sample, 150 x 92 x 4 bytes, so 4 samples fit 256 KiB
    # and 16 samples are 4 chunks of 4
    with rt.tuned(conv_chunk_bytes=1 << 18, conv_direct_max_filters=8, conv_direct_wgrad_max_channels=0,
                  split_min_work=1 << 62):
        terms = plans.plan("numba", Call("conv2d_forward", conv()), threads=2)
        assert [(t.what, t.size, t.count) for t in terms if t.kind != "call"] == [
            ("im2col_plane", (150 * 4 * 92, 8), 4), ("nn" + plans.CHUNK, (16, 4 * 92, 150), 4),
            ("gemm_out_to_nchw", (16 * 4 * 64, 8), 4)]
        assert not any(t.kind == "split" for t in terms)  # below split_min_work: one block
        direct = plans.plan("numba", Call("conv2d_forward", conv(F=8)), threads=1)
        assert [t.what for t in direct] == ["conv2d_forward", "direct_conv_5x5"]
        # stride 2: rows of OW = 4, R = OW, 16 columns per sample, all 16 samples in one chunk
        strided = plans.plan("numba", Call("conv2d_backward", conv(stride=2)), threads=1)
        assert [(t.what, t.size) for t in strided if t.what in ("im2col", "col2im")] == [
            ("im2col", (150 * 16 * 16, 4)), ("col2im", (150 * 16 * 16, 4))]
    with rt.tuned(conv_direct_wgrad_max_channels=6, split_min_work=1 << 62):  # few channels, no dx: direct dw
        first = plans.plan("numba", Call("conv2d_backward", conv(need_dx=False)), threads=1)
        assert [t.what for t in first] == ["conv2d_backward", "direct_wgrad_5x5"]
        second = plans.plan("numba", Call("conv2d_backward", conv()), threads=1)
        assert "direct_wgrad_5x5" not in [t.what for t in second]
    with rt.tuned(conv_direct_wgrad_max_channels=0, split_min_work=1):  # split over 2 threads: the slowest block
        # holds 8 samples, and a hand-off
        terms = plans.plan("numba", Call("conv2d_backward", conv()), threads=2)
        assert Term("split", "split", (2,)) in terms
        cols = sum(t.size[0] * t.count for t in terms if t.what == "im2col_plane")
        assert cols == 150 * 8 * 92


def test_numba_winograd_layers_are_priced_by_their_transforms_and_16_gemms_per_sample():
    rt = _numba()
    layer = conv(N=4, C=32, H=26, W=26, F=64, K=3)  # convnet's second: 12 x 12 tiles out, 13 x 13 for dx
    with rt.tuned(conv_winograd_min_channels=16, conv_direct_max_filters=8, split_min_work=1 << 62):
        forward = plans.plan("numba", Call("conv2d_forward", layer), threads=1)
        assert [(t.what, t.size, t.count) for t in forward if t.kind != "call"] == [
            ("winograd_filters", (64 * 32 * 9,), 1), ("winograd_input", (4 * 144 * 16 * 32, 32), 1),
            (plans.RUN, (144, 64, 32), 64), ("winograd_output", (4 * 144 * 16 * 64, 64), 1)]
        backward = [(t.what, t.size, t.count) for t in plans.plan("numba", Call("conv2d_backward", layer), threads=1)]
        assert ("winograd_input", (4 * 169 * 16 * 64, 64), 1) in backward and (plans.RUN, (169, 32, 64), 64) in backward
        assert not {"col2im_plane", "fill", "tn-chunk"} & {what for what, _, _ in backward}  # dw alone on im2col
        assert ("nt" + plans.CHUNK, (288, 64, 622), 4) in backward  # dw: a sample's 26 x 23 + 24 columns a chunk
    with rt.tuned(conv_winograd_min_channels=1 << 62):
        assert "winograd_input" not in [t.what for t in plans.plan("numba", Call("conv2d_forward", layer), 1)]


def test_numba_linear_backward_takes_the_outer_product_path_for_a_batch_of_one():
    rt = _numba()
    shape = dict(N=1, IN=256, OUT=120, bias=True, need_dx=True, itemsize=4)
    with rt.tuned(linear_outer_max_batch=1):
        whats = [t.what for t in plans.plan("numba", Call("linear_backward", shape), threads=1)]
    assert whats == ["linear_backward", "outer_sum", "nn", "column_sum"]
    with rt.tuned(linear_outer_max_batch=0):
        whats = [t.what for t in plans.plan("numba", Call("linear_backward", shape), threads=1)]
    assert whats == ["linear_backward", "tn", "nn", "column_sum"]


def test_a_layer_without_a_plan_is_named():
    from minigrad import nn

    with pytest.raises(KeyError, match="no plan for layer Dropout"):
        predict.step_calls(nn.Sequential(nn.Flatten(), nn.Dropout(0.5)), 2, 4)
    with pytest.raises(KeyError, match="no plan for kernel 'dropout_forward' on the numpy backend"):
        plans.plan("numpy", Call("dropout_forward", {}), threads=1)


def test_pooling_and_the_im2col_family_are_priced_by_their_row_width():
    call, term = plans.plan("numpy", Call("maxpool2d_forward", {"x": (4, 6, 24, 24), "kernel": 2, "itemsize": 4}), 1)
    assert (call, term) == (Term("call", "maxpool2d_forward", ()),
                            Term("kernel", "maxpool2d_forward", (4 * 6 * 24 * 24, 24)))
    _, term = plans.plan("numpy", Call("relu_forward", {"x": (4, 6, 24, 24), "itemsize": 4}), threads=1)
    assert term.size == (int(np.prod((4, 6, 24, 24))),)


def test_a_large_array_is_priced_by_its_pass_alone():
    """No allocation term: the host backends recycle a step's freed memory (kernels/_host.keep_freed_memory), so
    even an array past glibc's largest mmap threshold costs only its writing."""
    big = (256, 64, 24, 24)  # 37.7 MB of float32
    assert plans.plan("numba", Call("relu_forward", {"x": big, "itemsize": 4}), threads=1) == [
        Term("call", "relu_forward", ()), Term("kernel", "relu_forward", (int(np.prod(big)),))]


# -- cupy: each plan against the launches and GEMMs cupy_ops makes, run on the CPU under the host shim ----------


class _LoggedNumpy:
    """NumPy as the host runtime's array module, its contiguous copies and concatenations logged as passes."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        return getattr(np, name)

    def ascontiguousarray(self, a):
        self.log.append(("pass", "strided_copy", a.size))
        return np.ascontiguousarray(a)

    def concatenate(self, arrays, axis=0):
        out = np.concatenate(arrays, axis=axis)
        self.log.append(("pass", "concatenate", out.size))
        return out


#: The cupy plans' passes that are one of the backend's own launches (channel_sums' second pass, over the
#: partial sums of tall matrices, is part of its curve).
LAUNCHED_PASSES = {"im2col": "im2col_t", "col2im": "col2im_t", "column_sums": "channel_sums",
                   "add_bias_rows": "add_bias_rows"}


@pytest.fixture
def logged_cupy(monkeypatch):
    """(cupy_ops on the host shim, the log of its passes and GEMMs in the order it makes them)."""
    import dataclasses
    import re
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    from minigrad.kernels import cupy_ops
    from tests.kernels.test_cuda_host import host_runtime

    log, base = [], host_runtime(set())

    def kernel(stem, name):
        run, name = base.kernel(stem, name), re.sub(r"_f(32|64)(_i32)?$", "", name)

        def launch(grid, block, args):
            if name in LAUNCHED_PASSES:
                log.append(("pass", LAUNCHED_PASSES[name], None))
            return run(grid, block, args)
        return launch

    def matmul(a, b, tf32=False):
        a3, b3 = (a, b) if a.ndim == 3 else (a[None], b[None])
        ops = [cupy_ops._gemm_operand(x)[0] for x in (a3, b3)]
        layout = "".join("t" if op == cupy_ops.CublasGemm._T else "n" for op in ops)
        log.append(("gemm", layout, (a3.shape[1], b3.shape[2], a3.shape[2], a3.shape[0])))
        return np.matmul(a, b)

    runtime = dataclasses.replace(base, xp=_LoggedNumpy(log), kernel=kernel, matmul=matmul)
    monkeypatch.setattr(cupy_ops, "_runtime", lambda: runtime)
    return cupy_ops, log


def _planned(kernel, shape):
    """The plan's GEMMs and passes as the log records them (a launched pass's size is not logged)."""
    return [(t.kind, t.what, t.size if t.kind == "gemm" else None if t.what in LAUNCHED_PASSES.values()
             else t.size[0]) for t in plans.plan("cupy", Call(kernel, shape), 1) if t.kind != "call"]


#: A layer's forward arguments and its shapes in a plan: conv2d (2 -> 4 channels, 3x3, 9x8 input), linear (6 -> 3).
CUPY_LAYERS = {
    "conv2d": lambda rng, N, bias: ((rng.standard_normal((N, 2, 9, 8)), rng.standard_normal((4, 2, 3, 3)),
                                     rng.standard_normal(4) if bias else None, 1, 0),
                                    dict(N=N, C=2, H=9, W=8, F=4, KH=3, KW=3, stride=1, padding=0)),
    "linear": lambda rng, N, bias: ((rng.standard_normal((N, 6)), rng.standard_normal((3, 6)),
                                     rng.standard_normal(3) if bias else None), dict(N=N, IN=6, OUT=3)),
}


@pytest.mark.parametrize("layer", sorted(CUPY_LAYERS))
@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_dx", [True, False])
def test_the_cupy_plans_are_the_launches_and_gemms_cupy_ops_makes(logged_cupy, layer, N, bias, need_dx):
    ops, log = logged_cupy
    args, shape = CUPY_LAYERS[layer](np.random.default_rng(0), N, bias)
    shape = {**shape, "bias": bias, "need_dx": need_dx, "itemsize": 8}
    y, cache = getattr(ops, f"{layer}_forward")(*args)
    assert log == _planned(f"{layer}_forward", shape)
    log.clear()
    getattr(ops, f"{layer}_backward")(np.ones_like(y), cache, need_dx)
    assert log == _planned(f"{layer}_backward", shape)
