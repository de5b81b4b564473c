// The training-op kernels (see train_ops.h), written as plain loops over the channels of a row so
// the compiler vectorises them for the instruction set of the file that includes this header
// (inside namespace emclassify::<isa>, after its target pragma). Nothing here includes a header:
// code from one included inside the target region would be compiled for that ISA alone;
// std::bit_cast comes from train_ops.h, included before it (and inlines into every ISA).

static inline float load(float v) { return v; }
static inline float load(uint16_t v) { return std::bit_cast<float>(static_cast<uint32_t>(v) << 16); }
static inline void store(float* p, float v) { *p = v; }
// float -> the float32 bits of its bf16 rounding (low 16 bits zero): round to nearest even, as
// c10::BFloat16 does; NaN stays a (quiet) NaN
static inline uint32_t bf16_rounded_bits(float v) {
  const uint32_t u = std::bit_cast<uint32_t>(v);
  const uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  return ((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC00000u : rounded) & 0xFFFF0000u;
}
static inline void store(uint16_t* p, float v) { *p = static_cast<uint16_t>(bf16_rounded_bits(v) >> 16); }

static inline float fmaxf0(float v) { return v > 0.f ? v : 0.f; }

template <typename T>
static void sum(const T* __restrict x, int64_t rows, int64_t C, float* __restrict acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict row = x + r * C;
EMCLASSIFY_SIMD
    for (int64_t c = 0; c < C; ++c) acc[c] += load(row[c]);
  }
}

template <typename T>
static void sum_sq_dev(const T* __restrict x, int64_t rows, int64_t C, const float* __restrict mean,
                       float* __restrict acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict row = x + r * C;
EMCLASSIFY_SIMD
    for (int64_t c = 0; c < C; ++c) {
      const float d = load(row[c]) - mean[c];
      acc[c] += d * d;
    }
  }
}

template <typename T>
static void scale_shift_relu(const T* __restrict x, int64_t rows, int64_t C, const float* __restrict scale,
                             const float* __restrict shift, T* __restrict y) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict row = x + r * C;
    T* __restrict out = y + r * C;
EMCLASSIFY_SIMD
    for (int64_t c = 0; c < C; ++c) {
      const float v = load(row[c]) * scale[c] + shift[c];
      store(out + c, fmaxf0(v));
    }
  }
}

template <typename T>
static void backward_sums(const T* __restrict x, const T* __restrict gy, int64_t rows, int64_t C,
                          const float* __restrict mean, const float* __restrict invstd, const float* __restrict g,
                          const float* __restrict b, float* __restrict s_dz, float* __restrict s_dzx) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict row = x + r * C;
    const T* __restrict grow = gy + r * C;
EMCLASSIFY_SIMD
    for (int64_t c = 0; c < C; ++c) {
      const float xh = (load(row[c]) - mean[c]) * invstd[c];
      const float grad = load(grow[c]);  // loaded unconditionally: a conditional load blocks vectorising
      const float dz = xh * g[c] + b[c] > 0.f ? grad : 0.f;
      s_dz[c] += dz;
      s_dzx[c] += dz * xh;
    }
  }
}

template <typename T>
static void backward_apply(const T* __restrict x, const T* __restrict gy, int64_t rows, int64_t C,
                           const float* __restrict mean, const float* __restrict invstd, const float* __restrict g,
                           const float* __restrict b, const float* __restrict k, const float* __restrict mean_dz,
                           const float* __restrict mean_dzx, T* __restrict gx) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict row = x + r * C;
    const T* __restrict grow = gy + r * C;
    T* __restrict out = gx + r * C;
EMCLASSIFY_SIMD
    for (int64_t c = 0; c < C; ++c) {
      const float xh = (load(row[c]) - mean[c]) * invstd[c];
      const float grad = load(grow[c]);
      const float dz = xh * g[c] + b[c] > 0.f ? grad : 0.f;
      store(out + c, k[c] * (dz - mean_dz[c] - xh * mean_dzx[c]));
    }
  }
}

