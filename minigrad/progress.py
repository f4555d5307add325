"""The one answer to "show a progress bar?", and the bar itself.

Progress bars appear only where someone watches them: on a terminal (stderr is a TTY) and not in CI,
unless the caller asks explicitly with ``progress=True`` or ``False``.
"""

from __future__ import annotations

import os
import sys


def enabled(progress: bool | None) -> bool:
    """``progress`` when given, else True only on a terminal outside CI."""
    if progress is not None:
        return bool(progress)
    return sys.stderr.isatty() and not os.environ.get("CI")


def bar(progress: bool | None = None, **kwargs):
    """A tqdm bar (tqdm imported on first use), disabled unless ``enabled(progress)``."""
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled(progress), **kwargs)
