// CUDA kernels of emclassify::preprocess (see kernels.h for the interface).
//
// Kernel 1, one block per image: particle box from the mask, background mean
// (mask mode), then one statistics pass over the region (shifted sums in
// double, as the CPU kernel), giving the per-image affine normalisation and
// placement. Kernel 2, one thread per output pixel: the antialiased triangle
// filter of the reference evaluated in 2-D at that pixel, or the padding value.
#include <cfloat>
#include <cmath>

#include "../preprocess_math.h"
#include "kernels.h"

namespace emclassify {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Per-image results of kernel 1, stored as doubles in `work`.
enum Work { kY0, kY1, kX0, kX1, kShift, kScale, kBg, kSubstitute, kOh, kOw, kTop, kLeft, kPad, kCount };
static_assert(kCount <= kPreprocessWorkDoubles, "work slots");

template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* shared) {
  const int lane = threadIdx.x;
  shared[lane] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (lane < s) shared[lane] = op(shared[lane], shared[lane + s]);
    __syncthreads();
  }
  const T r = shared[0];
  __syncthreads();
  return r;
}

struct MinOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a < b ? a : b; }
};
struct MaxOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};
struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};

// Block-wide reductions for the statistics kernel (every thread gets the result).
struct BlockReduce {
  double* dshared;
  long long* lshared;
  __device__ long long min(long long v) const { return block_reduce(v, MinOp(), lshared); }
  __device__ long long max(long long v) const { return block_reduce(v, MaxOp(), lshared); }
  __device__ double min(double v) const { return block_reduce(v, MinOp(), dshared); }
  __device__ double max(double v) const { return block_reduce(v, MaxOp(), dshared); }
  __device__ double sum(double v) const { return block_reduce(v, SumOp(), dshared); }
};

// The statistics of one image, as thread `tid` of `nthreads` (elements strided
// over threads, combined with `reduce`); thread 0 writes the image's work slots.
// __host__ too, so tests can run it on the CPU as one thread (csrc/cuda/host_emulation.cu).
#pragma nv_exec_check_disable
template <class Reduce>
__host__ __device__ void region_stats(int tid, int nthreads, const Reduce& reduce, const float* pixels,
                                      const uint8_t* masks, const ImageDesc& d, int mode, int size, int margin,
                                      int normalization, double fixed_mean, double fixed_std, double* w) {
  const long long H = d.height, W = d.width, HW = H * W;
  const float* img = pixels + d.offset;
  const uint8_t* mask = d.mask_offset >= 0 ? masks + d.mask_offset : nullptr;

  // --- region -------------------------------------------------------------
  long long y0 = 0, y1 = H, x0 = 0, x1 = W;
  bool has_mask = false;
  if (mode != static_cast<int>(Mode::Surround)) {
    if (mask != nullptr) {
      long long ymin = H, ymax = -1, xmin = W, xmax = -1;
      for (long long i = tid; i < HW; i += nthreads) {
        if (mask[i]) {
          const long long y = i / W, x = i % W;
          ymin = y < ymin ? y : ymin;
          ymax = y > ymax ? y : ymax;
          xmin = x < xmin ? x : xmin;
          xmax = x > xmax ? x : xmax;
        }
      }
      ymin = reduce.min(ymin);
      ymax = reduce.max(ymax);
      xmin = reduce.min(xmin);
      xmax = reduce.max(xmax);
      has_mask = ymax >= 0;
      if (has_mask) {
        y0 = ymin, y1 = ymax + 1, x0 = xmin, x1 = xmax + 1;
      }
    }
    if (!has_mask) {
      const math::Region r = math::margin_region(H, W, margin);
      y0 = r.y0, y1 = r.y1, x0 = r.x0, x1 = r.x1;
    }
  }
  const bool substitute = mode == static_cast<int>(Mode::Mask) && has_mask;

  // --- background (mask mode): mean of the pixels outside the mask ----------
  double bg = 0.0;
  if (substitute) {
    double s_out = 0.0, s_all = 0.0, n_out = 0.0;
    for (long long i = tid; i < HW; i += nthreads) {
      const double v = img[i];
      s_all += v;
      if (!mask[i]) {
        s_out += v;
        n_out += 1.0;
      }
    }
    s_out = reduce.sum(s_out);
    s_all = reduce.sum(s_all);
    n_out = reduce.sum(n_out);
    bg = n_out > 0 ? s_out / n_out : s_all / static_cast<double>(HW);
  }

  // --- statistics over the region (shifted by its first value) -------------
  const long long rh = y1 - y0, rw = x1 - x0, n = rh * rw;
  auto value = [&](long long y, long long x) -> double {
    const long long i = y * W + x;
    return (substitute && !mask[i]) ? bg : static_cast<double>(img[i]);
  };
  const double k = value(y0, x0);
  double s1 = 0.0, s2 = 0.0, lo = DBL_MAX, hi = -DBL_MAX;
  for (long long i = tid; i < n; i += nthreads) {
    const double v = value(y0 + i / rw, x0 + i % rw);
    const double dv = v - k;
    s1 += dv;
    s2 += dv * dv;
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  s1 = reduce.sum(s1);
  s2 = reduce.sum(s2);
  lo = reduce.min(lo);
  hi = reduce.max(hi);
  if (tid != 0) return;

  const math::Affine a = math::normalisation(static_cast<Norm>(normalization), k, s1, s2, static_cast<double>(n), lo,
                                             hi, fixed_mean, fixed_std);
  const math::Placement p = math::placement(rh, rw, size);
  w[kY0] = y0, w[kY1] = y1, w[kX0] = x0, w[kX1] = x1;
  w[kShift] = a.shift, w[kScale] = a.scale, w[kBg] = bg, w[kSubstitute] = substitute ? 1.0 : 0.0;
  w[kOh] = p.oh, w[kOw] = p.ow, w[kTop] = p.top, w[kLeft] = p.left;
  w[kPad] = static_cast<double>(static_cast<float>((a.mean - a.shift) * a.scale));  // the region mean, normalised
}

__global__ void region_stats_kernel(const float* pixels, const uint8_t* masks, const ImageDesc* descs, int mode,
                                    int size, int margin, int normalization, double fixed_mean, double fixed_std,
                                    double* work) {
  __shared__ double dshared[kThreads];
  __shared__ long long lshared[kThreads];
  const BlockReduce reduce{dshared, lshared};
  region_stats(static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), reduce, pixels, masks,
               descs[blockIdx.x], mode, size, margin, normalization, fixed_mean, fixed_std,
               work + static_cast<long long>(blockIdx.x) * kPreprocessWorkDoubles);
}