// The value a stored activation reads back as: float as is, bf16 rounded (the max-pool compares
// what a separate ReLU would have stored).
static inline float as_stored(float v, float) { return v; }
static inline float as_stored(float v, uint16_t) { return std::bit_cast<float>(bf16_rounded_bits(v)); }

// One pooled output row: rows r0 and r1 of x (W * C each, channels-last), 2x2 windows ->
// y (Wo * C) = max of max(0, x * scale + shift), and idx (Wo * C) = which window element held the
// first maximum (0..3, row-major, as ATen's max-pool picks it), or 4 where the maximum is 0: no
// gradient flows back through the ReLU there.
template <typename T>
static void scale_shift_relu_pool(const T* __restrict r0, const T* __restrict r1, int64_t Wo, int64_t C,
                                  const float* __restrict scale, const float* __restrict shift, T* __restrict y,
                                  uint8_t* __restrict idx) {
  for (int64_t ow = 0; ow < Wo; ++ow) {
    const T* __restrict a = r0 + 2 * ow * C;
    const T* __restrict b = a + C;
    const T* __restrict c2 = r1 + 2 * ow * C;
    const T* __restrict d = c2 + C;
    T* __restrict out = y + ow * C;
    uint8_t* __restrict which = idx + ow * C;
EMCLASSIFY_SIMD
    for (int64_t c = 0; c < C; ++c) {
      const float v0 = as_stored(fmaxf0(load(a[c]) * scale[c] + shift[c]), T{});
      const float v1 = as_stored(fmaxf0(load(b[c]) * scale[c] + shift[c]), T{});
      const float v2 = as_stored(fmaxf0(load(c2[c]) * scale[c] + shift[c]), T{});
      const float v3 = as_stored(fmaxf0(load(d[c]) * scale[c] + shift[c]), T{});
      const float m01 = v1 > v0 ? v1 : v0, m23 = v3 > v2 ? v3 : v2;
      const float m = m23 > m01 ? m23 : m01;
      // the first element equal to the maximum, in integer arithmetic (selects chained on the
      // running maximum do not vectorise); 4 where the maximum is 0
      const int32_t n0 = v0 != m, n1 = v1 != m, n2 = v2 != m, zero = !(m > 0.f);
      const int32_t k = n0 * (1 + n1 * (1 + n2));
      store(out + c, m);
      which[c] = static_cast<uint8_t>(k + zero * (4 - k));
    }
  }
}

// The pooled block's backward over one full-resolution row (W pixels) of x, at row parity kh:
// dz = grad of the window's output where this pixel is the recorded maximum (idx), else 0.
// gp / idx: the pooled row's gradient and maxima (Wo * C), or null where the row lies past the
// last whole window (an odd height); pixels past the last whole window in w get dz = 0 too.
template <typename T>
static void pool_backward_sums(const T* __restrict x, const T* __restrict gp, const uint8_t* __restrict idx,
                               int64_t W, int64_t Wo, int64_t C, int kh, const float* __restrict mean,
                               const float* __restrict invstd, float* __restrict s_dz, float* __restrict s_dzx) {
  if (gp == nullptr) return;  // dz = 0 on the whole row: nothing to add
  for (int64_t w = 0; w < 2 * Wo; ++w) {
    const T* __restrict row = x + w * C;
    const T* __restrict grow = gp + (w / 2) * C;
    const uint8_t* __restrict which = idx + (w / 2) * C;
    const uint8_t k = static_cast<uint8_t>(kh * 2 + (w & 1));
EMCLASSIFY_SIMD
    for (int64_t c = 0; c < C; ++c) {
      const float xh = (load(row[c]) - mean[c]) * invstd[c];
      const float grad = load(grow[c]);
      const float dz = which[c] == k ? grad : 0.f;
      s_dz[c] += dz;
      s_dzx[c] += dz * xh;
    }
  }
}

