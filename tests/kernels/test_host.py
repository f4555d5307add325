"""kernels/_host.py: the host backends' array plumbing and memory policy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minigrad.kernels import _host

# A child process trains convnet at B=64 on a host backend and prints, over six steady-state steps (after four
# warm-up steps), the median of their minor page faults (a step that grows the heap once, for the data
# loader's thread or a late garbage collection, is not a step that faults its arrays in every time), then
# under tracemalloc (which sees NumPy's allocations: the wrappers' outputs and caches, not the arrays Numba's
# jitted code allocates itself) the growth of the traced memory from the first to the last step and the
# spread of the steps' peaks. Argument 1 = 0 turns the policy off before the backend is selected.
_STEADY = textwrap.dedent("""
    import resource, sys, tracemalloc
    from minigrad.kernels import _host
    _host.KEEP_FREED = sys.argv[1] == "1"
    import minigrad as mg
    from minigrad import data, loop, machine, optim
    machine.set_threads(1)
    mg.set_backend(sys.argv[2])
    train, _ = data.synthetic_mnist(n_train=64 * 20, n_test=4, seed=0)
    mg.manual_seed(0)
    model = mg.models.convnet()
    steps = loop.TrainLoop(model, optim.SGD(model.parameters(), lr=0.01, momentum=0.9)).epoch(
        data.DataLoader(train, 64))
    for _ in range(4):
        next(steps)
    faults = []
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        next(steps)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    tracemalloc.start()
    next(steps)
    current, peaks = [], []
    for _ in range(6):
        tracemalloc.reset_peak()
        next(steps)
        now, peak = tracemalloc.get_traced_memory()
        current.append(now)
        peaks.append(peak)
    print(sorted(faults)[3], current[-1] - current[0], max(peaks) - min(peaks), min(peaks))
""")


def _steady_state(keep: bool, backend: str = "numpy") -> tuple[float, int, int, int]:
    """(median page faults per step, traced growth over the steps, spread of their peaks, smallest peak)."""
    proc = subprocess.run([sys.executable, "-c", _STEADY, "1" if keep else "0", backend], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    faults, growth, spread, peak = proc.stdout.strip().splitlines()[-1].split()
    return float(faults), int(growth), int(spread), int(peak)


@pytest.mark.skipif(not _host.keep_freed_memory(), reason="glibc's mallopt is not available here")
def test_a_steady_state_step_takes_no_fresh_memory_from_the_os():
    """With the policy a step reuses the memory the previous one freed: next to no page faults. Without it the
    same steps fault their large arrays in again every time (the check can tell the two apart)."""
    kept, default = _steady_state(True)[0], _steady_state(False)[0]
    assert kept < 20, f"{kept} minor page faults per steady-state step with keep_freed_memory"
    assert default > 10 * max(kept, 20), f"{default} faults per step without the policy, {kept} with it"


@pytest.mark.skipif(not _host.keep_freed_memory(), reason="glibc's mallopt is not available here")
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_steady_state_steps_allocate_alike_and_keep_no_new_buffers(backend):
    """Steps in the steady state: no fresh pages, no buffer kept from one step to the next (the traced memory
    does not grow by as much as one 64 KiB array), and the same allocations each time (equal peaks). The
    peak is tens of MiB (convnet's columns at B=64), so the check would see one activation kept or one
    workspace grown."""
    if backend == "numba":
        pytest.importorskip("numba")
    faults, growth, spread, peak = _steady_state(True, backend)
    assert faults < 20, f"{faults} minor page faults per steady-state step on {backend}"
    assert peak > 8 << 20, f"the traced peak {peak} B is too small to be a convnet step at B=64"
    assert abs(growth) < 64 << 10, f"the traced memory grew by {growth} B over six steady-state steps"
    assert spread < 64 << 10, f"the steps' traced peaks differ by {spread} B"


def test_plumbing_keeps_contiguous_arrays_and_copies_the_others():
    a = np.arange(6.0).reshape(2, 3)
    assert _host.asarray(a) is a
    t = _host.asarray(a.T)
    assert t.flags.c_contiguous and np.array_equal(t, a.T)
    assert _host.asarray(3.0).shape == ()
