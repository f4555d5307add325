"""Fused kernels that a backend builds from its own kernels.

relu_maxpool2d = maxpool2d after relu. Max commutes with relu (relu is non-decreasing), so the pair equals
relu after the pool, on the pooled output: K*K times fewer elements than the relu of a model's layer order
reads and writes, forward and backward. The gradient is the same too: a window whose maximum is positive
sends it to the same (first) maximum, and one whose maximum is not positive (or is NaN) sends nothing, as
relu's mask would after the pool's scatter. numpy_ops and cupy_ops run it this way; numba_ops folds the relu
into its pooling loops.
"""

from __future__ import annotations

from . import _checks


def relu_maxpool2d_forward(ops, x, kernel, stride):
    """relu(maxpool2d(x)) with the kernels of the backend module ``ops``. cache: both kernels' caches."""
    _checks.check_maxpool2d(x, kernel, stride, "relu_maxpool2d")
    y, pool_cache = ops.maxpool2d_forward(x, kernel, stride)
    y, relu_cache = ops.relu_forward(y)
    return y, (pool_cache, relu_cache)


def relu_maxpool2d_backward(ops, dy, cache):
    pool_cache, relu_cache = cache
    return ops.maxpool2d_backward(ops.relu_backward(dy, relu_cache), pool_cache)
