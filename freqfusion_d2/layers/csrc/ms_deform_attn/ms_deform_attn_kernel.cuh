// CUDA kernels of multi-scale deformable attention. 64-bit indexing and grid-stride loops
// throughout, so any tensor size works.
//
// Forward and the value gradient use one thread per (n, q, m, channel): neighbouring threads
// read and write neighbouring channels of the same value row, so memory accesses coalesce. The
// value gradient is a scatter and uses atomic adds (its last bits can change between runs).
// The location and weight gradients use one thread per sample, each reducing over the channels
// on its own: no atomics there.
#pragma once
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>

#include <cstdint>

#include "ms_deform_attn/ms_deform_attn.h"

namespace freqfusion_d2 {

// The four bilinear neighbours of one sample: (y0, x0), (y0, x0 + 1), (y0 + 1, x0),
// (y0 + 1, x0 + 1). Neighbours outside the map have valid = false.
template <typename acc_t>
struct DeviceCorners {
  acc_t fx, fy;
  acc_t weight[4];
  int64_t row[4];
  bool valid[4];
  bool any;
};

// Pixel-space point (x * W - 0.5, y * H - 0.5), as grid_sample with align_corners=False.
template <typename acc_t>
__device__ __forceinline__ void device_bilinear_corners(acc_t x, acc_t y, int64_t H, int64_t W,
                                                        DeviceCorners<acc_t>* c) {
  const acc_t u = x * static_cast<acc_t>(W) - acc_t(0.5);
  const acc_t v = y * static_cast<acc_t>(H) - acc_t(0.5);
  c->any = false;
  // Far outside (or NaN): nothing to sample; also keeps floor() in int64 range.
  if (!(u > acc_t(-2) && u < static_cast<acc_t>(W + 1) && v > acc_t(-2) &&
        v < static_cast<acc_t>(H + 1))) {
    return;
  }
  const acc_t uf = floor(u);
  const acc_t vf = floor(v);
  const int64_t x0 = static_cast<int64_t>(uf);
  const int64_t y0 = static_cast<int64_t>(vf);
  c->fx = u - uf;
  c->fy = v - vf;
  const acc_t gx = acc_t(1) - c->fx;
  const acc_t gy = acc_t(1) - c->fy;
  c->weight[0] = gy * gx;
  c->weight[1] = gy * c->fx;
  c->weight[2] = c->fy * gx;
  c->weight[3] = c->fy * c->fx;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t yy = y0 + (k >> 1);
    const int64_t xx = x0 + (k & 1);
    c->valid[k] = yy >= 0 && yy < H && xx >= 0 && xx < W;
    c->row[k] = c->valid[k] ? yy * W + xx : 0;
    c->any = c->any || c->valid[k];
  }
}

// Reads level l's (H, W, start); false for a level that does not fit in the S rows of value
// (the Python wrapper validates CPU tables; this guard keeps bad CUDA tables in bounds).
__device__ __forceinline__ bool device_level(const int64_t* __restrict__ shapes,
                                             const int64_t* __restrict__ starts, int64_t l,
                                             int64_t S, int64_t* H, int64_t* W, int64_t* start) {
  *H = shapes[2 * l];
  *W = shapes[2 * l + 1];
  *start = starts[l];
  return *H > 0 && *W > 0 && *start >= 0 && *start + *H * *W <= S;
}

template <typename scalar_t>
__global__ void ms_deform_attn_forward_kernel(const MSDeformAttnDims d,
                                              const scalar_t* __restrict__ value,
                                              const int64_t* __restrict__ shapes,
                                              const int64_t* __restrict__ starts,
                                              const scalar_t* __restrict__ loc,
                                              const scalar_t* __restrict__ attn,
                                              scalar_t* __restrict__ out, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_stride = d.M * d.D;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t j = index % d.D;
    const int64_t nqm = index / d.D;  // (n * Lq + q) * M + m
    const int64_t m = nqm % d.M;
    const int64_t n = nqm / (d.M * d.Lq);
    const scalar_t* vhead = value + n * d.S * row_stride + m * d.D + j;
    acc_t acc = 0;
    DeviceCorners<acc_t> c;
    for (int64_t l = 0; l < d.L; ++l) {
      int64_t H, W, start;
      if (!device_level(shapes, starts, l, d.S, &H, &W, &start)) continue;
      const scalar_t* vlevel = vhead + start * row_stride;
      for (int64_t p = 0; p < d.P; ++p) {
        const int64_t idx = (nqm * d.L + l) * d.P + p;
        device_bilinear_corners(static_cast<acc_t>(loc[2 * idx]),
                                static_cast<acc_t>(loc[2 * idx + 1]), H, W, &c);
        if (!c.any) continue;
        const acc_t a = static_cast<acc_t>(attn[idx]);
        acc_t sample = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (c.valid[k]) {
            sample += c.weight[k] * static_cast<acc_t>(vlevel[c.row[k] * row_stride]);
          }
        }
        acc += a * sample;
      }
    }
    out[index] = static_cast<scalar_t>(acc);
  }
}

