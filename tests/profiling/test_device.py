"""The GPU explanation (profiling/device.py) on measurements recorded on an NVIDIA H100 (recorded_gpu/), the
tracer's CUDA-event branch with a fake event, and the GPU ceilings with a fake CuPy."""

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad import backend
from minigrad.profiling import device, tracer
from minigrad.profiling.tracer import OUTSIDE, Tracer

RECORDED = Path(__file__).with_name("recorded_gpu")
TABLES = sorted(RECORDED.glob("trace-*-B*.txt"))
# kernel calls per step in the recorded traces (sgd_update: one per parameter: 10 and 8), made before the models
# ran ReLU + MaxPool2d as one fused kernel; a lenet5 step now makes 4 fewer (two such pairs, forward and backward)
LENET5_CALLS, CONVNET_CALLS = 34, 26
LENET5_FUSED_CALLS = LENET5_CALLS - 4


def recorded_ceilings() -> dict:
    return json.loads((RECORDED / "gpu_ceilings.json").read_text())


def traced(model: str) -> list[dict]:
    paths = sorted(RECORDED.glob(f"trace-{model}-B*.txt"), key=lambda p: int(p.stem.rsplit("B", 1)[1]))
    return [entry for p in paths for entry in device.parse_trace_table(p.read_text())]


def tracer_row_keys() -> set:
    """The keys of Tracer.table()'s rows, from a real (CPU) trace."""
    with mg.use_backend("numpy"):
        with Tracer() as tr:
            with tr.step():
                backend.k.relu_forward(np.ones((2, 3), dtype=np.float32))
        rows = tr.table()
    assert {r["kernel"] for r in rows} == {"relu_forward", OUTSIDE}
    assert all(set(r) == set(rows[0]) for r in rows)
    return set(rows[0])


# ----------------------------------------------------------------------------------------------------------
# ceilings


def test_from_recorded_has_measure_gpus_shape():
    c = device.from_recorded(recorded_ceilings())
    assert set(c) == set(device.KEYS)
    assert c["device"] == "NVIDIA H100 80GB HBM3"
    assert c["sgemm_gflops"] == pytest.approx({"256": 792.1552956895421, "1024": 37925.32495126961,
                                               "4096": 51368.847295426815})
    assert list(c["sgemm_gflops"]) == ["256", "1024", "4096"]
    assert c["peak_gflops"] == pytest.approx(51636.795632731264)  # gemm_float32_gflops, the best figure given
    assert c["copy_gbps"] == pytest.approx(3014.5029810492438)
    assert c["launch_us"] == pytest.approx(7.535968017578125)
    assert c["launch_us_host"] == pytest.approx(7.377663199999773)
    assert device.from_recorded(c) == c                      # measure_gpu's shape passes through unchanged
    assert device.from_recorded(RECORDED / "gpu_ceilings.json") == c
    with pytest.raises(ValueError, match="launch_us_event_timed"):
        device.from_recorded({"sgemm_256_gflops": 1.0, "copy_GBps_read_plus_write": 1.0})


class _FakeCupy:
    """Just enough of CuPy for measure_gpu, on a fake device clock: a matmul runs at 1 TFLOP/s, a copy moves
    100 GB/s (read + write), a kernel launch takes 5 µs; events read that clock."""

    def __init__(self):
        self.ms = 0.0
        fake = self
        self.float32 = np.float32
        self.__version__ = "0.fake"

        class Event:
            def record(self, stream=None):
                self.at = fake.ms

            def synchronize(self):
                pass

        class Device:
            id = 0

            def synchronize(self):
                pass

        class RawKernel:
            def __init__(self, code, name):
                assert name in code

            def __call__(self, grid, block, args):
                fake.ms += 5e-3

        self.RawKernel = RawKernel
        self.cuda = types.SimpleNamespace(
            Event=Event, Device=Device, get_elapsed_time=lambda a, b: b.at - a.at,
            runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"Fake GPU 9000"}))

    def ones(self, shape, dtype=None):
        return np.zeros(shape, dtype=np.int8)  # the shape is all the fake needs

    empty = ones

    def matmul(self, a, b, out=None):
        self.ms += 2 * a.shape[0] * a.shape[1] * b.shape[1] / 1e12 * 1e3

    def copyto(self, dst, src):
        self.ms += 2 * 4 * src.size / 100e9 * 1e3


