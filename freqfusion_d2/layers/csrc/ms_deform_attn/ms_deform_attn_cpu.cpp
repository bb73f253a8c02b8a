// CPU kernels of multi-scale deformable attention.
//
// Forward: one task per (n, q) query, writing its M * D outputs once. Backward: one task per
// (n, m, l) batch element, head and level; it owns the value-gradient rows of its level and head
// (accumulated in a private float/double buffer) and the location / weight gradients of its
// samples, so there are no atomics and the result is bitwise repeatable for any number of
// threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "ms_deform_attn/ms_deform_attn.h"

namespace freqfusion_d2 {
namespace {

// Level table copied out of the (L, 2) shapes and (L) starts tensors.
struct Levels {
  std::vector<int64_t> H, W, start;
};

Levels read_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   int64_t S) {
  const at::Tensor shapes = spatial_shapes.contiguous();
  const at::Tensor starts = level_start_index.contiguous();
  const int64_t* sp = shapes.const_data_ptr<int64_t>();
  const int64_t* st = starts.const_data_ptr<int64_t>();
  const int64_t L = shapes.size(0);
  Levels lv;
  lv.H.resize(L);
  lv.W.resize(L);
  lv.start.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    lv.H[l] = sp[2 * l];
    lv.W[l] = sp[2 * l + 1];
    lv.start[l] = st[l];
    TORCH_CHECK(lv.H[l] >= 0 && lv.W[l] >= 0 && lv.start[l] >= 0 &&
                    lv.start[l] + lv.H[l] * lv.W[l] <= S,
                "ms_deform_attn: level ", l, " of shape (", lv.H[l], ", ", lv.W[l],
                ") starting at row ", lv.start[l], " does not fit in the ", S, " rows of value");
  }
  // The backward gives each level its own rows of grad_value, so levels must not overlap.
  std::vector<int64_t> order(L);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return lv.start[a] < lv.start[b]; });
  for (int64_t i = 1; i < L; ++i) {
    const int64_t prev = order[i - 1];
    TORCH_CHECK(lv.start[prev] + lv.H[prev] * lv.W[prev] <= lv.start[order[i]],
                "ms_deform_attn: levels ", prev, " and ", order[i], " overlap in value");
  }
  return lv;
}

// The four bilinear neighbours of one sample, in the order (y0, x0), (y0, x0 + 1),
// (y0 + 1, x0), (y0 + 1, x0 + 1). Neighbours outside the map have valid = false.
template <typename acc_t>
struct Corners {
  acc_t fx, fy;
  acc_t weight[4];
  int64_t row[4];  // row of the neighbour inside its level, y * W + x
  bool valid[4];
  bool any;
};

// Pixel-space point (x * W - 0.5, y * H - 0.5), as grid_sample with align_corners=False.
template <typename acc_t>
inline void bilinear_corners(acc_t x, acc_t y, int64_t H, int64_t W, Corners<acc_t>* c) {
  const acc_t u = x * static_cast<acc_t>(W) - acc_t(0.5);
  const acc_t v = y * static_cast<acc_t>(H) - acc_t(0.5);
  // Far outside (or NaN): no neighbour can be inside; also keeps floor() in int64 range.
  if (!(u > acc_t(-2) && u < static_cast<acc_t>(W + 1) && v > acc_t(-2) &&
        v < static_cast<acc_t>(H + 1))) {
    c->any = false;
    return;
  }
  const acc_t uf = std::floor(u);
  const acc_t vf = std::floor(v);
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
  c->any = false;
  for (int k = 0; k < 4; ++k) {
    const int64_t yy = y0 + (k >> 1);
    const int64_t xx = x0 + (k & 1);
    c->valid[k] = yy >= 0 && yy < H && xx >= 0 && xx < W;
    c->row[k] = c->valid[k] ? yy * W + xx : 0;
    c->any = c->any || c->valid[k];
  }
}

