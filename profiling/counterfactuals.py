"""What would help, measured: the same training steps rerun under one change at a time, each in a fresh process.

Every counterfactual in ``VARIANTS`` is a change applied to a child process that otherwise does exactly what
the baseline child does: select the backend, ``machine.set_threads(threads)``, load the same data, build
``_harness.Harness(model, batch_size, train_set, warmup + steps)`` (seed 0: same weights, same batches), take
``warmup`` updates, then time ``steps`` updates. A child reports the median step time (the loop's compute
seconds), its IQR, the minor page faults per timed step and the facts that show its change really happened
(the environment it saw, BLAS's thread count, the MXCSR denormal bits). A fresh process per variant means no
state leaks from one to the next: not the allocator's heap, not numba's or BLAS's thread pools, not the MXCSR.

The baseline runs first and last. ``baseline_drift`` (last / first) is the noise floor of the comparison;
every gain is the mean of the two baseline step times over the variant's step time, so a gain within the
drift of 1.0 is not a measured difference.

Protocol: ``python -m minigrad.profiling.counterfactuals`` reads one JSON request on stdin and writes one JSON
reply on stdout; anything printed while measuring goes to stderr. A failure inside the child comes back as
``{"error": "Type: message", "traceback": ...}`` and becomes a row with ``applicable`` False and that reason.

This module imports only the standard library at module level, so that the flush-denormals child can load
it and set the MXCSR bits before NumPy is imported: importing NumPy starts OpenBLAS's worker threads, and a
thread takes its MXCSR from the thread that creates it, so the bits must be set before any thread exists.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from typing import Callable

#: MXCSR bits: flush-to-zero (denormal results become 0) and denormals-are-zero (denormal inputs read as 0).
FTZ, DAZ = 0x8000, 0x0040

@dataclass(frozen=True)
class Config:
    """What the user configured: every variant is a change to this."""

    model: str
    backend: str
    batch_size: int
    dataset: str
    data_dir: str | None
    threads: int
    steps: int
    warmup: int


@dataclass(frozen=True)
class Variant:
    """One counterfactual: a change to the child process, and when it applies.

    env: variables added to the child's environment (the user's ``os.environ`` plus these).
    backend: run under this backend instead of the configured one.
    blas_threads: limit BLAS to this many threads after ``set_threads`` (threadpoolctl).
    flush_denormals: set MXCSR's FTZ and DAZ bits before anything else runs in the child.
    default_malloc: leave glibc's allocator thresholds as they are (the host backends raise them when
        selected, ``kernels/_host.keep_freed_memory``).
    applies: ``applies(config)`` returns why the variant does not apply to ``config``, or None if it does.
    """

    name: str
    description: str
    env: dict = field(default_factory=dict)
    backend: str | None = None
    blas_threads: int | None = None
    flush_denormals: bool = False
    default_malloc: bool = False
    applies: Callable[[Config], str | None] | None = None

    def reason_not_applicable(self, config: Config) -> str | None:
        return self.applies(config) if self.applies is not None else None


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def _host_backend(name: str) -> bool:
    """Whether backend ``name`` computes on the host CPU (an unknown or unavailable one counts as host: its
    child then fails and says why)."""
    from minigrad import backend

    try:
        return backend.device(name) == "host"
    except Exception:
        return True


def _one_blas_thread(config: Config) -> str | None:
    if config.threads <= 1:
        return f"threads={config.threads}: BLAS already runs on one thread"
    if not _host_backend(config.backend):
        return f"the {config.backend} backend runs its GEMMs on the GPU"
    return None


def _numba_backend(config: Config) -> str | None:
    if config.backend != "numpy":
        return f"compares the numpy backend with numba; the configured backend is {config.backend}"
    from minigrad import backend

    return backend.unavailable_reason("numba")


def _default_malloc(config: Config) -> str | None:
    libc = platform.libc_ver()[0]
    if libc != "glibc":
        return f"the host backends tune glibc's allocator; this Python runs on {libc or 'another C library'}"
    if not _host_backend(config.backend):
        return f"the {config.backend} backend's arrays live in the GPU's memory pool, not in glibc's heap"
    return None


def _flush_denormals(config: Config) -> str | None:
    if not _is_x86_64():
        return f"FTZ/DAZ are bits of x86-64's MXCSR; this machine is {platform.machine() or 'unknown'}"
    if not _host_backend(config.backend):
        return f"the {config.backend} backend computes on the GPU, which the host's MXCSR does not govern"
    try:
        import llvmlite.binding  # noqa: F401  (the MXCSR is set through an LLVM intrinsic; llvmlite comes with numba)
    except ImportError as exc:
        return f"setting the MXCSR needs llvmlite (installed with numba): {exc}"
    return None


def _fused_kernels(config: Config) -> str | None:
    from minigrad import backend

    fused = [name for name in backend.KERNELS if "fused" in name]
    if not fused:
        return "the kernel contract (backend.KERNELS) has no fused kernel"
    return (f"the contract has fused kernels ({', '.join(fused)}) but no switch to train a model with and "
            "without them; add one before measuring this")


#: The counterfactuals, in the order they run (the baseline first, and again last).
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("baseline", "as configured"),
    Variant("one BLAS thread", "BLAS limited to 1 thread (threadpoolctl), everything else the same",
            blas_threads=1, applies=_one_blas_thread),
    Variant("numba backend", "the numba backend instead of numpy", backend="numba", applies=_numba_backend),
    Variant("glibc malloc defaults",
            "without the host backends' allocator policy: large temporaries mapped fresh from the OS each step "
            "(gain < 1: what the policy saves)", default_malloc=True, applies=_default_malloc),
    Variant("flush denormals to zero", "MXCSR FTZ and DAZ set in the child before NumPy loads",
            flush_denormals=True, applies=_flush_denormals),
    Variant("fused kernels", "the contract's fused kernels instead of their unfused sequences",
            applies=_fused_kernels),
)}


# ----------------------------------------------------------------------------------------------------------
# the MXCSR (x86-64), through LLVM's stmxcsr/ldmxcsr intrinsics, JIT-compiled by llvmlite

_mxcsr_fn = None


def mxcsr_update(keep: int = 0xFFFFFFFF, set_bits: int = 0) -> int:
    """Set the calling thread's MXCSR to ``(mxcsr & keep) | set_bits``; return the value it had before.

    ``mxcsr_update()`` only reads it. Threads started later inherit the caller's value; threads that already
    exist keep their own. x86-64 only.
    """
    global _mxcsr_fn
    if _mxcsr_fn is None:
        _mxcsr_fn = _compile_mxcsr_update()
    return int(_mxcsr_fn(keep & 0xFFFFFFFF, set_bits & 0xFFFFFFFF))


def _compile_mxcsr_update():
    import ctypes
    import warnings

    from llvmlite import binding as llvm
    from llvmlite import ir

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            llvm.initialize()  # required by older llvmlite; newer ones initialize themselves and refuse the call
    except RuntimeError:
        pass
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    module = ir.Module(name="mxcsr")
    module.triple = llvm.get_default_triple()
    i32, i8p = ir.IntType(32), ir.IntType(8).as_pointer()
    store_csr = ir.Function(module, ir.FunctionType(ir.VoidType(), [i8p]), "llvm.x86.sse.stmxcsr")
    load_csr = ir.Function(module, ir.FunctionType(ir.VoidType(), [i8p]), "llvm.x86.sse.ldmxcsr")
    fn = ir.Function(module, ir.FunctionType(i32, [i32, i32]), "mxcsr_update")
    b = ir.IRBuilder(fn.append_basic_block())
    slot = b.alloca(i32)
    raw = b.bitcast(slot, i8p)
    b.call(store_csr, [raw])
    old = b.load(slot)
    b.store(b.or_(b.and_(old, fn.args[0]), fn.args[1]), slot)
    b.call(load_csr, [raw])
    b.ret(old)
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    engine = llvm.create_mcjit_compiler(parsed, llvm.Target.from_default_triple().create_target_machine())
    engine.finalize_object()
    update = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32)(
        engine.get_function_address("mxcsr_update"))
    update._engine = engine  # the compiled code lives as long as its engine
    return update


def denormals_flushed() -> bool | None:
    """Whether the calling thread's MXCSR has both FTZ and DAZ set (None: not x86-64, or unreadable)."""
    if not _is_x86_64():
        return None
    try:
        return mxcsr_update() & (FTZ | DAZ) == FTZ | DAZ
    except Exception:
        return None


