// Raw-pointer interface of the CUDA kernels (no ATen/torch headers), so the
// .cu files compile with nothing but nvcc and the CUDA runtime:
//   nvcc -c -gencode arch=compute_80,code=sm_80 csrc/cuda/preprocess.cu
// The dispatcher glue (ops_cuda.cpp, built only into CUDA wheels) checks the
// arguments, packs inputs and calls these on the current stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../preprocess_modes.h"

namespace emclassify {
namespace cuda {

// ---- preprocessing (semantics: emclassify/preprocess.py and csrc/cpu/preprocess_cpu.cpp)

// mode and normalization are emclassify::Mode and emclassify::Norm (csrc/preprocess_modes.h) as int.

// Where one image of the ragged batch lies in the packed buffers.
struct ImageDesc {
  int64_t offset;       // first pixel in `pixels`
  int64_t mask_offset;  // first pixel in `masks`, or -1 when the image has no mask
  int32_t height, width;
};

// pixels: all images, float32, packed row-major one after another (uint8 and
//   uint16 values are exact in float32); masks: packed uint8 (nonzero = particle);
// descs: n descriptors in device memory; work: n * kPreprocessWorkDoubles doubles.
// out: n x size x size float32. One statistics pass per image (one block each),
// then one thread per output pixel.
constexpr int kPreprocessWorkDoubles = 16;
cudaError_t preprocess(const float* pixels, const uint8_t* masks, const ImageDesc* descs, int n, int mode,
                       int size, int margin, int normalization, double fixed_mean, double fixed_std,
                       double* work, float* out, cudaStream_t stream);

// ---- fused conv block (semantics: emclassify.ops.conv_block_reference)

// in: N x H x W x Cin (NHWC); weight: [3][3][Cin][Cout] with batch-norm folded;
// bias: Cout; pad 1 = "same", 0 = "valid"; pool: 2x2 max-pool (floor) after ReLU.
// out: N x Hout x Wout x Cout (NHWC).
cudaError_t conv_block(const float* in, int N, int H, int W, int Cin, const float* weight, const float* bias,
                       int Cout, int pad, bool pool, float* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace emclassify