// gv[j] += w * go[j] for j < D, and returns <go, v>. The dot product is summed in kLanes
// independent partial sums so that the compiler can vectorise it; the order is fixed, so the
// result does not depend on threading.
template <typename acc_t, typename scalar_t>
inline acc_t dot_and_axpy(const acc_t* __restrict__ go, const scalar_t* __restrict__ v,
                          acc_t* __restrict__ gv, acc_t w, int64_t D) {
  constexpr int64_t kLanes = 8;
  acc_t lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= D; j += kLanes) {
    for (int64_t t = 0; t < kLanes; ++t) {
      lanes[t] += go[j + t] * static_cast<acc_t>(v[j + t]);
      gv[j + t] += w * go[j + t];
    }
  }
  acc_t dot = 0;
  for (; j < D; ++j) {
    dot += go[j] * static_cast<acc_t>(v[j]);
    gv[j] += w * go[j];
  }
  for (int64_t t = 0; t < kLanes; ++t) {
    dot += lanes[t];
  }
  return dot;
}

template <typename scalar_t>
void forward_kernel(const MSDeformAttnDims& d, const Levels& lv, const scalar_t* value,
                    const scalar_t* loc, const scalar_t* attn, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_stride = d.M * d.D;  // between consecutive rows s of value
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, d.M * d.L * d.P));
  at::parallel_for(0, d.N * d.Lq, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(d.D);
    Corners<acc_t> c;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / d.Lq;
      for (int64_t m = 0; m < d.M; ++m) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        const scalar_t* vhead = value + n * d.S * row_stride + m * d.D;
        for (int64_t l = 0; l < d.L; ++l) {
          const scalar_t* vlevel = vhead + lv.start[l] * row_stride;
          for (int64_t p = 0; p < d.P; ++p) {
            const int64_t idx = ((task * d.M + m) * d.L + l) * d.P + p;
            bilinear_corners(static_cast<acc_t>(loc[2 * idx]),
                             static_cast<acc_t>(loc[2 * idx + 1]), lv.H[l], lv.W[l], &c);
            if (!c.any) continue;
            const acc_t a = static_cast<acc_t>(attn[idx]);
            for (int k = 0; k < 4; ++k) {
              if (!c.valid[k]) continue;
              const acc_t w = a * c.weight[k];
              const scalar_t* __restrict__ vrow = vlevel + c.row[k] * row_stride;
              acc_t* __restrict__ accp = acc.data();
              for (int64_t j = 0; j < d.D; ++j) {
                accp[j] += w * static_cast<acc_t>(vrow[j]);
              }
            }
          }
        }
        scalar_t* orow = out + (task * d.M + m) * d.D;
        for (int64_t j = 0; j < d.D; ++j) {
          orow[j] = static_cast<scalar_t>(acc[j]);
        }
      }
    }
  });
}

