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

// Batch statistics of channels-last rows: mean and biased variance (float32 C tensors), and the
// per-channel scale and shift that normalise and apply the affine parameters.
struct BatchStats {
  at::Tensor mean, var;
  std::vector<float> scale, shift;
};

template <typename T>
BatchStats batch_stats(const T* x, const Rows& s, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  const TrainKernelsOf<T>& k = kernels_for<T>();
  const int64_t C = s.channels;
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
  BatchStats out{at::empty({C}, weight.options()), at::empty({C}, weight.options()), std::vector<float>(C),
                 std::vector<float>(C)};
  const float* g = weight.const_data_ptr<float>();
  const float* b = bias.const_data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double var = sq[c] / n;
    out.mean.mutable_data_ptr<float>()[c] = mean[c];
    out.var.mutable_data_ptr<float>()[c] = static_cast<float>(var);
    const float invstd = static_cast<float>(1.0 / std::sqrt(var + eps));
    out.scale[c] = g[c] * invstd;
    out.shift[c] = b[c] - mean[c] * out.scale[c];
  }
  return out;
}

void check_forward(const Rows& s, const at::Tensor& weight, const at::Tensor& bias, double eps, const char* op) {
  check_vector(weight, s.channels, op, "weight");
  check_vector(bias, s.channels, op, "bias");
  TORCH_CHECK(s.rows > 1, "emclassify::", op, ": batch statistics need more than one value per channel");
  TORCH_CHECK(eps > 0, "emclassify::", op, ": eps must be positive");
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_forward(const at::Tensor& xc, const Rows& s,
                                                               const at::Tensor& weight, const at::Tensor& bias,
                                                               double eps) {
  const T* x = rows_of<T>(xc);
  BatchStats st = batch_stats(x, s, weight, bias, eps);
  const TrainKernelsOf<T>& k = kernels_for<T>();
  const int64_t C = s.channels;
  at::Tensor y = poison_if_asked(at::empty_like(xc));
  T* out = rows_of<T>(y);
  over_rows(s, [&](int64_t r0, int64_t rows) {
    k.scale_shift_relu(x + r0 * C, rows, C, st.scale.data(), st.shift.data(), out + r0 * C);
  });
  return {y, st.mean, st.var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_train_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                                 const at::Tensor& bias, double eps) {
  auto [xc, s] = as_rows(x, "bn_relu_train");
  check_forward(s, weight, bias, eps, "bn_relu_train");
  if (xc.scalar_type() == at::kFloat) return bn_relu_forward<float>(xc, s, weight, bias, eps);
  return bn_relu_forward<uint16_t>(xc, s, weight, bias, eps);
}

// x: N x C x H x W -> the pooled block's geometry
struct PoolShape {
  int64_t N, C, H, W, Ho, Wo;
};

PoolShape pool_shape(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 4, "emclassify::", op, ": x must be N x C x H x W, got ", x.sizes());
  TORCH_CHECK(x.size(2) >= 2 && x.size(3) >= 2, "emclassify::", op, ": a 2x2 max-pool needs H, W >= 2, got ",
              x.sizes());
  return PoolShape{x.size(0), x.size(1), x.size(2), x.size(3), x.size(2) / 2, x.size(3) / 2};
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_relu_pool_forward(const at::Tensor& xc, const Rows& s,
                                                                                const PoolShape& p,
                                                                                const at::Tensor& weight,
                                                                                const at::Tensor& bias, double eps) {
  const T* x = rows_of<T>(xc);
  BatchStats st = batch_stats(x, s, weight, bias, eps);
  const TrainKernelsOf<T>& k = kernels_for<T>();
  const int64_t C = p.C;
  const auto cl = at::MemoryFormat::ChannelsLast;
  at::Tensor y = poison_if_asked(at::empty({p.N, C, p.Ho, p.Wo}, xc.options().memory_format(cl)));
  at::Tensor idx = at::empty({p.N, C, p.Ho, p.Wo}, xc.options().dtype(at::kByte).memory_format(cl));
  T* out = rows_of<T>(y);
  uint8_t* which = idx.mutable_data_ptr<uint8_t>();
  const int64_t line = p.W * C, pooled_line = p.Wo * C;
  at::parallel_for(0, p.N * p.Ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {  // r = n * Ho + oh
      const int64_t n = r / p.Ho, oh = r % p.Ho;
      const T* r0 = x + (n * p.H + 2 * oh) * line;
      k.scale_shift_relu_pool(r0, r0 + line, p.Wo, C, st.scale.data(), st.shift.data(), out + r * pooled_line,
                              which + r * pooled_line);
    }
  });
  return {y, st.mean, st.var, idx};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_relu_pool_train_cpu(const at::Tensor& x,
                                                                                  const at::Tensor& weight,
                                                                                  const at::Tensor& bias,
                                                                                  double eps) {
  const PoolShape p = pool_shape(x, "bn_relu_pool_train");
  auto [xc, s] = as_rows(x, "bn_relu_pool_train");
  check_forward(s, weight, bias, eps, "bn_relu_pool_train");
  if (xc.scalar_type() == at::kFloat) return bn_relu_pool_forward<float>(xc, s, p, weight, bias, eps);
  return bn_relu_pool_forward<uint16_t>(xc, s, p, weight, bias, eps);
}

// What both backwards share: 1 / sqrt(var + eps), and from the two sums per channel (of dz and of
// dz * xhat) the parameter gradients and the factors of grad x = gain * (dz - mean_dz - xhat * mean_dzx).
struct BackwardFactors {
  std::vector<float> invstd, gain, mean_dz, mean_dzx;
  at::Tensor grad_weight, grad_bias;
};

BackwardFactors backward_invstd(const at::Tensor& weight, const at::Tensor& var, double eps) {
  const int64_t C = weight.size(0);
  BackwardFactors f{std::vector<float>(C), std::vector<float>(C), std::vector<float>(C), std::vector<float>(C),
                    at::empty({C}, weight.options()), at::empty({C}, weight.options())};
  for (int64_t c = 0; c < C; ++c)
    f.invstd[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var.const_data_ptr<float>()[c]) + eps));
  return f;
}

