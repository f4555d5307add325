// Inverted dropout with a counter-based mask: element i is kept when uniform(seed, i) >= p, where
// uniform(seed, i) is splitmix64 of seed + (i + 1) * golden, top 24 bits, exactly as
// reference.uniform_from_seed and numpy_ops.uniform_from_seed compute it. The same seed therefore gives
// the same mask on every backend, whatever the launch geometry.
#include "minigrad_cuda.h"

__device__ __forceinline__ double uniform_from_seed(u64 seed, idx_t i) {
    u64 z = seed + (u64)(i + 1) * 0x9E3779B97F4A7C15ULL;  // unsigned arithmetic wraps mod 2^64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 40) * (1.0 / 16777216.0);  // 24 bits * 2^-24: exact in double
}

// mask = keep / (1 - p) (scale is 0 when p == 1), y = x * mask; the mask is the backward's cache.
template <typename T, typename I>
__device__ __forceinline__ void dropout_forward(const T* x, T* y, T* mask, u64 seed, double p, T scale, I n) {
    GRID_STRIDE_LOOP(I, e, n) {
        const T m = uniform_from_seed(seed, e) >= p ? scale : T(0);
        mask[e] = m;
        y[e] = x[e] * m;
    }
}

MG_KERNEL(dropout_forward,
          (const T* x, T* y, T* mask, u64 seed, double p, T scale, idx_t n),
          (x, y, mask, seed, p, scale, n))

template <typename T, typename I>
__device__ __forceinline__ void dropout_backward(const T* dy, const T* mask, T* dx, I n) {
    GRID_STRIDE_LOOP(I, e, n) { dx[e] = dy[e] * mask[e]; }
}

MG_KERNEL(dropout_backward, (const T* dy, const T* mask, T* dx, idx_t n), (dy, mask, dx, n))

