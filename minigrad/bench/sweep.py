"""The sweep: every (batch size, backend) entry measured in turn, each result made durable at once.

Entries run batch-size-major (B=1 on every backend, then B=2, ...), so an interrupted sweep still compares
the backends on the sizes it finished, and slow drifts of a shared machine hit every backend alike.
A batch size that runs out of memory or diverges is recorded as such and the sweep goes on.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from minigrad import models, progress as _progress, rng
from minigrad.train import NonFiniteLoss

from . import autobatch, child, tune
from .engines import make_engine
from .measure import measure_inference, measure_train
from .settings import Settings, UsageError, data_loader
from .store import RunDir


@dataclass
class Study:
    """What every entry of one session shares: the settings, the data, the initial weights."""

    settings: Settings
    train_set: object
    test_set: object
    session: int
    progress: bool | None = None
    init_state: dict = field(default_factory=dict)
    engines: dict = field(default_factory=dict)

    def __post_init__(self):
        # One set of initial weights for every batch size and engine: drawn once from the seed, on the host.
        rng.manual_seed(self.settings.seed)
        self.init_state = models.get_model(self.settings.model, dtype=self.settings.dtype).state_dict()
        self.engines = {name: make_engine(name) for name in self.settings.backends}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def plan(settings: Settings, autobatch: dict[str, dict]) -> list[tuple[int, str, list[str]]]:
    """(batch size, backend, chosen_by) in the order they run; ``chosen_by`` names auto's reasons."""
    if settings.batch_sizes != "auto":
        return [(b, name, []) for b in settings.batch_sizes for name in settings.backends]
    entries = []
    for name in settings.backends:
        record = autobatch[name]
        picks: dict[int, list[str]] = {}
        picks.setdefault(record["knee_pick"], []).append("throughput knee")
        picks.setdefault(record["memory_pick"], []).append("memory budget")
        entries += [(b, name, reasons) for b, reasons in picks.items()]
    order = {name: i for i, name in enumerate(settings.backends)}
    return sorted(entries, key=lambda e: (e[0], order[e[1]]))


def measure_entry(study: Study, name: str, batch_size: int, chosen_by: list[str]) -> dict:
    """One entry's result row; divergence and running out of memory become its status, not an exception."""
    settings, engine = study.settings, study.engines[name]
    started = time.perf_counter()
    try:
        # A diverging run overflows long before its loss turns NaN: fit() reports that as NonFiniteLoss
        # naming the step, so numpy's overflow warnings would only repeat it, noisily.
        with np.errstate(all="ignore"):
            row = _measure(study, engine, batch_size)
    except NonFiniteLoss as exc:
        row = _failed(name, settings, batch_size, "diverged", str(exc))
    except Exception as exc:
        if not engine.is_out_of_memory(exc):
            raise
        row = _failed(name, settings, batch_size, "out_of_memory", f"{type(exc).__name__}: {exc}".strip(": "))
        gc.collect()
        pool = engine.gpu_pool()
        if pool is not None:
            pool.free_all_blocks()
    row.update(chosen_by=chosen_by, entry_seconds=time.perf_counter() - started, session=study.session,
               finished_at=now())
    return {"record": "result", **row}


def choose_batch_sizes(study: Study, name: str) -> dict:
    """The ``autobatch`` record of backend ``name`` (--batch-sizes auto), probed where that engine runs.

    Raises UsageError when the probe cannot pick (batch 1 does not fit, or its training diverged)."""
    engine = study.engines[name]
    try:
        with np.errstate(all="ignore"):
            if engine.isolated:
                return child.call("autobatch", study.settings, init_state=study.init_state)
            return autobatch.choose(engine, study.settings, study.train_set, study.init_state)
    except NonFiniteLoss as exc:
        raise UsageError(f"--batch-sizes auto: training diverged while probing {name} "
                         f"({str(exc).removeprefix('fit: ')})") from None


#: B_simple is measured at this batch (split into NOISE_MICRO_BATCHES) over 2 x noise_scale.MIN_STEPS steps from the
#: study's initial weights, with the study's optimizer and its lr at that batch.
NOISE_BATCH = 64
NOISE_MICRO_BATCHES = 4


