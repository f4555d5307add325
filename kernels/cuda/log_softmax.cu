// Row-wise log-softmax of (N, C). One thread per row: C is a class count (10 for MNIST), far too short for a
// cooperative reduction to pay, and the serial loop needs no shared memory. Sums accumulate in double.
#include "minigrad_cuda.h"

// y = x - max(x) - log(sum exp(x - max(x))): max-subtracted, so huge logits do not overflow.
template <typename T, typename I>
__device__ __forceinline__ void log_softmax_forward(const T* x, T* y, I N, I C) {
    GRID_STRIDE_LOOP(I, n, N) {
        const T* row = x + n * C;
        T m = row[0];
        for (I c = 1; c < C; ++c) m = row[c] > m ? row[c] : m;
        double s = 0.0;
        for (I c = 0; c < C; ++c) s += (double)exp(row[c] - m);
        const T log_s = (T)log(s);
        for (I c = 0; c < C; ++c) y[n * C + c] = (row[c] - m) - log_s;
    }
}

MG_KERNEL(log_softmax_forward, (const T* x, T* y, idx_t N, idx_t C), (x, y, N, C))

// dx = dy - softmax * sum(dy), with softmax = exp(y) recovered from the cached output.
template <typename T, typename I>
__device__ __forceinline__ void log_softmax_backward(const T* dy, const T* y, T* dx, I N, I C) {
    GRID_STRIDE_LOOP(I, n, N) {
        double total = 0.0;
        for (I c = 0; c < C; ++c) total += (double)dy[n * C + c];
        const T t = (T)total;
        for (I c = 0; c < C; ++c) dx[n * C + c] = dy[n * C + c] - exp(y[n * C + c]) * t;
    }
}

MG_KERNEL(log_softmax_backward, (const T* dy, const T* y, T* dx, idx_t N, idx_t C), (dy, y, dx, N, C))

