"""What a measurement ran on: CPU, cores, BLAS and its threads, numba and torch threads, GPU, versions.

Every output of the bench carries this, because a timing without its machine cannot be compared with
anything. ``set_threads`` is the one place that sets every thread pool a step may use, so that ``--threads``
means the same for each engine (BLAS via threadpoolctl, numba's parallel loops, torch's intra-op pool).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


#: Variables a dependency writes into os.environ when it is imported (threadpoolctl: KMP_DUPLICATE_LIB_OK, for
#: Intel's OpenMP). minigrad itself writes none.
DEPENDENCY_ENVIRONMENT = ("KMP_DUPLICATE_LIB_OK",)


def user_environment() -> dict:
    """The environment as the user gave it, for a child process that must not inherit anything of minigrad's
    process: ``os.environ`` (minigrad's thread policy lives in the C environment only) less what a dependency
    added after minigrad was imported."""
    import minigrad

    return {k: v for k, v in os.environ.items()
            if k not in DEPENDENCY_ENVIRONMENT or k in minigrad.ENVIRON_AT_IMPORT}


def _numba_runtime():
    """minigrad's numba runtime when the numba backend has been loaded, else None: numba is imported only by a
    process that uses it. Numba's threads are read and set through the runtime only: its calls apply the
    backend's OpenMP wait policy before Numba's thread pool starts."""
    return sys.modules.get("minigrad.kernels.numba_runtime")


def set_threads(n: int, peer: bool = False) -> None:
    """Limit every thread pool a training step may use to ``n`` threads, for the rest of the process: BLAS
    (threadpoolctl) and numba (now, or when its backend is loaded later) in minigrad's process; BLAS and torch
    in the torch peer's process (``peer``), which never touches numba: starting numba's pool there would apply
    minigrad's OpenMP wait policy to the process, and torch's OpenMP runtime would read it."""
    from threadpoolctl import threadpool_limits

    if peer:
        import torch

        torch.set_num_threads(n)  # the intra-op pool its GEMMs and convolutions use
    else:
        _limit["threads"] = n
        limit_numba_threads()
    threadpool_limits(limits=n)


#: The limit set_threads was last given in minigrad's process, for a numba backend loaded after it.
_limit: dict = {}


def limit_numba_threads() -> None:
    """Hold numba's threads to set_threads' limit, if one was set and the numba backend is loaded. The backend
    dispatcher calls it when it loads a backend, so the limit holds whichever is done first."""
    runtime = _numba_runtime()
    if runtime is not None and "threads" in _limit:
        import numba

        runtime.set_threads(min(_limit["threads"], numba.config.NUMBA_NUM_THREADS))


def _gpu() -> str | None:
    """The CUDA device's name when the cupy backend has been loaded (looked up, never imported, here)."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return None
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:  # a broken driver is worth recording, not worth failing the study over
        return f"unknown ({exc})"


def machine_info() -> dict:
    """CPU model, cores, memory, BLAS libraries with their threads, numba/torch threads, GPU."""
    from threadpoolctl import threadpool_info

    blas = [{"library": p.get("internal_api"), "version": p.get("version"), "threads": p.get("num_threads"),
             "threading_layer": p.get("threading_layer"), "architecture": p.get("architecture")}
            for p in threadpool_info() if p.get("user_api") == "blas"]
    runtime = _numba_runtime()
    torch = sys.modules.get("torch")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_bytes": _total_memory_bytes(),
        "platform": platform.platform(),
        "blas": blas,
        "numba_threads": runtime.get_threads()["numba"] if runtime is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "gpu": _gpu(),
    }


def versions() -> dict:
    """Versions of Python and of every library whose speed the numbers depend on (None: not installed)."""
    from minigrad import __version__

    out = {"python": platform.python_version(), "minigrad": __version__}
    for dist in ("numpy", "numba", "torch", "cupy", "threadpoolctl", "matplotlib"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    if out["cupy"] is None:  # cupy ships as cupy-cuda12x etc.
        cupy = sys.modules.get("cupy")
        out["cupy"] = getattr(cupy, "__version__", None)
    return out


def describe(machine: dict) -> str:
    """One line: ``Intel Xeon, 2 cores, OpenBLAS 0.3.31 x2 threads, numba x2, no GPU``."""
    blas = ", ".join(f"{b['library']} {b['version']} x{b['threads']}" for b in machine["blas"]) or "no BLAS found"
    parts = [machine["cpu"], f"{machine['usable_cores']} cores", blas]
    if machine["numba_threads"] is not None:
        parts.append(f"numba x{machine['numba_threads']}")
    if machine["torch_threads"] is not None:
        parts.append(f"torch x{machine['torch_threads']}")
    parts.append(f"GPU {machine['gpu']}" if machine["gpu"] else "no GPU")
    return ", ".join(parts)
