"""Validate-then-time race of Numba kernel variants: the evidence behind kernels/numba_ops.py's choices.

Every variant first has to reproduce the NumPy backend's result (itself held to kernels/reference.py by the
test suite) within float32 tolerance; only then is it timed. Timings are medians of repeated runs, in
microseconds per call, float32, on the shapes of the reference models (lenet5, convnet) at several batch
sizes. Losing variants that are not a setting of numba_ops live here only.

    .venv/bin/python -m benchmarks.race_numba_kernels              # every race (a few minutes)
    .venv/bin/python -m benchmarks.race_numba_kernels conv pool    # some of them

Run it on a quiet machine: another busy process on the same cores makes every number meaningless.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
from numba import njit, prange

from minigrad.kernels import numba_ops as nb
from minigrad.kernels import numba_runtime as rt
from minigrad.kernels import numpy_ops as npo

DT = np.float32
RNG = np.random.default_rng(0)

#: (name, C, F, K, H): every conv layer of lenet5 and convnet on 28x28 inputs.
CONV_LAYERS = [("lenet.conv1", 1, 6, 5, 28), ("lenet.conv2", 6, 16, 5, 12),
               ("convnet.conv1", 1, 32, 3, 28), ("convnet.conv2", 32, 64, 3, 26)]
#: (name, C, H): every 2x2 max-pool input.
POOL_LAYERS = [("lenet.pool1", 6, 24), ("lenet.pool2", 16, 8), ("convnet.pool", 64, 24)]


def rand(*shape):
    return RNG.standard_normal(shape).astype(DT)


def _busy_seconds():
    """CPU seconds all processes have spent busy since boot (from /proc/stat), and this process's share."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    own = os.times()
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system


#: Seconds to pause after a variant that ran BLAS on several threads: OpenBLAS's idle workers spin for about
#: 0.1 s after such a call and, on 2 cores, leave the next variant's Numba threads one core (measured: convnet
#: conv2's forward at B=64 took 17 ms right after a NumPy conv, 8.5 ms from 0.1 s on).
BLAS_SETTLE = 0.15


def timeit(fns, before=None, rounds=7, budget=0.01, max_foreign=0.25, retries=8, settle_after=()):
    """Median seconds per call of each ``fns[name]()``, measured in interleaved rounds (every variant once
    per round) so that a burst of outside load hits all variants alike. After each timed block of a variant
    named in ``settle_after`` (those running BLAS's own threads) the round pauses BLAS_SETTLE seconds.

    Each round's time comes from a loop sized to ~``budget`` seconds; with ``before``, it runs untimed
    ahead of every single call instead (e.g. a GEMM, to time a kernel in the state a training step leaves
    the threads in). The CPU time that other processes used meanwhile is measured from /proc/stat; above
    ``max_foreign`` cores the case is measured again (after a pause), and marked "!" if it never was quiet.
    Returns ({name: seconds}, quiet).
    """
    inner = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        inner[name] = 1 if before else max(1, int(budget / max(time.perf_counter() - t0, 1e-7)))
    for attempt in range(retries):
        samples = {name: [] for name in fns}
        busy0, own0, wall0 = *_busy_seconds(), time.perf_counter()
        for _ in range(rounds):
            for name, fn in fns.items():
                if before is None:
                    t0 = time.perf_counter()
                    for _ in range(inner[name]):
                        fn()
                    samples[name].append((time.perf_counter() - t0) / inner[name])
                else:
                    for _ in range(9):
                        before()
                        t0 = time.perf_counter()
                        fn()
                        samples[name].append(time.perf_counter() - t0)
                if name in settle_after:
                    time.sleep(BLAS_SETTLE)
        busy1, own1 = _busy_seconds()
        foreign = ((busy1 - busy0) - (own1 - own0)) / (time.perf_counter() - wall0)
        if foreign <= max_foreign:
            break
        time.sleep(2.0 * (attempt + 1))
    return {name: statistics.median(v) for name, v in samples.items()}, foreign <= max_foreign


