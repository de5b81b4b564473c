// Body of the fused conv-block kernel, written once over a vector type `Vec`.
//
// Included by conv_block_<isa>.cpp inside `namespace emclassify::<isa>` after
// defining `struct Vec` (reg, kWidth, kRegs, load/store/set1/fma/max/zero).
// Only this header's own code may follow the ISA target pragma: no std or ATen
// templates are instantiated here, so no inline function compiled for a wider
// ISA can leak into code that runs on a narrower CPU.
//
// Algorithm (direct convolution, no im2col, no padded copy): an output tile is R consecutive
// pixels of one row x NV vectors of output channels held in registers. For each
// kernel row kh, the 3*Cin inputs a pixel needs are contiguous in NHWC and the
// next pixel's start Cin floats later, so the tile streams 3*Cin packed weight
// rows (NV vector loads each) and broadcasts one input per pixel: R*NV FMAs per
// NV loads + R broadcasts, the register-blocked GEMM micro-kernel shape.
// "Same" padding never materialises here: border rows skip the kernel rows
// outside the image and border columns run one-pixel tiles over their valid
// taps. (conv_trunk avoids even that: it keeps activations inside a zero ring
// and runs every layer as a "valid" conv, see conv_block_cpu.cpp.)

constexpr int kMaxTile = 12;

constexpr int tile_pixels(int nv) {
  // Accumulators R*NV plus NV weight registers plus one broadcast must fit.
  return (Vec::kRegs - nv - 1) / nv < kMaxTile ? (Vec::kRegs - nv - 1) / nv : kMaxTile;
}

// Computes R pixels x NV vectors of one output row (bias + ReLU applied), over
// kernel rows [kh0, kh1) and, within a kernel row, the 3*Cin taps [j0, j1)
// (fewer at the image border, where "same" padding would read zeros).
// a: input element of pixel 0 at (kh0, j0); row_stride: floats between input
// rows; w, bias: at the channel group's start; dst: output pixel 0 of the tile
// at the group's start; dst_stride: floats per output pixel.
template <int NV, int R>
static inline void conv_tile(const float* a, int64_t row_stride, int64_t cin, int kh0, int kh1, int64_t j0,
                             int64_t j1, const float* w, int64_t cout_pad, const float* bias, float* dst,
                             int64_t dst_stride) {
  typename Vec::reg acc[R][NV];
  for (int v = 0; v < NV; ++v) {
    const typename Vec::reg b = Vec::load(bias + v * Vec::kWidth);
    for (int r = 0; r < R; ++r) acc[r][v] = b;
  }
  const int64_t k3 = 3 * cin, nj = j1 - j0;
  for (int kh = kh0; kh < kh1; ++kh) {
    const float* ar = a + (kh - kh0) * row_stride;
    const float* wr = w + (kh * k3 + j0) * cout_pad;
    for (int64_t j = 0; j < nj; ++j) {
      typename Vec::reg wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = Vec::load(wr + j * cout_pad + v * Vec::kWidth);
      for (int r = 0; r < R; ++r) {
        const typename Vec::reg s = Vec::set1(ar[r * cin + j]);
        for (int v = 0; v < NV; ++v) acc[r][v] = Vec::fma(s, wv[v], acc[r][v]);
      }
    }
  }
  const typename Vec::reg zero = Vec::zero();
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) Vec::store(dst + r * dst_stride + v * Vec::kWidth, Vec::max(acc[r][v], zero));
}

// A tile of r < R pixels, r known only at run time: picks conv_tile<NV, r>.
template <int NV, int R>
static inline void conv_tail(int r, const float* a, int64_t row_stride, int64_t cin, int kh0, int kh1, int64_t k3,
                             const float* w, int64_t cout_pad, const float* bias, float* dst, int64_t dst_stride) {
  if constexpr (R >= 1) {
    if (r == R)
      conv_tile<NV, R>(a, row_stride, cin, kh0, kh1, 0, k3, w, cout_pad, bias, dst, dst_stride);
    else
      conv_tail<NV, R - 1>(r, a, row_stride, cin, kh0, kh1, k3, w, cout_pad, bias, dst, dst_stride);
  }
}

