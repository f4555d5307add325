"""minigrad.graphs: when the training loop replays its step from a CUDA graph, checked on the CPU with a
stand-in graph (the NumPy backend plus a ``StepGraph`` that re-runs the recorded function), and on a GPU
against the eager step bit for bit.

The stand-in behaves like a recording where it matters to the policy: recording runs nothing, a replay
copies the batch into the graph's own input arrays, and it fails the test if it is replayed with
hyperparameters other than those it was recorded with (a real graph would silently use the old ones).
"""

from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest

import minigrad as mg
from minigrad import backend, data, graphs, loop, nn, optim


class StandInGraph:
    recorded = 0

    def __init__(self, fn, *inputs):
        StandInGraph.recorded += 1
        self.fn, self.inputs = fn, [np.empty_like(a) for a in inputs]
        opt = fn.__self__.optimizer
        self.scalars = (opt.lr, opt.momentum, opt.nesterov, opt.weight_decay)
        self.optimizer = opt

    def replay(self, *arrays):
        opt = self.optimizer
        assert (opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == self.scalars, "replayed stale scalars"
        for dst, src in zip(self.inputs, arrays, strict=True):
            dst[...] = src
        return self.fn(*self.inputs)


class FailingGraph:
    def __init__(self, fn, x, y):
        # a recording that got as far as assigning gradients (which a real one never computes), then failed
        tl = fn.__self__
        tl.adapter.backward(tl.adapter.loss(tl.adapter.forward(tl.model, x), y), None)
        for p in tl.model.parameters():
            p.grad = p.grad * np.float32(np.nan)
        raise RuntimeError("cuBLAS refused")


@pytest.fixture
def graph_backend(monkeypatch):
    """The NumPy backend with a StepGraph: the stand-in by default, ``use(cls)`` for another."""
    StandInGraph.recorded = 0
    state = {"cls": StandInGraph}
    with mg.use_backend("numpy"):
        real = backend.backend_module()
        monkeypatch.setattr(backend, "backend_module",
                            lambda: types.SimpleNamespace(**vars(real), StepGraph=state["cls"]))
        yield lambda cls: state.__setitem__("cls", cls)


def _run(capture, n=44, batch=8, epochs=2, opt="sgd", warmup=0, model="lenet5"):
    train_set, _ = data.synthetic_mnist(n_train=n, n_test=4, seed=3)
    mg.manual_seed(0)
    m = mg.models.get_model(model)
    o = (optim.SGD(m.parameters(), lr=0.05, momentum=0.9) if opt == "sgd" else optim.Adam(m.parameters()))
    w = optim.LinearWarmup(o, warmup) if warmup else None
    tl = loop.TrainLoop(m, o, warmup=w, capture=capture)
    loader = data.DataLoader(train_set, batch, shuffle=True, seed=1, normalize=True)
    records = [r for e in range(1, epochs + 1) for r in tl.epoch(loader, e)]
    return tl, m, records


def _same_training(a, b):
    (_, ma, ra), (_, mb, rb) = a, b
    assert [r.loss for r in ra] == [r.loss for r in rb]
    assert [r.update for r in ra] == [r.update for r in rb]
    for p, q in zip(ma.parameters(), mb.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_replayed_training_equals_eager_and_records_each_shape_on_its_second_step(graph_backend):
    captured = _run(True)
    _same_training(captured, _run(False))
    flags = [r.captured for r in captured[2]]
    # 44 samples in batches of 8: five full batches and a partial one of 4, twice. The first full batch runs
    # eagerly, the second is recorded (and replayed); the partial one is never on two steps in a row.
    assert flags == [False, True, True, True, True, False] + [True] * 5 + [False]
    assert StandInGraph.recorded == 1
    assert captured[0].graphs.reason is None


def test_a_changing_learning_rate_runs_eagerly_until_it_holds_still(graph_backend):
    captured = _run(True, n=64, epochs=1, warmup=3)
    _same_training(captured, _run(False, n=64, epochs=1, warmup=3))
    # the lr grows over updates 1, 2, 3 and holds from 3 on: update 4 is the second step with its key
    assert [r.captured for r in captured[2]] == [False] * 3 + [True] * 5


@pytest.mark.parametrize("setup, why", [
    (dict(opt="adam"), "Adam, not SGD"),
    (dict(model="mlp_dropout"), "dropout"),
])
def test_loops_a_graph_cannot_replay_run_eagerly_and_say_why(graph_backend, monkeypatch, setup, why):
    if setup.get("model") == "mlp_dropout":
        monkeypatch.setattr(mg.models, "get_model", lambda name: nn.Sequential(
            nn.Flatten(), nn.Linear(784, 16), nn.Dropout(0.5), nn.Linear(16, 10)))
        setup = {}
    tl, _, records = _run(True, epochs=1, **setup)
    assert why in tl.graphs.reason
    assert not any(r.captured for r in records) and StandInGraph.recorded == 0


def test_accumulation_and_all_reduce_are_not_replayed(graph_backend):
    mg.manual_seed(0)
    m = mg.models.lenet5()
    o = optim.SGD(m.parameters(), lr=0.05)
    assert "accumulated" in graphs.unsupported(loop.TrainLoop(m, o, accumulate=2))
    assert "all-reduced" in graphs.unsupported(loop.TrainLoop(m, o, reduce=lambda n, summed: 0))


def test_a_backend_without_graphs_runs_eagerly():
    with mg.use_backend("numpy"):
        tl, _, records = _run(True, epochs=1)
    assert "does not record CUDA graphs" in tl.graphs.reason
    assert not any(r.captured for r in records)


def test_steps_with_a_per_step_hook_run_eagerly(graph_backend):
    train_set, _ = data.synthetic_mnist(n_train=32, n_test=4, seed=3)
    mg.manual_seed(0)
    m = mg.models.lenet5()
    tl = loop.TrainLoop(m, optim.SGD(m.parameters(), lr=0.05), around=lambda: contextlib.nullcontext())
    records = list(tl.epoch(data.DataLoader(train_set, 8)))
    assert tl.graphs.reason is None and not any(r.captured for r in records)


def test_a_failed_recording_turns_capture_off_with_a_warning_and_trains_on_eagerly(graph_backend):
    graph_backend(FailingGraph)
    with pytest.warns(RuntimeWarning, match="capture is off for this loop.*cuBLAS refused"):
        captured = _run(True, epochs=1)
    _same_training(captured, _run(False, epochs=1))
    assert "cuBLAS refused" in captured[0].graphs.reason
    assert not any(r.captured for r in captured[2])


def test_a_replayed_nan_loss_names_bad_targets_first(graph_backend):
    tl, _, _ = _run(True, epochs=1)
    logits = mg.Tensor(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 10\)"):
        tl._check(float("nan"), 1, 1, logits, np.array([0, 10]))
    with pytest.raises(loop.NonFiniteLoss, match="loss became nan"):
        tl._check(float("nan"), 1, 1, logits, np.array([0, 9]))


# ----------------------------------------------------------------------------------------------------------
# on a GPU: the real recording


def _gpu_skip_reason():
    return backend.unavailable_reason("cupy")


@pytest.mark.skipif(_gpu_skip_reason() is not None, reason=str(_gpu_skip_reason()))
@pytest.mark.parametrize("model", ["lenet5", "convnet"])
def test_cupy_replayed_steps_equal_eager_steps_bit_for_bit(model):
    runs = {}
    for capture in (True, False):
        with mg.use_backend("cupy"):
            train_set, _ = data.synthetic_mnist(n_train=70, n_test=4, seed=3)
            mg.manual_seed(0)
            m = mg.models.get_model(model)
            tl = loop.TrainLoop(m, optim.SGD(m.parameters(), lr=0.05, momentum=0.9), capture=capture)
            records = list(tl.epoch(data.DataLoader(train_set, 16, shuffle=True, seed=1, normalize=True)))
            runs[capture] = ([r.loss for r in records], [r.captured for r in records],
                             [mg.backend.k.to_numpy(p.data) for p in m.parameters()])
    assert runs[True][0] == runs[False][0]
    assert runs[True][1] == [False, True, True, True, False]
    for p, q in zip(runs[True][2], runs[False][2], strict=True):
        np.testing.assert_array_equal(p, q)
