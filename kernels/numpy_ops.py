"""Vectorized NumPy backend: strided views + one BLAS GEMM per conv, no Python loop over the batch.

Same names, shapes and caches' meaning as ``reference.py``; tests/kernels/test_ops.py holds both to each
other. Loops that remain run over kernel offsets (KH*KW iterations), never over samples or pixels.
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _checks, _fused, _host
from ._host import asarray, synchronize, to_numpy, zeros  # noqa: F401  (array plumbing of the contract)


def activate() -> None:
    """Called by the backend dispatcher when this backend is selected: steps reuse the memory the previous
    step freed (``_host.keep_freed_memory``)."""
    _host.keep_freed_memory()


# ----------------------------------------------------------------------------------------------------------
# conv2d: im2col as one strided copy, then a single GEMM


def _pad(x, padding):
    if padding == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def im2col(x, KH, KW, stride, padding):
    """Patches of x as rows: (N*OH*OW, C*KH*KW), row (n, i, j), column (c, kh, kw).

    as_strided builds a (N, OH, OW, C, KH, KW) view of the padded input without copying; the reshape makes
    the one copy that BLAS needs (it wants a plain 2-D matrix). This copy is the conv's memory traffic: it
    is KH*KW times the input, which is what makes large batches spill out of cache.
    """
    xp = _pad(x, padding)
    N, C, Hp, Wp = xp.shape
    OH = (Hp - KH) // stride + 1
    OW = (Wp - KW) // stride + 1
    sN, sC, sH, sW = xp.strides
    win = as_strided(xp, (N, OH, OW, C, KH, KW), (sN, sH * stride, sW * stride, sC, sH, sW), writeable=False)
    return win.reshape(N * OH * OW, C * KH * KW)


def col2im(dcols, x_shape, KH, KW, stride, padding, OH, OW):
    """Adjoint of im2col: sum each patch gradient back into its input pixels.

    The columns are first laid out as (N, C, KH, KW, OH, OW) in one copy, so that each of the KH*KW strided
    slice-adds below reads contiguous rows (adding from the (N, OH, OW, C) view directly was up to 1.9x slower
    for C=1, where every element is its own stride).
    """
    N, C, H, W = x_shape
    d = _cols_to_planes(dcols, N, C, KH, KW, OH, OW)
    dxp = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=dcols.dtype)
    for kh in range(KH):
        for kw in range(KW):
            _add_shifted(dxp, d, kh, kw, stride, OH, OW)
    if padding:
        return np.ascontiguousarray(dxp[:, :, padding:padding + H, padding:padding + W])
    return dxp


def _cols_to_planes(dcols, N, C, KH, KW, OH, OW):
    """col2im's one copy: the (N*OH*OW, C*KH*KW) columns as (N, C, KH, KW, OH, OW), rows of OW."""
    return np.ascontiguousarray(dcols.reshape(N, OH, OW, C, KH, KW).transpose(0, 3, 4, 5, 1, 2))


def _add_shifted(dxp, d, kh, kw, stride, OH, OW):
    """col2im's slice-add of patch position (kh, kw): its (N, C, OH, OW) plane onto the pixels it came from."""
    dxp[:, :, kh:kh + stride * (OH - 1) + 1:stride, kw:kw + stride * (OW - 1) + 1:stride] += d[:, :, kh, kw]


def conv2d_forward(x, w, b, stride, padding):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) or None -> y: (N, F, OH, OW).

    cache: (im2col matrix, w, x shape, has_bias, stride, padding). Keeping the columns trades memory
    (KH*KW x the input) for not rebuilding them in the backward, where dW needs them.
    """
    N, C, H, W, F, KH, KW, OH, OW = _checks.check_conv2d(x, w, b, stride, padding)
    cols = im2col(x, KH, KW, stride, padding)
    y = _gemm_out_to_nchw(cols @ w.reshape(F, -1).T, b, N, OH, OW)  # (N*OH*OW, F): the one GEMM
    return y, (cols, w, x.shape, b is not None, stride, padding)


def _gemm_out_to_nchw(out, b, N, OH, OW):
    """The GEMM's (N*OH*OW, F) rows as an (N, F, OH, OW) array, the bias added first (in place)."""
    if b is not None:
        out += b
    return np.ascontiguousarray(out.reshape(N, OH, OW, out.shape[1]).transpose(0, 3, 1, 2))


def _nchw_to_gemm_in(dy):
    """dy (N, F, OH, OW) as the (N*OH*OW, F) rows the backward GEMMs read (one transposing copy)."""
    N, F, OH, OW = dy.shape
    return dy.transpose(0, 2, 3, 1).reshape(N * OH * OW, F)


