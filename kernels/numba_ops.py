"""Numba CPU backend: ``@njit(cache=True)`` kernels behind wrappers that validate and pick launch parameters.

Same names, shapes and cache meanings as ``reference.py`` (tests/kernels/test_ops.py holds every backend to
it). Each public wrapper validates through ``_checks``, makes its inputs C-contiguous (so each kernel is
compiled for one memory layout only) and then chooses how to run: which conv2d algorithm, how large an
im2col chunk, and whether the work is split over threads. Every choice is backed by
``benchmarks/race_numba_kernels.py``; the tunables sit together in ``numba_runtime.TUNING``.

How the kernels run (threads, the block split with single-threaded BLAS, the OpenMP wait policy, the
tunables) lives in ``numba_runtime.py``, whose docstring explains the thread design. ``activate()`` applies
the thread policy; the backend dispatcher calls it when this backend is selected, and ``warmup()`` does too.

Compile time. Kernels compile on first use and ``cache=True`` keeps the machine code on disk for later
processes; ``warmup()`` compiles everything up front and reports the seconds per kernel, so that compile
time is never counted as run time. Numba checks a cached kernel against its own file only, not against the
``numba_runtime`` code compiled into it (``gemm``'s BLAS call, ``block_bounds``): a change there must come
with a change to this file (or a touch of it), or kernels cached before it keep running the old code.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
from numba import njit, prange

from . import _checks, _host, numpy_ops
from ._host import asarray, synchronize, to_numpy, zeros  # noqa: F401  (array plumbing of the contract)
from .numba_runtime import (TUNING, OneBlasThread, apply_thread_policy, block_bounds, blocks, gemm, gemm_pointers,
                            gemm_run, parallel, pool_parallel)

# Reductions may be reordered (vectorised partial sums) and multiply-adds fused: both stay far inside the
# parity tolerances (1e-10 relative in float64, 1e-5 in float32). NaN/Inf semantics are kept (no 'fast').
_REDUCE_MATH = {"reassoc", "contract", "nsz"}


def _c(a):
    """C-contiguous view or copy: kernels are compiled for C layout only (one specialisation per dtype)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


# ----------------------------------------------------------------------------------------------------------
# activation and compilation


def activate() -> dict:
    """Prepare the process for this backend: apply the OpenMP thread policy (numba_runtime.apply_thread_policy)
    before Numba starts its pool, and make steps reuse the memory the previous step freed
    (``_host.keep_freed_memory``). Called by the backend dispatcher when this backend is selected; cheap and
    idempotent. Returns the variables it set."""
    _host.keep_freed_memory()
    return apply_thread_policy()


def warmup(dtypes=("float32",)) -> dict:
    """Compile every kernel for ``dtypes`` on tiny inputs; return {kernel name: first-call seconds}.

    Every compiled specialisation a wrapper can pick is called once per dtype (the direct conv2d kernels
    for 3x3 and 5x5 kernels, the models' sizes; another size compiles on first use). With ``cache=True`` a
    later process loads the machine code from kernels/__pycache__ instead, and the seconds reported drop
    to the loading time. Applies the thread policy first (activate()), as the first compile starts
    Numba's OpenMP pool.
    """
    apply_thread_policy()
    times: dict[str, float] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0
        return out

    for dtype in (np.dtype(d) for d in dtypes):
        if dtype not in _checks.FLOAT_DTYPES:
            raise ValueError(f"warmup: dtypes must be float32 or float64; got {dtype}")
        rng = np.random.default_rng(0)

        def r(*shape):
            return rng.standard_normal(shape).astype(dtype)

        # A parallel/serial choice is a runtime flag of one compiled kernel, so one call compiles both.
        # Separate specialisations: the direct conv kernels per kernel size (3x3 and 5x5, the models'; the
        # weight gradient where no dx is needed), the im2col path and Winograd's; the pooling kernels per (kernel,
        # stride).
        for x, w in ((r(2, 1, 8, 8), r(2, 1, 3, 3)), (r(2, 1, 8, 8), r(2, 1, 5, 5)), (r(2, 3, 6, 6), r(16, 3, 3, 3)),
                     (r(2, 16, 6, 6), r(16, 16, 3, 3))):
            y, cache = timed("conv2d_forward", conv2d_forward, x, w, r(w.shape[0]), 1, 0)
            timed("conv2d_backward", conv2d_backward, y, cache)
            timed("conv2d_backward", conv2d_backward, y, cache, False)
        for k, st in ((2, 2), (3, 2)):  # the models' pooling, and overlapping windows
            y, cache = timed("maxpool2d_forward", maxpool2d_forward, r(1, 2, 7, 7), k, st)
            timed("maxpool2d_backward", maxpool2d_backward, y, cache)
            y, cache = timed("relu_maxpool2d_forward", relu_maxpool2d_forward, r(1, 2, 7, 7), k, st)
            timed("relu_maxpool2d_backward", relu_maxpool2d_backward, y, cache)
        y, cache = timed("linear_forward", linear_forward, r(2, 3), r(4, 3), r(4))
        timed("linear_backward", linear_backward, y, cache)
        y, cache = timed("relu_forward", relu_forward, r(2, 3))
        timed("relu_backward", relu_backward, y, cache)
        y, cache = timed("log_softmax_forward", log_softmax_forward, r(2, 3))
        timed("log_softmax_backward", log_softmax_backward, y, cache)
        loss, cache = timed("softmax_xent_forward", softmax_xent_forward, r(2, 3), np.array([0, 2]))
        timed("softmax_xent_backward", softmax_xent_backward, loss, cache)
        y, cache = timed("dropout_forward", dropout_forward, r(2, 3), 0.5, 1)
        timed("dropout_backward", dropout_backward, y, cache)
        y, cache = timed("batchnorm2d_forward", batchnorm2d_forward, r(2, 3, 2, 2), r(3), r(3), r(3),
                         np.ones(3, dtype), True, 0.1, 1e-5)
        timed("batchnorm2d_backward", batchnorm2d_backward, y, cache)
        timed("sgd_update", sgd_update, r(3, 2), r(3, 2), r(3, 2), 0.1, 0.9, False, 0.0)
        timed("adam_update", adam_update, r(3, 2), r(3, 2), r(3, 2), r(3, 2) ** 2, 1, 1e-3, 0.9, 0.999, 1e-8,
              0.0)
    return times


# ----------------------------------------------------------------------------------------------------------
# conv2d: direct kernels for small stride-1 layers, im2col chunks + one BLAS GEMM per chunk for the others.
# Each kernel runs the batch as contiguous blocks of samples, one per thread on Numba's threads (a prange over
# the blocks, numba_runtime.blocks), every block with its own workspaces and single-threaded BLAS.
#
# Two things decide whether LLVM vectorises these loops (both measured in the race):
# * an index like ``x[off + p]`` with a run-time ``off`` may be negative as far as LLVM knows, so Numba's
#   negative-index wraparound turns the loads into gathers (4x slower); slicing first (``x[off:]``) and
#   indexing the slice with the loop counter keeps them contiguous;
# * the inner loop must be long: an output row of 24 pixels is shorter than one unrolled vector iteration
#   (8 lanes x 4), so the direct kernels run over a whole output plane at once (see _direct_forward).


def _pad(x, padding):
    """Zero-pad H and W once on the host, so that no kernel has a bounds test in its inner loop."""
    return _pad_hw(x, padding, padding) if padding else x


def _pad_hw(x, ph, pw):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


@njit(inline="always")
def _direct_planes(x, w, b, y, KH, KW):
    """y = conv(x, w) + b for the samples of x, stride 1, a whole output plane at a time (see _direct_forward)."""
    N, C, H, W = x.shape
    F, OH, OW = w.shape[0], y.shape[2], y.shape[3]
    L = (OH - 1) * W + OW
    acc = np.empty(L, dtype=y.dtype)
    for n in range(N):
        xf = x[n].reshape(C, H * W)
        for f in range(F):
            for p in range(L):  # loops, not array expressions: inside a parallel kernel those become parfors
                acc[p] = b[f]
            for c in range(C):
                for kh in range(KH):
                    xk = xf[c, kh * W:]
                    wr = w[f, c, kh]
                    for p in range(L):
                        s = acc[p]
                        for kw in range(KW):
                            s += wr[kw] * xk[p + kw]
                        acc[p] = s
            for i in range(OH):
                yr, ar = y[n, f, i], acc[i * W:]
                for j in range(OW):
                    yr[j] = ar[j]


