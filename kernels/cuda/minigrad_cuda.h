// Shared by every kernel file in kernels/cuda/ (compiled by NVRTC through cupy.RawModule, by nvcc -ptx in
// the tests, and by g++ under the host shim tests/kernels/cuda_shim.h). It includes no system header, so
// NVRTC needs nothing beyond its built-ins.
//
// Conventions of the kernels:
//   * extern "C" entry points named <kernel>_f32 / <kernel>_f64, each a one-line call into a template, so
//     that CuPy looks them up by a readable name and the host shim can call them through ctypes;
//   * every size is an idx_t (64-bit; the wrappers pass numpy.int64), so batch x channels x pixels never
//     overflows;
//   * grid-stride loops: any grid covers all the work, and the launch geometry is chosen in one place
//     (cupy_ops.LAUNCH);
//   * no shared memory, __syncthreads or warp intrinsics, so the host shim can run each thread in turn;
//   * every thread writes only its own outputs (gathers, never scatters), so no atomics are needed and
//     results do not depend on thread order.
#pragma once

typedef long long idx_t;
typedef unsigned long long u64;

// for (idx_t i = <global thread index>; i < n; i += <threads in the grid>)
#define GRID_STRIDE_LOOP(i, n)                                                        \
    for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < (idx_t)(n); \
         i += (idx_t)blockDim.x * gridDim.x)