#: How the flush-denormals child starts: this file loaded on its own (standard library only) sets the bits,
#: then the module runs as ``python -m minigrad.profiling.counterfactuals`` would.
_BOOT = """\
import importlib.util, runpy, sys
spec = importlib.util.spec_from_file_location("_minigrad_counterfactuals_boot", {path!r})
boot = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(boot)
boot.mxcsr_update(0xFFFFFFFF, boot.FTZ | boot.DAZ)
runpy.run_module("minigrad.profiling.counterfactuals", run_name="__main__", alter_sys=True)
"""


# ----------------------------------------------------------------------------------------------------------
# the parent


def _watched_env() -> list[str]:
    """Every variable some variant sets: each child reports what it saw of these."""
    return sorted({name for v in VARIANTS.values() for name in v.env})


def _resolve(variants) -> list[Variant]:
    if variants is None:
        return list(VARIANTS.values())
    out = []
    for v in variants:
        if isinstance(v, Variant):
            out.append(v)
        elif isinstance(v, str) and v in VARIANTS:
            out.append(VARIANTS[v])
        else:
            raise ValueError(f"counterfactuals.run: variants must name entries of VARIANTS {list(VARIANTS)} or be "
                             f"Variant objects; got {v!r}")
    return out


def _check_args(model_name, backend_name, batch_size, dataset, threads, steps, warmup) -> None:
    from minigrad import data

    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool)

    for arg, value, low in (("batch_size", batch_size, 1), ("threads", threads, 1), ("steps", steps, 1),
                            ("warmup", warmup, 0)):
        if not is_int(value) or value < low:
            raise ValueError(f"counterfactuals.run: {arg} must be an integer >= {low}; got {value!r}")
    if dataset not in data.DATASETS:
        raise ValueError(f"counterfactuals.run: dataset must be one of {list(data.DATASETS)}; got {dataset!r}")
    for arg, value in (("model_name", model_name), ("backend_name", backend_name)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"counterfactuals.run: {arg} must be a non-empty string; got {value!r}")