@functools.lru_cache(maxsize=None)
def _direct_forward(KH, KW):
    """The direct stride-1 convolution kernel compiled for one kernel size, y = conv(x, w) + b, run over T blocks
    of samples (``forward_blocks(x, w, b, y, T)``).

    The plane trick: an output plane (OH, OW) is computed at the input's width W, as one flat run of
    L = (OH-1)*W + OW pixels, so that tap (kh, kw) reads the flat input at offset kh*W + kw + p: one long
    contiguous loop per kernel row instead of OH short ones; the W-OW extra pixels per row are discarded
    (14% wasted work at 28x28 with 5x5). KH and KW are closure constants that _direct_planes is inlined with,
    so LLVM unrolls the taps of a kernel row and keeps each output vector's partial sum in a register across
    them (LeNet's first layer at B=256: 1.27 ms on one core, 35 GFLOP/s of useful work).

    Caching: ``cache=True`` keys a closure's cached code on its closure values, so they must be plain
    constants that pickle the same in every process: the closure holds KH and KW only, and the loop is an
    inlined global function rather than a jitted closure (a dispatcher pickles differently in each process,
    which made every process compile the kernel again, ~2.5 s).
    """

    @njit(cache=True, parallel=True, fastmath=_REDUCE_MATH)
    def forward_blocks(x, w, b, y, T):
        """_direct_planes over T contiguous blocks of samples, on Numba's threads when T > 1."""
        N = x.shape[0]
        if T > 1:
            for t in prange(T):
                s, e = block_bounds(N, t, T)
                _direct_planes(x[s:e], w, b, y[s:e], KH, KW)
        else:
            _direct_planes(x, w, b, y, KH, KW)

    return forward_blocks


@njit(inline="always", fastmath=_REDUCE_MATH)
def _lag_pair(r, g0, g1, L, kw0, KW):
    """Correlations of two gradient planes g0, g1 with r at the lags kw0 .. kw0+4 that are < KW:
    (sum_p g0[p] * r[kw + p] for those kw, then the same for g1; lags past KW are 0). Two filters and five
    lags share each load of r and of g, so the loop does 10 multiply-adds per 7 loads."""
    z = g0.dtype.type(0)
    a0 = a1 = a2 = a3 = a4 = b0 = b1 = b2 = b3 = b4 = z
    n1, n2, n3, n4 = kw0 + 1 < KW, kw0 + 2 < KW, kw0 + 3 < KW, kw0 + 4 < KW
    r0, r1, r2, r3, r4 = r[kw0:], r[kw0 + 1:], r[kw0 + 2:], r[kw0 + 3:], r[kw0 + 4:]
    for p in range(L):
        d, e, v = g0[p], g1[p], r0[p]
        a0 += d * v
        b0 += e * v
        if n1:
            v = r1[p]
            a1 += d * v
            b1 += e * v
        if n2:
            v = r2[p]
            a2 += d * v
            b2 += e * v
        if n3:
            v = r3[p]
            a3 += d * v
            b3 += e * v
        if n4:
            v = r4[p]
            a4 += d * v
            b4 += e * v
    return a0, a1, a2, a3, a4, b0, b1, b2, b3, b4


@njit(inline="always", fastmath=_REDUCE_MATH)
def _direct_weight_planes(x, dy, dw, db, KH, KW):
    """dw += conv's weight gradient, db += its bias gradient, for the samples of x (stride 1), by the plane
    trick of _direct_forward run backwards: each dy plane is laid out at the input's width (zeros in the
    W-OW extra pixels of each row), and dw[f, c, kh, kw] is its dot product with the flat input plane
    shifted by kh*W + kw."""
    N, C, H, W = x.shape
    F, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    L = (OH - 1) * W + OW
    g = np.empty((F + 1, L), dtype=dy.dtype)
    for f in range(F + 1):  # zeros: the extra pixels stay 0, and row F is the partner of an odd filter out
        for p in range(L):  # (a loop: np.zeros would be a parfor here, waking the threads even at T = 1)
            g[f, p] = 0
    for n in range(N):
        xf = x[n].reshape(C, H * W)
        for f in range(F):
            s = dy.dtype.type(0)
            gf = g[f]
            for i in range(OH):
                gr, dr = gf[i * W:], dy[n, f, i]
                for j in range(OW):
                    v = dr[j]
                    gr[j] = v
                    s += v
            db[f] += s
        for c in range(C):
            for kh in range(KH):
                r = xf[c, kh * W:]
                for f in range(0, F, 2):
                    for kw0 in range(0, KW, 5):
                        a = _lag_pair(r, g[f], g[f + 1], L, kw0, KW)
                        for j in range(min(5, KW - kw0)):
                            dw[f, c, kh, kw0 + j] += a[j]
                            if f + 1 < F:
                                dw[f + 1, c, kh, kw0 + j] += a[5 + j]


@functools.lru_cache(maxsize=None)
def _direct_weight_grad(KH, KW):
    """The direct stride-1 weight and bias gradient compiled for one kernel size, over T blocks of samples
    (``weight_blocks(x, dy, dws, dbs)``, T = len(dws), block t into dws[t], dbs[t], both zeroed): what the
    backward of a layer with few input channels runs when no input gradient is needed (_direct_dw). Its
    correlations take two filters at a time (_lag_pair). Closure values are plain constants, as in
    _direct_forward."""

    @njit(cache=True, parallel=True, fastmath=_REDUCE_MATH)
    def weight_blocks(x, dy, dws, dbs):
        N, T = x.shape[0], dws.shape[0]
        if T > 1:
            for t in prange(T):
                s, e = block_bounds(N, t, T)
                _direct_weight_planes(x[s:e], dy[s:e], dws[t], dbs[t], KH, KW)
        else:
            _direct_weight_planes(x, dy, dws[0], dbs[0], KH, KW)

    return weight_blocks


# The im2col path's GEMM layout. A chunk of nb samples is one GEMM whose columns hold, per sample, the output
# pixels in rows of R: pixel (i, j) of sample n is column n*Lr + i*R + j, Lr = (OH-1)*R + OW. At stride 1, R is
# the input's width W (the plane layout): the R-OW extra columns of each row are the windows that run off the
# row's end, so each patch row of the columns is ONE flat run of the input plane (offset kh*W + kw, Lr long)
# instead of OH runs of OW (24 pixels for convnet's conv2, shorter than an unrolled vector loop), at the cost
# of (KW-1)/W more GEMM columns: 8% for convnet's conv2, 33% for LeNet's second layer. Against R = OW at
# stride 1, on one thread: LeNet's second layer at B=256 2.30 -> 1.83 ms forward, 6.20 -> 6.09 backward;
# convnet's second at B=64 16.0 -> 15.6 and 37.4 -> 37.2 ms. At other strides R = OW. The backward's dY is
# laid out the same way, zero in the extra columns, so they add nothing to dw, and the dcols they produce
# are zero, added to pixels inside the plane.


def _gemm_layout(stride, W, OH, OW):
    """(R, Lr) of the im2col path's GEMM layout for an input of width W (padded) and an OH x OW output: the row
    pitch and the columns per sample."""
    R = W if stride == 1 else OW
    return R, (OH - 1) * R + OW


@njit(cache=True, nogil=True)
def _im2col(xf, W, KH, KW, stride, OH, OW, R, cols):
    """cols[(c, kh, kw), n*Lr + i*R + j] = x[n, c, i*stride + kh, j*stride + kw] for a chunk of samples, xf
    being x as (nb, C, H*W) (the layout above).

    Patches are columns and the chunk's samples sit side by side, so W (F, C*KH*KW) @ cols is ONE GEMM for
    the whole chunk, whose long side keeps BLAS efficient even for LeNet's 16-filter layer, where per-sample
    GEMMs (16 x 150 x 64) are too small.
    """
    nb, C = xf.shape[0], xf.shape[1]
    Lr = (OH - 1) * R + OW
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                k = (c * KH + kh) * KW + kw
                for n in range(nb):
                    dst = cols[k, n * Lr:]
                    if stride == 1 and R == W:  # the plane layout: one run
                        src = xf[n, c, kh * W + kw:]
                        for p in range(Lr):
                            dst[p] = src[p]
                    else:
                        for i in range(OH):
                            d, src = dst[i * R:], xf[n, c, (i * stride + kh) * W + kw:]
                            for j in range(OW):
                                d[j] = src[j * stride]


