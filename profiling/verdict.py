"""What bounds each kernel, and how the per-sample floor splits into hardware and implementation.

Verdict per kernel and batch size, from the tracer's measured time and the analytic FLOPs and bytes
(``profiling.costs``) against this machine's measured ceilings (``profiling.ceilings``):

- compute share = achieved GFLOP/s / sgemm peak; bandwidth share = achieved GB/s / stream bandwidth;
- **compute-bound** when the compute share is at least ``BOUND``, **memory-bound** when the bandwidth share
  is, else **overhead-bound**: neither ceiling is near, so the time goes to Python, dispatch, copies,
  allocation or a poor BLAS shape, which a better implementation removes.

The floor: at the largest batch the step time per sample is what batching cannot remove. Its part at a
hardware ceiling is each kernel's roofline time, max(FLOPs / peak, bytes / bandwidth) (the least time any
implementation needs to do the kernel's arithmetic and compulsory traffic); the rest is the excess, split by
its measured sources: time outside kernels (Python, the tape, dispatch), im2col/col2im copies (cProfile),
GEMM kernels above their roofline (BLAS efficiency at these shapes), other kernels above theirs, with the
allocation counts (minor page faults, bytes) beside it.
"""

from __future__ import annotations

#: Share of a ceiling from which a kernel counts as bound by it.
BOUND = 0.5
OUTSIDE = "(outside kernels)"
GEMM_KERNELS = ("conv2d_forward", "conv2d_backward", "linear_forward", "linear_backward")


def kernel_verdicts(traced: list[dict], peak_gflops: float, bandwidth_gbps: float) -> list[dict]:
    """Per batch size and kernel: seconds per step, compute and bandwidth shares, roofline seconds, verdict."""
    out = []
    for t in traced:
        steps = t["steps"]
        for k in t["kernels"]:
            if k["kernel"] == OUTSIDE:
                continue
            seconds = k["total_ms"] / 1e3 / steps
            flops, nbytes = k["flops"] / steps, k["bytes"] / steps
            compute = flops / seconds / 1e9 / peak_gflops if seconds else 0.0
            bandwidth = nbytes / seconds / 1e9 / bandwidth_gbps if seconds else 0.0
            verdict = ("compute-bound" if compute >= BOUND else "memory-bound" if bandwidth >= BOUND
                       else "overhead-bound")
            roofline = max(flops / (peak_gflops * 1e9), nbytes / (bandwidth_gbps * 1e9))
            out.append({"batch_size": t["batch_size"], "kernel": k["kernel"], "seconds_per_step": seconds,
                        "compute_share": compute, "bandwidth_share": bandwidth, "verdict": verdict,
                        "roofline_seconds_per_step": roofline})
    return out


def floor_split(batch_size: int, step_seconds: float, traced: dict, verdicts: list[dict],
                copies_seconds_per_step: float | None, allocation: dict | None) -> dict:
    """The per-sample floor at ``batch_size`` split into the part at a hardware ceiling and the excess.

    step_seconds: the untimed step (the sweep's median) at that batch; traced: the tracer's row at the same
    batch (its times are scaled to the untimed step, since tracing adds its own overhead); copies: seconds
    per untimed step in im2col/col2im (cProfile, scaled), or None; allocation: page faults and bytes per step.
    """
    scale = step_seconds / traced["step_seconds"] if traced["step_seconds"] else 1.0
    mine = [v for v in verdicts if v["batch_size"] == batch_size]
    per = 1e6 / batch_size  # seconds per step -> microseconds per sample
    outside = next((k["total_ms"] / 1e3 / traced["steps"] for k in traced["kernels"] if k["kernel"] == OUTSIDE),
                   0.0) * scale
    ceiling = sum(v["roofline_seconds_per_step"] for v in mine)
    gemm_excess = sum(max(0.0, v["seconds_per_step"] * scale - v["roofline_seconds_per_step"])
                      for v in mine if v["kernel"] in GEMM_KERNELS)
    other_excess = sum(max(0.0, v["seconds_per_step"] * scale - v["roofline_seconds_per_step"])
                       for v in mine if v["kernel"] not in GEMM_KERNELS)
    copies = min(copies_seconds_per_step or 0.0, gemm_excess)  # the copies run inside the conv kernels
    parts = [
        {"name": "Python, autograd tape and dispatch (time outside kernels)", "us_per_sample": outside * per},
        {"name": "im2col/col2im copies and layout changes (inside conv kernels, cProfile)",
         "us_per_sample": copies * per},
        {"name": "GEMM kernels above their roofline (BLAS efficiency at these shapes, validation, allocation)",
         "us_per_sample": (gemm_excess - copies) * per},
        {"name": "pooling, elementwise, loss and optimizer kernels above their roofline",
         "us_per_sample": other_excess * per},
    ]
    floor = step_seconds * per
    at_ceiling = ceiling * per
    return {"batch_size": batch_size, "floor_us_per_sample": floor, "ceiling_us_per_sample": at_ceiling,
            "excess_us_per_sample": floor - at_ceiling, "parts": parts,
            "unattributed_us_per_sample": floor - at_ceiling - sum(p["us_per_sample"] for p in parts),
            "allocation": allocation}


def summary(split: dict) -> str:
    """The floor in one sentence, largest source of the excess first."""
    parts = sorted(split["parts"], key=lambda p: -p["us_per_sample"])
    floor = split["floor_us_per_sample"]
    share = split["ceiling_us_per_sample"] / floor if floor else 0.0
    text = (f"At B={split['batch_size']} a sample costs {floor:.1f} µs; {split['ceiling_us_per_sample']:.1f} µs "
            f"({100 * share:.0f}%) of it is at a hardware ceiling (each kernel's arithmetic at the sgemm peak or "
            f"its compulsory bytes at stream bandwidth, whichever is slower); the other "
            f"{split['excess_us_per_sample']:.1f} µs is implementation overhead: "
            + "; ".join(f"{p['name']} {p['us_per_sample']:.1f} µs" for p in parts if p["us_per_sample"] >= 0.05))
    alloc = split.get("allocation")
    if alloc:
        fresh = alloc.get("fresh_process_minor_faults_per_step")
        text += (f". Allocation per step: {alloc['minor_faults_per_step']:.0f} minor page faults "
                 f"({alloc['minor_faults_per_step'] / split['batch_size']:.1f} per sample) in this process"
                 + (f", {fresh:.0f} in a fresh one" if fresh is not None else "")
                 + f"; {alloc['traced_peak_bytes'] / 2**20:.1f} MiB of NumPy arrays live at the peak")
    return text + "."
