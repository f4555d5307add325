"""The two kinds of engine the bench drives the same way: a minigrad backend, and the torch peer.

The measurement code (``measure.py``) only talks to this interface, so every engine is warmed up, timed,
evaluated and memory-measured by the same lines, and trained by the same loop (``minigrad.loop``, through
the engine's adapter). The bench never imports numba or cupy: a minigrad engine is a backend name handed
to ``minigrad.backend``. Nor does the bench's process import torch: ``make_engine("torch")`` is a
``ChildEngine`` whose measurements run in a child process (``child.py``), where the real ``TorchEngine``
does the work.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

from minigrad import backend, models, optim, train
from minigrad.tensor import Tensor, no_grad

from .settings import Settings, UsageError

TORCH = "torch"


class MinigradEngine:
    """A minigrad backend ("numpy", "numba", "cupy", ...), measured in the bench's own process."""

    isolated = False

    def __init__(self, name: str):
        self.name = name

    def activate(self) -> None:
        """Make this engine's arrays the ones DataLoaders produce (called before every measurement)."""
        backend.set_backend(self.name)

    def model(self, settings: Settings, init_state: dict):
        model = models.get_model(settings.model, dtype=settings.dtype)
        model.load_state_dict(init_state)
        return model

    def optimizer(self, model, settings: Settings, lr: float):
        if settings.optimizer == "adam":
            return optim.Adam(model.parameters(), lr=lr)
        return optim.SGD(model.parameters(), lr=lr, momentum=settings.momentum)

    def fit(self, model, loader, optimizer, **kwargs) -> train.History:
        return train.fit(model, loader, optimizer, **kwargs)

    def evaluate(self, model, loader) -> dict:
        return train.evaluate(model, loader)

    def predict(self, model, x):
        """Logits of one batch on the host: the host copy is what makes GPU timing include the work."""
        with no_grad():
            return backend.k.to_numpy(model(Tensor(x)).data)

    def state_bytes(self, model, optimizer) -> int:
        """Parameters plus the optimizer's per-parameter buffers: memory held whatever the batch size."""
        arrays = [p.data for p in model.parameters()]
        arrays += [b for b in getattr(optimizer, "buffers", []) if b is not None]
        arrays += getattr(optimizer, "m", []) + getattr(optimizer, "v", [])
        return int(sum(a.nbytes for a in arrays))

    @property
    def tracemalloc_sees_arrays(self) -> bool:
        """numpy registers its allocations with tracemalloc; device arrays are not host allocations."""
        return self.name != "cupy"

    def gpu_pool(self):
        """CuPy's default memory pool when this engine runs on the GPU (cupy is loaded by the backend)."""
        if self.name != "cupy":
            return None
        return sys.modules["cupy"].get_default_memory_pool()

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, MemoryError)  # cupy's OutOfMemoryError is a MemoryError too


class TorchEngine:
    """PyTorch on the CPU through ``minigrad.torch_peer``, fed by the same numpy DataLoaders (child process only)."""

    name = TORCH
    isolated = False

    def __init__(self):
        try:
            from minigrad import torch_peer
        except ImportError as exc:
            raise UsageError(f"--backend torch: torch does not import: {exc}") from None
        self.peer = torch_peer

    def activate(self) -> None:
        # the loaders must hand out numpy arrays, which torch wraps without a copy; a backend that leaves the
        # process as torch would find it alone
        backend.set_backend(self.peer.PLUMBING_BACKEND)

    def model(self, settings: Settings, init_state: dict):
        source = models.get_model(settings.model, dtype=settings.dtype)
        source.load_state_dict(init_state)
        return self.peer.twin(source, settings.dtype)

    def optimizer(self, model, settings: Settings, lr: float):
        return self.peer.Optimizer(model, settings.optimizer, lr, settings.momentum)

    def fit(self, model, loader, optimizer, **kwargs) -> train.History:
        return train.fit(model, loader, optimizer, adapter=self.peer.ADAPTER, **kwargs)

    def evaluate(self, model, loader) -> dict:
        return train.evaluate(model, loader, self.peer.ADAPTER)

    def predict(self, model, x):
        return self.peer.predict(model, x)

    def state_bytes(self, model, optimizer) -> int:
        return int(sum(p.nbytes for p in model.parameters())) + optimizer.state_bytes()

    tracemalloc_sees_arrays = False  # torch's allocator does not report to tracemalloc

    def gpu_pool(self):
        return None

    @staticmethod
    def is_out_of_memory(exc: BaseException) -> bool:
        # torch's CPU allocator raises RuntimeError("... DefaultCPUAllocator: can't allocate memory ...")
        return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "allocate memory" in str(exc))


class ChildEngine:
    """The bench's handle on the torch peer: every measurement of it runs in a child process (child.py),
    which reports running out of memory as MemoryError."""

    name = TORCH
    isolated = True

    def gpu_pool(self):
        return None

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, MemoryError)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def check_engine(name: str) -> None:
    """Raise UsageError when ``name`` is not an engine, or cannot run here (e.g. cupy without a GPU)."""
    known = backend.registered_backends() + [TORCH]
    if name not in known:
        raise UsageError(f"--backend: unknown backend {name!r}; expected one of {', '.join(known)}")
    if name == TORCH:  # found, not imported: torch runs in child processes only (a broken install fails there)
        if not torch_available():
            raise UsageError("--backend torch: torch is not importable here (pip install torch to compare with it)")
        return
    try:
        backend.load_module(name)
    except backend.BackendUnavailable as exc:
        raise UsageError(f"--backend {name}: {exc}") from None


def make_engine(name: str):
    return ChildEngine() if name == TORCH else MinigradEngine(name)
