"""kernels/_host.py: the host backends' array plumbing and memory policy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minigrad.kernels import _host

# A child process trains convnet at B=64 on the numpy backend and prints the median of the minor page faults of
# six steady-state steps (after four warm-up steps): a step that grows the heap once (the data loader's thread,
# a late garbage collection) is not a step that faults its arrays in every time. Argument 0 turns the policy
# off before the backend is selected.
_FAULTS = textwrap.dedent("""
    import resource, sys
    from minigrad.kernels import _host
    _host.KEEP_FREED = sys.argv[1] == "1"
    import minigrad as mg
    from minigrad import data, loop, machine, optim
    machine.set_threads(1)
    mg.set_backend("numpy")
    train, _ = data.synthetic_mnist(n_train=64 * 10, n_test=4, seed=0)
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
    print(sorted(faults)[3])
""")


def _faults_per_step(keep: bool) -> float:
    proc = subprocess.run([sys.executable, "-c", _FAULTS, "1" if keep else "0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _host.keep_freed_memory(), reason="glibc's mallopt is not available here")
def test_a_steady_state_step_takes_no_fresh_memory_from_the_os():
    """With the policy a step reuses the memory the previous one freed: next to no page faults. Without it the
    same steps fault their large arrays in again every time (the check can tell the two apart)."""
    kept, default = _faults_per_step(True), _faults_per_step(False)
    assert kept < 20, f"{kept} minor page faults per steady-state step with keep_freed_memory"
    assert default > 10 * max(kept, 20), f"{default} faults per step without the policy, {kept} with it"


def test_plumbing_keeps_contiguous_arrays_and_copies_the_others():
    a = np.arange(6.0).reshape(2, 3)
    assert _host.asarray(a) is a
    t = _host.asarray(a.T)
    assert t.flags.c_contiguous and np.array_equal(t, a.T)
    assert _host.asarray(3.0).shape == ()