def check(name, got, want):
    """A variant must equal the NumPy backend (float32 tolerance, scaled by the result's magnitude)."""
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        if w is None:
            assert g is None, name
            continue
        g, w = np.asarray(g), np.asarray(w)
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * scale, err_msg=name)


def with_tuning(fn, **settings):
    def run(*args):
        with rt.tuned(**settings):
            return fn(*args)
    return run


#: Variants that run BLAS on its own threads (numpy_ops, the stacked conv): timeit pauses after them.
BLAS_THREADED = ("numpy", "stack-1M")


def race(title, cases, variants):
    """cases: [(label, args, oracle)], variants: {name: fn(*args)}. Validates every variant against the
    oracle (None: validated by the caller), then times them all; prints one row per case."""
    print(f"\n## {title} (us per call, median; * fastest, ! never quiet)")
    print(f"{'case':24s}" + "".join(f"{v:>15s}" for v in variants))
    for label, args, oracle in cases:
        if oracle is not None:
            for name, fn in variants.items():
                check(f"{title}/{label}/{name}", fn(*args), oracle)
        times, quiet = timeit({name: (lambda fn: lambda: fn(*args))(fn) for name, fn in variants.items()},
                              settle_after=BLAS_THREADED)
        best = min(times, key=times.get)
        print(f"{label:23s}{' ' if quiet else '!'}"
              + "".join(f"{t * 1e6:14.1f}{'*' if n == best else ' '}" for n, t in times.items()), flush=True)


# ----------------------------------------------------------------------------------------------------------
# conv2d. Variants (stride 1, no padding, as in the models):
#   numpy        numpy_ops: whole-batch im2col as rows + one GEMM, BLAS threads only
#   numba_ops    the kernels as TUNING picks
#   direct       numba_ops' direct forward kernel for every layer; backward: numba_ops' direct weight
#                gradient and dx as the forward kernel on padded dy (conv_direct_backward, here only); batch
#                split
#   wide-XK      numba_ops' im2col path: columns (C*KH*KW, chunk*Lr) of X KiB in its GEMM layout, one GEMM per
#                chunk, batch split over the threads (each block with single-threaded BLAS)
#   wide-256K-1t the same on one thread (what the split is worth)
#   stack-1M     per-sample columns (C*KH*KW, OH*OW) and a stacked matmul W @ cols[n] (output already NCHW,
#                no permuting copy, one small GEMM per sample), Numba prange + BLAS's own threads
#   winograd     numba_ops' Winograd F(2x2, 3x3) for every 3x3 stride-1 layer with an even output, whatever its
#                channels (dw on the im2col path); the others on wide-256K


@njit(cache=True, parallel=True)
def _im2col_stack(x, KH, KW, cols):
    N, C, H, W = x.shape
    OH, OW = H - KH + 1, W - KW + 1
    K = C * KH * KW
    for t in prange(N * K):
        n, k = t // K, t % K
        c, r = k // (KH * KW), k % (KH * KW)
        kh, kw = r // KW, r % KW
        for i in range(OH):
            for j in range(OW):
                cols[n, k, i * OW + j] = x[n, c, i + kh, j + kw]


@njit(cache=True, parallel=True)
def _col2im_stack(dcols, KH, KW, dx):
    N, C, H, W = dx.shape
    OH, OW = H - KH + 1, W - KW + 1
    for t in prange(N * C):
        n, c = t // C, t % C
        for kh in range(KH):
            for kw in range(KW):
                k = (c * KH + kh) * KW + kw
                for i in range(OH):
                    for j in range(OW):
                        dx[n, c, i + kh, j + kw] += dcols[n, k, i * OW + j]


