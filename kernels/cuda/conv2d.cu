// conv2d as im2col + one cuBLAS GEMM (the GEMMs live in cupy_ops.py); these kernels move data around it.
//
// Column matrix layout (the same as numpy_ops.im2col): (N*OH*OW, C*KH*KW), row (n, i, j), column (c, kh, kw).
#include "minigrad_cuda.h"

// One thread per element of the column matrix; consecutive threads write consecutive columns of a row.
template <typename T>
__device__ __forceinline__ void im2col(const T* x, T* cols, idx_t N, idx_t C, idx_t H, idx_t W, idx_t KH,
                                       idx_t KW, idx_t stride, idx_t pad, idx_t OH, idx_t OW) {
    const idx_t K = C * KH * KW;
    GRID_STRIDE_LOOP(e, N * OH * OW * K) {
        const idx_t row = e / K, col = e % K;
        const idx_t j = row % OW, i = (row / OW) % OH, n = row / (OW * OH);
        const idx_t kw = col % KW, kh = (col / KW) % KH, c = col / (KW * KH);
        const idx_t h = i * stride + kh - pad, w = j * stride + kw - pad;
        cols[e] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : T(0);
    }
}

extern "C" __global__ void im2col_f32(const float* x, float* cols, idx_t N, idx_t C, idx_t H, idx_t W,
                                      idx_t KH, idx_t KW, idx_t stride, idx_t pad, idx_t OH, idx_t OW) {
    im2col(x, cols, N, C, H, W, KH, KW, stride, pad, OH, OW);
}
extern "C" __global__ void im2col_f64(const double* x, double* cols, idx_t N, idx_t C, idx_t H, idx_t W,
                                      idx_t KH, idx_t KW, idx_t stride, idx_t pad, idx_t OH, idx_t OW) {
    im2col(x, cols, N, C, H, W, KH, KW, stride, pad, OH, OW);
}

// Adjoint of im2col written as a gather: one thread per input pixel sums the column entries that copied it
// (at most KH*KW, one per kernel offset whose window position lands on the output grid). Each thread owns
// its output, so overlapping windows need no atomics, and the sum runs in (kh, kw) order like numpy_ops.
template <typename T>
__device__ __forceinline__ void col2im(const T* dcols, T* dx, idx_t N, idx_t C, idx_t H, idx_t W, idx_t KH,
                                       idx_t KW, idx_t stride, idx_t pad, idx_t OH, idx_t OW) {
    const idx_t K = C * KH * KW;
    GRID_STRIDE_LOOP(e, N * C * H * W) {
        const idx_t w = e % W, h = (e / W) % H, c = (e / (W * H)) % C, n = e / (W * H * C);
        T sum = T(0);
        for (idx_t kh = 0; kh < KH; ++kh) {
            const idx_t hs = h + pad - kh;  // = i * stride for the window row i that covers h at offset kh
            if (hs < 0 || hs % stride != 0 || hs / stride >= OH) continue;
            const idx_t i = hs / stride;
            for (idx_t kw = 0; kw < KW; ++kw) {
                const idx_t ws = w + pad - kw;
                if (ws < 0 || ws % stride != 0 || ws / stride >= OW) continue;
                const idx_t j = ws / stride;
                sum += dcols[((n * OH + i) * OW + j) * K + (c * KH + kh) * KW + kw];
            }
        }
        dx[e] = sum;
    }
}

extern "C" __global__ void col2im_f32(const float* dcols, float* dx, idx_t N, idx_t C, idx_t H, idx_t W,
                                      idx_t KH, idx_t KW, idx_t stride, idx_t pad, idx_t OH, idx_t OW) {
    col2im(dcols, dx, N, C, H, W, KH, KW, stride, pad, OH, OW);
}
extern "C" __global__ void col2im_f64(const double* dcols, double* dx, idx_t N, idx_t C, idx_t H, idx_t W,
                                      idx_t KH, idx_t KW, idx_t stride, idx_t pad, idx_t OH, idx_t OW) {
    col2im(dcols, dx, N, C, H, W, KH, KW, stride, pad, OH, OW);
}

// GEMM output (N*HW, F) -> y (N, F, HW) plus the bias (b may be null): the layout change and the bias add
// in one pass instead of a transpose copy followed by a broadcast add.
template <typename T>
__device__ __forceinline__ void rows_to_nchw(const T* rows, const T* b, T* y, idx_t N, idx_t F, idx_t HW) {
    GRID_STRIDE_LOOP(e, N * F * HW) {
        const idx_t hw = e % HW, f = (e / HW) % F, n = e / (HW * F);
        const T v = rows[(n * HW + hw) * F + f];
        y[e] = b ? v + b[f] : v;
    }
}

extern "C" __global__ void rows_to_nchw_f32(const float* rows, const float* b, float* y, idx_t N, idx_t F,
                                            idx_t HW) {
    rows_to_nchw(rows, b, y, N, F, HW);
}
extern "C" __global__ void rows_to_nchw_f64(const double* rows, const double* b, double* y, idx_t N, idx_t F,
                                            idx_t HW) {
    rows_to_nchw(rows, b, y, N, F, HW);
}

// dy (N, F, HW) -> (N*HW, F), the GEMM-ready layout of the upstream gradient (the inverse of the above).
template <typename T>
__device__ __forceinline__ void nchw_to_rows(const T* y, T* rows, idx_t N, idx_t F, idx_t HW) {
    GRID_STRIDE_LOOP(e, N * HW * F) {
        const idx_t f = e % F, hw = (e / F) % HW, n = e / (F * HW);
        rows[e] = y[(n * F + f) * HW + hw];
    }
}

extern "C" __global__ void nchw_to_rows_f32(const float* y, float* rows, idx_t N, idx_t F, idx_t HW) {
    nchw_to_rows(y, rows, N, F, HW);
}
extern "C" __global__ void nchw_to_rows_f64(const double* y, double* rows, idx_t N, idx_t F, idx_t HW) {
    nchw_to_rows(y, rows, N, F, HW);
}