// grad_value[n, start_l + row_k, m, j] += A * w_k * grad_out[n, q, m, j]: a scatter, so atomic.
// grad_value_acc is float for half / bfloat16 inputs (converted by the launcher).
template <typename scalar_t, typename acc_t>
__global__ void ms_deform_attn_backward_value_kernel(const MSDeformAttnDims d,
                                                     const scalar_t* __restrict__ grad_out,
                                                     const int64_t* __restrict__ shapes,
                                                     const int64_t* __restrict__ starts,
                                                     const scalar_t* __restrict__ loc,
                                                     const scalar_t* __restrict__ attn,
                                                     acc_t* __restrict__ grad_value_acc,
                                                     int64_t total) {
  const int64_t row_stride = d.M * d.D;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t j = index % d.D;
    const int64_t nqm = index / d.D;
    const int64_t m = nqm % d.M;
    const int64_t n = nqm / (d.M * d.Lq);
    const acc_t go = static_cast<acc_t>(grad_out[index]);
    if (go == acc_t(0)) continue;
    acc_t* ghead = grad_value_acc + n * d.S * row_stride + m * d.D + j;
    DeviceCorners<acc_t> c;
    for (int64_t l = 0; l < d.L; ++l) {
      int64_t H, W, start;
      if (!device_level(shapes, starts, l, d.S, &H, &W, &start)) continue;
      acc_t* glevel = ghead + start * row_stride;
      for (int64_t p = 0; p < d.P; ++p) {
        const int64_t idx = (nqm * d.L + l) * d.P + p;
        device_bilinear_corners(static_cast<acc_t>(loc[2 * idx]),
                                static_cast<acc_t>(loc[2 * idx + 1]), H, W, &c);
        if (!c.any) continue;
        const acc_t scaled = static_cast<acc_t>(attn[idx]) * go;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (c.valid[k]) {
            gpuAtomicAdd(glevel + c.row[k] * row_stride, scaled * c.weight[k]);
          }
        }
      }
    }
  }
}

// One thread per sample (n, q, m, l, p): reduces over the D channels of its head.
template <typename scalar_t>
__global__ void ms_deform_attn_backward_sample_kernel(
    const MSDeformAttnDims d, const scalar_t* __restrict__ grad_out,
    const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc,
    const scalar_t* __restrict__ attn, scalar_t* __restrict__ grad_loc,
    scalar_t* __restrict__ grad_attn, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_stride = d.M * d.D;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t l = (idx / d.P) % d.L;
    const int64_t nqm = idx / (d.P * d.L);
    const int64_t m = nqm % d.M;
    const int64_t n = nqm / (d.M * d.Lq);
    int64_t H, W, start;
    DeviceCorners<acc_t> c;
    c.any = false;
    if (device_level(shapes, starts, l, d.S, &H, &W, &start)) {
      device_bilinear_corners(static_cast<acc_t>(loc[2 * idx]),
                              static_cast<acc_t>(loc[2 * idx + 1]), H, W, &c);
    }
    if (!c.any) {
      grad_attn[idx] = scalar_t(0);
      grad_loc[2 * idx] = scalar_t(0);
      grad_loc[2 * idx + 1] = scalar_t(0);
      continue;
    }
    const scalar_t* gorow = grad_out + nqm * d.D;
    const scalar_t* vlevel = value + (n * d.S + start) * row_stride + m * d.D;
    acc_t dots[4] = {0, 0, 0, 0};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (!c.valid[k]) continue;
      const scalar_t* vrow = vlevel + c.row[k] * row_stride;
      acc_t dot = 0;
      for (int64_t j = 0; j < d.D; ++j) {
        dot += static_cast<acc_t>(gorow[j]) * static_cast<acc_t>(vrow[j]);
      }
      dots[k] = dot;
    }
    const acc_t a = static_cast<acc_t>(attn[idx]);
    grad_attn[idx] = static_cast<scalar_t>(c.weight[0] * dots[0] + c.weight[1] * dots[1] +
                                           c.weight[2] * dots[2] + c.weight[3] * dots[3]);
    const acc_t du = (acc_t(1) - c.fy) * (dots[1] - dots[0]) + c.fy * (dots[3] - dots[2]);
    const acc_t dv = (acc_t(1) - c.fx) * (dots[2] - dots[0]) + c.fx * (dots[3] - dots[1]);
    grad_loc[2 * idx] = static_cast<scalar_t>(a * du * static_cast<acc_t>(W));
    grad_loc[2 * idx + 1] = static_cast<scalar_t>(a * dv * static_cast<acc_t>(H));
  }
}

}  // namespace freqfusion_d2
