"""Measure one (engine, batch size): the phases, in order, and why they are kept apart.

1. Warm-up: ``WARMUP_STEPS`` untimed steps on a throwaway copy of the model. They pay for numba
   compilation, BLAS thread start-up and the allocator's first growth; their wall time is reported as
   ``warmup_seconds``, never as run time.
2. Memory: ``MEMORY_STEPS`` more steps on the throwaway copy, run once with the process's peak RSS reset and
   once under tracemalloc (and against CuPy's pool on the GPU). Kept out of the timed run because tracing
   allocations slows every allocation down.
3. The timed run: a fresh model from the study's initial weights trains on the sample budget (or whole
   epochs) through ``minigrad.train.fit``, i.e. ``minigrad.loop``: step time is the loop's
   ``compute_seconds`` and the wait for data its ``data_seconds``, the same definitions every profiler
   uses. When the test set is evaluated periodically (``--target-accuracy``/``--eval-every``) the
   evaluation runs inside the loader, between steps, and its time is subtracted from that step's data time.
4. A final test-set evaluation (untimed).

Inference mode runs the same phases with forward passes in eval mode and no autograd.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import re
import time
import tracemalloc

import numpy as np

from minigrad import optim, progress as _progress
from minigrad.loop import NonFiniteLoss

from .settings import EVAL_BATCH_SIZE, EVALUATIONS, MEMORY_STEPS, STEADY_SKIP_MAX, WARMUP_STEPS, Settings, data_loader

# ------------------------------------------------------------------------------------------------- memory

_STATUS_FIELD = re.compile(r"^(VmRSS|VmHWM):\s+(\d+)\s+kB", re.MULTILINE)


def _rss_status() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return {name: int(kb) * 1024 for name, kb in _STATUS_FIELD.findall(f.read())}


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim), so the steps measured next must grow the
    RSS for what they allocate instead of silently reusing what earlier steps freed. No-op off glibc."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_memory(engine, run_steps) -> dict:
    """Peak memory of ``run_steps()`` (a few steps) above what was held before, by every measure available.

    rss_peak_delta_bytes: the peak RSS while stepping minus the RSS before, with freed heap memory returned
    to the OS first (what the OS had to provide; sees every allocator, counts whole pages).
    tracemalloc_peak_bytes: the peak of numpy's traced allocations (exact and repeatable, but blind to
    memory allocated outside numpy, e.g. inside numba's jitted code).
    gpu_pool_bytes: the growth of CuPy's pools at their peak: the default pool and the private pool of each
    CUDA graph the steps recorded (``cupy_ops.memory_info``).
    ``peak_memory_bytes`` is the GPU pool on the GPU, else the RSS measure where the OS offers it, else
    tracemalloc; ``memory_measure`` names which.
    """
    out = {"rss_peak_delta_bytes": None, "tracemalloc_peak_bytes": None, "gpu_pool_bytes": None}
    gc.collect()
    _release_free_heap()
    if _reset_peak_rss():
        before = _rss_status()["VmRSS"]
        run_steps()
        out["rss_peak_delta_bytes"] = max(0, _rss_status()["VmHWM"] - before)
    if engine.tracemalloc_sees_arrays:
        tracemalloc.start()
        try:
            run_steps()
            out["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    if engine.gpu_pool() is not None:
        from minigrad.kernels import cupy_ops  # the engine runs on the cupy backend

        cupy_ops.reset_peak()
        before = cupy_ops.memory_info()["total_bytes"]
        run_steps()
        out["gpu_pool_bytes"] = cupy_ops.memory_info()["peak_bytes"] - before
    # RSS first: it sees every allocator (numpy, numba's runtime, torch), so engines compare like for like.
    for key, measure in (("gpu_pool_bytes", "gpu_pool"), ("rss_peak_delta_bytes", "rss"),
                         ("tracemalloc_peak_bytes", "tracemalloc")):
        if out[key] is not None:
            out["peak_memory_bytes"], out["memory_measure"] = out[key], measure
            break
    else:
        out["peak_memory_bytes"], out["memory_measure"] = None, None
    return out


# --------------------------------------------------------------------------------------------- statistics


def step_statistics(seconds: np.ndarray, prefix: str = "step") -> dict:
    """Median and spread of per-step seconds, leaving out the first few (the steady state starts after them)."""
    skip = min(STEADY_SKIP_MAX, len(seconds) // 5)
    steady = seconds[skip:]
    q1, median, q3 = np.percentile(steady, [25, 50, 75])
    return {f"{prefix}_median_s": float(median), f"{prefix}_q1_s": float(q1), f"{prefix}_q3_s": float(q3),
            f"{prefix}_iqr_s": float(q3 - q1), f"{prefix}_min_s": float(steady.min()),
            f"{prefix}_max_s": float(steady.max()), f"{prefix}_count": int(len(steady)), f"{prefix}_skipped": skip}


# ------------------------------------------------------------------------------------- periodic evaluation


class PeriodicEvaluation:
    """Wraps a training loader so that the test set is evaluated every ``every`` training samples.

    fit() asks the loader for the next batch at the start of a step, after the previous step's update, so
    the evaluation sees the model as trained so far; its wall time lands inside that next step's data time
    and is recorded per step (``seconds_before_step``) to be subtracted from it.
    """

    def __init__(self, loader, every: int, evaluate):
        self.loader, self.every, self.evaluate = loader, every, evaluate
        self.n_samples = loader.n_samples
        self.seen = self.steps = 0
        self.next_at = every
        self.records: list[dict] = []
        self.seconds_before_step: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            if self.seen >= self.next_at:
                t0 = time.perf_counter()
                result = self.evaluate()
                seconds = time.perf_counter() - t0
                self.records.append({"after_step": self.steps, "samples": self.seen, "test_loss": result["loss"],
                                     "test_accuracy": result["accuracy"], "eval_seconds": seconds})
                self.seconds_before_step[self.steps + 1] = seconds
                while self.next_at <= self.seen:
                    self.next_at += self.every
            self.steps += 1
            self.seen += int(x.shape[0])
            yield x, y


def _time_to_target(evaluations: list[dict], history, step_seconds: np.ndarray, target: float | None) -> dict:
    """Training seconds, samples and updates until the first evaluation at or above ``target`` (all None
    without a target). Also gives every evaluation its training seconds and update count so far."""
    cumulative = np.concatenate([[0.0], np.cumsum(step_seconds)])
    for ev in evaluations:
        k = ev["after_step"]
        ev["train_seconds"] = float(cumulative[k])
        ev["updates"] = history.steps[k - 1].update if k else 0
    out = {"target_reached": None, "time_to_target_s": None, "samples_to_target": None, "updates_to_target": None}
    if target is None:
        return out
    out["target_reached"] = False
    for ev in evaluations:
        if ev["test_accuracy"] >= target:
            return {"target_reached": True, "time_to_target_s": ev["train_seconds"],
                    "samples_to_target": ev["samples"], "updates_to_target": ev["updates"]}
    return out


# -------------------------------------------------------------------------------------------------- train


def _new_row(engine, settings: Settings, batch_size: int) -> dict:
    return {"backend": engine.name, "mode": settings.mode, "batch_size": batch_size, "status": "ok", "error": None,
            "dtype": settings.dtype, "threads": settings.threads}


#: The phases of a training entry as a diverged row's ``error`` names them.
WARMUP_PHASE = "warm-up (untimed steps on a throwaway copy)"
MEMORY_PHASE = "memory measurement (untimed steps on the throwaway copy)"
TIMED_PHASE = "timed run"


@contextlib.contextmanager
def phase(name: str):
    """Say in which phase a NaN/Inf loss appeared: the warm-up and memory steps train a throwaway copy, so
    "step 1" there is not step 1 of the timed run."""
    try:
        yield
    except NonFiniteLoss as exc:
        raise NonFiniteLoss(f"in the {name}: {str(exc).removeprefix('fit: ')}") from None


def training_steps(engine, model, optimizer, make_loader, accumulate: int, steps: int):
    """A function that trains ``model`` for ``steps`` steps on a fresh loader (what memory is measured over)."""
    return lambda: engine.fit(model, make_loader(), optimizer, accumulate=accumulate, max_steps=steps, progress=False)


def measure_train(engine, settings: Settings, batch_size: int, train_set, test_set, init_state: dict,
                  progress: bool | None, lr: float | None = None) -> dict:
    """Train a fresh model at ``batch_size`` and measure it (phases in the module docstring); ``lr``: the
    learning rate (default: the study's lr for this batch size; ``--tune-lr`` passes each of its grid).

    Raises NonFiniteLoss and out-of-memory errors to the caller, which records them.
    """
    engine.activate()
    k = settings.accumulate
    lr = settings.lr_for(batch_size) if lr is None else lr
    row = _new_row(engine, settings, batch_size)
    row.update(optimizer=settings.optimizer, lr=lr, momentum=settings.momentum if settings.optimizer == "sgd" else None,
               accumulate=k, virtual_batch_size=k * batch_size, warmup_updates=settings.warmup, lr_grid=None,
               lr_at_grid_edge=None)  # --tune-lr fills these in (tune.tune)

    def loader():
        return data_loader(train_set, batch_size, settings, shuffle=True)

    scratch = engine.model(settings, init_state)
    scratch_opt = engine.optimizer(scratch, settings, lr)
    t0 = time.perf_counter()
    with phase(WARMUP_PHASE):
        warm = engine.fit(scratch, loader(), scratch_opt, accumulate=k, max_steps=WARMUP_STEPS, progress=False)
    row.update(warmup_seconds=time.perf_counter() - t0, warmup_steps=len(warm.steps),
               first_step_s=warm.steps[0].compute_seconds)
    with phase(MEMORY_PHASE):
        row.update(measure_memory(engine, training_steps(engine, scratch, scratch_opt, loader, k, MEMORY_STEPS)))
    row["model_state_bytes"] = engine.state_bytes(scratch, scratch_opt)
    del scratch, scratch_opt, warm

    model = engine.model(settings, init_state)
    opt = engine.optimizer(model, settings, lr)
    warmup = optim.LinearWarmup(opt, settings.warmup) if settings.warmup else None
    test_loader = data_loader(test_set, EVAL_BATCH_SIZE, settings, shuffle=False)
    train_loader = loader()
    budget = settings.budget_samples(len(train_set))
    eval_every = settings.eval_every
    if eval_every is None and settings.target_accuracy is not None:
        eval_every = max(1, math.ceil(budget / EVALUATIONS))
    periodic = None
    if eval_every is not None:
        periodic = PeriodicEvaluation(train_loader, eval_every, lambda: engine.evaluate(model, test_loader))
        train_loader = periodic
    max_steps = None if settings.epochs else math.ceil(budget / batch_size)
    epochs = settings.epochs or math.ceil(max_steps / len(train_loader))

    t0 = time.perf_counter()
    with phase(TIMED_PHASE):
        history = engine.fit(model, train_loader, opt, epochs=epochs, accumulate=k, max_steps=max_steps,
                             warmup=warmup, progress=progress, desc=f"{engine.name} B={batch_size}")
    wall = time.perf_counter() - t0
    before = periodic.seconds_before_step if periodic else {}
    compute = history.step_seconds
    data_seconds = np.array([s.data_seconds - before.get(s.step, 0.0) for s in history.steps])
    seconds = compute + data_seconds
    train_seconds = wall - sum(before.values())
    samples = sum(s.samples for s in history.steps)
    tail = history.steps[-max(1, len(history.steps) // 10):]
    row.update(samples=samples, steps=len(history.steps), captured_steps=sum(s.captured for s in history.steps),
               updates=history.updates, epochs_run=len(history.epochs), train_seconds=train_seconds,
               samples_per_s=samples / train_seconds)
    row.update(step_statistics(compute))
    row.update(steady_samples_per_s=batch_size / row["step_median_s"], data_median_s=float(np.median(data_seconds)),
               data_fraction=float(data_seconds.sum() / seconds.sum()))
    measured = settings.epochs is not None
    row.update(epoch_seconds=train_seconds / settings.epochs if measured else len(train_set) / row["samples_per_s"],
               epoch_measured=measured)
    row["final_train_loss"] = float(np.average([s.loss for s in tail], weights=[s.samples for s in tail]))
    row["final_train_accuracy"] = sum(s.correct for s in tail) / sum(s.samples for s in tail)
    final = engine.evaluate(model, test_loader)
    row.update(test_loss=final["loss"], test_accuracy=final["accuracy"])

    evaluations = list(periodic.records) if periodic else []
    if periodic:
        evaluations.append({"after_step": len(history.steps), "samples": samples, "test_loss": final["loss"],
                            "test_accuracy": final["accuracy"], "eval_seconds": None})
    row.update(eval_every_samples=eval_every, target_accuracy=settings.target_accuracy)
    row.update(_time_to_target(evaluations, history, seconds, settings.target_accuracy))
    row["evaluations"] = evaluations
    return row


# ---------------------------------------------------------------------------------------------- inference


def _cycle(loader):
    """Batches of ``loader`` forever (the inference budget may exceed the test set)."""
    while True:
        yield from loader


def measure_inference(engine, settings: Settings, batch_size: int, test_set, init_state: dict,
                      progress: bool | None) -> dict:
    """Forward passes at ``batch_size`` in eval mode without autograd: latency per batch and samples/s.

    A step is timed like a training step (from asking the loader to having the logits on the host);
    ``latency`` is its forward part alone, the number that matters to a caller waiting on a prediction.
    """
    engine.activate()
    row = _new_row(engine, settings, batch_size)
    model = engine.model(settings, init_state)
    model.eval()
    batches = _cycle(data_loader(test_set, batch_size, settings, shuffle=False))

    def run(n):
        for _ in range(n):
            x, _ = next(batches)
            engine.predict(model, x)

    t0 = time.perf_counter()
    run(WARMUP_STEPS)
    row.update(warmup_seconds=time.perf_counter() - t0, warmup_steps=WARMUP_STEPS)
    row.update(measure_memory(engine, lambda: run(MEMORY_STEPS)))
    row["model_state_bytes"] = int(sum(np.asarray(v).nbytes for v in init_state.values()))

    batches = _cycle(data_loader(test_set, batch_size, settings, shuffle=False))
    n_steps = math.ceil(settings.budget_samples(len(test_set)) / batch_size)
    steps, latencies, data_seconds = np.empty(n_steps), np.empty(n_steps), np.empty(n_steps)
    samples = 0
    bar = _progress.bar(progress, total=n_steps, desc=f"{engine.name} B={batch_size} inference", unit="batch",
                        leave=False)
    t_start = time.perf_counter()
    for i in range(n_steps):
        t0 = time.perf_counter()
        x, _ = next(batches)
        t1 = time.perf_counter()
        engine.predict(model, x)
        t2 = time.perf_counter()
        steps[i], latencies[i], data_seconds[i] = t2 - t0, t2 - t1, t1 - t0
        samples += int(x.shape[0])
        bar.update(1)
    wall = time.perf_counter() - t_start
    bar.close()
    row.update(samples=samples, steps=n_steps, updates=None, train_seconds=wall, samples_per_s=samples / wall)
    row.update(step_statistics(steps))
    row.update(step_statistics(latencies, prefix="latency"))
    row.update(steady_samples_per_s=batch_size / row["step_median_s"], data_median_s=float(np.median(data_seconds)),
               data_fraction=float(data_seconds.sum() / steps.sum()))
    measured = settings.epochs is not None
    row.update(epoch_seconds=wall / settings.epochs if measured else len(test_set) / row["samples_per_s"],
               epoch_measured=measured)
    return row

