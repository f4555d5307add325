import pstats

import pytest

import minigrad as mg
from minigrad.profiling import cprofile_harness as ch


@pytest.fixture(scope="module")
def train_set():
    return mg.data.synthetic_mnist(n_train=512, n_test=8)[0]


@pytest.mark.parametrize("batch_size", [1, 32])
def test_named_causes_close_the_measured_step_time(train_set, batch_size, tmp_path):
    """Closure: the named causes (all but 'other Python') add up to >= 95% of the measured wall time."""
    with mg.use_backend("numpy"):
        row = ch.profile_batch_size("lenet5", batch_size, steps=6, train_set=train_set, out_dir=tmp_path)
    named = sum(v for k, v in row["causes_seconds"].items() if k != "other Python")
    assert named >= 0.95 * row["wall_seconds"]
    assert sum(row["causes_seconds"].values()) == pytest.approx(row["profiled_seconds"], rel=1e-6)
    assert row["causes_seconds"]["GEMM/BLAS"] > 0 and row["causes_seconds"]["im2col/col2im"] > 0
    assert row["causes_seconds"]["autograd/tape"] > 0 and row["causes_seconds"]["optimizer"] > 0
    stats = pstats.Stats(row["prof_path"])  # a .prof that pstats/snakeviz can open
    assert stats.total_calls > 0


def test_sweep_and_table(train_set):
    with mg.use_backend("numpy"):
        rows = ch.sweep("mlp", [1, 8], samples_per_size=16, train_set=train_set)
    assert [r["batch_size"] for r in rows] == [1, 8] and rows[0]["steps"] == 16 and rows[1]["steps"] == 3
    table = ch.format_causes(rows)
    assert "B=1" in table and "B=8" in table and all(c in table for c in ch.CAUSES)


def test_too_few_samples_is_a_clear_error(train_set):
    with pytest.raises(ValueError, match="need 12"):
        ch.profile_batch_size("mlp", 64, steps=10, train_set=train_set)
