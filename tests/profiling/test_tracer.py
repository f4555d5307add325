import json

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad import backend
from minigrad.profiling import costs
from minigrad.profiling.tracer import Tracer


def _step(model, opt, x, y):
    F.cross_entropy(model(mg.Tensor(x)), y).backward()
    opt.step()
    opt.zero_grad()


def test_tracer_sees_every_kernel_and_closes_the_step_time(backend, tmp_path):
    mg.manual_seed(0)
    model = mg.models.lenet5()
    opt = mg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    y = np.arange(4)
    with Tracer() as tr:
        for _ in range(2):
            with tr.step():
                _step(model, opt, x, y)
    names = [e.name for e in tr.events if e.step == 0]
    assert names.count("conv2d_forward") == 2 and names.count("conv2d_backward") == 2
    assert names.count("linear_forward") == 3 and names.count("sgd_update") == 10
    assert names.count("softmax_xent_forward") == 1
    for s in tr.steps:  # kernels + outside = step, exactly, by construction
        assert s.kernel_seconds == pytest.approx(sum(e.seconds for e in tr.events if e.step == s.index))
        assert 0 < s.kernel_seconds <= s.seconds
    # backward costs come from the forward's shapes: a conv backward does twice the forward's FLOPs (+ bias),
    # but the first one, whose input (the images) needs no gradient, only its dw (and db)
    conv_f = [e.flops for e in tr.events if e.name == "conv2d_forward" and e.step == 0]
    conv_b = [e.flops for e in tr.events if e.name == "conv2d_backward" and e.step == 0]
    assert conv_b[::-1] == pytest.approx([conv_f[0], 2 * conv_f[1]], rel=0.01)  # backward runs in reverse order
    rows = {r["kernel"]: r for r in tr.table()}
    assert rows["conv2d_forward"]["calls"] == 4 and rows["conv2d_forward"]["gflops"] > 0
    assert sum(r["pct_of_steps"] for r in rows.values()) == pytest.approx(100.0)
    assert "(outside kernels)" in tr.format_table()
    path = tmp_path / "trace.json"
    tr.save_chrome_trace(path)
    trace = json.loads(path.read_text())
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(complete) == len(tr.events) + len(tr.steps)
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in complete)


def test_a_tracer_without_detail_times_every_call_and_computes_no_costs(backend, monkeypatch):
    """detail=False: the same calls and step accounting, no shapes or costs (their code is never run)."""
    def refuse(*args):
        raise AssertionError("a tracer without detail computed a cost")
    for name in ("kernel_costs", "input_gradient_cost", "update_cost"):
        monkeypatch.setattr(costs, name, refuse)
    mg.manual_seed(0)
    model = mg.models.lenet5()
    opt = mg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with Tracer(detail=False) as tr:
        for _ in range(2):
            with tr.step():
                _step(model, opt, x, np.arange(4))
    names = [e.name for e in tr.events if e.step == 1]
    assert names.count("conv2d_backward") == 2 and names.count("sgd_update") == 10 and len(names) == 30
    assert all(e.shapes == () and e.flops == 0.0 and e.seconds > 0 for e in tr.events)
    for s in tr.steps:
        assert s.kernel_seconds == pytest.approx(sum(e.seconds for e in tr.events if e.step == s.index))
        assert 0 < s.kernel_seconds <= s.seconds


def test_tracing_off_leaves_the_bare_kernels_in_the_table():
    bare = backend.backend_module().conv2d_forward
    with Tracer():
        assert backend.k.conv2d_forward is not bare
    assert backend.k.conv2d_forward is bare
