"""The cost model on a synthetic calibration with known answers, and without running the model it predicts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minigrad import backend, models, nn
from minigrad.profiling import calibration, plans, predict

GEMM_RATE = 1e9        # every product: 2mnk / GEMM_RATE seconds
PER_ELEMENT = 1e-9     # every pass and small kernel: PER_ELEMENT seconds per element
LAYER, STEP, CALL = 3e-6, 50e-6, 7e-6   # the planted fixed costs
DIMS = [1, 4, 16, 64, 256, 1024, 4096]


def hand_priced(term: plans.Term) -> float:
    """A term's price under the synthetic calibration, written out independently of the model's code."""
    if term.kind == "gemm":
        m, n, k = term.size
        return 2 * m * n * k / GEMM_RATE * term.count
    if term.kind in ("pass", "kernel"):
        return PER_ELEMENT * term.size[0] * term.count
    return {"call": CALL, "split": 0.0}[term.kind]


def synthetic(backend_name="numpy", itemsize=4) -> calibration.Calibration:
    names = set(plans.CURVE_KERNELS) | {"pad", "im2col", "col2im", "gemm_out_to_nchw", "nchw_to_gemm_in",
                                        "column_sum", "bias_add", "fill", "crop", "transpose", "outer_sum",
                                        "direct_conv_3x3", "direct_conv_5x5", "im2col_plane", "col2im_plane",
                                        "direct_wgrad_3x3", "direct_wgrad_5x5", "col2im_planes", "shifted_add",
                                        "winograd_input", "winograd_output", "winograd_filters"}
    sizes = [1, 1 << 30]
    curves = {}
    for name in names:
        for key in ([f"{name}@{w}" for w in calibration.WIDTHS] if name in plans.wide(backend_name) else [name]):
            curves[key] = [[s, PER_ELEMENT * s] for s in sizes]
    grid = [[[2 * m * n * k / GEMM_RATE for k in DIMS] for n in DIMS] for m in DIMS]
    cal = calibration.Calibration({"backend": backend_name, "threads": 1, "gemm_dims": DIMS,
                                   "gemm": {layout: grid for layout in calibration.GEMM_LAYOUTS},
                                   "curves": curves, "split_seconds": 0.0, "measured_at": "synthetic"})
    # the raw tiny times that the planted fixed costs imply: the loop's time outside kernels on the two synthetic
    # models (the loop's own, and one LAYER per run + loss), and each call of the synthetic CNN's step CALL more
    # than its other terms
    cal.data["tiny"] = {"outside_step": STEP + 3 * LAYER,
                        "outside_cnn": [[b, STEP + 9 * LAYER] for b in calibration.OUTSIDE_BATCHES],
                        "cnn_calls": cnn_calls(backend_name, itemsize, lambda kernel, again: CALL),
                        "update_calls": [[b, CALL] for b in calibration.OUTSIDE_BATCHES]}
    return cal


def cnn_calls(backend_name, itemsize, call_cost):
    """The synthetic CNN's step as ``_in_step`` records it: each call ``call_cost(kernel, again)`` more than the
    hand-priced terms of its shapes."""
    calls = predict.step_calls(calibration.synthetic_cnn("float32"), calibration.OUTSIDE_BATCH, itemsize)
    out, seen = [], set()
    for _, call in calls.calls:
        terms = plans.plan(backend_name, plans.Call(call.kernel, {**call.shape, "itemsize": itemsize}), 1)
        out.append([call.kernel, call_cost(call.kernel, call.kernel in seen)
                    + sum(hand_priced(t) for t in terms if t.kind != "call")])
        seen.add(call.kernel)
    return out


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_the_fixed_costs_come_back_from_the_raw_tiny_times(name):
    if name == "numba" and backend.unavailable_reason("numba"):
        pytest.skip(backend.unavailable_reason("numba"))
    model = predict.CostModel(synthetic(name), 4)
    assert all(seconds == pytest.approx(LAYER) for _, seconds in model.overheads["layer"])
    assert model.overheads["step"] == pytest.approx(STEP)
    calls = model.overheads["calls"]
    assert {kernel for kernel, _ in calls} == {"conv2d_forward", "conv2d_backward", "linear_forward",
                                               "linear_backward", "relu_forward", "relu_backward",
                                               "relu_maxpool2d_forward", "relu_maxpool2d_backward",
                                               "softmax_xent_forward", "softmax_xent_backward", "sgd_update"}
    assert all(seconds == pytest.approx(CALL) for seconds in calls.values())


def test_a_runs_cost_follows_the_steps_working_set_through_the_synthetic_cnns_batch_sizes():
    """The synthetic CNN's outside time planted at LAYER per run at its smallest batch size and 3 x LAYER at its
    largest: a step with a working set between them pays a run in between (linear in log working set), one
    beyond either end the end's cost; the loop's own cost comes from the smallest batch size's pair."""
    cal = synthetic()
    first, last = calibration.OUTSIDE_BATCHES[0], calibration.OUTSIDE_BATCHES[-1]
    cal.data["tiny"]["outside_cnn"] = [[first, STEP + 9 * LAYER], [last, STEP + 9 * 3 * LAYER]]
    model = predict.CostModel(cal, 4)
    assert model.overheads["step"] == pytest.approx(STEP)

    def ws(net, b):
        return predict.working_set(predict.step_calls(net, b, 4), "numpy", 4)
    lo, hi = ws(calibration.synthetic_cnn("float32"), first), ws(calibration.synthetic_cnn("float32"), last)
    assert model.layer_seconds(lo / 2) == pytest.approx(LAYER)
    assert model.layer_seconds(2 * hi) == pytest.approx(3 * LAYER)
    mid = (lo * hi) ** 0.5
    assert model.layer_seconds(mid) == pytest.approx(2 * LAYER)
    lenet5 = models.get_model("lenet5")
    for b in (1, 64, 512):
        p = model.predict(lenet5, b, 600)
        assert p.fixed["layers"] == pytest.approx(11 * model.layer_seconds(ws(lenet5, b)))  # 10 runs + the loss
    assert model.predict(lenet5, 512, 600).fixed["layers"] > model.predict(lenet5, 1, 600).fixed["layers"]
    # a dip at a larger batch size is noise: the cost never falls as the working set grows
    cal.data["tiny"]["outside_cnn"] = [[first, STEP + 9 * 2 * LAYER], [last, STEP + 9 * LAYER]]
    dipped = predict.CostModel(cal, 4)
    assert dipped.layer_seconds(lo) > 0 and dipped.layer_seconds(2 * hi) == pytest.approx(dipped.layer_seconds(lo))


