// CPU kernels of CARAFE.
//
// Every kernel is a gather: each parallel task owns a disjoint set of output rows, accumulates
// them in a float (or double) buffer and writes them once. No atomics, so the backward is
// bitwise repeatable for any number of threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "carafe/carafe.h"

namespace freqfusion_d2 {
namespace {

struct Geometry {
  int64_t N, C, H, W, k, G, s;
  int64_t Ho, Wo, r, kk, Cg;
  Geometry(const at::Tensor& features, int64_t k_, int64_t G_, int64_t s_)
      : N(features.size(0)), C(features.size(1)), H(features.size(2)), W(features.size(3)),
        k(k_), G(G_), s(s_) {
    Ho = H * s;
    Wo = W * s;
    r = (k - 1) / 2;
    kk = k * k;
    Cg = C / G;
  }
};

// A feature row, zero-padded by r on both sides and repeated s times per pixel
// (expand_features does this once for the whole tensor):
// padded[p] = F[row][p / s - r] (0 outside the map), p in [0, (W + 2r) * s). The tap at column
// offset j - r of output column x then reads padded[x + j * s], so every inner loop below is a
// contiguous multiply-add over the output columns with no bounds checks.
template <typename acc_t, typename scalar_t>
inline void expand_row(acc_t* __restrict__ padded, const scalar_t* __restrict__ frow, int64_t W,
                       int64_t r, int64_t s) {
  std::fill(padded, padded + r * s, acc_t(0));
  std::fill(padded + (W + r) * s, padded + (W + 2 * r) * s, acc_t(0));
  acc_t* middle = padded + r * s;
  if (s == 1) {
    for (int64_t v = 0; v < W; ++v) {
      middle[v] = static_cast<acc_t>(frow[v]);
    }
    return;
  }
  for (int64_t v = 0; v < W; ++v) {
    const acc_t value = static_cast<acc_t>(frow[v]);
    for (int64_t t = 0; t < s; ++t) {
      middle[v * s + t] = value;
    }
  }
}

// Every (n, c, row) of the features expanded once, in the accumulation type: (N*C*H, Wp).
template <typename scalar_t>
at::Tensor expand_features(const Geometry& d, const scalar_t* F) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Wp = (d.W + 2 * d.r) * d.s;
  at::Tensor padded = at::empty({d.N * d.C * d.H, Wp},
                                at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value));
  acc_t* out = padded.mutable_data_ptr<acc_t>();
  at::parallel_for(0, d.N * d.C * d.H, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      expand_row(out + row * Wp, F + row * d.W, d.W, d.r, d.s);
    }
  });
  return padded;
}

// The two inner loops below are compiled twice on x86: for the baseline instruction set and
// for AVX2 (chosen at run time), since extensions are built without -march flags. Without
// floating-point contraction (ISO C++ mode) both give bitwise identical results.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FREQFUSION_AVX2_CLONES 1
#define FREQFUSION_TARGET_AVX2 __attribute__((target("avx2,fma")))
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

// dst[x] += a[x] * b[x] for x in [0, n).
#define FREQFUSION_FMA_ROW(NAME, TARGET)                                                         \
  template <typename acc_t>                                                                     \
  TARGET void NAME(acc_t* __restrict__ dst, const acc_t* __restrict__ a,                       \
                   const acc_t* __restrict__ b, int64_t n) {                                    \
    for (int64_t x = 0; x < n; ++x) {                                                           \
      dst[x] += a[x] * b[x];                                                                    \
    }                                                                                           \
  }
FREQFUSION_FMA_ROW(fma_row_default, )
#ifdef FREQFUSION_AVX2_CLONES
FREQFUSION_FMA_ROW(fma_row_avx2, FREQFUSION_TARGET_AVX2)
#endif

template <typename acc_t>
inline void fma_row(acc_t* dst, const acc_t* a, const acc_t* b, int64_t n) {
#ifdef FREQFUSION_AVX2_CLONES
  if (cpu_has_avx2()) return fma_row_avx2(dst, a, b, n);
#endif
  fma_row_default(dst, a, b, n);
}

