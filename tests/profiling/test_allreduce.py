import numpy as np
import pytest

from minigrad.profiling import allreduce, plateau

NET = allreduce.Network(10e-6, 1e9, "test")


def test_ring_allreduce_cost_is_latency_plus_bytes_over_bandwidth():
    assert allreduce.allreduce_seconds(1e6, 1, NET) == 0
    # 2 ranks: 2 messages of latency, each rank moves 2 * 1/2 * n bytes
    assert allreduce.allreduce_seconds(1e6, 2, NET) == pytest.approx(2 * 10e-6 + 1e6 / 1e9)
    # 64 ranks: 126 latencies, 2 * 63/64 * n bytes
    assert allreduce.allreduce_seconds(1e6, 64, NET) == pytest.approx(126 * 10e-6 + 2 * 63 / 64 * 1e6 / 1e9)


def test_fit_recovers_the_network_from_its_own_times():
    sizes = [8, 4096, 1 << 20, 1 << 22]
    times = [allreduce.allreduce_seconds(n, 4, NET) for n in sizes]
    got = allreduce.fit(4, sizes, times)
    assert got.latency_s == pytest.approx(NET.latency_s, rel=1e-6)
    assert got.bandwidth_bytes_per_s == pytest.approx(NET.bandwidth_bytes_per_s, rel=1e-6)


@pytest.mark.parametrize("ranks, sizes, times, match", [
    (1, [8, 16], [1e-6, 2e-6], "two or more ranks"),
    (2, [8, 8], [1e-6, 2e-6], "distinct sizes"),
    (2, [8, 16], [2e-6, 1e-6], "did not grow"),
    (2, [8, 16], [0.0, 1e-6], "positive"),
])
def test_fit_refuses_what_it_cannot_fit(ranks, sizes, times, match):
    with pytest.raises(ValueError, match=match):
        allreduce.fit(ranks, sizes, times)


def test_predict_adds_the_allreduce_to_the_step_and_scales_by_ranks():
    p = allreduce.predict(0.010, 64, 1e6, 8, NET)
    reduce_s = allreduce.allreduce_seconds(1e6, 8, NET)
    assert p["step_s"] == pytest.approx(0.010 + reduce_s)
    assert p["samples_per_s"] == pytest.approx(8 * 64 / (0.010 + reduce_s))
    assert p["scaling_efficiency"] == pytest.approx(0.010 / (0.010 + reduce_s))
    assert p["allreduce_share"] == pytest.approx(1 - p["scaling_efficiency"])
    assert p["global_batch_size"] == 512
    one = allreduce.predict(0.010, 64, 1e6, 1, NET)
    assert one["scaling_efficiency"] == 1 and one["allreduce_s"] == 0


def test_the_allreduce_joins_the_fixed_cost_of_the_plateau_model():
    model = plateau.fit([1, 8, 64], [0.002, 0.003, 0.010], 60000)
    ranked = allreduce.with_allreduce(model, 1e6, 2, NET)
    assert ranked.t_fixed == pytest.approx(model.t_fixed + allreduce.allreduce_seconds(1e6, 2, NET))
    assert ranked.sample_seconds == model.sample_seconds and ranked.n_samples == 30000
    # a larger fixed cost pushes the plateau to larger batches
    assert ranked.batch_where_fixed_below(0.1) > model.batch_where_fixed_below(0.1)


class _Summing:
    rank, size = 0, 2

    def __init__(self):
        self.calls = []

    def allreduce_(self, buf):
        self.calls.append(buf.nbytes)
        buf *= 2


def test_measure_times_each_payload_after_a_warmup_call():
    comm = _Summing()
    rows = allreduce.measure(comm, sizes=(8, 4096), repeats=3)
    assert [r["bytes"] for r in rows] == [8, 4096]
    assert comm.calls == [8] * 4 + [4096] * 4
    assert all(r["seconds"] > 0 for r in rows)


def test_network_refuses_nonsense():
    with pytest.raises(ValueError, match="bandwidth_bytes_per_s must be finite and > 0"):
        allreduce.Network(1e-6, 0)
    with pytest.raises(ValueError, match="latency_s"):
        allreduce.Network(np.nan, 1e9)