def measure_noise_scale(study: Study) -> dict:
    """The ``noise_scale`` record: the gradient noise scale B_simple (``profiling.noise_scale``), measured on the
    study's first minigrad backend (numpy when the study runs torch alone), once per study."""
    from minigrad.profiling import noise_scale

    s = study.settings
    name = next((n for n in s.backends if not study.engines[n].isolated), "numpy")
    engine = study.engines[name] if name in study.engines else make_engine(name)
    engine.activate()
    batch = min(NOISE_BATCH, len(study.train_set) // NOISE_MICRO_BATCHES * NOISE_MICRO_BATCHES)
    steps = 2 * noise_scale.MIN_STEPS
    model = engine.model(s, study.init_state)
    lr = s.lr_for(batch)
    estimate = noise_scale.track(model, data_loader(study.train_set, batch, s, shuffle=True),
                                 engine.optimizer(model, s, lr), steps, micro_batches=NOISE_MICRO_BATCHES)
    return {"record": "noise_scale", "backend": name, "batch_size": batch, "micro_batches": NOISE_MICRO_BATCHES,
            "lr": lr, "steps": steps, "estimate": estimate.to_dict(), "summary": estimate.summary(),
            "session": study.session}


def _measure(study: Study, engine, batch_size: int) -> dict:
    s = study.settings
    if s.ranks > 1:
        from .ranks import measure_entry

        return measure_entry(engine, s, batch_size, study.train_set, study.test_set, study.init_state,
                             study.progress)
    if s.mode == "train" and s.tune_lr:
        from tqdm.auto import tqdm

        tqdm.write(f"{engine.name:>6} B={batch_size:<5} lr grid ({len(s.tune_lr)} runs):")
        return tune.tune(lambda lr: _train(study, engine, batch_size, lr), tune.grid(s, batch_size), tqdm.write)
    if s.mode == "train":
        return _train(study, engine, batch_size, None)
    if engine.isolated:
        return child.call(s.mode, s, batch_size=batch_size, init_state=study.init_state, progress=study.progress)
    return measure_inference(engine, s, batch_size, study.test_set, study.init_state, study.progress)


def _train(study: Study, engine, batch_size: int, lr: float | None) -> dict:
    """One training run at ``batch_size`` (``lr``: None for the study's own lr at that batch size)."""
    s = study.settings
    if engine.isolated:
        return child.call("train", s, batch_size=batch_size, init_state=study.init_state, progress=study.progress,
                          lr=lr)
    return measure_train(engine, s, batch_size, study.train_set, study.test_set, study.init_state, study.progress,
                         lr)


def _failed(name: str, settings: Settings, batch_size: int, status: str, message: str) -> dict:
    return {"backend": name, "mode": settings.mode, "batch_size": batch_size, "status": status, "error": message,
            "dtype": settings.dtype, "threads": settings.threads,
            "lr": settings.lr_for(batch_size) if settings.mode == "train" else None,
            "accumulate": settings.accumulate, "virtual_batch_size": settings.accumulate * batch_size}


def one_line(row: dict) -> str:
    """What the terminal shows as each entry finishes."""
    head = f"{row['backend']:>6} B={row['batch_size']:<5}"
    if row["status"] != "ok":
        return f"{head} {row['status']}: {row['error']}"
    text = f"{head} {row['samples_per_s']:>9,.0f} samples/s"
    if row["mode"] == "train":
        mark = "" if row["epoch_measured"] else "*"
        text += (f"  epoch {row['epoch_seconds']:,.1f} s{mark}  step {1e3 * row['step_median_s']:.2f} ms  "
                 f"lr {row['lr']:.3g}  loss {row['final_train_loss']:.3f}  test acc {100 * row['test_accuracy']:.2f}%")
        if row.get("target_accuracy") is not None:
            text += ("  target not reached" if not row["target_reached"] else
                     f"  to target {row['time_to_target_s']:,.1f} s, {row['updates_to_target']:,} updates")
    else:
        text += f"  latency {1e3 * row['latency_median_s']:.3f} ms"
    return text + f"  ({row['entry_seconds']:.1f} s)"


def run(study: Study, run_dir: RunDir, entries: list[tuple[int, str, list[str]]], done: set, on_result) -> None:
    """Measure every entry not in ``done`` ({(backend, batch size)}), appending each result as it finishes.

    ``on_result(record)`` runs after each append (the CLI refreshes the derived files there).
    """
    from tqdm.auto import tqdm  # tqdm.write: messages that do not break a progress bar

    todo = [e for e in entries if (e[1], e[0]) not in done]
    if len(todo) < len(entries):
        tqdm.write(f"resuming: {len(entries) - len(todo)} of {len(entries)} entries already finished, "
                   f"{len(todo)} to go")
    bar = _progress.bar(study.progress, total=len(todo), desc="sweep", unit="entry")
    try:
        for batch_size, name, chosen_by in todo:
            bar.set_postfix_str(f"{name} B={batch_size}")
            record = measure_entry(study, name, batch_size, chosen_by)
            run_dir.append(record)
            tqdm.write(one_line(record))
            on_result(record)
            bar.update(1)
    finally:
        bar.close()
