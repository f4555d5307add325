"""What the GPU probes share: the skip without a device, and the timing of one piece with CUDA events."""

from __future__ import annotations


def unavailable(probe: str) -> bool:
    """Print the one-line skip and say so when there is no usable GPU; otherwise select the cupy backend."""
    from benchmarks.compare_gpu import gpu_unavailable

    reason = gpu_unavailable()
    if reason is not None:
        print(f"{probe}: skipped, no GPU to measure on ({reason})")
        return True
    import minigrad as mg

    mg.set_backend("cupy")
    return False


def ms(fn, reps: int = 10) -> float:
    """Mean milliseconds of ``reps`` back-to-back calls of ``fn`` on the device (CUDA events on the current
    stream), after 2 warm-up calls."""
    import cupy as cp

    for _ in range(2):
        fn()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / reps
