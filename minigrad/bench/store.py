"""The run directory: ``results.jsonl`` is the record of truth; every other file is derived from it.

``results.jsonl`` holds one JSON object per line, each with a ``record`` kind:

- ``run``: written when a session starts (the first run, then one per ``--resume``): settings, command line,
  machine, versions, data. The first one's settings are what ``--resume`` continues with.
- ``autobatch``: the outcome of ``--batch-sizes auto`` for one backend (reused on resume).
- ``result``: one finished (backend, batch size), appended, flushed and fsynced as soon as it is measured, so
  a kill loses at most the batch size in progress.

A kill can tear the last line in half; reading drops such a line (and ``repair`` rewrites the file without
it) instead of refusing to resume.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .settings import UsageError

RESULTS = "results.jsonl"
SCHEMA_VERSION = 1


def clean_json(value):
    """``value`` with NaN/Inf turned into None and numpy scalars into Python ones: strict JSON everywhere."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(record: dict, indent: int | None = None) -> str:
    return json.dumps(clean_json(record), indent=indent, allow_nan=False)


def check_out_dir(path: Path) -> None:
    """Raise UsageError unless ``path`` can become a fresh run directory (checked before any work is done)."""
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"--out: {path} exists and is not a directory")
        if (path / RESULTS).exists():
            raise UsageError(f"--out: {path} already holds a run; continue it with --resume {path} or pick "
                             f"another --out")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"--out: cannot create {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"--out: cannot create {path}: {ancestor} is not writable")


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @classmethod
    def create(cls, path: Path) -> RunDir:
        """Make the directory and an empty results file, or raise UsageError saying why not."""
        check_out_dir(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / RESULTS).touch()
        except OSError as exc:
            raise UsageError(f"--out: cannot write to {path}: {exc.strerror or exc}") from None
        return cls(path)

    @classmethod
    def open_existing(cls, path: Path) -> RunDir:
        """A run directory to resume; UsageError when it holds no run."""
        run = cls(path)
        if not path.is_dir():
            raise UsageError(f"--resume: {path} is not a directory")
        if not run.results.is_file():
            raise UsageError(f"--resume: {path} holds no results ({RESULTS} is missing): nothing to resume")
        records = run.read()
        if not records or records[0].get("record") != "run" or "settings" not in records[0]:
            raise UsageError(f"--resume: {run.results} does not start with the run's settings; cannot resume it")
        return run

    def read(self) -> list[dict]:
        """Every complete record, in order. A torn last line is skipped; a bad line elsewhere is an error."""
        try:
            lines = self.results.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {self.results}: {exc}") from None
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    break  # a write cut short by a kill: the entry will be measured again
                raise UsageError(f"{self.results}: line {number} is not valid JSON") from None
            if not isinstance(record, dict):
                raise UsageError(f"{self.results}: line {number} is not a JSON object")
            records.append(record)
        return records

    def repair(self) -> None:
        """Rewrite results.jsonl with complete records only, so that later appends start on a fresh line."""
        text = "".join(dumps(r) + "\n" for r in self.read())
        if text != self.results.read_text():
            self.write_text(RESULTS, text)

    def append(self, record: dict) -> None:
        """Append one record and make it durable before returning (a kill right after loses nothing)."""
        with open(self.results, "a") as f:
            f.write(dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_text(self, name: str, text: str) -> Path:
        """Write a derived file atomically (a reader never sees half of it)."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
        return target
