// CPU kernel of emclassify::preprocess: crop / mask / resize / normalise fused.
//
// Per image: one statistics pass over the region (shifted sums in double, so
// uint16 data with a small spread keeps its precision), then a separable
// antialiased triangle-filter resize of the centred values (x - shift), the
// horizontal pass into a small per-image buffer, the vertical pass writing each
// output pixel once, scaled. Images are processed in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../outputs.h"
#include "../preprocess_args.h"
#include "../preprocess_math.h"

namespace emclassify {
namespace {

// Sparse rows of the (n_out x n_in) triangle-filter matrix of emclassify.preprocess.resize_weights.
struct FilterBank {
  std::vector<int64_t> start, count;
  std::vector<float> weights;  // row o: weights[o * stride .. o * stride + count[o])
  int64_t stride = 0;

  FilterBank(int64_t n_in, int64_t n_out) : start(n_out), count(n_out) {
    const double support = std::max(1.0, static_cast<double>(n_in) / static_cast<double>(n_out));
    stride = static_cast<int64_t>(std::ceil(2.0 * support)) + 2;
    weights.assign(n_out * stride, 0.f);
    std::vector<double> tmp(stride);
    for (int64_t o = 0; o < n_out; ++o) {
      const math::FilterSpan span = math::filter_span(o, n_in, n_out);
      double sum = 0.0;
      int64_t first = -1, n = 0;
      for (int64_t i = span.lo; i < span.hi; ++i) {
        const double w = math::tap(i, span);
        if (w <= 0.0) continue;
        if (first < 0) first = i;
        tmp[i - first] = w;  // contiguous: positive weights form one run
        n = i - first + 1;
        sum += w;
      }
      start[o] = first;
      count[o] = n;
      for (int64_t k = 0; k < n; ++k) weights[o * stride + k] = static_cast<float>(tmp[k] / sum);
    }
  }
};

template <typename T>
void preprocess_one(const T* img, const bool* mask, int64_t H, int64_t W, Mode mode, int64_t size,
                    int64_t margin, Norm norm, double fixed_mean, double fixed_std, float* out) {
  // --- region ---------------------------------------------------------------
  bool has_mask = false;
  math::Region r{0, H, 0, W};
  if (mode != Mode::Surround) {
    if (mask != nullptr) {
      int64_t y0 = H, y1 = -1, x0 = W, x1 = -1;
      for (int64_t y = 0; y < H; ++y) {
        const bool* row = mask + y * W;
        for (int64_t x = 0; x < W; ++x) {
          if (row[x]) {
            y0 = std::min(y0, y);
            y1 = std::max(y1, y);
            x0 = std::min(x0, x);
            x1 = std::max(x1, x);
          }
        }
      }
      has_mask = y1 >= 0;
      if (has_mask) r = math::Region{y0, y1 + 1, x0, x1 + 1};
    }
    if (!has_mask) r = math::margin_region(H, W, margin);
  }
  const bool substitute = mode == Mode::Mask && has_mask;

  // --- background (mask mode): mean of the pixels outside the mask ------------
  double bg = 0.0;
  if (substitute) {
    double s_out = 0.0, s_all = 0.0;
    int64_t n_out = 0;
    for (int64_t i = 0; i < H * W; ++i) {
      const double v = static_cast<double>(img[i]);
      s_all += v;
      if (!mask[i]) {
        s_out += v;
        ++n_out;
      }
    }
    bg = n_out > 0 ? s_out / static_cast<double>(n_out) : s_all / static_cast<double>(H * W);
  }
  auto value = [&](int64_t y, int64_t x) -> double {
    const int64_t i = y * W + x;
    return (substitute && !mask[i]) ? bg : static_cast<double>(img[i]);
  };

  // --- one statistics pass (shifted sums: stable for large means) -------------
  const int64_t rh = r.y1 - r.y0, rw = r.x1 - r.x0, n = rh * rw;
  const double k = value(r.y0, r.x0);
  double s1 = 0.0, s2 = 0.0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (int64_t y = r.y0; y < r.y1; ++y) {
    for (int64_t x = r.x0; x < r.x1; ++x) {
      const double v = value(y, x);
      const double d = v - k;
      s1 += d;
      s2 += d * d;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  const math::Affine a = math::normalisation(norm, k, s1, s2, static_cast<double>(n), lo, hi, fixed_mean, fixed_std);
  const double shift = a.shift, scale = a.scale;

  // --- aspect-kept target shape and padding ----------------------------------
  const math::Placement p = math::placement(rh, rw, size);
  const int64_t oh = p.oh, ow = p.ow, top = p.top, left = p.left;
  const float pad = static_cast<float>((a.mean - shift) * scale);
  std::fill(out, out + size * size, pad);

  // --- separable resize of (x - shift), then scale ----------------------------
  const FilterBank fy(rh, oh), fx(rw, ow);
  std::vector<float> centred(rw), tmp(rh * ow);
  for (int64_t y = 0; y < rh; ++y) {
    for (int64_t x = 0; x < rw; ++x) centred[x] = static_cast<float>(value(r.y0 + y, r.x0 + x) - shift);
    float* trow = tmp.data() + y * ow;
    for (int64_t p = 0; p < ow; ++p) {
      const float* w = fx.weights.data() + p * fx.stride;
      const float* src = centred.data() + fx.start[p];
      float acc = 0.f;
      for (int64_t j = 0; j < fx.count[p]; ++j) acc += w[j] * src[j];
      trow[p] = acc;
    }
  }
  const float fscale = static_cast<float>(scale);
  std::vector<float> acc(ow);
  for (int64_t o = 0; o < oh; ++o) {
    std::fill(acc.begin(), acc.end(), 0.f);
    const float* w = fy.weights.data() + o * fy.stride;
    for (int64_t i = 0; i < fy.count[o]; ++i) {
      const float wi = w[i];
      const float* trow = tmp.data() + (fy.start[o] + i) * ow;
      for (int64_t p = 0; p < ow; ++p) acc[p] += wi * trow[p];
    }
    float* orow = out + (top + o) * size + left;
    for (int64_t p = 0; p < ow; ++p) orow[p] = acc[p] * fscale;
  }
}

at::Tensor preprocess_cpu(at::TensorList images, const c10::List<std::optional<at::Tensor>>& masks,
                          c10::string_view mode_s, int64_t size, int64_t margin, c10::string_view norm_s,
                          double mean, double std_) {
  const PreprocessArgs args = parse_preprocess_args(images, masks, mode_s, size, margin, norm_s, std_);
  const Mode mode = args.mode;
  const Norm norm = args.norm;
  const std::vector<at::Tensor>& imgs = args.images;
  const std::vector<at::Tensor>& msks = args.masks;
  const int64_t N = static_cast<int64_t>(imgs.size());
  at::Tensor out = poison_if_asked(at::empty({N, 1, size, size}, at::TensorOptions().dtype(at::kFloat)));
  float* out_ptr = out.data_ptr<float>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const at::Tensor& t = imgs[i];
      const bool* mp = msks[i].defined() ? msks[i].data_ptr<bool>() : nullptr;
      float* o = out_ptr + i * size * size;
      const int64_t H = t.size(0), W = t.size(1);
      switch (t.scalar_type()) {
        case at::kByte:
          preprocess_one(t.data_ptr<uint8_t>(), mp, H, W, mode, size, margin, norm, mean, std_, o);
          break;
        case at::kUInt16:
          preprocess_one(reinterpret_cast<const uint16_t*>(t.data_ptr()), mp, H, W, mode, size, margin, norm,
                         mean, std_, o);
          break;
        default:
          preprocess_one(t.data_ptr<float>(), mp, H, W, mode, size, margin, norm, mean, std_, o);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(emclassify, CPU, m) { m.impl("preprocess", &preprocess_cpu); }

}  // namespace emclassify