// acc[x] += sum_j m[j * m_stride + x] * padded[x + j * s] for x in [0, n): all k taps of one
// kernel row at once, so acc is read and written once per row instead of once per tap. The
// tap count is a template parameter for the usual sizes so the compiler unrolls it and
// vectorises over x; the sum order is the same as one tap at a time.
#define FREQFUSION_TAPS_ROW(NAME, TARGET)                                                        \
  template <int K, typename acc_t>                                                              \
  TARGET void NAME(acc_t* __restrict__ acc, const acc_t* __restrict__ m, int64_t m_stride,      \
                   const acc_t* __restrict__ padded, int64_t s, int64_t n) {                    \
    for (int64_t x = 0; x < n; ++x) {                                                           \
      acc_t t = acc[x];                                                                         \
      for (int j = 0; j < K; ++j) {                                                             \
        t += m[j * m_stride + x] * padded[x + j * s];                                           \
      }                                                                                         \
      acc[x] = t;                                                                               \
    }                                                                                           \
  }
FREQFUSION_TAPS_ROW(taps_row_default, )
#ifdef FREQFUSION_AVX2_CLONES
FREQFUSION_TAPS_ROW(taps_row_avx2, FREQFUSION_TARGET_AVX2)
#endif

template <int K, typename acc_t>
inline void taps_row_fixed(acc_t* acc, const acc_t* m, int64_t m_stride, const acc_t* padded,
                           int64_t s, int64_t n) {
#ifdef FREQFUSION_AVX2_CLONES
  if (cpu_has_avx2()) return taps_row_avx2<K>(acc, m, m_stride, padded, s, n);
#endif
  taps_row_default<K>(acc, m, m_stride, padded, s, n);
}

template <typename acc_t>
inline void taps_row(acc_t* acc, const acc_t* m, int64_t m_stride, const acc_t* padded,
                     int64_t k, int64_t s, int64_t n) {
  switch (k) {
    case 1:
      return taps_row_fixed<1>(acc, m, m_stride, padded, s, n);
    case 3:
      return taps_row_fixed<3>(acc, m, m_stride, padded, s, n);
    case 5:
      return taps_row_fixed<5>(acc, m, m_stride, padded, s, n);
    case 7:
      return taps_row_fixed<7>(acc, m, m_stride, padded, s, n);
    default:
      for (int64_t j = 0; j < k; ++j) {
        fma_row(acc, m + j * m_stride, padded + j * s, n);
      }
  }
}

template <typename acc_t, typename scalar_t>
inline void load_row(acc_t* __restrict__ dst, const scalar_t* __restrict__ src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = static_cast<acc_t>(src[i]);
  }
}

template <typename acc_t, typename scalar_t>
inline void store_row(scalar_t* __restrict__ dst, const acc_t* __restrict__ src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = static_cast<scalar_t>(src[i]);
  }
}

// One task = the s output rows (n, g, sy * s + t), t < s, of every channel of group g. They read
// the same source rows, so each padded source row is loaded once per task.
template <typename scalar_t>
void forward_kernel(const Geometry& d, const scalar_t* F, const scalar_t* M, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Wp = (d.W + 2 * d.r) * d.s;
  const at::Tensor padded_features = expand_features(d, F);
  const acc_t* P = padded_features.const_data_ptr<acc_t>();
  at::parallel_for(0, d.N * d.G * d.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(d.s * d.Cg * d.Wo);
    std::vector<acc_t> mrows(d.s * d.kk * d.Wo);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t sy = task % d.H;
      const int64_t g = (task / d.H) % d.G;
      const int64_t n = task / (d.H * d.G);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t t = 0; t < d.s; ++t) {
        for (int64_t tap = 0; tap < d.kk; ++tap) {
          const int64_t mc = (n * d.G + g) * d.kk + tap;
          load_row(mrows.data() + (t * d.kk + tap) * d.Wo, M + (mc * d.Ho + sy * d.s + t) * d.Wo,
                   d.Wo);
        }
      }
      for (int64_t c = 0; c < d.Cg; ++c) {
        const acc_t* pplane = P + (n * d.C + g * d.Cg + c) * d.H * Wp;
        for (int64_t i = 0; i < d.k; ++i) {
          const int64_t row = sy + i - d.r;
          if (row < 0 || row >= d.H) continue;
          for (int64_t t = 0; t < d.s; ++t) {
            taps_row(acc.data() + (t * d.Cg + c) * d.Wo,
                     mrows.data() + (t * d.kk + i * d.k) * d.Wo, d.Wo, pplane + row * Wp, d.k,
                     d.s, d.Wo);
          }
        }
      }
      for (int64_t t = 0; t < d.s; ++t) {
        for (int64_t c = 0; c < d.Cg; ++c) {
          scalar_t* orow = out + ((n * d.C + g * d.Cg + c) * d.Ho + sy * d.s + t) * d.Wo;
          store_row(orow, acc.data() + (t * d.Cg + c) * d.Wo, d.Wo);
        }
      }
    }
  });
}

