"""Gradient noise scale: the statistical side of choosing a batch size.

B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training"): the batch
size at which the noise of a minibatch gradient is about as large as the gradient itself. Well below it,
doubling the batch nearly halves the steps needed (perfect scaling); well above it, extra samples per step
buy almost nothing. Together with the plateau model (the hardware side), it says which batch size is best.

Estimation (their Appendix A.1): with squared norms of gradient means over batches of two sizes,
E|G_B|^2 = |G|^2 + tr(Sigma)/B, so

    |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

are unbiased per step, but the ratio of two noisy estimates is biased and unstable, so neither one step nor a
short run says much. Two summaries are kept:

- the reported ``b_simple``: mean tr(Sigma) / mean |G|^2 over the second half of the run (the first half is
  dropped as burn-in: the first tens of steps sit on the initialisation plateau, see MIN_STEPS), with an 80%
  interval from a moving-block bootstrap of that ratio of means (``interval``);
- the paper's exponential moving averages ``g2`` and ``trace`` (``b_simple_ema``), which follow the latest
  steps and so move more from step to step.

``reliable`` is True when the run had at least MIN_STEPS steps and the interval is narrower than
MAX_RELATIVE_WIDTH times the estimate; ``summary()`` says so in one line, and why not when not. The interval
covers the sampling noise of that window's average; it says nothing about where B_simple goes next, and
B_simple grows as the loss falls (as in the runs behind MIN_STEPS), so any one number belongs to a stage of
training: the summary states the steps it came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from minigrad import backend
from minigrad import functional as F
from minigrad.tensor import Tensor

# Fewest steps ``track`` accepts (without allow_few_steps). Measured: lenet5 on MNIST as `minigrad.profile noise`
# runs it (batch 64, micro-batches of 16, SGD lr 0.05 momentum 0.9), 300 steps at each of seeds 0-4:
# - steps 1-30 (1-50 for one seed) sit on the initialisation plateau: |G|^2 ~ 0.01 per step (0.5-20 once
#   learning takes off, at steps 30-50), tr(Sigma) ~ 2 (50-300 later); the ratio there is 150-5000, or
#   undefined where the |G|^2 estimate is negative (seeds 2 and 4: EMA estimate inf at 5 steps; seed 0 2591);
# - once past it, B_simple per 10-step window dips to 5-40 at steps 40-60 and settles into a band of about
#   80-200 from step ~80, rising slowly (second-half estimate over 200 steps: 106-131 over the five seeds;
#   over 300 steps: 158-254);
# - since the estimate uses the second half, it first leaves the plateau out at about 100 steps. At 30 steps
#   the five estimates were 100-677, 2-27x their 100-step values (22-57), and two of them had intervals
#   narrower than the estimate (relative width 0.74, 0.83): the interval sees the noise within its window,
#   not a window that lies in the wrong stage of training. At 100 steps four of five intervals had relative
#   width 0.27-0.94 (one 1.15); at 150, 0.29-0.71; at 200, 0.29-0.43.
MIN_STEPS = 100
# ``reliable`` needs the interval's width (high - low) below this multiple of the estimate.
MAX_RELATIVE_WIDTH = 1.0
LEVEL = 0.8                  # central coverage of the interval: 10th to 90th percentile
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0           # fixed, so the same run gives the same interval
# On synthetic streams with a known ratio (independent steps, 50-200 kept samples) the nominal 80% interval
# covered the truth in 73-76% of streams (65-76% with step-to-step correlation 0.3): a guide, not exact.


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval for B_simple: ``low``-``high`` at ``level``, from ``samples`` kept steps."""

    low: float
    high: float
    level: float
    samples: int
    block: int
    resamples: int
    seed: int


