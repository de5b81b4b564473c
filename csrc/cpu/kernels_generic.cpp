// Portable build of the CPU kernels (conv_block_kernel.h, train_ops_kernel.h):
// plain float arithmetic in fixed-size arrays the compiler may vectorise for
// the baseline ISA. Used on CPUs without AVX2/FMA and on non-x86 machines.
#include "conv_block.h"
#include "train_ops.h"

namespace emclassify {
namespace generic {

struct Vec {
  // Declared before `reg` uses it: naming the namespace's kWidth first and redeclaring it after
  // is an error under GCC >= 13 (-Wchanges-meaning), the compiler of the GPU machine it failed on.
  static constexpr int kWidth = generic::kWidth;
  struct reg {
    float v[kWidth];
  };
  static constexpr int kRegs = 32;
  static constexpr int kMaxGroup = 2;
  static inline reg load(const float* p) {
    reg r;
    for (int i = 0; i < kWidth; ++i) r.v[i] = p[i];
    return r;
  }
  static inline void store(float* p, const reg& r) {
    for (int i = 0; i < kWidth; ++i) p[i] = r.v[i];
  }
  static inline reg set1(float s) {
    reg r;
    for (int i = 0; i < kWidth; ++i) r.v[i] = s;
    return r;
  }
  static inline reg fma(const reg& a, const reg& b, const reg& c) {
    reg r;
    for (int i = 0; i < kWidth; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
  }
  static inline reg max(const reg& a, const reg& b) {
    reg r;
    for (int i = 0; i < kWidth; ++i) r.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i];
    return r;
  }
  static inline reg zero() { return set1(0.f); }
};

#include "conv_block_kernel.h"
#include "train_ops_kernel.h"

}  // namespace generic
}  // namespace emclassify