def test_a_calls_cost_grows_with_the_steps_working_set_as_the_synthetic_cnns_updates_did():
    """The synthetic CNN's update calls planted at CALL at OUTSIDE_BATCH and CALL + 4 us at its largest batch size:
    every call of a step pays the growth at the step's working set (linear in log working set between the two,
    the end's beyond either), none at or below OUTSIDE_BATCH's, and a dip is noise."""
    cal = synthetic()
    first, last = calibration.OUTSIDE_BATCH, calibration.OUTSIDE_BATCHES[-1]
    cal.data["tiny"]["update_calls"] = [[first, CALL], [last, CALL + 4e-6]]
    model = predict.CostModel(cal, 4)

    def ws(net, b):
        return predict.working_set(predict.step_calls(net, b, 4), "numpy", 4)
    lo, hi = ws(calibration.synthetic_cnn("float32"), first), ws(calibration.synthetic_cnn("float32"), last)
    assert model.call_growth(lo / 2) == 0.0 and model.call_growth(lo) == 0.0
    assert model.call_growth((lo * hi) ** 0.5) == pytest.approx(2e-6)
    assert model.call_growth(2 * hi) == pytest.approx(4e-6)
    lenet5 = models.get_model("lenet5")
    for b in (1, 64, 512):
        growth = model.call_growth(ws(lenet5, b))
        calls = [t for k in model.predict(lenet5, b, 600).kernels for t in k.terms if t.term.kind == "call"]
        assert len(calls) == len(predict.step_calls(lenet5, b, 4).calls)
        assert all(t.seconds == pytest.approx(CALL + growth) for t in calls)
        assert ("+" in calls[0].reason) == (growth > 0)
    assert model.call_growth(ws(lenet5, 512)) > model.call_growth(ws(lenet5, 1))
    cal.data["tiny"]["update_calls"] = [[first, CALL + 4e-6], [last, CALL]]  # slower at B=4 than at the largest
    assert predict.CostModel(cal, 4).call_growth(2 * hi) == 0.0


