// Per-channel sums of a tensor viewed as (A, C, B): out[c] = scale * sum over a, b of term(a, c, b), with
// term = (x - s) * (y - s) where y is given, else x - s, and s = shift[c] (0 where shift is null). One
// family of kernels for every reduction of this shape: the bias gradients of conv2d (the (N*OH*OW, F) rows
// of dy: A = N*OH*OW, C = F, B = 1) and linear (A = N, C = OUT, B = 1), and batch norm's sums over N, H, W
// of NCHW (A = N, C = channels, B = H*W: mean, variance, dbeta, dgamma).
//
// A tall, narrow matrix is the worst case for one thread per column (tens of threads, each summing up to
// a million rows in series), so the work is split two ways, with block-level trees in shared memory:
//   column_sums: the (A, L = C*B) matrix in tiles of (a chunk of `rows` rows) x (CG <= 32 columns). The
//     block's threads are CG lanes x RL row-lanes, lane = column: consecutive threads read consecutive
//     addresses (one 128-byte row segment per warp where L >= 32, several whole rows per warp where L is
//     narrower), each thread sums every RL-th row of the chunk in double, and the block adds its RL partial
//     sums per column in a shared-memory tree. Writes (A / rows, L) partial sums, or the answer itself
//     when one chunk covers every row and B == 1.
//   segment_sums: one block per channel adds its P x B partial sums (threads stride over them, then a
//     shared-memory tree): the second pass of a split reduction, and the sum over B.
// Both are deterministic: a fixed summation order, no atomics.
#include "minigrad_cuda.h"

// The largest block CUDA allows; the shared tree holds one double per thread.
#define MG_MAX_BLOCK 1024

// Adds sh[t + stride] into sh[t] for t = 0, 2s, 4s, ... (stride s = step * lanes) until sh[lane] holds the
// sum of `count` values sh[lane + k * lanes]. Called by every thread of the block (it synchronises). The
// last barrier keeps a thread that moves on to its next tile from overwriting a slot still to be read.
__device__ __forceinline__ void block_tree(double* sh, unsigned tid, unsigned lanes, unsigned count) {
    const unsigned lane = tid % lanes, k = tid / lanes;
    for (unsigned step = 1; step < count; step *= 2) {
        __syncthreads();
        if (k % (2 * step) == 0 && k + step < count) sh[tid] += sh[(k + step) * lanes + lane];
    }
    __syncthreads();
}

template <typename T, typename I>
__device__ __forceinline__ void column_sums(const T* x, const T* y, const T* shift, T* out, I A, I C, I B, I rows,
                                            double scale) {
    __shared__ double sh[MG_MAX_BLOCK];
    const I L = C * B;
    const unsigned tid = threadIdx.x;
    const unsigned width = L < 32 ? (unsigned)L : 32u;  // a warp's worth of columns at most
    const unsigned CG = width < blockDim.x ? width : blockDim.x;
    const unsigned RL = blockDim.x / CG, lane = tid % CG, r = tid / CG;
    const I groups = (L + CG - 1) / CG, chunks = (A + rows - 1) / rows;
    for (I tile = blockIdx.x; tile < groups * chunks; tile += gridDim.x) {
        const I j = (tile % groups) * CG + lane, chunk = tile / groups;
        const I end = (chunk + 1) * rows < A ? (chunk + 1) * rows : A;
        double acc = 0.0;
        if (r < RL && j < L) {
            const double s = shift ? (double)shift[j / B] : 0.0;
            for (I a = chunk * rows + r; a < end; a += RL) {
                const I e = a * L + j;
                acc += y ? ((double)x[e] - s) * ((double)y[e] - s) : (double)x[e] - s;
            }
        }
        sh[tid] = acc;  // only thread tid reads sh[tid] after the last tree barrier, so no barrier before this
        block_tree(sh, tid, CG, RL);
        if (r == 0 && j < L) out[chunk * L + j] = (T)(sh[lane] * scale);
    }
}

MG_KERNEL(column_sums,
          (const T* x, const T* y, const T* shift, T* out, idx_t A, idx_t C, idx_t B, idx_t rows, double scale),
          (x, y, shift, out, A, C, B, rows, scale))

template <typename T, typename I>
__device__ __forceinline__ void segment_sums(const T* x, T* out, I P, I C, I B, double scale) {
    __shared__ double sh[MG_MAX_BLOCK];
    const unsigned tid = threadIdx.x;
    for (I c = blockIdx.x; c < C; c += gridDim.x) {
        double acc = 0.0;
        for (I k = tid; k < P * B; k += blockDim.x) acc += (double)x[((k / B) * C + c) * B + k % B];
        sh[tid] = acc;
        block_tree(sh, tid, 1, blockDim.x);
        if (tid == 0) out[c] = (T)(sh[0] * scale);
    }
}

MG_KERNEL(segment_sums, (const T* x, T* out, idx_t P, idx_t C, idx_t B, double scale), (x, out, P, C, B, scale))