def conv2d_backward(dy, cache, need_dx=True):
    """dW = dY^T cols, dcols = dY W, dx = col2im(dcols) (None, skipped, with ``need_dx=False``), db = sum of dY
    over (N, OH, OW)."""
    _checks.check_flag("conv2d_backward", "need_dx", need_dx)
    cols, w, x_shape, has_bias, stride, padding = cache
    F, C, KH, KW = w.shape
    N, _, OH, OW = dy.shape
    dout = _nchw_to_gemm_in(dy)
    dw = (dout.T @ cols).reshape(w.shape)
    dx = col2im(dout @ w.reshape(F, -1), x_shape, KH, KW, stride, padding, OH, OW) if need_dx else None
    db = dout.sum(axis=0) if has_bias else None
    return dx, dw, db


# ----------------------------------------------------------------------------------------------------------
# maxpool2d


def _pool_windows(x, kernel, stride, OH, OW):
    """(N, C, OH, OW, kernel*kernel) copy of the windows, row-major within a window."""
    N, C = x.shape[:2]
    if stride == kernel:  # non-overlapping: a reshape of the cropped input, no strided gather needed
        xr = x[:, :, :OH * kernel, :OW * kernel].reshape(N, C, OH, kernel, OW, kernel)
        return xr.transpose(0, 1, 2, 4, 3, 5).reshape(N, C, OH, OW, kernel * kernel)
    sN, sC, sH, sW = x.strides
    win = as_strided(x, (N, C, OH, OW, kernel, kernel), (sN, sC, sH * stride, sW * stride, sH, sW),
                     writeable=False)
    return win.reshape(N, C, OH, OW, kernel * kernel)


def maxpool2d_forward(x, kernel, stride):
    """x: (N, C, H, W) -> y: (N, C, OH, OW), floor mode. cache: (argmax within window, x shape, ...).

    Ties: argmax returns the first maximum in row-major window order, so the gradient goes there (the same
    rule as reference.py).
    """
    N, C, H, W, OH, OW = _checks.check_maxpool2d(x, kernel, stride)
    win = _pool_windows(x, kernel, stride, OH, OW)
    arg = win.argmax(axis=-1)
    y = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    return y, (arg, x.shape, x.dtype, kernel, stride)


def maxpool2d_backward(dy, cache):
    arg, x_shape, dtype, kernel, stride = cache
    N, C, H, W = x_shape
    _, _, OH, OW = dy.shape
    dwin = np.zeros((N, C, OH, OW, kernel * kernel), dtype=dtype)
    np.put_along_axis(dwin, arg[..., None], dy[..., None], axis=-1)
    dx = np.zeros(x_shape, dtype=dtype)
    if stride == kernel:
        dx[:, :, :OH * kernel, :OW * kernel] = (
            dwin.reshape(N, C, OH, OW, kernel, kernel).transpose(0, 1, 2, 4, 3, 5)
            .reshape(N, C, OH * kernel, OW * kernel))
        return dx
    dwin = dwin.reshape(N, C, OH, OW, kernel, kernel)
    for r in range(kernel):  # overlapping windows: one strided add per window offset
        for q in range(kernel):
            dx[:, :, r:r + stride * (OH - 1) + 1:stride, q:q + stride * (OW - 1) + 1:stride] += dwin[..., r, q]
    return dx


# ----------------------------------------------------------------------------------------------------------
# relu + maxpool2d, fused: the relu on the pooled output (kernels/_fused.py)


def relu_maxpool2d_forward(x, kernel, stride):
    """maxpool2d(relu(x)) as relu after the pool. cache: the pool's and the relu's."""
    return _fused.relu_maxpool2d_forward(sys.modules[__name__], x, kernel, stride)


def relu_maxpool2d_backward(dy, cache):
    return _fused.relu_maxpool2d_backward(sys.modules[__name__], dy, cache)


# ----------------------------------------------------------------------------------------------------------
# linear


def linear_forward(x, w, b):
    """x: (N, IN), w: (OUT, IN), b: (OUT,) or None -> y = x w^T + b: (N, OUT). cache: (x, w, has_bias)."""
    _checks.check_linear(x, w, b)
    y = x @ w.T
    if b is not None:
        y += b
    return y, (x, w, b is not None)


def linear_backward(dy, cache, need_dx=True):
    """dx = dy w (None with ``need_dx=False``), dw = dy^T x, db = the column sums of dy."""
    _checks.check_flag("linear_backward", "need_dx", need_dx)
    x, w, has_bias = cache
    return (dy @ w if need_dx else None), dy.T @ x, (dy.sum(axis=0) if has_bias else None)


# ----------------------------------------------------------------------------------------------------------
# relu


def relu_forward(x):
    """y = max(x, 0). cache: y (y > 0 exactly where x > 0, so y serves the backward and x can be freed)."""
    _checks.check_float("relu", "x", x)
    y = np.maximum(x, 0)
    return y, y


