"""Engines measured in a process of their own: the PyTorch peer runs here, never in the bench's process.

Why: a peer measured inside minigrad's process inherits what minigrad did to it (numba's OpenMP thread
policy, BLAS thread limits, a second OpenMP runtime loaded first) and ran 3.5x slower at batch 1 than torch
alone. The child is started with the environment the user gave the bench (``machine.user_environment()``:
minigrad never writes its thread policy there, see ``minigrad.kernels.numba_runtime``), sets its own threads to the
study's ``--threads`` and runs the very same measurement code (``measure``, ``autobatch``) on its own copy
of the data, so its rows are measured exactly like minigrad's.

Protocol: the parent writes one pickled request to the child's stdin and reads one pickled reply from its
stdout; progress bars go to the shared stderr. A failure inside the child comes back as the same kind of
error in the parent: NonFiniteLoss (diverged), MemoryError (out of memory), UsageError, else ChildFailed
with the child's traceback.
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import traceback

from minigrad.loop import NonFiniteLoss
from minigrad.machine import user_environment

from .settings import Settings, UsageError

_ERRORS = {"NonFiniteLoss": NonFiniteLoss, "MemoryError": MemoryError, "UsageError": UsageError}


class ChildFailed(RuntimeError):
    """The child process died or raised something the bench does not record as a status."""


def call(task: str, settings: Settings, **kwargs):
    """Run ``task`` ("train", "inference" or "autobatch") for the torch peer in a child process; its result."""
    request = pickle.dumps({"task": task, "settings": settings, **kwargs})
    # The child runs in a session of its own, so that a Ctrl-C at the terminal (sent to the whole foreground process
    # group) reaches the parent only: the parent handles it (subprocess.run kills the child on the way out), and the
    # child never prints a traceback of its own.
    proc = subprocess.run([sys.executable, "-m", "minigrad.bench.child"], input=request, stdout=subprocess.PIPE,
                          env=user_environment(), start_new_session=True)
    if proc.returncode in (130, -signal.SIGINT):
        raise KeyboardInterrupt
    try:
        reply = pickle.loads(proc.stdout)
    except Exception:
        raise ChildFailed(f"the {task} child for the torch peer exited with code {proc.returncode} and no "
                          "reply (its stderr is above)") from None
    if "error" in reply:
        kind, message = reply["error"]
        raise _ERRORS.get(kind, ChildFailed)(message)
    return reply["result"]


def _serve(request: dict):
    from minigrad.machine import set_threads

    from . import autobatch, engines, measure
    from .settings import load_data

    settings = request["settings"]
    set_threads(settings.threads, peer=True)
    train_set, test_set = load_data(settings)
    engine = engines.TorchEngine()
    task = request["task"]
    if task == "autobatch":
        return autobatch.choose(engine, settings, train_set, request["init_state"])
    if task == "train":
        return measure.measure_train(engine, settings, request["batch_size"], train_set, test_set,
                                     request["init_state"], request["progress"], request.get("lr"))
    if task == "inference":
        return measure.measure_inference(engine, settings, request["batch_size"], test_set, request["init_state"],
                                         request["progress"])
    raise ValueError(f"unknown task {task!r}")


def _process_facts() -> dict:
    """What the child's own process looked like after the work: whether numba was ever loaded there and
    the OpenMP wait policy its C environment carries (tests hold both to the user's)."""
    import ctypes

    getenv = ctypes.CDLL(None).getenv
    getenv.restype = ctypes.c_char_p
    policy = getenv(b"OMP_WAIT_POLICY")
    return {"numba_loaded": "numba" in sys.modules, "omp_wait_policy": policy.decode() if policy else None}


def main() -> int:
    reply_to = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed while measuring must not corrupt the reply
    try:
        request = pickle.load(sys.stdin.buffer)
    except EOFError:  # the bench was interrupted before it sent the request: nothing to do, nothing to say
        return 130
    try:
        reply = {"result": _serve(request)}
    except KeyboardInterrupt:
        return 130
    except (NonFiniteLoss, UsageError) as exc:
        reply = {"error": (type(exc).__name__, str(exc))}
    except Exception as exc:
        from .engines import TorchEngine

        if TorchEngine.is_out_of_memory(exc):
            reply = {"error": ("MemoryError", f"{type(exc).__name__}: {exc}")}
        else:
            reply = {"error": ("ChildFailed", "".join(traceback.format_exception(exc)))}
    reply["process"] = _process_facts()
    pickle.dump(reply, reply_to)
    reply_to.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
