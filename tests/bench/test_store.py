"""results.jsonl as the record of truth: durable appends, torn last lines, and --resume after a kill."""

import json
import signal
import subprocess
import sys
import time

import pytest

from minigrad.bench import cli
from minigrad.bench.settings import UsageError
from minigrad.bench.store import RunDir, clean_json, dumps

from .conftest import TINY, read_jsonl, results, run_cli


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


def test_resume_after_a_kill_recomputes_nothing_that_finished(tmp_path):
    """SIGKILL (no chance to clean up) right after the first entry is on disk, then --resume."""
    out = tmp_path / "run"
    args = [*TINY, "--samples", "600", "--batch-sizes", "1,2,3", "--backend", "numpy", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "minigrad.bench", *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not (out / "results.jsonl").exists() or not results(out):
        assert proc.poll() is None and time.monotonic() < deadline, "no entry finished before the deadline"
        time.sleep(0.02)
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
