"""The GPU calibration of the cost model: what a CUDA device does with each primitive of the cupy backend's
training step, measured once per device and cached with its date (``calibration.py`` is the CPU's).

On the GPU the training loop replays its step from a CUDA graph (``minigrad.graphs``): the host launches the
graph once, the device runs its kernels back to back, and the loop waits for the loss. So every primitive is
timed as a replayed step runs it (``in_graph_seconds``): recorded ``REPEATS`` and twice ``REPEATS`` times into
two graphs, each replayed between CUDA events, the difference over ``REPEATS`` being one call's device time,
its node's own cost in the graph included and the graph's launch left out. Measured (never on a reference
model; every array synthetic, the pooling kernels' inputs made from the training images as on the CPU):

* ``gemm``: the backend's own GEMM (``cupy_ops.CublasGemm``) in the layouts its plans use (``plans._cupy_*``),
  over a grid of (batch, m, n, k): a batch of products as the convolutions call it (``nn`` and ``tn``: the first
  operand shared by the batch, as the weights are; ``nt``: both operands per image), and at batch 1 a single
  product, as the linear layers call it. Cells too large to time quickly are filled at the rate of the largest
  measured cell below them;
* ``curves``: device seconds against elements of each pass of the cupy plans (im2col_t, col2im_t, the bias
  kernel, channel_sums, a strided view made contiguous, a concatenation) and of each whole kernel (relu,
  pooling, the loss, the update), from 16 to 16M elements;
* launch latency, as three terms: ``node_seconds``, an empty kernel's device time as a node of a replayed graph
  (the least any kernel of a replayed step costs); ``launch_seconds``, its host time launched eagerly; and
  ``host``, each kernel call's host time eagerly on small shapes (its wrapper's Python and its launches, on a
  device that keeps up), which an eager step pays and the tracer's per-kernel times hold, with
  ``sync_seconds``, what a synchronisation with an idle device costs (the tracer synchronises around every call);
* ``tiny``: the synthetic CNN's replayed step (``calibration.synthetic_cnn``, through the training loop) at
  TINY_BATCHES: what a step costs beyond its kernels' device time (the loop's Python, the inputs' copies into
  the graph, the graph's launch, the loss read back) comes out of it (``predict.GpuCostModel``); and at
  ``calibration.REFERENCE_BATCHES`` how fast the device ran (``cnn_step``).

The GEMM cells and curve points are timed in PASSES passes, the fastest kept (``calibration.timed_in_passes``),
and how far the fastest two came apart is kept (``pass_disagreement``). Importing this module never needs CuPy.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np

from . import calibration

VERSION = 1  # of what a GPU calibration holds: another version is measured again
GEMM_LAYOUTS = ("nn", "nt", "tn")  # the cupy plans' (plans._cupy_*)
GEMM_DIMS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)
GEMM_BATCHES = (1, 8, 64, 512, 4096)
QUICK_GEMM_DIMS = (1, 16, 256, 4096, 65536)
QUICK_GEMM_BATCHES = (1, 64, 4096)
GEMM_MAX_ELEMENTS = 1 << 26       # per operand, over the batch
GEMM_MAX_FLOPS = 1 << 34          # a third of a millisecond at the fp32 peak of an H100
CURVE_SIZES = calibration.CURVE_SIZES
QUICK_CURVE_SIZES = tuple(16 ** i for i in range(1, 7))
REPEATS = 8                       # calls recorded per graph (and twice as many in the second)
REPLAYS = 5                       # replays of each graph, the fastest kept
HOST_CALLS = 200                  # eager calls per kernel for its host time (the median kept)
TINY_BATCHES = (4, 16, 64)       # small: the replay's fixed cost is what is left of these steps beyond their priced
                                  # kernels, and a large step would leave the kernels' pricing errors in it
PASSES = 2                        # over the cells: a GPU's timings do not move with other tenants' load as a
                                  # shared CPU's do (calibration.PASSES)


def in_graph_seconds(fn, repeats: int = REPEATS, replays: int = REPLAYS, record=None, timer=None) -> float:
    """Device seconds of one call of ``fn`` as a replayed step runs it: ``fn`` recorded ``repeats`` times into one
    CUDA graph and 2 x ``repeats`` times into another (``record(n)``, default a ``cupy_ops.StepGraph``), each
    replayed ``replays`` times between CUDA events (``timer(graph)``, default the fastest of
    ``cupy_ops.time_gpu``), the difference over ``repeats``: what one more call adds to a graph, its node's
    cost included, the graph's launch and the wait for its first node left out. Where noise makes the
    difference negative, the longer graph's time per call."""
    if record is None or timer is None:
        from minigrad.kernels import cupy_ops as ops

        record = record or (lambda n: ops.StepGraph(lambda: [fn() for _ in range(n)]))
        timer = timer or (lambda graph: float(np.min(ops.time_gpu(graph.replay, replays))))
    one = timer(record(repeats))
    two = timer(record(2 * repeats))
    per_call = (two - one) / repeats
    return per_call if per_call > 0 else two / (2 * repeats)


