// conv2d as im2col + one cuBLAS GEMM (the GEMMs live in cupy_ops.py); these kernels move data around it.
//
// Column matrix layout (the same as numpy_ops.im2col): (N*OH*OW, C*KH*KW), row (n, i, j), column (c, kh, kw).
#include "minigrad_cuda.h"

// One thread per element of the column matrix; consecutive threads write consecutive columns of a row.
template <typename T, typename I>
__device__ __forceinline__ void im2col(const T* x, T* cols, I N, I C, I H, I W, I KH, I KW, I stride, I pad, I OH, I
                                       OW) {
    const I K = C * KH * KW;
    GRID_STRIDE_LOOP(I, e, N * OH * OW * K) {
        const I row = e / K, col = e % K;
        const I j = row % OW, i = (row / OW) % OH, n = row / (OW * OH);
        const I kw = col % KW, kh = (col / KW) % KH, c = col / (KW * KH);
        const I h = i * stride + kh - pad, w = j * stride + kw - pad;
        cols[e] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : T(0);
    }
}

MG_KERNEL(im2col,
          (const T* x, T* cols, idx_t N, idx_t C, idx_t H, idx_t W, idx_t KH, idx_t KW, idx_t stride, idx_t pad,
           idx_t OH, idx_t OW),
          (x, cols, N, C, H, W, KH, KW, stride, pad, OH, OW))

// Adjoint of im2col written as a gather: one thread per input pixel sums the column entries that copied it
// (at most KH*KW, one per kernel offset whose window position lands on the output grid). Each thread owns
// its output, so overlapping windows need no atomics, and the sum runs in (kh, kw) order like numpy_ops.
template <typename T, typename I>
__device__ __forceinline__ void col2im(const T* dcols, T* dx, I N, I C, I H, I W, I KH, I KW, I stride, I pad, I OH,
                                       I OW) {
    const I K = C * KH * KW;
    GRID_STRIDE_LOOP(I, e, N * C * H * W) {
        const I w = e % W, h = (e / W) % H, c = (e / (W * H)) % C, n = e / (W * H * C);
        T sum = T(0);
        for (I kh = 0; kh < KH; ++kh) {
            const I hs = h + pad - kh;  // = i * stride for the window row i that covers h at offset kh
            if (hs < 0 || hs % stride != 0 || hs / stride >= OH) continue;
            const I i = hs / stride;
            for (I kw = 0; kw < KW; ++kw) {
                const I ws = w + pad - kw;
                if (ws < 0 || ws % stride != 0 || ws / stride >= OW) continue;
                const I j = ws / stride;
                sum += dcols[((n * OH + i) * OW + j) * K + (c * KH + kh) * KW + kw];
            }
        }
        dx[e] = sum;
    }
}

MG_KERNEL(col2im,
          (const T* dcols, T* dx, idx_t N, idx_t C, idx_t H, idx_t W, idx_t KH, idx_t KW, idx_t stride, idx_t pad,
           idx_t OH, idx_t OW),
          (dcols, dx, N, C, H, W, KH, KW, stride, pad, OH, OW))

// GEMM output (N*HW, F) -> y (N, F, HW) plus the bias (b may be null): the layout change and the bias add
// in one pass instead of a transpose copy followed by a broadcast add.
template <typename T, typename I>
__device__ __forceinline__ void rows_to_nchw(const T* rows, const T* b, T* y, I N, I F, I HW) {
    GRID_STRIDE_LOOP(I, e, N * F * HW) {
        const I hw = e % HW, f = (e / HW) % F, n = e / (HW * F);
        const T v = rows[(n * HW + hw) * F + f];
        y[e] = b ? v + b[f] : v;
    }
}

MG_KERNEL(rows_to_nchw, (const T* rows, const T* b, T* y, idx_t N, idx_t F, idx_t HW), (rows, b, y, N, F, HW))

// dy (N, F, HW) -> (N*HW, F), the GEMM-ready layout of the upstream gradient (the inverse of the above).
template <typename T, typename I>
__device__ __forceinline__ void nchw_to_rows(const T* y, T* rows, I N, I F, I HW) {
    GRID_STRIDE_LOOP(I, e, N * HW * F) {
        const I f = e % F, hw = (e / F) % HW, n = e / (F * HW);
        rows[e] = y[(n * F + f) * HW + hw];
    }
}

MG_KERNEL(nchw_to_rows, (const T* y, T* rows, idx_t N, idx_t F, idx_t HW), (y, rows, N, F, HW))

