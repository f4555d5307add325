"""results.jsonl as the record of truth: durable appends, torn last lines, and --resume after a kill."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from minigrad.bench import cli
from minigrad.bench.settings import UsageError
from minigrad.bench.store import RunDir, clean_json, dumps

from .conftest import HAS_TORCH, TINY, read_jsonl, results, run_cli


def test_clean_json_makes_strict_json():
    import numpy as np

    record = {"a": float("nan"), "b": [np.float32(1.5), np.int64(3), float("inf")], "c": {"d": np.bool_(True)}}
    assert clean_json(record) == {"a": None, "b": [1.5, 3, None], "c": {"d": True}}
    assert json.loads(dumps(record)) == {"a": None, "b": [1.5, 3, None], "c": {"d": True}}


def test_read_skips_a_torn_last_line_and_repair_removes_it(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.append({"record": "run", "settings": {}})
    run.append({"record": "result", "batch_size": 4})
    with open(run.results, "a") as f:
        f.write('{"record": "result", "batch_si')  # a kill in the middle of a write
    assert [r["record"] for r in run.read()] == ["run", "result"]
    run.repair()
    assert run.results.read_text().endswith('"batch_size": 4}\n')
    run.append({"record": "result", "batch_size": 8})
    assert [r.get("batch_size") for r in read_jsonl(run.results)] == [None, 4, 8]


def test_a_bad_line_before_the_end_is_an_error(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.results.write_text('{"record": "run"}\nnot json\n{"record": "result"}\n')
    with pytest.raises(UsageError, match="line 2 is not valid JSON"):
        run.read()


def _start_until(cwd, out, samples: str, ready, what: str) -> subprocess.Popen:
    """A tiny three-entry bench into ``out`` in the background, returned once ``ready()`` is true."""
    args = [*TINY, "--samples", samples, "--batch-sizes", "1,2,3", "--backend", "numpy", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "minigrad.bench", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not (out / "results.jsonl").exists() or not ready():
        assert proc.poll() is None and time.monotonic() < deadline, what
        time.sleep(0.02)
    return proc


def test_resume_after_a_kill_recomputes_nothing_that_finished(tmp_path):
    """SIGKILL (no chance to clean up) right after the first entry is on disk, then --resume."""
    out = tmp_path / "run"
    proc = _start_until(tmp_path, out, "600", lambda: results(out), "no entry finished before the deadline")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = results(out)
    assert 1 <= len(before) < 3, "the kill came too late to test resuming"

    resumed = run_cli("--resume", out, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(before)} of 3 entries already finished" in resumed.stdout
    records = read_jsonl(out / "results.jsonl")
    assert [r["session"] for r in records if r["record"] == "run"] == [0, 1]
    after = [r for r in records if r["record"] == "result"]
    assert sorted(r["batch_size"] for r in after) == [1, 2, 3]
    assert after[:len(before)] == before  # the finished entries were kept as they were, not measured again
    assert all(r["session"] == 1 for r in after[len(before):])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and len(summary["results"]) == 3 and len(summary["sessions"]) == 2
    assert len((out / "results.csv").read_text().splitlines()) == 4


def test_sigterm_keeps_finished_entries_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--samples", "600", "--batch-sizes", "1,2,3", "--backend", "numpy", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "minigrad.bench", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not (out / "results.jsonl").exists() or not results(out):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.splitlines()[-1].startswith("error: interrupted") and f"--resume {out}" in err
    assert "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and len(summary["results"]) == len(results(out)) >= 1
    assert "Incomplete" in (out / "report.md").read_text()


def test_resume_of_a_partial_directory_with_a_torn_line(tmp_path, isolated):
    """A run directory as a kill during a write leaves it: complete records plus half a line."""
    out = tmp_path / "run"
    assert cli.main([*TINY, "--batch-sizes", "4,8", "--backend", "numpy", "--out", str(out)]) == 0
    kept = results(out)[0]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["batch_size"] == 8
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])

    assert cli.main(["--resume", str(out)]) == 0
    rows = results(out)
    assert [r["batch_size"] for r in rows] == [4, 8] and rows[0] == kept and rows[1]["session"] == 1


# ------------------------------------------------------------------------------------ one process per run dir


def test_a_run_directory_is_locked_by_the_process_that_owns_it(tmp_path):
    run = RunDir.create(tmp_path / "run")
    other = RunDir(tmp_path / "run")
    with pytest.raises(UsageError, match=f"--resume: {tmp_path / 'run'} is in use by another bench process "
                                         f"\\(pid {os.getpid()}\\)"):
        other.lock()
    run.unlock()
    other.lock()  # released: the next owner gets it
    other.unlock()


def test_two_resumes_at_once_the_second_is_refused_and_a_kill_frees_the_directory(tmp_path):
    """Two processes: the owner holds the lock for the run's life; after SIGKILL the OS has released it."""
    out = tmp_path / "run"
    owner = _start_until(tmp_path, out, "3000", lambda: (out / "results.jsonl").read_text(), "the run did not start")
    second = run_cli("--resume", out, cwd=tmp_path)
    assert owner.poll() is None, "the owner finished before the second process tried: nothing was tested"
    lines = second.stderr.splitlines()
    assert second.returncode == 2 and len(lines) == 1 and "Traceback" not in second.stderr
    assert lines[0] == (f"error: --resume: {out} is in use by another bench process (pid {owner.pid}); wait for it "
                        f"to finish, or stop it and then --resume {out}")
    assert [r["session"] for r in read_jsonl(out / "results.jsonl") if r["record"] == "run"] == [0]

    owner.send_signal(signal.SIGKILL)
    owner.wait()
    resumed = run_cli("--resume", out, cwd=tmp_path, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["batch_size"] for r in results(out)) == [1, 2, 3]  # each entry measured once


