"""The run directory: ``results.jsonl`` is the record of truth; every other file is derived from it.

``results.jsonl`` holds one JSON object per line, each with a ``record`` kind:

- ``run``: written when a session starts (the first run, then one per ``--resume``): settings, command line,
  machine, versions, data. The first one's settings are what ``--resume`` continues with.
- ``autobatch``: the outcome of ``--batch-sizes auto`` for one backend (reused on resume).
- ``result``: one finished (backend, batch size), appended, flushed and fsynced as soon as it is measured, so
  a kill loses at most the batch size in progress.

A kill can tear the last line in half; reading drops such a line (and ``repair`` rewrites the file without
it) instead of refusing to resume. An append that fails (a full disk) is cut back to the last whole record.

One process at a time owns a run directory: it holds an exclusive ``flock`` on ``.lock`` inside it for the
run's life (the lock file names its pid). The OS releases the lock when the process ends, however it ends, so
a killed run never leaves a stale lock behind.

Derived files are written to a temporary file and renamed over the old one; a write that fails removes the
temporary and raises ``WriteFailed`` naming the file (and, for ENOSPC, the full disk).
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
from pathlib import Path
from typing import Callable

from .settings import UsageError

RESULTS = "results.jsonl"
LOCK = ".lock"
SCHEMA_VERSION = 1


class WriteFailed(OSError):
    """A file of the run directory could not be written (a full disk, a quota, an I/O error)."""

    def __init__(self, path: Path, exc: OSError):
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.path, self.cause = Path(path), exc

    def __str__(self) -> str:
        reason = self.cause.strerror or str(self.cause) or type(self.cause).__name__
        text = f"cannot write {self.path}: {reason}"
        if self.cause.errno == errno.ENOSPC:
            text += f" (the disk holding {self.path.parent} is full)"
        elif self.cause.errno == errno.EDQUOT:
            text += f" (the disk quota for {self.path.parent} is used up)"
        return text


def atomic_write(target: Path, write: Callable) -> Path:
    """Write ``target`` through ``write(binary_file)`` into ``<target>.tmp``, then rename it over ``target``:
    a reader never sees half a file. Any failure (or an interrupt) removes the temporary; an OSError comes
    back as WriteFailed naming ``target``."""
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteFailed):
            raise WriteFailed(target, exc) from exc
        raise
    return target


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
        self._lock_file = None

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @classmethod
    def create(cls, path: Path) -> RunDir:
        """Make the directory, lock it and create an empty results file, or raise UsageError saying why not.

        The directory is checked again under the lock: of two runs started with the same ``--out`` at once,
        one gets it and the other an error."""
        check_out_dir(path)
        run = cls(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out: cannot write to {path}: {exc.strerror or exc}") from None
        run.lock("--out")
        try:
            check_out_dir(path)
            (path / RESULTS).touch()
        except BaseException as exc:
            run.unlock()
            if isinstance(exc, OSError):
                raise UsageError(f"--out: cannot write to {path}: {exc.strerror or exc}") from None
            raise
        return run

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

    # ------------------------------------------------------------------------------------------- the lock

    def lock(self, option: str = "--resume") -> None:
        """Take the run directory for this process, or raise UsageError naming the process that holds it.

        ``flock`` on ``.lock``: held until ``unlock``, until this RunDir is dropped, or until the process ends
        (a kill included)."""
        path = self.path / LOCK
        try:
            f = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+b", buffering=0)
        except OSError as exc:
            raise UsageError(f"{option}: cannot lock {self.path} ({path}: {exc.strerror or exc})") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(f)
            f.close()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UsageError(f"{option}: cannot lock {self.path} ({path}: {exc.strerror or exc})") from None
            who = f"pid {holder}" if holder else "pid unknown"
            raise UsageError(f"{option}: {self.path} is in use by another bench process ({who}); wait for it to "
                             f"finish, or stop it and then --resume {self.path}") from None
        try:
            f.truncate(0)
            f.write(f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the lock holds without the pid (e.g. on a full disk); others then report "pid unknown"
        self._lock_file = f

    def unlock(self) -> None:
        """Release the lock (the lock file stays: removing it would race with a process about to lock it)."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def discard(self, created_dir: bool) -> None:
        """Remove what a fresh run wrote when it ends before measuring anything, so that the same ``--out``
        can be used again: the results file, the derived files, the lock; the directory too when this run
        made it and it is empty then."""
        for name in (RESULTS, "summary.json", "results.csv", "report.md"):
            (self.path / name).unlink(missing_ok=True)
        self.unlock()
        (self.path / LOCK).unlink(missing_ok=True)
        if created_dir:
            try:
                self.path.rmdir()
            except OSError:
                pass  # something else is in it: leave it

    # ---------------------------------------------------------------------------------------- the records

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
        """Append one record and make it durable before returning (a kill right after loses nothing).

        When the write fails (e.g. the disk is full) the file is cut back to its size before, so it still ends
        with a whole record, and WriteFailed is raised."""
        line = (dumps(record) + "\n").encode()
        try:
            with open(self.results, "ab") as f:
                size = f.tell()
                try:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    try:
                        f.truncate(size)
                    except OSError:
                        pass  # read() still drops a torn last line
                    raise
        except OSError as exc:
            raise WriteFailed(self.results, exc) from exc

    def write_text(self, name: str, text: str) -> Path:
        """Write a derived file atomically (a reader never sees half of it); WriteFailed when it cannot."""
        return atomic_write(self.path / name, lambda f: f.write(text.encode()))


def _read_pid(f) -> int | None:
    try:
        text = os.pread(f.fileno(), 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
