// ReLU. The forward's output doubles as the backward's cache: y > 0 exactly where x > 0.
#include "minigrad_cuda.h"

// y = x where x > 0 else 0. NaN passes through (x != x), as in numpy_ops and PyTorch, so that a diverged
// run reaches the loss as NaN and stops training instead of being silently zeroed here.
template <typename T>
__device__ __forceinline__ void relu_forward(const T* x, T* y, idx_t n) {
    GRID_STRIDE_LOOP(e, n) {
        const T v = x[e];
        y[e] = (v > T(0) || v != v) ? v : T(0);
    }
}

extern "C" __global__ void relu_forward_f32(const float* x, float* y, idx_t n) { relu_forward(x, y, n); }
extern "C" __global__ void relu_forward_f64(const double* x, double* y, idx_t n) { relu_forward(x, y, n); }

// dx = dy where y > 0 else 0: the gradient at exactly 0 is 0 (PyTorch's choice).
template <typename T>
__device__ __forceinline__ void relu_backward(const T* dy, const T* y, T* dx, idx_t n) {
    GRID_STRIDE_LOOP(e, n) { dx[e] = y[e] > T(0) ? dy[e] : T(0); }
}

extern "C" __global__ void relu_backward_f32(const float* dy, const float* y, float* dx, idx_t n) {
    relu_backward(dy, y, dx, n);
}
extern "C" __global__ void relu_backward_f64(const double* dy, const double* y, double* dx, idx_t n) {
    relu_backward(dy, y, dx, n);
}
