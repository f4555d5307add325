"""The one dispatch point.

Only this module knows which kernel module is live. Everything else reaches the kernels through
``minigrad.backend.k`` (the kernel table), e.g. ``k.conv2d_forward(x, w, b, 1, 0)``. Switching backend
swaps the table's entries; tracing wraps them here, so a model pays nothing for tracing that is off.

A backend is a module that exports every name in ``CONTRACT`` (see DESIGN.md, "The kernel contract"), may
define ``activate()`` (called each time it is selected: e.g. numba's thread policy) and names the memory
its arrays live in with ``DEVICE`` ("host" unless it says otherwise).

Nothing is imported or selected when ``minigrad`` is imported: the table fills itself on first use with
``default_backend()``, so ``import minigrad`` stays light and leaves the environment alone.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import types
from typing import Callable, Iterator

from minigrad.kernels._host import BackendUnavailable  # noqa: F401  (defined beside the kernels that raise it)

#: Every backend module exports exactly these names (tests/test_backend.py checks each one).
KERNELS = (
    "conv2d_forward", "conv2d_backward",
    "maxpool2d_forward", "maxpool2d_backward",
    "relu_maxpool2d_forward", "relu_maxpool2d_backward",
    "linear_forward", "linear_backward",
    "relu_forward", "relu_backward",
    "log_softmax_forward", "log_softmax_backward",
    "softmax_xent_forward", "softmax_xent_backward",
    "dropout_forward", "dropout_backward",
    "batchnorm2d_forward", "batchnorm2d_backward",
    "sgd_update", "adam_update",
)
PLUMBING = ("asarray", "to_numpy", "zeros", "synchronize")
CONTRACT = KERNELS + PLUMBING

#: name -> module path. The reference backend (naive loops) is registered so that whole models can be run
#: against the oracle in tests; it is never picked by default.
_REGISTRY: dict[str, str] = {
    "numpy": "minigrad.kernels.numpy_ops",
    "numba": "minigrad.kernels.numba_ops",
    "cupy": "minigrad.kernels.cupy_ops",
    "reference": "minigrad.kernels.reference",
}



class _KernelTable(types.SimpleNamespace):
    """The live backend's functions as attributes (possibly wrapped by a hook). Until a backend is selected
    the table is empty, and the first attribute asked for selects ``default_backend()``."""

    def __getattr__(self, name):  # only called for attributes not (yet) in the table
        if _state["module"] is None and name in CONTRACT:
            set_backend(default_backend())
            return getattr(self, name)
        raise AttributeError(f"kernel table has no {name!r}; the contract is {CONTRACT}")


#: The kernel table: ``backend.k.conv2d_forward(...)`` calls the live backend.
k = _KernelTable()

_state = {"name": None, "module": None, "hook": None}


def register_backend(name: str, module_path: str) -> None:
    """Register a kernel module under ``name`` (it must export ``CONTRACT``)."""
    _REGISTRY[name] = module_path


def available_backends() -> list[str]:
    """Names of the registered backends whose module imports and whose device (if any) is present."""
    return [name for name in _REGISTRY if unavailable_reason(name) is None]


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here (not registered, missing package, no device), or None if it can."""
    if name not in _REGISTRY:
        return f"backend {name!r} is not registered"
    try:
        load_module(name)
    except BackendUnavailable as exc:
        return str(exc)
    return None


def registered_backends() -> list[str]:
    return list(_REGISTRY)


def load_module(name: str) -> types.ModuleType:
    """Import the kernel module registered as ``name`` and check it can run here and exports CONTRACT."""
    if name not in _REGISTRY:
        raise ValueError(f"set_backend: unknown backend {name!r}; expected one of {sorted(_REGISTRY)}")
    try:
        module = importlib.import_module(_REGISTRY[name])
    except ImportError as exc:  # missing optional dependency (numba, cupy)
        raise BackendUnavailable(f"backend {name!r} is not available: {exc}") from exc
    check = getattr(module, "check_available", None)
    if check is not None:
        check()  # raises BackendUnavailable with the reason (e.g. no CUDA device)
    missing = [n for n in CONTRACT if not callable(getattr(module, n, None))]
    if missing:
        raise BackendUnavailable(f"backend {name!r} does not implement {missing}")
    from minigrad import machine

    machine.limit_numba_threads()  # a thread limit set before this backend was loaded holds for it too
    return module


def _install() -> None:
    module, hook = _state["module"], _state["hook"]
    for n in CONTRACT:
        fn = getattr(module, n)
        if hook is not None and n in KERNELS:
            fn = hook(n, fn)
        setattr(k, n, fn)


def set_backend(name: str) -> None:
    """Make ``name`` the live backend ("numpy", "numba", "cupy" or "reference")."""
    module = load_module(name)
    activate = getattr(module, "activate", None)
    if activate is not None:
        activate()
    _state["name"], _state["module"] = name, module
    _install()


def _selected() -> types.ModuleType:
    if _state["module"] is None:
        set_backend(default_backend())
    return _state["module"]


def get_backend() -> str:
    """Name of the live backend (selecting the default one if none was selected yet)."""
    _selected()
    return _state["name"]


def backend_module() -> types.ModuleType:
    """The live kernel module (for tools that need module-level facts such as its thread settings)."""
    return _selected()


def device(name: str | None = None) -> str:
    """Where the arrays of backend ``name`` (default: the live one) live: "host" (NumPy arrays, shared by
    reference, numpy and numba) or the module's own ``DEVICE`` (cupy: "cuda")."""
    module = _selected() if name is None else load_module(name)
    return getattr(module, "DEVICE", "host")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """``with use_backend("numpy"): ...`` runs the block on ``name`` and restores the previous backend."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def set_kernel_hook(hook: Callable[[str, Callable], Callable] | None) -> None:
    """Wrap every kernel of the table with ``hook(name, fn) -> fn`` (None removes the wrapping).

    This is how the tracer sees every kernel call without any layer knowing about it.
    """
    _state["hook"] = hook
    if _state["module"] is not None:
        _install()


def kernel_hook() -> Callable[[str, Callable], Callable] | None:
    """The hook set by ``set_kernel_hook``, or None."""
    return _state["hook"]


def default_backend() -> str:
    """``MINIGRAD_BACKEND`` if set, else numba when it imports, else numpy. Never cupy implicitly."""
    env = os.environ.get("MINIGRAD_BACKEND")
    if env:
        return env
    for name in ("numba", "numpy"):
        try:
            load_module(name)
        except BackendUnavailable:
            continue
        return name
    return "numpy"
