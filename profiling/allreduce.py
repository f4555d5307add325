"""The all-reduce term of a data-parallel step: latency + bytes / bandwidth, measured, and what it predicts.

A ring all-reduce of a payload of n bytes over R ranks has every rank send and receive 2(R-1) messages of n/R
bytes (reduce-scatter, then all-gather), so with a per-message latency alpha and a link bandwidth beta:

    t_allreduce(n, R) = 2(R-1) * alpha + 2(R-1)/R * n / beta         (0 on one rank)

It is paid once per optimizer update whatever the local batch B, so it joins the *fixed* cost of a step in
the plateau model (``profiling.plateau``): on R ranks at local batch B

    step_R(B)  = step_1(B) + t_allreduce(n, R)
    samples/s  = R * B / step_R(B)
    efficiency = (samples/s on R ranks) / (R x samples/s on one rank) = step_1(B) / step_R(B)

``measure`` times the communicator's all-reduce over payload sizes (on every rank of a job) and ``fit`` turns
the times into (alpha, beta) for that job's network; ``predict`` and ``with_allreduce`` carry a measured
single-rank step to R ranks on a given network. ``NETWORKS`` are *stated* networks for predictions (typical
published figures, not measurements of this machine).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, replace
from time import perf_counter

import numpy as np

from .plateau import PlateauModel


@dataclass(frozen=True)
class Network:
    latency_s: float             # alpha: seconds per message
    bandwidth_bytes_per_s: float  # beta
    name: str = ""

    def __post_init__(self):
        if not (self.latency_s >= 0 and np.isfinite(self.latency_s)):
            raise ValueError(f"Network: latency_s must be finite and >= 0; got {self.latency_s!r}")
        if not (self.bandwidth_bytes_per_s > 0 and np.isfinite(self.bandwidth_bytes_per_s)):
            raise ValueError(f"Network: bandwidth_bytes_per_s must be finite and > 0; got "
                             f"{self.bandwidth_bytes_per_s!r}")

    def to_dict(self) -> dict:
        return asdict(self)


#: Stated networks for predictions (assumed, typical figures): per-message latency and per-link bandwidth.
NETWORKS = (
    Network(50e-6, 1.1e9, "10 Gb/s Ethernet, TCP (50 us, 1.1 GB/s)"),
    Network(2e-6, 23e9, "InfiniBand HDR, 200 Gb/s (2 us, 23 GB/s)"),
)


def _check_ranks(ranks) -> int:
    if isinstance(ranks, bool) or not isinstance(ranks, (int, np.integer)) or ranks < 1:
        raise ValueError(f"ranks must be a positive integer; got {ranks!r}")
    return int(ranks)


def allreduce_seconds(nbytes: float, ranks: int, network: Network) -> float:
    """Ring all-reduce time of ``nbytes`` over ``ranks`` on ``network``: 2(R-1) alpha + 2(R-1)/R n / beta."""
    r = _check_ranks(ranks)
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0; got {nbytes!r}")
    return 2 * (r - 1) * network.latency_s + 2 * (r - 1) / r * nbytes / network.bandwidth_bytes_per_s


def fit(ranks: int, nbytes, seconds, name: str = "measured") -> Network:
    """The (alpha, beta) whose ring model best fits all-reduce ``seconds`` measured at payloads ``nbytes`` on
    ``ranks`` ranks (least squares of t = a + b n, relative residuals; needs two or more distinct sizes)."""
    r = _check_ranks(ranks)
    if r < 2:
        raise ValueError("fit: an all-reduce on one rank moves nothing; measure on two or more ranks")
    n, t = np.asarray(nbytes, dtype=np.float64), np.asarray(seconds, dtype=np.float64)
    if n.ndim != 1 or n.shape != t.shape or len(np.unique(n)) < 2:
        raise ValueError(f"fit: nbytes and seconds must be 1-D of one length with two or more distinct sizes; got "
                         f"shapes {n.shape} and {t.shape}")
    if (n < 0).any() or (t <= 0).any() or not np.isfinite(t).all():
        raise ValueError("fit: sizes must be >= 0 and times positive and finite")
    w = 1.0 / t
    (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(n), n], axis=1) * w[:, None], t * w, rcond=None)
    a = max(float(a), 0.0)
    if b <= 0:  # times did not grow with the payload: no measurable bandwidth term
        raise ValueError("fit: all-reduce time did not grow with the payload; measure larger sizes")
    return Network(a / (2 * (r - 1)), 2 * (r - 1) / (r * float(b)), name)


def measure(comm, sizes=(8, 1 << 12, 1 << 16, 1 << 20, 1 << 22), repeats: int = 10,
            dtype=np.float32) -> list[dict]:
    """Median seconds of ``comm.allreduce_`` on payloads of ``sizes`` bytes (rounded to whole elements), each
    after a warm-up call; every rank of the job must call it alike. [{"bytes", "seconds"}, ...]."""
    out = []
    for size in sizes:
        buf = np.ones(max(1, int(size) // np.dtype(dtype).itemsize), dtype=dtype)
        comm.allreduce_(buf)
        times = []
        for _ in range(repeats):
            t0 = perf_counter()
            comm.allreduce_(buf)
            times.append(perf_counter() - t0)
        out.append({"bytes": int(buf.nbytes), "seconds": statistics.median(times)})
    return out


def predict(step_seconds_1: float, batch_size: int, nbytes: float, ranks: int, network: Network) -> dict:
    """R ranks at local batch ``batch_size`` from the single-rank step time there: step, samples/s, the
    all-reduce's share of the step and the scaling efficiency."""
    if not step_seconds_1 > 0:
        raise ValueError(f"step_seconds_1 must be positive; got {step_seconds_1!r}")
    reduce_s = allreduce_seconds(nbytes, ranks, network)
    step = step_seconds_1 + reduce_s
    return {"ranks": int(ranks), "global_batch_size": int(ranks) * int(batch_size), "step_s": step,
            "allreduce_s": reduce_s, "allreduce_share": reduce_s / step, "samples_per_s": ranks * batch_size / step,
            "scaling_efficiency": step_seconds_1 / step, "network": network.name}


def with_allreduce(model: PlateauModel, nbytes: float, ranks: int, network: Network) -> PlateauModel:
    """The plateau model of one rank among ``ranks``: its fixed cost per step grows by the all-reduce (the
    per-sample cost is the single rank's; ``n_samples`` becomes the rank's share of an epoch)."""
    return replace(model, t_fixed=model.t_fixed + allreduce_seconds(nbytes, ranks, network),
                   n_samples=max(1, model.n_samples // _check_ranks(ranks)))