# -- GEMMs -----------------------------------------------------------------------------------------------------


def gemm_fits(batch: int, m: int, n: int, k: int) -> bool:
    return (2 * batch * m * n * k <= GEMM_MAX_FLOPS
            and batch * max(m * k, k * n, m * n) <= GEMM_MAX_ELEMENTS)


def fill_grid(grid: np.ndarray, axes) -> np.ndarray:
    """``grid`` (seconds over ``axes``: the batch, m, n and k values) with each unmeasured (NaN) cell filled at
    the rate of the measured cell of most work among those no larger along any axis (a product too large to
    time runs at the rate of a large one: the GPU's peak)."""
    out = grid.copy()
    measured = np.argwhere(~np.isnan(grid))
    logs = [np.log(np.asarray(a, dtype=np.float64)) for a in axes]

    def log_work(idx):
        return sum(lg[i] for lg, i in zip(logs, idx))
    works = np.array([log_work(c) for c in measured])
    for idx in np.argwhere(np.isnan(grid)):
        below = np.all(measured <= idx, axis=1)
        if below.any():
            best = measured[below][int(np.argmax(works[below]))]
            out[tuple(idx)] = grid[tuple(best)] * math.exp(log_work(idx) - log_work(best))
    return out


def _product(ops, layout: str, batch: int, m: int, n: int, k: int, dtype, rng):
    """The backend's GEMM on operands stored as its plans' calls store them: a call."""
    xp = ops._runtime().xp

    def arr(*shape):  # drawn on the device: the largest operands hold 64M elements
        return xp.asarray(rng.random(shape, dtype=dtype))
    matmul = ops._runtime().matmul
    if batch == 1:
        a = arr(k, m).T if layout[0] == "t" else arr(m, k)
        b = arr(n, k).T if layout[1] == "t" else arr(k, n)
        return lambda: matmul(a, b)
    if layout[1] == "t":  # dW's products: each image's dy and its columns, transposed
        a, b = arr(batch, m, k), arr(batch, n, k).transpose(0, 2, 1)
    else:                 # the weights (or their transpose) shared by the batch, times each image's block
        a = xp.broadcast_to(arr(k, m).T if layout[0] == "t" else arr(m, k), (batch, m, k))
        b = arr(batch, k, n)
    return lambda: matmul(a, b, tf32=ops.ALLOW_TF32)