@njit(cache=True, nogil=True)
def _col2im(dcols, W, KH, KW, stride, OH, OW, R, dxf):
    """Adjoint of _im2col: dxf (zeroed; dx as (nb, C, H*W)) += every column entry at its pixel."""
    nb, C = dxf.shape[0], dxf.shape[1]
    Lr = (OH - 1) * R + OW
    for n in range(nb):
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    src = dcols[(c * KH + kh) * KW + kw, n * Lr:]
                    if stride == 1 and R == W:
                        dst = dxf[n, c, kh * W + kw:]
                        for p in range(Lr):
                            dst[p] += src[p]
                    else:
                        for i in range(OH):
                            s, d = src[i * R:], dxf[n, c, (i * stride + kh) * W + kw:]
                            for j in range(OW):
                                d[j * stride] += s[j]


@njit(cache=True, nogil=True)
def _gemm_out_to_nchw(yw, b, R, y):
    """y[n, f, i, j] = yw[f, n*Lr + i*R + j] + b[f]: the chunk GEMM's result into NCHW, bias added on the way."""
    nb, F, OH, OW = y.shape
    Lr = (OH - 1) * R + OW
    for n in range(nb):
        for f in range(F):
            src, bf = yw[f, n * Lr:], b[f]
            for i in range(OH):
                yr, sr = y[n, f, i], src[i * R:]
                for j in range(OW):
                    yr[j] = sr[j] + bf


@njit(cache=True, nogil=True, fastmath=_REDUCE_MATH)
def _nchw_to_gemm_in(dy, R, dyw, db):
    """dyw[f, n*Lr + i*R + j] = dy[n, f, i, j], zero in the layout's extra columns (the layout the backward
    GEMMs need); db[f] += its sum on the way."""
    nb, F, OH, OW = dy.shape
    Lr = (OH - 1) * R + OW
    z = dy.dtype.type(0)
    for f in range(F):
        s = z
        for n in range(nb):
            dst = dyw[f, n * Lr:]
            for i in range(OH):
                dr, sr = dst[i * R:], dy[n, f, i]
                for j in range(OW):
                    v = sr[j]
                    dr[j] = v
                    s += v
                if i < OH - 1:
                    for j in range(OW, R):
                        dr[j] = z
        db[f] += s


def _chunk_samples(K, Lr, itemsize):
    """Samples per im2col chunk: as many as keep the columns (K x samples*Lr) within TUNING["conv_chunk_bytes"]."""
    return max(1, TUNING["conv_chunk_bytes"] // (K * Lr * itemsize))


@njit(inline="always")
def _chunk(buf, rows, m):
    """The first rows*m elements of a flat buffer as a C-contiguous (rows, m) matrix: a chunk's columns. (A
    slice [:, :m] of a wider matrix would be typed non-contiguous, and the copy loops compiled for it run 2-3x
    slower than for a contiguous one: col2im 64 against 18 us per sample at convnet's second layer.)"""
    return buf[:rows * m].reshape((rows, m))


@njit(nogil=True)
def _conv_fwd_block(xf, W, wm, bias, KH, KW, stride, R, nb, gemm_ptrs, y, s, e):
    """Samples [s, e) in chunks of nb: im2col, one GEMM (F x nb*Lr x K), the result into NCHW with the bias."""
    F, K = wm.shape
    OH, OW = y.shape[2], y.shape[3]
    Lr = (OH - 1) * R + OW
    nb = min(nb, e - s)
    col_buf = np.empty(K * nb * Lr, dtype=xf.dtype)
    yw_buf = np.empty(F * nb * Lr, dtype=xf.dtype)
    for a in range(s, e, nb):
        z = min(e, a + nb)
        m = (z - a) * Lr
        cols, yw = _chunk(col_buf, K, m), _chunk(yw_buf, F, m)
        _im2col(xf[a:z], W, KH, KW, stride, OH, OW, R, cols)
        gemm(gemm_ptrs, wm, False, cols, False, yw, 0.0)
        _gemm_out_to_nchw(yw, bias, R, y[a:z])


@njit(cache=True, parallel=True)
def _conv_fwd_im2col(xf, W, wm, bias, KH, KW, stride, R, nb, gemm_ptrs, y, T):
    N = xf.shape[0]
    if T > 1:
        for t in prange(T):
            s, e = block_bounds(N, t, T)
            _conv_fwd_block(xf, W, wm, bias, KH, KW, stride, R, nb, gemm_ptrs, y, s, e)
    else:
        _conv_fwd_block(xf, W, wm, bias, KH, KW, stride, R, nb, gemm_ptrs, y, 0, N)


@njit(nogil=True)
def _conv_bwd_block(xf, W, wm, dy, KH, KW, stride, R, nb, need_dx, gemm_ptrs, dxf, U, zero, dxw, dwt, db, s, e):
    """Samples [s, e) in chunks of nb: rebuild the columns, dY into the GEMM's layout (db summed on the way),
    dwt += cols @ dY^T (the weight gradient transposed, (K, F): BLAS ran this product 1.3x faster for convnet's
    second layer and 1.8x for LeNet's than dY @ cols^T), and with need_dx dcols = W^T @ dY scattered into dxf
    (col2im). With dxw (N, C, Hp, Wp) not empty, dx is computed by Winograd instead (U: the adjoint filters,
    zero: C zeros), on the block's thread after its weight gradient."""
    F, K = wm.shape
    OH, OW = dy.shape[2], dy.shape[3]
    Lr = (OH - 1) * R + OW
    nb = min(nb, e - s)
    col_buf = np.empty(K * nb * Lr, dtype=xf.dtype)
    dyw_buf = np.empty(F * nb * Lr, dtype=xf.dtype)
    dcol_buf = np.empty(K * nb * Lr if need_dx else 0, dtype=xf.dtype)
    for a in range(s, e, nb):
        z = min(e, a + nb)
        m = (z - a) * Lr
        cols, dyw = _chunk(col_buf, K, m), _chunk(dyw_buf, F, m)
        _im2col(xf[a:z], W, KH, KW, stride, OH, OW, R, cols)
        _nchw_to_gemm_in(dy[a:z], R, dyw, db)
        gemm(gemm_ptrs, cols, False, dyw, True, dwt, 0.0 if a == s else 1.0)
        if need_dx:
            dcols = _chunk(dcol_buf, K, m)
            gemm(gemm_ptrs, wm, True, dyw, False, dcols, 0.0)
            _col2im(dcols, W, KH, KW, stride, OH, OW, R, dxf[a:z])
    if dxw.shape[0]:
        _winograd_block(dy, KH - 1, U, zero, gemm_ptrs, dxw, s, e)


@njit(cache=True, parallel=True)
def _conv_bwd_im2col(xf, W, wm, dy, KH, KW, stride, R, nb, need_dx, gemm_ptrs, dxf, U, zero, dxw, dwts, dbs):
    """dwts[t] (K, F), dbs[t] (zeroed) are block t's partial weight (transposed) and bias gradients,
    T = len(dwts)."""
    N, T = xf.shape[0], dwts.shape[0]
    if T > 1:
        for t in prange(T):
            s, e = block_bounds(N, t, T)
            _conv_bwd_block(xf, W, wm, dy, KH, KW, stride, R, nb, need_dx, gemm_ptrs, dxf, U, zero, dxw, dwts[t],
                            dbs[t], s, e)
    else:
        _conv_bwd_block(xf, W, wm, dy, KH, KW, stride, R, nb, need_dx, gemm_ptrs, dxf, U, zero, dxw, dwts[0],
                        dbs[0], 0, N)


# Winograd F(2x2, 3x3) (Lavin & Gray): each 2x2 block of outputs from a 4x4 tile of the input, as 16 products of
# transformed tiles and transformed filters instead of 36 multiply-adds per output pixel per channel: 2.25x fewer
# multiplications, done as 16 GEMMs (tiles x filters x channels) per sample. The transforms run along the
# channels (the input transposed to rows of C values first, tiles and their products kept as rows of channels)
# so that every loop is long and contiguous. Convnet's second layer at B=16, one thread, per sample: 126 against
# 213 us forward, 409 against 440 backward (benchmarks/race_numba_kernels.py conv races it on the models' layers).
# The backward's dx is the same convolution of dy, padded by 2, with the filters flipped and their channels
# swapped; dw stays on im2col + GEMM.


@njit(cache=True, nogil=True)
def _winograd_filter_rows(g, U):
    """U[(a, b)] = (G g G^T)[a, b] for 3x3 filters laid out as g[r, s, filter] (one long row per tap, so that
    every loop runs along the filters), G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]."""
    half = g.dtype.type(0.5)
    n = g.shape[2]
    t = np.empty((4, 3, n), dtype=g.dtype)
    for j in range(3):
        g0, g1, g2 = g[0, j], g[1, j], g[2, j]
        t[0, j] = g0
        t[3, j] = g2
        t1, t2 = t[1, j], t[2, j]
        for i in range(n):
            t1[i] = half * (g0[i] + g1[i] + g2[i])
        for i in range(n):
            t2[i] = half * (g0[i] - g1[i] + g2[i])
    for a in range(4):
        r0, r1, r2 = t[a, 0], t[a, 1], t[a, 2]
        U[4 * a] = r0
        U[4 * a + 3] = r2
        u1, u2 = U[4 * a + 1], U[4 * a + 2]
        for i in range(n):
            u1[i] = half * (r0[i] + r1[i] + r2[i])
        for i in range(n):
            u2[i] = half * (r0[i] - r1[i] + r2[i])


def _winograd_filters(w, adjoint=False):
    """The transformed filters U (16, in channels, out channels) of w (F, C, 3, 3); ``adjoint``: those of dx's
    convolution (in: F, out: C), w's filters turned by 180 degrees with their channels swapped."""
    F, C = w.shape[0], w.shape[1]
    g = w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1) if adjoint else w.transpose(2, 3, 1, 0)
    U = np.empty((16, F * C), dtype=w.dtype)
    _winograd_filter_rows(np.ascontiguousarray(g).reshape(3, 3, F * C), U)
    return U.reshape((16, F, C) if adjoint else (16, C, F))