// One task per (n, m, l): level l owns the rows [start_l, start_l + H_l * W_l) of
// grad_value[n, :, m, :] (levels do not overlap, see read_levels) and the gradients of the
// samples (n, :, m, l, :). Every task has the same Lq * P samples to process.
template <typename scalar_t>
void backward_kernel(const MSDeformAttnDims& d, const Levels& lv, const scalar_t* grad_out,
                     const scalar_t* value, const scalar_t* loc, const scalar_t* attn,
                     scalar_t* grad_value, scalar_t* grad_loc, scalar_t* grad_attn) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_stride = d.M * d.D;
  int64_t max_rows = 0;
  for (int64_t l = 0; l < d.L; ++l) {
    max_rows = std::max(max_rows, lv.H[l] * lv.W[l]);
  }
  at::parallel_for(0, d.N * d.M * d.L, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> gv(max_rows * d.D);  // this task's rows of grad_value, contiguous
    std::vector<acc_t> go(d.D);
    Corners<acc_t> c;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t l = task % d.L;
      const int64_t m = (task / d.L) % d.M;
      const int64_t n = task / (d.L * d.M);
      const int64_t rows = lv.H[l] * lv.W[l];
      std::fill(gv.begin(), gv.begin() + rows * d.D, acc_t(0));
      const scalar_t* vlevel = value + (n * d.S + lv.start[l]) * row_stride + m * d.D;
      for (int64_t q = 0; q < d.Lq; ++q) {
        const int64_t nqm = (n * d.Lq + q) * d.M + m;
        const scalar_t* gorow = grad_out + nqm * d.D;
        for (int64_t j = 0; j < d.D; ++j) {
          go[j] = static_cast<acc_t>(gorow[j]);
        }
        for (int64_t p = 0; p < d.P; ++p) {
          const int64_t idx = (nqm * d.L + l) * d.P + p;
          bilinear_corners(static_cast<acc_t>(loc[2 * idx]), static_cast<acc_t>(loc[2 * idx + 1]),
                           lv.H[l], lv.W[l], &c);
          if (!c.any) {
            grad_attn[idx] = scalar_t(0);
            grad_loc[2 * idx] = scalar_t(0);
            grad_loc[2 * idx + 1] = scalar_t(0);
            continue;
          }
          const acc_t a = static_cast<acc_t>(attn[idx]);
          // dots[k] = <grad_out row, value at neighbour k>, 0 for neighbours outside.
          acc_t dots[4] = {0, 0, 0, 0};
          for (int k = 0; k < 4; ++k) {
            if (!c.valid[k]) continue;
            dots[k] = dot_and_axpy(go.data(), vlevel + c.row[k] * row_stride,
                                   gv.data() + c.row[k] * d.D, a * c.weight[k], d.D);
          }
          grad_attn[idx] = static_cast<scalar_t>(c.weight[0] * dots[0] + c.weight[1] * dots[1] +
                                                 c.weight[2] * dots[2] + c.weight[3] * dots[3]);
          // d sample / d u and d / d v of the bilinear blend; u = x * W - 0.5, v = y * H - 0.5.
          const acc_t du = (acc_t(1) - c.fy) * (dots[1] - dots[0]) + c.fy * (dots[3] - dots[2]);
          const acc_t dv = (acc_t(1) - c.fx) * (dots[2] - dots[0]) + c.fx * (dots[3] - dots[1]);
          grad_loc[2 * idx] = static_cast<scalar_t>(a * du * static_cast<acc_t>(lv.W[l]));
          grad_loc[2 * idx + 1] = static_cast<scalar_t>(a * dv * static_cast<acc_t>(lv.H[l]));
        }
      }
      scalar_t* glevel = grad_value + (n * d.S + lv.start[l]) * row_stride + m * d.D;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < d.D; ++j) {
          glevel[r * row_stride + j] = static_cast<scalar_t>(gv[r * d.D + j]);
        }
      }
    }
  });
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  const MSDeformAttnDims d = ms_deform_attn_check_inputs(value, spatial_shapes, level_start_index,
                                                         sampling_locations, attention_weights);
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn_forward_cpu: expected CPU tensors");
  const Levels lv = read_levels(spatial_shapes, level_start_index, d.S);
  const at::Tensor v = value.contiguous();
  const at::Tensor loc = sampling_locations.contiguous();
  const at::Tensor attn = attention_weights.contiguous();
  at::Tensor out = at::empty({d.N, d.Lq, d.M * d.D}, v.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, v.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
        forward_kernel<scalar_t>(d, lv, v.const_data_ptr<scalar_t>(),
                                 loc.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(),
                                 out.mutable_data_ptr<scalar_t>());
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const MSDeformAttnDims d = ms_deform_attn_check_inputs(value, spatial_shapes, level_start_index,
                                                         sampling_locations, attention_weights);
  ms_deform_attn_check_grad_output(grad_output, d, value);
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn_backward_cpu: expected CPU tensors");
  const Levels lv = read_levels(spatial_shapes, level_start_index, d.S);
  const at::Tensor v = value.contiguous();
  const at::Tensor loc = sampling_locations.contiguous();
  const at::Tensor attn = attention_weights.contiguous();
  const at::Tensor go = grad_output.to(v.scalar_type()).contiguous();
  // Rows of value that no level covers get no gradient: start from zeros.
  at::Tensor grad_value = at::zeros_like(v);
  at::Tensor grad_loc = at::zeros_like(loc);
  at::Tensor grad_attn = at::zeros_like(attn);
  if (go.numel() == 0 || grad_attn.numel() == 0) {
    return {grad_value, grad_loc, grad_attn};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, v.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
        backward_kernel<scalar_t>(
            d, lv, go.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
            loc.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(),
            grad_value.mutable_data_ptr<scalar_t>(), grad_loc.mutable_data_ptr<scalar_t>(),
            grad_attn.mutable_data_ptr<scalar_t>());
      });
  return {grad_value, grad_loc, grad_attn};
}

TORCH_LIBRARY_IMPL(freqfusion_d2, CPU, m) {
  m.impl("ms_deform_attn_forward", &ms_deform_attn_forward_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace freqfusion_d2
