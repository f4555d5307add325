"""The reference models, exactly as DESIGN.md gives them, so every comparison is like for like."""

from __future__ import annotations

from typing import Callable

from . import nn


def mlp(dtype="float32") -> nn.Sequential:
    """Flatten, Linear(784,256), ReLU, Linear(256,10)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256, dtype=dtype), nn.ReLU(), nn.Linear(256, 10, dtype=dtype))


def lenet5(dtype="float32") -> nn.Sequential:
    """Conv(1,6,5), ReLU, MaxPool(2), Conv(6,16,5), ReLU, MaxPool(2), Flatten,
    Linear(256,120), ReLU, Linear(120,84), ReLU, Linear(84,10). Input (N, 1, 28, 28)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 120, dtype=dtype), nn.ReLU(),
        nn.Linear(120, 84, dtype=dtype), nn.ReLU(),
        nn.Linear(84, 10, dtype=dtype))


def convnet(dtype="float32") -> nn.Sequential:
    """PyTorch's MNIST example without dropout: Conv(1,32,3), ReLU, Conv(32,64,3), ReLU, MaxPool(2),
    Flatten, Linear(9216,128), ReLU, Linear(128,10)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, dtype=dtype), nn.ReLU(),
        nn.Conv2d(32, 64, 3, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(9216, 128, dtype=dtype), nn.ReLU(),
        nn.Linear(128, 10, dtype=dtype))


MODELS: dict[str, Callable[..., nn.Sequential]] = {"mlp": mlp, "lenet5": lenet5, "convnet": convnet}


def get_model(name: str, dtype="float32") -> nn.Sequential:
    """Build a reference model by name ("mlp", "lenet5", "convnet")."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}; got {name!r}")
    return MODELS[name](dtype=dtype)
