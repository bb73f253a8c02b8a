// CARAFE (content-aware reassembly of features): declarations and shared input checks.
//
// out[n, c, y, x] = sum_{i,j} masks[n, g * k * k + i * k + j, y, x]
//                             * features[n, c, y / s + i - r, x / s + j - r]
// with g = c / (C / G), r = (k - 1) / 2, integer (floor) division by the scale s and zero
// contribution from taps outside the feature map. The kernels are registered with the
// dispatcher as freqfusion_d2::carafe_forward / carafe_backward (see vision.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace freqfusion_d2 {

// Validates the inputs of the compiled kernels. The Python wrapper raises friendlier errors
// first; these checks protect direct callers of torch.ops.freqfusion_d2.*.
inline void carafe_check_inputs(
    const at::Tensor& features,
    const at::Tensor& masks,
    int64_t kernel_size,
    int64_t group_size,
    int64_t scale_factor) {
  TORCH_CHECK(features.dim() == 4, "carafe: features must be (N, C, H, W), got ", features.sizes());
  TORCH_CHECK(masks.dim() == 4, "carafe: masks must be (N, G*k*k, s*H, s*W), got ", masks.sizes());
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, "carafe: kernel_size must be odd, got ",
              kernel_size);
  TORCH_CHECK(group_size >= 1 && features.size(1) % group_size == 0,
              "carafe: group_size must divide the channels, got ", group_size, " for ",
              features.size(1), " channels");
  TORCH_CHECK(scale_factor >= 1, "carafe: scale_factor must be >= 1, got ", scale_factor);
  TORCH_CHECK(masks.size(0) == features.size(0) &&
                  masks.size(1) == kernel_size * kernel_size * group_size &&
                  masks.size(2) == features.size(2) * scale_factor &&
                  masks.size(3) == features.size(3) * scale_factor,
              "carafe: masks ", masks.sizes(), " do not match features ", features.sizes());
  TORCH_CHECK(features.scalar_type() == masks.scalar_type(),
              "carafe: features and masks must have the same dtype");
  TORCH_CHECK(features.device() == masks.device(),
              "carafe: features and masks must be on the same device");
}

at::Tensor carafe_forward_cpu(const at::Tensor& features, const at::Tensor& masks,
                              int64_t kernel_size, int64_t group_size, int64_t scale_factor);

std::tuple<at::Tensor, at::Tensor> carafe_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& features, const at::Tensor& masks,
    int64_t kernel_size, int64_t group_size, int64_t scale_factor);

#ifdef WITH_CUDA
at::Tensor carafe_forward_cuda(const at::Tensor& features, const at::Tensor& masks,
                               int64_t kernel_size, int64_t group_size, int64_t scale_factor);

std::tuple<at::Tensor, at::Tensor> carafe_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& features, const at::Tensor& masks,
    int64_t kernel_size, int64_t group_size, int64_t scale_factor);
#endif

}  // namespace freqfusion_d2
