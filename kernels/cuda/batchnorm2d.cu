// Batch norm over (N, H, W) per channel of NCHW input. The per-channel reductions use one thread per
// channel with a serial loop in double: channel counts here are small (tens), so a cooperative reduction
// (shared memory, __syncthreads) would buy little and could not run under the host shim.
#include "minigrad_cuda.h"

// Per channel: the batch mean and biased variance (two passes, like numpy's var) when training, moving the
// running stats towards the mean and the UNBIASED variance in place (PyTorch's convention); the running
// stats themselves at inference. Writes the mean and 1/sqrt(var + eps) that normalise.
template <typename T>
__device__ __forceinline__ void batchnorm2d_stats(const T* x, T* running_mean, T* running_var, T* mean,
                                                  T* inv_std, idx_t N, idx_t C, idx_t HW, idx_t training,
                                                  double momentum, double eps) {
    GRID_STRIDE_LOOP(c, C) {
        double mu, var;
        if (training) {
            const idx_t m = N * HW;
            double s = 0.0;
            for (idx_t n = 0; n < N; ++n)
                for (idx_t k = 0; k < HW; ++k) s += (double)x[(n * C + c) * HW + k];
            mu = s / (double)m;
            double ss = 0.0;
            for (idx_t n = 0; n < N; ++n) {
                for (idx_t k = 0; k < HW; ++k) {
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

extern "C" __global__ void batchnorm2d_stats_f32(const float* x, float* running_mean, float* running_var,
                                                 float* mean, float* inv_std, idx_t N, idx_t C, idx_t HW,
                                                 idx_t training, double momentum, double eps) {
    batchnorm2d_stats(x, running_mean, running_var, mean, inv_std, N, C, HW, training, momentum, eps);
}
extern "C" __global__ void batchnorm2d_stats_f64(const double* x, double* running_mean, double* running_var,
                                                 double* mean, double* inv_std, idx_t N, idx_t C, idx_t HW,
                                                 idx_t training, double momentum, double eps) {
    batchnorm2d_stats(x, running_mean, running_var, mean, inv_std, N, C, HW, training, momentum, eps);
}

// xhat = (x - mean) * inv_std (cached for the backward), y = gamma * xhat + beta; one thread per element.
template <typename T>
__device__ __forceinline__ void batchnorm2d_normalize(const T* x, const T* mean, const T* inv_std,
                                                      const T* gamma, const T* beta, T* xhat, T* y, idx_t N,
                                                      idx_t C, idx_t HW) {
    GRID_STRIDE_LOOP(e, N * C * HW) {
        const idx_t c = (e / HW) % C;
        const T xh = (x[e] - mean[c]) * inv_std[c];
        xhat[e] = xh;
        y[e] = xh * gamma[c] + beta[c];
    }
}

extern "C" __global__ void batchnorm2d_normalize_f32(const float* x, const float* mean, const float* inv_std,
                                                     const float* gamma, const float* beta, float* xhat,
                                                     float* y, idx_t N, idx_t C, idx_t HW) {
    batchnorm2d_normalize(x, mean, inv_std, gamma, beta, xhat, y, N, C, HW);
}
extern "C" __global__ void batchnorm2d_normalize_f64(const double* x, const double* mean,
                                                     const double* inv_std, const double* gamma,
                                                     const double* beta, double* xhat, double* y, idx_t N,
                                                     idx_t C, idx_t HW) {
    batchnorm2d_normalize(x, mean, inv_std, gamma, beta, xhat, y, N, C, HW);
}

// Per channel: dbeta = sum(dy), dgamma = sum(dy * xhat), the two reductions the input gradient needs.
template <typename T>
__device__ __forceinline__ void batchnorm2d_param_grads(const T* dy, const T* xhat, T* dgamma, T* dbeta,
                                                        idx_t N, idx_t C, idx_t HW) {
    GRID_STRIDE_LOOP(c, C) {
        double sb = 0.0, sg = 0.0;
        for (idx_t n = 0; n < N; ++n) {
            for (idx_t k = 0; k < HW; ++k) {
                const idx_t e = (n * C + c) * HW + k;
                sb += (double)dy[e];
                sg += (double)dy[e] * (double)xhat[e];
            }
        }
        dbeta[c] = (T)sb;
        dgamma[c] = (T)sg;
    }
}

extern "C" __global__ void batchnorm2d_param_grads_f32(const float* dy, const float* xhat, float* dgamma,
                                                       float* dbeta, idx_t N, idx_t C, idx_t HW) {
    batchnorm2d_param_grads(dy, xhat, dgamma, dbeta, N, C, HW);
}
extern "C" __global__ void batchnorm2d_param_grads_f64(const double* dy, const double* xhat, double* dgamma,
                                                       double* dbeta, idx_t N, idx_t C, idx_t HW) {
    batchnorm2d_param_grads(dy, xhat, dgamma, dbeta, N, C, HW);
}

// Training: dx = gamma*inv_std/m * (m*dy - dbeta - xhat*dgamma) (the batch statistics depend on x);
// inference: dx = dy * gamma * inv_std (the running stats are constants). One thread per element.
template <typename T>
__device__ __forceinline__ void batchnorm2d_input_grad(const T* dy, const T* xhat, const T* gamma,
                                                       const T* inv_std, const T* dgamma, const T* dbeta,
                                                       T* dx, idx_t N, idx_t C, idx_t HW, idx_t training) {
    const T m = (T)(N * HW);
    GRID_STRIDE_LOOP(e, N * C * HW) {
        const idx_t c = (e / HW) % C;
        const T scale = gamma[c] * inv_std[c];
        dx[e] = training ? scale / m * (m * dy[e] - dbeta[c] - xhat[e] * dgamma[c]) : dy[e] * scale;
    }
}

extern "C" __global__ void batchnorm2d_input_grad_f32(const float* dy, const float* xhat, const float* gamma,
                                                      const float* inv_std, const float* dgamma,
                                                      const float* dbeta, float* dx, idx_t N, idx_t C,
                                                      idx_t HW, idx_t training) {
    batchnorm2d_input_grad(dy, xhat, gamma, inv_std, dgamma, dbeta, dx, N, C, HW, training);
}
extern "C" __global__ void batchnorm2d_input_grad_f64(const double* dy, const double* xhat,
                                                      const double* gamma, const double* inv_std,
                                                      const double* dgamma, const double* dbeta, double* dx,
                                                      idx_t N, idx_t C, idx_t HW, idx_t training) {
    batchnorm2d_input_grad(dy, xhat, gamma, inv_std, dgamma, dbeta, dx, N, C, HW, training);
}
