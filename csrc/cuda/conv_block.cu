// CUDA kernel of emclassify::conv_block (see kernels.h for the interface).
//
// Direct 3x3 convolution on NHWC activations with batch-norm folded into the
// weights, bias, ReLU and optional 2x2 max-pool, each output element written
// once. A warp covers 32 output channels of the same pixels: the input value
// of a tap is the same address for the whole warp (one broadcast load) and the
// weights of consecutive channels are consecutive ([kh][kw][Cin][Cout]), so
// weight loads coalesce. Each thread keeps kPixels output pixels of one row in
// registers (4 conv positions each when pooling), reusing every weight it
// loads kPixels (x4) times.
#include "kernels.h"

namespace emclassify {
namespace cuda {
namespace {

constexpr int kLanes = 32;   // output channels per block (x)
constexpr int kRows = 8;     // pixel groups per block (y)
constexpr int kPixels = 4;   // output pixels per thread, consecutive in a row

// The work of one CUDA thread: output channel `co` of the kPixels output pixels
// of pixel group `group`. __host__ too, so tests can run every "thread" on the
// CPU against the reference (csrc/cuda/host_emulation.cu).
template <bool Pool>
__host__ __device__ inline void conv_block_thread(const float* __restrict__ in, int N, int H, int W, int Cin,
                                                  const float* __restrict__ weight, const float* __restrict__ bias,
                                                  int Cout, int pad, int Hout, int Wout, float* __restrict__ out,
                                                  int co, long long group) {
  constexpr int kSide = Pool ? 2 : 1;           // conv positions per output pixel along each axis
  constexpr int kCols = kPixels * kSide;        // conv columns per thread
  const long long groups_per_row = (Wout + kPixels - 1) / kPixels;
  if (group >= static_cast<long long>(N) * Hout * groups_per_row) return;
  const int n = static_cast<int>(group / (Hout * groups_per_row));
  const int oy = static_cast<int>((group / groups_per_row) % Hout);
  const int ox0 = static_cast<int>(group % groups_per_row) * kPixels;
  const bool active = co < Cout;  // idle lanes still walk the loops: keeps the warp's loads uniform

  float acc[kSide][kCols];
  const float b = active ? bias[co] : 0.f;
  for (int r = 0; r < kSide; ++r)
    for (int c = 0; c < kCols; ++c) acc[r][c] = b;

  const int y_base = oy * kSide - pad, x_base = ox0 * kSide - pad;
  const float* img = in + static_cast<long long>(n) * H * W * Cin;
  for (int kh = 0; kh < 3; ++kh) {
    for (int kw = 0; kw < 3; ++kw) {
      const float* wk = weight + (static_cast<long long>(kh * 3 + kw) * Cin) * Cout + (active ? co : 0);
      for (int ci = 0; ci < Cin; ++ci) {
        const float wv = wk[static_cast<long long>(ci) * Cout];
        for (int r = 0; r < kSide; ++r) {
          const int y = y_base + r + kh;
          if (y < 0 || y >= H) continue;
          const float* row = img + static_cast<long long>(y) * W * Cin + ci;
          for (int c = 0; c < kCols; ++c) {
            const int x = x_base + c + kw;
            if (x >= 0 && x < W) acc[r][c] += wv * row[static_cast<long long>(x) * Cin];
          }
        }
      }
    }
  }
  if (!active) return;
  for (int p = 0; p < kPixels; ++p) {
    const int ox = ox0 + p;
    if (ox >= Wout) break;
    float m = acc[0][p * kSide];
    for (int r = 0; r < kSide; ++r)
      for (int c = 0; c < kSide; ++c) m = fmaxf(m, acc[r][p * kSide + c]);
    out[((static_cast<long long>(n) * Hout + oy) * Wout + ox) * Cout + co] = fmaxf(m, 0.f);  // ReLU
  }
}

template <bool Pool>
__global__ void conv_block_kernel(const float* __restrict__ in, int N, int H, int W, int Cin,
                                  const float* __restrict__ weight, const float* __restrict__ bias, int Cout,
                                  int pad, int Hout, int Wout, float* __restrict__ out) {
  conv_block_thread<Pool>(in, N, H, W, Cin, weight, bias, Cout, pad, Hout, Wout, out,
                          static_cast<int>(blockIdx.y * kLanes + threadIdx.x),
                          static_cast<long long>(blockIdx.x) * kRows + threadIdx.y);
}

}  // namespace

cudaError_t conv_block(const float* in, int N, int H, int W, int Cin, const float* weight, const float* bias,
                       int Cout, int pad, bool pool, float* out, cudaStream_t stream) {
  const int Ho = H + 2 * pad - 2, Wo = W + 2 * pad - 2;
  const int Hout = pool ? Ho / 2 : Ho, Wout = pool ? Wo / 2 : Wo;
  if (N == 0 || Cout == 0 || Hout <= 0 || Wout <= 0) return cudaSuccess;
  const long long groups = static_cast<long long>(N) * Hout * ((Wout + kPixels - 1) / kPixels);
  const dim3 block(kLanes, kRows);
  const dim3 grid(static_cast<unsigned>((groups + kRows - 1) / kRows), static_cast<unsigned>((Cout + kLanes - 1) / kLanes));
  if (pool)
    conv_block_kernel<true><<<grid, block, 0, stream>>>(in, N, H, W, Cin, weight, bias, Cout, pad, Hout, Wout, out);
  else
    conv_block_kernel<false><<<grid, block, 0, stream>>>(in, N, H, W, Cin, weight, bias, Cout, pad, Hout, Wout, out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace emclassify