def measure_gemm(dtype: str, dims=GEMM_DIMS, batches=GEMM_BATCHES, progress=None, disagreement=None,
                 seconds=in_graph_seconds) -> dict:
    """{layout: seconds as a nested list [batch][m][n][k]}: each fitting cell timed in a replayed graph (in two
    passes), the others filled (``fill_grid``)."""
    from minigrad.kernels import cupy_ops as ops

    rng = ops._runtime().xp.random.default_rng(0)
    d = range(len(dims))
    cells = [(layout, ib, i, j, l) for layout in GEMM_LAYOUTS for ib, b in enumerate(batches)
             for i, j, l in itertools.product(d, d, d) if gemm_fits(b, dims[i], dims[j], dims[l])]

    def time_cell(cell):
        layout, ib, i, j, l = cell
        return seconds(_product(ops, layout, batches[ib], dims[i], dims[j], dims[l], dtype, rng))

    times = calibration.timed_in_passes(cells, time_cell, progress, "gemm", disagreement=disagreement, passes=PASSES)
    out = {}
    for layout in GEMM_LAYOUTS:
        axes = (batches, dims, dims, dims)
        grid = np.full(tuple(len(a) for a in axes), np.nan)
        for (lay, ib, i, j, l), s in zip(cells, times):
            if lay == layout:
                grid[ib, i, j, l] = s
        out[layout] = fill_grid(grid, axes).tolist()
    return out


# -- passes and whole kernels ----------------------------------------------------------------------------------


