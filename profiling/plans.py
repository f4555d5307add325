"""What each backend does inside each kernel call, as terms the machine calibration can price.

A kernel call is priced as the sum of its terms:

* ``gemm``: a BLAS matrix product of shape (m, n, k) in one of four operand layouts (``nn``: A @ B, ``nt``:
  A @ B.T, ``tn``: A.T @ B, ``tt``: A.T @ B.T, where A is m x k and B is k x n as the product sees them),
  priced by the calibration's GEMM table (``RUN``: an nn product of a run, priced by the runs' ratio to it;
  a layout ending in ``CHUNK``: a product of an im2col chunk, priced by the chunks' ratio to it);
* ``pass``: one of the backend's own memory passes (an im2col, a layout change, a reduction, a fill), priced
  by its curve of seconds against elements measured on synthetic arrays;
* ``kernel``: a whole kernel without GEMMs (relu, pooling, the loss, the optimizer update), priced by its own
  curve of seconds against elements;
* ``call``: what a kernel call costs in a training step beyond its other terms: a GEMM kernel's wrapper
  (validation, allocation, the BLAS thread guard), and for every kernel how warm the step leaves it (a kernel
  called again after one other finds its wrapper's code and data warm, one called once per step cold), so it
  may be negative for a whole kernel, whose curve is timed cold. Measured in a synthetic step
  (``calibration._in_step``) for the first call of a kernel in a step and for its calls after that;
* ``split``: starting the Numba backend's blocks of a split kernel on its threads (one parallel region).

On the GPU (cupy) a GEMM is (m, n, k, batch), a batch of products in one cuBLAS call, and a call's ``call`` term
is its host cost (``gpu_calibration``): the device's time is the other terms'.

Allocations have no term of their own: the host backends make glibc recycle a step's freed memory
(``kernels/_host.keep_freed_memory``), so a steady-state step takes no fresh pages from the OS, and an array's
cost is the writing of it, in its pass.

The plans read the Numba backend's decisions (direct or im2col convolution, chunk sizes, when to split over
threads) from its ``TUNING``, so a retuned backend is priced as it now runs. Every plan is a reading of the
kernel's code: change a kernel, change its plan (``tests/profiling/test_plans.py`` checks each plan against
the tracer on small shapes).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    kind: str        # gemm | pass | kernel | call | split
    what: str        # the GEMM's layout, the pass's or kernel's curve name
    size: tuple      # (m, n, k) for a GEMM; (elements,) or (elements, width) for a pass or kernel in wide()
    count: int = 1   # how many times the call runs it (chunks, blocks)
    far: int = 0     # elements it reads or writes of arrays last used a whole step ago (weights, the forward's
                     # activations in the backward): from DRAM once the step outgrows the caches
    strided: tuple = ()  # (run, stride in bytes) of a transposing copy's strided side, whose lines the next run
                         # reads again: priced with L1 misses where the run overflows its sets


@dataclass(frozen=True)
class Call:
    """One kernel call of a training step and the shapes that price it."""
    kernel: str
    shape: dict


# Kernels priced whole by a curve over this many elements (of the argument named).
CURVE_KERNELS = {
    "relu_forward": "x", "relu_backward": "x",
    "maxpool2d_forward": "x", "maxpool2d_backward": "x",
    "relu_maxpool2d_forward": "x", "relu_maxpool2d_backward": "x",
    "softmax_xent_forward": "x", "softmax_xent_backward": "x",
    "log_softmax_forward": "x", "log_softmax_backward": "x",
    "sgd_update": "x",
}


#: Passes and kernels whose loops run along short rows: priced by elements and the row's length, given as a
#: width, since a short row costs more per element. Numba's copies and layout changes and the pooling kernels run
#: along image rows (the width of the output for im2col/col2im and the layouts, of the input for pooling); a
#: column sum along rows of its columns; Winograd's transforms along the channels of their tiles (in, and out).
WIDE = ("im2col", "col2im", "im2col_plane", "col2im_plane", "gemm_out_to_nchw", "nchw_to_gemm_in",
        "maxpool2d_forward", "maxpool2d_backward", "relu_maxpool2d_forward", "relu_maxpool2d_backward",
        "column_sum", "winograd_input", "winograd_output")

#: NumPy's own copies run along the innermost axis its iterator keeps, which is not always an image row: the
#: kernel's width for im2col (runs of KW pixels), the output's width for col2im's planes and slice-adds, the
#: number of filters for the layout changes (one GEMM row of F values).
NUMPY_WIDE = ("col2im_planes", "shifted_add")


def wide(backend: str) -> tuple:
    """The passes and kernels of ``backend`` priced by elements and width (none on the GPU, whose threads each
    take an element or a window, whatever the row)."""
    if backend in GPU_BACKENDS:
        return ()
    return WIDE + (NUMPY_WIDE if backend == "numpy" else ())


#: Kernels a step calls back to back (the optimizer updates one parameter after another), so the calibration
#: times them hot, call after call, where it times every other whole kernel cold.
BACK_TO_BACK = ("sgd_update",)


def _elements(shape) -> int:
    return int(math.prod(shape))


def plan(backend: str, call: Call, threads: int) -> list[Term]:
    """The terms of ``call`` on ``backend`` ("numpy", "numba" or "cupy") running ``threads`` threads. Every plan takes
    the call's shapes, ``threads`` and ``itemsize``, whether or not its backend's decisions depend on them."""
    if call.kernel in CURVE_KERNELS:
        x, n = call.shape["x"], _elements(call.shape["x"])
        size = (n, x[-1]) if call.kernel in wide(backend) else (n,)
        return [Term("call", call.kernel, ()), Term("kernel", call.kernel, size)]
    planner = _PLANS.get((backend, call.kernel))
    if planner is None:
        raise KeyError(f"no plan for kernel {call.kernel!r} on the {backend} backend")
    return [Term("call", call.kernel, ())] + planner(threads=threads, **call.shape)


# -- numpy: strided im2col + one GEMM per conv, BLAS on every thread -------------------------------------------


def conv_geometry(N, C, H, W, F, KH, KW, stride, padding):
    """(OH, OW, C*KH*KW, OH*OW) of a convolution: output size, patch length, pixels per output plane."""
    OH = (H + 2 * padding - KH) // stride + 1
    OW = (W + 2 * padding - KW) // stride + 1
    return OH, OW, C * KH * KW, OH * OW


def _numpy_conv2d_forward(N, C, H, W, F, KH, KW, stride, padding, bias, need_dx, threads, itemsize):
    OH, OW, K, P = conv_geometry(N, C, H, W, F, KH, KW, stride, padding)
    terms = [Term("pass", "pad", (N * C * (H + 2 * padding) * (W + 2 * padding),))] if padding else []
    return terms + [Term("pass", "im2col", (N * P * K, KW)),
                    Term("gemm", "nt", (N * P, F, K)),
                    Term("pass", "gemm_out_to_nchw", (N * P * F, F), strided=(P, F * itemsize))]


def _numpy_conv2d_backward(N, C, H, W, F, KH, KW, stride, padding, bias, need_dx, threads, itemsize):
    OH, OW, K, P = conv_geometry(N, C, H, W, F, KH, KW, stride, padding)
    M = N * P
    terms = [Term("pass", "nchw_to_gemm_in", (M * F, F), strided=(F, P * itemsize)),
             Term("gemm", "tn", (F, K, M), far=M * K)]  # far: the forward's cols
    if need_dx:
        Hp, Wp = H + 2 * padding, W + 2 * padding
        terms += [Term("gemm", "nn", (M, K, F)), Term("pass", "col2im_planes", (M * K, OW), strided=(P, K * itemsize)),
                  Term("pass", "fill", (N * C * Hp * Wp,)),
                  Term("pass", "shifted_add", (N * C * OH * OW, OW), count=KH * KW)]
        terms += [Term("pass", "crop", (N * C * H * W,))] if padding else []
    return terms + ([Term("pass", "column_sum", (M * F, F))] if bias else [])


def _numpy_linear_forward(N, IN, OUT, bias, need_dx, threads, itemsize):
    return [Term("gemm", "nt", (N, OUT, IN), far=OUT * IN)] + ([Term("pass", "bias_add", (N * OUT,))] if bias else [])


def _numpy_linear_backward(N, IN, OUT, bias, need_dx, threads, itemsize):
    return (([Term("gemm", "nn", (N, IN, OUT), far=OUT * IN)] if need_dx else [])
            + [Term("gemm", "tn", (OUT, IN, N), far=N * IN + OUT * IN)]  # x from the forward, dw's buffer
            + ([Term("pass", "column_sum", (N * OUT, OUT))] if bias else []))


# -- numba: direct or chunked im2col convolutions, blocks of work split over the threads ---------------------


def _tuning() -> dict:
    from minigrad.kernels.numba_runtime import TUNING

    return TUNING


def _blocks(terms_of_block, n: int, work: int, threads: int, elements: int = 0) -> list[Term]:
    """The terms of the slowest block of a split (numba_runtime.blocks_on: the first block, which holds ceil(n/T)
    rows) plus the hand-offs."""
    from minigrad.kernels.numba_runtime import blocks_on

    t = blocks_on(threads, n, work, elements)
    terms = terms_of_block(-(-n // t))
    return terms + ([Term("split", "split", (t,))] if t > 1 else [])


def _numba_ops():
    """The Numba backend's module: its own functions decide direct or im2col, the layout and the chunks."""
    from minigrad.kernels import numba_ops

    return numba_ops