# ------------------------------------------------------------------------------------------------ Ctrl-C

#: Starts the bench as ``python -m minigrad.bench`` does (runpy runs the package's ``__main__``), but says when
#: ``import minigrad`` and the package lookup, which Python does before any of the bench's code runs, are done:
#: the interrupt is meant for the bench's own start-up (its imports, the argument checks, the data read).
_STARTER = ("import sys, runpy, minigrad, minigrad.bench\n"
            "sys.stderr.write('minigrad imported\\n'); sys.stderr.flush()\n"
            "sys.argv[0] = 'minigrad.bench'\n"
            "runpy.run_module('minigrad.bench', run_name='__main__', alter_sys=True)\n")


def _mnist_cached() -> bool:
    from minigrad import data

    return (data.default_data_dir() / "mnist.npz").is_file()


@pytest.mark.parametrize("delay", [0.02, 0.08, 0.15, 0.3])
@pytest.mark.parametrize("dataset", ["mnist", "synthetic"])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(tmp_path, delay, dataset):
    """Ctrl-C during the bench's imports, argument checks or the data read: one line, exit 130, nothing written."""
    if dataset == "mnist" and not _mnist_cached():
        pytest.skip("MNIST is not cached here")
    out = tmp_path / "run"
    args = ["--dataset", dataset, "--model", "mlp", "--samples", "64", "--threads", "1", "--backend", "numpy",
            "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", _STARTER, *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "CI": "1"})
    assert proc.stderr.readline() == "minigrad imported\n"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = err.splitlines()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), err
    if lines[0].startswith("error: interrupted before"):
        assert lines[0].endswith("nothing was written") and not out.exists()


def test_a_second_ctrl_c_still_ends_with_the_resume_hint(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--samples", "600", "--batch-sizes", "1,2,3", "--backend", "numpy", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "minigrad.bench", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "CI": "1"})
    deadline = time.monotonic() + 90
    while not (out / "results.jsonl").exists() or not results(out):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.25)  # the derived files (and the plots' import) are being written now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = err.splitlines()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: interrupted after"), err
    assert lines[0].endswith(f"continue with: python -m minigrad.bench --resume {out}")
    finished = len(results(out))
    if "may be incomplete" not in lines[0]:  # the second Ctrl-C came after the derived files were done
        summary = json.loads((out / "summary.json").read_text())
        assert len(summary["results"]) == finished and summary["complete"] is False
    assert not list(out.rglob("*.tmp"))

    resumed = run_cli("--resume", out, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "summary.json").read_text())["complete"] is True
    assert (out / "plots" / "epoch_time.png").is_file()


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not importable")
@pytest.mark.parametrize("delay", [0.0, 0.4])
def test_ctrl_c_at_the_terminal_while_the_torch_child_runs(tmp_path, delay):
    """A terminal's Ctrl-C goes to the whole process group: the parent reports it, the child prints nothing."""
    out = tmp_path / "run"
    args = [*TINY, "--samples", "2000", "--batch-sizes", "1,2", "--backend", "numpy,torch", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "minigrad.bench", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "CI": "1"},
                            start_new_session=True)  # its own process group, as a shell gives a command
    deadline = time.monotonic() + 90
    while not (out / "results.jsonl").exists() or not results(out):  # numpy B=1 done: torch B=1 is next
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = err.splitlines()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: interrupted after"), err


