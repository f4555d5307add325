"""Training steps under cProfile, aggregated into causes per sample, side by side across batch sizes.

cProfile sees Python functions and C functions called from Python, but not NumPy operators (``a @ b`` and
ufunc calls run inside the calling function's own time). So the causes are built from the *kernels'*
cumulative times, which the one-kernel-table design makes easy to find, plus the self time of the engine's
Python layers:

- GEMM/BLAS:          conv2d and linear kernels, less their im2col/col2im helpers
- im2col/col2im:      the patch gather/scatter helpers
- pooling:            maxpool2d kernels, and the fused relu_maxpool2d
- elementwise:        relu, dropout, batchnorm kernels
- loss:               softmax_xent and log_softmax kernels
- optimizer:          sgd_update / adam_update and the optimizer's Python
- autograd/tape:      self time of tensor.py, functional.py, nn.py, backend.py and loop.py (the per-step Python machinery)
- data loading:       the DataLoader (gather, scale, convert)
- other Python:       everything else the profiler saw (the harness's loop, profiler bookkeeping)

Dividing by samples shows which costs shrink per sample as B grows (fixed per-step work: tape, dispatch,
optimizer) and which do not (the arithmetic): the plateau, explained.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from pathlib import Path

import numpy as np

from minigrad import backend

from . import _harness

#: The patch gather/scatter helpers by name (the ``_t`` ones: cupy's transposed orientation).
HELPERS = ("im2col", "col2im", "im2col_t", "col2im_t")
CAUSES = ("GEMM/BLAS", "im2col/col2im", "pooling", "elementwise", "loss", "optimizer", "autograd/tape",
          "data loading", "other Python")
_KERNEL_CAUSE = {"conv2d": "GEMM/BLAS", "linear": "GEMM/BLAS", "maxpool2d": "pooling", "relu_maxpool2d": "pooling",
                 "relu": "elementwise",
                 "dropout": "elementwise", "batchnorm2d": "elementwise", "softmax_xent": "loss",
                 "log_softmax": "loss", "sgd": "optimizer", "adam": "optimizer"}
_LAYER_FILES = ("minigrad/tensor.py", "minigrad/functional.py", "minigrad/nn.py", "minigrad/backend.py",
                "minigrad/loop.py")  # the per-step Python machinery: tape, layers, dispatch, the loop itself


def _kernel_op(func_name: str) -> str | None:
    for suffix in ("_forward", "_backward", "_update"):
        if func_name.endswith(suffix):
            return func_name[: -len(suffix)]
    return None


def _kernel_keys(module) -> dict[tuple, str]:
    """pstats keys (file, first line, name) of the module's kernel functions -> their cause. A backend may
    reuse another backend's function for a kernel (e.g. one BLAS call), so keys come from the objects."""
    keys = {}
    for name in backend.KERNELS:
        code = getattr(getattr(module, name), "__code__", None)
        if code is not None:
            keys[(code.co_filename, code.co_firstlineno, code.co_name)] = _KERNEL_CAUSE[_kernel_op(name)]
    return keys


def _own_cause(path: str) -> str | None:
    """The cause of a function's *self* time by the file it lives in (None: attribute it to its callers)."""
    if path.endswith("minigrad/optim.py"):
        return "optimizer"
    if "minigrad/data/" in path:  # the minigrad.data package (the DataLoader is in loader.py)
        return "data loading"
    if any(path.endswith(f) for f in _LAYER_FILES):
        return "autograd/tape"
    return None