// grad_masks[n, g*kk + ij, y, x] = sum_{c in g} grad_out[n, c, y, x] * F[n, c, tap(ij, y, x)].
// One task = the s output rows y = sy * s + t of the group's k*k mask channels (they read the
// same source rows); out-of-bounds taps read the zero padding or are skipped, so their gradient
// is exactly 0.
template <typename scalar_t>
void backward_masks_kernel(const Geometry& d, const scalar_t* GO, const scalar_t* F,
                           scalar_t* grad_masks) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Wp = (d.W + 2 * d.r) * d.s;
  const at::Tensor padded_features = expand_features(d, F);
  const acc_t* P = padded_features.const_data_ptr<acc_t>();
  at::parallel_for(0, d.N * d.G * d.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(d.s * d.kk * d.Wo);
    std::vector<acc_t> grows(d.s * d.Wo);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t sy = task % d.H;
      const int64_t g = (task / d.H) % d.G;
      const int64_t n = task / (d.H * d.G);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t c = 0; c < d.Cg; ++c) {
        const int64_t ch = n * d.C + g * d.Cg + c;
        load_row(grows.data(), GO + (ch * d.Ho + sy * d.s) * d.Wo, d.s * d.Wo);
        for (int64_t i = 0; i < d.k; ++i) {
          const int64_t row = sy + i - d.r;
          if (row < 0 || row >= d.H) continue;
          const acc_t* prow = P + (ch * d.H + row) * Wp;
          for (int64_t t = 0; t < d.s; ++t) {
            for (int64_t j = 0; j < d.k; ++j) {
              fma_row(acc.data() + (t * d.kk + i * d.k + j) * d.Wo, grows.data() + t * d.Wo,
                      prow + j * d.s, d.Wo);
            }
          }
        }
      }
      for (int64_t t = 0; t < d.s; ++t) {
        for (int64_t tap = 0; tap < d.kk; ++tap) {
          const int64_t mc = (n * d.G + g) * d.kk + tap;
          store_row(grad_masks + (mc * d.Ho + sy * d.s + t) * d.Wo,
                    acc.data() + (t * d.kk + tap) * d.Wo, d.Wo);
        }
      }
    }
  });
}