def test_a_calls_cost_in_a_step_is_its_first_or_later_one_and_none_for_a_kernel_the_cnn_never_calls():
    """The synthetic CNN calls each GEMM kernel twice, relu once and the update eight times: a planted cost per
    (kernel, later call) comes back, a later call of a kernel the CNN called once takes its first call's cost,
    and an unfused max pool (not in the CNN's step) costs its curve alone."""
    def planted(kernel, again):
        return (2e-6 if again else 9e-6) * (1 + len(kernel) / 100)

    cal = synthetic()
    cal.data["tiny"]["cnn_calls"] = cnn_calls("numpy", 4, planted)
    model = predict.CostModel(cal, 4)
    assert model.overheads["calls"][("sgd_update", True)] == pytest.approx(planted("sgd_update", True))
    assert ("relu_forward", True) not in model.overheads["calls"]
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 10))
    p = model.predict(net, 4, 600)
    costs = [(k.kernel, t.seconds) for k in p.kernels for t in k.terms if t.term.kind == "call"]
    seen = set()
    for kernel, seconds in costs:
        want = planted(kernel, kernel in seen and kernel not in ("relu_forward", "relu_backward"))
        assert seconds == pytest.approx(want), kernel
        seen.add(kernel)
    pool = model.predict(nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(196, 10)), 4, 600)
    call = next(t for k in pool.kernels if k.kernel == "maxpool2d_forward" for t in k.terms if t.term.kind == "call")
    assert call.seconds == 0.0 and "does not call" in call.reason


def test_a_product_of_a_chunk_is_priced_and_explained_at_its_chunk_ratio():
    """Chunks planted at half the grid's time: a chunk's nn product costs half the plain one, and its reason says
    why; a layout without chunks measured costs the grid's time and says x1.00."""
    cal = synthetic("numba")
    dims = calibration.chunk_dims("nn", {"F": (8, 64), "L": (128, 2048), "K": (16, 512)})
    cal.data["chunks"] = {"nn": {"dims": dims, "seconds": [[[0.5 * cal.gemm_seconds("nn", m, n, k) for k in dims[2]]
                                                            for n in dims[1]] for m in dims[0]]}}
    model = predict.CostModel(cal, 4)
    plain = model._price(plans.Term("gemm", "nn", (16, 368, 150)))
    chunk = model._price(plans.Term("gemm", "nn" + plans.CHUNK, (16, 368, 150), count=3))
    assert chunk.seconds == pytest.approx(1.5 * plain.seconds) and plain.seconds == pytest.approx(hand_priced(plain.term))
    assert "x0.50 in an im2col chunk's loop" in chunk.reason and "chunk" not in plain.reason
    other = model._price(plans.Term("gemm", "tn" + plans.CHUNK, (150, 368, 16)))
    assert other.seconds == pytest.approx(hand_priced(other.term)) and "x1.00 in an im2col chunk's loop" in other.reason


def test_a_calls_cost_takes_off_no_more_than_a_warm_step_can_save():
    """A GEMM kernel's terms are priced hot: its call costs at least nothing. A whole kernel's curve is timed
    cold: a step saves at most its time on the smallest size (here PER_ELEMENT x the curve's first size, 1)."""
    cal = synthetic()
    cal.data["tiny"]["cnn_calls"] = cnn_calls("numpy", 4, lambda kernel, again: -1.0)
    calls = predict.CostModel(cal, 4).overheads["calls"]
    assert calls[("linear_forward", False)] == 0.0 and calls[("conv2d_backward", True)] == 0.0
    assert calls[("relu_forward", False)] == pytest.approx(-PER_ELEMENT)
    assert calls[("relu_maxpool2d_backward", True)] == pytest.approx(-PER_ELEMENT)


def test_a_calibration_whose_synthetic_step_made_other_calls_is_refused():
    cal = synthetic()
    cal.data["tiny"]["cnn_calls"] = cal.data["tiny"]["cnn_calls"][:-1]
    with pytest.raises(ValueError, match="--recalibrate"):
        predict.CostModel(cal, 4)


@pytest.mark.parametrize("name", ["numpy", "numba"])
@pytest.mark.parametrize("model_name,batch", [("mlp", 8), ("lenet5", 5), ("convnet", 32), ("convnet", 300)])
def test_a_step_is_the_sum_of_its_priced_terms_and_fixed_costs(name, model_name, batch):
    if name == "numba" and backend.unavailable_reason("numba"):
        pytest.skip(backend.unavailable_reason("numba"))
    net = models.get_model(model_name)
    calls = predict.step_calls(net, batch, 4)
    expected = sum(hand_priced(t) for _, c in calls.calls for t in plans.plan(name, c, 1))
    expected += calls.layers * LAYER + STEP
    p = predict.predict(model_name, [batch], name, "float32", 1, 6000, synthetic(name))[0]
    assert p.step_seconds == pytest.approx(expected, rel=1e-9)
    assert p.epoch_seconds == pytest.approx(6000 / batch * expected, rel=1e-9)


