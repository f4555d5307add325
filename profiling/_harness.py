"""The training step every harness measures, and its set-up (one place, so all harnesses time the same thing)."""

from __future__ import annotations

from minigrad import data, models, optim, rng
from minigrad import functional as F
from minigrad.tensor import Tensor


def setup(model_name: str, batch_size: int, train_set, n_batches: int, seed: int = 0):
    """A fresh model (seeded), SGD with momentum, and an iterator over ``n_batches`` full batches.

    Raises ValueError when the data cannot supply that many batches.
    """
    rng.manual_seed(seed)
    model = models.get_model(model_name)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = data.DataLoader(train_set, batch_size, shuffle=True, seed=seed, drop_last=True)
    if len(loader) < n_batches:
        raise ValueError(f"profile: {len(train_set)} samples give {len(loader)} batches of {batch_size}; "
                         f"need {n_batches} (warm-up + steps)")
    return model, opt, iter(loader)


def step(model, opt, x, y) -> None:
    """Forward, loss, backward, update."""
    F.cross_entropy(model(Tensor(x)), y).backward()
    opt.step()
    opt.zero_grad()
