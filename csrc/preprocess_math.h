// The per-image arithmetic of emclassify::preprocess, written once for the CPU op
// (cpu/preprocess_cpu.cpp), the CUDA kernels (cuda/preprocess.cu) and the CUDA host emulation
// (tests/cuda_host_emulation.cu); the pure-PyTorch reference (emclassify/preprocess.py) is the
// oracle all three are tested against. Plain C++ with no ATen or CUDA header: under nvcc every
// function is __host__ __device__, elsewhere an ordinary inline function. How the pixels are
// visited (a loop on the CPU, strided threads and block reductions on the GPU) stays with each
// kernel; what is computed from them lives here.
#pragma once

#include <cmath>

#include "preprocess_modes.h"

#if defined(__CUDACC__)
#define EMC_HOST_DEVICE __host__ __device__
#else
#define EMC_HOST_DEVICE
#endif

namespace emclassify {
namespace math {

constexpr double kEps = 1e-6;  // the smallest spread a normalisation divides by

// The region [y0, y1) x [x0, x1) of an image, in pixels.
struct Region {
  long long y0, y1, x0, x1;
};

// The region when no mask marks the particle: `margin` px removed on every side, but never so many
// that less than one pixel (odd side) or two (even side) remains.
EMC_HOST_DEVICE inline Region margin_region(long long H, long long W, long long margin) {
  const long long my = margin < (H - 1) / 2 ? margin : (H - 1) / 2;
  const long long mx = margin < (W - 1) / 2 ? margin : (W - 1) / 2;
  return Region{my, H - my, mx, W - mx};
}

// Output value = (input - shift) * scale; `mean` is the region's mean (it fills the padding).
struct Affine {
  double mean, shift, scale;
};

// The normalisation from one statistics pass over n values shifted by their first value k:
// s1 = sum(v - k), s2 = sum((v - k)^2), lo/hi = min/max(v). Shifted sums in double keep the
// precision of uint16 data with a small spread.
EMC_HOST_DEVICE inline Affine normalisation(Norm norm, double k, double s1, double s2, double n, double lo, double hi,
                                            double fixed_mean, double fixed_std) {
  const double m1 = s1 / n;
  const double mean = k + m1;
  if (norm == Norm::ZScore) {
    const double var = fmax(0.0, s2 / n - m1 * m1);
    return Affine{mean, mean, 1.0 / fmax(sqrt(var), kEps)};
  }
  if (norm == Norm::MinMax) return Affine{mean, lo, 1.0 / fmax(hi - lo, kEps)};
  return Affine{mean, fixed_mean, 1.0 / fixed_std};
}

// Where a rh x rw region lands in the size x size output: aspect kept, longer side = size, centred.
struct Placement {
  long long oh, ow, top, left;
};

EMC_HOST_DEVICE inline Placement placement(long long rh, long long rw, long long size) {
  const long long longer = rh > rw ? rh : rw;
  long long oh = static_cast<long long>(floor(static_cast<double>(rh) * size / longer + 0.5));
  long long ow = static_cast<long long>(floor(static_cast<double>(rw) * size / longer + 0.5));
  oh = oh < 1 ? 1 : oh;
  ow = ow < 1 ? 1 : ow;
  return Placement{oh, ow, (size - oh) / 2, (size - ow) / 2};
}

// The antialiased triangle filter of emclassify.preprocess.resize_weights: output index o of n_out
// reads inputs [lo, hi) with weight tap(i) (normalised by their sum by the caller).
struct FilterSpan {
  long long lo, hi;
  double centre, support;
};

EMC_HOST_DEVICE inline FilterSpan filter_span(long long o, long long n_in, long long n_out) {
  const double scale = static_cast<double>(n_in) / static_cast<double>(n_out);
  const double support = scale > 1.0 ? scale : 1.0;
  const double centre = (static_cast<double>(o) + 0.5) * scale;
  const long long l = static_cast<long long>(floor(centre - support - 0.5));
  const long long h = static_cast<long long>(ceil(centre + support + 0.5));
  return FilterSpan{l > 0 ? l : 0, h < n_in ? h : n_in, centre, support};
}

EMC_HOST_DEVICE inline double tap(long long i, const FilterSpan& s) {
  const double w = 1.0 - fabs(static_cast<double>(i) + 0.5 - s.centre) / s.support;
  return w > 0.0 ? w : 0.0;
}

}  // namespace math
}  // namespace emclassify