def _stack_chunks(N, K, P, budget=1 << 20):
    nb_ = max(1, min(N, budget // (K * P * 4)))
    return [(s, min(N, s + nb_)) for s in range(0, N, nb_)]


def conv_stack_forward(x, w, b):
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = H - KH + 1, W - KW + 1
    K, P = C * KH * KW, OH * OW
    y = np.empty((N, F, P), DT)
    for s, e in _stack_chunks(N, K, P):
        cols = np.empty((e - s, K, P), DT)
        _im2col_stack(x[s:e], KH, KW, cols)
        np.matmul(w.reshape(F, K), cols, out=y[s:e])
    y += b[:, None]
    return y.reshape(N, F, OH, OW), (x, w)


def conv_stack_backward(dy, cache):
    x, w = cache
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = dy.shape[2:]
    K, P = C * KH * KW, OH * OW
    dy3 = dy.reshape(N, F, P)
    dwm = np.zeros((F, K), DT)
    dx = np.zeros_like(x)
    for s, e in _stack_chunks(N, K, P):
        cols = np.empty((e - s, K, P), DT)
        _im2col_stack(x[s:e], KH, KW, cols)
        dwm += np.matmul(dy3[s:e], cols.transpose(0, 2, 1)).sum(axis=0)
        _col2im_stack(np.matmul(w.reshape(F, K).T, dy3[s:e]), KH, KW, dx[s:e])
    return dx, dwm.reshape(w.shape), dy3.sum(axis=(0, 2))


def conv_direct_backward(dy, cache):
    """Direct backward (losing variant): dw, db by numba_ops' direct weight gradient; dx by the direct forward
    kernel on dy zero-padded by K-1 with the filters flipped and in/out channels swapped; both split over the
    threads as the kernels split a batch."""
    xp, w, has_bias, stride, padding = cache
    N, F, KH, KW = dy.shape[0], w.shape[0], w.shape[2], w.shape[3]
    w_adj = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    T = rt.blocks(N, 2 * dy.size * w[0].size)
    dws, dbs, dx = np.zeros((T,) + w.shape, DT), np.zeros((T, F), DT), np.empty_like(xp)
    nb._direct_weight_grad(KH, KW)(xp, dy, dws, dbs)
    dy_pad = np.pad(dy, ((0, 0), (0, 0), (KH - 1, KH - 1), (KW - 1, KW - 1)))
    nb._direct_forward(KH, KW)(dy_pad, w_adj, np.zeros(w.shape[1], DT), dx, T)
    return dx, dws.sum(axis=0), dbs.sum(axis=0)


def _im2col_setting(chunk):
    return {"conv_direct_max_filters": 0, "conv_direct_wgrad_max_channels": 0, "conv_chunk_bytes": chunk,
            "conv_winograd_min_channels": 1 << 62}


#: name -> (forward, backward, TUNING settings).
CONV_VARIANTS = {
    "numpy": (npo.conv2d_forward, npo.conv2d_backward, {}),
    "numba_ops": (nb.conv2d_forward, nb.conv2d_backward, {}),
    "direct": (nb.conv2d_forward, conv_direct_backward, {"conv_direct_max_filters": 1 << 62}),
    "wide-256K": (nb.conv2d_forward, nb.conv2d_backward, _im2col_setting(1 << 18)),
    "wide-1M": (nb.conv2d_forward, nb.conv2d_backward, _im2col_setting(1 << 20)),
    "wide-4M": (nb.conv2d_forward, nb.conv2d_backward, _im2col_setting(1 << 22)),
    "wide-256K-1t": (nb.conv2d_forward, nb.conv2d_backward, {**_im2col_setting(1 << 18), "split_min_work": 1 << 62}),
    "stack-1M": (lambda x, w, b, s, p: conv_stack_forward(x, w, b), conv_stack_backward, {}),
    "winograd": (nb.conv2d_forward, nb.conv2d_backward, {**_im2col_setting(1 << 18), "conv_winograd_min_channels": 0}),
}


def race_conv(batches):
    fwd_cases, bwd_cases = [], []
    for name, C, F, K, H in CONV_LAYERS:
        for N in batches:
            x, w, b = rand(N, C, H, H), rand(F, C, K, K), rand(F)
            y, cache = npo.conv2d_forward(x, w, b, 1, 0)
            dy = rand(*y.shape)
            label = f"{name} B={N}"
            fwd_cases.append((label, (x, w, b), y))
            caches = {v: with_tuning(f, **t)(x, w, b, 1, 0)[1] for v, (f, _, t) in CONV_VARIANTS.items()}
            bwd_cases.append((label, (dy, caches), npo.conv2d_backward(dy, cache)))
    race("conv2d forward", fwd_cases,
         {v: (lambda f, t: lambda x, w, b: with_tuning(f, **t)(x, w, b, 1, 0)[0])(f, t)
          for v, (f, _, t) in CONV_VARIANTS.items()})
    race("conv2d backward", bwd_cases,
         {v: (lambda bw, t, v: lambda dy, caches: with_tuning(bw, **t)(dy, caches[v]))(bw, t, v)
          for v, (_, bw, t) in CONV_VARIANTS.items()})


def race_conv_first(batches):
    """The backward of a first layer (need_dx=False: only dw and db): im2col + GEMM against the direct weight
    gradient (TUNING["conv_direct_wgrad_max_channels"])."""
    variants = {"im2col": _im2col_setting(1 << 18), "direct": {"conv_direct_wgrad_max_channels": 1 << 62}}
    cases = []
    for name, C, F, K, H in CONV_LAYERS:
        if C != 1:
            continue
        for N in batches:
            x, w, b = rand(N, C, H, H), rand(F, C, K, K), rand(F)
            y, cache = npo.conv2d_forward(x, w, b, 1, 0)
            dy = rand(*y.shape)
            caches = {v: with_tuning(nb.conv2d_forward, **t)(x, w, b, 1, 0)[1] for v, t in variants.items()}
            cases.append((f"{name} B={N}", (dy, caches), npo.conv2d_backward(dy, cache, False)))
    race("conv2d backward without dx (first layers)", cases,
         {v: (lambda t, v: lambda dy, caches: with_tuning(nb.conv2d_backward, **t)(dy, caches[v], False))(t, v)
          for v, t in variants.items()})


# ----------------------------------------------------------------------------------------------------------
# max-pool, relu, SGD: NumPy vs the Numba kernel on one thread vs on the pool


SERIAL = {"parallel_min_elements": 1 << 62, "pool_parallel_min_elements": 1 << 62}
PARALLEL = {"parallel_min_elements": 1, "pool_parallel_min_elements": 1}


@njit(cache=True, parallel=True)
def _maxpool_generic(x, kernel, stride, y, arg):
    """Losing variant: kernel and stride as run-time values (numba_ops compiles them in as constants)."""
    C = x.shape[1]
    for t in prange(x.shape[0] * C):
        n, c = t // C, t % C
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                best, at = x[n, c, i * stride, j * stride], 0
                for r in range(kernel):
                    for q in range(kernel):
                        v = x[n, c, i * stride + r, j * stride + q]
                        if v > best or (v != v and best == best):
                            best, at = v, r * kernel + q
                y[n, c, i, j] = best
                arg[n, c, i, j] = at


def maxpool_generic_forward(x):
    N, C, H, W = x.shape
    y, arg = np.empty((N, C, H // 2, W // 2), DT), np.empty((N, C, H // 2, W // 2), np.uint8)
    _maxpool_generic(x, 2, 2, y, arg)
    return y


@njit(cache=True)
def _maxpool_select_scan(x, y, arg):
    """Losing variant (numba_ops' until it lost): 2x2 windows, one select per tap on a running max and argmax.
    Its time follows how predictable the data are, as a branch's would (1.9x slower on random activations than
    on smooth images)."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(y.shape[2]):
                for j in range(y.shape[3]):
                    best, a = x[n, c, 2 * i, 2 * j], 0
                    for r in range(2):
                        for q in range(2):
                            v = x[n, c, 2 * i + r, 2 * j + q]
                            take = (not v <= best) & (best == best)
                            best = v if take else best
                            a = r * 2 + q if take else a
                    y[n, c, i, j], arg[n, c, i, j] = best, a


@njit(cache=True)
def _maxpool_select_write(dy, arg, dx):
    """Losing variant (numba_ops' until it lost): each of a window's taps written through a select on the
    argmax (numba_ops zeroes the rows, then stores each gradient at its tap)."""
    for n in range(dy.shape[0]):
        for c in range(dy.shape[1]):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    d, a = dy[n, c, i, j], arg[n, c, i, j]
                    for r in range(2):
                        for q in range(2):
                            dx[n, c, 2 * i + r, 2 * j + q] = d if a == r * 2 + q else 0


def maxpool_select_scan_forward(x):
    N, C, H, W = x.shape
    y, arg = np.empty((N, C, H // 2, W // 2), DT), np.empty((N, C, H // 2, W // 2), np.uint8)
    _maxpool_select_scan(x, y, arg)
    return y


def maxpool_select_write_backward(dy, arg):
    N, C, OH, OW = dy.shape
    dx = np.empty((N, C, 2 * OH, 2 * OW), DT)
    _maxpool_select_write(dy, arg, dx)
    return dx


def _smooth(N, C, H):
    """Activations as smooth as images (neighbouring pixels alike): a branchy kernel's best case."""
    from minigrad.profiling import calibration

    return calibration.activation_planes(calibration.training_images()[1], N, C, H, "float32")


def race_pool(batches):
    fwd, bwd = [], []
    for name, C, H in POOL_LAYERS:
        for N in batches:
            for data, x in (("random", rand(N, C, H, H)), ("smooth", _smooth(N, C, H))):
                y, cache = npo.maxpool2d_forward(x, 2, 2)
                dy = rand(*y.shape)
                fwd.append((f"{name} B={N} {data}", (x,), y))
                bwd.append((f"{name} B={N} {data}", (dy, {"numpy": cache, "numba": nb.maxpool2d_forward(x, 2, 2)[1]}),
                            npo.maxpool2d_backward(dy, cache)))
    race("maxpool2d 2x2 forward", fwd, {
        "numpy": lambda x: npo.maxpool2d_forward(x, 2, 2)[0],
        "generic-par": maxpool_generic_forward,
        "select-scan": maxpool_select_scan_forward,
        "numba-serial": lambda x: with_tuning(nb.maxpool2d_forward, **SERIAL)(x, 2, 2)[0],
        "numba-par": lambda x: with_tuning(nb.maxpool2d_forward, **PARALLEL)(x, 2, 2)[0]})
    race("maxpool2d 2x2 backward", bwd, {
        "numpy": lambda dy, c: npo.maxpool2d_backward(dy, c["numpy"]),
        "select-write": lambda dy, c: maxpool_select_write_backward(dy, c["numba"][0]),
        "numba-serial": lambda dy, c: with_tuning(nb.maxpool2d_backward, **SERIAL)(dy, c["numba"]),
        "numba-par": lambda dy, c: with_tuning(nb.maxpool2d_backward, **PARALLEL)(dy, c["numba"])})


def race_relu(sizes):
    cases = []
    for n in sizes:
        x, dy = rand(n), rand(n)
        y, cache = npo.relu_forward(x)
        cases.append((f"n={n}", (x, dy), (y, npo.relu_backward(dy, cache))))

    def step(mod, **t):
        def run(x, dy):
            with rt.tuned(**t):
                y, cache = mod.relu_forward(x)
                return y, mod.relu_backward(dy, cache)
        return run

    race("relu forward+backward", cases, {"numpy": step(npo), "numba-serial": step(nb, **SERIAL),
                                          "numba-par": step(nb, **PARALLEL)})


def race_parallel_threshold(sizes):
    """The serial/parallel crossover of a memory-bound loop (relu forward), each call right after a
    128x128 single-threaded SGEMM, the state a conv or linear layer leaves the threads in."""
    a, c = rand(128, 128), np.empty((128, 128), DT)
    print("\n## parallel crossover: relu forward after a GEMM (us per call, median; ! never quiet)")
    print(f"{'elements':>12s}{'serial':>12s}{'parallel':>12s}")
    for n in sizes:
        x = rand(n)
        fns = {"serial": with_tuning(lambda: nb.relu_forward(x), **SERIAL),
               "parallel": with_tuning(lambda: nb.relu_forward(x), **PARALLEL)}
        with rt.OneBlasThread():
            times, quiet = timeit(fns, before=lambda: rt.matmul(a, False, a, False, c))
        print(f"{n:12d}{times['serial'] * 1e6:12.1f}{times['parallel'] * 1e6:12.1f}{'' if quiet else ' !'}",
              flush=True)


def race_sgd(sizes):
    cases = []
    for n in sizes:
        p, g = rand(n), rand(n)
        want_p, want_b = p.copy(), np.zeros_like(p)
        npo.sgd_update(want_p, g, want_b, 0.01, 0.9, False, 0.0)
        cases.append((f"n={n}", (p, g), None))
        for variant in (npo.sgd_update, with_tuning(nb.sgd_update, **SERIAL), with_tuning(nb.sgd_update, **PARALLEL)):
            got_p, got_b = p.copy(), np.zeros_like(p)
            variant(got_p, g, got_b, 0.01, 0.9, False, 0.0)
            check("sgd", (got_p, got_b), (want_p, want_b))

    def run(fn):
        state = {}

        def go(p, g):
            p2, buf = state.setdefault(id(p), (p.copy(), np.zeros_like(p)))
            fn(p2, g, buf, 0.01, 0.9, False, 0.0)
        return go

    race("sgd_update momentum 0.9 (validated above, in place)", cases,
         {"numpy": run(npo.sgd_update), "numba-serial": run(with_tuning(nb.sgd_update, **SERIAL)),
          "numba-parallel": run(with_tuning(nb.sgd_update, **PARALLEL))})


def race_linear_dw(batches):
    """convnet's fc1 weight gradient (128 x 9216) at small batches: GEMM (inner dimension N) vs Numba's
    sum of outer products, both inside numba_ops.linear_backward (single thread: below the split size)."""
    cases = []
    for N in batches:
        x, w, dy = rand(N, 9216), rand(128, 9216), rand(N, 128)
        cases.append((f"fc1 B={N}", (dy, (x, w, True)), npo.linear_backward(dy, (x, w, True))))
    race("linear backward, 9216->128", cases, {
        "numpy": npo.linear_backward,
        "gemm": with_tuning(nb.linear_backward, linear_outer_max_batch=0),
        "outer": with_tuning(nb.linear_backward, linear_outer_max_batch=1 << 62)})


def race_xent(batches):
    def step(mod):
        def run(z, t):
            loss, cache = mod.softmax_xent_forward(z, t)
            return loss, mod.softmax_xent_backward(np.float32(1), cache)
        return run

    cases = []
    for N in batches:
        z, t = rand(N, 10), RNG.integers(0, 10, N)
        cases.append((f"B={N}", (z, t), step(npo)(z, t)))
    race("softmax_xent forward+backward", cases, {"numpy": step(npo), "numba": step(nb)})


RACES = {
    "conv": lambda: race_conv([1, 16, 64, 256]),
    "conv-first": lambda: race_conv_first([1, 16, 64, 256]),
    "pool": lambda: race_pool([1, 16, 64, 256]),
    "relu": lambda: race_relu([3456, 21632, 36864, 1 << 16, 1 << 18, 1 << 20, 1 << 23]),
    "threshold": lambda: race_parallel_threshold([1 << k for k in range(12, 24, 2)]),
    "sgd": lambda: race_sgd([6 * 25, 120 * 256, 18432, 9216 * 128]),
    "linear": lambda: race_linear_dw([1, 2, 4, 8, 16]),
    "xent": lambda: race_xent([1, 16, 256]),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("races", nargs="*", choices=[[], *RACES], default=[],
                        help="which races to run (default: all)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"# race_numba_kernels: float32, threads {rt.get_threads()}, load average {load:.2f}")
    if load > 1.5:
        print("# WARNING: the machine is busy; timings below are not trustworthy", file=sys.stderr)
    t0 = time.perf_counter()
    nb.warmup(("float32",))
    print(f"# warmup (compile or cache load) {time.perf_counter() - t0:.1f} s, not counted below")
    for name in args.races or RACES:
        RACES[name]()


if __name__ == "__main__":
    main()