def _call_child(config: Config, variant: Variant) -> dict:
    """Run ``variant`` in a fresh child; its reply (or ``{"error": ...}`` when it failed without one)."""
    request = {
        "model": config.model, "backend": variant.backend or config.backend, "batch_size": config.batch_size,
        "dataset": config.dataset, "data_dir": config.data_dir, "threads": config.threads, "steps": config.steps,
        "warmup": config.warmup, "blas_threads": variant.blas_threads, "flush_denormals": variant.flush_denormals,
        "default_malloc": variant.default_malloc, "watch_env": _watched_env(),
    }
    if variant.flush_denormals:
        command = [sys.executable, "-c", _BOOT.format(path=os.path.abspath(__file__))]
    else:
        command = [sys.executable, "-m", "minigrad.profiling.counterfactuals"]
    from minigrad.machine import user_environment

    env = user_environment()
    env.update(variant.env)
    proc = subprocess.run(command, input=json.dumps(request).encode(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env)
    if proc.returncode == 130:
        raise KeyboardInterrupt
    try:
        reply = json.loads(proc.stdout)
    except ValueError:
        lines = [line.strip() for line in proc.stderr.decode(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
        said = (errors or lines)[-1:]
        return {"error": f"the child exited with code {proc.returncode} and no reply"
                         + (f"; its stderr says: {said[0]}" if said else "")}
    if not isinstance(reply, dict):
        return {"error": f"the child replied {reply!r}"}
    return reply


def _row(variant: Variant, reply: dict | None = None, reason: str | None = None) -> dict:
    row = {"name": variant.name, "description": variant.description, "applicable": reason is None,
           "reason": reason, "step_seconds": None, "step_iqr": None, "minor_faults_per_step": None, "gain": None,
           "baseline_drift": None, "runs": None, "backend": None, "env": None, "blas_threads": None,
           "flush_denormals": None, "keeps_freed_memory": None}
    if reply is not None:
        if "error" in reply:
            row.update(applicable=False, reason=f"failed in its child: {reply['error']}")
        else:
            for key in ("step_seconds", "step_iqr", "minor_faults_per_step", "backend", "env", "blas_threads",
                        "flush_denormals", "keeps_freed_memory"):
                row[key] = reply.get(key)
            row["runs"] = [reply["step_seconds"]]
    return row


def _baseline_row(variant: Variant, first: dict, last: dict) -> dict:
    """One baseline row from its two runs: the mean of those that succeeded, and their drift (last / first)."""
    good = [r for r in (first, last) if "error" not in r]
    if not good:
        return _row(variant, first)
    row = _row(variant, good[0])
    n = len(good)
    row["step_seconds"] = sum(r["step_seconds"] for r in good) / n
    row["step_iqr"] = sum(r["step_iqr"] for r in good) / n
    row["minor_faults_per_step"] = sum(r["minor_faults_per_step"] for r in good) / n
    row["runs"] = [r["step_seconds"] if "error" not in r else None for r in (first, last)]
    if n == 2:
        row["baseline_drift"] = last["step_seconds"] / first["step_seconds"]
    else:
        failed = first if "error" in first else last
        row["reason"] = f"one of its two runs failed: {failed['error']}"
    return row


def sort_rows(rows: list[dict]) -> list[dict]:
    """The baseline first, then measured variants by gain (largest first), then those without one."""
    def key(item):
        i, r = item
        if r["name"] == "baseline":
            return (0, 0.0, i)
        if r["applicable"] and r["gain"] is not None:
            return (1, -r["gain"], i)
        return (2 if r["applicable"] else 3, 0.0, i)

    return [r for _, r in sorted(enumerate(rows), key=key)]


def run(model_name: str, backend_name: str, batch_size: int, dataset: str = "mnist", data_dir=None,
        threads: int = 1, steps: int = 20, warmup: int = 3, variants=None, progress=None) -> list[dict]:
    """Measure every applicable counterfactual of training ``model_name`` on ``backend_name`` at ``batch_size``.

    variants: names in VARIANTS and/or Variant objects (default: all of VARIANTS); the baseline always runs,
        first and last. progress: a progress bar over the children (``minigrad.progress`` decides when None).
    Returns rows sorted by ``sort_rows`` (baseline first), each with: name, description, applicable, reason,
    step_seconds, step_iqr, minor_faults_per_step, gain (mean baseline step / this step), baseline_drift
    (baseline row only: its last run / its first), runs (the child step medians behind step_seconds), and the
    child's own facts: backend, env (the watched variables it saw; None: unset), blas_threads, flush_denormals,
    keeps_freed_memory (whether the host backends' allocator policy was in force).
    """
    from minigrad import progress as _progress

    _check_args(model_name, backend_name, batch_size, dataset, threads, steps, warmup)
    config = Config(model_name, backend_name, batch_size, dataset,
                    None if data_dir is None else os.fspath(data_dir), threads, steps, warmup)
    baseline = VARIANTS["baseline"]
    others = [v for v in _resolve(variants) if v.name != "baseline"]
    plan = []
    for v in others:
        try:
            reason = v.reason_not_applicable(config)
        except Exception as exc:
            reason = f"could not decide whether it applies: {type(exc).__name__}: {exc}"
        plan.append((v, reason))
    bar = _progress.bar(progress, total=2 + sum(reason is None for _, reason in plan), desc="counterfactuals")
    try:
        def measure(v):
            bar.set_postfix_str(v.name)
            reply = _call_child(config, v)
            bar.update(1)
            return reply

        first = measure(baseline)
        measured = [(v, None if reason else measure(v), reason) for v, reason in plan]
        last = measure(baseline)
    finally:
        bar.close()
    base = _baseline_row(baseline, first, last)
    rows = [base] + [_row(v, reply, reason) for v, reply, reason in measured]
    if base["step_seconds"]:
        for r in rows:
            if r["applicable"] and r["step_seconds"]:
                r["gain"] = base["step_seconds"] / r["step_seconds"]
    return sort_rows(rows)


def format_table(rows: list[dict]) -> str:
    """The rows as plain text: one line per variant, then what the gains are measured against."""
    head = f"{'counterfactual':<26}{'step ms':>9}{'IQR ms':>8}{'faults/step':>13}{'gain':>8}  what changed"
    lines = [head, "-" * len(head)]
    base = next((r for r in rows if r["name"] == "baseline"), None)
    for r in rows:
        if r["applicable"] and r["step_seconds"] is not None:
            gain = f"{r['gain']:.2f}x" if r["gain"] is not None and math.isfinite(r["gain"]) else "-"
            note = r["description"] + (f"; {r['reason']}" if r["reason"] else "")
            lines.append(f"{r['name']:<26}{r['step_seconds'] * 1e3:>9.2f}{r['step_iqr'] * 1e3:>8.2f}"
                         f"{r['minor_faults_per_step']:>13.0f}{gain:>8}  {note}")
        else:
            lines.append(f"{r['name']:<26}{'-':>9}{'-':>8}{'-':>13}{'-':>8}  not measured: {r['reason']}")
    if base is not None and base["baseline_drift"] is not None:
        drift = base["baseline_drift"]
        lines.append(f"gain = mean of the two baseline runs / the variant's step (median). The baseline ran first "
                     f"and last: drift {drift:.3f}x (last / first).")
        if abs(drift - 1) > 0.05:
            lines.append(f"Noisy comparison: the baseline moved {abs(drift - 1):.0%} between its runs; gains within "
                         f"that of 1.00x are not measured differences.")
    elif base is not None and base["applicable"]:
        lines.append("gain = the baseline's step / the variant's step; only one baseline run succeeded, so the "
                     "noise of the comparison is unknown.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# the child


def _serve(request: dict) -> dict:
    import resource

    import numpy as np
    import threadpoolctl

    from minigrad import backend, data
    from minigrad.kernels import _host
    from minigrad.machine import set_threads

    from . import _harness

    if request["flush_denormals"] and not denormals_flushed():
        mxcsr_update(0xFFFFFFFF, FTZ | DAZ)  # started with -m instead of the boot: late, but set
    if request["default_malloc"]:
        _host.KEEP_FREED = False  # before the backend's activate() would raise the thresholds
    backend.set_backend(request["backend"])  # first: set_threads sets numba's threads once its backend is loaded
    set_threads(request["threads"])
    if request["blas_threads"] is not None:
        threadpoolctl.threadpool_limits(limits=request["blas_threads"], user_api="blas")  # holds until changed
    train_set, _ = data.load_dataset(request["dataset"], data_dir=request["data_dir"])
    steps, warmup = request["steps"], request["warmup"]
    harness = _harness.Harness(request["model"], request["batch_size"], train_set, warmup + steps)
    harness.updates(warmup)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = harness.updates(steps)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    q1, median, q3 = np.percentile(t, [25, 50, 75])
    blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    return {
        "step_seconds": float(median), "step_iqr": float(q3 - q1), "minor_faults_per_step": faults / steps,
        "step_times": [float(x) for x in t], "backend": backend.get_backend(), "dataset": train_set.name,
        "env": {name: os.environ.get(name) for name in request["watch_env"]},
        "blas_threads": max(blas) if blas else None, "flush_denormals": denormals_flushed(),
        "keeps_freed_memory": _host.keeps_freed_memory(),
    }


def main() -> int:
    reply_to = sys.stdout
    sys.stdout = sys.stderr  # anything printed while measuring must not corrupt the reply
    try:
        reply = _serve(json.load(sys.stdin))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        reply = {"error": f"{type(exc).__name__}: {exc}", "traceback": "".join(traceback.format_exception(exc))}
    json.dump(reply, reply_to)
    reply_to.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
