// conv2d as im2col + cuBLAS GEMMs batched over the images (the GEMMs live in cupy_ops.py); these kernels
// move data around them.
//
// Column matrix layout: (N, R, OH*OW), one (R, P) block per image: row (c, kh, kw), column (i, j), i.e.
// numpy_ops.im2col's per-image block transposed. R >= C*KH*KW: the rows past C*KH*KW are ones (the bias
// rides the GEMM as one more column of the weights, and its gradient comes out of the weight-gradient GEMM).
// In this orientation consecutive threads take consecutive output pixels j, so the reads of x (along an image
// row), the writes of the columns and col2im's reads of them are all coalesced. A batch of per-image GEMMs
// W (F, R) @ cols[n] (R, P) writes y (N, F, P), which is NCHW: no layout pass on either side of the GEMMs.
#include "minigrad_cuda.h"

// One thread per (channel, image, output pixel): it writes the KH*KW rows of its channel at its column (and,
// for the last channel, the ones rows). The index arithmetic (divisions, the kernels' main cost here) is done
// once per thread, not once per element, and for each (kh, kw) consecutive threads still write consecutive
// addresses.
template <typename T, typename I>
__device__ __forceinline__ void im2col(const T* x, T* cols, I N, I C, I H, I W, I KH, I KW, I stride, I pad, I OH,
                                       I OW, I R) {
    const I P = OH * OW, NP = N * P, KK = KH * KW;
    GRID_STRIDE_LOOP(I, e, C * NP) {
        const I col = e % NP, c = e / NP;
        const I p = col % P, n = col / P, j = p % OW, i = p / OW;
        const T* plane = x + (n * C + c) * H * W;
        T* out = cols + (n * R + c * KK) * P + p;
        for (I kh = 0; kh < KH; ++kh) {
            const I h = i * stride + kh - pad;
            for (I kw = 0; kw < KW; ++kw) {
                const I w = j * stride + kw - pad;
                out[(kh * KW + kw) * P] = (h >= 0 && h < H && w >= 0 && w < W) ? plane[h * W + w] : T(0);
            }
        }
        if (c == C - 1)
            for (I r = C * KK; r < R; ++r) cols[(n * R + r) * P + p] = T(1);
    }
}

MG_KERNEL(im2col,
          (const T* x, T* cols, idx_t N, idx_t C, idx_t H, idx_t W, idx_t KH, idx_t KW, idx_t stride, idx_t pad,
           idx_t OH, idx_t OW, idx_t R),
          (x, cols, N, C, H, W, KH, KW, stride, pad, OH, OW, R))

// Adjoint of im2col written as a gather: one thread per input pixel sums the column entries that copied it
// (at most KH*KW, one per kernel offset whose window position lands on the output grid). Each thread owns
// its output, so overlapping windows need no atomics, and the sum runs in (kh, kw) order like numpy_ops.
// dcols: (N, R, OH*OW) with R >= C*KH*KW (rows past C*KH*KW are not read).
template <typename T, typename I>
__device__ __forceinline__ void col2im(const T* dcols, T* dx, I N, I C, I H, I W, I KH, I KW, I stride, I pad, I OH,
                                       I OW, I R) {
    const I P = OH * OW;
    GRID_STRIDE_LOOP(I, e, N * C * H * W) {
        const I w = e % W, h = (e / W) % H, c = (e / (W * H)) % C, n = e / (W * H * C);
        const T* in = dcols + (n * R + c * KH * KW) * P;
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
                sum += in[(kh * KW + kw) * P + i * OW + j];
            }
        }
        dx[e] = sum;
    }
}

MG_KERNEL(col2im,
          (const T* dcols, T* dx, idx_t N, idx_t C, idx_t H, idx_t W, idx_t KH, idx_t KW, idx_t stride, idx_t pad,
           idx_t OH, idx_t OW, idx_t R),
          (dcols, dx, N, C, H, W, KH, KW, stride, pad, OH, OW, R))