def test_the_mlp_step_by_hand():
    """mlp at B=8 on numpy, every call written out: Flatten, Linear(784, 256), ReLU, Linear(256, 10)."""
    B = 8
    gemms = 3 * (2 * B * 784 * 256 + 2 * B * 256 * 10)  # forward, dx and dw of each linear ...
    gemms -= 2 * B * 784 * 256                           # ... but the first layer's input needs no dx
    passes = (B * 256 + B * 10) * 2                      # bias added, bias summed
    passes += 2 * (B * 256)                              # relu forward and backward (of its input)
    passes += 2 * (B * 10)                               # the loss forward and backward
    passes += 784 * 256 + 256 + 256 * 10 + 10            # the four sgd updates
    calls = 12                                           # 2 linears and relu each way, the loss's 2, 4 updates
    expected = gemms / GEMM_RATE + PER_ELEMENT * passes + CALL * calls + 5 * LAYER + STEP
    p = predict.predict("mlp", [B], "numpy", "float32", 1, 60000, synthetic())[0]
    assert p.step_seconds == pytest.approx(expected, rel=1e-9)


def test_the_working_set_counts_activations_gradients_parameters_and_numpys_im2col():
    """mlp at B=8: the input, each output twice (it and its gradient), each parameter thrice; convnet on numpy adds
    its two im2col matrices and their gradients, and the GEMM-layout copies of each output and its gradient."""
    B = 8
    calls = predict.step_calls(models.get_model("mlp"), B, 4)
    outputs = B * 784 + B * 256 + B * 256 + B * 10      # Flatten, Linear, ReLU, Linear
    params = 784 * 256 + 256 + 256 * 10 + 10
    assert predict.working_set(calls, "numba", 4) == 4 * (B * 784 + 2 * outputs + 3 * params)
    conv = predict.step_calls(models.get_model("convnet"), B, 4)
    cols = B * 26 * 26 * 1 * 9 + B * 24 * 24 * 32 * 9
    layout = B * 26 * 26 * 32 + B * 24 * 24 * 64
    assert predict.working_set(conv, "numpy", 4) - predict.working_set(conv, "numba", 4) == 4 * (2 * cols + 2 * layout)


def test_whole_kernels_move_to_their_deep_curves_as_the_working_set_outgrows_the_reach():
    """A deep curve twice the cache-warm one and a reach from 0 at 1 MiB to 1 at DEEP_EVICT_BYTES: a step's whole
    kernels (relu, pooling, loss, updates) cost between 1x and 2x by its working set, less the penalty on the
    deep curve's smallest size (one element: PER_ELEMENT), which is not the data's; GEMMs and passes never
    move."""
    cal = synthetic()
    for name in list(cal.data["curves"]):
        if name.split("@")[0] in plans.CURVE_KERNELS:
            cal.data["curves"][f"{name}~deep"] = [[s, 2 * t] for s, t in cal.data["curves"][name]]
    cal.data["reach"] = [[1 << 20, 0.0]]
    base = synthetic()
    for B in (1, 64, 512):
        calls = predict.step_calls(models.get_model("lenet5"), B, 4)
        f = cal.deep_fraction(predict.working_set(calls, "numpy", 4))
        with_deep = predict.predict("lenet5", [B], "numpy", cal=cal)[0]
        without = predict.predict("lenet5", [B], "numpy", cal=base)[0]
        for a, b in zip(with_deep.kernels, without.kernels):
            for ta, tb in zip(a.terms, b.terms):
                deep = f * (tb.seconds - PER_ELEMENT) if ta.term.kind == "kernel" else 0.0
                assert ta.seconds == pytest.approx(tb.seconds + deep)
        assert (f > 0.5) == (B == 512)


def test_terms_touching_arrays_of_the_last_step_move_toward_their_time_from_dram():
    """far reach 0 at 1 MiB, 1 at DEEP_EVICT_BYTES; 1 ns per byte from DRAM: mlp's weight GEMMs on numpy (far =
    the weight, plus the input and dW's buffer for dW) cost between their hot time and their far bytes' time,
    whichever is larger, by the working set; every other term is unchanged. A matrix-vector product (B=1's
    forward and input gradient) reads its matrix from DRAM at its own rate (here 0.25 ns per byte)."""
    cal, base = synthetic(), synthetic()
    cal.data["far"] = {"seconds_per_byte": 1e-9, "vector_seconds_per_byte": 0.25e-9, "reach": [[1 << 20, 0.0]]}
    for B in (1, 512):
        calls = predict.step_calls(models.get_model("mlp"), B, 4)
        f = cal.deep_fraction(predict.working_set(calls, "numpy", 4), far=True)
        with_far = predict.predict("mlp", [B], "numpy", cal=cal)[0]
        without = predict.predict("mlp", [B], "numpy", cal=base)[0]
        for a, b in zip(with_far.kernels, without.kernels):
            for ta, tb in zip(a.terms, b.terms):
                vector = ta.term.kind == "gemm" and calibration.matrix_vector(*ta.term.size[:2])
                dram = (0.25e-9 if vector else 1e-9) * 4 * ta.term.far * ta.term.count
                want = tb.seconds + f * max(0.0, dram - tb.seconds) if ta.term.far else tb.seconds
                assert ta.seconds == pytest.approx(want)
                assert ("(matrix-vector)" in ta.reason) == (vector and ta.seconds > tb.seconds)
        gemms = [t.term for k in with_far.kernels for t in k.terms if t.term.kind == "gemm"]
        assert gemms[0].far == 256 * 784 and 0 < f < 1  # the first layer's forward reads its weight
        assert calibration.matrix_vector(*gemms[0].size[:2]) == (B == 1)  # 1 x 256 x 784 at B=1


