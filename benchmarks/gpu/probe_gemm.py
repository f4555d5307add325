"""conv2d's three GEMMs on the GPU, each way they can be run, timed with CUDA events.

For convnet's and lenet5's convolutions at large batches, in IEEE fp32 and with TF32 allowed (``tf32=True``):

- the backend's way (marked ``*``), batches of per-image GEMMs on per-image column blocks (N, CKK, P) and dY
  as it stands (N, F, P): forward W @ cols[n], input gradient W^T @ dY[n], weight gradient dY[n] @ cols[n]^T
  then the sum of the N products (``cupy_ops.channel_sums``);
- the way it replaced: one GEMM each over the columns as (CKK, N*P) and dY as (F, N*P) (which cost a layout
  pass on each side of the GEMMs, not timed here), the weight gradient also split along K = N*P into 8..128
  slices (a strided batch over the slices, then their sum).

Each figure is the mean of 10 calls after 2 warm-up calls, in ms, with its TFLOP/s. Every variant's result is
checked against the fp32 one-GEMM product (fp32: 1e-4, TF32: 1e-2 of the largest value); the script exits 1 on
a mismatch.

    python -m benchmarks.gpu.probe_gemm      # on a machine with a CUDA device and cupy

Without a usable GPU it prints one line saying what is missing and exits 0.
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.gpu.probe_conv import SHAPES

CHUNKS = (8, 32, 128)


def main() -> int:
    from benchmarks.compare_cpu import conclude
    from benchmarks.gpu._probe import ms, unavailable

    if unavailable("probe_gemm"):
        return 0
    import cupy as cp

    from minigrad.kernels import cupy_ops as co

    gemm = co._runtime().matmul

    def split_k(a, b, chunks, tf32):
        """a (m, K) @ b (K, n) as a strided batch of GEMMs over ``chunks`` slices of K (K divisible), summed."""
        (m, K), n = a.shape, b.shape[1]
        L = K // chunks
        a_chunks = cp.lib.stride_tricks.as_strided(a, (chunks, m, L), (L * a.strides[1], *a.strides))
        b_chunks = cp.lib.stride_tricks.as_strided(b, (chunks, L, n), (L * b.strides[0], *b.strides))
        return co.channel_sums(gemm(a_chunks, b_chunks, tf32=tf32), chunks, m * n, 1).reshape(m, n)

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
        cols = cp.asarray(rng.standard_normal((N, CKK, P), dtype=np.float32))  # the backend's layouts
        dy = cp.asarray(rng.standard_normal((N, F, P), dtype=np.float32))
        w2 = cp.asarray(rng.standard_normal((F, CKK), dtype=np.float32))
        cols_flat = cp.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(CKK, N * P)  # the replaced ones
        dy_flat = cp.ascontiguousarray(dy.transpose(1, 0, 2)).reshape(F, N * P)
        w_batch, wt_batch = cp.broadcast_to(w2, (N, F, CKK)), cp.broadcast_to(w2.T, (N, CKK, F))
        gflop = 2 * F * CKK * N * P / 1e9
        line = []

        def timed(label, fn, want, tol):
            err = check(f"{name} {label}", fn(), want, tol)
            t = ms(fn)
            line.append(f"{label} {t:.3f} ms ({gflop / t:.0f} TF/s, err {err:.0e})")

        want_y = gemm(w2, cols_flat).reshape(F, N, P).transpose(1, 0, 2)
        want_dcols = gemm(w2.T, dy_flat).reshape(CKK, N, P).transpose(1, 0, 2)
        want_dw = gemm(dy_flat, cols_flat.T)
        for tf32 in (False, True):
            tag, tol = ("tf32", 1e-2) if tf32 else ("fp32", 1e-4)
            timed(f"fwd {tag} per-image*", lambda: gemm(w_batch, cols, tf32=tf32), want_y, tol)
            timed(f"fwd {tag} one GEMM", lambda: gemm(w2, cols_flat, tf32=tf32).reshape(F, N, P).transpose(1, 0, 2),
                  want_y, tol)
            timed(f"dcols {tag} per-image*", lambda: gemm(wt_batch, dy, tf32=tf32), want_dcols, tol)
            timed(f"dcols {tag} one GEMM", lambda: gemm(w2.T, dy_flat, tf32=tf32).reshape(CKK, N, P).transpose(1, 0, 2),
                  want_dcols, tol)
            timed(f"dW {tag} per-image + sum*",
                  lambda: co.channel_sums(gemm(dy, cols.transpose(0, 2, 1), tf32=tf32), N, F * CKK, 1).reshape(F, CKK),
                  want_dw, tol)
            timed(f"dW {tag} one GEMM", lambda: gemm(dy_flat, cols_flat.T, tf32=tf32), want_dw, tol)
            for chunks in CHUNKS:
                if (N * P) % chunks == 0:
                    timed(f"dW {tag} split {chunks}", lambda: split_k(dy_flat, cols_flat.T, chunks, tf32), want_dw, tol)
        print(f"{name} (one GEMM {gflop:.1f} GFLOP):\n  " + "\n  ".join(line), flush=True)
    return conclude(failures, "every variant equals the fp32 GEMM (fp32 1e-4, TF32 1e-2 of the largest value)")


if __name__ == "__main__":
    sys.exit(main())
