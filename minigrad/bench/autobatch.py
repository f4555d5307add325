"""``--batch-sizes auto``: choose a batch size two ways, and say how each was chosen.

1. Memory (Ultralytics AutoBatch's idea): measure a training step's peak memory at a few small batches,
   fit ``peak = intercept + slope * B`` by least squares, and take the largest B whose prediction plus the
   model and optimizer state fits ``--memory-budget``. Small batches are cheap to probe and memory is close
   to linear in B (activations and their gradients scale with B; weights and their gradients do not). The pick
   is capped by the training set and by the sample budget (at least ``AUTO_MIN_STEPS`` steps), then verified:
   its peak is measured, and while it is over the budget the batch steps down and is measured again.
2. Throughput: time a short run at powers of two up to the memory pick and take the *knee*, the smallest
   batch within ``KNEE_TOLERANCE`` of the best samples/s. Past the knee a bigger batch buys little speed
   and costs optimizer updates per epoch (and memory).

The sweep then measures both picks like any other batch size.
"""

from __future__ import annotations

import math

import numpy as np

from minigrad.train import History

from minigrad.batch_sizes import KNEE_TOLERANCE, knee

from .measure import measure_memory, training_steps
from .settings import Settings, UsageError, data_loader, format_bytes

MEMORY_PROBE_SIZES = (1, 2, 4, 8, 16)
#: Probing continues past 16 (doubling) until memory visibly grows with B, up to this batch size.
MEMORY_PROBE_LIMIT = 1024
#: Training samples timed per throughput candidate (with at least THROUGHPUT_MIN_STEPS steps).
THROUGHPUT_PROBE_SAMPLES = 1024
THROUGHPUT_MIN_STEPS = 3
#: The memory pick leaves at least this many steps in the sample budget (a batch of the whole budget is one update).
AUTO_MIN_STEPS = 10
#: Stepping down from a pick whose measured peak is over the budget: the batch shrinks with the excess, times this.
STEP_DOWN_MARGIN = 0.95


def _fresh(engine, settings, init_state, batch_size):
    model = engine.model(settings, init_state)
    return model, engine.optimizer(model, settings, settings.lr_for(batch_size))


def _loader(train_set, settings, batch_size):
    return lambda: data_loader(train_set, batch_size, settings, shuffle=True)


def _fit(engine, model, opt, train_set, settings, batch_size, steps) -> History:
    return training_steps(engine, model, opt, _loader(train_set, settings, batch_size), settings.accumulate, steps)()


def _memory_probe(engine, settings, train_set, init_state) -> tuple[list[dict], int]:
    """Peak step memory at growing batch sizes until the linear fit has a positive slope."""
    probes, state = [], 0
    sizes = list(MEMORY_PROBE_SIZES)
    while True:
        b = sizes[len(probes)]
        model, opt = _fresh(engine, settings, init_state, b)
        _fit(engine, model, opt, train_set, settings, b, 1)  # warm-up: JIT, allocator, optimizer state
        mem = measure_memory(engine, training_steps(engine, model, opt, _loader(train_set, settings, b),
                                                    settings.accumulate, 1))
        state = engine.state_bytes(model, opt)
        probes.append({"batch_size": b, "peak_memory_bytes": mem["peak_memory_bytes"],
                       "memory_measure": mem["memory_measure"]})
        if len(probes) < len(sizes):
            continue
        slope = _fit_line(probes)[0]
        if slope > 0 or b * 2 > MEMORY_PROBE_LIMIT or b * 2 > len(train_set):
            return probes, state
        sizes.append(b * 2)


def _cap_text(name: str, cap: int) -> str:
    if name == "training set":
        return f"{cap:,} training samples"
    return f"at least {AUTO_MIN_STEPS} steps in the budget, B <= budget / {AUTO_MIN_STEPS} = {cap:,}"


def _step_down(engine, settings, train_set, init_state, batch_size: int, budget: int) -> tuple[int, list[dict]]:
    """The predicted pick verified by measurement: measure a step's peak memory (plus the model and optimizer
    state) at ``batch_size`` and, while it is over ``budget``, step down (in proportion to the excess, by at least
    one) and measure again. Returns the batch that fits and every measurement; UsageError when batch 1 does not."""
    checks = []
    while True:
        model, opt = _fresh(engine, settings, init_state, batch_size)
        _fit(engine, model, opt, train_set, settings, batch_size, 1)  # warm-up, as in the probe
        mem = measure_memory(engine, training_steps(engine, model, opt, _loader(train_set, settings, batch_size),
                                                    settings.accumulate, 1))
        state = engine.state_bytes(model, opt)
        needed = state + (mem["peak_memory_bytes"] or 0)
        checks.append({"batch_size": batch_size, "peak_memory_bytes": mem["peak_memory_bytes"], "state_bytes": state,
                       "needed_bytes": needed, "memory_measure": mem["memory_measure"], "fits": needed <= budget})
        if needed <= budget:
            return batch_size, checks
        if batch_size == 1:
            raise UsageError(f"--memory-budget {format_bytes(budget)}: even batch 1 does not fit on {engine.name} "
                             f"(measured {format_bytes(needed)})")
        batch_size = max(1, min(batch_size - 1, int(batch_size * budget / needed * STEP_DOWN_MARGIN)))


