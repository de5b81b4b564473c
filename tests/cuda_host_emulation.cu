// Host emulation of the CUDA kernels, for tests/test_cuda_host_emulation.py.
//
// The kernels' per-thread work is __host__ __device__ (csrc/cuda/*.cu); this
// file runs every "thread" of a launch one after another on the CPU, so the
// indexing, padding, pooling, statistics and filter arithmetic of the GPU code
// are checked against the pure-PyTorch references on machines without a GPU.
// Not part of the extension. Build: nvcc -shared -Xcompiler -fPIC -o lib.so this.cu
#include <vector>

#include "../csrc/cuda/conv_block.cu"
#include "../csrc/cuda/preprocess.cu"

namespace emclassify {
namespace cuda {
namespace {

// One thread that saw every element: nothing to combine.
struct SingleThread {
  long long min(long long v) const { return v; }
  long long max(long long v) const { return v; }
  double min(double v) const { return v; }
  double max(double v) const { return v; }
  double sum(double v) const { return v; }
};

}  // namespace
}  // namespace cuda
}  // namespace emclassify

extern "C" {

// conv_block's launch grid, thread by thread. in: NHWC; weight: [3][3][Cin][Cout]; out: NHWC.
void emc_host_conv_block(const float* in, int N, int H, int W, int Cin, const float* weight, const float* bias,
                         int Cout, int pad, int pool, float* out) {
  using namespace emclassify::cuda;
  const int Ho = H + 2 * pad - 2, Wo = W + 2 * pad - 2;
  const int Hout = pool ? Ho / 2 : Ho, Wout = pool ? Wo / 2 : Wo;
  const long long groups = static_cast<long long>(N) * Hout * ((Wout + kPixels - 1) / kPixels);
  const long long all_groups = (groups + kRows - 1) / kRows * kRows;  // whole blocks, as launched
  const int lanes = (Cout + kLanes - 1) / kLanes * kLanes;
  for (int co = 0; co < lanes; ++co)
    for (long long g = 0; g < all_groups; ++g) {
      if (pool)
        conv_block_thread<true>(in, N, H, W, Cin, weight, bias, Cout, pad, Hout, Wout, out, co, g);
      else
        conv_block_thread<false>(in, N, H, W, Cin, weight, bias, Cout, pad, Hout, Wout, out, co, g);
    }
}

// preprocess: the statistics "kernel" as one thread per image, then every output pixel.
void emc_host_preprocess(const float* pixels, const uint8_t* masks, const emclassify::cuda::ImageDesc* descs, int n,
                         int mode, int size, int margin, int normalization, double mean, double std_, float* out) {
  using namespace emclassify::cuda;
  std::vector<double> work(static_cast<size_t>(n) * kPreprocessWorkDoubles);
  for (int b = 0; b < n; ++b)
    region_stats(0, 1, SingleThread{}, pixels, masks, descs[b], mode, size, margin, normalization, mean, std_,
                 work.data() + static_cast<size_t>(b) * kPreprocessWorkDoubles);
  for (int b = 0; b < n; ++b)
    for (int oy = 0; oy < size; ++oy)
      for (int ox = 0; ox < size; ++ox)
        out[(static_cast<long long>(b) * size + oy) * size + ox] =
            resize_pixel(pixels, masks, descs[b], work.data() + static_cast<size_t>(b) * kPreprocessWorkDoubles, oy, ox);
}

}  // extern "C"
