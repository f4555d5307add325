// ReLU. The forward's output doubles as the backward's cache: y > 0 exactly where x > 0.
#include "minigrad_cuda.h"

// y = x where x > 0 else 0. NaN passes through (x != x), as in numpy_ops and PyTorch, so that a diverged
// run reaches the loss as NaN and stops training instead of being silently zeroed here.
template <typename T, typename I>
__device__ __forceinline__ void relu_forward(const T* x, T* y, I n) {
    GRID_STRIDE_LOOP(I, e, n) {
        const T v = x[e];
        y[e] = (v > T(0) || v != v) ? v : T(0);
    }
}

MG_KERNEL(relu_forward, (const T* x, T* y, idx_t n), (x, y, n))

// dx = dy where y > 0 else 0: the gradient at exactly 0 is 0 (PyTorch's choice).
template <typename T, typename I>
__device__ __forceinline__ void relu_backward(const T* dy, const T* y, T* dx, I n) {
    GRID_STRIDE_LOOP(I, e, n) { dx[e] = y[e] > T(0) ? dy[e] : T(0); }
}

MG_KERNEL(relu_backward, (const T* dy, const T* y, T* dx, idx_t n), (dy, y, dx, n))