// Output pixel (oy, ox) of image d from its work slots w. __host__ too, for the host emulation.
__host__ __device__ inline float resize_pixel(const float* pixels, const uint8_t* masks, const ImageDesc& d,
                                              const double* w, int oy, int ox) {
  const long long oh = static_cast<long long>(w[kOh]), ow = static_cast<long long>(w[kOw]);
  const long long top = static_cast<long long>(w[kTop]), left = static_cast<long long>(w[kLeft]);
  const long long py = oy - top, px = ox - left;
  if (py < 0 || py >= oh || px < 0 || px >= ow) return static_cast<float>(w[kPad]);
  const float* img = pixels + d.offset;
  const uint8_t* mask = d.mask_offset >= 0 ? masks + d.mask_offset : nullptr;
  const bool substitute = w[kSubstitute] != 0.0;
  const long long y0 = static_cast<long long>(w[kY0]), x0 = static_cast<long long>(w[kX0]);
  const long long rh = static_cast<long long>(w[kY1]) - y0, rw = static_cast<long long>(w[kX1]) - x0;
  const double shift = w[kShift], bg = w[kBg];
  const math::FilterSpan fy = math::filter_span(py, rh, oh), fx = math::filter_span(px, rw, ow);
  double wy_sum = 0.0, wx_sum = 0.0, acc = 0.0;
  for (long long x = fx.lo; x < fx.hi; ++x) wx_sum += math::tap(x, fx);
  for (long long y = fy.lo; y < fy.hi; ++y) {
    const double wy = math::tap(y, fy);
    if (wy == 0.0) continue;
    wy_sum += wy;
    const long long row = (y0 + y) * d.width + x0;
    double racc = 0.0;
    for (long long x = fx.lo; x < fx.hi; ++x) {
      const double wx = math::tap(x, fx);
      if (wx == 0.0) continue;
      const long long i = row + x;
      const double v = (substitute && !mask[i]) ? bg : static_cast<double>(img[i]);
      racc += wx * (v - shift);
    }
    acc += wy * racc;
  }
  return static_cast<float>(acc / (wy_sum * wx_sum) * w[kScale]);
}

__global__ void resize_kernel(const float* pixels, const uint8_t* masks, const ImageDesc* descs, int n_images,
                              int size, const double* work, float* out) {
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long per_image = static_cast<long long>(size) * size;
  if (idx >= per_image * n_images) return;
  const int b = static_cast<int>(idx / per_image);
  const int oy = static_cast<int>((idx % per_image) / size), ox = static_cast<int>(idx % size);
  out[idx] = resize_pixel(pixels, masks, descs[b], work + static_cast<long long>(b) * kPreprocessWorkDoubles, oy, ox);
}

}  // namespace

cudaError_t preprocess(const float* pixels, const uint8_t* masks, const ImageDesc* descs, int n, int mode,
                       int size, int margin, int normalization, double fixed_mean, double fixed_std,
                       double* work, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  region_stats_kernel<<<n, kThreads, 0, stream>>>(pixels, masks, descs, mode, size, margin, normalization,
                                                  fixed_mean, fixed_std, work);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const long long total = static_cast<long long>(n) * size * size;
  const unsigned blocks = static_cast<unsigned>((total + kThreads - 1) / kThreads);
  resize_kernel<<<blocks, kThreads, 0, stream>>>(pixels, masks, descs, n, size, work, out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace emclassify