def _pass_cases(ops, dtype: str) -> dict:
    """{pass: make(target elements) -> (fn, elements, inputs)} for the cupy plans' passes, on shapes unlike the
    reference models' (4 channels of 18 x 18 under a 3 x 3 kernel; rows of 16 and 256)."""
    xp = ops._runtime().xp
    rng = np.random.default_rng(1)

    def arr(*shape):
        return xp.asarray(rng.standard_normal(shape).astype(dtype))

    def rows(t, per_row):
        return max(1, t // per_row)

    def im2col(t):
        n = rows(t, 36 * 256)
        x = arr(n, 4, 18, 18)
        return (lambda: ops.im2col_t(x, 3, 3, 1, 0)), n * 36 * 256, (x,)

    def col2im(t):
        n = rows(t, 4 * 18 * 18)
        dcols = arr(n, 36, 256)
        return (lambda: ops.col2im_t(dcols, (n, 4, 18, 18), 3, 3, 1, 0, 16, 16)), n * 4 * 18 * 18, (dcols,)

    def channel_sums(t):
        n = rows(t, 256)
        x = arr(n, 256)
        return (lambda: ops.channel_sums(x, n, 256, 1)), n * 256, (x,)

    def strided_copy(t):  # a strided view made contiguous (dW's columns and db, cut from the weight sums)
        n = rows(t, 13)
        view = arr(13, n).T
        return (lambda: xp.ascontiguousarray(view)), n * 13, (view,)

    def concatenate(t):
        n = rows(t, 17)
        a, b = arr(n, 16), arr(n, 1)
        return (lambda: xp.concatenate((a, b), axis=1)), n * 17, (a, b)

    def add_bias_rows(t):
        n = rows(t, 16)
        y, b = arr(n, 16), arr(16)
        return (lambda: ops._launch("linear", "add_bias_rows", y.dtype, y.size, y, b, ops._i(n), ops._i(16))), \
            n * 16, (y,)

    return {"im2col_t": im2col, "col2im_t": col2im, "channel_sums": channel_sums, "strided_copy": strided_copy,
            "concatenate": concatenate, "add_bias_rows": add_bias_rows}


def _device(ops):
    """``calibration._kernel_cases``' ``put`` for this backend: host arrays to the device, anything else as it is."""
    return lambda a: ops.asarray(a) if isinstance(a, np.ndarray) else a


def measure_curves(dtype: str, sizes=CURVE_SIZES, progress=None, disagreement=None,
                   seconds=in_graph_seconds) -> dict:
    """{name: [[elements, seconds], ...]} of every pass and whole kernel, each point in PASSES passes."""
    from minigrad.kernels import cupy_ops as ops

    cases = {**_pass_cases(ops, dtype), **calibration._kernel_cases(ops, dtype, put=_device(ops))}
    cells = [(name, target) for name in cases for target in sizes]
    elements: dict = {}

    def time_cell(cell):
        name, target = cell
        fn, elements[cell], _ = cases[name](target)
        return seconds(fn)

    out: dict = {}
    for cell, s in zip(cells, calibration.timed_in_passes(cells, time_cell, progress, "curves",
                                                          disagreement=disagreement, passes=PASSES)):
        points = out.setdefault(cell[0], [])
        if not points or elements[cell] > points[-1][0]:
            points.append([int(elements[cell]), s])
    return out


# -- launch latency and the host's cost of a call --------------------------------------------------------------


def _host_cases(ops, dtype: str) -> dict:
    """{kernel (or kernel/no_dx: its backward without the input's gradient): a call on small shapes}."""
    put = _device(ops)
    rng = np.random.default_rng(4)

    def arr(*shape):
        return put(rng.standard_normal(shape).astype(dtype))
    x, w, b = arr(2, 3, 10, 10), arr(5, 3, 3, 3), arr(5)
    y, conv_cache = ops.conv2d_forward(x, w, b, 1, 0)
    dy = put(np.ones(y.shape, dtype=dtype))
    v, lw, lb = arr(2, 20), arr(7, 20), arr(7)
    out, linear_cache = ops.linear_forward(v, lw, lb)
    dout = put(np.ones(out.shape, dtype=dtype))
    cases = {"conv2d_forward": lambda: ops.conv2d_forward(x, w, b, 1, 0),
             "conv2d_backward": lambda: ops.conv2d_backward(dy, conv_cache, True),
             "conv2d_backward/no_dx": lambda: ops.conv2d_backward(dy, conv_cache, False),
             "linear_forward": lambda: ops.linear_forward(v, lw, lb),
             "linear_backward": lambda: ops.linear_backward(dout, linear_cache, True),
             "linear_backward/no_dx": lambda: ops.linear_backward(dout, linear_cache, False)}
    for name, make in calibration._kernel_cases(ops, dtype, put=put).items():
        cases[name] = make(64)[0]
    return cases


def host_seconds(fn, sync, calls: int = HOST_CALLS) -> float:
    """Median host seconds of ``calls`` eager calls of ``fn``, each on an idle device (``sync`` before it): the
    call's Python and its launches, not the device's work."""
    fn()
    times = []
    for _ in range(calls):
        sync()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    sync()
    return float(np.median(times))


def measure_launches(dtype: str, seconds=in_graph_seconds) -> dict:
    """``host`` (each kernel's host seconds per eager call), ``launch_seconds``, ``node_seconds`` and
    ``sync_seconds`` (see the module's docstring)."""
    import cupy

    from minigrad.kernels import cupy_ops as ops

    from .device import _EMPTY_KERNEL

    empty = cupy.RawKernel(_EMPTY_KERNEL, "minigrad_empty_kernel")

    def launch():
        empty((1,), (1,), ())
    host = {name: host_seconds(fn, ops.synchronize) for name, fn in _host_cases(ops, dtype).items()}
    return {"host": host, "launch_seconds": host_seconds(launch, ops.synchronize),
            "node_seconds": seconds(launch), "sync_seconds": host_seconds(ops.synchronize, lambda: None)}


# -- the calibration -------------------------------------------------------------------------------------------


def replayed_step(dtype: str, batch_size: int, steps: int = 200) -> float:
    """``calibration.reference`` on the GPU: the median of ``steps`` training steps of the synthetic CNN at
    ``batch_size`` after 20 warm-up steps, every one of them replayed from a CUDA graph (a recording that failed
    leaves the loop eager, with a warning: an error here, since an eager step is not what is measured)."""
    stream = calibration._steps(calibration.synthetic_cnn(dtype), dtype, np.random.default_rng(3), batch_size)
    for _ in range(20):
        next(stream)
    records = [next(stream) for _ in range(steps)]
    eager = sum(not r.captured for r in records)
    if eager:
        raise RuntimeError(f"gpu calibration: {eager} of the synthetic CNN's {steps} steps at B={batch_size} ran "
                           "eagerly, not replayed from a CUDA graph (see the loop's warning)")
    return float(np.median([r.compute_seconds for r in records]))


def measure(dtype: str = "float32", quick: bool = False, progress=None) -> dict:
    """Every primitive of the cupy backend at ``dtype`` on the current device (about a minute; ``quick``: a
    coarser grid and fewer sizes, in seconds)."""
    from minigrad import backend as be
    from minigrad.kernels import cupy_ops as ops

    from .device import current_device_name

    say = progress or (lambda text: None)
    dims, batches = (QUICK_GEMM_DIMS, QUICK_GEMM_BATCHES) if quick else (GEMM_DIMS, GEMM_BATCHES)
    with be.use_backend("cupy"):
        import cupy

        result = {"version": VERSION, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "device": current_device_name(), "cupy": cupy.__version__, "backend": "cupy", "dtype": dtype,
                  "quick": quick, "tf32": ops.ALLOW_TF32, "gemm_dims": list(dims),
                  "gemm_batches": list(batches),
                  "images": calibration.training_images()[0]}
        passes: dict = {"curves": [], "gemm": []}
        result["curves"] = measure_curves(dtype, QUICK_CURVE_SIZES if quick else CURVE_SIZES, say,
                                          passes["curves"])
        result["gemm"] = measure_gemm(dtype, dims, batches, say, passes["gemm"])
        result.update(measure_launches(dtype))
        say("launches and host costs")
        replayed = {b: replayed_step(dtype, b) for b in sorted({*TINY_BATCHES, *calibration.REFERENCE_BATCHES})}
        result["tiny"] = {"replayed": [[b, replayed[b]] for b in TINY_BATCHES],
                          "cnn_step": [[b, replayed[b]] for b in calibration.REFERENCE_BATCHES]}
        result["pass_disagreement"] = {name: calibration.disagreement_summary(d) for name, d in passes.items()}
        say("the synthetic CNN's replayed step")
    return result


def load(dtype: str = "float32", quick: bool = False, remeasure: bool = False, cache_dir=None,
         progress=None) -> "GpuCalibration":
    """This device's calibration at ``dtype`` (cached with its date, keyed by the device's name and whether
    the convolutions' GEMMs may use TF32; measured when absent or ``remeasure``)."""
    from minigrad.kernels import cupy_ops as ops

    from .ceilings import cached_measurement
    from .device import current_device_name

    key = f"{VERSION}|{current_device_name()}|{dtype}|tf32={ops.ALLOW_TF32}|{'quick' if quick else 'full'}"
    return GpuCalibration(cached_measurement("gpu-calibration", key, measure, remeasure, cache_dir, dtype=dtype,
                                             quick=quick, progress=progress))


@dataclass
class GpuCalibration(calibration.Measured):
    """The cupy backend's calibration on one device: ``measure``'s result and the cost model's lookups."""

    def gemm_seconds(self, layout: str, m: int, n: int, k: int, batch: int = 1) -> float:
        """Device seconds of a batch of ``batch`` (m, n, k) products in ``layout``: the grid interpolated in log
        time over log (batch, m, n, k), its time scaled by the work beyond the grid's largest values."""
        dims = self.data["gemm_dims"]
        axes = (self.data["gemm_batches"], dims, dims, dims)
        point, scale = [], 1.0
        for values, v in zip(axes, (batch, m, n, k)):
            top = values[-1]
            scale *= max(v / top, 1.0)
            point.append(min(max(v, values[0]), top))
        return calibration.log_interpolate(axes, np.asarray(self.data["gemm"][layout]), point) * scale

    def curve_seconds(self, name: str, elements: int) -> float:
        return self._interpolate(name, elements)

    def host_seconds(self, kernel: str, need_dx: bool = True) -> float:
        """A call's host seconds, eager (0 for a kernel the calibration did not time)."""
        host = self.data["host"]
        if not need_dx and f"{kernel}/no_dx" in host:
            return float(host[f"{kernel}/no_dx"])
        return float(host.get(kernel, 0.0))

    @property
    def node_seconds(self) -> float:
        return float(self.data["node_seconds"])

    @property
    def launch_seconds(self) -> float:
        return float(self.data["launch_seconds"])

    @property
    def sync_seconds(self) -> float:
        return float(self.data["sync_seconds"])
