from pathlib import Path

import pytest

import minigrad as mg
from minigrad.profiling import line_harness


def test_line_profile_writes_lprof_and_text_and_finds_the_hot_lines(tmp_path):
    train_set = mg.data.synthetic_mnist(n_train=64, n_test=8)[0]
    with mg.use_backend("numpy"):
        row = line_harness.profile_lines("lenet5", 8, steps=3, train_set=train_set, out_dir=tmp_path)
    assert Path(row["lprof_path"]).stat().st_size > 0
    text = Path(row["text_path"]).read_text()
    assert "conv2d_forward" in text and "Line #" in text
    names = {f["function"] for f in row["functions"]}
    assert {"conv2d_forward", "conv2d_backward", "im2col", "col2im", "Function.apply", "Tensor.backward"} <= names
    conv = next(f for f in row["functions"] if f["function"] == "conv2d_backward")
    assert conv["seconds"] > 0 and 0 < conv["top_lines"][0]["share"] <= 1 and conv["top_lines"][0]["source"]


def test_too_few_samples_is_a_clear_error(tmp_path):
    train_set = mg.data.synthetic_mnist(n_train=16, n_test=8)[0]
    with pytest.raises(ValueError, match="need 5"):
        line_harness.profile_lines("mlp", 8, steps=3, train_set=train_set, out_dir=tmp_path)
