"""``python -m minigrad.bench``: how epoch time, throughput and accuracy change with batch size.

For each batch size a fresh model (same seed, same initial weights) is trained on the same data for the same
sample budget; the table reports the measured training wall time, samples/s, the epoch time (measured when
``--epochs`` is given, otherwise extrapolated from the budget and labelled so), the median step time, the
number of optimizer updates, the final training loss and the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time

import numpy as np

from . import backend, data, models, optim, rng, train

DEFAULT_BATCH_SIZES = (1, 16, 64, 256)


def _positive_int_list(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"batch sizes must be positive integers; got {part!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"batch sizes must be positive integers; got {value}")
        out.append(value)
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minigrad.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(models.MODELS), default="lenet5", help="reference model to train")
    p.add_argument("--backend", choices=backend.registered_backends(), default=None,
                   help="kernel backend (default: the fastest available here)")
    p.add_argument("--batch-sizes", type=_positive_int_list, default=list(DEFAULT_BATCH_SIZES),
                   help="comma-separated batch sizes, e.g. 1,16,64,256")
    p.add_argument("--samples", type=_positive_int, default=12000,
                   help="training samples per batch size (epoch time is extrapolated from it)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="train whole epochs instead of a sample budget (epoch time is then measured)")
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist", "synthetic"), default="mnist",
                   help="training data; synthetic is MNIST-shaped random data for timing only")
    p.add_argument("--data-dir", default=None, help="dataset cache / IDX directory (default ~/.cache/minigrad)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (same for every batch size)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--seed", type=int, default=0, help="seed for initial weights and shuffling")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def run_one(model_name: str, train_set, test_set, batch_size: int, samples: int | None, epochs: int | None,
            lr: float, momentum: float, seed: int) -> dict:
    """Train one fresh model at ``batch_size`` and measure it (after a few untimed warm-up steps)."""
    rng.manual_seed(seed)
    model = models.get_model(model_name)
    state = model.state_dict()
    # warm-up: the first steps pay for allocation, BLAS thread start-up and (numba) compilation
    warm = models.get_model(model_name)
    train.fit(warm, data.DataLoader(train_set, batch_size), optim.SGD(warm.parameters(), lr=lr), max_steps=3,
              progress=False)
    model.load_state_dict(state)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loader = data.DataLoader(train_set, batch_size, shuffle=True, seed=seed)
    max_steps = None if epochs else math.ceil(samples / batch_size)
    t0 = time.perf_counter()
    try:
        history = train.fit(model, loader, opt, epochs=epochs or math.ceil(max_steps / len(loader)),
                            max_steps=max_steps, desc=f"B={batch_size}")
        diverged = None
    except train.NonFiniteLoss as exc:
        history, diverged = None, str(exc)
    seconds = time.perf_counter() - t0
    row = {"batch_size": batch_size, "train_seconds": seconds, "diverged": diverged}
    if history is None:
        return row
    n_trained = sum(s.samples for s in history.steps)
    tail = history.steps[-max(1, len(history.steps) // 10):]
    row.update(
        samples=n_trained,
        samples_per_s=n_trained / seconds,
        epoch_seconds=(seconds / epochs if epochs else len(train_set) * seconds / n_trained),
        epoch_time_measured=bool(epochs),
        median_step_ms=1e3 * float(np.median(history.step_seconds)),
        updates=history.updates,
        train_loss=float(np.average([s.loss for s in tail], weights=[s.samples for s in tail])),
        test_accuracy=train.evaluate(model, data.DataLoader(test_set, 1000))["accuracy"],
    )
    return row


def format_table(rows: list[dict]) -> str:
    head = f"{'batch':>6} {'epoch s':>10} {'samples/s':>10} {'step ms':>9} {'updates':>8} {'loss':>7} {'test acc':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("diverged"):
            lines.append(f"{r['batch_size']:>6}  diverged: {r['diverged']}")
            continue
        mark = "" if r["epoch_time_measured"] else "*"
        lines.append(f"{r['batch_size']:>6} {r['epoch_seconds']:>9.1f}{mark or ' '} {r['samples_per_s']:>10.0f} "
                     f"{r['median_step_ms']:>9.2f} {r['updates']:>8d} {r['train_loss']:>7.3f} "
                     f"{100 * r['test_accuracy']:>8.2f}%")
    if any(not r.get("diverged") and not r["epoch_time_measured"] for r in rows):
        lines.append("* extrapolated to one epoch from the sample budget (--epochs measures whole epochs)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.backend:
            backend.set_backend(args.backend)
        if args.dataset == "synthetic":
            train_set, test_set = data.synthetic_mnist()
        else:
            train_set, test_set = data.load_dataset(args.dataset, data_dir=args.data_dir)
    except (backend.BackendUnavailable, data.DataUnavailable, data.ChecksumError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = "synthetic (timing only)" if train_set.synthetic else f"real {train_set.name}"
    budget = f"{args.epochs} epoch(s)" if args.epochs else f"{args.samples} samples"
    print(f"minigrad bench: {args.model} on {kind}, backend {backend.get_backend()}, {budget} per batch size, "
          f"SGD lr {args.lr} momentum {args.momentum}, seed {args.seed}; {platform.processor() or platform.machine()}")
    rows = []
    for b in args.batch_sizes:
        rows.append(run_one(args.model, train_set, test_set, b, args.samples, args.epochs, args.lr, args.momentum,
                            args.seed))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "backend": backend.get_backend(), "dataset": train_set.name,
                       "synthetic": train_set.synthetic, "argv": sys.argv, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
