// Optimizer updates, in place, one thread per parameter element. The scalars arrive in the parameter's
// dtype (lr already divided by Adam's first bias correction), so each element costs one read of every
// state array and one write of each updated one: a single pass, where numpy_ops needs one per line.
#include "minigrad_cuda.h"

// PyTorch's SGD: d = g + wd*p; with momentum buf = momentum*buf + d and d = d + momentum*buf (nesterov) or
// buf; p -= lr*d. buf may be null when momentum == 0 (it is never touched then).
template <typename T, typename I>
__device__ __forceinline__ void sgd_update(T* p, const T* g, T* buf, T lr, T momentum, I nesterov, T weight_decay, I
                                           n) {
    GRID_STRIDE_LOOP(I, e, n) {
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

MG_KERNEL(sgd_update,
          (T* p, const T* g, T* buf, T lr, T momentum, idx_t nesterov, T weight_decay, idx_t n),
          (p, g, buf, lr, momentum, nesterov, weight_decay, n))

// PyTorch's Adam with L2 weight decay: m and v are moving averages of d and d^2, and
// p -= (lr / bc1) * m / (sqrt(v / bc2) + eps) with bc_k = 1 - beta_k^step (bias correction).
template <typename T, typename I>
__device__ __forceinline__ void adam_update(T* p, const T* g, T* m, T* v, T lr_bc1, T beta1, T beta2, T eps, T
                                            weight_decay, T bc2, I n) {
    GRID_STRIDE_LOOP(I, e, n) {
        T d = g[e];
        if (weight_decay != T(0)) d += weight_decay * p[e];
        const T mm = beta1 * m[e] + (T(1) - beta1) * d;
        const T vv = beta2 * v[e] + (T(1) - beta2) * (d * d);
        m[e] = mm;
        v[e] = vv;
        p[e] -= lr_bc1 * mm / (sqrt(vv / bc2) + eps);
    }
}

MG_KERNEL(adam_update,
          (T* p, const T* g, T* m, T* v, T lr_bc1, T beta1, T beta2, T eps, T weight_decay, T bc2, idx_t n),
          (p, g, m, v, lr_bc1, beta1, beta2, eps, weight_decay, bc2, n))

