// CPU glue of the training-step ops: batch-norm (batch statistics) + ReLU forward and backward
// in one pass each, and dropout with a counter-based mask. Argument checks, channels-last rows,
// the split across threads and the fixed-order sums; the arithmetic is in train_ops_kernel.h,
// compiled per instruction set.
//
// Why: in a bf16 training step of the LipNet trunk (channels-last, 2 cores) ATen's batch-norm,
// ReLU, their backward and dropout's Bernoulli draw took ~40 % of the step, several times their
// memory traffic (BENCHMARKS.md "Training throughput").
//
// Semantics (the references): emclassify.ops.bn_relu_train_reference and
// emclassify.ops.dropout_reference. Results do not depend on the number of threads: every
// reduction is split into a fixed number of row chunks, summed in a fixed order, and the dropout
// mask is a hash of (seed, element index).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "../outputs.h"
#include "train_ops.h"

namespace emclassify {
namespace {

constexpr int64_t kChunks = 64;  // fixed reduction split: thread-count independent sums

const TrainKernels& kernels() {
  const std::string isa = cpu_kernel_isa();
  if (isa == "avx512") return avx512::train_kernels();
  if (isa == "avx2") return avx2::train_kernels();
  return generic::train_kernels();
}

template <typename T>
const TrainKernelsOf<T>& kernels_for();
template <>
const TrainKernelsOf<float>& kernels_for<float>() {
  return kernels().f32;
}
template <>
const TrainKernelsOf<uint16_t>& kernels_for<uint16_t>() {
  return kernels().bf16;
}

struct Rows {
  int64_t rows, channels;
};

// x: N x C x H x W or N x C -> (channels-last contiguous tensor, rows, channels).
std::pair<at::Tensor, Rows> as_rows(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 4 || x.dim() == 2, "emclassify::", op, ": x must be N x C x H x W or N x C, got ",
              x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "emclassify::", op,
              ": x must be float32 or bfloat16, got ", x.scalar_type());
  at::Tensor c = x.dim() == 4 ? x.contiguous(at::MemoryFormat::ChannelsLast) : x.contiguous();
  const int64_t channels = x.size(1);
  return {c, Rows{channels ? x.numel() / channels : 0, channels}};
}

void check_vector(const at::Tensor& t, int64_t channels, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == channels && t.scalar_type() == at::kFloat && t.device().is_cpu(),
              "emclassify::", op, ": ", name, " must be a float32 CPU vector of ", channels, " values");
}

template <typename T>
const T* rows_of(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.const_data_ptr());
}
template <typename T>
T* rows_of(at::Tensor& t) {
  return reinterpret_cast<T*>(t.mutable_data_ptr());
}

// n_acc vectors of C sums over all rows: each of kChunks row chunks accumulates in float with
// `accumulate(first row, rows, accumulators)`, and the chunks are added in order in double.
template <typename F>
std::vector<double> chunked_sums(const Rows& s, int64_t n_acc, F&& accumulate) {
  const int64_t C = s.channels;
  const int64_t chunks = std::max<int64_t>(1, std::min(kChunks, s.rows));
  const int64_t per = (s.rows + chunks - 1) / chunks;
  std::vector<float> partial(static_cast<size_t>(chunks * n_acc * C), 0.f);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t r0 = std::min(s.rows, k * per), r1 = std::min(s.rows, r0 + per);
      accumulate(r0, r1 - r0, partial.data() + k * n_acc * C);
    }
  });
  std::vector<double> total(static_cast<size_t>(n_acc * C), 0.0);
  for (int64_t k = 0; k < chunks; ++k)
    for (int64_t j = 0; j < n_acc * C; ++j) total[j] += partial[k * n_acc * C + j];
  return total;
}

