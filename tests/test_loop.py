import numpy as np
import pytest
import threadpoolctl

import minigrad as mg
from minigrad import data, loop, train

# Losses of a short seeded lenet5 run (8 steps of 8 synthetic samples, SGD momentum), as recorded before the
# training step was consolidated into minigrad.loop: the consolidation must not change one bit of them.
PINNED = {
    "numpy": ["0x1.28c6f00000000p+1", "0x1.2191e00000000p+1", "0x1.2a25bc0000000p+1", "0x1.22ac680000000p+1",
              "0x1.21fbce0000000p+1", "0x1.0f32a80000000p+1", "0x1.0220a60000000p+1", "0x1.2068c00000000p+1"],
    "numba": ["0x1.28c6ee0000000p+1", "0x1.2191de0000000p+1", "0x1.2a25bc0000000p+1", "0x1.22ac680000000p+1",
              "0x1.21fbd00000000p+1", "0x1.0f32a80000000p+1", "0x1.0220a60000000p+1", "0x1.2068c00000000p+1"],
}
PINNED_ACCUMULATED_TAIL = {"numpy": ["0x1.1e6dca0000000p+1", "0x1.21dc3c0000000p+1"],
                           "numba": ["0x1.1e6dca0000000p+1", "0x1.21dc3e0000000p+1"]}
#: The BLAS threads they were recorded with (this machine class's two cores): OpenBLAS on one thread rounds
#: numpy's seventh loss one bit apart, and a test run earlier in the same process may have left BLAS on one.
PINNED_BLAS_THREADS = 2


def _pinned_run(name, accumulate=1):
    with mg.use_backend(name), threadpoolctl.threadpool_limits(PINNED_BLAS_THREADS, user_api="blas"):
        train_set, _ = data.synthetic_mnist(n_train=64, n_test=8, seed=3)
        mg.manual_seed(0)
        model = mg.models.lenet5()
        opt = mg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        h = train.fit(model, data.DataLoader(train_set, 8, shuffle=True, seed=1, normalize=True), opt, epochs=1,
                      accumulate=accumulate, progress=False)
        return [s.loss.hex() for s in h.steps]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_losses_are_pinned_bit_for_bit(name):
    if mg.backend.unavailable_reason(name):
        pytest.skip(mg.backend.unavailable_reason(name))
    assert _pinned_run(name) == PINNED[name]
    assert _pinned_run(name, accumulate=2)[-2:] == PINNED_ACCUMULATED_TAIL[name]


class _CountingLoader:
    """A loader over fixed batches that records when it was asked (to check what the clock covers)."""

    def __init__(self, batches):
        self.batches, self.n_samples = batches, sum(len(x) for x, _ in batches)

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def test_step_record_splits_data_and_compute_time():
    mg.manual_seed(0)
    model = mg.models.mlp()
    opt = mg.optim.SGD(model.parameters(), lr=0.1)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    records = list(loop.TrainLoop(model, opt).epoch(_CountingLoader([(x, y)] * 3)))
    assert [r.step for r in records] == [1, 2, 3] and [r.update for r in records] == [1, 2, 3]
    for r in records:
        assert r.compute_seconds > 0 and r.data_seconds >= 0
        assert r.seconds == r.data_seconds + r.compute_seconds
        assert 0 <= r.correct <= 4 and np.isfinite(r.loss)


def test_around_wraps_the_compute_part_of_every_step():
    entered = []

    class Around:
        def __enter__(self):
            entered.append("in")

        def __exit__(self, *exc):
            entered.append("out")

    mg.manual_seed(0)
    model = mg.models.mlp()
    x = np.zeros((2, 1, 28, 28), np.float32)
    list(loop.TrainLoop(model, mg.optim.SGD(model.parameters(), lr=0.1), around=Around).epoch(
        _CountingLoader([(x, np.array([0, 1]))] * 2)))
    assert entered == ["in", "out", "in", "out"]


def test_non_finite_loss_names_the_step():
    mg.manual_seed(0)
    model = mg.models.mlp()
    x = np.full((2, 1, 28, 28), np.nan, np.float32)
    with pytest.raises(loop.NonFiniteLoss, match="at step 1 "):
        list(loop.TrainLoop(model, mg.optim.SGD(model.parameters(), lr=0.1)).epoch(
            _CountingLoader([(x, np.array([0, 1]))])))


def test_accumulate_is_validated():
    with pytest.raises(ValueError, match="accumulate must be a positive integer"):
        loop.TrainLoop(None, None, accumulate=0)


def test_the_bench_and_the_profilers_time_steps_with_the_same_code(monkeypatch):
    """Replace the loop's clock with one that ticks 1 s per reading: every step then has data 1 s and compute
    1 s, and the bench's step time and the profilers' step time must both be exactly that."""
    from minigrad.bench import engines, measure
    from minigrad.bench.settings import Settings
    from minigrad.profiling import ladder

    ticks = iter(range(10**9))
    monkeypatch.setattr(loop, "_clock", lambda: float(next(ticks)))
    train_set, test_set = data.synthetic_mnist(n_train=96, n_test=16, seed=0)
    settings = Settings(model="mlp", backends=("numpy",), samples=64, threads=1, dataset="synthetic")
    mg.manual_seed(0)
    init = mg.models.mlp().state_dict()
    row = measure.measure_train(engines.MinigradEngine("numpy"), settings, 16, train_set, test_set, init, False)
    assert row["step_median_s"] == 1.0 and row["step_min_s"] == row["step_max_s"] == 1.0
    assert row["data_median_s"] == 1.0 and row["first_step_s"] == 1.0
    for rung, per_update in (("numpy", 1.0), ("loop", 4.0)):  # the loop rung: 4 one-sample steps per update
        timed = ladder.time_rung(rung, "mlp", 4, train_set, steps=3, warmup=1)
        assert timed["step_seconds"] == per_update and timed["step_iqr"] == 0.0