// One output channel group of NV vectors over conv output row y of one image.
// in: the image (H x W x Cin); pad: 1 ("same") or 0 ("valid").
template <int NV>
static void conv_row_group(const float* in, int64_t h, int64_t wi, int64_t cin, int64_t pad, int64_t y,
                           const float* w, int64_t cout_pad, const float* bias, float* dst, int64_t dst_stride) {
  constexpr int R = tile_pixels(NV);
  const int64_t wo = wi + 2 * pad - 2, row_stride = wi * cin;
  const int kh0 = static_cast<int>(pad > y ? pad - y : 0);
  const int kh1 = static_cast<int>(h + pad - y < 3 ? h + pad - y : 3);
  const float* row = in + (y + kh0 - pad) * row_stride;  // first input row used
  // Output columns whose 3 taps are all inside the image: [pad, wo - pad).
  const int64_t x_lo = pad < wo ? pad : wo, x_hi = wo - pad > x_lo ? wo - pad : x_lo;
  for (int64_t x = 0; x < wo; ++x) {  // border columns: fewer taps, one pixel each
    if (x == x_lo) x = x_hi;
    if (x >= wo) break;
    const int64_t kw0 = pad > x ? pad - x : 0;
    const int64_t kw1 = wi + pad - x < 3 ? wi + pad - x : 3;
    conv_tile<NV, 1>(row + (x + kw0 - pad) * cin, row_stride, cin, kh0, kh1, kw0 * cin, kw1 * cin, w, cout_pad,
                     bias, dst + x * dst_stride, dst_stride);
  }
  const int64_t n = x_hi - x_lo, k3 = 3 * cin;
  const float* a = row + (x_lo - pad) * cin;
  float* d = dst + x_lo * dst_stride;
  int64_t x = 0;
  for (; x + R <= n; x += R)
    conv_tile<NV, R>(a + x * cin, row_stride, cin, kh0, kh1, 0, k3, w, cout_pad, bias, d + x * dst_stride,
                     dst_stride);
  if (x < n)  // the rest of the row in one narrower tile
    conv_tail<NV, R - 1>(static_cast<int>(n - x), a + x * cin, row_stride, cin, kh0, kh1, k3, w, cout_pad, bias,
                         d + x * dst_stride, dst_stride);
}

constexpr int kMaxGroup = Vec::kMaxGroup;

// Conv row y of image n (all channels) into dst (pixel stride dst_stride floats).
static void conv_row(const ConvBlockArgs& p, int64_t n, int64_t y, float* dst, int64_t dst_stride) {
  const float* in = p.in + n * p.H * p.W * p.Cin;
  const int64_t nvec = p.CoutPad / Vec::kWidth;
  for (int64_t v0 = 0; v0 < nvec; v0 += kMaxGroup) {
    const int64_t nv = nvec - v0 < kMaxGroup ? nvec - v0 : kMaxGroup;
    const int64_t c0 = v0 * Vec::kWidth;
    const float* w = p.w + c0;
    const float* b = p.bias + c0;
    float* d = dst + c0;
    switch (nv) {
      case 1: conv_row_group<1>(in, p.H, p.W, p.Cin, p.pad, y, w, p.CoutPad, b, d, dst_stride); break;
      case 2: conv_row_group<2>(in, p.H, p.W, p.Cin, p.pad, y, w, p.CoutPad, b, d, dst_stride); break;
      case 3:
        conv_row_group<(kMaxGroup >= 3 ? 3 : 1)>(in, p.H, p.W, p.Cin, p.pad, y, w, p.CoutPad, b, d, dst_stride);
        break;
      default: conv_row_group<kMaxGroup>(in, p.H, p.W, p.Cin, p.pad, y, w, p.CoutPad, b, d, dst_stride); break;
    }
  }
}

void conv_rows(const ConvBlockArgs& p, int64_t row_begin, int64_t row_end, float* scratch) {
  const int64_t wo = p.W + 2 * p.pad - 2;
  const bool direct = !p.pool && p.CoutPad == p.Cout;  // write straight into the output
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / p.Hout, oy = row % p.Hout;
    float* out_row = p.out + n * p.out_image_stride + oy * p.out_row_stride;
    if (direct) {
      conv_row(p, n, oy, out_row, p.Cout);
    } else if (!p.pool) {
      conv_row(p, n, oy, scratch, p.CoutPad);
      for (int64_t x = 0; x < p.Wout; ++x)
        for (int64_t c = 0; c < p.Cout; ++c) out_row[x * p.Cout + c] = scratch[x * p.CoutPad + c];
    } else {
      float* r0 = scratch;
      float* r1 = scratch + wo * p.CoutPad;
      conv_row(p, n, 2 * oy, r0, p.CoutPad);
      conv_row(p, n, 2 * oy + 1, r1, p.CoutPad);
      for (int64_t x = 0; x < p.Wout; ++x) {
        const float* q0 = r0 + 2 * x * p.CoutPad;
        const float* q1 = r1 + 2 * x * p.CoutPad;
        float* o = out_row + x * p.Cout;
        int64_t c = 0;
        if (p.Cout == p.CoutPad) {
          for (; c < p.Cout; c += Vec::kWidth) {
            typename Vec::reg m = Vec::max(Vec::max(Vec::load(q0 + c), Vec::load(q0 + p.CoutPad + c)),
                                           Vec::max(Vec::load(q1 + c), Vec::load(q1 + p.CoutPad + c)));
            Vec::store(o + c, m);
          }
        }
        for (; c < p.Cout; ++c) {
          const float m0 = q0[c] > q0[p.CoutPad + c] ? q0[c] : q0[p.CoutPad + c];
          const float m1 = q1[c] > q1[p.CoutPad + c] ? q1[c] : q1[p.CoutPad + c];
          o[c] = m0 > m1 ? m0 : m1;
        }
      }
    }
  }
}
