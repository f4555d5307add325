// Host shim: compiles the CUDA C kernels of kernels/cuda/ with g++ and runs them on the CPU.
//
// CUDA's built-in thread coordinates become thread-local globals and the launch becomes two loops over
// the grid and the block. Threads run in REVERSE order, so a kernel that wrongly relies on a lower-numbered
// thread having written something first fails here too; MINIGRAD_SHIM_ORDER=forward runs them in forward
// order (a test runs the block-synchronising kernels both ways, so a missing barrier fails in one of them).
//
// Two launchers:
//   * SHIM_EXPORT: each simulated thread runs to completion before the next starts. Faithful for kernels
//     whose threads never communicate (no shared memory, no __syncthreads); __syncthreads aborts here.
//   * SHIM_EXPORT_COOPERATIVE: for kernels that use __shared__ memory and __syncthreads. Every thread of a
//     block is a fiber (ucontext) with its own stack; a round runs each runnable fiber (in reverse order)
//     until it finishes or reaches __syncthreads, and the barrier opens once every thread of the block
//     has reached it. A block in which some threads wait at a barrier that others have exited is a
//     divergent __syncthreads (undefined behaviour on a GPU): the shim aborts with a message. __shared__
//     arrays are function-level statics, which is block-shared memory because blocks run one at a time.
//
// A test translation unit includes this header, then a kernel file, then SHIM_EXPORT(name) or
// SHIM_EXPORT_COOPERATIVE(name) for each kernel; ctypes reads the exported launcher pointer
// `launch_<name>` and calls it as launch_<name>(grid, block, <the kernel's own arguments>).
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

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
#define __shared__ static

// The CUDA math built-ins the kernels use, overloaded for float and double as in device code.
using std::exp;
using std::log;
using std::sqrt;

[[noreturn]] inline void shim_abort(const char* what) {
    std::fprintf(stderr, "cuda_shim: %s\n", what);
    std::abort();
}

// The simulated threads' order: reverse unless MINIGRAD_SHIM_ORDER=forward (read at each launch).
inline bool shim_forward_order() {
    const char* order = std::getenv("MINIGRAD_SHIM_ORDER");
    return order != nullptr && order[0] == 'f';
}

// Thread k of n in the order the shim runs them.
inline unsigned shim_nth(unsigned k, unsigned n, bool forward) { return forward ? k : n - 1 - k; }

// The fibers of the block being run cooperatively (null under the plain launcher).
struct ShimBlock {
    enum State { RUNNABLE, AT_BARRIER, DONE };
    ucontext_t scheduler;
    std::vector<ucontext_t> fibers;
    std::vector<State> state;
    unsigned current = 0;
    const std::function<void()>* body = nullptr;
};

inline thread_local ShimBlock* shim_block = nullptr;

inline void __syncthreads() {
    ShimBlock* blk = shim_block;
    if (blk == nullptr) shim_abort("__syncthreads in a kernel exported with SHIM_EXPORT (use SHIM_EXPORT_COOPERATIVE)");
    blk->state[blk->current] = ShimBlock::AT_BARRIER;
    swapcontext(&blk->fibers[blk->current], &blk->scheduler);
}

inline void shim_fiber_main() {
    ShimBlock* blk = shim_block;
    (*blk->body)();
    blk->state[blk->current] = ShimBlock::DONE;  // uc_link returns to the scheduler
}

// Runs one block of `block` threads as fibers until all of them have finished.
inline void shim_run_block_cooperatively(unsigned block, const std::function<void()>& body) {
    constexpr size_t kStack = 64 * 1024;
    static thread_local std::vector<std::vector<char>> stacks;
    if (stacks.size() < block) stacks.resize(block, std::vector<char>(kStack));
    ShimBlock blk;
    blk.body = &body;
    blk.fibers.resize(block);
    blk.state.assign(block, ShimBlock::RUNNABLE);
    for (unsigned t = 0; t < block; ++t) {
        getcontext(&blk.fibers[t]);
        blk.fibers[t].uc_stack.ss_sp = stacks[t].data();
        blk.fibers[t].uc_stack.ss_size = kStack;
        blk.fibers[t].uc_link = &blk.scheduler;
        makecontext(&blk.fibers[t], shim_fiber_main, 0);
    }
    shim_block = &blk;
    const bool forward = shim_forward_order();
    for (;;) {
        for (unsigned k = 0; k < block; ++k) {
            const unsigned t = shim_nth(k, block, forward);
            if (blk.state[t] != ShimBlock::RUNNABLE) continue;
            blk.current = t;
            threadIdx = dim3{t, 0, 0};
            swapcontext(&blk.scheduler, &blk.fibers[t]);
        }
        // every fiber now waits at the barrier or has finished
        unsigned done = 0;
        for (ShimBlock::State s : blk.state) done += s == ShimBlock::DONE;
        if (done == block) break;
        if (done != 0) shim_abort("divergent __syncthreads: some threads of a block exited while others wait");
        for (ShimBlock::State& s : blk.state) s = ShimBlock::RUNNABLE;
    }
    shim_block = nullptr;
}

template <typename Signature>
struct ShimLauncher;

template <typename... Args>
struct ShimLauncher<void(Args...)> {
    template <void (*Kernel)(Args...)>
    static void launch(unsigned grid, unsigned block, Args... args) {
        gridDim = dim3{grid, 1, 1};
        blockDim = dim3{block, 1, 1};
        const bool forward = shim_forward_order();
        for (unsigned kb = 0; kb < grid; ++kb) {
            for (unsigned kt = 0; kt < block; ++kt) {
                blockIdx = dim3{shim_nth(kb, grid, forward), 0, 0};
                threadIdx = dim3{shim_nth(kt, block, forward), 0, 0};
                Kernel(args...);
            }
        }
    }

    template <void (*Kernel)(Args...)>
    static void launch_cooperative(unsigned grid, unsigned block, Args... args) {
        gridDim = dim3{grid, 1, 1};
        blockDim = dim3{block, 1, 1};
        const std::function<void()> body = [&] { Kernel(args...); };
        const bool forward = shim_forward_order();
        for (unsigned kb = 0; kb < grid; ++kb) {
            blockIdx = dim3{shim_nth(kb, grid, forward), 0, 0};
            shim_run_block_cooperatively(block, body);
        }
    }
};

// extern "C" pointer to the launcher of `kernel`, with signature void(unsigned grid, unsigned block, args...).
// The only visible symbol of the library (it is built with -fvisibility=hidden), so the libraries of
// several kernel files loaded into one process cannot bind to each other's thread coordinates.
#define SHIM_EXPORT_WITH(kernel, launcher)                                                          \
    extern "C" {                                                                                    \
    __attribute__((visibility("default"))) decltype(&ShimLauncher<decltype(kernel)>::launcher<kernel>) \
        launch_##kernel = &ShimLauncher<decltype(kernel)>::launcher<kernel>;                        \
    }
#define SHIM_EXPORT(kernel) SHIM_EXPORT_WITH(kernel, launch)
#define SHIM_EXPORT_COOPERATIVE(kernel) SHIM_EXPORT_WITH(kernel, launch_cooperative)
