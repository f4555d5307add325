// Row-wise log-softmax of (N, C). One thread per row: C is a class count (10 for MNIST), far too short for a
// cooperative reduction to pay, and the serial loop needs no shared memory. Sums accumulate in double.
#include "minigrad_cuda.h"

// y = x - max(x) - log(sum exp(x - max(x))): max-subtracted, so huge logits do not overflow.
template <typename T>
__device__ __forceinline__ void log_softmax_forward(const T* x, T* y, idx_t N, idx_t C) {
    GRID_STRIDE_LOOP(n, N) {
        const T* row = x + n * C;
        T m = row[0];
        for (idx_t c = 1; c < C; ++c) m = row[c] > m ? row[c] : m;
        double s = 0.0;
        for (idx_t c = 0; c < C; ++c) s += (double)exp(row[c] - m);
        const T log_s = (T)log(s);
        for (idx_t c = 0; c < C; ++c) y[n * C + c] = (row[c] - m) - log_s;
    }
}

extern "C" __global__ void log_softmax_forward_f32(const float* x, float* y, idx_t N, idx_t C) {
    log_softmax_forward(x, y, N, C);
}
extern "C" __global__ void log_softmax_forward_f64(const double* x, double* y, idx_t N, idx_t C) {
    log_softmax_forward(x, y, N, C);
}

// dx = dy - softmax * sum(dy), with softmax = exp(y) recovered from the cached output.
template <typename T>
__device__ __forceinline__ void log_softmax_backward(const T* dy, const T* y, T* dx, idx_t N, idx_t C) {
    GRID_STRIDE_LOOP(n, N) {
        double total = 0.0;
        for (idx_t c = 0; c < C; ++c) total += (double)dy[n * C + c];
        const T t = (T)total;
        for (idx_t c = 0; c < C; ++c) dx[n * C + c] = dy[n * C + c] - exp(y[n * C + c]) * t;
    }
}

extern "C" __global__ void log_softmax_backward_f32(const float* dy, const float* y, float* dx, idx_t N,
                                                    idx_t C) {
    log_softmax_backward(dy, y, dx, N, C);
}
extern "C" __global__ void log_softmax_backward_f64(const double* dy, const double* y, double* dx, idx_t N,
                                                    idx_t C) {
    log_softmax_backward(dy, y, dx, N, C);
}