def ratio_of_means_interval(g2: np.ndarray, trace: np.ndarray, level: float = LEVEL,
                            resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """Moving-block bootstrap percentile interval of mean(trace) / mean(g2) over paired per-step estimates.

    Blocks of about len**(1/3) consecutive steps (Hall, Horowitz and Jing 1995) keep the step-to-step
    correlation of a training run in each resample. A resample whose mean |G|^2 is not positive counts as +inf.
    """
    g2, trace = np.asarray(g2, np.float64), np.asarray(trace, np.float64)
    m = len(g2)
    if m == 0 or len(trace) != m:
        raise ValueError(f"ratio_of_means_interval: need equally many (>= 1) samples; got {m} and {len(trace)}")
    if not 0 < level < 1:
        raise ValueError(f"ratio_of_means_interval: level must lie in (0, 1); got {level}")
    block = max(1, round(m ** (1 / 3)))
    n_blocks = -(-m // block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, m - block + 1, size=(resamples, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)).reshape(resamples, -1)[:, :m]
    g2_mean, trace_mean = g2[idx].mean(axis=1), trace[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(g2_mean > 0, trace_mean / g2_mean, np.inf)
    # inverted_cdf picks sample values, so an inf among the resamples cannot turn a bound into nan
    low, high = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return Interval(float(low), float(high), level, m, block, resamples, seed)


@dataclass
class NoiseScale:
    """Estimators of |G|^2 and tr(Sigma) from gradient norms at two batch sizes: per step, and EMA-smoothed."""

    b_small: int
    b_big: int
    ema: float = 0.9
    g2: float | None = None       # EMA of the |G|^2 estimates
    trace: float | None = None    # EMA of the tr(Sigma) estimates
    updates: int = 0
    g2_samples: list[float] = field(default_factory=list, repr=False)     # per-step |G|^2 estimates, unsmoothed
    trace_samples: list[float] = field(default_factory=list, repr=False)  # per-step tr(Sigma) estimates
    _cache: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not 1 <= self.b_small < self.b_big:
            raise ValueError(f"NoiseScale: need 1 <= b_small < b_big; got {self.b_small}, {self.b_big}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"NoiseScale: ema must lie in [0, 1); got {self.ema}")

    def update(self, small_sq: float, big_sq: float) -> None:
        """Feed |G_small|^2 (mean over small batches of their gradients' squared norm) and |G_big|^2."""
        bs, bb = self.b_small, self.b_big
        g2 = (bb * big_sq - bs * small_sq) / (bb - bs)
        trace = (small_sq - big_sq) / (1.0 / bs - 1.0 / bb)
        self.g2_samples.append(float(g2))
        self.trace_samples.append(float(trace))
        if self.updates == 0:
            self.g2, self.trace = g2, trace
        else:
            self.g2 = self.ema * self.g2 + (1 - self.ema) * g2
            self.trace = self.ema * self.trace + (1 - self.ema) * trace
        self.updates += 1

    def _window(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept per-step estimates: the second half of the run (the first half is burn-in)."""
        n = len(self.g2_samples)
        return np.asarray(self.g2_samples[n // 2:]), np.asarray(self.trace_samples[n // 2:])

    @property
    def b_simple(self) -> float:
        """mean tr(Sigma) / mean |G|^2 over the second half of the steps (inf while that |G|^2 is not positive).

        Falls back to the EMA ratio for an estimator given its EMAs but no per-step estimates.
        """
        if self.g2 is None:
            raise ValueError("NoiseScale: no update yet")
        if not self.g2_samples:
            return self.b_simple_ema
        g2, trace = self._window()
        return float(trace.mean() / g2.mean()) if g2.mean() > 0 else float("inf")

    @property
    def b_simple_ema(self) -> float:
        """tr(Sigma) / |G|^2 from the EMA-smoothed estimates (the paper's running value)."""
        if self.g2 is None:
            raise ValueError("NoiseScale: no update yet")
        return self.trace / self.g2 if self.g2 > 0 else float("inf")

    def interval(self, level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> Interval:
        """The bootstrap interval of ``b_simple`` (see ratio_of_means_interval); the same for the same steps."""
        if not self.g2_samples:
            raise ValueError("NoiseScale: no per-step estimates yet")
        key = (len(self.g2_samples), level, resamples, seed)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, ratio_of_means_interval(*self._window(), level=level, resamples=resamples,
                                                        seed=seed))
        return self._cache[1]

    @property
    def relative_width(self) -> float:
        """(high - low) / b_simple for the default interval; inf when the estimate is not positive and finite."""
        iv, est = self.interval(), self.b_simple
        if not (math.isfinite(est) and est > 0 and math.isfinite(iv.high) and math.isfinite(iv.low)):
            return float("inf")
        return (iv.high - iv.low) / est

    @property
    def why_unreliable(self) -> list[str]:
        """The reasons ``reliable`` is False; empty when it is True."""
        why = []
        if self.updates < MIN_STEPS:
            why.append(f"only {self.updates} step{'' if self.updates == 1 else 's'}: at least {MIN_STEPS} needed")
        if not self.g2_samples:
            return why or ["no per-step estimates"]
        est = self.b_simple
        if not (math.isfinite(est) and est > 0):
            why.append("the |G|^2 estimate is not positive" if not math.isfinite(est)
                       else "the tr(Sigma) estimate is not positive")
        elif self.relative_width >= MAX_RELATIVE_WIDTH:
            why.append("interval wider than the estimate" if MAX_RELATIVE_WIDTH == 1
                       else f"interval wider than {MAX_RELATIVE_WIDTH:g} x the estimate")
        return why

    @property
    def reliable(self) -> bool:
        return not self.why_unreliable

    def to_dict(self) -> dict:
        d = {"b_small": self.b_small, "b_big": self.b_big, "ema": self.ema, "updates": self.updates,
             "g2": self.g2, "trace_sigma": self.trace,
             "b_simple": self.b_simple if self.updates else None,
             "b_simple_ema": self.b_simple_ema if self.updates else None,
             "b_simple_low": None, "b_simple_high": None, "level": LEVEL, "samples": 0, "relative_width": None,
             "min_steps": MIN_STEPS, "max_relative_width": MAX_RELATIVE_WIDTH}
        if self.g2_samples:
            iv = self.interval()
            g2, trace = self._window()
            d.update(b_simple_low=iv.low, b_simple_high=iv.high, samples=iv.samples,
                     relative_width=self.relative_width, g2_mean=float(g2.mean()),
                     trace_sigma_mean=float(trace.mean()), bootstrap={"block": iv.block,
                                                                      "resamples": iv.resamples,
                                                                      "seed": iv.seed})
        why = self.why_unreliable
        d.update(reliable=not why, why="; ".join(why) or None)
        return d

    def summary(self) -> str:
        """One line: 'B_simple ≈ 69 (80% interval 40-110, 100 steps)', and why it is unreliable when it is."""
        return summarize(self.to_dict())


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:,.0f}" if abs(x) >= 10 else f"{x:.2g}"


def summarize(d: dict) -> str:
    """``NoiseScale.summary()`` from its ``to_dict()`` (so a report can word a saved result the same way)."""
    steps = f"{d['updates']} step{'' if d['updates'] == 1 else 's'}"
    if d.get("b_simple") is None:
        text = f"B_simple: no estimate ({steps})"
    elif d.get("b_simple_low") is None:
        text = f"B_simple ≈ {_fmt(d['b_simple'])} ({steps}, no interval)"
    else:
        low, high = d["b_simple_low"], d["b_simple_high"]
        between = " to " if low < 0 else "-"
        text = (f"B_simple ≈ {_fmt(d['b_simple'])} ({100 * d['level']:.0f}% interval "
                f"{_fmt(low)}{between}{_fmt(high)}, {steps})")
    if not d.get("reliable", False):
        text += f"; not reliable: {d.get('why') or 'unknown'}"
    return text


def _grad_vector(params) -> np.ndarray:
    return np.concatenate([backend.k.to_numpy(p.grad).ravel().astype(np.float64) for p in params])


def gradient_norms(model, x, y, micro_batches: int) -> tuple[float, float]:
    """(|G_small|^2 averaged over the micro-batches, |G_big|^2) for one batch split into equal micro-batches.

    Each micro-batch is backpropagated on its own; the big-batch gradient is their mean. Leaves the model's
    ``.grad`` holding the big-batch mean gradient, so an optimizer step can follow.
    """
    n = int(x.shape[0])
    if micro_batches < 2 or n % micro_batches:
        raise ValueError(f"gradient_norms: the batch of {n} must split into micro_batches >= 2 equal parts; "
                         f"got micro_batches={micro_batches}")
    params = model.parameters()
    size = n // micro_batches
    total = None
    small_sq = 0.0
    for i in range(micro_batches):
        model.zero_grad()
        F.cross_entropy(model(Tensor(x[i * size:(i + 1) * size])), y[i * size:(i + 1) * size]).backward()
        g = _grad_vector(params)
        small_sq += float(g @ g) / micro_batches
        total = g if total is None else total + g
    mean = total / micro_batches
    offset = 0
    for p in params:  # leave the big-batch gradient in .grad
        k = int(np.prod(p.shape))
        p.grad = backend.k.asarray(mean[offset:offset + k].reshape(p.shape), dtype=p.dtype)
        offset += k
    return small_sq, float(mean @ mean)


def track(model, loader, optimizer, steps: int, micro_batches: int = 4, ema: float = 0.9, *,
          allow_few_steps: bool = False) -> NoiseScale:
    """Train ``steps`` optimizer steps on ``loader`` while estimating B_simple from each batch.

    Refuses ``steps`` below MIN_STEPS unless ``allow_few_steps`` (for tests and quick runs); the result is then
    marked ``reliable: False`` with the reason.
    """
    if steps < MIN_STEPS and not allow_few_steps:
        raise ValueError(f"noise scale: steps={steps} is below MIN_STEPS={MIN_STEPS}, too few for a usable "
                         f"B_simple; use steps >= {MIN_STEPS}, or allow_few_steps=True to get an estimate "
                         "marked unreliable")
    estimator = NoiseScale(loader.batch_size // micro_batches, loader.batch_size, ema)
    done = 0
    while done < steps:
        done_before = done
        for x, y in loader:
            if int(x.shape[0]) != loader.batch_size:
                continue  # a partial last batch would not split evenly
            small_sq, big_sq = gradient_norms(model, x, y, micro_batches)
            estimator.update(small_sq, big_sq)
            optimizer.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                break
        if done == done_before:
            raise ValueError(f"noise scale: the loader yields no full batch of {loader.batch_size}")
    return estimator
