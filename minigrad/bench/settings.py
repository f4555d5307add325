"""The settings of one study: what the command line resolves to, and what ``--resume`` reads back.

Everything that changes a measurement lives in ``Settings`` so that a resumed run repeats the same
conditions exactly; it is written into the run directory's first record and never re-derived from defaults.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields

from minigrad import batch_sizes as _batch_sizes, data
from minigrad.batch_sizes import DEFAULT_BATCH_SIZES

#: One epoch of MNIST per batch size: with the default recipe every default batch size passes 90% test accuracy
#: within it (B=256 makes only 235 updates; at half the budget, 117 updates, it ended at 90.4%), and the default
#: study takes about 3-4 minutes on 2 cores with lenet5 on numba (~1.4k samples/s at batch 1, ~10k at 64).
DEFAULT_SAMPLES = 60000
QUICK_BATCH_SIZES = (1, 4, 16, 64, 256)
QUICK_SAMPLES = 6000
#: The default recipe: SGD momentum 0.9, lr 0.05 at B=64, linear in B below 64 and sqrt(B) above ("linear-sqrt").
#: Measured with lenet5 on MNIST (numba, seed 0): at one lr for every B, small batches die at lrs that suit large
#: ones (B=8 at lr 0.0177 or 0.03 ended at chance, 10%) and large ones crawl at lrs that suit small ones (B=64 at
#: 0.01: 72% after 6,000 samples); under this rule B=1 (lr 0.00078) reached 97.7%, B=8 96.7%, B=16 96.6% after
#: 30,000 samples, and B=64 97.5%, B=128 95.9%, B=256 (lr 0.1) 94.4% after 60,000. Adam keeps one lr.
DEFAULT_LR = {"sgd": 0.05, "adam": 0.001}
DEFAULT_LR_SCALING = {"sgd": "linear-sqrt", "adam": "none"}
DEFAULT_MEMORY_BUDGET = "2GiB"
#: The study's headline is the time (and the optimizer updates) to this test accuracy: the default target when
#: training on real MNIST, where the default recipe takes every default batch size past it within the budget.
DEFAULT_TARGET_ACCURACY = {"mnist": 0.9}
#: ``--tune-lr``'s grid: factors applied to each batch size's lr (log-spaced, a factor of 3 apart).
DEFAULT_LR_GRID = (1 / 3, 1.0, 3.0)

#: Untimed steps run before measuring each batch size: they pay for numba compilation, BLAS thread start-up
#: and the allocator's first growth, and their wall time is reported apart as warm-up.
WARMUP_STEPS = 3
#: Untimed steps run (twice: once for peak RSS, once under tracemalloc) to measure memory.
MEMORY_STEPS = 2
#: With a target accuracy and no --eval-every, the test set is evaluated this many times per entry (every budget / 30
#: samples: 2,000 of the default 60,000), fine enough to count the updates to the target; ~0.3 s each for lenet5.
EVALUATIONS = 30
#: Batch size of test-set evaluations (large: evaluation is not what is being measured).
EVAL_BATCH_SIZE = 1000
#: Share of the first timed steps left out of the step-time statistics (at most STEADY_SKIP_MAX steps).
STEADY_SKIP_MAX = 2
#: The largest budget per batch size, in samples (``--samples``, or ``--epochs`` x the training set): about
#: 16,000 epochs of MNIST, far beyond any study, small enough that a mistyped number is refused, not run.
MAX_SAMPLES = 10**9
#: The most steps one entry may take (budget / batch size): each keeps a small record, and 10^7 steps of even
#: the fastest step (~0.1 ms) take over 15 minutes per entry.
MAX_STEPS = 10**7


class UsageError(ValueError):
    """A bad argument: reported as one ``error: ...`` line and exit code 2."""


@dataclass
class Settings:
    """One study's conditions. ``samples`` is None when ``epochs`` is given (and the other way round)."""

    model: str = "lenet5"
    backends: tuple = ()
    batch_sizes: object = DEFAULT_BATCH_SIZES  # tuple of ints, or "auto"
    epochs: int | None = None
    samples: int | None = DEFAULT_SAMPLES
    dataset: str = "mnist"
    data_dir: str | None = None
    dtype: str = "float32"
    optimizer: str = "sgd"
    lr: float = DEFAULT_LR["sgd"]
    momentum: float = 0.9
    lr_scaling: str = DEFAULT_LR_SCALING["sgd"]
    base_batch_size: int = 64
    warmup: int = 0
    accumulate: int = 1
    mode: str = "train"
    target_accuracy: float | None = None
    eval_every: int | None = None
    tune_lr: tuple = ()  # factors of each batch size's lr tried by --tune-lr; empty: no tuning
    train_subset: int | None = None  # the first N training samples only
    memory_budget: int | None = None
    threads: int = 1
    seed: int = 0
    quick: bool = False
    explain: bool = False
    ranks: int = 1  # data-parallel ranks per entry (--ranks); 1: the bench's own process only

    def to_dict(self) -> dict:
        out = asdict(self)
        out["backends"] = list(self.backends)
        out["tune_lr"] = list(self.tune_lr)
        if self.batch_sizes != "auto":
            out["batch_sizes"] = list(self.batch_sizes)
        return out

    @classmethod
    def from_dict(cls, record: dict) -> Settings:
        names = {f.name for f in fields(cls)}
        unknown = set(record) - names
        if unknown:
            raise UsageError(f"settings record has unknown keys {sorted(unknown)}")
        values = dict(record)
        values["backends"] = tuple(values.get("backends", ()))
        values["tune_lr"] = tuple(values.get("tune_lr", ()))
        if values.get("batch_sizes") != "auto":
            values["batch_sizes"] = tuple(values.get("batch_sizes", DEFAULT_BATCH_SIZES))
        return cls(**values)

    def budget_samples(self, n_train: int) -> int:
        """Samples trained (or inferred) per batch size: the budget, or whole epochs of ``n_train``."""
        return self.samples if self.samples is not None else self.epochs * n_train

    def lr_for(self, batch_size: int) -> float:
        """The learning rate at ``batch_size``: scaled with the *virtual* batch (accumulate x batch)."""
        from minigrad.optim import scale_lr

        return scale_lr(self.lr, batch_size * self.accumulate, self.base_batch_size, self.lr_scaling)


