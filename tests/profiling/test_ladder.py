import numpy as np

import minigrad as mg
from minigrad.profiling import _harness, ladder


def test_per_sample_loop_makes_the_same_update_as_the_batched_step():
    train_set = mg.data.synthetic_mnist(n_train=20, n_test=8)[0]
    states = []
    for per_sample in (True, False):
        run = _harness.Harness("lenet5", 5, train_set, 1, per_sample=per_sample, dtype="float64")
        seconds = run.updates(1)
        assert seconds.shape == (1,) and seconds[0] > 0
        assert run.loop.update == 1 and run.loop.step == (5 if per_sample else 1)
        states.append(run.model.state_dict())
    for k in states[0]:
        np.testing.assert_allclose(states[0][k], states[1][k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_run_times_every_rung_and_fits_each():
    train_set = mg.data.synthetic_mnist(n_train=128, n_test=8)[0]
    result = ladder.run("mlp", [1, 4, 16], train_set, rungs=["loop", "numpy"], samples_per_point=16, max_steps=4)
    assert len(result["rows"]) == 6
    assert all(r["step_seconds"] > 0 and r["epoch_seconds"] > 0 for r in result["rows"])
    assert set(result["plateau"]) == {"loop", "numpy"}
    assert "loop" in ladder.format_ladder(result) and "B=16" in ladder.format_ladder(result)


def test_available_rungs_always_include_the_numpy_rungs():
    assert ladder.available_rungs()[:2] == ["loop", "numpy"]
