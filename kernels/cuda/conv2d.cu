// conv2d as im2col + one cuBLAS GEMM (the GEMMs live in cupy_ops.py); these kernels move data around it.
//
// Column matrix layout: (C*KH*KW, N*OH*OW), row (c, kh, kw), column (n, i, j): numpy_ops.im2col transposed.
// In this orientation consecutive threads take consecutive output pixels j, so the reads of x (along an
// image row), the writes of the columns and col2im's reads of them are all coalesced; in numpy_ops' (rows =
// pixels) orientation consecutive threads walk a patch (c, kh, kw), which scatters the reads over channels
// and makes col2im read with a stride of C*KH*KW. The GEMM output is then (F, N*OH*OW), "FNP" below.
#include "minigrad_cuda.h"

// One thread per (channel, pixel of the output grid): it writes the KH*KW rows of its channel at its column.
// The index arithmetic (divisions, the kernels' main cost here) is done once per thread, not once per
// element, and for each (kh, kw) consecutive threads still write consecutive addresses.
template <typename T, typename I>
__device__ __forceinline__ void im2col(const T* x, T* cols, I N, I C, I H, I W, I KH, I KW, I stride, I pad, I OH, I
                                       OW) {
    const I P = OH * OW, NP = N * P;
    GRID_STRIDE_LOOP(I, e, C * NP) {
        const I col = e % NP, c = e / NP;
        const I p = col % P, n = col / P, j = p % OW, i = p / OW;
        const T* plane = x + (n * C + c) * H * W;
        T* out = cols + c * KH * KW * NP + col;
        for (I kh = 0; kh < KH; ++kh) {
            const I h = i * stride + kh - pad;
            for (I kw = 0; kw < KW; ++kw) {
                const I w = j * stride + kw - pad;
                out[(kh * KW + kw) * NP] = (h >= 0 && h < H && w >= 0 && w < W) ? plane[h * W + w] : T(0);
            }
        }
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
    const I P = OH * OW, NP = N * P;
    GRID_STRIDE_LOOP(I, e, N * C * H * W) {
        const I w = e % W, h = (e / W) % H, c = (e / (W * H)) % C, n = e / (W * H * C);
        const T* in = dcols + c * KH * KW * NP + n * P;
        T sum = T(0);
        for (I kh = 0; kh < KH; ++kh) {
            const I hs = h + pad - kh;  // = i * stride for the window row i that covers h at offset kh
            // stride 1 (the common case) needs no division: a uniform branch, not a per-element one
            if (hs < 0 || (stride != 1 && hs % stride != 0)) continue;
            const I i = stride == 1 ? hs : hs / stride;
            if (i >= OH) continue;
            for (I kw = 0; kw < KW; ++kw) {
                const I ws = w + pad - kw;
                if (ws < 0 || (stride != 1 && ws % stride != 0)) continue;
                const I j = stride == 1 ? ws : ws / stride;
                if (j >= OW) continue;
                sum += in[(kh * KW + kw) * NP + i * OW + j];
            }
        }
        dx[e] = sum;
    }
}

MG_KERNEL(col2im,
          (const T* dcols, T* dx, idx_t N, idx_t C, idx_t H, idx_t W, idx_t KH, idx_t KW, idx_t stride, idx_t pad,
           idx_t OH, idx_t OW),
          (dcols, dx, N, C, H, W, KH, KW, stride, pad, OH, OW))

// GEMM output (F, N, P) -> y (N, F, P) plus the bias (b may be null): the layout change and the bias add in
// one pass instead of a transpose copy followed by a broadcast add. Reads and writes both run along P.
template <typename T, typename I>
__device__ __forceinline__ void fnp_to_nchw(const T* out, const T* b, T* y, I N, I F, I P) {
    GRID_STRIDE_LOOP(I, e, N * F * P) {
        const I p = e % P, f = (e / P) % F, n = e / (P * F);
        const T v = out[(f * N + n) * P + p];
        y[e] = b ? v + b[f] : v;
    }
}

MG_KERNEL(fnp_to_nchw, (const T* out, const T* b, T* y, idx_t N, idx_t F, idx_t P), (out, b, y, N, F, P))

// dy (N, F, P) -> (F, N, P), the GEMM-ready layout of the upstream gradient (the inverse of the above).
template <typename T, typename I>
__device__ __forceinline__ void nchw_to_fnp(const T* y, T* out, I N, I F, I P) {
    GRID_STRIDE_LOOP(I, e, F * N * P) {
        const I p = e % P, n = (e / P) % N, f = e / (P * N);
        out[e] = y[(n * F + f) * P + p];
    }
}

MG_KERNEL(nchw_to_fnp, (const T* y, T* out, idx_t N, idx_t F, idx_t P), (y, out, N, F, P))
