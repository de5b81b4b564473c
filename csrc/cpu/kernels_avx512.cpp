// AVX-512 build of the CPU kernels: the fused conv block (conv_block_kernel.h) and the training
// ops (train_ops_kernel.h). Selected at run time only where torch reports its AVX512 level
// (F+BW+DQ+VL, the set this file is compiled for).
#include "conv_block.h"
#include "train_ops.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))), apply_to = function)
#elif defined(__GNUC__)
// GCC 12's own _mm512_max_ps trips -Wuninitialized on its _mm512_undefined_ps().
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
#endif

namespace emclassify {
namespace avx512 {

struct Vec {
  using reg = __m512;
  static constexpr int kWidth = 16;
  static constexpr int kRegs = 32;
  static constexpr int kMaxGroup = 4;  // 64 channels per tile
  static inline reg load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static inline reg set1(float s) { return _mm512_set1_ps(s); }
  static inline reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static inline reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static inline reg zero() { return _mm512_setzero_ps(); }
};

#include "conv_block_kernel.h"
#include "train_ops_kernel.h"

}  // namespace avx512
}  // namespace emclassify

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

#else  // not x86-64: never selected, kept so the symbol exists
namespace emclassify {
namespace avx512 {
void conv_rows(const ConvBlockArgs&, int64_t, int64_t, float*) {}
const TrainKernels& train_kernels() { return generic::train_kernels(); }
}  // namespace avx512
}  // namespace emclassify
#endif