void finish_factors(BackwardFactors& f, const std::vector<double>& sums, const at::Tensor& weight, int64_t rows) {
  const int64_t C = weight.size(0);
  const float* g = weight.const_data_ptr<float>();
  const double n = static_cast<double>(rows);
  for (int64_t c = 0; c < C; ++c) {
    f.grad_bias.mutable_data_ptr<float>()[c] = static_cast<float>(sums[c]);
    f.grad_weight.mutable_data_ptr<float>()[c] = static_cast<float>(sums[C + c]);
    f.mean_dz[c] = static_cast<float>(sums[c] / n);
    f.mean_dzx[c] = static_cast<float>(sums[C + c] / n);
    f.gain[c] = g[c] * f.invstd[c];
  }
}

void check_backward(const at::Tensor& grad_y, const at::Tensor& x, at::IntArrayRef y_sizes, const Rows& s,
                    const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var,
                    const char* op) {
  TORCH_CHECK(grad_y.sizes() == y_sizes && grad_y.scalar_type() == x.scalar_type(), "emclassify::", op,
              ": grad_y must have the output's shape ", y_sizes, " and x's dtype");
  check_vector(weight, s.channels, op, "weight");
  check_vector(bias, s.channels, op, "bias");
  check_vector(mean, s.channels, op, "mean");
  check_vector(var, s.channels, op, "var");
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
  BackwardFactors f = backward_invstd(weight, var_t, eps);
  // the ReLU's gate is recomputed from x (the output is positive exactly where g * xhat + b is),
  // so the forward keeps neither its output nor a mask for the backward
  std::vector<double> sums = chunked_sums(s, 2, [&](int64_t r0, int64_t rows, float* acc) {
    k.backward_sums(x + r0 * C, gy + r0 * C, rows, C, mean, f.invstd.data(), g, b, acc, acc + C);
  });
  finish_factors(f, sums, weight, s.rows);
  at::Tensor grad_x = poison_if_asked(at::empty_like(xc));
  T* out = rows_of<T>(grad_x);
  over_rows(s, [&](int64_t r0, int64_t rows) {
    k.backward_apply(x + r0 * C, gy + r0 * C, rows, C, mean, f.invstd.data(), g, b, f.gain.data(),
                     f.mean_dz.data(), f.mean_dzx.data(), out + r0 * C);
  });
  return {grad_x, f.grad_weight, f.grad_bias};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_train_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& mean, const at::Tensor& var, double eps) {
  auto [xc, s] = as_rows(x, "bn_relu_train_backward");
  check_backward(grad_y, x, x.sizes(), s, weight, bias, mean, var, "bn_relu_train_backward");
  at::Tensor gc = as_rows(grad_y, "bn_relu_train_backward").first;
  if (xc.scalar_type() == at::kFloat) return bn_relu_backward<float>(gc, xc, s, weight, bias, mean, var, eps);
  return bn_relu_backward<uint16_t>(gc, xc, s, weight, bias, mean, var, eps);
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_pool_backward(const at::Tensor& gc, const at::Tensor& xc,
                                                                     const at::Tensor& idx, const PoolShape& p,
                                                                     const at::Tensor& weight,
                                                                     const at::Tensor& mean_t,
                                                                     const at::Tensor& var_t, double eps) {
  const TrainKernelsOf<T>& k = kernels_for<T>();
  const int64_t C = p.C;
  const T* x = rows_of<T>(xc);
  const T* gp = rows_of<T>(gc);
  const uint8_t* which = idx.const_data_ptr<uint8_t>();
  const float* mean = mean_t.const_data_ptr<float>();
  BackwardFactors f = backward_invstd(weight, var_t, eps);
  const int64_t line = p.W * C, pooled_line = p.Wo * C;
  // full-resolution row r = n * H + h: its pooled row, or null past the last whole window
  auto pooled = [&](int64_t r, const auto* base) -> decltype(base) {
    const int64_t n = r / p.H, h = r % p.H;
    return h / 2 < p.Ho ? base + (n * p.Ho + h / 2) * pooled_line : nullptr;
  };
  const Rows lines{p.N * p.H, C};  // reduction chunks over whole rows
  std::vector<double> sums = chunked_sums(lines, 2, [&](int64_t r0, int64_t rows, float* acc) {
    for (int64_t r = r0; r < r0 + rows; ++r) {
      const T* g = pooled(r, gp);
      k.pool_backward_sums(x + r * line, g, g ? pooled(r, which) : nullptr, p.W, p.Wo, C,
                           static_cast<int>((r % p.H) & 1), mean, f.invstd.data(), acc, acc + C);
    }
  });
  finish_factors(f, sums, weight, p.N * p.H * p.W);
  at::Tensor grad_x = poison_if_asked(at::empty_like(xc));
  T* out = rows_of<T>(grad_x);
  at::parallel_for(0, p.N * p.H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* g = pooled(r, gp);
      k.pool_backward_apply(x + r * line, g, g ? pooled(r, which) : nullptr, p.W, p.Wo, C,
                            static_cast<int>((r % p.H) & 1), mean, f.invstd.data(), f.gain.data(), f.mean_dz.data(),
                            f.mean_dzx.data(), out + r * line);
    }
  });
  return {grad_x, f.grad_weight, f.grad_bias};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_pool_train_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& mean, const at::Tensor& var, const at::Tensor& argmax, double eps) {
  const PoolShape p = pool_shape(x, "bn_relu_pool_train_backward");
  auto [xc, s] = as_rows(x, "bn_relu_pool_train_backward");
  const std::vector<int64_t> pooled_sizes{p.N, p.C, p.Ho, p.Wo};
  check_backward(grad_y, x, pooled_sizes, s, weight, bias, mean, var, "bn_relu_pool_train_backward");
  TORCH_CHECK(argmax.sizes() == at::IntArrayRef(pooled_sizes) && argmax.scalar_type() == at::kByte,
              "emclassify::bn_relu_pool_train_backward: argmax must be the forward's uint8 output");
  at::Tensor gc = grad_y.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor ic = argmax.contiguous(at::MemoryFormat::ChannelsLast);
  if (xc.scalar_type() == at::kFloat) return bn_relu_pool_backward<float>(gc, xc, ic, p, weight, mean, var, eps);
  return bn_relu_pool_backward<uint16_t>(gc, xc, ic, p, weight, mean, var, eps);
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

at::Tensor dropout_backward_cpu(const at::Tensor& grad_y, const at::Tensor& mask, double scale) {
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.is_non_overlapping_and_dense(),
              "emclassify::dropout_backward: mask must be the forward's dense bool mask");
  TORCH_CHECK(grad_y.sizes() == mask.sizes(), "emclassify::dropout_backward: grad_y has shape ", grad_y.sizes(),
              ", the mask ", mask.sizes());
  TORCH_CHECK(grad_y.scalar_type() == at::kFloat || grad_y.scalar_type() == at::kBFloat16,
              "emclassify::dropout_backward: grad_y must be float32 or bfloat16, got ", grad_y.scalar_type());
  // element i of the mask's buffer pairs with element i of the gradient's: same memory order
  at::Tensor gy = grad_y.strides() == mask.strides() ? grad_y : at::empty_like(mask, grad_y.options()).copy_(grad_y);
  at::Tensor gx = poison_if_asked(at::empty_like(gy));
  const uint8_t* m = reinterpret_cast<const uint8_t*>(mask.const_data_ptr<bool>());
  const float s = static_cast<float>(scale);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const TrainKernelsOf<T>& k = kernels_for<T>();
    const T* g = rows_of<T>(gy);
    T* out = rows_of<T>(gx);
    at::parallel_for(0, gy.numel(), 16384,
                     [&](int64_t i0, int64_t i1) { k.dropout_backward(g + i0, m + i0, i1 - i0, s, out + i0); });
  };
  if (gy.scalar_type() == at::kFloat)
    run(float{});
  else
    run(uint16_t{});
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(emclassify, CPU, m) {
  m.impl("bn_relu_train", &bn_relu_train_cpu);
  m.impl("bn_relu_train_backward", &bn_relu_train_backward_cpu);
  m.impl("bn_relu_pool_train", &bn_relu_pool_train_cpu);
  m.impl("bn_relu_pool_train_backward", &bn_relu_pool_train_backward_cpu);
  m.impl("dropout", &dropout_cpu);
  m.impl("dropout_backward", &dropout_backward_cpu);
}

}  // namespace emclassify