# --------------------------------------------------------------------------------------------- a full disk


class _FullDisk:
    """A file whose writes stop with ENOSPC after ``room`` bytes, as on a full disk."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data):
        if len(data) > self._room:
            self._f.write(data[:self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _disk_full_for(monkeypatch, pattern: str, after: int = 0, room: int = 10):
    """Writes through the run directory's ``open`` to files matching ``pattern`` fail with ENOSPC, from the
    ``after``+1-th such file on."""
    import builtins
    import fnmatch

    from minigrad.bench import store

    opened = []

    def fake_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if "r" not in mode and fnmatch.fnmatch(os.path.basename(path), pattern):
            opened.append(path)
            if len(opened) > after:
                return _FullDisk(f, room)
        return f

    monkeypatch.setattr(store, "open", fake_open, raising=False)


def _error_line(captured) -> str:
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_a_full_disk_while_writing_the_csv(tmp_path, isolated, capsys, monkeypatch):
    out = tmp_path / "run"
    _disk_full_for(monkeypatch, "results.csv.tmp")
    assert cli.main([*TINY, "--batch-sizes", "4,8", "--backend", "numpy", "--out", str(out)]) == 1
    line = _error_line(capsys.readouterr())
    assert line.startswith(f"error: cannot write {out}/results.csv: No space left on device (the disk holding {out} "
                           "is full); the 1 finished entries are kept in")
    assert line.endswith(f"free some space, then continue with: python -m minigrad.bench --resume {out}")
    assert not list(out.rglob("*.tmp")) and not (out / "results.csv").exists()
    assert [r["record"] for r in read_jsonl(out / "results.jsonl")] == ["run", "result"]  # every line whole

    monkeypatch.undo()
    assert cli.main(["--resume", str(out)]) == 0
    assert [r["batch_size"] for r in results(out)] == [4, 8]
    assert len((out / "results.csv").read_text().splitlines()) == 3


def test_a_full_disk_while_drawing_the_plots(tmp_path, isolated, capsys, monkeypatch):
    out = tmp_path / "run"
    _disk_full_for(monkeypatch, "*.png.tmp", after=1, room=1000)
    assert cli.main([*TINY, "--batch-sizes", "4,8", "--backend", "numpy", "--out", str(out)]) == 1
    line = _error_line(capsys.readouterr())
    assert line.startswith(f"error: cannot write {out}/plots/throughput.png: No space left on device (the disk "
                           f"holding {out}/plots is full); the 2 finished entries are kept in {out}/results.jsonl")
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["epoch_time.png"]  # no half PNG, no temporary
    assert len(results(out)) == 2

    monkeypatch.undo()
    assert cli.main(["--resume", str(out)]) == 0
    assert "nothing to do: all 2 entries finished" in capsys.readouterr().out
    assert (out / "plots" / "memory.png").is_file()
    assert [r["record"] for r in read_jsonl(out / "results.jsonl")] == ["run", "result", "result"]


def test_a_full_disk_while_appending_a_result_keeps_the_file_whole(tmp_path, isolated, capsys, monkeypatch):
    out = tmp_path / "run"
    _disk_full_for(monkeypatch, "results.jsonl", after=2)  # the run record and the first result go through
    assert cli.main([*TINY, "--batch-sizes", "4,8", "--backend", "numpy", "--out", str(out)]) == 1
    line = _error_line(capsys.readouterr())
    assert line.startswith(f"error: cannot write {out}/results.jsonl: No space left on device")
    text = (out / "results.jsonl").read_text()
    assert text.endswith("}\n") and [r["record"] for r in read_jsonl(out / "results.jsonl")] == ["run", "result"]

    monkeypatch.undo()
    assert cli.main(["--resume", str(out)]) == 0
    assert [r["batch_size"] for r in results(out)] == [4, 8]


def test_write_failed_names_the_file_and_the_full_disk(tmp_path):
    from minigrad.bench.store import WriteFailed, atomic_write

    def fill(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WriteFailed) as info:
        atomic_write(tmp_path / "x.csv", fill)
    assert str(info.value) == (f"cannot write {tmp_path}/x.csv: No space left on device (the disk holding "
                               f"{tmp_path} is full)")
    assert list(tmp_path.iterdir()) == []
