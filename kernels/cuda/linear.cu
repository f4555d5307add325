// linear is two cuBLAS GEMMs (in cupy_ops.py); the only kernel is the bias add after y = x w^T.
#include "minigrad_cuda.h"

// y (rows, cols) += b (cols,) broadcast over rows, in place on the GEMM output.
template <typename T>
__device__ __forceinline__ void add_bias_rows(T* y, const T* b, idx_t rows, idx_t cols) {
    GRID_STRIDE_LOOP(e, rows * cols) { y[e] += b[e % cols]; }
}

extern "C" __global__ void add_bias_rows_f32(float* y, const float* b, idx_t rows, idx_t cols) {
    add_bias_rows(y, b, rows, cols);
}
extern "C" __global__ void add_bias_rows_f64(double* y, const double* b, idx_t rows, idx_t cols) {
    add_bias_rows(y, b, rows, cols);
}
