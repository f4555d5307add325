// Optimizer updates, in place, one thread per parameter element. The scalars arrive in the parameter's
// dtype (lr already divided by Adam's first bias correction), so each element costs one read of every
// state array and one write of each updated one: a single pass, where numpy_ops needs one per line.
#include "minigrad_cuda.h"

// PyTorch's SGD: d = g + wd*p; with momentum buf = momentum*buf + d and d = d + momentum*buf (nesterov) or
// buf; p -= lr*d. buf may be null when momentum == 0 (it is never touched then).
template <typename T>
__device__ __forceinline__ void sgd_update(T* p, const T* g, T* buf, T lr, T momentum, idx_t nesterov,
                                           T weight_decay, idx_t n) {
    GRID_STRIDE_LOOP(e, n) {
        T d = g[e];
        if (weight_decay != T(0)) d += weight_decay * p[e];
        if (momentum != T(0)) {
            const T b = momentum * buf[e] + d;
            buf[e] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[e] -= lr * d;
    }
}

extern "C" __global__ void sgd_update_f32(float* p, const float* g, float* buf, float lr, float momentum,
                                          idx_t nesterov, float weight_decay, idx_t n) {
    sgd_update(p, g, buf, lr, momentum, nesterov, weight_decay, n);
}
extern "C" __global__ void sgd_update_f64(double* p, const double* g, double* buf, double lr, double momentum,
                                          idx_t nesterov, double weight_decay, idx_t n) {
    sgd_update(p, g, buf, lr, momentum, nesterov, weight_decay, n);
}

// PyTorch's Adam with L2 weight decay: m and v are moving averages of d and d^2, and
// p -= (lr / bc1) * m / (sqrt(v / bc2) + eps) with bc_k = 1 - beta_k^step (bias correction).
template <typename T>
__device__ __forceinline__ void adam_update(T* p, const T* g, T* m, T* v, T lr_bc1, T beta1, T beta2, T eps,
                                            T weight_decay, T bc2, idx_t n) {
    GRID_STRIDE_LOOP(e, n) {
        T d = g[e];
        if (weight_decay != T(0)) d += weight_decay * p[e];
        const T mm = beta1 * m[e] + (T(1) - beta1) * d;
        const T vv = beta2 * v[e] + (T(1) - beta2) * (d * d);
        m[e] = mm;
        v[e] = vv;
        p[e] -= lr_bc1 * mm / (sqrt(vv / bc2) + eps);
    }
}

extern "C" __global__ void adam_update_f32(float* p, const float* g, float* m, float* v, float lr_bc1,
                                           float beta1, float beta2, float eps, float weight_decay, float bc2,
                                           idx_t n) {
    adam_update(p, g, m, v, lr_bc1, beta1, beta2, eps, weight_decay, bc2, n);
}
extern "C" __global__ void adam_update_f64(double* p, const double* g, double* m, double* v, double lr_bc1,
                                           double beta1, double beta2, double eps, double weight_decay,
                                           double bc2, idx_t n) {
    adam_update(p, g, m, v, lr_bc1, beta1, beta2, eps, weight_decay, bc2, n);
}
