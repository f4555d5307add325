import math

import pytest

from minigrad.machine import usable_cores
from minigrad.profiling import counterfactuals as cf

BROKEN = cf.Variant("unknown backend", "runs a backend nobody registered", backend="no-such-backend")
NO_START = cf.Variant("python cannot start", "a Python home that does not exist",
                      env={"PYTHONHOME": "/nonexistent/python-home"})


@pytest.fixture(scope="module")
def rows():
    """Every variant plus two that fail, on synthetic data, mlp, a few steps; threads=2 so that 'one BLAS
    thread' is a change."""
    return cf.run("mlp", "numpy", 32, dataset="synthetic", threads=2, steps=3, warmup=1,
                  variants=list(cf.VARIANTS) + [BROKEN, NO_START], progress=False)


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_every_applicable_variant_is_measured_with_a_finite_gain(rows):
    assert len({r["name"] for r in rows}) == len(rows) == len(cf.VARIANTS) + 2
    measured = [r for r in rows if r["applicable"]]
    assert {"baseline", "glibc malloc defaults", "one BLAS thread"} <= {r["name"] for r in measured}
    for r in measured:
        assert r["step_seconds"] > 0 and r["step_iqr"] >= 0 and r["minor_faults_per_step"] >= 0, r
        assert math.isfinite(r["gain"]) and r["gain"] > 0, r
    for r in rows:
        if not r["applicable"]:
            assert r["reason"] and r["step_seconds"] is None and r["gain"] is None, r


def test_baseline_runs_twice_and_reports_its_drift(rows):
    base = rows[0]
    assert base["name"] == "baseline" and base["gain"] == pytest.approx(1.0)
    first, last = base["runs"]
    assert base["baseline_drift"] == pytest.approx(last / first)
    assert base["step_seconds"] == pytest.approx((first + last) / 2)
    assert all(r["baseline_drift"] is None for r in rows[1:])


def test_rows_are_ordered_by_gain_after_the_baseline(rows):
    gains = [r["gain"] for r in rows[1:] if r["applicable"]]
    assert gains == sorted(gains, reverse=True)
    flags = [r["applicable"] for r in rows[1:]]
    assert flags == sorted(flags, reverse=True)  # everything not measured comes last


def test_only_the_malloc_child_runs_without_the_allocator_policy(rows):
    found = by_name(rows)
    assert found["glibc malloc defaults"]["keeps_freed_memory"] is False
    assert found["baseline"]["keeps_freed_memory"] is True
    assert found["one BLAS thread"]["keeps_freed_memory"] is True


def test_the_one_blas_thread_child_runs_blas_on_one_thread(rows):
    found = by_name(rows)
    assert found["one BLAS thread"]["blas_threads"] == 1
    if usable_cores() >= 2:
        assert found["baseline"]["blas_threads"] == 2


def test_numba_variant_runs_the_numba_backend(rows):
    row = by_name(rows)["numba backend"]
    if row["applicable"]:
        assert row["backend"] == "numba"
    assert by_name(rows)["baseline"]["backend"] == "numpy"


@pytest.mark.skipif(not cf._is_x86_64(), reason="MXCSR is x86-64's")
def test_the_flush_denormals_child_has_ftz_and_daz_set_and_the_baseline_does_not(rows):
    found = by_name(rows)
    assert found["flush denormals to zero"]["applicable"], found["flush denormals to zero"]["reason"]
    assert found["flush denormals to zero"]["flush_denormals"] is True
    assert found["baseline"]["flush_denormals"] is False


def test_fused_kernels_are_not_applicable_while_the_contract_has_none(rows):
    row = by_name(rows)["fused kernels"]
    assert not row["applicable"] and "no fused kernel" in row["reason"]


def test_a_failing_variant_becomes_a_row_with_its_error(rows):
    found = by_name(rows)
    broken = found["unknown backend"]
    assert not broken["applicable"] and "no-such-backend" in broken["reason"] and "ValueError" in broken["reason"]
    no_start = found["python cannot start"]
    assert not no_start["applicable"] and "no reply" in no_start["reason"]


def test_format_table_lists_every_row_and_the_drift(rows):
    text = cf.format_table(rows)
    for r in rows:
        assert r["name"] in text
    assert "drift" in text and "not measured: " in text


def test_applicability_follows_the_configuration():
    def config(**kw):
        base = dict(model="mlp", backend="numpy", batch_size=8, dataset="synthetic", data_dir=None, threads=1,
                    steps=1, warmup=0)
        return cf.Config(**{**base, **kw})

    one_blas = cf.VARIANTS["one BLAS thread"]
    assert "threads=1" in one_blas.reason_not_applicable(config(threads=1))
    assert one_blas.reason_not_applicable(config(threads=2)) is None
    assert "numpy" in cf.VARIANTS["numba backend"].reason_not_applicable(config(backend="numba"))
    assert "numpy backend" not in cf.VARIANTS


def test_sort_rows_puts_the_baseline_first_then_gains_then_the_rest():
    def row(name, gain, applicable=True):
        return {"name": name, "gain": gain, "applicable": applicable}

    rows = [row("a", 0.9), row("x", None, False), row("baseline", 1.0), row("b", 1.5), row("c", 1.1)]
    assert [r["name"] for r in cf.sort_rows(rows)] == ["baseline", "b", "c", "a", "x"]


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="batch_size"):
        cf.run("mlp", "numpy", 0, dataset="synthetic")
    with pytest.raises(ValueError, match="variants"):
        cf.run("mlp", "numpy", 8, dataset="synthetic", variants=["no such variant"])
    with pytest.raises(ValueError, match="dataset"):
        cf.run("mlp", "numpy", 8, dataset="cifar")
