// Softmax + cross-entropy, fused so that the backward is probs - onehot. Targets arrive as int64 (the
// wrapper converts), the mean over the batch is taken by the wrapper from the per-row losses.
#include "minigrad_cuda.h"

// One thread per row (C is a class count): probs[n, :] = softmax(logits[n, :]) and
// row_loss[n] = log(sum exp z) - z[target], z = logits - max, so huge logits stay finite. A target outside
// [0, C) makes its row's loss NaN instead of reading outside the row: the wrapper checks the range on the
// host, except inside a CUDA-graph capture, where the NaN is what tells the training loop (it then runs the
// host check to name the bad targets).
template <typename T, typename I>
__device__ __forceinline__ void softmax_xent_forward(const T* logits, const idx_t* targets, T* probs, T* row_loss, I
                                                     N, I C) {
    GRID_STRIDE_LOOP(I, n, N) {
        const T* row = logits + n * C;
        T m = row[0];
        for (I c = 1; c < C; ++c) m = row[c] > m ? row[c] : m;
        double s = 0.0;
        for (I c = 0; c < C; ++c) {
            const T p = exp(row[c] - m);
            probs[n * C + c] = p;
            s += (double)p;
        }
        const T sum = (T)s;
        for (I c = 0; c < C; ++c) probs[n * C + c] /= sum;
        const idx_t t = targets[n];
        row_loss[n] = (t < 0 || t >= (idx_t)C) ? (T)sqrt(-1.0) : (T)log(s) - (row[t] - m);
    }
}

MG_KERNEL(softmax_xent_forward,
          (const T* logits, const idx_t* targets, T* probs, T* row_loss, idx_t N, idx_t C),
          (logits, targets, probs, row_loss, N, C))

// dlogits = dloss * (probs - onehot(target)) / N, one thread per element. dloss is read from device memory
// (a 0-d array) so that the backward never waits on a device-to-host copy.
template <typename T, typename I>
__device__ __forceinline__ void softmax_xent_backward(const T* dloss, const T* probs, const idx_t* targets, T*
                                                      dlogits, I N, I C) {
    GRID_STRIDE_LOOP(I, e, N * C) {
        const I c = e % C, n = e / C;
        const T onehot = c == targets[n] ? T(1) : T(0);
        dlogits[e] = (probs[e] - onehot) * (dloss[0] / (T)N);
    }
}

MG_KERNEL(softmax_xent_backward,
          (const T* dloss, const T* probs, const idx_t* targets, T* dlogits, idx_t N, idx_t C),
          (dloss, probs, targets, dlogits, N, C))

