"""im2col / col2im, the data movement inside the GEMM convolution, for backends that expose them (today
numpy_ops; a backend that does not is skipped). Signatures are numpy_ops's:
``im2col(x, KH, KW, stride, padding) -> cols (N*OH*OW, C*KH*KW)`` (row (n, i, j), column (c, kh, kw)) and
``col2im(dcols, x_shape, KH, KW, stride, padding, OH, OW) -> dx``, its adjoint.

The reference has no im2col (it is an implementation device of the fast convolutions, not part of the
contract), so the oracle is the plain loop below, run on the first samples: rows n*OH*OW.. belong to
sample n alone, in both directions. profiling.costs has no formula for pure data movement either; the
costs below count the same way: every byte read and written once, one add per column element in col2im.
"""

import functools

import numpy as np
import pytest

from benchmarks.conftest import CHECK_SAMPLES, POOL, close_head, uniform
from minigrad import backend as B
from minigrad.profiling.costs import Cost

#: case -> (C, H, W, K): the input of the conv layer and its square kernel (stride 1, no padding)
CASES = {"lenet5.conv2": (6, 12, 12, 5), "convnet.conv2": (32, 26, 26, 3)}


def exposed(name):
    fn = getattr(B.backend_module(), name, None)
    if fn is None:
        pytest.skip(f"backend {B.get_backend()!r} does not expose {name}")
    return fn


def geometry(case):
    C, H, W, K = CASES[case]
    return C, H, W, K, H - K + 1, W - K + 1


@functools.lru_cache(maxsize=2)
def data(case, dtype):
    C, H, W, K, OH, OW = geometry(case)
    return uniform((POOL, C, H, W), dtype, "x"), uniform((POOL * OH * OW, C * K * K), dtype, "dcols")


@functools.lru_cache(maxsize=None)
def oracle(case, dtype):
    """cols and dx for the first CHECK_SAMPLES samples, by plain loops over output pixels."""
    C, H, W, K, OH, OW = geometry(case)
    x, dcols = data(case, dtype)
    cols = np.empty((CHECK_SAMPLES * OH * OW, C * K * K), dtype=dtype)
    dx = np.zeros((CHECK_SAMPLES, C, H, W), dtype=dtype)
    for s in range(CHECK_SAMPLES):
        for i in range(OH):
            for j in range(OW):
                row = (s * OH + i) * OW + j
                cols[row] = x[s, :, i:i + K, j:j + K].reshape(-1)
                dx[s, :, i:i + K, j:j + K] += dcols[row].reshape(C, K, K)
    return cols, dx


def cost(case, batch, dtype, adds):
    C, H, W, K, OH, OW = geometry(case)
    col = batch * OH * OW * C * K * K
    return Cost(col if adds else 0, np.dtype(dtype).itemsize * (batch * C * H * W + col))


def test_im2col(case, batch, bench, dtype):
    im2col = exposed("im2col")
    C, H, W, K, OH, OW = geometry(case)
    x = B.k.asarray(data(case, dtype)[0][:batch])
    cols = bench(lambda: im2col(x, K, K, 1, 0), op="im2col", case=case, batch=batch,
                 cost=cost(case, batch, dtype, adds=False))
    close_head(cols, oracle(case, dtype)[0], dtype, "cols")


def test_col2im(case, batch, bench, dtype):
    col2im = exposed("col2im")
    C, H, W, K, OH, OW = geometry(case)
    dcols = B.k.asarray(data(case, dtype)[1][:batch * OH * OW])
    dx = bench(lambda: col2im(dcols, (batch, C, H, W), K, K, 1, 0, OH, OW), op="col2im", case=case,
               batch=batch, cost=cost(case, batch, dtype, adds=True))
    close_head(dx, oracle(case, dtype)[1], dtype, "dx")
