// Max pooling, floor mode, no padding. The argmax is cached as the index within the window (row-major,
// int32: a window never has 2^31 elements), the same meaning as numpy_ops' cache.
#include "minigrad_cuda.h"

// One thread per output. The scan is strict (>) from the window's first element, so ties keep the FIRST
// maximum in row-major window order, the rule of reference.py that the gradient follows. A NaN counts as
// the maximum (the first one wins), as numpy_ops' argmax does, so NaN propagates instead of vanishing.
template <typename T, typename I>
__device__ __forceinline__ void maxpool2d_forward(const T* x, T* y, int* arg, I N, I C, I H, I W, I kernel, I
                                                  stride, I OH, I OW) {
    GRID_STRIDE_LOOP(I, e, N * C * OH * OW) {
        const I j = e % OW, i = (e / OW) % OH, nc = e / (OW * OH);
        const T* win = x + (nc * H + i * stride) * W + j * stride;
        T best = win[0];
        int best_at = 0;
        for (I r = 0; r < kernel; ++r) {
            for (I q = 0; q < kernel; ++q) {
                const T v = win[r * W + q];
                if (v > best || (v != v && best == best)) {
                    best = v;
                    best_at = (int)(r * kernel + q);
                }
            }
        }
        y[e] = best;
        arg[e] = best_at;
    }
}

MG_KERNEL(maxpool2d_forward,
          (const T* x, T* y, int* arg, idx_t N, idx_t C, idx_t H, idx_t W, idx_t kernel, idx_t stride, idx_t OH,
           idx_t OW),
          (x, y, arg, N, C, H, W, kernel, stride, OH, OW))

// The backward as a gather: one thread per input pixel visits the windows that contain it (rows
// i*stride <= h < i*stride + kernel, likewise columns) and adds dy of those whose argmax is this pixel.
// Overlapping windows (stride < kernel) therefore need no atomics.
template <typename T, typename I>
__device__ __forceinline__ void maxpool2d_backward(const T* dy, const int* arg, T* dx, I N, I C, I H, I W, I kernel,
                                                   I stride, I OH, I OW) {
    GRID_STRIDE_LOOP(I, e, N * C * H * W) {
        const I w = e % W, h = (e / W) % H, nc = e / (W * H);
        const I i_lo = h >= kernel ? (h - kernel) / stride + 1 : 0;
        const I j_lo = w >= kernel ? (w - kernel) / stride + 1 : 0;
        const I i_hi = h / stride < OH - 1 ? h / stride : OH - 1;
        const I j_hi = w / stride < OW - 1 ? w / stride : OW - 1;
        T sum = T(0);
        for (I i = i_lo; i <= i_hi; ++i) {
            for (I j = j_lo; j <= j_hi; ++j) {
                const I o = (nc * OH + i) * OW + j;
                if (arg[o] == (h - i * stride) * kernel + (w - j * stride)) sum += dy[o];
            }
        }
        dx[e] = sum;
    }
}

MG_KERNEL(maxpool2d_backward,
          (const T* dy, const int* arg, T* dx, idx_t N, idx_t C, idx_t H, idx_t W, idx_t kernel, idx_t stride, idx_t
           OH, idx_t OW),
          (dy, arg, dx, N, C, H, W, kernel, stride, OH, OW))


// The backward when the windows tile the input exactly (stride == kernel, H == OH*kernel, W == OW*kernel, the
// common 2x2/2 pool): one thread per window writes its kernel x kernel pixels, dy at the argmax and zeros
// elsewhere. Each pixel belongs to one window, so this is still a gather without atomics, but the index
// arithmetic (integer divisions, the gather's main cost) is done once per window instead of once per pixel.
template <typename T, typename I>
__device__ __forceinline__ void maxpool2d_backward_tiled(const T* dy, const int* arg, T* dx, I N, I C, I kernel,
                                                         I OH, I OW) {
    const I W = OW * kernel;
    GRID_STRIDE_LOOP(I, e, N * C * OH * OW) {
        const I j = e % OW, ni = e / OW;  // ni = (n*C + c)*OH + i: the window row of image plane n*C + c
        T* win = dx + ni * kernel * W + j * kernel;
        const int at = arg[e];
        const T g = dy[e];
        for (I r = 0; r < kernel; ++r)
            for (I q = 0; q < kernel; ++q) win[r * W + q] = (r * kernel + q == at) ? g : T(0);
    }
}

MG_KERNEL(maxpool2d_backward_tiled,
          (const T* dy, const int* arg, T* dx, idx_t N, idx_t C, idx_t kernel, idx_t OH, idx_t OW),
          (dy, arg, dx, N, C, kernel, OH, OW))
