// Shared by every kernel file in kernels/cuda/ (compiled by NVRTC through cupy.RawModule, by nvcc -ptx in
// the tests, and by g++ under the host shim tests/kernels/cuda_shim.h). It includes no system header, so
// NVRTC needs nothing beyond its built-ins.
//
// Conventions of the kernels:
//   * each kernel is a template over the element type T and the index type I, and MG_KERNEL declares its
//     four extern "C" entry points: <kernel>_f32 / <kernel>_f64 with 64-bit indices and <kernel>_f32_i32 /
//     <kernel>_f64_i32 with 32-bit ones. CuPy looks them up by these readable names and the host shim calls
//     them through ctypes. The wrappers pick the 32-bit entry whenever every array and the grid-stride
//     loop's last index fit in an int (cupy_ops._index_suffix): 64-bit division and modulo, which the
//     index arithmetic is made of, cost several times their 32-bit forms on a GPU;
//   * sizes arrive as idx_t (64-bit; the wrappers pass numpy.int64) in both entries, so the Python side is
//     the same for both, and the kernel narrows them to I;
//   * grid-stride loops: any grid covers all the work, and the launch geometry is chosen in one place
//     (cupy_ops.LAUNCH);
//   * every thread writes only its own outputs (gathers, never scatters), so no atomics are needed and
//     results do not depend on thread order;
//   * shared memory and __syncthreads only in block reductions (reduce.cu), whose entry points the host
//     shim runs cooperatively (one fiber per thread), so they are tested on the CPU like the rest.
#pragma once

typedef long long idx_t;
typedef unsigned long long u64;

// for (I i = <global thread index>; i < n; i += <threads in the grid>). In the 32-bit entries the
// wrapper has checked that n plus the grid's thread count fits in an int, so the increment cannot overflow.
#define GRID_STRIDE_LOOP(I, i, n) \
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < (I)(n); i += (I)blockDim.x * (I)gridDim.x)

// One entry point of `kernel` for element type TT and index type II. `params` is the parameter list written
// with T for the element type, `args` the call; the namespace only scopes the two typedefs (the extern "C"
// symbol is global and unmangled; the using-declaration makes its name visible outside the namespace too).
#define MG_ENTRY(kernel, suffix, TT, II, params, args) \
    namespace mg_##kernel##suffix {                    \
    typedef TT T;                                      \
    typedef II I;                                      \
    extern "C" __global__ void kernel##suffix params { \
        kernel<T, I> args;                             \
    }                                                  \
    }                                                  \
    using mg_##kernel##suffix::kernel##suffix;

// The four entry points of a kernel template `kernel<T, I>`, e.g.
//     MG_KERNEL(relu_forward, (const T* x, T* y, idx_t n), (x, y, n))
#define MG_KERNEL(kernel, params, args)                          \
    MG_ENTRY(kernel, _f32, float, idx_t, params, args)           \
    MG_ENTRY(kernel, _f64, double, idx_t, params, args)          \
    MG_ENTRY(kernel, _f32_i32, float, int, params, args)         \
    MG_ENTRY(kernel, _f64_i32, double, int, params, args)
