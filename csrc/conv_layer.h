// Argument checks and output shapes of the conv-block ops, shared by the CPU
// and CUDA glue so both devices accept and reject exactly the same inputs.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace emclassify {

// One fused conv block applied to a Cin x H x W input (per image).
struct LayerShape {
  int64_t Cin, Cout, H, W, pad;
  bool pool;
  int64_t Ho, Wo;      // conv output
  int64_t Hout, Wout;  // after the optional 2x2 max-pool
};

inline LayerShape check_layer(const char* op, int64_t Cin, int64_t H, int64_t W, const at::Tensor& weight,
                              const at::Tensor& bias, int64_t padding, bool pool) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == Cin && weight.size(2) == 3 && weight.size(3) == 3 &&
                  weight.scalar_type() == at::kFloat,
              op, ": weight must be float32 Cout x ", Cin, " x 3 x 3, got ", weight.scalar_type(), " ",
              weight.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0) && bias.scalar_type() == at::kFloat, op,
              ": bias must be float32 of length ", weight.size(0), ", got ", bias.sizes());
  TORCH_CHECK(padding == 0 || padding == 1, op, ": padding must be 0 (valid) or 1 (same), got ", padding);
  LayerShape s{Cin, weight.size(0), H, W, padding, pool, H + 2 * padding - 2, W + 2 * padding - 2, 0, 0};
  TORCH_CHECK(s.Ho >= 1 && s.Wo >= 1, op, ": input ", H, "x", W, " is too small for a 3x3 conv");
  TORCH_CHECK(!pool || (s.Ho >= 2 && s.Wo >= 2), op, ": conv output ", s.Ho, "x", s.Wo,
              " is too small for 2x2 max-pool");
  s.Hout = pool ? s.Ho / 2 : s.Ho;
  s.Wout = pool ? s.Wo / 2 : s.Wo;
  return s;
}

inline void check_input(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, op, ": input must be float32 N x C x H x W, got ",
              x.scalar_type(), " ", x.sizes());
}

// Shapes of a chain of conv blocks; checks each layer's input channels match.
inline std::vector<LayerShape> check_trunk(const char* op, const at::Tensor& x, at::TensorList weights,
                                           at::TensorList biases, at::IntArrayRef paddings,
                                           const c10::List<bool>& pools) {
  check_input(op, x);
  const size_t n = weights.size();
  TORCH_CHECK(n >= 1 && biases.size() == n && paddings.size() == n && pools.size() == n, op,
              ": weights, biases, paddings and pools must have one entry per layer (got ", weights.size(), ", ",
              biases.size(), ", ", paddings.size(), ", ", pools.size(), ")");
  std::vector<LayerShape> layers;
  int64_t c = x.size(1), h = x.size(2), w = x.size(3);
  for (size_t i = 0; i < n; ++i) {
    layers.push_back(check_layer(op, c, h, w, weights[i], biases[i], paddings[i], pools.get(i)));
    c = layers.back().Cout;
    h = layers.back().Hout;
    w = layers.back().Wout;
  }
  return layers;
}

}  // namespace emclassify