#: The suffix of a product's layout in an im2col chunk (``_chunked``): run from jitted code on the columns the chunk
#: has just written, priced by the calibration's chunks (``calibration.measure_chunks``).
CHUNK = "-chunk"


def grid_layout(what: str) -> str:
    """The GEMM grid's layout of a product's ``what``: nn for a product of a run (RUN), a chunk's without its CHUNK
    suffix, else ``what`` itself."""
    return "nn" if what == RUN else what.removesuffix(CHUNK)


def _chunked(nb_rows: int, K: int, Lr: int, itemsize: int, per_chunk) -> list[Term]:
    """Terms of a block of ``nb_rows`` samples processed in the conv's chunks (numba_ops._chunk_samples) of
    ``Lr`` GEMM columns per sample, their products' layouts marked CHUNK."""
    nb = min(nb_rows, _numba_ops()._chunk_samples(K, Lr, itemsize))
    full, rest = divmod(nb_rows, nb)

    def chunk(n):
        return [dataclasses.replace(t, what=t.what + CHUNK) if t.kind == "gemm" else t for t in per_chunk(n)]
    terms = [dataclasses.replace(t, count=full) for t in chunk(nb)] if full else []
    return terms + (chunk(rest) if rest else [])


def _numba_im2col_layout(stride, Wp, OH, OW):
    """The im2col path's columns per sample Lr (numba_ops._gemm_layout), and its copy passes: one flat run per
    patch row in the plane layout (stride 1; a run about OW^2 long, priced by OW like the others), rows of OW
    otherwise."""
    _, Lr = _numba_ops()._gemm_layout(stride, Wp, OH, OW)

    def copy(name, elements):
        return Term("pass", f"{name}_plane" if stride == 1 else name, (elements, OW))
    return Lr, copy