template <typename T>
static void pool_backward_apply(const T* __restrict x, const T* __restrict gp, const uint8_t* __restrict idx,
                                int64_t W, int64_t Wo, int64_t C, int kh, const float* __restrict mean,
                                const float* __restrict invstd, const float* __restrict k,
                                const float* __restrict mean_dz, const float* __restrict mean_dzx,
                                T* __restrict gx) {
  const int64_t covered = gp == nullptr ? 0 : 2 * Wo;
  for (int64_t w = 0; w < covered; ++w) {
    const T* __restrict row = x + w * C;
    const T* __restrict grow = gp + (w / 2) * C;
    const uint8_t* __restrict which = idx + (w / 2) * C;
    const uint8_t kk = static_cast<uint8_t>(kh * 2 + (w & 1));
    T* __restrict out = gx + w * C;
EMCLASSIFY_SIMD
    for (int64_t c = 0; c < C; ++c) {
      const float xh = (load(row[c]) - mean[c]) * invstd[c];
      const float grad = load(grow[c]);
      const float dz = which[c] == kk ? grad : 0.f;
      store(out + c, k[c] * (dz - mean_dz[c] - xh * mean_dzx[c]));
    }
  }
  for (int64_t w = covered; w < W; ++w) {
    const T* __restrict row = x + w * C;
    T* __restrict out = gx + w * C;
EMCLASSIFY_SIMD
    for (int64_t c = 0; c < C; ++c) {
      const float xh = (load(row[c]) - mean[c]) * invstd[c];
      store(out + c, k[c] * (-mean_dz[c] - xh * mean_dzx[c]));
    }
  }
}

// Wellons' "lowbias32" integer hash: 32-bit multiplies, so it vectorises on every x86 level.
static inline uint32_t hash32(uint32_t v) {
  v ^= v >> 16;
  v *= 0x7FEB352Du;
  v ^= v >> 15;
  v *= 0x846CA68Bu;
  v ^= v >> 16;
  return v;
}

template <typename T>
static void dropout(const T* __restrict x, int64_t n, uint32_t first, uint32_t key0, uint32_t key1,
                    uint32_t threshold, float scale, T* __restrict y, uint8_t* __restrict mask) {
EMCLASSIFY_SIMD
  for (int64_t i = 0; i < n; ++i) {
    // two rounds keyed by the seed's two halves: one round leaves neighbouring indices correlated
    const uint32_t h = hash32(hash32((first + static_cast<uint32_t>(i)) ^ key0) + key1);
    // keep = h < threshold on 31 bits, as the sign of a difference: branch- and select-free, so it
    // vectorises without AVX-512's mask registers. As in ATen, a dropped NaN or inf stays NaN (x * 0).
    const int32_t keep = static_cast<int32_t>(((static_cast<int32_t>(h >> 1) - static_cast<int32_t>(threshold >> 1))
                                               >> 31) & 1);
    mask[i] = static_cast<uint8_t>(keep);  // a bool tensor's bytes: 0 or 1
    store(y + i, load(x[i]) * scale * static_cast<float>(keep));
  }
}

// One pass instead of ATen's native_dropout_backward (mask to the gradient's dtype, then two
// multiplies: three passes over the activation).
template <typename T>
static void dropout_backward(const T* __restrict gy, const uint8_t* __restrict mask, int64_t n, float scale,
                             T* __restrict gx) {
EMCLASSIFY_SIMD
  for (int64_t i = 0; i < n; ++i) store(gx + i, load(gy[i]) * (scale * static_cast<float>(mask[i])));
}

template <typename T>
static constexpr TrainKernelsOf<T> kernels_of() {
  return TrainKernelsOf<T>{&sum<T>,
                           &sum_sq_dev<T>,
                           &scale_shift_relu<T>,
                           &backward_sums<T>,
                           &backward_apply<T>,
                           &scale_shift_relu_pool<T>,
                           &pool_backward_sums<T>,
                           &pool_backward_apply<T>,
                           &dropout<T>,
                           &dropout_backward<T>};
}

const TrainKernels& train_kernels() {
  static const TrainKernels k{kernels_of<float>(), kernels_of<uint16_t>()};
  return k;
}
