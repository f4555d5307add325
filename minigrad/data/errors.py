"""What can go wrong getting a dataset: the errors every source, the cache and the loaders raise."""

from __future__ import annotations


class ChecksumError(ValueError):
    """Data whose SHA-256 (or archive CRC) is not the expected one. Reported, never repaired behind your back."""


class DataFormatError(ValueError):
    """A file that is not what it should be: a malformed IDX file, cache or pickle."""


class DataUnavailable(RuntimeError):
    """No source could provide the dataset; the message lists every source tried and why it failed."""


class _SourceMissing(Exception):
    """This source cannot provide the data (absent, disabled, unreachable): try the next one."""
