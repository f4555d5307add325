// The few cuBLAS entry points cupy_ops.CublasGemm calls, on the host, with cuBLAS's column-major meaning and its
// argument checks (CUBLAS_STATUS_INVALID_VALUE = 7 for a leading dimension or type it would refuse), so that
// tests/kernels/test_cuda_host.py can run CublasGemm's operand descriptions end to end without a GPU.
#include <cstddef>

namespace {
int last_compute_type = -1;

template <class T>
int gemm(int ta, int tb, int m, int n, int k, const T* alpha, const T* A, int lda, long long sA, const T* B,
         int ldb, long long sB, const T* beta, T* C, int ldc, long long sC, int batch) {
    if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < (ta ? (k > 1 ? k : 1) : (m > 1 ? m : 1)) ||
        ldb < (tb ? (n > 1 ? n : 1) : (k > 1 ? k : 1)) || ldc < (m > 1 ? m : 1) || sA < 0 || sB < 0 || sC < 0)
        return 7;
    for (int i = 0; i < batch; ++i)
        for (long long c = 0; c < n; ++c)
            for (long long r = 0; r < m; ++r) {
                double acc = 0;
                for (long long p = 0; p < k; ++p) {
                    const T a = ta ? A[i * sA + p + r * lda] : A[i * sA + r + p * lda];
                    const T b = tb ? B[i * sB + c + p * ldb] : B[i * sB + p + c * ldb];
                    acc += static_cast<double>(a) * static_cast<double>(b);
                }
                T& out = C[i * sC + r + c * ldc];
                out = static_cast<T>(*alpha * acc + (*beta != 0 ? *beta * out : 0));
            }
    return 0;
}
}  // namespace

extern "C" {
__attribute__((visibility("default"))) int cublasSetStream_v2(void*, void*) { return 0; }
__attribute__((visibility("default"))) int cublasSetWorkspace_v2(void*, void*, size_t) { return 0; }
__attribute__((visibility("default"))) int cublasSgemm_v2(void*, int ta, int tb, int m, int n, int k,
                                                          const float* alpha, const float* A, int lda, const float* B,
                                                          int ldb, const float* beta, float* C, int ldc) {
    return gemm(ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
__attribute__((visibility("default"))) int cublasDgemm_v2(void*, int ta, int tb, int m, int n, int k,
                                                          const double* alpha, const double* A, int lda,
                                                          const double* B, int ldb, const double* beta, double* C,
                                                          int ldc) {
    return gemm(ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
__attribute__((visibility("default"))) int cublasGemmStridedBatchedEx(
    void*, int ta, int tb, int m, int n, int k, const void* alpha, const void* A, int Atype, int lda, long long sA,
    const void* B, int Btype, int ldb, long long sB, const void* beta, void* C, int Ctype, int ldc, long long sC,
    int batch, int compute, int algo) {
    last_compute_type = compute;
    if (Atype != Btype || Atype != Ctype || algo != -1) return 7;
    if (Atype == 0 && (compute == 68 || compute == 77))  // CUDA_R_32F: CUBLAS_COMPUTE_32F(_FAST_TF32)
        return gemm(ta, tb, m, n, k, static_cast<const float*>(alpha), static_cast<const float*>(A), lda, sA,
                    static_cast<const float*>(B), ldb, sB, static_cast<const float*>(beta), static_cast<float*>(C),
                    ldc, sC, batch);
    if (Atype == 1 && compute == 70)  // CUDA_R_64F: CUBLAS_COMPUTE_64F
        return gemm(ta, tb, m, n, k, static_cast<const double*>(alpha), static_cast<const double*>(A), lda, sA,
                    static_cast<const double*>(B), ldb, sB, static_cast<const double*>(beta), static_cast<double*>(C),
                    ldc, sC, batch);
    return 7;
}
__attribute__((visibility("default"))) int shim_last_compute_type() { return last_compute_type; }
}
