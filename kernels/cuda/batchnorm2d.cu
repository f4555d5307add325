// Batch norm over (N, H, W) per channel of NCHW input. The per-channel reductions use one thread per
// channel with a serial loop in double: channel counts here are small (tens), so a cooperative reduction
// (shared memory, __syncthreads) would buy little and could not run under the host shim.
#include "minigrad_cuda.h"

// Per channel: the batch mean and biased variance (two passes, like numpy's var) when training, moving the
// running stats towards the mean and the UNBIASED variance in place (PyTorch's convention); the running
// stats themselves at inference. Writes the mean and 1/sqrt(var + eps) that normalise.
template <typename T, typename I>
__device__ __forceinline__ void batchnorm2d_stats(const T* x, T* running_mean, T* running_var, T* mean, T* inv_std,
                                                  I N, I C, I HW, I training, double momentum, double eps) {
    GRID_STRIDE_LOOP(I, c, C) {
        double mu, var;
        if (training) {
            const I m = N * HW;
            double s = 0.0;
            for (I n = 0; n < N; ++n)
                for (I k = 0; k < HW; ++k) s += (double)x[(n * C + c) * HW + k];
            mu = s / (double)m;
            double ss = 0.0;
            for (I n = 0; n < N; ++n) {
                for (I k = 0; k < HW; ++k) {
                    const double d = (double)x[(n * C + c) * HW + k] - mu;
                    ss += d * d;
                }
            }
            var = ss / (double)m;
            const double unbiased = m > 1 ? var * (double)m / (double)(m - 1) : var;
            running_mean[c] = (T)((1.0 - momentum) * (double)running_mean[c] + momentum * mu);
            running_var[c] = (T)((1.0 - momentum) * (double)running_var[c] + momentum * unbiased);
        } else {
            mu = (double)running_mean[c];
            var = (double)running_var[c];
        }
        mean[c] = (T)mu;
        inv_std[c] = (T)(1.0 / sqrt(var + eps));
    }
}

MG_KERNEL(batchnorm2d_stats,
          (const T* x, T* running_mean, T* running_var, T* mean, T* inv_std, idx_t N, idx_t C, idx_t HW, idx_t
           training, double momentum, double eps),
          (x, running_mean, running_var, mean, inv_std, N, C, HW, training, momentum, eps))

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
          (const T* x, const T* mean, const T* inv_std, const T* gamma, const T* beta, T* xhat, T* y, idx_t N, idx_t
           C, idx_t HW),
          (x, mean, inv_std, gamma, beta, xhat, y, N, C, HW))

// Per channel: dbeta = sum(dy), dgamma = sum(dy * xhat), the two reductions the input gradient needs.
template <typename T, typename I>
__device__ __forceinline__ void batchnorm2d_param_grads(const T* dy, const T* xhat, T* dgamma, T* dbeta, I N, I C, I
                                                        HW) {
    GRID_STRIDE_LOOP(I, c, C) {
        double sb = 0.0, sg = 0.0;
        for (I n = 0; n < N; ++n) {
            for (I k = 0; k < HW; ++k) {
                const I e = (n * C + c) * HW + k;
                sb += (double)dy[e];
                sg += (double)dy[e] * (double)xhat[e];
            }
        }
        dbeta[c] = (T)sb;
        dgamma[c] = (T)sg;
    }
}

MG_KERNEL(batchnorm2d_param_grads,
          (const T* dy, const T* xhat, T* dgamma, T* dbeta, idx_t N, idx_t C, idx_t HW),
          (dy, xhat, dgamma, dbeta, N, C, HW))

// Training: dx = gamma*inv_std/m * (m*dy - dbeta - xhat*dgamma) (the batch statistics depend on x);
// inference: dx = dy * gamma * inv_std (the running stats are constants). One thread per element.
template <typename T, typename I>
__device__ __forceinline__ void batchnorm2d_input_grad(const T* dy, const T* xhat, const T* gamma, const T* inv_std,
                                                       const T* dgamma, const T* dbeta, T* dx, I N, I C, I HW, I
                                                       training) {
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