#: The layout of a product in one of Numba's runs of products (Winograd's 16 per sample, ``numba_runtime.gemm_run``):
#: an nn product, priced by the calibration's runs (``calibration.measure_runs``).
RUN = "nn-run"


def _winograd_samples(n: int, C: int, F: int, OH: int, OW: int) -> list[Term]:
    """Terms of Winograd F(2x2, 3x3) over ``n`` samples from C to F channels with an OH x OW output, one sample at
    a time (numba_ops._winograd_block): the input transform (16 values per tile and input channel), a run of 16
    GEMMs (tiles x F x C), the output transform (16 products per tile and output channel)."""
    tiles = (OH // 2) * (OW // 2)
    return [Term("pass", "winograd_input", (n * tiles * 16 * C, C)), Term("gemm", RUN, (tiles, F, C), count=16 * n),
            Term("pass", "winograd_output", (n * tiles * 16 * F, F))]


def _numba_conv2d_forward(N, C, H, W, F, KH, KW, stride, padding, bias, need_dx, threads, itemsize):
    OH, OW, K, P = conv_geometry(N, C, H, W, F, KH, KW, stride, padding)
    terms = [Term("pass", "pad", (N * C * (H + 2 * padding) * (W + 2 * padding),))] if padding else []
    Wp = W + 2 * padding
    if _numba_ops()._direct(stride, F):  # the kernel's own order: direct, Winograd, im2col
        L = (OH - 1) * Wp + OW  # the plane trick's flat run per output plane

        def block(n):
            return [Term("pass", f"direct_conv_{KH}x{KW}", (n * F * C * KH * KW * L,))]
    elif _numba_ops()._winograd(stride, KH, KW, C, F, OH, OW):
        terms += [Term("pass", "winograd_filters", (F * C * KH * KW,))]

        def block(n):
            return _winograd_samples(n, C, F, OH, OW)
    else:
        Lr, copy = _numba_im2col_layout(stride, Wp, OH, OW)

        def block(n):
            return _chunked(n, K, Lr, itemsize, lambda nb: [
                copy("im2col", K * nb * Lr), Term("gemm", "nn", (F, nb * Lr, K)),
                Term("pass", "gemm_out_to_nchw", (F * nb * P, OW))])
    return terms + _blocks(block, N, N * F * K * P, threads)


def _numba_conv2d_backward(N, C, H, W, F, KH, KW, stride, padding, bias, need_dx, threads, itemsize):
    OH, OW, K, P = conv_geometry(N, C, H, W, F, KH, KW, stride, padding)
    Hp, Wp = H + 2 * padding, W + 2 * padding
    if _numba_ops()._direct_dw(stride, C, need_dx):
        L = (OH - 1) * Wp + OW
        return _blocks(lambda n: [Term("pass", f"direct_wgrad_{KH}x{KW}", (n * F * C * KH * KW * L,))], N,
                       2 * N * F * K * P, threads)
    Lr, copy = _numba_im2col_layout(stride, Wp, OH, OW)
    winograd_dx = need_dx and _numba_ops()._winograd(stride, KH, KW, F, C, Hp, Wp)
    im2col_dx = need_dx and not winograd_dx

    def block(n):
        return _chunked(n, K, Lr, itemsize, lambda nb: [
            copy("im2col", K * nb * Lr), Term("pass", "nchw_to_gemm_in", (F * nb * P, OW)),
            Term("gemm", "nt", (K, F, nb * Lr))] + ([
                Term("gemm", "tn", (K, nb * Lr, F)), copy("col2im", K * nb * Lr)] if im2col_dx else [])) + (
            _winograd_samples(n, F, C, Hp, Wp) if winograd_dx else [])
    terms = [Term("pass", "fill", (N * C * Hp * Wp,))] if im2col_dx else []
    terms += [Term("pass", "winograd_filters", (F * C * KH * KW,))] if winograd_dx else []
    terms += _blocks(block, N, 2 * N * F * K * P, threads)
    terms += [Term("pass", "transpose", (F * K,))]  # the weight gradient, computed transposed
    return terms + ([Term("pass", "crop", (N * C * H * W,))] if padding and need_dx else [])


def _numba_linear_forward(N, IN, OUT, bias, need_dx, threads, itemsize):
    terms = _blocks(lambda rows: [Term("gemm", "nt", (rows, N, IN), far=rows * IN)], OUT, N * IN * OUT, threads,
                    IN * OUT)
    return terms + [Term("pass", "transpose", (N * OUT,))] + ([Term("pass", "bias_add", (N * OUT,))] if bias else [])


def _numba_linear_backward(N, IN, OUT, bias, need_dx, threads, itemsize):
    if N <= _tuning()["linear_outer_max_batch"]:
        dw = _blocks(lambda rows: [Term("pass", "outer_sum", (rows * IN * N,), far=N * IN + rows * IN)], OUT,
                     N * IN * OUT, threads, IN * OUT)
    else:
        dw = _blocks(lambda cols: [Term("gemm", "tn", (OUT, cols, N), far=N * cols + OUT * cols)], IN,
                     N * IN * OUT, threads, IN * OUT)
    dx = _blocks(lambda cols: [Term("gemm", "nn", (N, cols, OUT), far=OUT * cols)], IN, N * IN * OUT,
                 threads, IN * OUT) if need_dx else []
    return dw + dx + ([Term("pass", "column_sum", (N * OUT, OUT))] if bias else [])


# -- cupy: per-image column blocks and batches of per-image cuBLAS GEMMs (kernels/cupy_ops.py) ---------------------
#
# A GEMM's size is (m, n, k, batch): one strided-batched cuBLAS call of ``batch`` products (1: a plain one). A
# pass is one of the backend's own launches (or CuPy's: a contiguous copy of a strided view, a concatenation),
# priced by its device time in a replayed graph against elements.


def _cupy_conv2d_forward(N, C, H, W, F, KH, KW, stride, padding, bias, need_dx, threads, itemsize):
    OH, OW, K, P = conv_geometry(N, C, H, W, F, KH, KW, stride, padding)
    R = K + bool(bias)  # the bias rides the GEMM as one more column of W and a row of ones in the columns
    return ([Term("pass", "im2col_t", (N * R * P,))] + ([Term("pass", "concatenate", (F * R,))] if bias else [])
            + [Term("gemm", "nn", (F, P, R, N))])


def _cupy_conv2d_backward(N, C, H, W, F, KH, KW, stride, padding, bias, need_dx, threads, itemsize):
    OH, OW, K, P = conv_geometry(N, C, H, W, F, KH, KW, stride, padding)
    R = K + bool(bias)
    terms = [Term("gemm", "nt", (F, R, P, N))]  # each image's dy[n] cols[n]^T
    terms += [Term("pass", "channel_sums", (N * F * R,))] if N > 1 else []
    if bias:  # dW is the sums' first K columns, db their last: two strided views made contiguous
        terms += [Term("pass", "strided_copy", (F * K,)), Term("pass", "strided_copy", (F,))]
    if need_dx:  # W^T (a transposed view shared by the batch) times each image's dy
        terms += [Term("gemm", "tn", (K, P, F, N)), Term("pass", "col2im_t", (N * C * H * W,))]
    return terms


def _cupy_linear_forward(N, IN, OUT, bias, need_dx, threads, itemsize):
    return [Term("gemm", "nt", (N, OUT, IN, 1))] + ([Term("pass", "add_bias_rows", (N * OUT,))] if bias else [])


def _cupy_linear_backward(N, IN, OUT, bias, need_dx, threads, itemsize):
    dw = "nn" if N == 1 else "tn"  # dy^T @ x: of a batch of one, dy^T is a column, contiguous as it stands
    return (([Term("gemm", "nn", (N, IN, OUT, 1))] if need_dx else []) + [Term("gemm", dw, (OUT, IN, N, 1))]
            + ([Term("pass", "channel_sums", (N * OUT,))] if bias else []))


_PLANS = {
    ("numpy", "conv2d_forward"): _numpy_conv2d_forward,
    ("numpy", "conv2d_backward"): _numpy_conv2d_backward,
    ("numpy", "linear_forward"): _numpy_linear_forward,
    ("numpy", "linear_backward"): _numpy_linear_backward,
    ("numba", "conv2d_forward"): _numba_conv2d_forward,
    ("numba", "conv2d_backward"): _numba_conv2d_backward,
    ("numba", "linear_forward"): _numba_linear_forward,
    ("numba", "linear_backward"): _numba_linear_backward,
    ("cupy", "conv2d_forward"): _cupy_conv2d_forward,
    ("cupy", "conv2d_backward"): _cupy_conv2d_backward,
    ("cupy", "linear_forward"): _cupy_linear_forward,
    ("cupy", "linear_backward"): _cupy_linear_backward,
}

BACKENDS = ("numpy", "numba")  # calibrated by profiling/calibration.py
GPU_BACKENDS = ("cupy",)        # by profiling/gpu_calibration.py
