// CPU glue of emclassify::conv_block: argument checks, NHWC layout, weight
// packing, instruction-set choice, and the parallel loop over output rows.
// The arithmetic is in conv_block_kernel.h (compiled per instruction set).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "../conv_layer.h"
#include "../outputs.h"
#include "conv_block.h"
#include "train_ops.h"

namespace emclassify {
namespace {

struct Kernel {
  ConvRowsFn fn;
  int width;
  const char* name;
};

// Which vector units this CPU and its OS support: torch's own answer (cpuinfo, with the OS's
// register saving checked, and ATEN_CPU_CAPABILITY honoured), so emclassify never disagrees
// with the ATen kernels it runs beside and carries no CPUID code of its own. Torch's AVX512
// level asks for F+BW+DQ+VL, what kernels_avx512.cpp is compiled for (the conv kernel's
// intrinsics need F; the vectorised training ops use BW and DQ for 16-bit and byte lanes).
const std::string& torch_cpu_capability() {
  static const std::string capability = at::get_cpu_capability();
  return capability;
}
bool cpu_has_avx512() { return torch_cpu_capability() == "AVX512"; }
bool cpu_has_avx2() { return cpu_has_avx512() || torch_cpu_capability() == "AVX2"; }

// The widest kernel this CPU runs; EMCLASSIFY_CPU_ISA=avx512|avx2|generic asks
// for a narrower one (tests hold every variant to the reference this way).
Kernel select_kernel() {
  static const Kernel k512{&avx512::conv_rows, avx512::kWidth, "avx512"};
  static const Kernel k2{&avx2::conv_rows, avx2::kWidth, "avx2"};
  static const Kernel kgen{&generic::conv_rows, generic::kWidth, "generic"};
  const char* env = std::getenv("EMCLASSIFY_CPU_ISA");
  const std::string want = env ? env : "";
  if (!want.empty() && want != "avx512" && want != "avx2" && want != "generic")
    TORCH_CHECK(false, "EMCLASSIFY_CPU_ISA must be avx512, avx2 or generic, got '", want, "'");
  if ((want.empty() || want == "avx512") && cpu_has_avx512()) return k512;
  if ((want.empty() || want == "avx512" || want == "avx2") && cpu_has_avx2()) return k2;
  return kgen;
}

// A layer's weights packed for the kernel: [kh][kw][Cin][CoutPad] with output
// channels contiguous (a tile loads them as vectors), zero beyond Cout.
struct PackedLayer {
  LayerShape shape;
  at::Tensor w, b;
  int64_t cout_pad;

  PackedLayer(const LayerShape& s, const at::Tensor& weight, const at::Tensor& bias, int width) : shape(s) {
    cout_pad = (s.Cout + width - 1) / width * width;
    w = at::zeros({3, 3, s.Cin, cout_pad}, weight.options());
    w.narrow(3, 0, s.Cout).copy_(weight.permute({2, 3, 1, 0}));
    b = at::zeros({cout_pad}, bias.options());
    b.narrow(0, 0, s.Cout).copy_(bias);
  }

  // n unpadded NHWC images in, n NHWC images out (rows out_row_stride floats apart when > 0).
  ConvBlockArgs args(const float* in, int64_t n, float* out, int64_t out_row_stride = 0) const {
    const int64_t row = out_row_stride > 0 ? out_row_stride : shape.Wout * shape.Cout;
    return ConvBlockArgs{in,   n,    shape.H, shape.W, shape.Cin, shape.pad, w.data_ptr<float>(), b.data_ptr<float>(),
                         shape.Cout, cout_pad, shape.pool, out, shape.Hout, shape.Wout, row, shape.Hout * row};
  }
  // One image whose "same" padding is already in memory (a zero ring around
  // it): a valid conv on (H+2) x (W+2), no border special cases. out_row_stride
  // lets the output land inside the next layer's zero ring.
  ConvBlockArgs args_prepadded(const float* in, float* out, int64_t out_row_stride) const {
    return ConvBlockArgs{in,         1,        shape.H + 2 * shape.pad, shape.W + 2 * shape.pad, shape.Cin, 0,
                         w.data_ptr<float>(), b.data_ptr<float>(), shape.Cout, cout_pad, shape.pool, out,
                         shape.Hout, shape.Wout, out_row_stride, 0};
  }
  int64_t scratch_floats() const { return 2 * shape.Wo * cout_pad; }
  int64_t out_floats() const { return shape.Hout * shape.Wout * shape.Cout; }
  int64_t padded_in_floats() const { return (shape.H + 2) * (shape.W + 2) * shape.Cin; }
  int64_t padded_out_floats() const { return (shape.Hout + 2) * (shape.Wout + 2) * shape.Cout; }
};

// Zeroes the one-pixel ring around an h x w x c image stored in (h+2) x (w+2) x c.
void zero_ring(float* buf, int64_t h, int64_t w, int64_t c) {
  const int64_t row = (w + 2) * c;
  std::fill(buf, buf + row, 0.f);
  std::fill(buf + (h + 1) * row, buf + (h + 2) * row, 0.f);
  for (int64_t y = 1; y <= h; ++y) {
    std::fill(buf + y * row, buf + y * row + c, 0.f);
    std::fill(buf + y * row + (w + 1) * c, buf + (y + 1) * row, 0.f);
  }
}

// One layer over the whole batch, output rows in parallel.
void run_layer(const Kernel& kernel, const PackedLayer& layer, const float* in, int64_t n, float* out) {
  const ConvBlockArgs args = layer.args(in, n, out);
  at::parallel_for(0, n * layer.shape.Hout, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(layer.scratch_floats()));
    kernel.fn(args, begin, end, scratch.data());
  });
}

