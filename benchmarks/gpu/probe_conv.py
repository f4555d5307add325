"""Each piece of the cupy backend's conv2d, timed with CUDA events next to cuDNN's whole forward + backward.

For the convolutions of convnet and lenet5 at large batches (where a step is bound by its work, not by
launches): im2col (with the bias's ones row), the three batches of per-image GEMMs, the sum of dW's per-image
products (which also gives the bias gradient) and col2im, each the mean of 10 calls after 2 warm-up calls,
in milliseconds; then PyTorch's conv2d forward + backward on the same arrays with
TF32 allowed (its default for cuDNN) and not. Before timing, the backend's forward and backward are checked
against PyTorch's (TF32 off, to 1e-3 of the largest value) and the script exits 1 on a mismatch.

    python -m benchmarks.gpu.probe_conv      # on a machine with a CUDA device, cupy and torch (CUDA)

Without a usable GPU it prints one line saying what is missing and exits 0.
"""

from __future__ import annotations

import sys

import numpy as np

#: name -> (N, C, H, W, F, K)
SHAPES = {"convnet.conv2 B=1024": (1024, 32, 26, 26, 64, 3), "convnet.conv2 B=4096": (4096, 32, 26, 26, 64, 3),
          "convnet.conv1 B=4096": (4096, 1, 28, 28, 32, 3), "lenet5.conv2 B=4096": (4096, 6, 12, 12, 16, 5)}


def main() -> int:
    from benchmarks.compare_cpu import conclude
    from benchmarks.gpu._probe import ms, unavailable

    if unavailable("probe_conv"):
        return 0
    import cupy as cp
    import torch

    from minigrad.kernels import cupy_ops as co

    gemm = co._runtime().matmul

    failures = []
    for name, (N, C, H, W, F, K) in SHAPES.items():
        rng = np.random.default_rng(0)
        x = cp.asarray(rng.standard_normal((N, C, H, W), dtype=np.float32))
        w = cp.asarray(rng.standard_normal((F, C, K, K), dtype=np.float32))
        b = cp.asarray(rng.standard_normal(F, dtype=np.float32))
        OH, OW = H - K + 1, W - K + 1
        P = OH * OW
        y, cache = co.conv2d_forward(x, w, b, 1, 0)
        dy = cp.asarray(rng.standard_normal(y.shape, dtype=np.float32))
        dx, dw, db = co.conv2d_backward(dy, cache)

        torch.backends.cudnn.allow_tf32 = False
        tx, tw, tb = (torch.as_tensor(a, device="cuda").requires_grad_() for a in (x, w, b))
        tdy = torch.as_tensor(dy, device="cuda")
        ty = torch.nn.functional.conv2d(tx, tw, tb)
        tdx, tdw, tdb = torch.autograd.grad(ty, (tx, tw, tb), tdy)
        for what, got, want in (("y", y, ty), ("dx", dx, tdx), ("dw", dw, tdw), ("db", db, tdb)):
            want = cp.asarray(want.detach())
            err = float(cp.abs(got - want).max() / max(1.0, float(cp.abs(want).max())))
            if not err < 1e-3:
                failures.append(f"{name}: {what} differs from PyTorch's by {err:.2e} of its largest value")

        cols = cache[0]
        R = cols.shape[1]
        w_aug = cp.broadcast_to(cp.concatenate((w.reshape(F, -1), b.reshape(F, 1)), axis=1), (N, F, R))
        wt = cp.broadcast_to(w.reshape(F, -1).T, (N, C * K * K, F))
        dy3 = dy.reshape(N, F, P)
        parts = gemm(dy3, cols.transpose(0, 2, 1))
        dcols = gemm(wt, dy3)
        t = {"forward": ms(lambda: co.conv2d_forward(x, w, b, 1, 0)),
             "backward": ms(lambda: co.conv2d_backward(dy, cache)),
             "im2col": ms(lambda: co.im2col_t(x, K, K, 1, 0, ones_rows=1)),
             "fwd gemm": ms(lambda: gemm(w_aug, cols)),
             "dW gemm": ms(lambda: gemm(dy3, cols.transpose(0, 2, 1))),
             "dW sum": ms(lambda: co.channel_sums(parts, N, F * R, 1)),
             "dcols gemm": ms(lambda: gemm(wt, dy3)),
             "col2im": ms(lambda: co.col2im_t(dcols, x.shape, K, K, 1, 0, OH, OW))}

        def torch_step():
            yy = torch.nn.functional.conv2d(tx, tw, tb)
            torch.autograd.grad(yy, (tx, tw, tb), tdy)

        for tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = tf32
            t[f"cuDNN fwd+bwd tf32={tf32}"] = ms(torch_step)
        flops = 2 * N * P * F * C * K * K
        print(f"{name}: " + "  ".join(f"{k} {v:.3f}" for k, v in t.items())
              + f"  (ms; one GEMM is {flops / 1e9:.1f} GFLOP: dW at {flops / t['dW gemm'] / 1e9:.1f} TFLOP/s)",
              flush=True)
    return conclude(failures, "forward and backward equal PyTorch's (fp32) to 1e-3 of the largest value")


if __name__ == "__main__":
    sys.exit(main())
