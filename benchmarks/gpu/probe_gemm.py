"""conv2d's three GEMMs on the GPU, each way the cupy backend can run them, timed with CUDA events.

For convnet's and lenet5's convolutions at large batches: the forward GEMM W (F, CKK) @ cols (CKK, N*P), the
input-gradient GEMM W^T @ dY and the weight-gradient GEMM dY (F, N*P) @ cols^T, the last one as one GEMM and
split along K = N*P into 4..128 slices (``cupy_ops.split_k_gemm``; the chunk count the backend's
``LaunchConfig.split_k`` picks is marked), each in IEEE fp32 and with TF32 allowed (``tf32=True``). Also the
forward GEMM as a batch of per-image GEMMs writing NCHW directly (what would spare the layout pass). Each
figure is the mean of 10 calls after 2 warm-up calls, in ms, with its TFLOP/s. Every variant's result is
checked against the fp32 one-GEMM product (fp32: 1e-4, TF32: 1e-2 of the largest value); the script exits 1 on
a mismatch.

    python -m benchmarks.gpu.probe_gemm      # on a machine with a CUDA device and cupy

Without a usable GPU it prints one line saying what is missing and exits 0.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from benchmarks.gpu.probe_conv import SHAPES

CHUNKS = (1, 4, 8, 16, 32, 64, 128)


def main() -> int:
    from benchmarks.compare_cpu import conclude
    from benchmarks.gpu._probe import ms, unavailable

    if unavailable("probe_gemm"):
        return 0
    import cupy as cp

    from minigrad.kernels import cupy_ops as co

    gemm = co._runtime().matmul
    default = co.LAUNCH

    failures = []

    def check(what, got, want, tol):
        err = float(cp.abs(got - want).max() / max(1e-30, float(cp.abs(want).max())))
        if not err < tol:
            failures.append(f"{what}: differs from the fp32 GEMM by {err:.2e} of its largest value")
        return err

    for name, (N, C, H, W, F, K) in SHAPES.items():
        rng = np.random.default_rng(0)
        P = (H - K + 1) * (W - K + 1)
        CKK = C * K * K
        cols = cp.asarray(rng.standard_normal((CKK, N * P), dtype=np.float32))
        w2 = cp.asarray(rng.standard_normal((F, CKK), dtype=np.float32))
        dout = cp.asarray(rng.standard_normal((F, N * P), dtype=np.float32))
        gflop = 2 * F * CKK * N * P / 1e9
        line = []

        def timed(label, fn, want, tol):
            err = check(f"{name} {label}", fn(), want, tol)
            t = ms(fn)
            line.append(f"{label} {t:.3f} ms ({gflop / t:.0f} TF/s, err {err:.0e})")
            return t

        for tf32 in (False, True):
            tag = "tf32" if tf32 else "fp32"
            timed(f"fwd {tag}", lambda: gemm(w2, cols, tf32=tf32), gemm(w2, cols), 1e-2 if tf32 else 1e-4)
            per_image = cols.reshape(CKK, N, P).transpose(1, 0, 2)
            w_batch = cp.broadcast_to(w2, (N, F, CKK))
            want_nchw = gemm(w2, cols).reshape(F, N, P).transpose(1, 0, 2)
            timed(f"fwd per-image NCHW {tag}", lambda: gemm(w_batch, per_image, tf32=tf32), want_nchw,
                  1e-2 if tf32 else 1e-4)
            timed(f"dcols {tag}", lambda: gemm(w2.T, dout, tf32=tf32), gemm(w2.T, dout), 1e-2 if tf32 else 1e-4)
            want_dw = gemm(dout, cols.T)
            picked = default.split_k(F, CKK, N * P)
            for chunks in CHUNKS:
                co.LAUNCH = dataclasses.replace(default, split_k_chunks=chunks, split_k_min=1)
                mark = "*" if chunks == picked else ""
                timed(f"dW {tag} split {chunks}{mark}", lambda: co.split_k_gemm(dout, cols.T, tf32=tf32), want_dw,
                      1e-2 if tf32 else 1e-4)
            co.LAUNCH = default
        print(f"{name} (one GEMM {gflop:.1f} GFLOP):\n  " + "\n  ".join(line), flush=True)
    return conclude(failures, "every variant equals the fp32 GEMM (fp32 1e-4, TF32 1e-2 of the largest value)")


if __name__ == "__main__":
    sys.exit(main())