def load_data(settings: Settings):
    """The study's (train, test) datasets, the training set cut to ``--train-subset``; a data problem is a
    UsageError naming the dataset."""
    try:
        train_set, test_set = data.load_dataset(settings.dataset, settings.data_dir, seed=settings.seed)
    except (data.DataUnavailable, data.ChecksumError, data.DataFormatError, OSError) as exc:
        raise UsageError(f"--dataset {settings.dataset}: {exc}") from None
    n = settings.train_subset
    if n is not None:
        if n > len(train_set):
            raise UsageError(f"--train-subset {n:,} is larger than the training set ({len(train_set):,} samples of "
                             f"{settings.dataset}); use at most {len(train_set):,}")
        train_set = data.ArrayDataset(train_set.images[:n], train_set.labels[:n], train_set.name,
                                      synthetic=train_set.synthetic)
    return train_set, test_set


def check_fits_data(settings: Settings, batch_sizes, train_set, test_set) -> None:
    """Raise UsageError for a batch larger than the data it draws from (training: the training set; inference:
    the test set), a budget above MAX_SAMPLES, or an entry of more than MAX_STEPS steps.

    ``batch_sizes``: the sizes to be measured (the settings' list, or auto's picks). A batch larger than its
    data set would silently be cut to the whole set, and its row would report the wrong size and rates."""
    data_set, what = (train_set, "training set") if settings.mode == "train" else (test_set, "test set")
    n = len(data_set)
    too_big = [b for b in batch_sizes if b > n]
    if too_big:
        raise UsageError(f"--batch-sizes: batch size {', '.join(f'{b:,}' for b in too_big)} is larger than the "
                         f"{what} ({n:,} samples of {settings.dataset}); use batch sizes up to {n:,}")
    budget = settings.budget_samples(n)
    if budget > MAX_SAMPLES:  # --samples is bounded when parsed; here: --epochs x the data set
        raise UsageError(f"--epochs {settings.epochs}: {budget:,} samples per batch size ({settings.epochs:,} x "
                         f"{n:,}); at most {MAX_SAMPLES:,} are allowed")
    smallest = min(batch_sizes)
    steps = math.ceil(budget / smallest)
    if steps > MAX_STEPS:
        option = f"--epochs {settings.epochs}" if settings.epochs else f"--samples {settings.samples}"
        raise UsageError(f"{option}: {steps:,} steps at batch size {smallest}; at most {MAX_STEPS:,} steps per "
                         f"batch size are allowed (a smaller budget or a larger batch size)")


def data_loader(dataset, batch_size: int, settings: Settings, shuffle: bool):
    """The one way the bench builds a loader, so every engine and phase sees the same batches."""
    return data.DataLoader(dataset, batch_size, shuffle=shuffle, seed=settings.seed if shuffle else None,
                           normalize=True, dtype=settings.dtype)


# ------------------------------------------------------------------------------------------------ parsing


def parse_int(text: str, what: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``text`` as an integer >= ``minimum`` (and <= ``maximum``), or a UsageError naming ``what``."""
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{what} must be {expected}; got {_shown(text)}") from None
    if value < minimum:
        raise UsageError(f"{what} must be {expected}; got {value}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{what} must be at most {maximum:,}; got {_shown(text)}")
    return value


def _shown(text) -> str:
    """An argument as an error message quotes it: repr, shortened when very long."""
    shown = repr(text) if isinstance(text, str) else str(text)
    return shown if len(shown) <= 40 else shown[:30] + f"... ({len(str(text))} characters)"


def parse_batch_sizes(text: str) -> tuple[int, ...] | str:
    """``"auto"`` or a comma list of positive integers (any, not only powers of two), duplicates dropped."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return _batch_sizes.parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_bytes(text: str) -> int:
    """``"2GiB"``, ``"512MB"``, ``"1.5 GiB"`` or a plain number of bytes, as an integer number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise UsageError(f"--memory-budget must be a size such as 2GiB, 512MiB or 1GB; got {text!r}")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise UsageError(f"--memory-budget must be positive; got {text!r}")
    return value


def parse_real(text: str, what: str, low: float, high: float, low_open: bool = True,
               high_open: bool = False) -> float:
    """A finite number in (low, high] (``low_open``/``high_open`` choose the ends); ``high=inf`` means any
    finite number above ``low``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not (math.isfinite(value) and inside):
        if math.isinf(high) and low == 0 and low_open:
            expected = "a finite positive number"
        elif math.isinf(high):
            expected = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UsageError(f"{what} must be {expected}; got {_shown(text)}")
    return value


def format_bytes(n: float | None) -> str:
    """Bytes for people: ``1.5 GiB``, ``12.0 MiB``."""
    if n is None:
        return "-"
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if abs(n) < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.2f} GiB"