// body(first row, rows) over all rows, split across threads
template <typename F>
void over_rows(const Rows& s, F&& body) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, s.channels));
  at::parallel_for(0, s.rows, grain, [&](int64_t r0, int64_t r1) { body(r0, r1 - r0); });
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_forward(const at::Tensor& xc, const Rows& s,
                                                               const at::Tensor& weight, const at::Tensor& bias,
                                                               double eps) {
  const TrainKernelsOf<T>& k = kernels_for<T>();
  const int64_t C = s.channels;
  const T* x = rows_of<T>(xc);
  const double n = static_cast<double>(s.rows);
  // two passes (mean, then squared deviations): as exact as the data allow; the rows are cache-resident
  std::vector<double> sums = chunked_sums(s, 1, [&](int64_t r0, int64_t rows, float* acc) {
    k.sum(x + r0 * C, rows, C, acc);
  });
  std::vector<float> mean(C);
  for (int64_t c = 0; c < C; ++c) mean[c] = static_cast<float>(sums[c] / n);
  std::vector<double> sq = chunked_sums(s, 1, [&](int64_t r0, int64_t rows, float* acc) {
    k.sum_sq_dev(x + r0 * C, rows, C, mean.data(), acc);
  });
  at::Tensor mean_t = at::empty({C}, weight.options());
  at::Tensor var_t = at::empty({C}, weight.options());
  std::vector<float> scale(C), shift(C);
  const float* g = weight.const_data_ptr<float>();
  const float* b = bias.const_data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double var = sq[c] / n;
    mean_t.mutable_data_ptr<float>()[c] = mean[c];
    var_t.mutable_data_ptr<float>()[c] = static_cast<float>(var);
    const float invstd = static_cast<float>(1.0 / std::sqrt(var + eps));
    scale[c] = g[c] * invstd;
    shift[c] = b[c] - mean[c] * scale[c];
  }
  at::Tensor y = poison_if_asked(at::empty_like(xc));
  T* out = rows_of<T>(y);
  over_rows(s, [&](int64_t r0, int64_t rows) {
    k.scale_shift_relu(x + r0 * C, rows, C, scale.data(), shift.data(), out + r0 * C);
  });
  return {y, mean_t, var_t};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_train_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                                 const at::Tensor& bias, double eps) {
  auto [xc, s] = as_rows(x, "bn_relu_train");
  check_vector(weight, s.channels, "bn_relu_train", "weight");
  check_vector(bias, s.channels, "bn_relu_train", "bias");
  TORCH_CHECK(s.rows > 1, "emclassify::bn_relu_train: batch statistics need more than one value per channel");
  TORCH_CHECK(eps > 0, "emclassify::bn_relu_train: eps must be positive");
  if (xc.scalar_type() == at::kFloat) return bn_relu_forward<float>(xc, s, weight, bias, eps);
  return bn_relu_forward<uint16_t>(xc, s, weight, bias, eps);
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_backward(const at::Tensor& gc, const at::Tensor& xc,
                                                                const Rows& s, const at::Tensor& weight,
                                                                const at::Tensor& bias, const at::Tensor& mean_t,
                                                                const at::Tensor& var_t, double eps) {
  const TrainKernelsOf<T>& k = kernels_for<T>();
  const int64_t C = s.channels;
  const T* x = rows_of<T>(xc);
  const T* gy = rows_of<T>(gc);
  const float* g = weight.const_data_ptr<float>();
  const float* b = bias.const_data_ptr<float>();
  const float* mean = mean_t.const_data_ptr<float>();
  std::vector<float> invstd(C);
  for (int64_t c = 0; c < C; ++c)
    invstd[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var_t.const_data_ptr<float>()[c]) + eps));
  // the ReLU's gate is recomputed from x (the output is positive exactly where g * xhat + b is),
  // so the forward keeps neither its output nor a mask for the backward
  std::vector<double> sums = chunked_sums(s, 2, [&](int64_t r0, int64_t rows, float* acc) {
    k.backward_sums(x + r0 * C, gy + r0 * C, rows, C, mean, invstd.data(), g, b, acc, acc + C);
  });
  at::Tensor grad_weight = at::empty({C}, weight.options());
  at::Tensor grad_bias = at::empty({C}, weight.options());
  const double n = static_cast<double>(s.rows);
  std::vector<float> mean_dz(C), mean_dzx(C), gain(C);
  for (int64_t c = 0; c < C; ++c) {
    grad_bias.mutable_data_ptr<float>()[c] = static_cast<float>(sums[c]);
    grad_weight.mutable_data_ptr<float>()[c] = static_cast<float>(sums[C + c]);
    mean_dz[c] = static_cast<float>(sums[c] / n);
    mean_dzx[c] = static_cast<float>(sums[C + c] / n);
    gain[c] = g[c] * invstd[c];
  }
  at::Tensor grad_x = poison_if_asked(at::empty_like(xc));
  T* out = rows_of<T>(grad_x);
  over_rows(s, [&](int64_t r0, int64_t rows) {
    k.backward_apply(x + r0 * C, gy + r0 * C, rows, C, mean, invstd.data(), g, b, gain.data(), mean_dz.data(),
                     mean_dzx.data(), out + r0 * C);
  });
  return {grad_x, grad_weight, grad_bias};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_train_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& mean, const at::Tensor& var, double eps) {
  auto [xc, s] = as_rows(x, "bn_relu_train_backward");
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_y.scalar_type() == x.scalar_type(),
              "emclassify::bn_relu_train_backward: grad_y must match x in shape and dtype");
  at::Tensor gc = as_rows(grad_y, "bn_relu_train_backward").first;
  check_vector(weight, s.channels, "bn_relu_train_backward", "weight");
  check_vector(bias, s.channels, "bn_relu_train_backward", "bias");
  check_vector(mean, s.channels, "bn_relu_train_backward", "mean");
  check_vector(var, s.channels, "bn_relu_train_backward", "var");
  if (xc.scalar_type() == at::kFloat) return bn_relu_backward<float>(gc, xc, s, weight, bias, mean, var, eps);
  return bn_relu_backward<uint16_t>(gc, xc, s, weight, bias, mean, var, eps);
}

