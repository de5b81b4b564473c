// Raw-pointer interface of the fused conv-block CPU kernels (no ATen here).
//
// One conv block = 3x3 convolution, stride 1, zero padding 1 ("same") or 0
// ("valid"), on a channels-last (NHWC) input, with batch-norm folded into the weights and bias,
// ReLU, and optionally 2x2 max-pool (floor), written once per output element.
//
// The kernel is compiled once per instruction set (kernels_avx512.cpp,
// kernels_avx2.cpp, kernels_generic.cpp) from conv_block_kernel.h; the
// glue (conv_block_cpu.cpp) picks one at run time from what the CPU supports.
#pragma once

#include <cstdint>

namespace emclassify {

struct ConvBlockArgs {
  const float* in;    // N x H x W x Cin (NHWC, contiguous)
  int64_t N, H, W, Cin;
  int64_t pad;        // 1 = "same", 0 = "valid"
  const float* w;     // packed [kh=3][kw=3][Cin][CoutPad], BN folded, zero beyond Cout
  const float* bias;  // CoutPad, BN folded, zero beyond Cout
  int64_t Cout, CoutPad;
  bool pool;          // 2x2 max-pool after ReLU
  float* out;         // N x Hout x Wout x Cout (NHWC); Ho = H + 2*pad - 2, Hout = pool ? Ho/2 : Ho
  int64_t Hout, Wout;
  int64_t out_row_stride, out_image_stride;  // floats between output rows / images (pixels: Cout)
};

// Computes output rows [row_begin, row_end) of the flattened (n, out_y) index.
// scratch: 2 * Wo * CoutPad floats (Wo = W + 2*pad - 2), private to the caller's thread.
using ConvRowsFn = void (*)(const ConvBlockArgs&, int64_t row_begin, int64_t row_end, float* scratch);

// Vector width in floats of each kernel: CoutPad must be a multiple of it.
namespace avx512 {
constexpr int kWidth = 16;
void conv_rows(const ConvBlockArgs&, int64_t, int64_t, float*);
}  // namespace avx512
namespace avx2 {
constexpr int kWidth = 8;
void conv_rows(const ConvBlockArgs&, int64_t, int64_t, float*);
}  // namespace avx2
namespace generic {
constexpr int kWidth = 8;
void conv_rows(const ConvBlockArgs&, int64_t, int64_t, float*);
}  // namespace generic

}  // namespace emclassify
