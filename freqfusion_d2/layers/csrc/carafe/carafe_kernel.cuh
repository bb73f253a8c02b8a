// CUDA kernels of CARAFE: one thread per output element, each a gather (no atomics), so the
// backward is deterministic. 64-bit indexing throughout; no limit on k * k * G.
#pragma once
#include <ATen/OpMathType.h>

#include <cstdint>

namespace freqfusion_d2 {

struct CarafeDims {
  int64_t N, C, H, W, k, G, s;
  int64_t Ho, Wo, r, kk, Cg;
};

template <typename scalar_t>
__global__ void carafe_forward_kernel(const CarafeDims d, const scalar_t* __restrict__ F,
                                      const scalar_t* __restrict__ M, scalar_t* __restrict__ out,
                                      int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t x = index % d.Wo;
    const int64_t y = (index / d.Wo) % d.Ho;
    const int64_t c = (index / (d.Wo * d.Ho)) % d.C;
    const int64_t n = index / (d.Wo * d.Ho * d.C);
    const int64_t g = c / d.Cg;
    const int64_t plane = d.Ho * d.Wo;
    const scalar_t* mbase = M + (n * d.G + g) * d.kk * plane + y * d.Wo + x;
    const scalar_t* fbase = F + (n * d.C + c) * d.H * d.W;
    const int64_t sy = y / d.s;
    const int64_t sx = x / d.s;
    acc_t acc = 0;
    for (int64_t i = 0; i < d.k; ++i) {
      const int64_t row = sy + i - d.r;
      if (row < 0 || row >= d.H) continue;
      for (int64_t j = 0; j < d.k; ++j) {
        const int64_t col = sx + j - d.r;
        if (col < 0 || col >= d.W) continue;
        acc += static_cast<acc_t>(mbase[(i * d.k + j) * plane]) *
               static_cast<acc_t>(fbase[row * d.W + col]);
      }
    }
    out[index] = static_cast<scalar_t>(acc);
  }
}

// One thread per mask element (n, g*kk + ij, y, x): a reduction over the group's channels.
template <typename scalar_t>
__global__ void carafe_backward_masks_kernel(const CarafeDims d,
                                             const scalar_t* __restrict__ grad_out,
                                             const scalar_t* __restrict__ F,
                                             scalar_t* __restrict__ grad_masks, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t x = index % d.Wo;
    const int64_t y = (index / d.Wo) % d.Ho;
    const int64_t tap = (index / (d.Wo * d.Ho)) % d.kk;
    const int64_t g = (index / (d.Wo * d.Ho * d.kk)) % d.G;
    const int64_t n = index / (d.Wo * d.Ho * d.kk * d.G);
    const int64_t row = y / d.s + tap / d.k - d.r;
    const int64_t col = x / d.s + tap % d.k - d.r;
    acc_t acc = 0;
    if (row >= 0 && row < d.H && col >= 0 && col < d.W) {
      const int64_t c0 = n * d.C + g * d.Cg;
      for (int64_t c = 0; c < d.Cg; ++c) {
        acc += static_cast<acc_t>(grad_out[((c0 + c) * d.Ho + y) * d.Wo + x]) *
               static_cast<acc_t>(F[((c0 + c) * d.H + row) * d.W + col]);
      }
    }
    grad_masks[index] = static_cast<scalar_t>(acc);
  }
}

// One thread per feature element (n, c, u, v): gathers every (output pixel, tap) that read it.
template <typename scalar_t>
__global__ void carafe_backward_features_kernel(const CarafeDims d,
                                                const scalar_t* __restrict__ grad_out,
                                                const scalar_t* __restrict__ M,
                                                scalar_t* __restrict__ grad_features,
                                                int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t v = index % d.W;
    const int64_t u = (index / d.W) % d.H;
    const int64_t c = (index / (d.W * d.H)) % d.C;
    const int64_t n = index / (d.W * d.H * d.C);
    const int64_t g = c / d.Cg;
    const int64_t plane = d.Ho * d.Wo;
    const scalar_t* gbase = grad_out + (n * d.C + c) * plane;
    const scalar_t* mbase = M + (n * d.G + g) * d.kk * plane;
    acc_t acc = 0;
    for (int64_t i = 0; i < d.k; ++i) {
      const int64_t sy = u - i + d.r;
      if (sy < 0 || sy >= d.H) continue;
      for (int64_t j = 0; j < d.k; ++j) {
        const int64_t sx = v - j + d.r;
        if (sx < 0 || sx >= d.W) continue;
        const scalar_t* mtap = mbase + (i * d.k + j) * plane;
        for (int64_t ty = 0; ty < d.s; ++ty) {
          const int64_t y = sy * d.s + ty;
          for (int64_t tx = 0; tx < d.s; ++tx) {
            const int64_t o = y * d.Wo + sx * d.s + tx;
            acc += static_cast<acc_t>(mtap[o]) * static_cast<acc_t>(gbase[o]);
          }
        }
      }
    }
    grad_features[index] = static_cast<scalar_t>(acc);
  }
}

}  // namespace freqfusion_d2
