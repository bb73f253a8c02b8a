// Multi-scale deformable attention: declarations and shared input checks.
//
// out[n, q, m, :] = sum_{l, p} A[n, q, m, l, p] * bilinear_l(value[n, :, m, :], loc[n, q, m, l, p])
// where level l is the (H_l, W_l) row-major block of value starting at row start_l, and the
// normalised location (x, y) samples pixel-space (x * W_l - 0.5, y * H_l - 0.5) with zero
// padding (grid_sample's align_corners=False convention). Shapes: value (N, S, M, D),
// spatial_shapes (L, 2) int64 (H, W), level_start_index (L) int64, sampling_locations
// (N, Lq, M, L, P, 2), attention_weights (N, Lq, M, L, P), output (N, Lq, M * D).
// The kernels are registered as freqfusion_d2::ms_deform_attn_forward / _backward (vision.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace freqfusion_d2 {

// Sizes shared by the CPU and CUDA kernels.
struct MSDeformAttnDims {
  int64_t N, S, M, D, Lq, L, P;
};

// Validates shapes, dtypes and devices. The Python wrapper raises friendlier errors first;
// these checks protect direct callers of torch.ops.freqfusion_d2.*.
inline MSDeformAttnDims ms_deform_attn_check_inputs(const at::Tensor& value,
                                                    const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_locations,
                                                    const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be (N, S, M, D), got ",
              value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must be (L, 2), got ", spatial_shapes.sizes());
  const int64_t L = spatial_shapes.size(0);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == L,
              "ms_deform_attn: level_start_index must be (L,) with L = ", L, ", got ",
              level_start_index.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong &&
                  level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn: spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(0) == value.size(0) &&
                  sampling_locations.size(2) == value.size(2) &&
                  sampling_locations.size(3) == L && sampling_locations.size(5) == 2,
              "ms_deform_attn: sampling_locations ", sampling_locations.sizes(),
              " must be (N, Lq, M, L, P, 2) for value ", value.sizes(), " and L = ", L);
  MSDeformAttnDims d;
  d.N = value.size(0);
  d.S = value.size(1);
  d.M = value.size(2);
  d.D = value.size(3);
  d.Lq = sampling_locations.size(1);
  d.L = L;
  d.P = sampling_locations.size(4);
  TORCH_CHECK(attention_weights.dim() == 5 && attention_weights.size(0) == d.N &&
                  attention_weights.size(1) == d.Lq && attention_weights.size(2) == d.M &&
                  attention_weights.size(3) == d.L && attention_weights.size(4) == d.P,
              "ms_deform_attn: attention_weights ", attention_weights.sizes(),
              " must be (N, Lq, M, L, P) matching sampling_locations ", sampling_locations.sizes());
  TORCH_CHECK(at::isFloatingType(value.scalar_type()),
              "ms_deform_attn: value must be a floating tensor");
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              "ms_deform_attn: value, sampling_locations and attention_weights must have the same "
              "dtype");
  const auto device = value.device();
  TORCH_CHECK(spatial_shapes.device() == device && level_start_index.device() == device &&
                  sampling_locations.device() == device && attention_weights.device() == device,
              "ms_deform_attn: all inputs must be on the device of value");
  return d;
}

inline void ms_deform_attn_check_grad_output(const at::Tensor& grad_output,
                                             const MSDeformAttnDims& d,
                                             const at::Tensor& value) {
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == d.N && grad_output.size(1) == d.Lq &&
                  grad_output.size(2) == d.M * d.D,
              "ms_deform_attn_backward: grad_output has shape ", grad_output.sizes(),
              ", expected (", d.N, ", ", d.Lq, ", ", d.M * d.D, ")");
  TORCH_CHECK(grad_output.device() == value.device(),
              "ms_deform_attn_backward: grad_output must be on the device of value");
}

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);
#endif

}  // namespace freqfusion_d2
