"""Batch sizes as every study of minigrad states them: the default sweep, a list read from the command line,
and the throughput knee. One owner for each, shared by the bench and the profilers."""

from __future__ import annotations

import re

#: The default sweep: powers of two from 1 to 256, as in the classic report (1200 s at batch 1 ... 850 s at 256).
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)

#: The knee of a throughput curve: the smallest batch within this fraction of the best samples/s.
KNEE_TOLERANCE = 0.10


def parse(text: str, what: str = "--batch-sizes") -> tuple[int, ...]:
    """A comma list of positive integers (any, not only powers of two) or doubling ranges ``a-b`` (a, 2a, 4a,
    ... up to b: ``1-512`` is 1, 2, 4, ..., 512), in the order given, duplicates dropped; ValueError naming
    ``what`` and the bad item otherwise."""
    sizes: list[int] = []
    for part in str(text).split(","):
        span = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", part)
        values = [_positive(span.group(1) if span else part, what)]
        if span:
            top = _positive(span.group(2), what)
            if top < values[0]:
                raise ValueError(f"{what}: a range a-b needs a <= b; got {part.strip()!r}")
            while values[-1] * 2 <= top:
                values.append(values[-1] * 2)
        sizes += [v for v in values if v not in sizes]
    return tuple(sizes)


def _positive(text: str, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{what}: each batch size must be a positive integer; got {text.strip()!r}") from None
    if value < 1:
        raise ValueError(f"{what}: each batch size must be a positive integer; got {value}")
    return value


def knee(points, tolerance: float = KNEE_TOLERANCE) -> tuple[int, int, float]:
    """(knee batch, best batch, best samples/s) of (batch size, samples/s) points: the knee is the smallest
    batch whose throughput is within ``tolerance`` of the best."""
    best_b, best = max(points, key=lambda p: p[1])
    knee_b = min(b for b, sps in points if sps >= (1 - tolerance) * best)
    return knee_b, best_b, best
