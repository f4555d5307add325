import pytest

from minigrad.profiling import reconcile, verdict

PEAK, BW = 100.0, 10.0  # GFLOP/s, GB/s


def _traced(b, kernels, outside_ms, steps=2):
    rows = [{"kernel": k, "calls": steps, "total_ms": ms * steps, "flops": fl * steps, "bytes": by * steps}
            for k, ms, fl, by in kernels]
    rows.append({"kernel": verdict.OUTSIDE, "calls": steps, "total_ms": outside_ms * steps, "flops": 0.0,
                 "bytes": 0.0})
    step = (sum(ms for _, ms, _, _ in kernels) + outside_ms) / 1e3
    return {"batch_size": b, "steps": steps, "step_seconds": step, "kernels": rows}


def test_verdicts_on_synthetic_kernels_at_known_ceilings():
    traced = [_traced(64, [("conv2d_forward", 1.0, 0.08e9, 1e6),    # 80 GFLOP/s: 80% of peak
                           ("relu_forward", 1.0, 1e6, 8e6),         # 8 GB/s: 80% of bandwidth
                           ("maxpool2d_forward", 1.0, 1e6, 1e6)],   # 1% and 10%: neither
                      outside_ms=1.0)]
    v = {x["kernel"]: x for x in verdict.kernel_verdicts(traced, PEAK, BW)}
    assert v["conv2d_forward"]["verdict"] == "compute-bound"
    assert v["conv2d_forward"]["compute_share"] == pytest.approx(0.8)
    assert v["relu_forward"]["verdict"] == "memory-bound" and v["relu_forward"]["bandwidth_share"] == pytest.approx(0.8)
    assert v["maxpool2d_forward"]["verdict"] == "overhead-bound"
    assert v["conv2d_forward"]["roofline_seconds_per_step"] == pytest.approx(0.8e-3)
    assert v["relu_forward"]["roofline_seconds_per_step"] == pytest.approx(0.8e-3)


def test_the_floor_splits_into_ceiling_and_measured_excess_that_add_up():
    traced = _traced(100, [("conv2d_forward", 2.0, 0.1e9, 1e6), ("relu_forward", 1.0, 1e6, 5e6)], outside_ms=1.0)
    vs = verdict.kernel_verdicts([traced], PEAK, BW)
    split = verdict.floor_split(100, traced["step_seconds"], traced, vs, copies_seconds_per_step=0.4e-3,
                                allocation={"minor_faults_per_step": 50, "traced_peak_bytes": 2**20})
    assert split["floor_us_per_sample"] == pytest.approx(40.0)       # 4 ms / 100 samples
    assert split["ceiling_us_per_sample"] == pytest.approx(15.0)     # 1 ms + 0.5 ms at the ceilings
    parts = {p["name"].split(" ")[0]: p["us_per_sample"] for p in split["parts"]}
    assert parts["Python,"] == pytest.approx(10.0) and parts["im2col/col2im"] == pytest.approx(4.0)
    assert parts["GEMM"] == pytest.approx(6.0) and parts["pooling,"] == pytest.approx(5.0)
    assert split["unattributed_us_per_sample"] == pytest.approx(0.0, abs=1e-9)
    text = verdict.summary(split)
    assert "40.0 µs" in text and "15.0 µs (38%)" in text and "50 minor page faults" in text


def test_reconciliation_reports_shares_and_flags_a_synthetic_disagreement():
    sweep = [{"batch_size": 1, "step_seconds": 1e-3}, {"batch_size": 64, "step_seconds": 10e-3}]
    traced = [{"batch_size": 1, "step_seconds": 1.05e-3}, {"batch_size": 64, "step_seconds": 10.2e-3}]
    causes = [{"batch_size": 1, "steps": 10, "step_seconds": 1.48e-3,
               "causes_us_per_sample": {"GEMM/BLAS": 1110.0, "autograd/tape": 370.0, "data loading": 20.0}},
              {"batch_size": 64, "steps": 2, "step_seconds": 10.5e-3,
               "causes_us_per_sample": {"GEMM/BLAS": 164.0, "data loading": 1.0}}]
    rows = reconcile.instruments(sweep, traced, causes, [])
    assert rows[0]["instruments"]["cprofile"]["share"] == pytest.approx(1.48)
    assert rows[0]["instruments"]["tracer"]["overhead"] == pytest.approx(0.05)
    # scaled to add up to the untimed step (1000 µs per sample at B=1), data loading kept apart
    assert rows[0]["causes_us_per_sample_scaled"] == pytest.approx({"GEMM/BLAS": 750.0, "autograd/tape": 250.0})
    assert rows[0]["data_loading_us_per_sample"] == 20.0 and rows[0]["cprofile_scale"] == pytest.approx(1000 / 1480)
    flagged = reconcile.warnings(rows)
    assert flagged == ["cprofile inflates the step by 48% at B=1 (1.480 ms against the untimed 1.000 ms); its "
                       "causes are scaled to the untimed step"]
