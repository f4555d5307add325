"""``--tune-lr``: a short log-spaced grid of learning rates per batch size, and the one rule that picks from it.

Comparing batch sizes at one learning rate compares a recipe, not batch sizes: the lr that suits B=1 makes
B=256 crawl, and the one that suits B=256 kills B=1. With ``--tune-lr`` every batch size trains once per lr of
its grid (its own lr, from ``--lr`` and ``--lr-scaling``, times each factor), each run a full entry on the same
budget, and the entry's row is the best run by ``CRITERION``; every run of the grid is recorded in the row
(``lr_grid``).
"""

from __future__ import annotations

import math

from minigrad.loop import NonFiniteLoss

from .settings import Settings

CRITERION = ("time to the target accuracy (at one batch size counted in training samples to the first evaluation "
             "at or above it: the same order as seconds, without the machine's noise; ties go to the lower final "
             "training loss), else, where no lr of the grid reaches the target, the lowest final training loss")


def grid(settings: Settings, batch_size: int) -> list[float]:
    """The lrs tried at ``batch_size``: its lr under the study's scaling rule times each factor."""
    base = settings.lr_for(batch_size)
    return [base * f for f in settings.tune_lr]


def outcome(lr: float, row: dict | None, error: str | None = None) -> dict:
    """What the grid keeps of one run: enough to rank it and to show it in every output."""
    if row is None:
        return {"lr": lr, "status": "diverged", "error": error, "target_reached": None, "samples_to_target": None,
                "time_to_target_s": None, "updates_to_target": None, "final_train_loss": None, "test_accuracy": None}
    return {"lr": lr, "status": "ok", "error": None,
            **{k: row.get(k) for k in ("target_reached", "samples_to_target", "time_to_target_s", "updates_to_target",
                                       "final_train_loss", "test_accuracy")}}


def rank(trial: dict) -> tuple:
    """The criterion as a sort key: smaller is better (a diverged run, or a NaN loss, last)."""
    loss = trial.get("final_train_loss")
    if trial["status"] != "ok" or loss is None or not math.isfinite(loss):
        return (2, math.inf, math.inf)
    if trial.get("target_reached"):
        return (0, trial["samples_to_target"], loss)
    return (1, loss, 0)


def best(trials: list[dict]) -> int | None:
    """Index of the best run of the grid by CRITERION (the first of equals); None when every run diverged."""
    ranked = min(range(len(trials)), key=lambda i: rank(trials[i]))
    return None if rank(trials[ranked])[0] == 2 else ranked


def tune(run, lrs: list[float], say=None) -> dict:
    """Run ``run(lr)`` (a result row, or NonFiniteLoss) for each lr and return the best row, with the grid in
    ``lr_grid`` (each run's outcome, the chosen one marked) and ``lr_at_grid_edge``.

    Raises NonFiniteLoss when every lr diverged. ``say(text)``: a line per run, as it finishes."""
    trials, rows = [], []
    for lr in lrs:
        try:
            row = run(lr)
            trial = outcome(lr, row)
        except NonFiniteLoss as exc:
            row, trial = None, outcome(lr, None, str(exc))
        trials.append(trial)
        rows.append(row)
        if say is not None:
            say(f"  lr {lr:.4g}: {describe(trial)}")
    chosen = best(trials)
    if chosen is None:
        raise NonFiniteLoss(f"every lr of the grid ({', '.join(f'{lr:.4g}' for lr in lrs)}) diverged; the first: "
                            f"{trials[0]['error']}")
    for i, trial in enumerate(trials):
        trial["chosen"] = i == chosen
    row = rows[chosen]
    row.update(lr_grid=trials, lr_at_grid_edge=len(lrs) > 1 and chosen in (0, len(lrs) - 1))
    return row


def describe(trial: dict) -> str:
    """One run of the grid in words: 'diverged', 'to target after 6,000 samples (loss 0.310)', 'loss 0.412'."""
    if trial["status"] != "ok":
        return "diverged"
    loss = f"loss {trial['final_train_loss']:.3f}"
    if trial.get("target_reached"):
        return f"to target after {trial['samples_to_target']:,} samples ({loss})"
    return loss


def grid_text(trials: list[dict] | None) -> str:
    """The grid as one cell: each lr with its outcome, the chosen one marked (csv, report)."""
    if not trials:
        return ""
    return "; ".join(f"{t['lr']:.4g}: {describe(t)}{' (chosen)' if t.get('chosen') else ''}" for t in trials)