@njit(inline="always")
def _add(p, q, out):
    """out = p + q: one contiguous loop over three arrays, which LLVM vectorizes (with more arrays per loop its
    aliasing checks give up, and the transforms ran scalar, 2-3x slower)."""
    for i in range(out.size):
        out[i] = p[i] + q[i]


@njit(inline="always")
def _sub(p, q, out):
    """out = p - q, as _add."""
    for i in range(out.size):
        out[i] = p[i] - q[i]


@njit(nogil=True, fastmath=_REDUCE_MATH)
def _winograd_input(x, pad, xt, rows, V):
    """V[tile, (a, b), c] = (B^T d B)[a, b] for each 4x4 tile d (stride 2) of channel c of one sample x (C, H, W),
    zero-padded by ``pad``; B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]. xt (Hp, Wp, C):
    the padded sample transposed (its border zero, only the inside written here); rows (4, Wp*C): scratch."""
    C, H, W = x.shape
    Hp, Wp = xt.shape[0], xt.shape[1]
    for h in range(H):
        for j in range(W):
            dst = xt[h + pad, j + pad]
            for c in range(C):
                dst[c] = x[c, h, j]
    flat = xt.reshape((Hp, Wp * C))
    th, tw = (Hp - 2) // 2, (Wp - 2) // 2
    for ti in range(th):
        r0, r1, r2, r3 = flat[2 * ti], flat[2 * ti + 1], flat[2 * ti + 2], flat[2 * ti + 3]
        _sub(r0, r2, rows[0])
        _add(r1, r2, rows[1])
        _sub(r2, r1, rows[2])
        _sub(r1, r3, rows[3])
        for a in range(4):
            ra = rows[a]
            for tj in range(tw):
                v, q = V[ti * tw + tj], 2 * tj * C
                d0, d1, d2, d3 = ra[q:q + C], ra[q + C:q + 2 * C], ra[q + 2 * C:q + 3 * C], ra[q + 3 * C:q + 4 * C]
                _sub(d0, d2, v[4 * a])
                _add(d1, d2, v[4 * a + 1])
                _sub(d2, d1, v[4 * a + 2])
                _sub(d1, d3, v[4 * a + 3])


