// Arguments of emclassify::preprocess: parsing and checks shared by the CPU
// and CUDA glue, so both devices accept and reject exactly the same inputs.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "preprocess_modes.h"

namespace emclassify {

inline Mode parse_mode(const std::string& s) {
  if (s == "surround") return Mode::Surround;
  if (s == "crop") return Mode::Crop;
  if (s == "mask") return Mode::Mask;
  TORCH_CHECK(false, "emclassify::preprocess: unknown mode '", s, "'");
}

inline Norm parse_norm(const std::string& s) {
  if (s == "zscore") return Norm::ZScore;
  if (s == "minmax") return Norm::MinMax;
  if (s == "fixed") return Norm::Fixed;
  TORCH_CHECK(false, "emclassify::preprocess: unknown normalisation '", s, "'");
}

// The op's arguments, parsed and checked: images contiguous, masks contiguous
// bool on the image's device (undefined where an image has no mask).
struct PreprocessArgs {
  Mode mode;
  Norm norm;
  std::vector<at::Tensor> images, masks;
};

inline PreprocessArgs parse_preprocess_args(at::TensorList images,
                                            const c10::List<std::optional<at::Tensor>>& masks,
                                            c10::string_view mode, int64_t size, int64_t margin,
                                            c10::string_view norm, double std_) {
  PreprocessArgs a{parse_mode(std::string(mode)), parse_norm(std::string(norm)), {}, {}};
  const int64_t N = static_cast<int64_t>(images.size());
  TORCH_CHECK(size >= 1, "emclassify::preprocess: size must be >= 1");
  TORCH_CHECK(margin >= 0, "emclassify::preprocess: margin must be >= 0");
  TORCH_CHECK(a.norm != Norm::Fixed || std_ > 0.0, "emclassify::preprocess: fixed std must be > 0");
  TORCH_CHECK(masks.size() == 0 || static_cast<int64_t>(masks.size()) == N,
              "emclassify::preprocess: got ", N, " images but ", masks.size(), " masks");
  a.images.assign(N, at::Tensor());
  a.masks.assign(N, at::Tensor());
  for (int64_t i = 0; i < N; ++i) {
    const at::Tensor& t = images[i];
    TORCH_CHECK(t.dim() == 2 && t.numel() > 0, "emclassify::preprocess: image ", i,
                " must be a non-empty 2-D tensor, got shape ", t.sizes());
    TORCH_CHECK(t.scalar_type() == at::kByte || t.scalar_type() == at::kUInt16 || t.scalar_type() == at::kFloat,
                "emclassify::preprocess: image ", i, " has dtype ", t.scalar_type(),
                "; expected uint8, uint16 or float32");
    TORCH_CHECK(t.device() == images[0].device(), "emclassify::preprocess: image ", i, " is on ", t.device(),
                " but image 0 is on ", images[0].device());
    a.images[i] = t.contiguous();
    if (masks.size() > 0) {
      const std::optional<at::Tensor> m = masks.get(i);
      if (m.has_value() && m->defined()) {
        TORCH_CHECK(m->sizes() == t.sizes(), "emclassify::preprocess: mask ", i, " has shape ", m->sizes(),
                    " but its image has ", t.sizes());
        a.masks[i] = m->to(t.device(), at::kBool).contiguous();
      }
    }
  }
  return a;
}

}  // namespace emclassify
