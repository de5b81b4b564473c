// The preprocessing modes and normalisations: one definition for the argument parser
// (preprocess_args.h), the CPU op, the CUDA kernels and the CUDA host emulation. Plain C++ with
// no ATen or CUDA header, so nvcc compiles it alone. The values cross the CUDA kernels' raw-pointer
// interface as int (csrc/cuda/kernels.h), hence the fixed underlying values.
#pragma once

namespace emclassify {

enum class Mode : int { Surround = 0, Crop = 1, Mask = 2 };
enum class Norm : int { ZScore = 0, MinMax = 1, Fixed = 2 };

}  // namespace emclassify