def test_a_product_with_one_row_or_one_column_runs_as_matrix_vector():
    assert calibration.matrix_vector(1, 128) and calibration.matrix_vector(84, 1)
    assert not calibration.matrix_vector(1, 1) and not calibration.matrix_vector(2, 128)
    cal = synthetic()
    cal.data["far"] = {"seconds_per_byte": 2e-9, "vector_seconds_per_byte": 0.5e-9, "reach": []}
    assert cal.far_seconds(1000) == pytest.approx(2e-6) and cal.far_seconds(1000, vector=True) == pytest.approx(5e-7)
    assert synthetic().far_seconds(1000, vector=True) == 0.0  # nothing measured


def test_a_faster_gemm_table_changes_only_the_gemm_terms():
    slow, fast = synthetic(), synthetic()
    fast.data["gemm"] = {k: [[[v / 2 for v in row] for row in plane] for plane in grid]
                         for k, grid in fast.data["gemm"].items()}
    fast.data["tiny"] = slow.data["tiny"]
    a = predict.predict("convnet", [16], "numpy", cal=slow)[0]
    b = predict.predict("convnet", [16], "numpy", cal=fast)[0]
    gemm = sum(t.seconds for k in a.kernels for t in k.terms if t.term.kind == "gemm")
    # the derived per-call and per-step costs absorb the tiny shapes' (now cheaper) GEMMs
    assert a.kernel_seconds - b.kernel_seconds == pytest.approx(gemm / 2, rel=0.01)


def test_numpys_transposing_copies_pay_l1_misses_where_their_runs_overflow_their_sets():
    base, conflict = synthetic(), synthetic()
    conflict.data["l1_conflict"] = {"sets": 64, "ways": 12, "line": 64, "seconds_per_element": 1e-9}
    a = predict.predict("convnet", [16], "numpy", cal=conflict)[0]
    b = predict.predict("convnet", [16], "numpy", cal=base)[0]
    extra = {(k.layer, k.kernel, ta.term.what): ta.seconds - tb.seconds
             for k, kb in zip(a.kernels, b.kernels) for ta, tb in zip(k.terms, kb.terms) if ta.seconds != tb.seconds}
    # convnet's conv2: 24x24 outputs, 288 columns 1,152 B apart (32 of 64 sets: 384 lines < 576); 64 filters
    # 256 B apart (16 sets: 192 lines < 576). conv1 (9 columns, 32 filters: 128 B, 32 sets: 384 < 676) too.
    conv2 = [layer for layer, kernel, _ in extra if kernel == "conv2d_backward"]
    assert extra[(conv2[0], "conv2d_backward", "col2im_planes")] == pytest.approx(16 * 576 * 288 * 1e-9)
    assert extra[(conv2[0], "conv2d_forward", "gemm_out_to_nchw")] == pytest.approx(16 * 576 * 64 * 1e-9)
    assert all(what in ("col2im_planes", "gemm_out_to_nchw") for _, _, what in extra)  # nchw_to_gemm_in's fit


def rows_for(preds, factor):
    return [{"batch_size": p.batch_size, "step_seconds": p.step_seconds * factor} for p in preds]


def test_compare_why_plateau_and_summary():
    preds = predict.predict("lenet5", [1, 2, 4, 8, 16, 32, 64], "numpy", cal=synthetic())
    rows = predict.compare(preds, rows_for(preds, 1.25))
    assert [r["error"] for r in rows] == pytest.approx([1 / 1.25 - 1] * 7)
    assert all(r["miss"] for r in rows)
    w = predict.why(preds)
    assert len(w) == 4 and w[0]["us_per_sample"] >= w[-1]["us_per_sample"] and w[0]["fell_since"] == 32
    assert w[0]["reason"]
    cal = synthetic()
    cal.data.update(measured_at="synthetic", pass_disagreement={"curves": calibration.disagreement_summary([0.1, 0.3])})
    fp = predict.explanation(preds, rows_for(preds, 1.0), 0.05, cal)
    assert all(not r["miss"] for r in fp["rows"]) and fp["calibrated_at"] == "synthetic"
    assert fp["calibration_noise"] == ("the fastest two timings of each cell differed: its curves by a median of 20% "
                                       "(90th percentile 28%, 2 cells)")
    text = predict.summary(fp)
    assert "within +0% to +0%" in text and "per-sample floor is led by" in text


