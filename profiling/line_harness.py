"""line_profiler over the hot layer functions and kernels, at a small and a large batch size.

Line timings show *where inside* a kernel the time goes (the im2col copy, the GEMM line, the col2im adds)
and how that moves with batch size. line_profiler times Python lines: it cannot see inside a Numba-jitted
function (one line calls the compiled kernel and gets all its time), so on the numba backend it shows the
wrapper-level split: validation and array preparation versus the jitted call.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from minigrad import backend
from minigrad.tensor import Function, Tensor

from . import _harness

HOT_KERNELS = ("conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward", "relu_maxpool2d_forward",
               "relu_maxpool2d_backward", "linear_forward", "linear_backward")


def hot_functions() -> list:
    """The functions worth timing line by line on the live backend: kernels, their helpers, the tape."""
    module = backend.backend_module()
    fns = [getattr(module, n) for n in HOT_KERNELS]
    fns += [getattr(module, n) for n in ("im2col", "col2im") if hasattr(module, n)]
    fns += [Function.apply.__func__, Tensor.backward]
    return [f for f in fns if hasattr(f, "__code__")]  # jitted dispatchers have no Python lines to time


def profile_lines(model_name: str, batch_size: int, steps: int, train_set, out_dir, warmup: int = 2,
                  seed: int = 0) -> dict:
    """Run ``steps`` training steps under line_profiler; save ``lines-<model>-B<b>.lprof`` and ``.txt``.

    Returns the paths and, per function, its total time and its three most expensive lines.
    """
    from line_profiler import LineProfiler

    run = _harness.Harness(model_name, batch_size, train_set, warmup + steps, seed)
    lp = LineProfiler()
    for fn in hot_functions():
        lp.add_function(fn)
    run.steps(warmup)
    lp.enable_by_count()
    t0 = time.perf_counter()
    records = run.steps(steps)
    wall = time.perf_counter() - t0
    lp.disable_by_count()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"lines-{model_name}-B{batch_size}"
    lp.dump_stats(f"{stem}.lprof")
    text = io.StringIO()
    lp.print_stats(stream=text, output_unit=1e-6)
    note = ""
    if backend.get_backend() == "numba":
        note = ("NOTE: line_profiler cannot see inside Numba-jitted code; each jitted call is one line here, so "
                "this shows the wrapper-level split (validation, array preparation, the compiled call).\n\n")
    Path(f"{stem}.txt").write_text(note + text.getvalue())
    return {"batch_size": batch_size, "steps": steps, "wall_seconds": wall,
            "step_seconds": float(np.median([r.compute_seconds for r in records])), "lprof_path": f"{stem}.lprof", "text_path": f"{stem}.txt",
            "functions": summarize(lp.get_stats())}


def summarize(stats, top: int = 3) -> list[dict]:
    """Per profiled function: total seconds and the ``top`` lines by time (line number, share, source)."""
    import linecache

    out = []
    for (filename, first_line, name), lines in stats.timings.items():
        total = sum(t for _, _, t in lines) * stats.unit
        if total == 0:
            continue
        best = sorted(lines, key=lambda ln: -ln[2])[:top]
        out.append({"function": name, "file": Path(filename).name, "first_line": first_line, "seconds": total,
                    "top_lines": [{"line": ln, "hits": hits, "share": t * stats.unit / total,
                                   "source": linecache.getline(filename, ln).strip()} for ln, hits, t in best]})
    return sorted(out, key=lambda f: -f["seconds"])
