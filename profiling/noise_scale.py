"""Gradient noise scale: the statistical side of choosing a batch size.

B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training"): the batch
size at which the noise of a minibatch gradient is about as large as the gradient itself. Well below it,
doubling the batch nearly halves the steps needed (perfect scaling); well above it, extra samples per step
buy almost nothing. Together with the plateau model (the hardware side), it says which batch size is best.

Estimation (their Appendix A.1): with squared norms of gradient means over batches of two sizes,
E|G_B|^2 = |G|^2 + tr(Sigma)/B, so

    |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

are unbiased; each is smoothed with an exponential moving average before the ratio is taken, since the
ratio of noisy estimates is biased and unstable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minigrad import backend
from minigrad import functional as F
from minigrad.tensor import Tensor


@dataclass
class NoiseScale:
    """EMA-smoothed estimators of |G|^2 and tr(Sigma) from gradient norms at two batch sizes."""

    b_small: int
    b_big: int
    ema: float = 0.9
    g2: float | None = None       # EMA of the |G|^2 estimates
    trace: float | None = None    # EMA of the tr(Sigma) estimates
    updates: int = 0

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
        if self.updates == 0:
            self.g2, self.trace = g2, trace
        else:
            self.g2 = self.ema * self.g2 + (1 - self.ema) * g2
            self.trace = self.ema * self.trace + (1 - self.ema) * trace
        self.updates += 1

    @property
    def b_simple(self) -> float:
        """tr(Sigma) / |G|^2 from the smoothed estimates (inf while |G|^2 is not yet positive)."""
        if self.g2 is None:
            raise ValueError("NoiseScale: no update yet")
        return self.trace / self.g2 if self.g2 > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"b_small": self.b_small, "b_big": self.b_big, "ema": self.ema, "updates": self.updates,
                "g2": self.g2, "trace_sigma": self.trace,
                "b_simple": self.b_simple if self.updates else None}


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


def track(model, loader, optimizer, steps: int, micro_batches: int = 4, ema: float = 0.9) -> NoiseScale:
    """Train ``steps`` optimizer steps on ``loader`` while estimating B_simple from each batch."""
    estimator = NoiseScale(loader.batch_size // micro_batches, loader.batch_size, ema)
    done = 0
    while done < steps:
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
    return estimator
