// CUDA dispatcher glue of the emclassify ops: argument checks (shared with the
// CPU glue), packing, and kernel launches on the current stream. Built only
// into CUDA wheels (setup.py); the kernels are in the raw-pointer .cu files.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <vector>

#include "../conv_layer.h"
#include "../outputs.h"
#include "../preprocess_args.h"
#include "kernels.h"

namespace emclassify {
namespace {

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

at::Tensor preprocess_cuda(at::TensorList images, const c10::List<std::optional<at::Tensor>>& masks,
                           c10::string_view mode_s, int64_t size, int64_t margin, c10::string_view norm_s,
                           double mean, double std_) {
  const PreprocessArgs args = parse_preprocess_args(images, masks, mode_s, size, margin, norm_s, std_);
  const std::vector<at::Tensor>& imgs = args.images;
  const std::vector<at::Tensor>& msks = args.masks;
  const int64_t N = static_cast<int64_t>(imgs.size());
  TORCH_CHECK(N > 0, "emclassify::preprocess: no images");  // an empty list never dispatches here
  const c10::cuda::CUDAGuard guard(imgs[0].device());
  const auto opts = imgs[0].options();

  // Ragged batch -> one packed float32 pixel buffer (uint8/uint16 are exact in
  // float32), one packed uint8 mask buffer, and a descriptor per image.
  std::vector<at::Tensor> flat_pixels, flat_masks;
  std::vector<cuda::ImageDesc> descs(N);
  int64_t pixel_offset = 0, mask_offset = 0;
  for (int64_t i = 0; i < N; ++i) {
    flat_pixels.push_back(imgs[i].reshape({-1}).to(at::kFloat));
    descs[i] = {pixel_offset, -1, static_cast<int32_t>(imgs[i].size(0)), static_cast<int32_t>(imgs[i].size(1))};
    pixel_offset += imgs[i].numel();
    if (msks[i].defined()) {
      flat_masks.push_back(msks[i].reshape({-1}).to(at::kByte));
      descs[i].mask_offset = mask_offset;
      mask_offset += msks[i].numel();
    }
  }
  const at::Tensor pixels = at::cat(flat_pixels);
  const at::Tensor mask_buf = flat_masks.empty() ? at::zeros({1}, opts.dtype(at::kByte)) : at::cat(flat_masks);
  const at::Tensor desc_host = at::from_blob(descs.data(), {static_cast<int64_t>(N * sizeof(cuda::ImageDesc))},
                                             at::TensorOptions().dtype(at::kByte));
  const at::Tensor desc_dev = desc_host.to(opts.device(), /*non_blocking=*/false, /*copy=*/true);
  at::Tensor work = at::empty({N * cuda::kPreprocessWorkDoubles}, opts.dtype(at::kDouble));
  at::Tensor out = poison_if_asked(at::empty({N, 1, size, size}, opts.dtype(at::kFloat)));
  check_launch(cuda::preprocess(pixels.data_ptr<float>(), mask_buf.data_ptr<uint8_t>(),
                                reinterpret_cast<const cuda::ImageDesc*>(desc_dev.data_ptr<uint8_t>()),
                                static_cast<int>(N), static_cast<int>(args.mode), static_cast<int>(size),
                                static_cast<int>(margin), static_cast<int>(args.norm), mean, std_,
                                work.data_ptr<double>(), out.data_ptr<float>(), c10::cuda::getCurrentCUDAStream().stream()),
               "emclassify::preprocess");
  return out;
}

at::Tensor empty_nhwc(const at::Tensor& x, const LayerShape& s) {
  return poison_if_asked(at::empty({x.size(0), s.Cout, s.Hout, s.Wout}, x.options(), at::MemoryFormat::ChannelsLast));
}

// One layer: in (NHWC, contiguous) -> out (NHWC, allocated here).
at::Tensor run_layer(const at::Tensor& in, const at::Tensor& weight, const at::Tensor& bias, const LayerShape& s) {
  at::Tensor out = empty_nhwc(in, s);
  if (out.numel() == 0) return out;
  const at::Tensor w = weight.permute({2, 3, 1, 0}).contiguous();  // [kh][kw][Cin][Cout]
  const at::Tensor b = bias.contiguous();
  check_launch(cuda::conv_block(in.data_ptr<float>(), static_cast<int>(in.size(0)), static_cast<int>(s.H),
                                static_cast<int>(s.W), static_cast<int>(s.Cin), w.data_ptr<float>(),
                                b.data_ptr<float>(), static_cast<int>(s.Cout), static_cast<int>(s.pad), s.pool,
                                out.data_ptr<float>(), c10::cuda::getCurrentCUDAStream().stream()),
               "emclassify::conv_block");
  return out;
}

at::Tensor conv_block_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t padding,
                           bool pool) {
  constexpr const char* op = "emclassify::conv_block";
  check_input(op, x);
  const LayerShape s = check_layer(op, x.size(1), x.size(2), x.size(3), weight, bias, padding, pool);
  TORCH_CHECK(weight.device() == x.device() && bias.device() == x.device(), op,
              ": input, weight and bias must be on the same device");
  const c10::cuda::CUDAGuard guard(x.device());
  return run_layer(x.contiguous(at::MemoryFormat::ChannelsLast), weight, bias, s);
}

// Layer by layer: on a GPU the whole batch is one launch per layer.
at::Tensor conv_trunk_cuda(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                           at::IntArrayRef paddings, const c10::List<bool>& pools) {
  constexpr const char* op = "emclassify::conv_trunk";
  const std::vector<LayerShape> shapes = check_trunk(op, x, weights, biases, paddings, pools);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor h = x.contiguous(at::MemoryFormat::ChannelsLast);
  for (size_t i = 0; i < shapes.size(); ++i) {
    TORCH_CHECK(weights[i].device() == x.device() && biases[i].device() == x.device(), op,
                ": layer ", i, " weights are not on the input's device");
    h = run_layer(h, weights[i], biases[i], shapes[i]);
  }
  return h;
}

}  // namespace

TORCH_LIBRARY_IMPL(emclassify, CUDA, m) {
  m.impl("preprocess", &preprocess_cuda);
  m.impl("conv_block", &conv_block_cuda);
  m.impl("conv_trunk", &conv_trunk_cuda);
}

}  // namespace emclassify