def relu_backward(dy, cache):
    """dx = dy where y > 0, else 0, as a bit mask over dy's bits: a select without branches. np.where's time
    depends on the mask's pattern (4.5 ms on a random mask of 884,736 elements against 0.8 ms on a sorted
    one); the mask costs 0.9 ms on either, and is exact (+0.0 where y <= 0 or y is NaN)."""
    ints = np.dtype(f"i{dy.itemsize}")
    keep = (cache > 0).astype(ints)
    np.negative(keep, out=keep)  # all bits set where y > 0
    return (np.ascontiguousarray(dy).view(ints) & keep).view(dy.dtype)


# ----------------------------------------------------------------------------------------------------------
# log_softmax


def log_softmax_forward(x):
    """x: (N, C) -> x - logsumexp(x) row-wise, max-subtracted. cache: y."""
    _checks.check_logits("log_softmax", x)
    z = x - x.max(axis=1, keepdims=True)
    y = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return y, y


def log_softmax_backward(dy, cache):
    return dy - np.exp(cache) * dy.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------------------
# softmax + cross-entropy


def softmax_xent_forward(logits, targets):
    """logits: (N, C), targets: (N,) int -> mean cross-entropy (0-d). cache: (probs, targets)."""
    _checks.check_xent(logits, targets)
    N = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1)
    rows = np.arange(N)
    loss = (np.log(s) - z[rows, targets]).mean()
    probs = e / s[:, None]
    return np.asarray(loss, dtype=logits.dtype), (probs, targets)


def softmax_xent_backward(dloss, cache):
    probs, targets = cache
    N = probs.shape[0]
    d = probs.copy()
    d[np.arange(N), targets] -= 1
    d *= np.asarray(dloss, dtype=probs.dtype) / N
    return d


# ----------------------------------------------------------------------------------------------------------
# dropout


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def uniform_from_seed(seed: int, n: int) -> np.ndarray:
    """The first n uniforms of the counter-based stream ``seed`` (see reference.uniform_from_seed), float64."""
    z = np.uint64(seed) + (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)  # uint64 arithmetic wraps
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)).astype(np.float64) * 2.0**-24


def dropout_forward(x, p, seed):
    """y = x * mask, mask = (u >= p) / (1 - p) with u from ``seed``. cache: mask."""
    _checks.check_dropout(x, p)
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    keep = uniform_from_seed(seed, x.size).reshape(x.shape) >= p
    mask = keep.astype(x.dtype) * x.dtype.type(scale)
    return x * mask, mask


def dropout_backward(dy, cache):
    return dy * cache


# ----------------------------------------------------------------------------------------------------------
# batchnorm2d


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """x: (N, C, H, W) -> gamma * xhat + beta. Running stats updated in place when training (unbiased var).

    cache: (xhat, gamma, inv_std, training).
    """
    _checks.check_batchnorm2d(x, gamma, beta, running_mean, running_var)
    N, C, H, W = x.shape
    if training:
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
        m = N * H * W
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (m / (m - 1) if m > 1 else 1.0)
    else:
        mean, var = running_mean, running_var
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    xhat = (x - mean[None, :, None, None].astype(x.dtype)) * inv_std[None, :, None, None]
    y = xhat * gamma[None, :, None, None] + beta[None, :, None, None]
    return y, (xhat, gamma, inv_std, training)


def batchnorm2d_backward(dy, cache):
    xhat, gamma, inv_std, training = cache
    N, C, H, W = dy.shape
    dbeta = dy.sum(axis=(0, 2, 3))
    dgamma = (dy * xhat).sum(axis=(0, 2, 3))
    scale = (gamma * inv_std)[None, :, None, None]
    if not training:
        return dy * scale, dgamma, dbeta
    m = N * H * W
    dx = scale / m * (m * dy - dbeta[None, :, None, None] - xhat * dgamma[None, :, None, None])
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------------------------------------
# optimizers (in place; each line is one pass over the parameter)


def sgd_update(p, g, buf, lr, momentum, nesterov, weight_decay):
    """PyTorch's SGD (see reference.sgd_update). p and buf are updated in place; g is left as it was."""
    _checks.check_update("sgd_update", p, g, buf=buf)
    d = g + weight_decay * p if weight_decay else g
    if momentum:
        buf *= momentum
        buf += d
        d = d + momentum * buf if nesterov else buf
    p -= lr * d


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """PyTorch's Adam with bias correction (see reference.adam_update). p, m, v updated in place."""
    _checks.check_update("adam_update", p, g, m=m, v=v)
    d = g + weight_decay * p if weight_decay else g
    m *= beta1
    m += (1 - beta1) * d
    v *= beta2
    v += (1 - beta2) * (d * d)
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    p -= (lr / bc1) * m / (np.sqrt(v / bc2) + eps)