// grad_features is the transpose of the forward: the products masks * grad_out of an output row
// are scattered into the padded, repeated frame of the source row they read (the transpose of
// expand_row), which is then summed back per source pixel. One task = one (n, g, u) source row,
// gathering the output rows y with y / s = u - i + r.
template <typename scalar_t>
void backward_features_kernel(const Geometry& d, const scalar_t* GO, const scalar_t* M,
                              scalar_t* grad_features) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Wp = (d.W + 2 * d.r) * d.s;
  at::parallel_for(0, d.N * d.G * d.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(d.Cg * Wp);
    std::vector<acc_t> mrows(d.k * d.Wo);
    std::vector<acc_t> grow(d.Wo);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t u = task % d.H;
      const int64_t g = (task / d.H) % d.G;
      const int64_t n = task / (d.H * d.G);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t i = 0; i < d.k; ++i) {
        const int64_t sy = u - i + d.r;
        if (sy < 0 || sy >= d.H) continue;
        for (int64_t ty = 0; ty < d.s; ++ty) {
          const int64_t y = sy * d.s + ty;
          for (int64_t j = 0; j < d.k; ++j) {
            const int64_t mc = (n * d.G + g) * d.kk + i * d.k + j;
            load_row(mrows.data() + j * d.Wo, M + (mc * d.Ho + y) * d.Wo, d.Wo);
          }
          for (int64_t c = 0; c < d.Cg; ++c) {
            load_row(grow.data(), GO + ((n * d.C + g * d.Cg + c) * d.Ho + y) * d.Wo, d.Wo);
            acc_t* a = acc.data() + c * Wp;
            for (int64_t j = 0; j < d.k; ++j) {
              fma_row(a + j * d.s, mrows.data() + j * d.Wo, grow.data(), d.Wo);
            }
          }
        }
      }
      for (int64_t c = 0; c < d.Cg; ++c) {
        const acc_t* a = acc.data() + c * Wp + d.r * d.s;
        scalar_t* frow = grad_features + ((n * d.C + g * d.Cg + c) * d.H + u) * d.W;
        for (int64_t v = 0; v < d.W; ++v) {
          acc_t sum = 0;
          for (int64_t t = 0; t < d.s; ++t) {
            sum += a[v * d.s + t];
          }
          frow[v] = static_cast<scalar_t>(sum);
        }
      }
    }
  });
}

}  // namespace

at::Tensor carafe_forward_cpu(const at::Tensor& features, const at::Tensor& masks,
                              int64_t kernel_size, int64_t group_size, int64_t scale_factor) {
  carafe_check_inputs(features, masks, kernel_size, group_size, scale_factor);
  TORCH_CHECK(features.device().is_cpu(), "carafe_forward_cpu: expected CPU tensors");
  const at::Tensor f = features.contiguous();
  const at::Tensor m = masks.contiguous();
  const Geometry d(f, kernel_size, group_size, scale_factor);
  at::Tensor out = at::empty({d.N, d.C, d.Ho, d.Wo}, f.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "carafe_forward_cpu",
                                  [&] {
                                    forward_kernel<scalar_t>(d, f.const_data_ptr<scalar_t>(),
                                                             m.const_data_ptr<scalar_t>(),
                                                             out.mutable_data_ptr<scalar_t>());
                                  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> carafe_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& features, const at::Tensor& masks,
    int64_t kernel_size, int64_t group_size, int64_t scale_factor) {
  carafe_check_inputs(features, masks, kernel_size, group_size, scale_factor);
  TORCH_CHECK(features.device().is_cpu() && grad_output.device().is_cpu(),
              "carafe_backward_cpu: expected CPU tensors");
  const at::Tensor f = features.contiguous();
  const at::Tensor m = masks.contiguous();
  const Geometry d(f, kernel_size, group_size, scale_factor);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == d.N && grad_output.size(1) == d.C &&
                  grad_output.size(2) == d.Ho && grad_output.size(3) == d.Wo,
              "carafe_backward: grad_output has shape ", grad_output.sizes(), ", expected (",
              d.N, ", ", d.C, ", ", d.Ho, ", ", d.Wo, ")");
  const at::Tensor go = grad_output.to(f.scalar_type()).contiguous();
  at::Tensor grad_features = at::empty_like(f);
  at::Tensor grad_masks = at::empty_like(m);
  if (go.numel() == 0) {
    return {grad_features.zero_(), grad_masks.zero_()};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, f.scalar_type(), "carafe_backward_cpu", [&] {
        backward_features_kernel<scalar_t>(d, go.const_data_ptr<scalar_t>(),
                                           m.const_data_ptr<scalar_t>(),
                                           grad_features.mutable_data_ptr<scalar_t>());
        backward_masks_kernel<scalar_t>(d, go.const_data_ptr<scalar_t>(),
                                        f.const_data_ptr<scalar_t>(),
                                        grad_masks.mutable_data_ptr<scalar_t>());
      });
  return {grad_features, grad_masks};
}

TORCH_LIBRARY_IMPL(freqfusion_d2, CPU, m) {
  m.impl("carafe_forward", &carafe_forward_cpu);
  m.impl("carafe_backward", &carafe_backward_cpu);
}

}  // namespace freqfusion_d2
