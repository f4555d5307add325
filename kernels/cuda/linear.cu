// linear is two cuBLAS GEMMs (in cupy_ops.py); the only kernel is the bias add after y = x w^T.
#include "minigrad_cuda.h"

// y (rows, cols) += b (cols,) broadcast over rows, in place on the GEMM output.
template <typename T, typename I>
__device__ __forceinline__ void add_bias_rows(T* y, const T* b, I rows, I cols) {
    GRID_STRIDE_LOOP(I, e, rows * cols) { y[e] += b[e % cols]; }
}

MG_KERNEL(add_bias_rows, (T* y, const T* b, idx_t rows, idx_t cols), (y, b, rows, cols))

