"""The epoch-time model: why epoch time stops falling as batch size grows.

One step at batch B costs a fixed part (Python, the autograd tape, kernel launches, small allocations: paid
once per step whatever B is) plus a per-sample part (the arithmetic and memory traffic that grows with B):

    step(B)    = t_fixed + B * t_sample(B)
    T_epoch(B) = (N / B) * t_fixed + N * t_sample(B)

The first term falls as 1/B; the second does not fall at all. Once (N/B)*t_fixed is small next to
N*t_sample, a larger batch cannot make an epoch faster: the plateau. t_sample may itself vary with B (BLAS
efficiency rises with larger matrices, then activations spill out of cache), so the model keeps the measured
per-sample cost at each batch size and interpolates it in log B between them.

Fit: weighted least squares of step(B) = a + b*B (relative weights, so small and large batches count alike)
gives t_fixed = a and the global slope b; the per-sample cost at each measured B is (step - t_fixed)/B.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class PlateauModel:
    t_fixed: float                 # seconds per step independent of B
    t_sample: float                # global per-sample seconds (the fitted slope)
    batch_sizes: list[int]         # where t_sample(B) was measured
    sample_seconds: list[float]    # per-sample seconds at those batch sizes
    n_samples: int                 # samples per epoch

    def t_sample_at(self, batch_size: float) -> float:
        """Per-sample seconds at B, interpolated in log B between measured points (constant beyond them)."""
        return float(np.interp(math.log(batch_size), np.log(self.batch_sizes), self.sample_seconds))

    def predict_step_seconds(self, batch_size: float) -> float:
        return self.t_fixed + batch_size * self.t_sample_at(batch_size)

    def predict_epoch_seconds(self, batch_size: float) -> float:
        """(N / B) * t_fixed + N * t_sample(B)."""
        return self.n_samples / batch_size * self.t_fixed + self.n_samples * self.t_sample_at(batch_size)

    def fixed_fraction(self, batch_size: float) -> float:
        """Share of a step that does not shrink per sample as B grows."""
        return self.t_fixed / self.predict_step_seconds(batch_size)

    def batch_where_fixed_below(self, fraction: float, limit: int = 1 << 16) -> int | None:
        """Smallest B at which the fixed part is under ``fraction`` of the step (None if not by ``limit``)."""
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must lie in (0, 1); got {fraction}")
        b = 1
        while b <= limit:  # fixed_fraction falls monotonically in B wherever t_sample(B) is positive
            if self.fixed_fraction(b) < fraction:
                lo = b // 2 + 1 if b > 1 else 1
                for c in range(lo, b + 1):
                    if self.fixed_fraction(c) < fraction:
                        return c
            b *= 2
        return None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["plateau_batch_10pct"] = self.batch_where_fixed_below(0.10)
        d["plateau_batch_5pct"] = self.batch_where_fixed_below(0.05)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PlateauModel":
        return cls(d["t_fixed"], d["t_sample"], list(d["batch_sizes"]), list(d["sample_seconds"]),
                   int(d["n_samples"]))


def fit(batch_sizes, step_seconds, n_samples: int) -> PlateauModel:
    """Fit the model to median step times measured at ``batch_sizes`` (at least two distinct sizes)."""
    B = np.asarray(batch_sizes, dtype=np.float64)
    s = np.asarray(step_seconds, dtype=np.float64)
    if B.ndim != 1 or B.shape != s.shape:
        raise ValueError(f"fit: batch_sizes and step_seconds must be 1-D of the same length; got {B.shape} "
                         f"and {s.shape}")
    if len(np.unique(B)) < 2:
        raise ValueError("fit: need step times at two or more distinct batch sizes")
    if (B < 1).any() or (s <= 0).any() or not np.isfinite(s).all():
        raise ValueError("fit: batch sizes must be >= 1 and step times positive and finite")
    if isinstance(n_samples, bool) or int(n_samples) < 1:
        raise ValueError(f"fit: n_samples must be a positive integer; got {n_samples!r}")
    order = np.argsort(B)
    B, s = B[order], s[order]
    w = 1.0 / s  # relative residuals: minimise sum(((a + b*B - s) / s)^2)
    A = np.stack([np.ones_like(B), B], axis=1) * w[:, None]
    (a, b), *_ = np.linalg.lstsq(A, s * w, rcond=None)
    if a < 0:  # no measurable fixed cost: all of the step scales with B
        a = 0.0
        b = float(np.sum(w * w * B * s) / np.sum(w * w * B * B))
    a = min(a, float(s[0]) * (1 - 1e-9))  # the fixed part cannot exceed the smallest measured step
    per_sample = (s - a) / B
    return PlateauModel(float(a), float(b), [int(x) for x in B], [float(x) for x in per_sample], int(n_samples))


def load(path) -> PlateauModel:
    """Read a model back from an explain JSON (its ``plateau`` entry) or from a bare ``to_dict()`` dump."""
    with open(path) as f:
        d = json.load(f)
    return PlateauModel.from_dict(d.get("plateau", d))