def causes(stats: pstats.Stats, kernel_module) -> dict[str, float]:
    """Seconds per cause (see the module docstring) from a profile of steps on the backend ``kernel_module``.

    Kernels count with their cumulative time (all they call is theirs), under callers other than kernels (a
    fused kernel built from the backend's own kernels counts once, as itself). Every other function's self time goes
    to its file's cause, or, for NumPy helpers, builtins and shared plumbing, to the cause of whoever called
    it (split by the time spent under each caller; time under a kernel is already the kernel's).
    """
    kernels = _kernel_keys(kernel_module)
    out = dict.fromkeys(CAUSES, 0.0)
    helpers = 0.0
    memo: dict[tuple, str] = {}

    def resolve(key, depth=0) -> str:
        """The cause a call from ``key`` belongs to: a kernel's ("in kernel"), a file's, or its callers'."""
        if key in memo:
            return memo[key]
        if key in kernels:
            return "in kernel"
        own = _own_cause(key[0])
        if own is not None or depth > 50:
            return own or "other Python"
        memo[key] = "other Python"  # cycle guard
        callers = stats.stats.get(key, (0, 0, 0, 0, {}))[4]
        if callers:
            by_time = {}
            for caller, (_, _, tt, ct) in callers.items():
                c = resolve(caller, depth + 1)
                by_time[c] = by_time.get(c, 0.0) + ct
            memo[key] = max(by_time, key=by_time.get)
        return memo[key]

    for key, (_, _, tottime, cumtime, callers) in stats.stats.items():
        path, _, func = key
        if key in kernels:
            out[kernels[key]] += (sum(ct for caller, (_, _, _, ct) in callers.items()
                                      if caller not in kernels and resolve(caller) != "in kernel")
                                  if callers else cumtime)
            continue
        if "/kernels/" in path and func in HELPERS:
            helpers += cumtime
        own = _own_cause(path)
        if own is not None:
            out[own] += tottime
            continue
        if not callers:
            out["other Python"] += tottime
            continue
        for caller, (_, _, tt, _) in callers.items():
            cause = resolve(caller)
            if cause != "in kernel":
                out[cause] += tt
    out["GEMM/BLAS"] -= helpers  # the helpers ran inside the conv kernels' cumulative time
    out["im2col/col2im"] = helpers
    return out


def profile_batch_size(model_name: str, batch_size: int, steps: int, train_set, out_dir=None, warmup: int = 2,
                       seed: int = 0) -> dict:
    """Run ``steps`` training steps at ``batch_size`` under cProfile (after ``warmup`` unprofiled ones).

    Returns the wall seconds, the causes (seconds and per-sample microseconds) and, when ``out_dir`` is
    given, saves ``cprofile-<model>-B<batch>.prof`` there (open it with snakeviz or pstats).
    """
    run = _harness.Harness(model_name, batch_size, train_set, warmup + steps, seed)
    run.steps(warmup)
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    records = run.steps(steps)
    profiler.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    result = causes(stats, backend.backend_module())
    samples = steps * batch_size
    row = {"batch_size": batch_size, "steps": steps, "wall_seconds": wall, "profiled_seconds": stats.total_tt,
           "step_seconds": float(np.median([r.compute_seconds for r in records])),
           "causes_seconds": result, "causes_us_per_sample": {k: 1e6 * v / samples for k, v in result.items()}}
    if out_dir is not None:
        path = Path(out_dir) / f"cprofile-{model_name}-B{batch_size}.prof"
        path.parent.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(path)
        row["prof_path"] = str(path)
    return row


def sweep(model_name: str, batch_sizes, samples_per_size: int, train_set, out_dir=None, seed: int = 0) -> list[dict]:
    """Profile each batch size over about ``samples_per_size`` samples (at least 3 steps each)."""
    return [profile_batch_size(model_name, b, max(3, samples_per_size // b), train_set, out_dir, seed=seed)
            for b in batch_sizes]


def format_causes(rows: list[dict]) -> str:
    """Causes (rows) x batch sizes (columns) in microseconds per sample."""
    head = f"{'us / sample':<16}" + "".join(f"{'B=' + str(r['batch_size']):>11}" for r in rows)
    lines = [head, "-" * len(head)]
    for cause in CAUSES:
        lines.append(f"{cause:<16}" + "".join(f"{r['causes_us_per_sample'][cause]:>11.1f}" for r in rows))
    lines.append(f"{'total':<16}" + "".join(f"{sum(r['causes_us_per_sample'].values()):>11.1f}" for r in rows))
    return "\n".join(lines)
