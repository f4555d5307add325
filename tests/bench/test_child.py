"""The torch peer is measured in a child process with the user's environment, by the same measurement code."""

import os
import pickle
import subprocess
import sys

import pytest

import minigrad
from minigrad import loop, rng, models
from minigrad.machine import user_environment
from minigrad.bench import child, engines
from minigrad.bench.settings import Settings

from .conftest import HAS_TORCH

pytestmark = pytest.mark.skipif(not HAS_TORCH, reason="torch is not importable")


def _settings(**kw):
    return Settings(**{**dict(model="mlp", backends=("torch",), samples=48, threads=1, dataset="synthetic"), **kw})


def _init_state(settings):
    rng.manual_seed(settings.seed)
    return models.get_model(settings.model).state_dict()


def test_a_torch_entry_runs_in_a_child_with_the_users_environment(monkeypatch):
    seen = {}
    real_run = subprocess.run

    def spy(cmd, **kwargs):
        seen.update(cmd=cmd, env=kwargs.get("env"))
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    s = _settings()
    row = child.call("train", s, batch_size=16, init_state=_init_state(s), progress=False)
    assert seen["cmd"][1:] == ["-m", "minigrad.bench.child"] and seen["env"] == user_environment()
    assert seen["env"].items() <= os.environ.items() and "OMP_WAIT_POLICY" not in set(seen["env"]) - set(
        minigrad.ENVIRON_AT_IMPORT)
    assert row["backend"] == "torch" and row["status"] == "ok" and row["steps"] == 3 and row["samples"] == 48
    assert row["step_median_s"] > 0 and 0 <= row["test_accuracy"] <= 1


def test_divergence_in_the_child_is_nonfiniteloss_in_the_parent():
    s = _settings(lr=1e12)
    with pytest.raises(loop.NonFiniteLoss, match="loss became"):
        child.call("train", s, batch_size=16, init_state=_init_state(s), progress=False)


def test_the_bench_process_never_imports_torch(tmp_path):
    code = ("import sys; from minigrad.bench import cli; "
            "rc = cli.main(['--dataset', 'synthetic', '--model', 'mlp', '--samples', '32', '--threads', '1', "
            f"'--backend', 'numpy,torch', '--batch-sizes', '16', '--out', {str(tmp_path / 'run')!r}]); "
            "print('torch' in sys.modules, rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CI": "1"})
    assert out.stdout.strip().splitlines()[-1] == "False 0", out.stderr[-2000:]


def test_the_child_never_loads_numba_nor_inherits_its_thread_policy():
    s = _settings()
    request = pickle.dumps({"task": "train", "settings": s, "batch_size": 16, "init_state": _init_state(s),
                            "progress": False})
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([sys.executable, "-m", "minigrad.bench.child"], input=request, capture_output=True,
                          env=env, timeout=300)
    reply = pickle.loads(proc.stdout)
    assert reply["result"]["status"] == "ok"
    assert reply["process"] == {"numba_loaded": False, "omp_wait_policy": None}


def test_a_crash_in_the_child_is_reported_with_its_traceback():
    bad = pickle.dumps({"task": "nonsense", "settings": _settings()})
    proc = subprocess.run([sys.executable, "-m", "minigrad.bench.child"], input=bad, capture_output=True)
    reply = pickle.loads(proc.stdout)
    assert reply["error"][0] == "ChildFailed" and "unknown task 'nonsense'" in reply["error"][1]


def test_the_parent_handle_reports_memory_errors_as_out_of_memory():
    handle = engines.make_engine("torch")
    assert handle.isolated and handle.is_out_of_memory(MemoryError("x")) and not handle.is_out_of_memory(ValueError())
