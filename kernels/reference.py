"""The oracle: every kernel of the contract written as plain loops, slow and obviously right.

Every other backend is tested against this module, forward and backward. Nothing here is vectorized beyond
a dot product over one window, so that a reader can check each formula against its textbook definition.
Conventions: layout NCHW; forward returns ``(out, cache)``; backward takes ``(dout, cache)`` and returns the
gradients in input order (``None`` for an absent bias).
"""

from __future__ import annotations

import math

import numpy as np

from . import _checks
from ._host import asarray, synchronize, to_numpy, zeros  # noqa: F401  (array plumbing of the contract)

MASK64 = (1 << 64) - 1


# ----------------------------------------------------------------------------------------------------------
# conv2d


def conv2d_forward(x, w, b, stride, padding):
    """y[n, f, i, j] = b[f] + sum_{c, kh, kw} xpad[n, c, i*s + kh, j*s + kw] * w[f, c, kh, kw].

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) or None -> y: (N, F, OH, OW).
    cache: (x, w, has_bias, stride, padding).
    """
    N, C, H, W, F, KH, KW, OH, OW = _checks.check_conv2d(x, w, b, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((N, F, OH, OW), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    window = xp[n, :, i * stride:i * stride + KH, j * stride:j * stride + KW]
                    y[n, f, i, j] = np.sum(window * w[f]) + (b[f] if b is not None else 0)
    return y, (x, w, b is not None, stride, padding)


def conv2d_backward(dy, cache, need_dx=True):
    """dx, dw, db of conv2d by scattering each output's gradient back over its window. ``need_dx=False`` (the
    input needs no gradient, e.g. a first layer): dx is not computed and comes back None."""
    _checks.check_flag("conv2d_backward", "need_dx", need_dx)
    x, w, has_bias, stride, padding = cache
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    _, _, OH, OW = dy.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for n in range(N):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    g = dy[n, f, i, j]
                    hs, ws = i * stride, j * stride
                    if need_dx:
                        dxp[n, :, hs:hs + KH, ws:ws + KW] += g * w[f]
                    dw[f] += g * xp[n, :, hs:hs + KH, ws:ws + KW]
    dx = dxp[:, :, padding:padding + H, padding:padding + W].copy() if need_dx else None
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


# ----------------------------------------------------------------------------------------------------------
# maxpool2d


def maxpool2d_forward(x, kernel, stride):
    """y[n, c, i, j] = max of the kernel x kernel window at (i*stride, j*stride). Floor mode, no padding.

    x: (N, C, H, W) -> y: (N, C, OH, OW). cache: (x shape, argmax row, argmax col, dtype).
    Ties: the gradient goes to the FIRST maximum in row-major window order (like a strict ``>`` scan).
    NaN counts as the maximum (the first NaN of a window), as in NumPy's argmax and PyTorch.
    """
    N, C, H, W, OH, OW = _checks.check_maxpool2d(x, kernel, stride)
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    arg_r = np.zeros((N, C, OH, OW), dtype=np.int64)
    arg_c = np.zeros((N, C, OH, OW), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best, br, bc = -math.inf, 0, 0
                    for r in range(kernel):
                        for q in range(kernel):
                            v = x[n, c, i * stride + r, j * stride + q]
                            # strict: an equal later value does not take over; a NaN wins (and stays),
                            # so a diverged run keeps its NaN all the way to the loss
                            if v > best or (v != v and best == best):
                                best, br, bc = v, r, q
                    y[n, c, i, j] = best
                    arg_r[n, c, i, j] = i * stride + br
                    arg_c[n, c, i, j] = j * stride + bc
    return y, (x.shape, arg_r, arg_c, x.dtype)


def maxpool2d_backward(dy, cache):
    """dx: each output's gradient lands on its window's (first) maximum; overlapping windows add."""
    shape, arg_r, arg_c, dtype = cache
    dx = np.zeros(shape, dtype=dtype)
    N, C, OH, OW = dy.shape
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    dx[n, c, arg_r[n, c, i, j], arg_c[n, c, i, j]] += dy[n, c, i, j]
    return dx


# ----------------------------------------------------------------------------------------------------------
# relu + maxpool2d (a fused kernel; its reference is the composition in a model's layer order)


def relu_maxpool2d_forward(x, kernel, stride):
    """maxpool2d(relu(x)): (N, C, H, W) -> (N, C, OH, OW). cache: the two kernels' caches."""
    _checks.check_maxpool2d(x, kernel, stride, "relu_maxpool2d")
    r, relu_cache = relu_forward(x)
    y, pool_cache = maxpool2d_forward(r, kernel, stride)
    return y, (relu_cache, pool_cache)


def relu_maxpool2d_backward(dy, cache):
    relu_cache, pool_cache = cache
    return relu_backward(maxpool2d_backward(dy, pool_cache), relu_cache)


# ----------------------------------------------------------------------------------------------------------
# linear


def linear_forward(x, w, b):
    """y[n, o] = b[o] + sum_i x[n, i] * w[o, i].  x: (N, IN), w: (OUT, IN), b: (OUT,) or None.

    cache: (x, w, has_bias).
    """
    N, IN, OUT = _checks.check_linear(x, w, b)
    y = np.zeros((N, OUT), dtype=x.dtype)
    for n in range(N):
        for o in range(OUT):
            y[n, o] = np.dot(x[n], w[o]) + (b[o] if b is not None else 0)
    return y, (x, w, b is not None)


def linear_backward(dy, cache, need_dx=True):
    """dx (None with ``need_dx=False``), dw, db of y = x w^T + b."""
    _checks.check_flag("linear_backward", "need_dx", need_dx)
    x, w, has_bias = cache
    N, IN = x.shape
    OUT = w.shape[0]
    dx = np.zeros_like(x) if need_dx else None
    dw = np.zeros_like(w)
    for n in range(N):
        for o in range(OUT):
            if need_dx:
                dx[n] += dy[n, o] * w[o]
            dw[o] += dy[n, o] * x[n]
    db = dy.sum(axis=0) if has_bias else None
    return dx, dw, db


# ----------------------------------------------------------------------------------------------------------
# relu


def relu_forward(x):
    """y = max(x, 0) elementwise, NaN passing through. cache: x. The gradient at exactly 0 is 0 (PyTorch's
    choice)."""
    _checks.check_float("relu", "x", x)
    y = np.empty_like(x)
    flat_x, flat_y = x.reshape(-1), y.reshape(-1)
    for i in range(flat_x.size):
        flat_y[i] = 0 if flat_x[i] <= 0 else flat_x[i]  # NaN <= 0 is False: NaN propagates
    return y, x


def relu_backward(dy, cache):
    x = cache
    dx = np.empty_like(dy)
    flat_x, flat_d, flat_dx = x.reshape(-1), dy.reshape(-1), dx.reshape(-1)
    for i in range(flat_x.size):
        flat_dx[i] = flat_d[i] if flat_x[i] > 0 else 0
    return dx


# ----------------------------------------------------------------------------------------------------------
# log_softmax


def log_softmax_forward(x):
    """y[n, c] = x[n, c] - log(sum_k exp(x[n, k])), computed max-subtracted. x: (N, C). cache: y."""
    _checks.check_logits("log_softmax", x)
    y = np.empty_like(x)
    for n in range(x.shape[0]):
        m = max(x[n])
        s = sum(math.exp(v - m) for v in x[n])
        for c in range(x.shape[1]):
            y[n, c] = x[n, c] - m - math.log(s)
    return y, y


def log_softmax_backward(dy, cache):
    """dx[n, c] = dy[n, c] - softmax[n, c] * sum_k dy[n, k]."""
    y = cache
    dx = np.empty_like(dy)
    for n in range(y.shape[0]):
        total = sum(dy[n])
        for c in range(y.shape[1]):
            dx[n, c] = dy[n, c] - math.exp(y[n, c]) * total
    return dx


# ----------------------------------------------------------------------------------------------------------
# softmax + cross-entropy (fused: the backward is simply probs - onehot)


def softmax_xent_forward(logits, targets):
    """loss = mean_n [ log(sum_c exp(z[n, c])) - z[n, t[n]] ], z = logits max-subtracted per row.

    logits: (N, C) float, targets: (N,) integer in [0, C) -> loss: 0-d array of logits' dtype.
    cache: (softmax probabilities (N, C), targets).
    """
    _checks.check_xent(logits, targets)
    N, C = logits.shape
    probs = np.empty_like(logits)
    total = 0.0
    for n in range(N):
        m = max(logits[n])
        s = sum(math.exp(v - m) for v in logits[n])
        for c in range(C):
            probs[n, c] = math.exp(logits[n, c] - m) / s
        total += math.log(s) - (logits[n, targets[n]] - m)
    return np.asarray(total / N, dtype=logits.dtype), (probs, targets)


def softmax_xent_backward(dloss, cache):
    """dlogits[n, c] = dloss * (probs[n, c] - [c == t[n]]) / N."""
    probs, targets = cache
    N, C = probs.shape
    dlogits = np.empty_like(probs)
    for n in range(N):
        for c in range(C):
            dlogits[n, c] = float(dloss) * (probs[n, c] - (1.0 if c == targets[n] else 0.0)) / N
    return dlogits


# ----------------------------------------------------------------------------------------------------------
# dropout (inverted: kept units are scaled by 1/(1-p) at training time, inference is the identity)


def uniform_from_seed(seed: int, i: int) -> float:
    """The i-th uniform in [0, 1) of the stream ``seed``: splitmix64 of a counter, top 24 bits.

    Counter-based, so every backend (NumPy, Numba, CUDA) draws the same mask from the same seed without
    sharing generator state, and each element is independent of launch geometry.
    """
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return (z >> 40) * 2.0**-24


def dropout_forward(x, p, seed):
    """y = x * keep / (1 - p), keep[i] = uniform(seed, i) >= p (flat C-order index i).

    x: any shape, float. p in [0, 1]; p == 1 drops everything. cache: the scaled mask (x's shape and dtype).
    """
    _checks.check_dropout(x, p)
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    mask = np.empty_like(x)
    flat = mask.reshape(-1)
    for i in range(flat.size):
        flat[i] = scale if uniform_from_seed(int(seed), i) >= p else 0.0
    return x * mask, mask


def dropout_backward(dy, cache):
    return dy * cache


# ----------------------------------------------------------------------------------------------------------
# batchnorm2d


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """Per-channel normalisation over (N, H, W).

    Training: batch mean and biased variance normalise; running stats move by ``momentum`` towards the batch
    mean and the *unbiased* variance (PyTorch's convention), in place. Inference: running stats normalise.
    x: (N, C, H, W), gamma/beta/running_*: (C,). cache: (xhat, gamma, inv_std, training).
    """
    C = _checks.check_batchnorm2d(x, gamma, beta, running_mean, running_var)
    N, _, H, W = x.shape
    m = N * H * W
    y = np.empty_like(x)
    xhat = np.empty_like(x)
    inv_std = np.empty(C, dtype=x.dtype)
    for c in range(C):
        vals = x[:, c].reshape(-1)
        if training:
            mean = sum(float(v) for v in vals) / m
            var = sum((float(v) - mean) ** 2 for v in vals) / m
            running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean
            unbiased = var * m / (m - 1) if m > 1 else var
            running_var[c] = (1 - momentum) * running_var[c] + momentum * unbiased
        else:
            mean, var = float(running_mean[c]), float(running_var[c])
        inv_std[c] = 1.0 / math.sqrt(var + eps)
        xhat[:, c] = (x[:, c] - mean) * inv_std[c]
        y[:, c] = gamma[c] * xhat[:, c] + beta[c]
    return y, (xhat, gamma, inv_std, training)


def batchnorm2d_backward(dy, cache):
    """Training: dx = gamma*inv_std/m * (m*dy - sum(dy) - xhat*sum(dy*xhat)); inference: dy*gamma*inv_std."""
    xhat, gamma, inv_std, training = cache
    N, C, H, W = dy.shape
    m = N * H * W
    dx = np.empty_like(dy)
    dgamma = np.zeros(C, dtype=dy.dtype)
    dbeta = np.zeros(C, dtype=dy.dtype)
    for c in range(C):
        d = dy[:, c]
        xh = xhat[:, c]
        dbeta[c] = sum(float(v) for v in d.reshape(-1))
        dgamma[c] = sum(float(a) * float(b) for a, b in zip(d.reshape(-1), xh.reshape(-1)))
        if training:
            dx[:, c] = gamma[c] * inv_std[c] / m * (m * d - dbeta[c] - xh * dgamma[c])
        else:
            dx[:, c] = d * gamma[c] * inv_std[c]
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------------------------------------
# optimizers (in place)


def sgd_update(p, g, buf, lr, momentum, nesterov, weight_decay):
    """PyTorch's SGD: d = g + wd*p; buf = momentum*buf + d; d = d + momentum*buf if nesterov else buf;
    p -= lr*d. ``buf`` may be None when momentum == 0. Updates p (and buf) in place; g is not modified."""
    _checks.check_update("sgd_update", p, g, buf=buf)
    fp, fg = p.reshape(-1), g.reshape(-1)
    fb = buf.reshape(-1) if buf is not None else None
    for i in range(fp.size):
        d = fg[i] + weight_decay * fp[i]
        if momentum != 0:
            fb[i] = momentum * fb[i] + d
            d = d + momentum * fb[i] if nesterov else fb[i]
        fp[i] = fp[i] - lr * d


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """PyTorch's Adam (L2 weight decay added to the gradient), bias-corrected with ``step`` (1-based)."""
    _checks.check_update("adam_update", p, g, m=m, v=v)
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    fp, fg, fm, fv = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
    for i in range(fp.size):
        d = fg[i] + weight_decay * fp[i]
        fm[i] = beta1 * fm[i] + (1 - beta1) * d
        fv[i] = beta2 * fv[i] + (1 - beta2) * d * d
        fp[i] = fp[i] - lr * (fm[i] / bc1) / (math.sqrt(fv[i] / bc2) + eps)