def test_the_table_and_the_kernel_listing():
    preds = predict.predict("mlp", [1, 16], "numpy", cal=synthetic())
    table = predict.format_table(preds, {16: {"step_seconds": preds[1].step_seconds * 2}})
    assert "-50.0%" in table and table.count("\n") == 2
    listing = predict.format_kernels(preds[1], {"linear_forward": preds[1].by_kernel()["linear_forward"]})
    assert "GEMM 16x256x784 (nt)" in listing and "+0.0%" in listing


def test_measured_rounds_alternate_in_order_and_keep_each_sizes_fastest_round():
    calls = []
    slow = {(1, 4)}  # (round, batch size) caught in a slow burst

    def measure_one(model_name, b, train_set, dtype, kernels=False):
        calls.append((b, kernels))
        round_ = sum(c[0] == b for c in calls) - 1
        seconds = b * 1e-3 * (3 if (round_, b) in slow else 1)
        traced = {"k": 1000 * seconds, "j": 5.0 - round_}  # each kernel keeps its own fastest round
        return {"batch_size": b, "step_seconds": seconds, **({"by_kernel": traced} if kernels else {})}
    references = iter(range(100))  # each reference timing: the next number

    def reference_one(dtype, b):
        calls.append(("reference", b))
        return float(next(references))
    out = predict.measure_rounds("mlp", [4, 1, 2], None, kernels_at=(4,), rounds=3, measure_one=measure_one,
                                 reference_one=reference_one)
    assert calls[:3] == [("reference", 4), ("reference", 64), (1, False)]  # right before each measurement
    # B=4 is measured 3rd, 4th and 9th: its references are 4, 5 and 6, 7 and 16, 17; its first round is kept
    assert out[4]["round_reference"] == [{4: 4.0, 64: 5.0}, {4: 6.0, 64: 7.0}, {4: 16.0, 64: 17.0}]
    assert out[4]["reference"] == {4: 4.0, 64: 5.0} and out[1]["reference"] == {4: 0.0, 64: 1.0}
    calls = [c for c in calls if c[0] != "reference"]
    assert [b for b, _ in calls] == [1, 2, 4, 4, 2, 1, 1, 2, 4]
    assert [b for b, k in calls if k] == [4, 4, 4]  # traced in every round
    assert out[4]["round_seconds"] == [4e-3, 12e-3, 4e-3] and out[4]["step_seconds"] == 4e-3
    assert out[4]["round_by_kernel"] == [{"k": 4.0, "j": 5.0}, {"k": 12.0, "j": 4.0}, {"k": 4.0, "j": 3.0}]
    assert out[4]["by_kernel"] == {"k": 4.0, "j": 3.0} and "by_kernel" not in out[1]
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        predict.measure_rounds("mlp", [1], None, rounds=0, measure_one=measure_one)


def test_machine_speed_is_the_reference_step_then_over_its_calibrated_time():
    cal = synthetic()
    cal.data["tiny"]["cnn_step"] = [[4, 1e-3], [64, 4e-3]]
    speed = predict.machine_speed(cal, {4: 1.5e-3, 64: 3e-3})
    assert speed == pytest.approx({4: 1.5, 64: 0.75})
    assert predict.speed_at(4, speed) == pytest.approx(1.5) and predict.speed_at(1, speed) == pytest.approx(1.5)
    assert predict.speed_at(16, speed) == pytest.approx(1.125)  # halfway in log B
    assert predict.speed_at(512, speed) == pytest.approx(0.75) and predict.speed_at(4, {}) is None
    preds = predict.predict("mlp", [4, 16], "numpy", cal=cal)
    measured = {4: {"step_seconds": preds[0].step_seconds * 1.5, "round_seconds": [3.0, 2.0],
                    "reference": {4: 1.5e-3, 64: 3e-3}},
                16: {"step_seconds": preds[1].step_seconds}}  # one round, no reference: no spread, no speed
    rows = predict.format_table(preds, predict.with_machine_speed(measured, cal)).splitlines()
    assert "spread" in rows[0] and "machine" in rows[0]
    assert "-33.3%" in rows[1] and "50%" in rows[1] and "x1.50" in rows[1]
    assert "+0.0%" in rows[2] and "x1." not in rows[2] and rows[2].count("%") == rows[1].count("%") - 1
    assert "machine" not in predict.format_table(preds, measured)  # no speed without the calibration's
    del cal.data["tiny"]["cnn_step"]
    assert predict.machine_speed(cal, {4: 1.5e-3}) == {}