// splitmix64's finaliser: turns the seed and each 2^32-element block number into two 32-bit keys
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

template <typename T>
void dropout_rows(const at::Tensor& xc, at::Tensor& y, at::Tensor& mask, uint64_t seed, double p) {
  const TrainKernelsOf<T>& k = kernels_for<T>();
  const double keep = 1.0 - p;
  // kept when a 32-bit hash falls under keep * 2^32 (0 < p < 1 here: the caller handles 0 and 1)
  const uint32_t threshold = static_cast<uint32_t>(std::min(std::ldexp(keep, 32), 4294967295.0));
  const float scale = static_cast<float>(1.0 / keep);
  const T* x = rows_of<T>(xc);
  T* out = rows_of<T>(y);
  uint8_t* m = reinterpret_cast<uint8_t*>(mask.mutable_data_ptr<bool>());  // bool: one byte, 0 or 1
  at::parallel_for(0, xc.numel(), 16384, [&](int64_t i0, int64_t i1) {
    while (i0 < i1) {
      // a block of indices sharing their upper 32 bits: one pair of keys
      const uint64_t block = static_cast<uint64_t>(i0) >> 32;
      const int64_t block_end = std::min<int64_t>(i1, static_cast<int64_t>((block + 1) << 32));
      const uint64_t key = mix64(seed + mix64(block + 1));
      k.dropout(x + i0, block_end - i0, static_cast<uint32_t>(i0), static_cast<uint32_t>(key),
                static_cast<uint32_t>(key >> 32), threshold, scale, out + i0, m + i0);
      i0 = block_end;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> dropout_cpu(const at::Tensor& x, double p, int64_t seed) {
  TORCH_CHECK(p >= 0 && p <= 1, "emclassify::dropout: p must be in [0, 1], got ", p);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "emclassify::dropout: x must be float32 or bfloat16, got ", x.scalar_type());
  // the mask follows x's memory order (element i of the buffer), so the buffer must be dense
  at::Tensor xc = x.is_non_overlapping_and_dense() ? x : x.contiguous();
  if (p == 0) return {xc.clone(), at::ones_like(xc, xc.options().dtype(at::kBool))};
  if (p == 1) return {at::zeros_like(xc), at::zeros_like(xc, xc.options().dtype(at::kBool))};
  at::Tensor y = poison_if_asked(at::empty_like(xc));
  at::Tensor mask = at::empty_like(xc, xc.options().dtype(at::kBool));
  if (xc.scalar_type() == at::kFloat)
    dropout_rows<float>(xc, y, mask, static_cast<uint64_t>(seed), p);
  else
    dropout_rows<uint16_t>(xc, y, mask, static_cast<uint64_t>(seed), p);
  return {y, mask};
}

}  // namespace

TORCH_LIBRARY_IMPL(emclassify, CPU, m) {
  m.impl("bn_relu_train", &bn_relu_train_cpu);
  m.impl("bn_relu_train_backward", &bn_relu_train_backward_cpu);
  m.impl("dropout", &dropout_cpu);
}

}  // namespace emclassify