def _fit_line(probes: list[dict]) -> tuple[float, float]:
    b = np.array([p["batch_size"] for p in probes], dtype=float)
    m = np.array([p["peak_memory_bytes"] or 0 for p in probes], dtype=float)
    slope, intercept = np.polyfit(b, m, 1)
    return float(slope), float(intercept)


def _throughput_probe(engine, settings, train_set, init_state, largest: int) -> list[dict]:
    """samples/s (from the median step) at powers of two up to ``largest`` (and ``largest`` itself).

    Stops early once two candidates in a row fall short of the best by more than the knee tolerance: the
    curve is past its plateau and bigger batches only cost probing time.
    """
    candidates = [2**i for i in range(int(math.log2(largest)) + 1)]
    if candidates[-1] != largest:
        candidates.append(largest)
    probes, worse_in_a_row, best = [], 0, 0.0
    for b in candidates:
        model, opt = _fresh(engine, settings, init_state, b)
        _fit(engine, model, opt, train_set, settings, b, 1)
        steps = max(THROUGHPUT_MIN_STEPS, math.ceil(THROUGHPUT_PROBE_SAMPLES / b))
        history = _fit(engine, model, opt, train_set, settings, b, steps)
        sps = b / float(np.median(history.step_seconds))
        probes.append({"batch_size": b, "steps": steps, "samples_per_s": sps})
        best = max(best, sps)
        worse_in_a_row = worse_in_a_row + 1 if sps < (1 - KNEE_TOLERANCE) * best else 0
        if worse_in_a_row == 2:
            break
    return probes


def choose(engine, settings: Settings, train_set, init_state: dict) -> dict:
    """Probe ``engine`` and return the ``autobatch`` record: both picks, the measurements and explanations.

    Raises UsageError when even batch 1 does not fit the memory budget.
    """
    engine.activate()
    budget = settings.memory_budget
    probes, state = _memory_probe(engine, settings, train_set, init_state)
    slope, intercept = _fit_line(probes)
    measure = probes[0]["memory_measure"]
    need_1 = state + intercept + slope
    if need_1 > budget:
        raise UsageError(f"--memory-budget {format_bytes(budget)}: even batch 1 does not fit on {engine.name} "
                         f"(it needs about {format_bytes(need_1)}: model and optimizer state {format_bytes(state)}"
                         f" + step {format_bytes(intercept + slope)})")
    if slope > 0:
        fits = int((budget - state - intercept) // slope)
    else:  # memory did not grow measurably up to MEMORY_PROBE_LIMIT: only the data and the budget bound the batch
        fits = len(train_set)
    caps = {"training set": len(train_set),
            "sample budget": max(1, settings.budget_samples(len(train_set)) // AUTO_MIN_STEPS)}
    cap_name, cap = min(caps.items(), key=lambda item: item[1])
    predicted = max(1, min(fits, cap))
    capped = fits > cap
    memory_pick, checks = _step_down(engine, settings, train_set, init_state, predicted, budget)
    sizes = ", ".join(str(p["batch_size"]) for p in probes)
    memory_why = (f"largest batch whose predicted peak fits {format_bytes(budget)}: step memory ~ "
                  f"{format_bytes(intercept)} + {format_bytes(slope)} x B (least-squares line through B = {sizes}, "
                  f"measured by {measure}) plus {format_bytes(state)} of model and optimizer state -> B = {predicted}"
                  + (f" (capped by the {cap_name}: {_cap_text(cap_name, cap)}; {fits} would fit)"
                     if capped else "")
                  + "; measured there: " + ", ".join(
                      f"B = {c['batch_size']} needs {format_bytes(c['needed_bytes'])} "
                      f"({'fits' if c['fits'] else 'over the budget'})" for c in checks)
                  + f" -> B = {memory_pick}")

    throughput = _throughput_probe(engine, settings, train_set, init_state, memory_pick)
    knee_b, best_b, best = knee([(p["batch_size"], p["samples_per_s"]) for p in throughput])
    knee_sps = next(p["samples_per_s"] for p in throughput if p["batch_size"] == knee_b)
    knee_why = (f"smallest batch within {KNEE_TOLERANCE:.0%} of the best throughput: best {best:,.0f} samples/s at "
                f"B = {best_b}; B = {knee_b} reaches {knee_sps:,.0f} ({knee_sps / best:.0%}) -> B = {knee_b} "
                f"(probed B = {', '.join(str(p['batch_size']) for p in throughput)}, about "
                f"{THROUGHPUT_PROBE_SAMPLES} samples each, samples/s from the median step)")
    return {"record": "autobatch", "backend": engine.name, "memory_budget_bytes": budget,
            "memory_probe": probes, "memory_fit": {"slope_bytes_per_sample": slope, "intercept_bytes": intercept,
                                                   "state_bytes": state, "measure": measure},
            "memory_predicted": predicted, "memory_check": checks, "memory_pick": memory_pick,
            "memory_pick_capped": capped, "memory_cap": cap_name if capped else None, "memory_explanation": memory_why,
            "throughput_probe": throughput, "knee_pick": knee_b, "best_throughput_batch": best_b,
            "knee_explanation": knee_why}