def test_the_cli_predicts_measures_and_writes_json(tmp_path):
    cmd = [sys.executable, "-m", "minigrad.profile", "predict", "--quick", "--backend", "numpy", "--model", "mlp",
           "--batch-sizes", "1-4", "--dataset", "synthetic", "--measure", "--kernels-at", "4", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,  # its calibration cached in tmp_path
                          env={**os.environ, "MINIGRAD_DATA": str(tmp_path / "data")})
    assert proc.returncode == 0, proc.stderr
    assert "measured" in proc.stdout and "by kernel" in proc.stdout and "B=4: predicted step" in proc.stdout
    assert (tmp_path / "predict.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = json.loads((tmp_path / "predict.json").read_text())
    assert [p["batch_size"] for p in out["predicted"]] == [1, 2, 4]
    assert [m["batch_size"] for m in out["measured"]] == [1, 2, 4] and "by_kernel" in out["measured"][2]
    assert all(len(m["round_seconds"]) == 2 and m["step_seconds"] == min(m["round_seconds"]) for m in out["measured"])
    for m in out["measured"]:
        assert set(m["machine_speed"]) == {str(b) for b in calibration.REFERENCE_BATCHES}
        assert all(ratio > 0 for ratio in m["machine_speed"].values()) and len(m["round_reference"]) == 2
    assert "spread" in proc.stdout and "machine" in proc.stdout
    apart = out["pass_disagreement"]  # the calibration's noise, printed under the header and kept in the JSON
    assert set(apart) == {"curves", "gemm"}
    assert "calibration: the fastest two timings of each cell differed" in proc.stdout


# -- the GPU: a replayed graph of kernels, on a planted GPU calibration ------------------------------------------

PASS_GPU, GEMM_GPU = 2e-6, 5e-6      # every pass and whole kernel, every GEMM: these device seconds
REPLAY = {4: 100e-6, 16: 110e-6, 64: 120e-6}   # the planted replay cost of the synthetic CNN's step
HOST, SYNC, LAUNCH = {"conv2d_forward": 50e-6, "relu_forward": 1e-6}, 4e-6, 5e-6


def gpu_priced(term: plans.Term) -> float:
    return (GEMM_GPU if term.kind == "gemm" else PASS_GPU) * term.count


def gpu_device_seconds(net, batch):
    calls = predict.step_calls(net, batch, 4).calls
    return sum(gpu_priced(t) for _, c in calls for t in plans.plan("cupy", c, 1) if t.kind != "call")


def synthetic_gpu():
    from minigrad.profiling import gpu_calibration as gc

    dims, batches = [1, 65536], [1, 4096]
    curves = {name: [[1, PASS_GPU], [1 << 40, PASS_GPU]] for name in
              set(plans.CURVE_KERNELS) | {"im2col_t", "col2im_t", "channel_sums", "strided_copy", "concatenate",
                                           "add_bias_rows"}}
    net = calibration.synthetic_cnn("float32")
    return gc.GpuCalibration({
        "backend": "cupy", "device": "a planted GPU", "measured_at": "synthetic", "gemm_dims": dims,
        "gemm_batches": batches,
        "gemm": {layout: np.full((2, 2, 2, 2), GEMM_GPU).tolist() for layout in gc.GEMM_LAYOUTS},
        "curves": curves, "host": HOST, "node_seconds": 1e-6, "launch_seconds": LAUNCH, "sync_seconds": SYNC,
        "tiny": {"replayed": [[b, gpu_device_seconds(net, b) + r] for b, r in REPLAY.items()]}})


def test_the_gpu_plans_read_the_cupy_kernels():
    """lenet5's first convolution (1 -> 6 channels, 5x5, bias) at B=16 and B=1, and a linear layer."""
    conv = dict(N=16, C=1, H=28, W=28, F=6, KH=5, KW=5, stride=1, padding=0, bias=True, need_dx=False, itemsize=4)
    forward = plans.plan("cupy", plans.Call("conv2d_forward", conv), 1)
    assert [(t.kind, t.what, t.size) for t in forward[1:]] == [
        ("pass", "im2col_t", (16 * 26 * 576,)), ("pass", "concatenate", (6 * 26,)), ("gemm", "nn", (6, 576, 26, 16))]
    backward = plans.plan("cupy", plans.Call("conv2d_backward", conv), 1)
    assert [(t.what, t.size) for t in backward[1:]] == [
        ("nt", (6, 26, 576, 16)), ("channel_sums", (16 * 6 * 26,)), ("strided_copy", (150,)), ("strided_copy", (6,))]
    one = plans.plan("cupy", plans.Call("conv2d_backward", {**conv, "N": 1, "need_dx": True, "bias": False}), 1)
    assert [(t.what, t.size) for t in one[1:]] == [
        ("nt", (6, 25, 576, 1)), ("tn", (25, 576, 6, 1)), ("col2im_t", (784,))]
    linear = dict(N=8, IN=256, OUT=120, bias=True, need_dx=True, itemsize=4)
    assert [(t.what, t.size) for t in plans.plan("cupy", plans.Call("linear_backward", linear), 1)[1:]] == [
        ("nn", (8, 256, 120, 1)), ("tn", (120, 256, 8, 1)), ("channel_sums", (960,))]
    relu = plans.plan("cupy", plans.Call("relu_forward", {"x": (8, 6, 12, 12), "itemsize": 4}), 1)
    assert [(t.kind, t.size) for t in relu] == [("call", ()), ("kernel", (8 * 6 * 144,))]  # no row width


@pytest.mark.parametrize("model_name,batch", [("mlp", 8), ("lenet5", 16), ("convnet", 300)])
def test_a_gpu_step_is_its_kernels_device_time_and_the_replay_measured_on_the_synthetic_cnn(model_name, batch):
    net = models.get_model(model_name)
    p = predict.predict(model_name, [batch], "cupy", "float32", 1, 6000, synthetic_gpu())[0]
    # the replay's cost between the synthetic CNN's batch sizes, in log batch size
    replay = float(np.interp(np.log(batch), np.log(list(REPLAY)), list(REPLAY.values())))
    assert p.fixed == {"replay": pytest.approx(replay)}
    assert p.step_seconds == pytest.approx(gpu_device_seconds(net, batch) + replay, rel=1e-9)


def test_lenet5s_gpu_step_by_hand():
    """lenet5 at B=16, each call's launches written out from kernels/cupy_ops.py."""
    conv1_fwd = conv2_fwd = 2 * PASS_GPU + GEMM_GPU                  # im2col_t, the bias column, the GEMM
    conv1_bwd = GEMM_GPU + 3 * PASS_GPU                              # dW's GEMM, its sums, dW and db made contiguous
    conv2_bwd = conv1_bwd + GEMM_GPU + PASS_GPU                      # and the dx GEMM, col2im_t
    linears = 3 * (GEMM_GPU + PASS_GPU) + 3 * (2 * GEMM_GPU + PASS_GPU)  # forward + bias; dx, dW + db sums
    whole = 2 * 2 * PASS_GPU + 2 * 2 * PASS_GPU + 2 * PASS_GPU   # 2 fused relu+pools (each curve timed whole, its
                                                                  # two launches in it), 2 relus, the loss; each way
    updates = 10 * PASS_GPU
    device = conv1_fwd + conv2_fwd + conv1_bwd + conv2_bwd + linears + whole + updates
    p = predict.predict("lenet5", [16], "cupy", cal=synthetic_gpu())[0]
    assert [k.kernel for k in p.kernels].count("relu_maxpool2d_forward") == 2
    assert p.kernel_seconds == pytest.approx(device)


def test_the_tracer_sees_a_gpu_call_as_its_host_cost_or_a_launch_and_its_device_time():
    p = predict.predict("lenet5", [16], "cupy", cal=synthetic_gpu())[0]
    conv = next(k for k in p.kernels if k.kernel == "conv2d_forward")
    assert conv.traced == pytest.approx(SYNC + HOST["conv2d_forward"])           # the host is slower
    relu = next(k for k in p.kernels if k.kernel == "relu_forward")
    assert relu.traced == pytest.approx(SYNC + LAUNCH + PASS_GPU)                # the device is
    traced = p.by_kernel(traced=True)
    assert traced["relu_forward"] == pytest.approx(2 * relu.traced)
    assert p.by_kernel()["relu_forward"] == pytest.approx(2 * PASS_GPU)
    listing = predict.format_kernels(p, {"relu_forward": 2 * relu.traced})
    assert "+0.0%" in listing and "GEMM 16 x 6x576x26 (nn)" in listing and "replayed graph's launch" in listing


@pytest.mark.parametrize("name,model_name,calibrated",
                         [("numpy", "lenet5", synthetic), ("cupy", "convnet", synthetic_gpu)])
def test_prediction_runs_no_kernel(name, model_name, calibrated):
    def refuse(name, fn):
        def never(*args):
            raise AssertionError(f"predict ran the kernel {name}")
        return never

    backend.set_kernel_hook(refuse)
    try:
        preds = predict.predict(model_name, [1, 256], name, cal=calibrated())
    finally:
        backend.set_kernel_hook(None)
    assert preds[1].step_seconds > preds[0].step_seconds > 0
