"""The machine calibration of the cost model (``profiling/predict.py``): what this machine does with each
primitive a training step is made of, measured once per machine and cached with its date.

Measured (never on a reference model; every array is synthetic, with shapes chosen unlike theirs, the pooling
kernels' inputs and the synthetic steps' images made from the training images: ``training_images``):

* ``gemm``: seconds of a BLAS product over a grid of (m, n, k) from 1 to 262,144 (every power of two up to
  16,384: across a factor of four, interpolation missed the cache level a product's operands fall out of) in
  each of the four operand layouts the kernels use, with BLAS on the threads the backend gives it (the Numba
  backend's GEMMs run on one thread inside its own block split). Cells whose product is too large to time quickly are
  filled at the rate of the nearest measured cell (a large GEMM runs at the BLAS peak). Every cell is timed in
  PASSES passes over the grid, the fastest kept, and again where its fastest two disagree (``timed_in_passes``);
* ``edges``: skinny products whose small sides are not a power of two, which the grid's interpolation between
  powers of two prices too fast: per layout, for each pair of (small side, long side), the product with that
  side at every width from 3 to 63 that is not a power of two, its long side at EDGE_LONG and the third at
  EDGE_OTHER (BLAS computes in tiles of a few rows, and a side of 25 runs partly in narrower edge tiles: one
  thread, tn 16x25x9216 took 164 us, 16x24 130 and 16x32 154; lenet5's 6x25 weight gradient ran 36% slower
  than the grid priced it);
* ``runs`` and ``chunks`` (Numba only): products as its kernels run them from jitted code, back to back: Winograd's
  16 per sample on strided views (``measure_runs``), an im2col chunk's one per chunk on operands that stay hot
  (``measure_chunks``); each prices its products at its ratio to the grid;
* ``small_path_jumps``: per layout, how much slower per FLOP a product just past OpenBLAS's small-matrix
  path (``small_path``) runs than one just inside it: where it jumps, the grid is interpolated within a path;
* ``curves``: seconds against elements for each memory pass of the backend (``plans.py`` names them: im2col,
  col2im, layout changes, fills, reductions) and for each whole kernel without a GEMM (relu, pooling, the
  loss, the optimizer update), from 16 to 16M elements, each point in PASSES passes, the fastest kept
  (``timed_in_passes``); the pooling kernels on a random convolution of the training images, since their
  branches follow the data (``activation_planes``). A whole kernel is timed cold, as a step calls it
  after other kernels and Python ran, except those a step calls back to back (``plans.BACK_TO_BACK``: the
  optimizer's update of each parameter in turn); a pass and a GEMM hot, back to back, as a kernel's own loops
  run them (how a step meets each kernel's wrapper is in its call cost, measured in a synthetic step). Each
  whole kernel is timed a second time at every other size (``name~deep``), after a pass over DEEP_EVICT_BYTES
  that leaves none of its memory in any cache: how a step whose working set overflows the last-level cache
  finds its data, the block its output lands in and its page tables. The smallest size's penalty (the loss on
  16 logits took 16 us cold and 73 us deep) is the kernel's code and the interpreter's state, which a step
  keeps warm: only the penalty beyond it is priced (``Calibration.curve_seconds``);
* ``widths``: each pass and kernel that runs along short rows (``plans.wide``) at one size for every row width
  from 2 to 32 and a few to 128, in PASSES passes: its cost per element jumps with how a row splits into SIMD
  vectors (at float32 on this machine, im2col's rate went 0.97, 1.66, 1.54, 2.12 and 1.84 G elements/s at
  widths 6, 8, 12, 24 and 30), which interpolating between the two widths of its size curves cannot follow;
* ``l1_conflict``: the level-1 data cache's sets, ways and line (from the OS), and what a transposing copy pays
  per element where its strided runs overflow the sets their addresses fall into (``l1_conflicts``; at float32
  here, NumPy's copy took 0.42-0.54 ns per element in 10 geometries that fit and 1.10-1.48 in 7 that overflow);
* ``far``: the same for a GEMM's operand last used a whole step ago (a weight matrix, the forward's
  activations in the backward): a memory-bound product (64 x 8 x 16,384, its 4 MiB operand not re-read) after
  passes over 4 MiB to DEEP_EVICT_BYTES, as seconds per byte of that operand from DRAM and the fraction of
  the way to it against the bytes passed over (each size in PASSES passes, the fastest kept), and the seconds
  per byte of a matrix-vector product's 4 MiB matrix from DRAM (``matrix_vector``), which streams it unpacked;
* ``reach``: how much of that deep penalty a kernel pays against how many bytes were touched since its memory
  was last used: relu on a synthetic array after passes over 4 MiB to DEEP_EVICT_BYTES, each as the fraction
  of the way from the 4 MiB time to the deep one (0: the data stayed in cache, 1: it came from DRAM; each size
  in PASSES passes, the fastest kept);
* ``tiny``: raw step-level times the model turns into fixed costs: the time the training loop spends outside
  kernel calls per step on two synthetic models, the two-layer ``step_model`` and the eight-run
  ``synthetic_cnn`` at several batch sizes (its growth per layer is a layer's module call, autograd node and
  optimizer entries, as a step between real kernels runs them, against the step's working set), and each
  kernel call of the synthetic CNN's step as the step meets it (what a call costs beyond its priced terms
  depends on whether its wrapper is still warm: ``_in_step``) and its update calls at each batch size (what a
  call pays for the step's data), each in TINY_PASSES passes, the fastest kept;
* ``pass_disagreement``: how far the fastest two timings of each curve point and GEMM cell came out apart (the
  median and 90th percentile of the second fastest over the fastest, less 1: ``disagreement_summary``), the
  calibration's own noise, which ``profile predict`` prints (on this machine, in four passes and before cells
  were timed again, a median of 2-7% and a 90th percentile of 6% in a quiet hour to 47% in a busy one).

``Calibration`` answers the model's lookups: log-log interpolation between measured sizes, the per-element
cost of the largest size beyond it, the smallest size's time below it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from . import plans

VERSION = 49  # of what a calibration holds and of the kernels it timed: another version is measured again
GEMM_DIMS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536, 262144)
QUICK_GEMM_DIMS = (1, 16, 256, 4096, 65536)   # ``quick``: a rough calibration in seconds
GEMM_LAYOUTS = ("nn", "nt", "tn", "tt")
GEMM_MAX_FLOPS = 2 ** 28          # larger products are filled at the rate of a measured one
GEMM_MAX_ELEMENTS = 2 ** 22       # per operand
CURVE_SIZES = tuple(4 ** i for i in range(2, 13))  # 16 .. 16,777,216 elements: past the last-level cache
QUICK_CURVE_SIZES = tuple(8 ** i for i in range(1, 8))
WIDTHS = (6, 30)                  # row widths of the passes that run along short rows (plans.wide)


def _evict(nbytes: int = 0) -> None:
    """Leave the caches as a kernel of a training step finds them: the previous kernels' data in L2, not this
    one's, and other code run in between (a pass over a 4 MiB buffer and a few NumPy calls). ``nbytes``: pass
    over that many bytes instead (DEEP_EVICT_BYTES: nothing of the kernel's memory left in any cache)."""
    nbytes = nbytes or EVICT_BYTES
    buf = _EVICT.get(nbytes)
    if buf is None:
        buf = _EVICT[nbytes] = np.zeros(nbytes // 8)
    buf += 1.0
    np.maximum(buf[:256], 0.5, out=buf[:256])
    float(buf[:64].sum())


_EVICT: dict = {}
EVICT_BYTES = 4 << 20
SHARE_BYTES = 1 << 20            # half a core's L2 here: a chunk's other buffers (columns, gradients, weights)
DEEP_EVICT_BYTES = 512 << 20     # twice this machine class's last-level cache and more
REACH_BYTES = tuple(1 << i for i in range(22, 30))  # 4 MiB .. 512 MiB
PROFILE_WIDTHS = (*range(2, 33), 40, 48, 64, 96, 128)
PROFILE_ELEMENTS = 1 << 16
REACH_ELEMENTS = 1 << 21


def _seconds(fn, inputs=(), budget: float = 0.05, most: int = 100, cold: bool = True, evict: int = 0) -> float:
    """Median seconds of single calls of ``fn``, after a warm-up call, as many as fit ``budget`` seconds (5 to
    ``most``). Each result is freed before the next call: in a training step's steady state the allocator
    reuses the memory of the step before (no page faults after the first steps), and so it does here.

    cold: each call as a kernel call of a training step meets the machine: after ``_evict()`` (other code and
        data ran since the last call) and a read of ``inputs`` (which the previous kernel has just written).
        Otherwise (a pass or GEMM inside a kernel, run back to back with the kernel's other passes and chunks,
        as its loops run them) only SHARE_BYTES are touched between calls: what the kernel's other passes and
        buffers of a chunk leave of the core's L2 to this one.
    evict: with ``cold``, the bytes ``_evict`` passes over (default EVICT_BYTES).
    """
    def prepare():
        if cold:
            _evict(evict)
            for a in inputs:
                a.sum()
        else:
            _evict(SHARE_BYTES)
    fn()
    prepare()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    calls = int(min(most, max(5, budget / max(one + (3e-4 if cold else 0.0), 1e-7))))
    times = []
    for _ in range(calls):
        prepare()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# -- GEMMs -----------------------------------------------------------------------------------------------------


def _operands(layout: str, m: int, n: int, k: int, dtype, rng):
    """Random operands of the product as the layout stores them (uniform: their values do not change a GEMM's
    time, and drawing them so is ten times faster than normal draws in float64, which took most of the time)."""
    a = rng.random((k, m) if layout[0] == "t" else (m, k), dtype=dtype)
    b = rng.random((n, k) if layout[1] == "t" else (k, n), dtype=dtype)
    return (a.T if layout[0] == "t" else a), (b.T if layout[1] == "t" else b)


def _fits(m, n, k) -> bool:
    return 2 * m * n * k <= GEMM_MAX_FLOPS and max(m * k, k * n, m * n) <= GEMM_MAX_ELEMENTS


def _numpy_product(layout, a, b):
    return lambda: a @ b


def _numba_product(layout, a, b, times: int = 1):
    """The Numba backend's GEMM (NumPy's BLAS called from jitted code, as its kernels call it) on the operands as
    stored; ``times`` of them back to back from jitted code."""
    from minigrad.kernels.numba_runtime import matmul

    ta, tb = layout[0] == "t", layout[1] == "t"
    c = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    a, b = (a.T if ta else a), (b.T if tb else b)
    return lambda: matmul(a, ta, b, tb, c, times)


#: How each backend multiplies: a function of the layout and the two operands (as the product sees them) -> a
#: call.
PRODUCTS = {"numpy": _numpy_product, "numba": _numba_product}


#: How many passes ``timed_in_passes`` makes over a calibration's cells (``QUICK_PASSES`` in a quick one), and over
#: the fixed overheads' long runs of steps (``TINY_PASSES``). On this class of machine, 80 numba GEMM cells timed in
#: six passes: the fastest of the first two passes was more than 20% above the fastest of all six for 36% of the
#: cells, of the first three for 22%, of the first four for 11% (the machine ran at 1.01-1.32x its best from one
#: pass to the next, by the cells' median).
PASSES = 4
QUICK_PASSES = 2
TINY_PASSES = 2
#: A cell of a full calibration (PASSES passes or more) whose fastest two timings lie more than AGREE apart is timed
#: again, in up to SETTLE more passes over such cells alone, until they agree: its kept timing stood alone, and
#: on this machine a slow minute can last through all of a cell's four passes (one numpy calibration's curves came
#: out with a 90th percentile of 47% between their fastest two timings, against 6% in a quiet hour, and priced the
#: loss and relu of a step up to twice what they took).
AGREE = 0.10
SETTLE = 4


def timed_in_passes(cells: list, time_cell, progress=None, what: str = "gemm", seconds=None,
                    disagreement: list | None = None, passes: int = PASSES, settle: int | None = None) -> list:
    """Seconds of each cell: ``time_cell(cell)`` in ``passes`` passes over all cells, every other one in the
    reverse order (so that a cell's timings lie as far apart in time as the passes allow), the fastest kept
    (``seconds``: how long a timing that is not a number of seconds took, to tell the fastest). Then the cells
    whose fastest two timings lie more than AGREE apart are timed again, in up to ``settle`` more passes over
    them alone (default SETTLE where ``passes`` is at least PASSES, else none: a quick calibration's and the
    fixed overheads' long runs are not).
    ``disagreement``: a list that gets each cell's second fastest timing over its fastest, less 1 (how far the
    kept timing stands from the next: the cell's own noise).

    On this class of machine one burst of calls can land in a slow second (the same product's median over a
    20 ms burst moved by up to 39% between rounds a few seconds apart; a Python loop took 7-8 or 12-13 ms from
    one second to the next, other tenants sharing the cores): a cell timed once keeps such a burst, and a slow
    burst only ever slows a timing. The fastest pass is the machine undisturbed, as ``predict.measure_rounds``
    keeps a batch size's fastest round."""
    seconds = seconds or float
    settle = (SETTLE if passes >= PASSES else 0) if settle is None else settle
    timings: list = [[] for _ in cells]

    def one_pass(indices, label):
        for i in indices:
            timings[i].append(time_cell(cells[i]))
        if progress:
            progress(label)

    def apart(i):
        ranked = sorted(seconds(t) for t in timings[i])
        return ranked[1] / ranked[0] - 1 if len(ranked) > 1 and ranked[0] > 0 else 0.0

    everyone = list(range(len(cells)))
    for p in range(passes):
        one_pass(everyone[::1 if p % 2 == 0 else -1], f"{what}, pass {p + 1} of {passes}")
    for p in range(settle):
        unsettled = [i for i in everyone if apart(i) > AGREE]
        if not unsettled:
            break
        one_pass(unsettled[::1 if (passes + p) % 2 == 0 else -1],
                 f"{what}, {len(unsettled):,} cells whose fastest two timings differ, again ({p + 1} of {settle})")
    if disagreement is not None:
        disagreement.extend(apart(i) for i in everyone
                            if len(timings[i]) > 1 and min(seconds(t) for t in timings[i]) > 0)
    return [min(t, key=seconds) for t in timings]


def disagreement_summary(disagreement: list) -> dict:
    """How far apart the passes of ``timed_in_passes`` came out: the cells, and the median and 90th percentile of
    their disagreement (the second fastest timing over the fastest, less 1)."""
    if not disagreement:
        return {"cells": 0, "median": 0.0, "p90": 0.0}
    return {"cells": len(disagreement), "median": float(np.median(disagreement)),
            "p90": float(np.percentile(disagreement, 90))}


def measure_gemm(dtype: str, dims=GEMM_DIMS, layouts=GEMM_LAYOUTS, progress=None, backend="numpy",
                 disagreement: list | None = None, passes: int = PASSES) -> dict:
    """{layout: seconds as a nested list [i_m][i_n][i_k] over ``dims``}: measured where the product fits (in
    passes: ``timed_in_passes``, each cell's disagreement added to ``disagreement``), else the time of the largest
    fitting product along the largest dimension scaled by the work. The products are the ``backend``'s own
    (PRODUCTS)."""
    product = PRODUCTS[backend]
    rng = np.random.default_rng(0)
    d = len(dims)
    cells = [(layout, i, j, l) for layout in layouts for i, j, l in itertools.product(range(d), repeat=3)
             if _fits(dims[i], dims[j], dims[l])]

    def time_cell(cell):
        layout, i, j, l = cell
        a, b = _operands(layout, dims[i], dims[j], dims[l], dtype, rng)
        return _seconds(product(layout, a, b), budget=0.01, most=8, cold=False)

    grids = {layout: np.full((d, d, d), np.nan) for layout in layouts}
    for (layout, i, j, l), seconds in zip(cells, timed_in_passes(cells, time_cell, progress=progress,
                                                                 disagreement=disagreement, passes=passes)):
        grids[layout][i, j, l] = seconds
    out = {}
    for layout, grid in grids.items():
        for i, j, l in itertools.product(range(d), repeat=3):
            if np.isnan(grid[i, j, l]):
                grid[i, j, l] = _filled(grid, (i, j, l), dims)
        out[layout] = grid.tolist()
    return out


#: Winograd's products (``plans._winograd_samples``) run 16 in a row on strided views of one sample's transformed
#: tiles, from jitted code, their operands just written (``numba_runtime.gemm_run``), without the call from Python
#: that each of the GEMM grid's cells carries (float32, one thread, in a run against the grid: 16x16x16 0.44 against
#: 2.25 us, 64x32x32 2.5 against 4.3, 144x64x32 10.1 against 10.8). Timed as runs over this grid of (tiles, out
#: channels, in channels); ``Calibration.run_factor`` prices a product of a run as its grid time times the run's
#: ratio to it.
RUN_DIMS = ((16, 64, 144, 256, 576), (16, 32, 64, 128), (16, 32, 64, 128))
QUICK_RUN_DIMS = ((16, 144), (16, 64), (16, 64))
RUN_LENGTH = 16


def measure_runs(dtype: str, dims=RUN_DIMS, disagreement: list | None = None, passes: int = PASSES) -> dict:
    """{"dims": ``dims``, "seconds": [i_m][i_n][i_k] seconds per product in a run of RUN_LENGTH} (Numba only)."""
    from minigrad.kernels.numba_runtime import matmul_run

    rng = np.random.default_rng(0)
    cells = list(itertools.product(*dims))

    def time_cell(cell):
        m, n, k = cell
        a, b = rng.random((m, RUN_LENGTH, k), dtype=dtype), rng.random((RUN_LENGTH, k, n), dtype=dtype)
        c = np.empty((m, RUN_LENGTH, n), dtype=dtype)
        return _seconds(lambda: matmul_run(a, b, c), budget=0.01, most=8, cold=False) / RUN_LENGTH

    seconds = np.asarray(timed_in_passes(cells, time_cell, what="runs", disagreement=disagreement, passes=passes))
    return {"dims": [list(d) for d in dims], "seconds": seconds.reshape([len(d) for d in dims]).tolist()}


#: An im2col chunk's products (``plans._chunked``: one per chunk, its layout marked ``plans.CHUNK``) run from jitted
#: code on the columns the chunk has just written, the weights and the other operand still in L2 from the chunk
#: before (a chunk's buffers stay under conv_chunk_bytes): neither the call from Python nor the SHARE_BYTES passed
#: over between calls that each of the grid's cells carries (float32, one thread, lenet5's 16x368x150: 24.0 us in a
#: jitted loop, 25.1 called from Python, 32.4 with 1 MiB passed over between calls as the grid times it). Timed as
#: CHUNK_LENGTH products back to back from jitted code, per layout, over the chunks' (F: filters, L: columns, K:
#: patch length) in each layout's order of (m, n, k) (CHUNK_ROLES: the forward's nn product F x L x K, the
#: weight gradient's nt K x F x L, the input gradient's tn K x L x F); ``Calibration.chunk_factor`` prices a
#: product of a chunk as its grid time times the chunk's ratio to it.
CHUNK_AXES = {"F": (8, 64), "L": (128, 512, 2048), "K": (16, 128, 512)}
QUICK_CHUNK_AXES = {"F": (8,), "L": (128, 1024), "K": (16, 128)}
CHUNK_ROLES = {"nn": "FLK", "nt": "KFL", "tn": "KLF"}
CHUNK_LENGTH = 16


def chunk_dims(layout: str, axes=CHUNK_AXES) -> list[list[int]]:
    """The (m, n, k) axes of ``layout``'s chunk measurements."""
    return [list(axes[role]) for role in CHUNK_ROLES[layout]]


def measure_chunks(dtype: str, axes=CHUNK_AXES, disagreement: list | None = None, passes: int = PASSES) -> dict:
    """{layout: {"dims": ``chunk_dims``, "seconds": [i_m][i_n][i_k] seconds per product}} (Numba only)."""
    rng = np.random.default_rng(0)
    cells = [(layout, *mnk) for layout in CHUNK_ROLES for mnk in itertools.product(*chunk_dims(layout, axes))]

    def time_cell(cell):
        layout, m, n, k = cell
        a, b = _operands(layout, m, n, k, dtype, rng)
        return _seconds(_numba_product(layout, a, b, CHUNK_LENGTH), budget=0.01, most=8, cold=False) / CHUNK_LENGTH

    seconds = timed_in_passes(cells, time_cell, what="chunks", disagreement=disagreement, passes=passes)
    out = {}
    for layout in CHUNK_ROLES:
        dims = chunk_dims(layout, axes)
        mine = [s for cell, s in zip(cells, seconds) if cell[0] == layout]
        out[layout] = {"dims": dims, "seconds": np.asarray(mine).reshape([len(d) for d in dims]).tolist()}
    return out


#: The edge profiles (``measure_edges``): the widths of a small side that is not a power of two, the long side and
#: the third side of the products measured, and the shortest long side a product needs for its small sides to be
#: corrected by them (shorter products are not skinny: their time is the grid's).
EDGE_WIDTHS = tuple(d for d in range(3, 64) if d & (d - 1))
EDGE_LONG = 65536
EDGE_OTHER = 16
EDGE_MIN_LONG = 4096


def _edge_shape(side: int, long: int, width: int) -> tuple:
    """The (m, n, k) of an edge profile's product: ``width`` on axis ``side``, EDGE_LONG on axis ``long``, EDGE_OTHER on
    the third."""
    dims = [EDGE_OTHER] * 3
    dims[long], dims[side] = EDGE_LONG, width
    return tuple(dims)


def measure_edges(dtype: str, backend: str, widths=EDGE_WIDTHS, progress=None) -> dict:
    """{"widths": widths, "seconds": {layout: {"<side><long>": [seconds at each width]}}}: every skinny product of
    ``_edge_shape``, in passes (``timed_in_passes``), the products the ``backend``'s own (PRODUCTS)."""
    product = PRODUCTS[backend]
    rng = np.random.default_rng(9)
    pairs = [(a, b) for a in range(3) for b in range(3) if a != b]
    cells = [(layout, side, long, w) for layout in GEMM_LAYOUTS for side, long in pairs for w in widths]

    def time_cell(cell):
        layout, side, long, w = cell
        a, b = _operands(layout, *_edge_shape(side, long, w), dtype, rng)
        return _seconds(product(layout, a, b), budget=0.01, most=8, cold=False)

    out: dict = {}
    for (layout, side, long, _), seconds in zip(cells, timed_in_passes(cells, time_cell)):
        out.setdefault(layout, {}).setdefault(f"{side}{long}", []).append(seconds)
    if progress:
        progress("gemm edges")
    return {"widths": list(widths), "seconds": out}


#: OpenBLAS (0.3.31 here, SkylakeX kernels) multiplies a small product without packing its operands: at most
#: SMALL_GEMM_WORK multiply-adds, and for the ``nt`` layout (its Fortran ``TN`` call: row-major operands reach it
#: swapped) an output of at most SMALL_GEMM_NT_OUTPUT elements and an inner dimension of at least
#: SMALL_GEMM_NT_INNER (its ``gemm_small_kernel_permit``). Just inside, a product ran 1.2-2.9x faster per
#: FLOP than just outside (nn 16x480x128: 17 us, 16x496x128: 22 us; tt 19 and 49 us; nt 8x144x64: 3.8 us,
#: 8x152x64: 11 us, one thread), so the GEMM grid is interpolated within
#: one path, never across the boundary, for each layout whose jump the calibration measured (``small_path_jumps``).
SMALL_GEMM_WORK = 100 ** 3
SMALL_GEMM_NT_OUTPUT = 1200
SMALL_GEMM_NT_INNER = 32
#: A layout's jump counts when a product just past the boundary is this much slower per FLOP than one just inside.
SMALL_GEMM_JUMP = 1.15
#: The pairs that measure the jump: a product just inside the small path and one just outside it, per layout.
SMALL_GEMM_PAIRS = {"nn": ((16, 480, 128), (16, 496, 128)), "tn": ((16, 480, 128), (16, 496, 128)),
                    "tt": ((16, 480, 128), (16, 496, 128)), "nt": ((8, 148, 64), (8, 152, 64))}


def matrix_vector(m: int, n: int) -> bool:
    """Whether a product of an m x n output runs as a matrix-vector product: a single row or column of it, as
    NumPy's matmul and ``numba_runtime.gemm`` run one (a batch of 1 through a linear layer). Streaming its
    matrix from DRAM is its own rate: numpy, float32, one thread, convnet's linear forwards, the first reading a
    4.5 MiB weight last used a step ago (1 x 128 x 9216), took 170 us in all at B=1 and 462-541 us at B=2 and 4,
    where GEMM packs that weight first."""
    return (m == 1) != (n == 1)


def small_path(layout: str, m: int, n: int, k: int) -> bool:
    """Whether OpenBLAS multiplies this row-major (m, n, k) product on its small-matrix path (SMALL_GEMM_WORK)."""
    if m * n * k > SMALL_GEMM_WORK:
        return False
    return layout != "nt" or (m * n <= SMALL_GEMM_NT_OUTPUT and k >= SMALL_GEMM_NT_INNER)


def measure_small_path_jumps(dtype: str, backend: str) -> dict:
    """{layout: seconds per FLOP just past the small path's boundary over just inside it} (SMALL_GEMM_PAIRS),
    each product timed in passes (``timed_in_passes``); a BLAS without such a path gives about 1."""
    product = PRODUCTS[backend]
    rng = np.random.default_rng(6)
    cells = [(layout, shape) for layout, pair in SMALL_GEMM_PAIRS.items() for shape in pair]

    def time_cell(cell):
        layout, (m, n, k) = cell
        a, b = _operands(layout, m, n, k, dtype, rng)
        return _seconds(product(layout, a, b), budget=0.01, most=20, cold=False) / (m * n * k)
    per_flop = dict(zip(cells, timed_in_passes(cells, time_cell)))
    return {layout: per_flop[(layout, outside)] / per_flop[(layout, inside)]
            for layout, (inside, outside) in SMALL_GEMM_PAIRS.items()}


def l1_conflicts(run: int, stride: int, geometry: dict) -> bool:
    """Whether a copy's run of ``run`` reads ``stride`` bytes apart, whose cache lines the next run reads again
    (a transposing copy: the next run reads the neighbouring elements), overflows the level-1 sets its addresses
    fall into. A stride of whole lines lands on sets / gcd(stride in lines, sets) of them, each of ``ways`` lines;
    any other stride spreads over all of them."""
    line, sets, ways = geometry["line"], geometry["sets"], geometry["ways"]
    if stride < line or stride % line:
        used = sets
    else:
        used = sets // math.gcd(stride // line, sets)
    return run > used * ways


def measure_l1_conflict(dtype: str, elements: int = 1 << 21) -> dict:
    """This machine's level-1 geometry (``ceilings.l1_geometry``) and what a transposing copy pays per element
    where its runs overflow their sets (``l1_conflicts``): NumPy's copy of (n, R, K) into (n, K, R) with runs
    of R = 4x the capacity of eight-line strides, against the same with one column more (a stride of no whole
    number of lines). {} where the OS does not give the geometry."""
    from .ceilings import l1_geometry

    geometry = l1_geometry()
    if not geometry:
        return {}
    item = np.dtype(dtype).itemsize
    k = 8 * geometry["line"] // item
    run = 4 * (geometry["sets"] // math.gcd(8, geometry["sets"])) * geometry["ways"]
    rng = np.random.default_rng(7)

    def per_element(cols):
        d = rng.random((max(1, elements // (run * cols)), run, cols), dtype=dtype)
        return _seconds(lambda: np.ascontiguousarray(d.transpose(0, 2, 1)), budget=0.05, cold=False) / d.size
    if not l1_conflicts(run, k * item, geometry) or l1_conflicts(run, (k + 1) * item, geometry):
        return {}  # a geometry (sets not a multiple of 4) where these two copies do not straddle the boundary
    return {**geometry, "seconds_per_element": max(0.0, per_element(k) - per_element(k + 1))}


def _filled(grid, idx, dims) -> float:
    """A cell too large to time: step its largest dimension down until the product was measured, and scale the
    time by the work (the rate of large products is the BLAS peak's)."""
    idx = list(idx)
    scale = 1.0
    while np.isnan(grid[tuple(idx)]):
        axis = int(np.argmax([dims[i] for i in idx]))
        scale *= dims[idx[axis]] / dims[idx[axis] - 1]
        idx[axis] -= 1
    return float(grid[tuple(idx)] * scale)


# -- memory passes and whole kernels --------------------------------------------------------------------------


def _rows(target: int, per_row: int) -> int:
    return max(1, round(target / per_row))


def _pass_cases(backend: str, dtype: str, width: int = 10):
    """{name: make(target elements) -> (fn, elements, inputs)}: each pass the plans of ``backend`` name, run on
    synthetic arrays (2 input channels, 3x3 kernels, 8 filters, outputs ``width`` pixels wide; a chunk of n
    samples), except where ``width`` is another length of row (plans.wide): the columns of a column sum, and
    for NumPy the kernel's width of im2col and the filters of the layout changes."""
    from minigrad.kernels import numpy_ops

    rng = np.random.default_rng(1)

    def arr(*shape):
        return rng.standard_normal(shape).astype(dtype)

    C, KS, F = 2, 3, 8
    H = width + KS - 1
    OH = H - KS + 1
    P, K = OH * OH, C * KS * KS

    def pad(t):
        n = _rows(t, C * (H + 2) ** 2)
        x = arr(n, C, H, H)
        return (lambda: np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))), n * C * (H + 2) ** 2, (x,)

    def column_sum(t):  # rows of ``width`` columns
        a = arr(_rows(t, width), width)
        return (lambda: a.sum(axis=0)), a.size, (a,)

    def bias_add(t):
        y, b = arr(_rows(t, 16), 16), arr(16)

        def run():
            y.__iadd__(b)
        return run, y.size, (y,)

    def fill(t):
        return (lambda: np.zeros(t, dtype=dtype)), t, ()

    def crop(t):
        x = arr(_rows(t, C * H * H), C, H + 2, H + 2)
        return (lambda: np.ascontiguousarray(x[:, :, 1:-1, 1:-1])), x.shape[0] * C * H * H, (x,)

    cases = {"pad": pad, "column_sum": column_sum, "bias_add": bias_add, "fill": fill, "crop": crop}
    if backend == "numpy":  # widths as its plans give them: KW for im2col, OW for col2im, F for the layouts
        S = 8  # output side of the im2col case

        def im2col(t):
            x = arr(_rows(t, S * S * C * KS * width), C, S + KS - 1, S + width - 1)
            return (lambda: numpy_ops.im2col(x, KS, width, 1, 0)), x.shape[0] * S * S * C * KS * width, (x,)

        def col2im_planes(t):
            n = _rows(t, P * K)
            d = arr(n * P, K)
            return (lambda: numpy_ops._cols_to_planes(d, n, C, KS, KS, OH, OH)), d.size, (d,)

        def shifted_add(t):
            n = _rows(t, C * P)
            dxp, d = np.zeros((n, C, H, H), dtype=dtype), arr(n, C, KS, KS, OH, OH)
            return (lambda: numpy_ops._add_shifted(dxp, d, 1, 1, 1, OH, OH)), n * C * P, (d,)

        def to_nchw(t):
            n = _rows(t, S * S * width)
            out, b = arr(n * S * S, width), arr(width)
            return (lambda: numpy_ops._gemm_out_to_nchw(out, b, n, S, S)), out.size, (out,)

        def from_nchw(t):
            dy = arr(_rows(t, S * S * width), width, S, S)
            return (lambda: numpy_ops._nchw_to_gemm_in(dy)), dy.size, (dy,)

        cases.update(im2col=im2col, col2im_planes=col2im_planes, shifted_add=shifted_add,
                     gemm_out_to_nchw=to_nchw, nchw_to_gemm_in=from_nchw)
        return cases

    from minigrad.kernels import numba_ops

    def direct(ks, weight_grad):
        def make(t):
            Hd, Fd = 16, 4
            L = (Hd - ks) * Hd + Hd - ks + 1
            n = _rows(t, Fd * C * ks * ks * L)
            x, w, b = arr(n, C, Hd, Hd), arr(Fd, C, ks, ks), arr(Fd)
            y = arr(n, Fd, Hd - ks + 1, Hd - ks + 1)
            if weight_grad:
                wgrad, dws, dbs = numba_ops._direct_weight_grad(ks, ks), np.zeros((1, Fd, C, ks, ks), dtype), arr(1, Fd)
                return (lambda: wgrad(x, y, dws, dbs)), n * Fd * C * ks * ks * L, (x, y)  # one block: the pass alone
            fwd = numba_ops._direct_forward(ks, ks)
            return (lambda: fwd(x, w, b, y, 1)), n * Fd * C * ks * ks * L, (x,)
        return make

    # The im2col path's copies: rows of ``width`` at stride 2 (R = OW), and the plane layout at stride 1 (one
    # run per patch row, R = the input's width: runs of (width-1)*(width+2) + width).
    S2 = 2
    H2 = (width - 1) * S2 + KS
    Lp = (OH - 1) * H + OH

    def im2col(t):
        n = _rows(t, width * width * K)
        x, cols = arr(n, C, H2 * H2), np.empty((K, n * width * width), dtype=dtype)
        return (lambda: numba_ops._im2col(x, H2, KS, KS, S2, width, width, width, cols)), cols.size, (x,)

    def col2im(t):
        n = _rows(t, width * width * K)
        d, dx = arr(K, n * width * width), np.zeros((n, C, H2 * H2), dtype=dtype)
        return (lambda: numba_ops._col2im(d, H2, KS, KS, S2, width, width, width, dx)), d.size, (d,)

    def im2col_plane(t):
        n = _rows(t, Lp * K)
        x, cols = arr(n, C, H * H), np.empty((K, n * Lp), dtype=dtype)
        return (lambda: numba_ops._im2col(x, H, KS, KS, 1, OH, OH, H, cols)), cols.size, (x,)

    def col2im_plane(t):
        n = _rows(t, Lp * K)
        d, dx = arr(K, n * Lp), np.zeros((n, C, H * H), dtype=dtype)
        return (lambda: numba_ops._col2im(d, H, KS, KS, 1, OH, OH, H, dx)), d.size, (d,)

    def to_nchw(t):
        n = _rows(t, P * F)
        yw, b, y = arr(F, n * Lp), arr(F), np.empty((n, F, OH, OH), dtype=dtype)
        return (lambda: numba_ops._gemm_out_to_nchw(yw, b, H, y)), y.size, (yw,)

    def from_nchw(t):
        n = _rows(t, P * F)
        dy, dyw, db = arr(n, F, OH, OH), np.empty((F, n * Lp), dtype=dtype), np.zeros(F, dtype=dtype)
        return (lambda: numba_ops._nchw_to_gemm_in(dy, H, dyw, db)), dy.size, (dy,)

    def transpose(t):
        a = arr(16, _rows(t, 16))
        return (lambda: np.ascontiguousarray(a.T)), a.size, (a,)

    def outer_sum(t):
        rows = _rows(t, 64)
        dy, x, dw = arr(1, rows), arr(1, 64), np.empty((rows, 64), dtype=dtype)
        return (lambda: numba_ops._outer_sum(dy, x, dw)), dw.size, (dy, x)

    # Winograd's transforms, one sample at a time as its block runs them (their per-sample buffers reused, hot),
    # on 12 x 12 tiles of ``width`` channels: their loops run along the channels.
    WS = 24
    per_sample = (WS // 2) ** 2 * 16 * width

    def winograd_input(t):
        n = _rows(t, per_sample)
        x = arr(n, width, WS + 2, WS + 2)
        xt, rows = np.zeros((WS + 2, WS + 2, width), dtype=dtype), np.empty((4, (WS + 2) * width), dtype=dtype)
        V = np.empty(((WS // 2) ** 2, 16, width), dtype=dtype)

        def run():
            for i in range(n):
                numba_ops._winograd_input(x[i], 0, xt, rows, V)
        return run, n * per_sample, (x,)

    def winograd_output(t):
        n = _rows(t, per_sample)
        M, b = arr((WS // 2) ** 2, 16, width), arr(width)
        o, y = np.empty((4, width), dtype=dtype), np.empty((n, width, WS, WS), dtype=dtype)

        def run():
            for i in range(n):
                numba_ops._winograd_output(M, b, o, y[i])
        return run, n * per_sample, (M,)

    def winograd_filters(t):  # 32 output channels
        w = arr(32, _rows(t, 9 * 32), 3, 3)
        return (lambda: numba_ops._winograd_filters(w)), w.size, (w,)

    cases.update(winograd_input=winograd_input, winograd_output=winograd_output, winograd_filters=winograd_filters)
    cases.update({f"direct_conv_{ks}x{ks}": direct(ks, False) for ks in (3, 5)})
    cases.update({f"direct_wgrad_{ks}x{ks}": direct(ks, True) for ks in (3, 5)})
    cases.update(im2col=im2col, col2im=col2im, im2col_plane=im2col_plane, col2im_plane=col2im_plane,
                 gemm_out_to_nchw=to_nchw, nchw_to_gemm_in=from_nchw, transpose=transpose, outer_sum=outer_sum)
    return cases


IMAGES = 2048  # training images the calibration's pooling inputs and synthetic steps are made from
DISTINCT_ELEMENTS = 1 << 20  # a pooling call's input differs from the last one's over at least this many elements


@functools.lru_cache(maxsize=None)
def training_images(n: int = IMAGES) -> tuple[str, np.ndarray]:
    """(name, uint8 (n, 28, 28)): the first ``n`` training images of MNIST from this machine's data cache (the
    data every reference model trains on; nothing is downloaded), else of ``synthetic_mnist``. The calibration
    records which (``images``): a pooling kernel's branches follow its data (below)."""
    from minigrad import data

    try:
        return "mnist", data.load_dataset("mnist", download=False, offline=False, progress=False)[0].images[:n]
    except data.DataUnavailable:
        return "synthetic", data.synthetic_mnist(n_train=n, n_test=0)[0].images


def activation_planes(images: np.ndarray, rows: int, channels: int, side: int, dtype: str,
                      seed: int = 0) -> np.ndarray:
    """(rows, channels, side, side): what a pooling layer of a CNN on ``images`` pools. Each image (cycled to
    ``rows``, scaled to [0, 1]) at the resolution such a layer sees it: halved by 2x2 max pooling while it stays
    at least ``side`` wide (resampled up by nearest neighbour where ``side`` is wider than the image), its central
    ``side`` x ``side`` pixels (a valid convolution crops the borders, so a plane holds the strokes and little
    blank margin), through a random 3x3 convolution of ``channels`` filters with a bias (zero padding; the
    filters drawn from ``seed``, the same for every size and width of a curve): an image's blank background is
    one value per channel and its strokes vary.

    A pooling kernel whose comparisons branch runs as fast as its branches are predicted, which follows the data.
    Numba's select-per-tap scan did (it lost to a branch-free one: benchmarks/race_numba_kernels.py pool): its
    relu_maxpool2d_forward, float32, per element, B=64, each call on other images, against what lenet5 and
    convnet pool on MNIST after 100 steps of training:

    * lenet5's first pooling (64, 6, 24, 24): 1.39 ns on the real input, 2.08 on its values shuffled, 1.38 on
      these planes (16 channels), 1.19 on the whole image resampled to 24 pixels;
    * lenet5's second (64, 16, 8, 8): 3.89, 4.57, 3.89 and 3.05 ns;
    * convnet's (64, 64, 24, 24): 1.28, 2.01, 1.28 and 1.14 ns.

    NumPy's pooling (an argmax over each window) moved by no more than its noise across them. A branch predictor
    also learns a short input called again and again, so the calibration's calls take turns over inputs made
    from different images (``_kernel_cases``): a step never pools the same images twice."""
    x = images[np.arange(rows) % len(images)].astype(dtype) / 255
    size = x.shape[-1]
    while size // 2 >= side:
        size //= 2
        x = x[:, :2 * size, :2 * size].reshape(rows, size, 2, size, 2).max(axis=(2, 4))
    if size < side:
        where = (np.arange(side) * size) // side
        x, size = x[:, where][:, :, where], side
    low = (size - side) // 2
    x = np.pad(x[:, low:low + side, low:low + side], ((0, 0), (1, 1), (1, 1)))
    rng = np.random.default_rng(seed)
    w, b = rng.standard_normal((channels, 3, 3)).astype(dtype), rng.standard_normal(channels).astype(dtype)
    out = np.empty((rows, channels, side, side), dtype=dtype)
    for c in range(channels):
        out[:, c] = b[c] + sum(w[c, i, j] * x[:, i:i + side, j:j + side] for i in range(3) for j in range(3))
    return out


def _kernel_cases(ops, dtype: str, side: int = 16, put=lambda a: a):
    """{kernel: make(target elements of its forward input) -> (fn, elements, inputs)} for the kernels priced whole
    (the pooling kernels on ``activation_planes`` ``side`` pixels wide, each call on the next of as many inputs,
    made from different images, as DISTINCT_ELEMENTS takes: ``inputs`` is the one array they are views of).
    ``put``: what makes a host array one of ``ops``' (the GPU's calibration moves them to the device)."""
    rng = np.random.default_rng(2)

    def arr(*shape):
        return rng.standard_normal(shape).astype(dtype)

    def flat(t):
        return arr(_rows(t, 64), 64), 1

    def pool_input(t):  # (the inputs of all turns, one after the other; how many turns)
        rows = _rows(t, 16 * side * side)
        turns = -(-DISTINCT_ELEMENTS // (rows * 16 * side * side))
        return activation_planes(training_images()[1], rows * turns, 16, side, dtype), turns

    def logits(t):
        return arr(_rows(t, 16), 16), 1

    def targets(x):  # int64, as the data loader yields the labels
        return rng.integers(0, x.shape[1], x.shape[0], dtype=np.int64)

    def forward(name, make_x, *extra):
        def make(t):
            x, turns = make_x(t)
            calls = itertools.cycle([(put(xi), *(put(e(xi)) for e in extra)) for xi in np.split(x, turns)])
            return (lambda: getattr(ops, name)(*next(calls))), x.size // turns, (x,)
        return make

    def backward(name, make_x, grad, *extra):
        def make(t):
            x, turns = make_x(t)
            forward_fn = getattr(ops, name.replace("backward", "forward"))
            outs, caches = zip(*(forward_fn(put(xi), *(put(e(xi)) for e in extra)) for xi in np.split(x, turns)))
            dys = [put(grad(out)) for out in outs]
            calls = itertools.cycle(zip(dys, caches))
            return (lambda: getattr(ops, name)(*next(calls))), x.size // turns, tuple(dys)
        return make

    def like(out):
        return np.ones(out.shape, dtype=out.dtype)

    def scalar(out):
        return np.ones((), dtype=dtype)

    def pool_args(x):
        return 2

    def sgd(t):
        p, g, buf = put(arr(t)), put(arr(t)), put(np.zeros(t, dtype=dtype))
        return (lambda: ops.sgd_update(p, g, buf, 0.01, 0.9, False, 0.0)), t, (g,)

    return {
        "relu_forward": forward("relu_forward", flat), "relu_backward": backward("relu_backward", flat, like),
        "maxpool2d_forward": forward("maxpool2d_forward", pool_input, pool_args, pool_args),
        "maxpool2d_backward": backward("maxpool2d_backward", pool_input, like, pool_args, pool_args),
        "relu_maxpool2d_forward": forward("relu_maxpool2d_forward", pool_input, pool_args, pool_args),
        "relu_maxpool2d_backward": backward("relu_maxpool2d_backward", pool_input, like, pool_args, pool_args),
        "softmax_xent_forward": forward("softmax_xent_forward", logits, targets),
        "softmax_xent_backward": backward("softmax_xent_backward", logits, scalar, targets),
        "log_softmax_forward": forward("log_softmax_forward", logits),
        "log_softmax_backward": backward("log_softmax_backward", logits, like),
        "sgd_update": sgd,
    }


def measure_curves(backend: str, dtype: str, say=lambda text: None, sizes=CURVE_SIZES, budget: float = 0.05,
                   deep: bool = True, disagreement: list | None = None, passes: int = PASSES) -> dict:
    """Every pass and whole kernel of ``backend``: ``name`` for those whose cost per element is one number,
    ``name@w`` for each width w of WIDTHS for those that run along short rows (plans.wide); with ``deep``,
    each whole kernel's ``~deep`` curve too. Every point in ``passes`` passes (``timed_in_passes``, each point's
    disagreement added to ``disagreement``)."""
    from minigrad import backend as be

    curves = []  # (key, make, sizes, budget, cold, evict, most)
    for width in WIDTHS:
        for cases, kernels in ((_pass_cases(backend, dtype, width), False), (_kernel_cases(be.k, dtype, width), True)):
            for name, make in cases.items():
                wide = name in plans.wide(backend)
                if wide or width == WIDTHS[0]:
                    key = f"{name}@{width}" if wide else name
                    curves.append((key, make, sizes, budget, kernels and name not in plans.BACK_TO_BACK, 0, 100))
                    if kernels and deep:
                        curves.append((f"{key}~deep", make, deep_sizes(sizes), 0.0, True, DEEP_EVICT_BYTES, 5))
    cells = [(i, target) for i, curve in enumerate(curves) for target in curve[2]]
    elements: dict = {}

    def time_cell(cell):
        i, target = cell
        _, make, _, budget_, cold, evict, most = curves[i]
        fn, elements[cell], inputs = make(target)
        return _seconds(fn, inputs, budget_, most, cold, evict)

    out: dict = {}
    for cell, seconds in zip(cells, timed_in_passes(cells, time_cell, say, "curves", disagreement=disagreement,
                                                    passes=passes)):
        points = out.setdefault(curves[cell[0]][0], [])
        if not points or elements[cell] > points[-1][0]:  # a size that rounds to the last one's elements: once
            points.append([int(elements[cell]), seconds])
    return out


def deep_sizes(sizes) -> list[int]:
    """The sizes a deep curve is measured at: every other one of ``sizes``, and the last."""
    return sorted({*sizes[::2], sizes[-1]})


def measure_widths(backend: str, dtype: str, widths=PROFILE_WIDTHS, elements: int = PROFILE_ELEMENTS,
                   budget: float = 0.02) -> dict:
    """{name: [[width, seconds per element], ...]} for each pass and kernel along short rows (plans.wide), at
    about ``elements`` elements, timed as its size curves are (passes hot, kernels cold), in PASSES passes
    (``timed_in_passes``). Timed in one pass, a profile's noise went straight into a price: a width beyond
    WIDTHS is priced by the profile's time there over its time at the last of WIDTHS, and three numba float32
    calibrations put Winograd's input transform at width 32 at 0.66, 0.43 and 1.29 of its time at width 30,
    pricing convnet's at B=256 at 6.5 ms in one and 23.6 in the next."""
    from minigrad import backend as be

    def cases(width: int, kernels: bool) -> dict:
        return _kernel_cases(be.k, dtype, width) if kernels else _pass_cases(backend, dtype, width)

    cells = [(width, name, kernels) for width in widths for kernels in (False, True)
             for name in cases(width, kernels) if name in plans.wide(backend)]

    def time_cell(cell):
        width, name, kernels = cell
        fn, n, inputs = cases(width, kernels)[name](elements)
        return _seconds(fn, inputs, budget, cold=kernels) / n

    out: dict = {}
    for (width, name, _), seconds in zip(cells, timed_in_passes(cells, time_cell, what="row widths")):
        out.setdefault(name, []).append([width, seconds])
    return out


def measure_far(dtype: str, backend: str, sizes=REACH_BYTES, k: int = 1 << 14) -> dict:
    """{"seconds_per_byte": of the (64, k) operand of a 64 x 8 x k product read from DRAM, "reach": [[bytes
    passed over since, fraction of the way from the first size's time to the deep one], ...],
    "vector_seconds_per_byte": the same of a 1 x 64 x k product (``matrix_vector``)}, the products the
    ``backend``'s own (PRODUCTS), the small operand re-read before each call as a step's previous kernel leaves
    it, the large one not."""
    rng = np.random.default_rng(5)
    a, b = _operands("nt", 64, 8, k, dtype, rng)
    product = PRODUCTS[backend]("nt", a, b)
    times = timed_in_passes([*sizes, DEEP_EVICT_BYTES],
                            lambda nbytes: _seconds(product, (b,), budget=0.0, most=7, evict=nbytes))
    row, matrix = _operands("nt", 1, 64, k, dtype, rng)
    vector = PRODUCTS[backend]("nt", row, matrix)
    deep, = timed_in_passes([DEEP_EVICT_BYTES], lambda nbytes: _seconds(vector, (row,), budget=0.0, most=7,
                                                                          evict=nbytes))
    return {"seconds_per_byte": times[-1] / a.nbytes, "reach": _reach(sizes, times),
            "vector_seconds_per_byte": deep / matrix.nbytes}


def measure_reach(dtype: str, sizes=REACH_BYTES, elements: int = REACH_ELEMENTS) -> list[list[float]]:
    """[[bytes touched since, fraction of the deep penalty paid], ...]: relu_forward on ``elements`` synthetic
    values after a pass over each of ``sizes`` bytes (its input re-read, as a step's previous kernel leaves
    it), as the fraction of the way from the first size's time to DEEP_EVICT_BYTES's; non-decreasing."""
    from minigrad import backend as be

    x = np.random.default_rng(4).standard_normal(elements).astype(dtype)
    times = timed_in_passes([*sizes, DEEP_EVICT_BYTES],
                            lambda nbytes: _seconds(lambda: be.k.relu_forward(x), (x,), budget=0.0, most=7,
                                                    evict=nbytes))
    return _reach(sizes, times)


def _reach(sizes, times) -> list[list[float]]:
    """[[size, fraction of the way from times[0] to times[-1] (the deep time)], ...] for each of ``sizes``,
    clipped to [0, 1] and made non-decreasing (a larger pass never leaves more in cache)."""
    span = max(times[-1] - times[0], 1e-12)
    fractions = np.maximum.accumulate(np.clip([(t - times[0]) / span for t in times[:-1]], 0.0, 1.0))
    return [[int(b), float(f)] for b, f in zip(sizes, fractions)]


# -- fixed overheads: raw times, turned into per-call, per-layer and per-step costs by the model


def _tiny(dtype: str, reference_before: list, batches) -> dict:
    """The step-level raw times the model turns into fixed costs (``predict.CostModel``): the loop's time
    outside kernel calls on ``step_model`` at OUTSIDE_BATCH and on ``synthetic_cnn`` at each of ``batches``
    (``outside_cnn``: [[batch size, seconds], ...]), each kernel call of the synthetic CNN's step at
    OUTSIDE_BATCH as the step meets it (``cnn_calls``, in the step's order), the mean of its optimizer updates'
    calls at each of ``batches`` (``update_calls``: their parameters, and so their work, are the same at
    every batch size; what they gain is what a kernel call pays for the data the step passed over since it
    last ran, its wrapper's code and objects evicted), and the synthetic CNN's plain step
    at each of REFERENCE_BATCHES (``cnn_step``: how fast the machine ran, ``reference``: the faster of its time
    now and ``reference_before``, timed before the calibration's first measurement).

    Each model and batch size in TINY_PASSES passes, the one whose kernel calls took least time kept whole
    (``timed_in_passes``): one numba calibration, timed once, met a slow minute here and took every call of the
    synthetic CNN's step 1.5-1.7x as long as the calibration before it, and priced lenet5 at B=1-3 27-47% slow."""
    r = np.random.default_rng(3)

    def run(batch_size):  # 0: the step model at OUTSIDE_BATCH
        if batch_size == 0:
            return _in_step(step_model(dtype), dtype, r, OUTSIDE_BATCH)
        return _in_step(synthetic_cnn(dtype), dtype, r, batch_size, steps=max(400, 6400 // batch_size))
    cells = [0, *batches]
    step, *runs = timed_in_passes(cells, run, what="fixed overheads",
                                  seconds=lambda result: sum(t for _, t in result["calls"]), passes=TINY_PASSES)
    cnn = dict(zip(batches, runs))
    return {"outside_step": step["outside"], "outside_cnn": [[b, cnn[b]["outside"]] for b in batches],
            "cnn_calls": cnn[OUTSIDE_BATCH]["calls"],
            "update_calls": [[b, float(np.mean([t for name, t in cnn[b]["calls"] if name == "sgd_update"]))]
                             for b in batches],
            "cnn_step": [[b, min(before, reference(dtype, b))]
                         for b, before in zip(REFERENCE_BATCHES, reference_before)]}


#: The batch size at which the small model's loop and the synthetic CNN's calls are measured.
OUTSIDE_BATCH = 4
#: The synthetic CNN's batch sizes for the time outside kernel calls: Python run between kernels slows as the
#: kernels' data grows (its objects evicted), so a layer's cost is measured against the step's working set. Its
#: working sets at these: 0.5 to 124 MiB on numpy, 0.1 to 30 MiB on numba (float32), as far as lenet5's and
#: convnet's reach at B <= 256 and B <= 32 on numpy, B <= 512 and B <= 16 on numba; beyond, the model takes the
#: last one's costs. ``quick``: QUICK_OUTSIDE_BATCHES, the largest left out (a numpy step of the synthetic CNN
#: at B=1024 takes about 150 ms here, and each of the two passes runs 400 of them).
OUTSIDE_BATCHES = (4, 16, 64, 256, 1024)
QUICK_OUTSIDE_BATCHES = (4, 16, 64, 256)


def _steps(model, dtype: str, r, batch_size: int):
    """An endless stream of ``model``'s training steps at ``batch_size`` on ``training_images`` with random labels
    (``TrainLoop``'s records: ``compute_seconds`` is the step time)."""
    from minigrad import data, optim
    from minigrad.loop import TrainLoop

    images = training_images()[1]
    ds = data.ArrayDataset(images, r.integers(0, 2, len(images)).astype(np.uint8), "calibration", synthetic=True)
    loop = TrainLoop(model, optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    while True:
        yield from loop.epoch(data.DataLoader(ds, batch_size, dtype=dtype))


def _in_step(model, dtype: str, r, batch_size: int, steps: int = 1600, block: int = 10) -> dict:
    """A training step of ``model`` at ``batch_size``, in alternating blocks of ``block`` plain steps and steps
    with each kernel call timed through the dispatch point's hook (the first pair of blocks a warm-up):

    * ``outside``: seconds per step the loop spends outside kernel calls: for each pair of blocks, the median
      plain step less the median of the hooked steps' calls, and the median over the pairs. Not the hooked
      steps' own time outside their calls: the hook's wrapper is part of that (numba lenet5 at B=1: 466 us hooked
      against 422 plain). A bare hook, not ``Tracer(detail=False)``: any record built between calls slows the
      calls (numpy's per-run cost came out at 9.0 us through that tracer, 11.8-13.1 through this hook), and the
      difference would be taken for time outside them. Pairs of short blocks, not the medians of all plain and
      all hooked steps: this class of machine changes speed by tens of percent from one second to the next
      (other tenants), and a difference of two medians taken over 50-step blocks came out negative at B=256 and
      six times its neighbours at B=16 in one numpy calibration;
    * ``calls``: [kernel, median seconds] of each call of the step, in its order.

    Measured in the loop, between real kernels: Python run between kernels that have just passed over their
    data finds its own code and objects evicted, and a layer's Python costs several times what the same code
    costs in a loop of its own (the loss's checks and NumPy calls: 3.5 us in a loop, 11.7 us in a lenet5 step).
    So does a kernel call's own: a kernel called again right after another kernel finds its wrapper warm, one
    called once per step finds it cold (numba, B=1: linear_forward's later calls sat 0.1-0.2 of the way from
    its time back to back to its time after a 4 MiB pass, the loss's 0.9-1.0). And the more data the kernels
    pass over, the slower the Python between them: in one measurement on numba, the synthetic CNN's time
    outside kernels was 92, 105, 132 and 161 us at B=4, 16, 64 and 256 (working sets of 0.15, 0.5, 1.9 and 7.5
    MiB), lenet5's 123, 146 and 174 us at B=4, 16 and 64 (0.7, 1.3 and 3.8 MiB)."""
    from minigrad import backend as be

    log: list = []

    def hook(name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                log.append((name, time.perf_counter() - t0))
        return timed

    stream = _steps(model, dtype, r, batch_size)
    pairs, hooked_steps = [], []
    try:
        for _ in range(max(2, steps // (2 * block))):
            plain, hooked = [], []
            for timed, out in ((False, plain), (True, hooked)):
                be.set_kernel_hook(hook if timed else None)
                for _ in range(block):
                    log.clear()
                    seconds = next(stream).compute_seconds
                    out.append(list(log) if timed else seconds)
            pairs.append((plain, hooked))
    finally:
        be.set_kernel_hook(None)
    outside = []
    for plain, hooked in pairs[1:]:
        hooked_steps += hooked
        outside.append(np.median(plain) - np.median([sum(t for _, t in step) for step in hooked]))
    names = [name for name, _ in hooked_steps[0]]
    times = np.array([[seconds for _, seconds in step] for step in hooked_steps])
    return {"outside": float(np.median(outside)),
            "calls": [[name, float(t)] for name, t in zip(names, np.median(times, axis=0))]}


#: The synthetic CNN's batch sizes timed as the machine's reference: how fast the machine ran when it was
#: calibrated, against how fast it runs when a prediction is measured (``predict.measure_rounds``).
REFERENCE_BATCHES = (4, 64)


def reference(dtype: str, batch_size: int, steps: int = 200) -> float:
    """Median seconds of ``steps`` plain training steps of the synthetic CNN at ``batch_size`` (after 20
    warm-up steps): the calibration keeps it (``tiny["cnn_step"]``), a measurement times it again."""
    stream = _steps(synthetic_cnn(dtype), dtype, np.random.default_rng(3), batch_size)
    for _ in range(20):
        next(stream)
    return float(np.median([next(stream).compute_seconds for _ in range(steps)]))


def step_model(dtype: str):
    """The smallest model of a training step: the loop's own cost per step, and two layers'."""
    from minigrad import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2, dtype=dtype))


def synthetic_cnn(dtype: str):
    """A small CNN unlike the reference models (3 and 5 filters of 3x3, 20 hidden units, 7 classes): the loop's
    time outside kernels grows with its layers over step_model's, which gives the cost of one layer."""
    from minigrad import nn

    return nn.Sequential(nn.Conv2d(1, 3, 3, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 5, 3, dtype=dtype),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(125, 20, dtype=dtype), nn.ReLU(),
                         nn.Linear(20, 7, dtype=dtype))


# -- the calibration ------------------------------------------------------------------------------------------


def measure(backend: str, dtype: str = "float32", threads: int = 1, quick: bool = False, progress=None,
            dims=None, sizes=None) -> dict:
    """Every primitive of ``backend`` (numpy or numba) at ``dtype``, with the current thread settings (the
    caller sets ``threads`` with ``machine.set_threads``; it is recorded). About four minutes; ``quick``: a
    coarser grid and fewer sizes, no deep curves, widths, reach or far, in seconds (``explain --quick``).
    ``dims``/``sizes``: the GEMM grid's dimensions and the curves' sizes (default: GEMM_DIMS/CURVE_SIZES, or
    the QUICK_ ones)."""
    from minigrad import backend as be
    from minigrad.machine import cpu_model

    if backend not in plans.BACKENDS:
        raise ValueError(f"calibration: backend must be one of {plans.BACKENDS}; got {backend!r}")
    say = progress or (lambda text: None)
    dims = dims or (QUICK_GEMM_DIMS if quick else GEMM_DIMS)
    sizes = sizes or (QUICK_CURVE_SIZES if quick else CURVE_SIZES)
    with be.use_backend(backend):
        result = {"version": VERSION, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": cpu_model(),
                  "backend": backend, "dtype": dtype, "threads": threads, "quick": quick, "gemm_dims": list(dims),
                  "images": training_images()[0]}
        reference_before = [reference(dtype, b) for b in REFERENCE_BATCHES]
        passes: dict = {"curves": [], "gemm": []}
        result["curves"] = measure_curves(backend, dtype, say, sizes, 0.005 if quick else 0.05, deep=not quick,
                                          disagreement=passes["curves"], passes=QUICK_PASSES if quick else PASSES)
        result["widths"] = {} if quick else measure_widths(backend, dtype)
        say("row widths")
        result["reach"] = [] if quick else measure_reach(dtype)  # quick: every kernel priced as cache finds it
        result["l1_conflict"] = measure_l1_conflict(dtype)
        say("cache reach, L1 sets")
        guard = contextlib.nullcontext()
        if backend == "numba":  # its GEMMs run on one BLAS thread inside its own block split
            from minigrad.kernels.numba_runtime import OneBlasThread, handoff

            guard = OneBlasThread()
            result["split_seconds"] = _seconds(lambda: handoff(threads)) if threads > 1 else 0.0
        with guard:
            result["gemm"] = measure_gemm(dtype, dims, progress=say, backend=backend, disagreement=passes["gemm"],
                                          passes=QUICK_PASSES if quick else PASSES)
            result["small_path_jumps"] = measure_small_path_jumps(dtype, backend)
            result["edges"] = {} if quick else measure_edges(dtype, backend, progress=say)
            result["far"] = {} if quick else measure_far(dtype, backend)
            result["runs"] = (measure_runs(dtype, QUICK_RUN_DIMS if quick else RUN_DIMS, passes["gemm"],
                                           QUICK_PASSES if quick else PASSES) if backend == "numba" else {})
            result["chunks"] = (measure_chunks(dtype, QUICK_CHUNK_AXES if quick else CHUNK_AXES, passes["gemm"],
                                               QUICK_PASSES if quick else PASSES) if backend == "numba" else {})
        result["tiny"] = _tiny(dtype, reference_before, QUICK_OUTSIDE_BATCHES if quick else OUTSIDE_BATCHES)
        result["pass_disagreement"] = {name: disagreement_summary(d) for name, d in passes.items()}
        say("fixed overheads")
    return result


def load(backend: str, dtype: str = "float32", threads: int = 1, quick: bool = False, remeasure: bool = False,
         cache_dir=None, progress=None) -> "Calibration":
    """This machine's calibration for ``backend`` at ``dtype`` and ``threads`` (cached with its date; measured
    when absent or ``remeasure``, in a child process: ``measure_in_child``)."""
    from minigrad.machine import cpu_model

    from .ceilings import cached_measurement

    key = f"{VERSION}|{cpu_model()}|{os.cpu_count()}|{backend}|{dtype}|{threads}|{'quick' if quick else 'full'}"
    return Calibration(cached_measurement("calibration", key, measure_in_child, remeasure, cache_dir,
                                          backend=backend, dtype=dtype, threads=threads, quick=quick,
                                          progress=progress))


def measure_in_child(backend: str, dtype: str = "float32", threads: int = 1, quick: bool = False,
                     progress=None) -> dict:
    """``measure`` in a fresh process (``python -m minigrad.profiling.calibration``, the request as JSON on
    stdin, the result as JSON in a temporary file it names), its progress lines passed on to ``progress``.

    Apart because a calibration leaves its process changed for a while: run in the process that then
    measured a model, it made that model's first steps up to 60% slower (numba lenet5, 1 thread: 0.75 ms
    at B=1 right after calibrating against 0.46 ms in a fresh process). It also keeps the calibration from
    ever seeing the state a model's steps leave behind.
    """
    import json
    import subprocess
    import sys
    import tempfile

    from minigrad.machine import user_environment

    with tempfile.TemporaryDirectory(prefix="minigrad-calibration-") as tmp:
        out = os.path.join(tmp, "calibration.json")
        request = json.dumps({"backend": backend, "dtype": dtype, "threads": threads, "quick": quick, "out": out,
                              "dims": list(QUICK_GEMM_DIMS if quick else GEMM_DIMS),
                              "sizes": list(QUICK_CURVE_SIZES if quick else CURVE_SIZES)})
        child = subprocess.Popen([sys.executable, "-m", "minigrad.profiling.calibration"], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 env=user_environment())
        child.stdin.write(request)
        child.stdin.close()
        said = []
        for line in child.stderr:  # "say: <text>" lines are progress; anything else is kept for an error
            if line.startswith("say: "):
                (progress or (lambda text: None))(line[5:].rstrip("\n"))
            else:
                said.append(line)
        if child.wait() != 0:
            raise RuntimeError(f"calibration: the child process measuring {backend} {dtype} failed:\n"
                               + "".join(said[-20:]))
        with open(out) as f:
            return json.load(f)


def main() -> int:
    """The child of ``measure_in_child``: select the backend, set the threads, measure, write the JSON."""
    import json
    import sys

    from minigrad import backend as be
    from minigrad.machine import set_threads

    request = json.loads(sys.stdin.read())
    be.set_backend(request["backend"])
    set_threads(request["threads"])
    result = measure(request["backend"], request["dtype"], request["threads"], request["quick"],
                     progress=lambda text: print(f"say: {text}", file=sys.stderr, flush=True),
                     dims=tuple(request["dims"]), sizes=tuple(request["sizes"]))
    with open(request["out"], "w") as f:
        json.dump(result, f)
    return 0


def _profile_at(profile, width: int) -> float:
    """A ``widths`` profile's seconds per element at ``width``: interpolated in log-log between its measured
    widths, the nearest one outside them."""
    points = np.log(np.asarray(profile, dtype=np.float64))
    return float(np.exp(np.interp(math.log(width), points[:, 0], points[:, 1])))


def log_interpolate(axes, grid: np.ndarray, point) -> float:
    """Multilinear interpolation of log ``grid`` over log ``axes`` at ``point`` (each coordinate within its
    axis; an axis of one value is taken as it is)."""
    lo, frac = [], []
    for values, p in zip(axes, point):
        logs = np.log(values)
        i = min(max(int(np.searchsorted(logs, math.log(p), side="right")) - 1, 0), max(len(values) - 2, 0))
        lo.append(i)
        frac.append(0.0 if len(values) == 1 else (math.log(p) - logs[i]) / (logs[i + 1] - logs[i]))
    total = 0.0
    for corner in itertools.product((0, 1), repeat=len(axes)):
        weight = math.prod(f if c else 1 - f for f, c in zip(frac, corner))
        if weight > 0:
            total += weight * math.log(grid[tuple(i + c for i, c in zip(lo, corner))])
    return math.exp(total)


@dataclass
class Measured:
    """What every calibration answers, on the CPU (``Calibration``) and on a GPU
    (``gpu_calibration.GpuCalibration``): its backend, where it was measured, its own noise and its curves."""
    data: dict

    @property
    def backend(self) -> str:
        return self.data["backend"]

    @property
    def where(self) -> str:
        """The processor or device it was measured on."""
        return self.data.get("device") or self.data["cpu"]

    def pass_disagreement(self) -> str:
        """How far apart the fastest two timings of its GEMMs and curves came out (``disagreement_summary``), in
        words: no prediction from this calibration is surer than that ('' where it was not recorded)."""
        labels = {"gemm": "GEMMs", "curves": "curves"}
        parts = [f"its {labels.get(name, name)} by a median of {100 * d['median']:.0f}% (90th percentile "
                 f"{100 * d['p90']:.0f}%, {d['cells']:,} cells)"
                 for name, d in self.data.get("pass_disagreement", {}).items() if d["cells"]]
        return ("the fastest two timings of each cell differed: " + ", ".join(parts)) if parts else ""

    def _interpolate(self, name: str, elements: int) -> float:
        """Log-log interpolation of the named curve; below its first size the first time, beyond its last the
        last time scaled by the elements."""
        if name not in self.data["curves"]:
            raise KeyError(f"the {self.backend} calibration has no curve {name!r}")
        points = np.asarray(self.data["curves"][name], dtype=np.float64)
        sizes, seconds = points[:, 0], points[:, 1]
        if elements <= sizes[0]:
            return float(seconds[0])
        if elements >= sizes[-1]:
            return float(seconds[-1] * elements / sizes[-1])
        return float(np.exp(np.interp(math.log(elements), np.log(sizes), np.log(seconds))))


@dataclass
class Calibration(Measured):
    """A CPU backend's calibration (numpy, numba): ``measure``'s result and the lookups the cost model makes."""

    @property
    def threads(self) -> int:
        return int(self.data["threads"])

    def splits_paths(self, layout: str) -> bool:
        """Whether this machine's BLAS showed the small-matrix path's jump for ``layout`` (``small_path``)."""
        return self.data.get("small_path_jumps", {}).get(layout, 1.0) >= SMALL_GEMM_JUMP

    def gemm_seconds(self, layout: str, m: int, n: int, k: int) -> float:
        """The grid's time (``grid_seconds``) times the product's edge factor (``edge_factor``); a product of a
        run (layout ``plans.RUN``, an nn product) also times the run's factor (``run_factor``), a product of an
        im2col chunk (a layout ending in ``plans.CHUNK``) the chunk's (``chunk_factor``)."""
        grid = plans.grid_layout(layout)
        seconds = self.grid_seconds(grid, m, n, k) * self.edge_factor(grid, m, n, k)
        if layout == plans.RUN:
            return seconds * self.run_factor(m, n, k)
        if layout != grid:  # a chunk's
            return seconds * self.chunk_factor(grid, m, n, k)
        return seconds

    @functools.cached_property
    def _over_grid(self) -> dict:
        """{(what, layout): (dims, ratio)}: the runs' (``measure_runs``) and each layout's chunks'
        (``measure_chunks``) seconds per product over the grid's price of it, at their points."""
        tables = [("runs", "nn", self.data.get("runs"))]
        tables += [("chunks", layout, table) for layout, table in (self.data.get("chunks") or {}).items()]
        out = {}
        for what, layout, table in tables:
            if table:
                dims = table["dims"]
                grid = [[[self.gemm_seconds(layout, a, b, c) for c in dims[2]] for b in dims[1]] for a in dims[0]]
                out[what, layout] = dims, np.asarray(table["seconds"]) / np.asarray(grid)
        return out

    def _factor(self, what: str, layout: str, m: int, n: int, k: int) -> float:
        """``_over_grid``'s ratio interpolated in log space (``log_interpolate``), the nearest point's beyond its
        points (1 where it was not measured)."""
        if (what, layout) not in self._over_grid:
            return 1.0
        dims, ratio = self._over_grid[what, layout]
        point = [min(max(v, axis[0]), axis[-1]) for v, axis in zip((m, n, k), dims)]
        return float(log_interpolate(dims, ratio, point))

    def run_factor(self, m: int, n: int, k: int) -> float:
        """A product's time in a run (``measure_runs``) over its time as the grid prices it (``_factor``)."""
        return self._factor("runs", "nn", m, n, k)

    def chunk_factor(self, layout: str, m: int, n: int, k: int) -> float:
        """A product's time in an im2col chunk's loop (``measure_chunks``) over its time as the grid prices it
        (``_factor``)."""
        return self._factor("chunks", layout, m, n, k)

    def edge_factor(self, layout: str, m: int, n: int, k: int) -> float:
        """How much slower than the grid prices it a skinny product runs for its small sides that are not a power
        of two: for each such side among the measured widths, with the product's longest side at least
        EDGE_MIN_LONG, the ``edges`` profile's time at that width over the grid's time of the same profile
        product; their product (1 where nothing was measured)."""
        edges = self.data.get("edges") or {}
        profiles = edges.get("seconds", {}).get(layout)
        dims = (m, n, k)
        long = max(range(3), key=lambda a: dims[a])
        if not profiles or dims[long] < EDGE_MIN_LONG:
            return 1.0
        factor = 1.0
        for side in range(3):
            width = dims[side]
            if side != long and width in edges["widths"]:
                measured = profiles[f"{side}{long}"][edges["widths"].index(width)]
                factor *= measured / self.grid_seconds(layout, *_edge_shape(side, long, width))
        return factor

    def grid_seconds(self, layout: str, m: int, n: int, k: int) -> float:
        """Trilinear interpolation of the log rate (FLOPs per second) over log2 of the dimensions, from the
        corners of the grid cell on the product's own side of the small-matrix path's boundary where the
        layout splits there (``splits_paths``; all corners if none is); beyond the grid's largest dimension
        the time grows with the work. With every corner used this is the interpolation of log seconds."""
        dims = self.data["gemm_dims"]
        log_dims = np.log2(dims)
        grid = np.asarray(self.data["gemm"][layout])
        top = dims[-1]
        scale = max(m / top, 1) * max(n / top, 1) * max(k / top, 1)
        clamped = [min(v, top) for v in (m, n, k)]
        point = [math.log2(v) for v in clamped]
        lo = [min(int(np.searchsorted(log_dims, p, side="right")) - 1, len(dims) - 2) for p in point]
        frac = [(p - log_dims[i]) / (log_dims[i + 1] - log_dims[i]) for p, i in zip(point, lo)]
        side = small_path(layout, *clamped) if self.splits_paths(layout) else None
        corners = []
        for corner in itertools.product((0, 1), repeat=3):
            idx = tuple(i + c for i, c in zip(lo, corner))
            weight = math.prod(f if c else 1 - f for f, c in zip(frac, corner))
            shape = [dims[i] for i in idx]
            same_side = side is None or small_path(layout, *shape) == side
            corners.append((weight, math.log(math.prod(shape) / grid[idx]), same_side))
        same = [(w, r) for w, r, ok in corners if ok and w > 0] or [(w, r) for w, r, _ in corners]
        log_rate = sum(w * r for w, r in same) / sum(w for w, _ in same)
        return float(math.prod(clamped) / math.exp(log_rate) * scale)

    def deep_fraction(self, nbytes: float, far: bool = False) -> float:
        """How much of the deep penalty memory last used ``nbytes`` ago pays (the ``reach`` curve, or with
        ``far`` the one of an operand read back, ``far["reach"]``; linear in log bytes between its points, 0 below
        the first, 1 beyond DEEP_EVICT_BYTES)."""
        reach = self.data.get("far", {}).get("reach") if far else self.data.get("reach")
        if not reach:
            return 0.0
        points = np.asarray(reach + [[DEEP_EVICT_BYTES, 1.0]], dtype=np.float64)
        return float(np.interp(math.log(max(nbytes, 1.0)), np.log(points[:, 0]), points[:, 1], left=0.0, right=1.0))

    def l1_conflict_seconds(self, run: int, stride: int) -> float:
        """Seconds per element that a transposing copy's runs of ``run`` reads ``stride`` bytes apart add where
        they overflow their L1 sets (``l1_conflicts``); 0 where they fit or nothing was measured."""
        conflict = self.data.get("l1_conflict")
        if not conflict or not l1_conflicts(run, stride, conflict):
            return 0.0
        return conflict["seconds_per_element"]

    def far_seconds(self, nbytes: float, vector: bool = False) -> float:
        """Seconds to bring ``nbytes`` of operands from DRAM into a GEMM, or with ``vector`` into a
        matrix-vector product (``matrix_vector``; 0 without a ``far`` measurement)."""
        return nbytes * self.data.get("far", {}).get("vector_seconds_per_byte" if vector else "seconds_per_byte",
                                                      0.0)

    def curve_seconds(self, name: str, elements: int, width: int | None = None, deep: float = 0.0) -> float:
        """Log-log interpolation of the named curve; below its first size the first time, beyond its last the
        last time scaled by the elements. A pass along short rows (``width`` given) is interpolated in log
        width between the curves measured at WIDTHS (the nearest one outside them), then scaled by the ``widths``
        profile at that width (``_profile_at``) over the same interpolation of the profile (where one was
        measured), the call's fixed cost (``_fixed``) left unscaled. ``deep`` (0..1, a ``deep_fraction``): that
        share of the data's deep penalty, where a ``name~deep`` curve was measured: how much more it costs than
        this curve, less what it costs more on its smallest size. That part is the kernel's code and the
        interpreter's state, which the pass over DEEP_EVICT_BYTES evicts and a training step, running them every
        few microseconds, keeps warm (the call terms, measured in a step, price how warm); it does not grow with
        the data (numba float32: relu_forward's penalty was 65 us on 64 elements, 73 on 65,536 and 245 on
        1,048,576). None on the smallest size or below."""
        if width is not None:
            lo, hi = WIDTHS[0], WIDTHS[-1]
            w = min(max(width, lo), hi)
            f = math.log(w / lo) / math.log(hi / lo)

            def between(at_lo: float, at_hi: float) -> float:
                return math.exp((1 - f) * math.log(at_lo) + f * math.log(at_hi))
            seconds = between(self.curve_seconds(f"{name}@{lo}", elements, deep=deep),
                              self.curve_seconds(f"{name}@{hi}", elements, deep=deep))
            profile = self.data.get("widths", {}).get(name)
            if profile:  # a rate per element: it scales the time above the call's fixed cost, not that cost
                fixed = min(seconds, (1 - f) * self._fixed(f"{name}@{lo}") + f * self._fixed(f"{name}@{hi}"))
                ratio = _profile_at(profile, width) / between(_profile_at(profile, lo), _profile_at(profile, hi))
                seconds = fixed + (seconds - fixed) * ratio
            return float(seconds)
        shallow = self._interpolate(name, elements)
        deep_name = f"{name}~deep"
        if deep <= 0 or deep_name not in self.data["curves"]:
            return shallow
        first = self.data["curves"][deep_name][0][0]
        if elements <= first:
            return shallow

        def penalty(n: int) -> float:
            return self._interpolate(deep_name, n) - self._interpolate(name, n)
        return shallow + deep * max(0.0, penalty(elements) - penalty(first))

    def _fixed(self, name: str) -> float:
        """A curve's cost of a call on no elements: its first two points extrapolated to zero (within 0 and the
        first point's time)."""
        (e1, t1), (e2, t2) = self.data["curves"][name][:2]
        return float(min(t1, max(0.0, t1 - e1 * (t2 - t1) / (e2 - e1))))


if __name__ == "__main__":
    raise SystemExit(main())
