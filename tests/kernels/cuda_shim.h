// Host shim: compiles the CUDA C kernels of kernels/cuda/ with g++ and runs them on the CPU.
//
// CUDA's built-in thread coordinates become thread-local globals and the launch becomes two loops over
// the grid and the block. Each simulated thread runs to completion before the next starts, which is
// faithful for these kernels because they never communicate between threads (no shared memory,
// __syncthreads or warp intrinsics; see kernels/cuda/minigrad_cuda.h). Threads run in REVERSE order, so a
// kernel that wrongly relies on a lower-numbered thread having written something first fails here too.
//
// A test translation unit includes this header, then a kernel file, then SHIM_EXPORT(name) for each
// kernel; ctypes reads the exported launcher pointer `launch_<name>` and calls it as
//     launch_<name>(grid, block, <the kernel's own arguments>).
#pragma once

#include <cmath>

struct dim3 {
    unsigned x, y, z;
};

inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

#define __global__
#define __device__
#define __forceinline__ inline

// The CUDA math built-ins the kernels use, overloaded for float and double as in device code.
using std::exp;
using std::log;
using std::sqrt;

template <typename Signature>
struct ShimLauncher;

template <typename... Args>
struct ShimLauncher<void(Args...)> {
    template <void (*Kernel)(Args...)>
    static void launch(unsigned grid, unsigned block, Args... args) {
        gridDim = dim3{grid, 1, 1};
        blockDim = dim3{block, 1, 1};
        for (unsigned b = grid; b-- > 0;) {
            for (unsigned t = block; t-- > 0;) {
                blockIdx = dim3{b, 0, 0};
                threadIdx = dim3{t, 0, 0};
                Kernel(args...);
            }
        }
    }
};

// extern "C" pointer to the launcher of `kernel`, with signature void(unsigned grid, unsigned block, args...).
// The only visible symbol of the library (it is built with -fvisibility=hidden), so the libraries of
// several kernel files loaded into one process cannot bind to each other's thread coordinates.
#define SHIM_EXPORT(kernel)                                                                         \
    extern "C" {                                                                                    \
    __attribute__((visibility("default"))) decltype(&ShimLauncher<decltype(kernel)>::launch<kernel>) \
        launch_##kernel = &ShimLauncher<decltype(kernel)>::launch<kernel>;                          \
    }