at::Tensor empty_output(const at::Tensor& x, const LayerShape& last) {
  return poison_if_asked(
      at::empty({x.size(0), last.Cout, last.Hout, last.Wout}, x.options(), at::MemoryFormat::ChannelsLast));
}

at::Tensor conv_block_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                          int64_t padding, bool pool) {
  constexpr const char* op = "emclassify::conv_block";
  check_input(op, x);
  const LayerShape shape = check_layer(op, x.size(1), x.size(2), x.size(3), weight, bias, padding, pool);
  auto out = empty_output(x, shape);
  if (out.numel() == 0) return out;
  const Kernel kernel = select_kernel();
  const at::Tensor in = x.contiguous(at::MemoryFormat::ChannelsLast);
  run_layer(kernel, PackedLayer(shape, weight, bias, kernel.width), in.data_ptr<float>(), x.size(0),
            out.data_ptr<float>());
  return out;
}

// The whole chain of conv blocks, image by image: each thread carries one image
// through every layer in two ping-pong buffers that stay in its cache, instead
// of streaming the whole batch's activations (hundreds of MB at 64x64) through
// memory once per layer. Small batches (fewer images than threads) go layer by
// layer with rows in parallel instead.
at::Tensor conv_trunk_cpu(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                          at::IntArrayRef paddings, const c10::List<bool>& pools) {
  constexpr const char* op = "emclassify::conv_trunk";
  const std::vector<LayerShape> shapes = check_trunk(op, x, weights, biases, paddings, pools);
  auto out = empty_output(x, shapes.back());
  if (out.numel() == 0) return out;
  const Kernel kernel = select_kernel();
  std::vector<PackedLayer> layers;
  int64_t act_floats = 0, scratch_floats = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    layers.emplace_back(shapes[i], weights[i], biases[i], kernel.width);
    act_floats = std::max({act_floats, layers.back().padded_in_floats(), layers.back().padded_out_floats()});
    scratch_floats = std::max(scratch_floats, layers.back().scratch_floats());
  }
  const at::Tensor in = x.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), nl = static_cast<int64_t>(layers.size());
  const int64_t in_floats = x.size(1) * x.size(2) * x.size(3), result_floats = layers.back().out_floats();
  if (N < 2 * at::get_num_threads()) {
    at::Tensor cur = in;
    for (int64_t i = 0; i < nl; ++i) {
      at::Tensor next = i == nl - 1 ? out : empty_output(x, shapes[i]);
      run_layer(kernel, layers[i], cur.data_ptr<float>(), N, next.data_ptr<float>());
      cur = next;
    }
    return out;
  }
  // Images are handed out one at a time from a shared counter rather than in
  // fixed chunks: in `emclassify batch` decoding threads share the cores, and
  // a statically split loop would wait for whichever thread they preempted.
  std::atomic<int64_t> next_image{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), N);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    std::vector<float> storage(static_cast<size_t>(2 * act_floats + scratch_floats));
    float* bufs[2] = {storage.data(), storage.data() + act_floats};
    float* scratch = storage.data() + 2 * act_floats;
    for (int64_t n = next_image++; n < N; n = next_image++) {
      // Layer i reads bufs[i % 2] (or the input) and writes bufs[(i + 1) % 2] (or the result),
      // inside a zero ring whenever the next layer pads ("same").
      const float* src = in.data_ptr<float>() + n * in_floats;
      const LayerShape& first = layers[0].shape;
      if (first.pad == 1) {
        zero_ring(bufs[0], first.H, first.W, first.Cin);
        const int64_t row = (first.W + 2) * first.Cin;
        for (int64_t y = 0; y < first.H; ++y)
          std::copy(src + y * first.W * first.Cin, src + (y + 1) * first.W * first.Cin,
                    bufs[0] + (y + 1) * row + first.Cin);
        src = bufs[0];
      }
      for (int64_t i = 0; i < nl; ++i) {
        const LayerShape& s = layers[i].shape;
        float* dst;
        int64_t row_stride = s.Wout * s.Cout;
        if (i == nl - 1) {
          dst = out.data_ptr<float>() + n * result_floats;
        } else {
          float* buf = bufs[(i + 1) % 2];
          if (layers[i + 1].shape.pad == 1) {
            zero_ring(buf, s.Hout, s.Wout, s.Cout);
            row_stride = (s.Wout + 2) * s.Cout;
            dst = buf + row_stride + s.Cout;  // interior starts one row and one pixel in
          } else {
            dst = buf;
          }
        }
        // src holds this layer's input padded when s.pad == 1 (written so by the previous step).
        const ConvBlockArgs args = s.pad == 1 ? layers[i].args_prepadded(src, dst, row_stride)
                                              : layers[i].args(src, 1, dst, row_stride);
        kernel.fn(args, 0, s.Hout, scratch);
        src = i == nl - 1 ? nullptr : bufs[(i + 1) % 2];
      }
    }
  });
  return out;
}

std::string conv_block_isa() { return select_kernel().name; }

}  // namespace

const char* cpu_kernel_isa() { return select_kernel().name; }

TORCH_LIBRARY_IMPL(emclassify, CPU, m) {
  m.impl("conv_block", &conv_block_cpu);
  m.impl("conv_trunk", &conv_trunk_cpu);
}

TORCH_LIBRARY_FRAGMENT(emclassify, m) {
  // Which CPU kernel conv_block uses here: "avx512", "avx2" or "generic".
  m.def("conv_block_isa() -> str", &conv_block_isa);
}

}  // namespace emclassify
