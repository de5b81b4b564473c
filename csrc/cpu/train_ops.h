// Raw-pointer interface of the training-op CPU kernels (no ATen here): batch-norm with batch
// statistics + ReLU, forward and backward, and dropout. Activations are channels-last rows of C
// channels, stored as float32 or bfloat16 (its 16 bits); statistics and parameters are float32.
//
// Compiled once per instruction set (kernels_avx512.cpp, kernels_avx2.cpp, kernels_generic.cpp,
// beside the conv kernel) from train_ops_kernel.h; train_ops_cpu.cpp picks the set the conv
// kernels use (emclassify::cpu_kernel_isa) and splits the rows across threads.
#pragma once

#include <bit>  // std::bit_cast, for train_ops_kernel.h
#include <cstdint>

// Vectorise the loop that follows (OpenMP 4 `simd`; the build passes -fopenmp). MSVC's /openmp
// has no `simd` directive, so there the loop is left to the auto-vectoriser.
#if defined(_MSC_VER) && !defined(__clang__)
#define EMCLASSIFY_SIMD
#else
#define EMCLASSIFY_SIMD _Pragma("omp simd")
#endif

namespace emclassify {

// One storage type's kernels. Each works on rows [0, rows) of a block it is handed.
template <typename T>
struct TrainKernelsOf {
  // acc[c] += x[r][c]
  void (*sum)(const T* x, int64_t rows, int64_t C, float* acc);
  // acc[c] += (x[r][c] - mean[c])^2
  void (*sum_sq_dev)(const T* x, int64_t rows, int64_t C, const float* mean, float* acc);
  // y = max(0, x * scale + shift)
  void (*scale_shift_relu)(const T* x, int64_t rows, int64_t C, const float* scale, const float* shift, T* y);
  // with xh = (x - mean) * invstd and dz = gy where g * xh + b > 0, else 0:
  // s_dz[c] += dz, s_dzx[c] += dz * xh
  void (*backward_sums)(const T* x, const T* gy, int64_t rows, int64_t C, const float* mean, const float* invstd,
                        const float* g, const float* b, float* s_dz, float* s_dzx);
  // gx = k * (dz - mean_dz - xh * mean_dzx)
  void (*backward_apply)(const T* x, const T* gy, int64_t rows, int64_t C, const float* mean, const float* invstd,
                         const float* g, const float* b, const float* k, const float* mean_dz,
                         const float* mean_dzx, T* gx);
  // The same block followed by 2x2 max-pool (floor), see train_ops_kernel.h: one pooled output
  // row from full-resolution rows r0, r1; and the backward over one full-resolution row.
  void (*scale_shift_relu_pool)(const T* r0, const T* r1, int64_t Wo, int64_t C, const float* scale,
                                const float* shift, T* y, uint8_t* idx);
  void (*pool_backward_sums)(const T* x, const T* gp, const uint8_t* idx, int64_t W, int64_t Wo, int64_t C, int kh,
                             const float* mean, const float* invstd, float* s_dz, float* s_dzx);
  void (*pool_backward_apply)(const T* x, const T* gp, const uint8_t* idx, int64_t W, int64_t Wo, int64_t C,
                              int kh, const float* mean, const float* invstd, const float* k,
                              const float* mean_dz, const float* mean_dzx, T* gx);
  // elements [0, n) of a block whose first element has index `first` (< 2^32 - n):
  // keep = hash(first + i, key) < threshold; y = keep ? x * scale : 0, mask = keep
  void (*dropout)(const T* x, int64_t n, uint32_t first, uint32_t key0, uint32_t key1, uint32_t threshold,
                  float scale, T* y, uint8_t* mask);
  // dropout's backward over elements [0, n): gx = mask ? gy * scale : 0 (mask bytes 0 or 1)
  void (*dropout_backward)(const T* gy, const uint8_t* mask, int64_t n, float scale, T* gx);
};

struct TrainKernels {
  TrainKernelsOf<float> f32;
  TrainKernelsOf<uint16_t> bf16;
};

namespace avx512 {
const TrainKernels& train_kernels();
}
namespace avx2 {
const TrainKernels& train_kernels();
}
namespace generic {
const TrainKernels& train_kernels();
}

// "avx512", "avx2" or "generic": the instruction set the conv kernels chose (EMCLASSIFY_CPU_ISA honoured).
const char* cpu_kernel_isa();

}  // namespace emclassify
