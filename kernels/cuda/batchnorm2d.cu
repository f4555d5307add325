// Batch norm over (N, H, W) per channel of NCHW input. The per-channel sums (mean, variance, dbeta, dgamma)
// are block reductions of reduce.cu, driven by cupy_ops.channel_sums; the kernels here are per channel
// (the running statistics) and per element.
#include "minigrad_cuda.h"

// Per channel, training: mean and the biased variance arrive from the reductions; the running stats move
// towards the mean and the UNBIASED variance (m / (m - 1) times; PyTorch's convention), in place.
// Inference (var is null): the running stats themselves are the mean and variance. Either way writes the
// mean and 1/sqrt(var + eps) that normalise.
template <typename T, typename I>
__device__ __forceinline__ void batchnorm2d_stats(const T* var, T* running_mean, T* running_var, T* mean,
                                                  T* inv_std, I C, I m, double momentum, double eps) {
    GRID_STRIDE_LOOP(I, c, C) {
        double mu, v;
        if (var) {
            mu = (double)mean[c];
            v = (double)var[c];
            const double unbiased = m > 1 ? v * (double)m / (double)(m - 1) : v;
            running_mean[c] = (T)((1.0 - momentum) * (double)running_mean[c] + momentum * mu);
            running_var[c] = (T)((1.0 - momentum) * (double)running_var[c] + momentum * unbiased);
        } else {
            mu = (double)running_mean[c];
            v = (double)running_var[c];
        }
        mean[c] = (T)mu;
        inv_std[c] = (T)(1.0 / sqrt(v + eps));
    }
}

MG_KERNEL(batchnorm2d_stats,
          (const T* var, T* running_mean, T* running_var, T* mean, T* inv_std, idx_t C, idx_t m, double momentum,
           double eps),
          (var, running_mean, running_var, mean, inv_std, C, m, momentum, eps))

// xhat = (x - mean) * inv_std (cached for the backward), y = gamma * xhat + beta; one thread per element.
template <typename T, typename I>
__device__ __forceinline__ void batchnorm2d_normalize(const T* x, const T* mean, const T* inv_std, const T* gamma,
                                                      const T* beta, T* xhat, T* y, I N, I C, I HW) {
    GRID_STRIDE_LOOP(I, e, N * C * HW) {
        const I c = (e / HW) % C;
        const T xh = (x[e] - mean[c]) * inv_std[c];
        xhat[e] = xh;
        y[e] = xh * gamma[c] + beta[c];
    }
}

MG_KERNEL(batchnorm2d_normalize,
          (const T* x, const T* mean, const T* inv_std, const T* gamma, const T* beta, T* xhat, T* y, idx_t N,
           idx_t C, idx_t HW),
          (x, mean, inv_std, gamma, beta, xhat, y, N, C, HW))

// Training: dx = gamma*inv_std/m * (m*dy - dbeta - xhat*dgamma) (the batch statistics depend on x);
// inference: dx = dy * gamma * inv_std (the running stats are constants). One thread per element.
template <typename T, typename I>
__device__ __forceinline__ void batchnorm2d_input_grad(const T* dy, const T* xhat, const T* gamma, const T* inv_std,
                                                       const T* dgamma, const T* dbeta, T* dx, I N, I C, I HW,
                                                       I training) {
    const T m = (T)(N * HW);
    GRID_STRIDE_LOOP(I, e, N * C * HW) {
        const I c = (e / HW) % C;
        const T scale = gamma[c] * inv_std[c];
        dx[e] = training ? scale / m * (m * dy[e] - dbeta[c] - xhat[e] * dgamma[c]) : dy[e] * scale;
    }
}

MG_KERNEL(batchnorm2d_input_grad,
          (const T* dy, const T* xhat, const T* gamma, const T* inv_std, const T* dgamma, const T* dbeta, T* dx,
           idx_t N, idx_t C, idx_t HW, idx_t training),
          (dy, xhat, gamma, inv_std, dgamma, dbeta, dx, N, C, HW, training))