@njit(nogil=True, fastmath=_REDUCE_MATH)
def _winograd_output(M, b, o, y):
    """y[f, 2i:2i+2, 2j:2j+2] = A^T m A + b[f] for each tile (i, j) of one sample's products M[tile, (a, b), f];
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]. o (4, F): scratch."""
    F, OH, OW = y.shape
    tw = OW // 2
    for ti in range(OH // 2):
        for tj in range(tw):
            m = M[ti * tw + tj]
            for f in range(F):
                c0 = m[0, f] + m[4, f] + m[8, f]
                c1 = m[1, f] + m[5, f] + m[9, f]
                c2 = m[2, f] + m[6, f] + m[10, f]
                c3 = m[3, f] + m[7, f] + m[11, f]
                e0 = m[4, f] - m[8, f] - m[12, f]
                e1 = m[5, f] - m[9, f] - m[13, f]
                e2 = m[6, f] - m[10, f] - m[14, f]
                e3 = m[7, f] - m[11, f] - m[15, f]
                o[0, f] = c0 + c1 + c2 + b[f]
                o[1, f] = c1 - c2 - c3 + b[f]
                o[2, f] = e0 + e1 + e2 + b[f]
                o[3, f] = e1 - e2 - e3 + b[f]
            for f in range(F):
                y[f, 2 * ti, 2 * tj], y[f, 2 * ti, 2 * tj + 1] = o[0, f], o[1, f]
                y[f, 2 * ti + 1, 2 * tj], y[f, 2 * ti + 1, 2 * tj + 1] = o[2, f], o[3, f]


@njit(nogil=True)
def _winograd_block(x, pad, U, b, gemm_ptrs, y, s, e):
    """Samples [s, e) of y = conv(x zero-padded by ``pad``, the filters U transformed) + b, one sample at a time:
    input transform, 16 GEMMs (tiles x out channels x in channels), output transform."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    F, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    tiles = (OH // 2) * (OW // 2)
    xt = np.zeros((H + 2 * pad, W + 2 * pad, C), dtype=x.dtype)
    rows = np.empty((4, (W + 2 * pad) * C), dtype=x.dtype)
    V = np.empty((tiles, 16, C), dtype=x.dtype)
    M = np.empty((tiles, 16, F), dtype=x.dtype)
    o = np.empty((4, F), dtype=x.dtype)
    for n in range(s, e):
        _winograd_input(x[n], pad, xt, rows, V)
        gemm_run(gemm_ptrs, V, U, M)
        _winograd_output(M, b, o, y[n])


@njit(cache=True, parallel=True)
def _conv_winograd(x, pad, U, b, gemm_ptrs, y, T):
    N = x.shape[0]
    if T > 1:
        for t in prange(T):
            s, e = block_bounds(N, t, T)
            _winograd_block(x, pad, U, b, gemm_ptrs, y, s, e)
    else:
        _winograd_block(x, pad, U, b, gemm_ptrs, y, 0, N)


def _winograd(stride, KH, KW, C, F, OH, OW):
    """Whether a convolution from C to F channels with an OH x OW output runs Winograd F(2x2, 3x3): stride-1 3x3
    layers with at least TUNING["conv_winograd_min_channels"] channels on both sides and an even output (whole
    2x2 tiles). Below that the transformed tiles' GEMMs (tiles x F x C) are too thin to pay for the transforms."""
    return (stride == 1 and KH == KW == 3 and min(C, F) >= TUNING["conv_winograd_min_channels"]
            and OH % 2 == 0 and OW % 2 == 0)


def _direct(stride, F):
    """Whether a layer's forward runs the direct kernel (_direct_forward) rather than im2col + GEMM."""
    return stride == 1 and F <= TUNING["conv_direct_max_filters"]


def _direct_dw(stride, C, need_dx):
    """Whether a layer's backward runs the direct weight-gradient kernel (_direct_weight_grad) rather than
    im2col + GEMM: only where no dx is needed (a first layer); with dx, the im2col path's one pass over dY and
    one thread hand-off serve both gradients (direct dw beside it: 0.45 against 0.33 ms at LeNet's second
    layer, B=16, a tie at 64)."""
    return not need_dx and stride == 1 and C <= TUNING["conv_direct_wgrad_max_channels"]


def conv2d_forward(x, w, b, stride, padding):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) or None -> y: (N, F, OH, OW).

    Stride-1 layers with at most TUNING["conv_direct_max_filters"] filters (LeNet's first) run the
    direct kernel: their GEMM would be a few rows tall, which BLAS handles poorly. The others build im2col
    columns for a chunk of samples at a time (sized to stay in cache; the layout above) and run one GEMM per
    chunk. Either way the batch is split into one block of samples per thread when the work pays for the
    hand-off. cache: (padded x, w, has_bias, stride, padding). The columns are not kept: the backward
    rebuilds them chunk by chunk, one cheap copy that keeps the working set in cache instead of holding
    KH*KW times the input for the whole batch.
    """
    N, C, H, W, F, KH, KW, OH, OW = _checks.check_conv2d(x, w, b, stride, padding)
    xp = _pad(_c(x), padding)
    w = _c(w)
    bias = _c(b) if b is not None else np.zeros(F, dtype=x.dtype)
    K = C * KH * KW
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    T = blocks(N, N * F * K * OH * OW)
    if _direct(stride, F):
        _direct_forward(KH, KW)(xp, w, bias, y, T)
    elif _winograd(stride, KH, KW, C, F, OH, OW):
        with OneBlasThread():
            _conv_winograd(xp, 0, _winograd_filters(w), bias, gemm_pointers(), y, T)
    else:
        Hp, Wp = xp.shape[2], xp.shape[3]
        R, Lr = _gemm_layout(stride, Wp, OH, OW)
        with OneBlasThread():
            _conv_fwd_im2col(xp.reshape(N, C, Hp * Wp), Wp, w.reshape(F, K), bias, KH, KW, stride, R,
                             _chunk_samples(K, Lr, x.itemsize), gemm_pointers(), y, T)
    return y, (xp, w, b is not None, stride, padding)


def conv2d_backward(dy, cache, need_dx=True):
    """dy: (N, F, OH, OW) -> dx (N, C, H, W) (None, skipped, with ``need_dx=False``), dw (F, C, KH, KW), db (F,)
    or None.

    Per chunk: rebuild the columns, dw += dY @ cols^T, dcols = W^T @ dY, col2im into dx (dY copied into
    the chunk GEMM's layout, db summed on the way). Each thread's block of samples reduces into its own
    dw and db; they are summed at the end. A stride-1 layer with few input channels that needs no dx (a
    first layer) runs the direct weight gradient instead (_direct_dw). (A direct dx, the forward kernel on
    padded dy, lost to im2col at every layer and batch size in the race.)
    """
    _checks.check_flag("conv2d_backward", "need_dx", need_dx)
    xp, w, has_bias, stride, padding = cache
    N, C, Hp, Wp = xp.shape
    F, _, KH, KW = w.shape
    OH, OW = (Hp - KH) // stride + 1, (Wp - KW) // stride + 1
    _checks.check_grad("conv2d_backward", dy, (N, F, OH, OW))
    dy = _c(dy)
    K = C * KH * KW
    T = blocks(N, 2 * N * F * K * OH * OW)
    direct = _direct_dw(stride, C, need_dx)
    if direct:
        dws, dbs = np.zeros((T, F, C, KH, KW), dtype=w.dtype), np.zeros((T, F), dtype=w.dtype)
        _direct_weight_grad(KH, KW)(xp, dy, dws, dbs)
    else:
        winograd_dx = bool(need_dx) and _winograd(stride, KH, KW, F, C, Hp, Wp)
        im2col_dx = bool(need_dx) and not winograd_dx
        none = np.empty((0, C, 0, 0), dtype=xp.dtype)
        dxp = np.zeros_like(xp) if im2col_dx else none
        # dx by Winograd: dy padded by 2, convolved with the flipped, channel-swapped filters
        dxw = np.empty_like(xp) if winograd_dx else none
        U = _winograd_filters(w, adjoint=True) if winograd_dx else np.empty((0, F, C), dtype=w.dtype)
        dws, dbs = np.empty((T, K, F), dtype=w.dtype), np.zeros((T, F), dtype=w.dtype)
        R, Lr = _gemm_layout(stride, Wp, OH, OW)
        with OneBlasThread():
            _conv_bwd_im2col(xp.reshape(N, C, Hp * Wp), Wp, w.reshape(F, K), dy, KH, KW, stride, R,
                             _chunk_samples(K, Lr, xp.itemsize), im2col_dx, gemm_pointers(),
                             dxp.reshape(dxp.shape[0], C, dxp.shape[2] * dxp.shape[3]), U,
                             np.zeros(C, dtype=w.dtype), dxw, dws, dbs)
        if winograd_dx:
            dxp = dxw
    dw, db = dws[0], dbs[0]
    for t in range(1, T):
        dw += dws[t]
        db += dbs[t]
    if not direct:  # the im2col path's (K, F)
        dw = np.ascontiguousarray(dw.T)
    if not need_dx:
        dx = None
    elif padding:
        dx = np.ascontiguousarray(dxp[:, :, padding:Hp - padding, padding:Wp - padding])
    else:
        dx = dxp
    return dx, dw.reshape(w.shape), (db if has_bias else None)


# ----------------------------------------------------------------------------------------------------------
# maxpool2d


@njit(inline="always")
def _pool_plane_fwd(x, y, arg, n, c, K, S, relu):
    """Each window's max, then the first tap (row-major) equal to it, found by a reverse scan in integer
    arithmetic; a NaN is tracked beside the max (which ignores it) and wins. No select is carried from tap to tap,
    so the time barely follows the data: lenet5's first pooling at B=256, one thread, 986 us on random activations
    and 935 on smooth ones, where the select-per-tap scan it replaced took 3538 and 1900
    (benchmarks/race_numba_kernels.py pool)."""
    OW = y.shape[3]
    zero, nan_value = y.dtype.type(0), y.dtype.type(math.nan)
    for i in range(y.shape[2]):
        yr, ar, rows = y[n, c, i], arg[n, c, i], x[n, c, i * S:i * S + K]
        for j in range(OW):  # the taps unrolled (K is a constant)
            best = rows[0, j * S]
            nan = best != best
            for r in range(K):
                for q in range(K):
                    v = rows[r, j * S + q]
                    nan |= v != v
                    best = max(best, v)
            best = nan_value if nan else best
            a = K * K - 1
            for r in range(K - 1, -1, -1):
                for q in range(K - 1, -1, -1):
                    v = rows[r, j * S + q]
                    hit = (v == best) | (v != v)
                    a = hit * (r * K + q) + (1 - hit) * a
            yr[j] = zero if relu and best <= 0 else best  # NaN <= 0 is False: NaN passes the relu
            ar[j] = a


@njit(inline="always")
def _pool_plane_bwd(dy, y, arg, dx, n, c, K, S, relu):
    OW = dy.shape[3]
    zero = dy.dtype.type(0)
    for i in range(dy.shape[2]):
        dr, yr, ar = dy[n, c, i], y[n, c, i], arg[n, c, i]
        if S == K:  # every element of the window written: the rows zeroed, then each gradient stored at its tap
            rows = dx[n, c, i * S:i * S + K]
            for r in range(K):
                for q in range(rows.shape[1]):
                    rows[r, q] = zero
            for j in range(OW):
                aj = ar[j]
                rows[aj // K, j * S + aj % K] = dr[j] if not relu or yr[j] > 0 else zero
        else:
            for r in range(K):
                xr = dx[n, c, i * S + r]
                for q in range(K):
                    a = r * K + q
                    for j in range(OW):
                        if ar[j] == a and (not relu or yr[j] > 0):
                            xr[j * S + q] += dr[j]


@functools.lru_cache(maxsize=None)
def _maxpool_kernels(K, S):
    """(forward, backward) max-pool kernels compiled for one (kernel K, stride S); one (n, c) plane per
    iteration, on Numba's threads when ``parallel``; with ``relu``, relu_maxpool2d (the relu applied to each
    window's max as it is written, and its mask to each gradient as it is scattered).

    K and S are closure constants that the inlined plane loops (_pool_plane_fwd/_bwd) see as constants,
    so the window loops unroll and the loads along an output row have a constant stride (vectorisable)
    instead of a run-time one (gathers): 1.6-3x faster than the same loops with run-time K and S (race).
    """

    @njit(cache=True, parallel=True)
    def forward(x, y, arg, relu, parallel):
        """y = max over each window (relu of it with ``relu``); arg = its index r*K + q within the window. A
        strict '>' scan in row-major order keeps the FIRST maximum of a tie, and the first NaN wins and stays
        (as reference.py: a diverged run keeps its NaN up to the loss)."""
        C = x.shape[1]
        if parallel:
            for t in prange(x.shape[0] * C):
                _pool_plane_fwd(x, y, arg, t // C, t % C, K, S, relu)
        else:
            for t in range(x.shape[0] * C):
                _pool_plane_fwd(x, y, arg, t // C, t % C, K, S, relu)

    @njit(cache=True, parallel=True)
    def backward(dy, y, arg, dx, relu, parallel):
        """dx += dy at each window's recorded argmax (with ``relu``, only where the forward's y > 0).
        Non-overlapping windows (S == K) write every element they cover (the gradient or 0), so dx need not
        be zeroed there; overlapping ones add into a zeroed dx. One (n, c) plane per iteration, so the adds
        never race."""
        C = dy.shape[1]
        if parallel:
            for t in prange(dy.shape[0] * C):
                _pool_plane_bwd(dy, y, arg, dx, t // C, t % C, K, S, relu)
        else:
            for t in range(dy.shape[0] * C):
                _pool_plane_bwd(dy, y, arg, dx, t // C, t % C, K, S, relu)

    return forward, backward


def _maxpool_forward(op, x, kernel, stride, relu):
    N, C, H, W, OH, OW = _checks.check_maxpool2d(x, kernel, stride, op)
    x = _c(x)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    arg = np.empty((N, C, OH, OW), dtype=np.uint8 if kernel * kernel <= 256 else np.int32)
    _maxpool_kernels(kernel, stride)[0](x, y, arg, relu, pool_parallel(x.size))
    return y, (arg, x.shape, kernel, stride, y if relu else None)


def _maxpool_backward(op, dy, cache):
    arg, (N, C, H, W), kernel, stride, y = cache
    _checks.check_grad(op, dy, arg.shape)
    OH, OW = arg.shape[2:]
    covers_all = stride == kernel and H == OH * kernel and W == OW * kernel
    dx = (np.empty if covers_all else np.zeros)((N, C, H, W), dtype=dy.dtype)
    dy = _c(dy)
    relu = y is not None
    _maxpool_kernels(kernel, stride)[1](dy, y if relu else dy, arg, dx, relu, pool_parallel(dx.size))
    return dx


def maxpool2d_forward(x, kernel, stride):
    """x: (N, C, H, W) -> y: (N, C, OH, OW), floor mode, no padding.

    cache: (argmax within each window as uint8 (int32 for windows over 255 elements), x shape, kernel,
    stride, None). One byte per output instead of two int64 coordinates keeps the cache 16x smaller.
    Ties: the gradient goes to the first maximum in row-major window order; NaN counts as the maximum.
    """
    return _maxpool_forward("maxpool2d", x, kernel, stride, False)


def maxpool2d_backward(dy, cache):
    """dx: (N, C, H, W), each output's gradient on its window's (first) maximum, zero elsewhere."""
    return _maxpool_backward("maxpool2d_backward", dy, cache)


def relu_maxpool2d_forward(x, kernel, stride):
    """maxpool2d(relu(x)), as relu(maxpool2d(x)) (equal: kernels/_fused.py) in the pooling loop itself: no
    pass over the unpooled activation. cache: maxpool2d's, with y (the relu's mask) last."""
    return _maxpool_forward("relu_maxpool2d", x, kernel, stride, True)


def relu_maxpool2d_backward(dy, cache):
    """dx: each output's gradient on its window's (first) maximum where that output is positive, else 0."""
    return _maxpool_backward("relu_maxpool2d_backward", dy, cache)


# ----------------------------------------------------------------------------------------------------------
# linear: BLAS GEMMs, split over Numba's threads by rows of their result


@njit(cache=True, nogil=True)
def _outer_sum(dy, x, dw):
    """dw[o] = sum_n dy[n, o] * x[n] for a handful of samples: a streaming write of dw, which BLAS's
    packed GEMM (inner dimension N) does several times slower."""
    for o in range(dw.shape[0]):
        row = dw[o]
        g = dy[0, o]
        xr = x[0]
        for i in range(row.size):
            row[i] = g * xr[i]
        for n in range(1, x.shape[0]):
            g = dy[n, o]
            xr = x[n]
            for i in range(row.size):
                row[i] += g * xr[i]


@njit(inline="always")
def _gemm_block(a, trans_a, b, trans_b, c, outer, columns, gemm_ptrs, s, e):
    """Rows [s, e) of c (``columns``: columns [s, e)) of c = op(a) @ op(b)."""
    if columns:
        gemm(gemm_ptrs, a, trans_a, b[s:e] if trans_b else b[:, s:e], trans_b, c[:, s:e], 0.0)
    elif outer:  # c = a^T b with a few rows of inner dimension
        _outer_sum(a[:, s:e], b, c[s:e])
    else:
        gemm(gemm_ptrs, a[:, s:e] if trans_a else a[s:e], trans_a, b, trans_b, c[s:e], 0.0)


@njit(cache=True, parallel=True)
def _gemm_blocks(a, trans_a, b, trans_b, c, outer, columns, gemm_ptrs, T):
    """c = op(a) @ op(b) over T blocks of c's rows (``columns``: of its columns), on Numba's threads when T > 1
    (``outer``: c = a^T b as a sum of outer products, for a batch of a few samples)."""
    n = c.shape[1] if columns else c.shape[0]
    if T > 1:
        for t in prange(T):
            s, e = block_bounds(n, t, T)
            _gemm_block(a, trans_a, b, trans_b, c, outer, columns, gemm_ptrs, s, e)
    else:
        _gemm_block(a, trans_a, b, trans_b, c, outer, columns, gemm_ptrs, 0, n)


def _gemm_split(a, trans_a, b, trans_b, c, work, elements, outer=False, columns=False):
    """c = op(a) @ op(b), split by c's rows (``columns``: columns) into numba_runtime.blocks(rows, work, elements)
    blocks, BLAS on one thread."""
    with OneBlasThread():
        _gemm_blocks(a, trans_a, b, trans_b, c, outer, columns, gemm_pointers(),
                     blocks(c.shape[1] if columns else c.shape[0], work, elements))


def linear_forward(x, w, b):
    """x: (N, IN), w: (OUT, IN), b: (OUT,) or None -> y = x w^T + b: (N, OUT). cache: (x, w, has_bias).

    Computed as y^T = w x^T split over blocks of output features, so that even a batch of 1 (a GEMV
    reading the whole of w) is shared between the threads; y^T is then transposed, N*OUT elements.
    """
    N, IN, OUT = _checks.check_linear(x, w, b)
    x, w = _c(x), _c(w)
    yt = np.empty((OUT, N), dtype=x.dtype)
    _gemm_split(w, False, x, True, yt, N * IN * OUT, IN * OUT)
    y = np.ascontiguousarray(yt.T)
    if b is not None:
        y += b
    return y, (x, w, b is not None)


def linear_backward(dy, cache, need_dx=True):
    """dx = dy w: (N, IN) (None, skipped, with ``need_dx=False``), dw = dy^T x: (OUT, IN), db = sum of dy over
    the batch: (OUT,) or None.

    dw: for batches up to TUNING["linear_outer_max_batch"], sums of outer products (_outer_sum) over blocks of
    its rows (output features); else a GEMM over blocks of its columns (input features). dx: a GEMM over
    blocks of its columns too, so that each thread reads its own part of w (against blocks of samples, which
    each read all of w: convnet's 9216->128 layer at B=8 took 0.87 against 1.09 ms, at B=64 1.63 against
    1.96 ms, and the batch need not be as large as the thread count).
    """
    _checks.check_flag("linear_backward", "need_dx", need_dx)
    x, w, has_bias = cache
    N, IN = x.shape
    OUT = w.shape[0]
    _checks.check_grad("linear_backward", dy, (N, OUT))
    dy = _c(dy)
    dw = np.empty_like(w)
    work = N * IN * OUT
    outer = N <= TUNING["linear_outer_max_batch"]
    _gemm_split(dy, True, x, False, dw, work, IN * OUT, outer=outer, columns=not outer)
    dx = None
    if need_dx:
        dx = np.empty_like(x)
        _gemm_split(dy, False, w, False, dx, work, IN * OUT, columns=True)
    return dx, dw, (dy.sum(axis=0) if has_bias else None)


# ----------------------------------------------------------------------------------------------------------
# relu


@njit(cache=True, parallel=True)
def _relu_fwd(x, y, parallel):
    if parallel:
        for i in prange(x.size):
            y[i] = 0 if x[i] <= 0 else x[i]  # NaN <= 0 is False: NaN passes through
    else:
        for i in range(x.size):
            y[i] = 0 if x[i] <= 0 else x[i]


@njit(cache=True, parallel=True)
def _relu_bwd(dy, y, dx, parallel):
    if parallel:
        for i in prange(dy.size):
            dx[i] = dy[i] if y[i] > 0 else 0
    else:
        for i in range(dy.size):
            dx[i] = dy[i] if y[i] > 0 else 0


def relu_forward(x):
    """y = max(x, 0), any shape, NaN passing through. cache: y (y > 0 exactly where x > 0, so x need not be
    kept). The gradient at exactly 0 (and at NaN) is 0, as in reference.py."""
    _checks.check_float("relu", "x", x)
    x = _c(x)
    y = np.empty_like(x)
    _relu_fwd(x.reshape(-1), y.reshape(-1), parallel(x.size))
    return y, y


def relu_backward(dy, cache):
    """dx = dy where the forward output was positive, else 0."""
    _checks.check_grad("relu_backward", dy, cache.shape)
    dy = _c(dy)
    dx = np.empty_like(dy)
    _relu_bwd(dy.reshape(-1), cache.reshape(-1), dx.reshape(-1), parallel(dy.size))
    return dx


# ----------------------------------------------------------------------------------------------------------
# log_softmax (rows of at most a few thousand classes: serial, one pass to read, one to write)


@njit(cache=True, fastmath=_REDUCE_MATH)
def _log_softmax_fwd(x, y):
    for n in range(x.shape[0]):
        m = x[n, 0]
        for c in range(1, x.shape[1]):
            m = max(m, x[n, c])
        s = 0.0
        for c in range(x.shape[1]):
            s += math.exp(x[n, c] - m)
        lse = m + math.log(s)
        for c in range(x.shape[1]):
            y[n, c] = x[n, c] - lse


@njit(cache=True, fastmath=_REDUCE_MATH)
def _log_softmax_bwd(dy, y, dx):
    for n in range(dy.shape[0]):
        total = 0.0
        for c in range(dy.shape[1]):
            total += dy[n, c]
        for c in range(dy.shape[1]):
            dx[n, c] = dy[n, c] - math.exp(y[n, c]) * total


def log_softmax_forward(x):
    """x: (N, C) -> y = x - logsumexp(x) per row, max-subtracted, sums in float64. cache: y."""
    _checks.check_logits("log_softmax", x)
    x = _c(x)
    y = np.empty_like(x)
    _log_softmax_fwd(x, y)
    return y, y


def log_softmax_backward(dy, cache):
    """dx[n, c] = dy[n, c] - softmax[n, c] * sum_k dy[n, k] (softmax = exp(y))."""
    _checks.check_grad("log_softmax_backward", dy, cache.shape)
    dx = np.empty_like(cache)
    _log_softmax_bwd(_c(dy), cache, dx)
    return dx


# ----------------------------------------------------------------------------------------------------------
# softmax + cross-entropy


@njit(cache=True, fastmath=_REDUCE_MATH)
def _softmax_xent_fwd(z, targets, probs):
    """probs = softmax(z) per row; returns the mean of logsumexp(z[n]) - z[n, t[n]] (float64 sums)."""
    N, C = z.shape
    total = 0.0
    for n in range(N):
        m = z[n, 0]
        for c in range(1, C):
            m = max(m, z[n, c])
        s = 0.0
        for c in range(C):
            e = math.exp(z[n, c] - m)
            probs[n, c] = e
            s += e
        inv = 1.0 / s
        for c in range(C):
            probs[n, c] *= inv
        total += math.log(s) - (z[n, targets[n]] - m)
    return total / N


@njit(cache=True)
def _softmax_xent_bwd(probs, targets, scale, d):
    for n in range(probs.shape[0]):
        for c in range(probs.shape[1]):
            d[n, c] = probs[n, c] * scale
        d[n, targets[n]] -= scale


def softmax_xent_forward(logits, targets):
    """logits: (N, C), targets: (N,) ints in [0, C) -> mean cross-entropy as a 0-d array of logits' dtype.

    cache: (softmax probabilities (N, C), targets as int64). Targets are cast once here so that one compiled
    kernel serves uint8 labels and int64 alike.
    """
    _checks.check_xent(logits, targets)
    logits = _c(logits)
    t = np.ascontiguousarray(targets, dtype=np.int64)
    probs = np.empty_like(logits)
    loss = _softmax_xent_fwd(logits, t, probs)
    return np.asarray(loss, dtype=logits.dtype), (probs, t)


def softmax_xent_backward(dloss, cache):
    """dlogits[n, c] = dloss * (probs[n, c] - [c == t[n]]) / N: (N, C)."""
    probs, t = cache
    d = np.empty_like(probs)
    _softmax_xent_bwd(probs, t, probs.dtype.type(float(dloss) / probs.shape[0]), d)
    return d


# ----------------------------------------------------------------------------------------------------------
# dropout: the counter-based splitmix64 stream of reference.uniform_from_seed, so masks match bit for bit


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, parallel=True)
def _dropout_fwd(x, seed, p, scale, y, mask, parallel):
    """mask[i] = scale if uniform(seed, i) >= p else 0; y = x * mask. All integer math is uint64 (wraps)."""
    if parallel:
        for i in prange(x.size):
            _dropout_one(x, seed, p, scale, y, mask, i)
    else:
        for i in range(x.size):
            _dropout_one(x, seed, p, scale, y, mask, i)


@njit(inline="always")
def _dropout_one(x, seed, p, scale, y, mask, i):
    z = seed + np.uint64(i + 1) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z ^= z >> np.uint64(31)
    u = float(z >> np.uint64(40)) * 2.0 ** -24
    m = scale if u >= p else mask.dtype.type(0)
    mask[i] = m
    y[i] = x[i] * m


def dropout_forward(x, p, seed):
    """y = x * mask, mask = (u >= p) / (1 - p), u the flat C-order stream of ``seed``. cache: mask."""
    _checks.check_dropout(x, p)
    x = _c(x)
    scale = x.dtype.type(0.0 if p >= 1.0 else 1.0 / (1.0 - p))
    y, mask = np.empty_like(x), np.empty_like(x)
    _dropout_fwd(x.reshape(-1), np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), float(p), scale, y.reshape(-1),
                 mask.reshape(-1), parallel(x.size))
    return y, mask


#: dx = dy * mask: one NumPy multiply is already a single pass over the data.
dropout_backward = numpy_ops.dropout_backward


# ----------------------------------------------------------------------------------------------------------
# batchnorm2d: one task per channel; statistics and gradient sums accumulate in float64


@njit(cache=True, parallel=True, fastmath=_REDUCE_MATH)
def _batchnorm2d_fwd(x, gamma, beta, mean, var, eps, training, xhat, y, inv_std, parallel):
    """Training: mean[c], var[c] (float64, biased) are computed here; inference: they hold the running stats.
    Then inv_std[c] = 1/sqrt(var + eps), xhat = (x - mean) * inv_std, y = gamma * xhat + beta."""
    if parallel:
        for c in prange(x.shape[1]):
            _batchnorm2d_fwd_channel(x, gamma, beta, mean, var, eps, training, xhat, y, inv_std, c)
    else:
        for c in range(x.shape[1]):
            _batchnorm2d_fwd_channel(x, gamma, beta, mean, var, eps, training, xhat, y, inv_std, c)


@njit(inline="always", fastmath=_REDUCE_MATH)
def _batchnorm2d_fwd_channel(x, gamma, beta, mean, var, eps, training, xhat, y, inv_std, c):
    N, _, H, W = x.shape
    if training:
        s = 0.0
        for n in range(N):
            for i in range(H):
                for j in range(W):
                    s += x[n, c, i, j]
        mu = s / (N * H * W)
        q = 0.0
        for n in range(N):
            for i in range(H):
                for j in range(W):
                    d = x[n, c, i, j] - mu
                    q += d * d
        mean[c], var[c] = mu, q / (N * H * W)
    inv = x.dtype.type(1.0 / math.sqrt(var[c] + eps))
    inv_std[c] = inv
    mu = x.dtype.type(mean[c])
    for n in range(N):
        for i in range(H):
            for j in range(W):
                h = (x[n, c, i, j] - mu) * inv
                xhat[n, c, i, j] = h
                y[n, c, i, j] = gamma[c] * h + beta[c]


@njit(cache=True, parallel=True, fastmath=_REDUCE_MATH)
def _batchnorm2d_bwd(dy, xhat, gamma, inv_std, training, dx, dgamma, dbeta, parallel):
    if parallel:
        for c in prange(dy.shape[1]):
            _batchnorm2d_bwd_channel(dy, xhat, gamma, inv_std, training, dx, dgamma, dbeta, c)
    else:
        for c in range(dy.shape[1]):
            _batchnorm2d_bwd_channel(dy, xhat, gamma, inv_std, training, dx, dgamma, dbeta, c)


@njit(inline="always", fastmath=_REDUCE_MATH)
def _batchnorm2d_bwd_channel(dy, xhat, gamma, inv_std, training, dx, dgamma, dbeta, c):
    N, _, H, W = dy.shape
    sb, sg = 0.0, 0.0
    for n in range(N):
        for i in range(H):
            for j in range(W):
                sb += dy[n, c, i, j]
                sg += dy[n, c, i, j] * xhat[n, c, i, j]
    dbeta[c], dgamma[c] = sb, sg
    k = gamma[c] * inv_std[c]
    if training:
        m = N * H * W
        a, b = k / m, dy.dtype.type(sb)
        g = dy.dtype.type(sg)
        for n in range(N):
            for i in range(H):
                for j in range(W):
                    dx[n, c, i, j] = a * (m * dy[n, c, i, j] - b - xhat[n, c, i, j] * g)
    else:
        for n in range(N):
            for i in range(H):
                for j in range(W):
                    dx[n, c, i, j] = dy[n, c, i, j] * k


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """x: (N, C, H, W), gamma/beta/running_*: (C,) -> y: (N, C, H, W).

    Training normalises with the batch statistics and moves the running stats (in place) towards the batch
    mean and the unbiased variance; inference normalises with the running stats.
    cache: (xhat, gamma, inv_std, training): the backward needs only these.
    """
    C = _checks.check_batchnorm2d(x, gamma, beta, running_mean, running_var)
    x = _c(x)
    N, _, H, W = x.shape
    if training:
        mean, var = np.empty(C), np.empty(C)
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    xhat, y = np.empty_like(x), np.empty_like(x)
    inv_std = np.empty(C, dtype=x.dtype)
    _batchnorm2d_fwd(x, _c(gamma), _c(beta), mean, var, float(eps), bool(training), xhat, y, inv_std,
                     parallel(x.size))
    if training:
        m = N * H * W
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (m / (m - 1) if m > 1 else 1.0)
    return y, (xhat, _c(gamma), inv_std, bool(training))


def batchnorm2d_backward(dy, cache):
    """-> (dx (N, C, H, W), dgamma (C,), dbeta (C,)); see reference.batchnorm2d_backward for the formulas."""
    xhat, gamma, inv_std, training = cache
    _checks.check_grad("batchnorm2d_backward", dy, xhat.shape)
    dx = np.empty_like(xhat)
    C = xhat.shape[1]
    dgamma, dbeta = np.empty(C, dtype=xhat.dtype), np.empty(C, dtype=xhat.dtype)
    _batchnorm2d_bwd(_c(dy), xhat, gamma, inv_std, training, dx, dgamma, dbeta, parallel(dx.size))
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------------------------------------
# optimizers: one pass over each parameter, in place, arithmetic in the parameter's dtype


@njit(cache=True, parallel=True)
def _sgd(p, g, buf, lr, momentum, nesterov, weight_decay, parallel):
    if parallel:
        for i in prange(p.size):
            _sgd_one(p, g, buf, lr, momentum, nesterov, weight_decay, i)
    else:
        for i in range(p.size):
            _sgd_one(p, g, buf, lr, momentum, nesterov, weight_decay, i)


@njit(inline="always")
def _sgd_one(p, g, buf, lr, momentum, nesterov, weight_decay, i):
    d = g[i] + weight_decay * p[i]
    if momentum != 0:
        b = momentum * buf[i] + d
        buf[i] = b
        d = d + momentum * b if nesterov else b
    p[i] -= lr * d


@njit(cache=True, parallel=True)
def _adam(p, g, m, v, lr_bc1, inv_bc2, beta1, beta2, eps, weight_decay, parallel):
    if parallel:
        for i in prange(p.size):
            _adam_one(p, g, m, v, lr_bc1, inv_bc2, beta1, beta2, eps, weight_decay, i)
    else:
        for i in range(p.size):
            _adam_one(p, g, m, v, lr_bc1, inv_bc2, beta1, beta2, eps, weight_decay, i)


@njit(inline="always")
def _adam_one(p, g, m, v, lr_bc1, inv_bc2, beta1, beta2, eps, weight_decay, i):
    d = g[i] + weight_decay * p[i]
    mi = beta1 * m[i] + (1 - beta1) * d
    vi = beta2 * v[i] + (1 - beta2) * d * d
    m[i], v[i] = mi, vi
    p[i] -= lr_bc1 * mi / (np.sqrt(vi * inv_bc2) + eps)


def _flat_state(*arrays):
    """Flat C-order views of in-place state arrays; a non-contiguous one gets a contiguous copy, returned
    alongside it so that the wrapper can write the result back."""
    flats, back = [], []
    for a in arrays:
        c = _c(a)
        flats.append(c.reshape(-1))
        if c is not a:
            back.append((a, c))
    return flats, back


def sgd_update(p, g, buf, lr, momentum, nesterov, weight_decay):
    """PyTorch's SGD (see reference.sgd_update): p and buf updated in place in one pass, g left as it was.
    ``buf`` may be None when momentum == 0."""
    _checks.check_update("sgd_update", p, g, buf=buf)
    t = p.dtype.type
    (fb,), back = _flat_state(buf if buf is not None else np.empty(0, p.dtype))
    _sgd(p.reshape(-1), _c(g).reshape(-1), fb, t(lr), t(momentum), bool(nesterov), t(weight_decay),
         parallel(p.size))
    for a, c in back:
        a[...] = c


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """PyTorch's Adam with bias correction (see reference.adam_update): p, m, v updated in place, one pass."""
    _checks.check_update("adam_update", p, g, m=m, v=v)
    t = p.dtype.type
    (fm, fv), back = _flat_state(m, v)
    _adam(p.reshape(-1), _c(g).reshape(-1), fm, fv, t(lr / (1 - beta1**step)), t(1 / (1 - beta2**step)),
          t(beta1), t(beta2), t(eps), t(weight_decay), parallel(p.size))
    for a, c in back:
        a[...] = c
