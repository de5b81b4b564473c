// Output allocation shared by every op's glue (CPU and CUDA).
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <limits>

namespace emclassify {

// With EMCLASSIFY_POISON_OUTPUTS=1 every freshly allocated op output is filled
// with NaN before the kernel runs, so a test comparing against the reference
// also proves that the kernel wrote every output element. Off by default.
inline at::Tensor poison_if_asked(at::Tensor t) {
  const char* env = std::getenv("EMCLASSIFY_POISON_OUTPUTS");
  if (env != nullptr && env[0] == '1') t.fill_(std::numeric_limits<float>::quiet_NaN());
  return t;
}

}  // namespace emclassify
