"""This machine's measured ceilings: GEMM GFLOP/s, streaming bandwidth, cache sizes, cores.

The roofline and the "% of peak" figures divide by these, so they are measured here, with the BLAS and
thread count the kernels use, rather than taken from a datasheet. Results are cached per machine (CPU model
and core count) with a timestamp; ``load(remeasure=True)`` measures again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from minigrad.machine import cpu_model, usable_cores


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: page faults, BLAS thread start-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_gflops(n: int = 2048, dtype="float32", repeats: int = 3) -> float:
    """Best-of-``repeats`` GFLOP/s of an n x n x n matmul (2 n^3 FLOPs) through NumPy's BLAS."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float64).astype(dtype)
    b = rng.random((n, n), dtype=np.float64).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    return 2 * n**3 / _best_seconds(lambda: np.matmul(a, b, out=out), repeats) / 1e9


def stream_gbps(megabytes: int = 256, repeats: int = 3) -> dict:
    """Copy (a = b: 2 arrays moved) and triad (a = b + s*c, done in place in two passes: 5 arrays moved)
    bandwidth in GB/s over float64 arrays of ``megabytes`` each, far larger than the last-level cache."""
    n = megabytes * 2**20 // 8
    a, b, c = np.ones(n), np.full(n, 2.0), np.full(n, 3.0)

    def triad():
        np.multiply(c, 3.0, out=a)
        np.add(a, b, out=a)

    copy_s = _best_seconds(lambda: np.copyto(a, b), repeats)
    triad_s = _best_seconds(triad, repeats)
    return {"copy": 2 * 8 * n / copy_s / 1e9, "triad": 5 * 8 * n / triad_s / 1e9}


def _data_caches() -> list[dict]:
    """Each data or unified cache of the first CPU, as the OS (Linux sysfs) lists it: {field: text} of the
    fields it gives (level, size, number_of_sets, ...); empty where unavailable."""
    out = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        fields = {}
        for name in ("type", "level", "size", "number_of_sets", "ways_of_associativity", "coherency_line_size"):
            try:
                fields[name] = (index / name).read_text().strip()
            except OSError:
                pass
        if fields.get("type") != "Instruction" and {"type", "level", "size"} <= set(fields):
            out.append(fields)
    return out


def cache_sizes() -> dict:
    """Data/unified cache sizes in bytes by level, from the OS (Linux sysfs); empty where unavailable."""
    out = {}
    for cache in _data_caches():
        size = cache["size"]
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1], 1)
        out[f"L{cache['level']}"] = int(size.rstrip("KMG")) * mult
    return out


def l1_geometry() -> dict | None:
    """{"sets", "ways", "line"} of the level-1 data cache, from the OS (Linux sysfs); None where unavailable."""
    for cache in _data_caches():
        if cache["level"] == "1":
            try:
                return {"sets": int(cache["number_of_sets"]), "ways": int(cache["ways_of_associativity"]),
                        "line": int(cache["coherency_line_size"])}
            except (KeyError, ValueError):
                return None
    return None


def blas_threads() -> int | None:
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return blas[0]["num_threads"] if blas else None


def measure(gemm_n: int = 2048, stream_mb: int = 256, repeats: int = 3) -> dict:
    """Measure every ceiling now (a few seconds at the defaults)."""
    return {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "blas_threads": blas_threads(),
        "gemm_n": gemm_n,
        "gemm_gflops": {"float32": gemm_gflops(gemm_n, "float32", repeats),
                        "float64": gemm_gflops(gemm_n, "float64", repeats)},
        "stream_gbps": stream_gbps(stream_mb, repeats),
        "caches": cache_sizes(),
    }


def cached_measurement(stem: str, key: str, measure_fn, remeasure: bool = False, cache_dir=None, **kwargs) -> dict:
    """The measurement cached as ``<stem>-<hash of key>.json`` in ``cache_dir`` (default: minigrad's data
    directory), made with ``measure_fn(**kwargs)`` and written atomically first when absent or ``remeasure``."""
    from minigrad.data import default_data_dir

    path = Path(cache_dir or default_data_dir()) / f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    if path.exists() and not remeasure:
        return json.loads(path.read_text())
    result = measure_fn(**kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    return result


def load(remeasure: bool = False, cache_dir=None, **measure_kwargs) -> dict:
    """The cached ceilings of this machine (CPU, cores and BLAS threads), measuring them first if needed."""
    return cached_measurement("ceilings", f"{cpu_model()}|{os.cpu_count()}|{blas_threads()}", measure, remeasure,
                              cache_dir, **measure_kwargs)
