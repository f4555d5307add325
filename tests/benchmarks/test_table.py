"""benchmarks/table.py on a hand-made pytest-benchmark run: the pivot, the metrics, the Markdown, the PNG."""

import json

import pytest

from benchmarks import table


def entry(op, case, backend, dtype, batch, median, flops=0.0, nbytes=0.0):
    info = {"op": op, "case": case, "backend": backend, "dtype": dtype, "batch": batch,
            "samples": batch, "flops": flops, "bytes": nbytes}
    return {"fullname": f"{op}[{case}-B{batch}-{backend}-{dtype}]", "stats": {"median": median}, "extra_info": info}


@pytest.fixture
def run(tmp_path):
    benchmarks = [entry("train_step", "lenet5", backend, "float32", b, b * t, flops=1e6 * b, nbytes=1e5 * b)
                  for backend, t in (("numba", 1e-4), ("numpy", 2e-4)) for b in (1, 16, 64)]
    benchmarks.append(entry("relu_forward", "mlp.hidden", "numpy", "float64", 16, 1e-6))
    benchmarks.append({"fullname": "sgd_update[mlp-numpy-float32]", "stats": {"median": 1e-5},
                       "extra_info": {"op": "sgd_update", "case": "mlp", "backend": "numpy", "dtype": "float32",
                                      "batch": None, "samples": None}})
    path = tmp_path / "0001_run.json"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": benchmarks}))
    return path


def test_pivot_computes_each_metric_from_the_median_and_the_recorded_work(run):
    rows = table.load_rows(run)
    assert {r["op"] for r in rows} == {"train_step", "relu_forward"}  # no batch, no place on the batch axis
    batches, cells = table.pivot(rows, "samples_per_s")
    assert batches == [1, 16, 64]
    assert cells[("train_step", "lenet5", "float32", "numpy")] == pytest.approx({1: 5e3, 16: 5e3, 64: 5e3})
    assert cells[("relu_forward", "mlp.hidden", "float64", "numpy")] == pytest.approx({16: 16e6})
    _, gflops = table.pivot(rows, "gflop_per_s", ops=["train_step"])
    assert gflops[("train_step", "lenet5", "float32", "numba")][16] == pytest.approx(1e6 * 16 / (16 * 1e-4) / 1e9)
    _, ms = table.pivot(rows, "median_ms", ops=["train_step"])
    assert ms[("train_step", "lenet5", "float32", "numba")][64] == pytest.approx(64 * 1e-4 * 1e3)
    # train_step leads, then ops by name; backends in the order numpy, numba, cupy
    assert list(cells)[:2] == [("train_step", "lenet5", "float32", "numpy"),
                               ("train_step", "lenet5", "float32", "numba")]


def test_markdown_has_a_column_per_batch_size_and_blank_cells_where_nothing_ran(run):
    batches, cells = table.pivot(table.load_rows(run), "samples_per_s")
    text = table.markdown(batches, cells, "samples_per_s")
    lines = text.splitlines()
    assert lines[2] == "| op | case | dtype | backend | B=1 | B=16 | B=64 |"
    assert "| train_step | lenet5 | float32 | numba | 10k | 10k | 10k |" in lines
    assert "| relu_forward | mlp.hidden | float64 | numpy |  | 16M |  |" in lines


@pytest.mark.parametrize("value, text", [(0.5, "0.5"), (999, "999"), (1234, "1.23k"), (2.5e6, "2.5M"), (3e9, "3G")])
def test_fmt(value, text):
    assert table.fmt(value) == text


def test_main_prints_the_table_and_writes_the_plot(run, tmp_path, capsys):
    png = tmp_path / "plot.png"
    assert table.main([str(run), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "samples/s by batch size" in out and f"plot: {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table.main([str(run)]) == 0  # default: next to the run
    assert (tmp_path / "0001_run-samples_per_s.png").exists()


def test_main_without_a_saved_run_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert table.main([]) == 2
    assert "make benchmark" in capsys.readouterr().err


def test_main_rejects_an_op_the_run_does_not_have(run, capsys):
    assert table.main([str(run), "--ops", "conv2d_forward", "--no-png"]) == 2
    assert "conv2d_forward" in capsys.readouterr().err