def test_measure_gpu_times_on_the_device_clock(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy())
    c = device.measure_gpu(repeats=3, sizes=(64, 128), copy_mb=1, launches=100)
    assert set(c) == set(device.KEYS) == set(device.from_recorded(recorded_ceilings()))
    assert c["device"] == "Fake GPU 9000" and c["cupy"] == "0.fake" and c["measured_at"]
    assert c["sgemm_gflops"] == pytest.approx({"64": 1000.0, "128": 1000.0})
    assert c["peak_gflops"] == pytest.approx(1000.0)
    assert c["copy_gbps"] == pytest.approx(100.0)           # bytes read plus bytes written
    assert c["launch_us"] == pytest.approx(5.0)
    assert c["launch_us_host"] > 0                          # the host's clock: whatever it is here
    assert device.from_recorded(json.loads(json.dumps(c))) == c


def test_load_gpu_caches_per_device_name(monkeypatch, tmp_path):
    calls = []

    def fake_measure(**kwargs):
        calls.append(kwargs)
        return {"device": name["now"], "measured_at": f"t{len(calls)}", "launch_us": 7.5, "kwargs": kwargs}

    name = {"now": "GPU A"}
    monkeypatch.setattr(device, "measure_gpu", fake_measure)
    monkeypatch.setattr(device, "current_device_name", lambda: name["now"])
    first = device.load_gpu(cache_dir=tmp_path, repeats=2)
    assert calls == [{"repeats": 2}] and first["measured_at"] == "t1"
    cached = list(tmp_path.glob("gpu-ceilings-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == first
    assert device.load_gpu(cache_dir=tmp_path) == first and len(calls) == 1      # served from the cache
    again = device.load_gpu(remeasure=True, cache_dir=tmp_path)
    assert len(calls) == 2 and again["measured_at"] == "t2"
    assert device.load_gpu(cache_dir=tmp_path) == again                            # the cache was replaced
    name["now"] = "GPU B"                                                          # another device: its own file
    other = device.load_gpu(cache_dir=tmp_path)
    assert len(calls) == 3 and other["device"] == "GPU B"
    assert len(list(tmp_path.glob("gpu-ceilings-*.json"))) == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_device_module_imports_without_cupy():
    code = ("import sys, minigrad.profiling.device, minigrad.profiling.tracer; "
            "assert 'cupy' not in sys.modules, 'cupy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------------------
# recorded traces


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.stem)
def test_parse_trace_table_reads_every_recorded_table(path):
    model, b = path.stem.split("-")[1], int(path.stem.rsplit("B", 1)[1])
    [entry] = device.parse_trace_table(path.read_text())
    assert entry["batch_size"] == b and entry["steps"] == 5
    rows = entry["kernels"]
    assert all(set(r) == tracer_row_keys() for r in rows)                # the tracer's row shape
    assert rows[-1]["kernel"] == OUTSIDE and rows[-1]["calls"] == 5
    assert sum(r["calls"] for r in rows[:-1]) == 5 * (LENET5_CALLS if model == "lenet5" else CONVNET_CALLS)
    total_ms = sum(r["total_ms"] for r in rows)
    assert entry["step_seconds"] == pytest.approx(total_ms / 1e3 / 5)
    assert entry["outside_fraction"] == pytest.approx(rows[-1]["total_ms"] / total_ms)
    assert abs(100 * entry["outside_fraction"] - entry["outside_pct_printed"]) <= 0.5 + 1e-9  # the header agrees
    assert sum(r["pct_of_steps"] for r in rows) == pytest.approx(100.0)
    assert all(r["flops"] == 0.0 and r["gflops"] is None and r["device_ms"] is None for r in rows)
    # the rows as printed, in the printed order
    printed = [line.split() for line in path.read_text().splitlines() if " calls " in line]
    assert [(r["kernel"], r["calls"], r["total_ms"]) for r in rows] == \
        [(" ".join(p[:-4]), int(p[-4]), float(p[-2])) for p in printed]


def test_parse_trace_table_reads_several_blocks_and_refuses_what_it_cannot():
    text = (RECORDED / "trace-lenet5-B1.txt").read_text() + (RECORDED / "trace-lenet5-B16.txt").read_text()
    assert [e["batch_size"] for e in device.parse_trace_table(text)] == [1, 16]
    with pytest.raises(ValueError, match="header"):
        device.parse_trace_table("relu_forward 5 calls 1.0 ms")
    with pytest.raises(ValueError, match="outside kernels"):
        device.parse_trace_table("B=4: 10% of the step outside kernels\n  relu_forward  5 calls  1.00 ms\n")


def test_parse_chrome_trace_keeps_the_flops():
    for name, b in (("trace-lenet5-B1.trace.json", 1), ("trace-lenet5-B4096.trace.json", 4096)):
        trace = json.loads((RECORDED / name).read_text())
        entry = device.parse_chrome_trace(RECORDED / name)
        assert entry["batch_size"] == b and entry["steps"] == 5
        step_us = [e["dur"] for e in trace["traceEvents"] if e.get("ph") == "X" and e["tid"] == 1]
        assert entry["step_seconds"] == pytest.approx(sum(step_us) / 1e6 / 5)
        rows = {r["kernel"]: r for r in entry["kernels"]}
        assert set(next(iter(rows.values()))) == tracer_row_keys()
        assert sum(r["calls"] for k, r in rows.items() if k != OUTSIDE) == 5 * LENET5_CALLS
        assert sum(r["pct_of_steps"] for r in rows.values()) == pytest.approx(100.0)
        conv = rows["conv2d_forward"]
        assert conv["flops"] > 0 and conv["gflops"] == pytest.approx(conv["flops"] / conv["total_ms"] / 1e6)


# ----------------------------------------------------------------------------------------------------------
# what bounds the step


def by_batch(bounds: dict) -> dict:
    return {r["batch_size"]: r for r in bounds["rows"]}


def test_lenet5_on_the_h100_is_launch_bound_until_256():
    entries = traced("lenet5")
    bounds = device.gpu_bounds(entries, recorded_ceilings())
    rows = by_batch(bounds)
    assert list(rows) == [1, 16, 256, 4096] and bounds["timing"] == "host"
    assert bounds["device"] == "NVIDIA H100 80GB HBM3" and bounds["launch_us"] == pytest.approx(7.536, abs=1e-3)
    for r in rows.values():
        assert r["launches_per_step"] == LENET5_CALLS
        assert r["launch_floor_ms"] == pytest.approx(LENET5_CALLS * 7.535968017578125e-3)
        assert r["untraced_step_ms"] is None and r["gemm"] == [] and r["gemm_sgemm_share"] is None
    # B=1: 16.91 ms in kernels and 8.20 ms outside over 5 steps
    one = rows[1]
    assert one["step_ms"] == pytest.approx((16.91 + 8.20) / 5)
    assert one["kernel_share"] == pytest.approx(16.91 / 25.11)
    assert one["per_call_us"] == pytest.approx(16.91e3 / 170)
    assert one["launch_floor_share"] == pytest.approx(LENET5_CALLS * 7.535968017578125e-3 / one["step_ms"])
    # the kernels' host time is over half the step, yet a call costs ~100 µs at every B up to 256: that is not
    # device work, and the estimate of it stays under 10% of the step
    assert one["kernel_share"] > device.BOUND
    for b in (1, 16, 256):
        assert 95 < rows[b]["per_call_us"] < 115
        assert rows[b]["busy_share"] < 0.10 and rows[b]["launch_floor_share"] < 0.06
        assert rows[b]["verdict"] == device.LAUNCH_BOUND
    assert max(r["step_ms"] for b, r in rows.items() if b <= 256) < 1.1 * min(r["step_ms"] for b, r in rows.items()
                                                                                if b <= 256)
    # B=4096: conv2d_backward alone grew from 2.91 ms (B=1, its cheapest per call) to 59.84 ms per 10 calls
    big = rows[4096]
    assert big["step_ms"] == pytest.approx((84.53 + 9.58) / 5)
    assert big["busiest_kernel"] == "conv2d_backward"
    assert big["busy_ms"] >= (59.84 - 2.91) / 5 - 1e-9
    assert 0.70 < big["busy_share"] < 0.75 and big["verdict"] == device.GPU_BOUND
    assert bounds["launch_bound_until"] == 256 and bounds["gpu_bound_from"] == 4096


def test_convnet_on_the_h100_is_launch_bound_until_16():
    bounds = device.gpu_bounds(traced("convnet"), recorded_ceilings())
    rows = by_batch(bounds)
    assert list(rows) == [1, 16, 256, 1024]
    assert all(r["launches_per_step"] == CONVNET_CALLS for r in rows.values())
    assert rows[1]["step_ms"] == pytest.approx((12.61 + 5.87) / 5)
    assert rows[1]["kernel_share"] == pytest.approx(12.61 / 18.48) and rows[1]["kernel_share"] > device.BOUND
    assert rows[1]["busy_share"] < 0.05 and rows[16]["busy_share"] < 0.15
    assert [r["verdict"] for r in rows.values()] == [device.LAUNCH_BOUND] * 2 + [device.GPU_BOUND] * 2
    assert 0.65 < rows[256]["busy_share"] < 0.70 and rows[1024]["busy_share"] > 0.85
    assert rows[1024]["busiest_kernel"] == "conv2d_backward"
    assert bounds["launch_bound_until"] == 16 and bounds["gpu_bound_from"] == 256


def test_gemm_efficiency_where_the_flops_are_known():
    entries = [device.parse_chrome_trace(RECORDED / f"trace-lenet5-B{b}.trace.json") for b in (1, 4096)]
    bounds = device.gpu_bounds(entries, recorded_ceilings())
    rows = by_batch(bounds)
    assert rows[1]["verdict"] == device.LAUNCH_BOUND and rows[4096]["verdict"] == device.GPU_BOUND
    big = rows[4096]
    assert {g["kernel"] for g in big["gemm"]} == set(device.GEMM_KERNELS)
    gemm = [k for k in entries[1]["kernels"] if k["kernel"] in device.GEMM_KERNELS]
    expected = sum(k["flops"] for k in gemm) / sum(k["total_ms"] for k in gemm) / 1e6
    assert big["gemm_gflops"] == pytest.approx(expected)
    assert big["gemm_sgemm_share"] == pytest.approx(expected / 51636.795632731264)
    assert big["gemm_sgemm_share"] < 0.02             # the conv GEMMs here are thin: ~1% of the sgemm peak
    for g in big["gemm"]:
        assert g["sgemm_share"] == pytest.approx(g["gflops"] / 51636.795632731264)


def test_device_timed_rows_and_a_single_batch_size():
    entries = traced("lenet5")
    for e in entries:  # as the tracer gives them on the GPU: every kernel row with its CUDA-event time
        for k in e["kernels"]:
            k["device_ms"] = None if k["kernel"] == OUTSIDE else 0.9 * k["total_ms"]
    bounds = device.gpu_bounds(entries, recorded_ceilings(), step_rows=[{"batch_size": 1, "step_seconds": 0.0028}])
    rows = by_batch(bounds)
    assert bounds["timing"] == "cuda-events"
    assert rows[1]["kernel_ms"] == pytest.approx(0.9 * 16.91 / 5)
    assert rows[1]["untraced_step_ms"] == pytest.approx(2.8) and rows[16]["untraced_step_ms"] is None
    assert bounds["launch_bound_until"] == 256 and bounds["gpu_bound_from"] == 4096
    # one batch size cannot separate the host's per-call cost from device work: the whole kernel time counts
    [only] = device.gpu_bounds(traced("lenet5")[:1], recorded_ceilings())["rows"]
    assert only["busy_share"] == pytest.approx(only["kernel_share"])
    assert device.gpu_bounds([], recorded_ceilings())["launch_bound_until"] is None


def test_headline_states_the_computed_numbers():
    ceilings = recorded_ceilings()
    for model, low, high in (("lenet5", "B=1..256", 4096), ("convnet", "B=1..16", 256)):
        bounds = device.gpu_bounds(traced(model), ceilings)
        text = device.gpu_headline(model, bounds, ceilings)
        rows = by_batch(bounds)
        launch_bound = [r for r in bounds["rows"] if r["verdict"] == device.LAUNCH_BOUND]
        last = launch_bound[-1]
        busy = [f"{100 * r['busy_share']:.0f}" for r in launch_bound]
        assert text.startswith(f"{model} on NVIDIA H100 80GB HBM3:")
        assert low in text
        assert f"busy for {min(busy, key=int)}–{max(busy, key=int)}% of it" in text
        floor = f"{last['launches_per_step']:.0f} kernel launches per step x 7.5 µs = {last['launch_floor_ms']:.2f} ms"
        assert floor in text
        assert f"{100 * last['launch_floor_share']:.0f}% of the step" in text
        assert f"stops being launch/Python-bound at B={high}" in text
        assert f"busy for {100 * rows[high]['busy_share']:.0f}% of a {rows[high]['step_ms']:.1f} ms step" in text
    lenet = device.gpu_headline("lenet5", device.gpu_bounds(traced("lenet5"), ceilings), ceilings)
    assert "34 kernel launches per step x 7.5 µs = 0.26 ms" in lenet and "busy for 2–8% of it" in lenet
    only_low = device.gpu_bounds(traced("lenet5")[:3], ceilings)
    assert "launch/Python-bound at every measured batch size up to B=256" in \
        device.gpu_headline("lenet5", only_low, ceilings)
    flops = device.gpu_bounds([device.parse_chrome_trace(RECORDED / f"trace-lenet5-B{b}.trace.json")
                               for b in (1, 4096)], ceilings)
    share = by_batch(flops)[4096]["gemm_sgemm_share"]
    assert f"GEMM kernels reach {100 * share:.1f}% of the 51.6 TFLOP/s sgemm peak" in \
        device.gpu_headline("lenet5", flops, ceilings)


# ----------------------------------------------------------------------------------------------------------
# the tracer's CUDA-event branch


class FakeEvent:
    """Stands in for tracer.CudaEvent: each record() ticks a clock by 0.25 ms; reads are logged."""

    clock = 0.0
    recorded = 0
    reads: list = []

    def record(self):
        FakeEvent.clock += 0.25
        FakeEvent.recorded += 1
        self.at = FakeEvent.clock

    def elapsed_ms(self, end):
        FakeEvent.reads.append(FakeEvent.recorded)
        return end.at - self.at


def test_tracer_times_kernels_with_device_events_on_the_gpu(monkeypatch):
    FakeEvent.clock, FakeEvent.recorded, FakeEvent.reads = 0.0, 0, []
    monkeypatch.setattr(tracer, "device_event", FakeEvent)
    with mg.use_backend("numpy"):
        monkeypatch.setattr(backend, "device", lambda name=None: "cuda")  # what the cupy backend says
        mg.manual_seed(0)
        model = mg.models.lenet5()
        opt = mg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
        with Tracer() as tr:
            for _ in range(2):
                with tr.step():
                    F.cross_entropy(model(mg.Tensor(x)), np.arange(2)).backward()
                    opt.step()
                    opt.zero_grad()
        monkeypatch.undo()
    per_step = len(tr.events) // 2
    assert per_step == LENET5_FUSED_CALLS
    assert all(e.device_seconds == pytest.approx(0.25e-3) for e in tr.events)  # start and end: one tick apart
    # every event of a step was read after the step's last kernel call, none during it
    assert FakeEvent.reads == [2 * per_step] * per_step + [4 * per_step] * per_step
    for s in tr.steps:
        assert s.device_kernel_seconds == pytest.approx(per_step * 0.25e-3)
        assert s.kernel_seconds == pytest.approx(sum(e.seconds for e in tr.events if e.step == s.index))
    rows = {r["kernel"]: r for r in tr.table()}
    assert rows["sgd_update"]["device_ms"] == pytest.approx(20 * 0.25)
    assert rows[OUTSIDE]["device_ms"] is None
    assert "device ms" in tr.format_table()
    trace = tr.chrome_trace()["traceEvents"]
    assert all(e["args"]["device_ms"] == pytest.approx(0.25) for e in trace if e.get("tid") == 2 and e["ph"] == "X")
    # the table feeds gpu_bounds as a device-timed row set
    entry = {"batch_size": 2, "steps": 2, "step_seconds": sum(s.seconds for s in tr.steps) / 2,
             "outside_fraction": 0.0, "kernels": tr.table()}
    assert device.gpu_bounds([entry], recorded_ceilings())["timing"] == "cuda-events"


def test_tracer_on_the_cpu_makes_no_events(monkeypatch):
    def no_events():
        raise AssertionError("a device event on the CPU")

    monkeypatch.setattr(tracer, "device_event", no_events)
    with mg.use_backend("numpy"):
        with Tracer() as tr:
            with tr.step():
                backend.k.relu_forward(np.ones((2, 3), dtype=np.float32))
    assert tr.events[0].device_seconds is None and tr.steps[0].device_kernel_seconds is None
    assert all(r["device_ms"] is None for r in tr.table())
    assert "device ms" not in tr.format_table()
    assert "device_ms" not in json.dumps(tr.chrome_trace())


# ----------------------------------------------------------------------------------------------------------
# on a real GPU (skipped without one)


def test_measure_gpu_on_this_device(cuda, tmp_path):
    c = device.load_gpu(cache_dir=tmp_path, repeats=2, sizes=(256, 1024), copy_mb=16, launches=200)
    assert c["device"] == device.current_device_name()
    assert set(c["sgemm_gflops"]) == {"256", "1024"} and c["peak_gflops"] > 0
    assert c["copy_gbps"] > 0 and 0 < c["launch_us"] < 1000 and c["launch_us_host"] > 0


def test_tracer_device_times_on_this_device(cuda):
    with mg.use_backend("cupy"):
        mg.manual_seed(0)
        model = mg.models.lenet5()
        opt = mg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = backend.k.asarray(np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32))
        with Tracer() as tr:
            with tr.step():
                F.cross_entropy(model(mg.Tensor(x)), backend.k.asarray(np.arange(8))).backward()
                opt.step()
    assert all(e.device_seconds is not None and 0 <= e.device_seconds for e in tr.events)
    # the device span sits inside the host's time of the call (a little slack for the clocks' resolution)
    assert all(e.device_seconds <= e.seconds + 50e-6 for e in tr.events)


def test_headline_says_when_the_untraced_steps_were_replayed_from_a_graph():
    """The traced step is eager (the tracer times each kernel); when the sweep's untraced steps were replayed
    from a CUDA graph, the headline says so, next to their time, and names what removed the host's cost."""
    ceilings = recorded_ceilings()
    sizes = [e["batch_size"] for e in traced("lenet5")]
    for share, said in ((1.0, True), (0.0, False), (None, False)):
        rows = [{"batch_size": b, "step_seconds": 0.0002} | ({} if share is None else {"captured_share": share})
                for b in sizes]
        bounds = device.gpu_bounds(traced("lenet5"), ceilings, step_rows=rows)
        assert by_batch(bounds)[1]["untraced_captured_share"] == share
        text = device.gpu_headline("lenet5", bounds, ceilings)
        assert "(0.2 ms untraced" in text
        assert ("ms untraced, replayed from a CUDA graph)" in text) == said
        assert ("replays the whole step as one CUDA graph" in text) == said
