// CUDA launchers of CARAFE: input checks, device guard, current stream, dtype dispatch.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "carafe/carafe.h"
#include "carafe/carafe_kernel.cuh"

namespace freqfusion_d2 {
namespace {

constexpr int kThreads = 256;

CarafeDims make_dims(const at::Tensor& f, int64_t k, int64_t G, int64_t s) {
  CarafeDims d;
  d.N = f.size(0);
  d.C = f.size(1);
  d.H = f.size(2);
  d.W = f.size(3);
  d.k = k;
  d.G = G;
  d.s = s;
  d.Ho = d.H * s;
  d.Wo = d.W * s;
  d.r = (k - 1) / 2;
  d.kk = k * k;
  d.Cg = d.C / G;
  return d;
}

// Grid-stride loops cover any size; the grid is capped to stay well inside launch limits.
unsigned int num_blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 1 << 22));
}

}  // namespace

at::Tensor carafe_forward_cuda(const at::Tensor& features, const at::Tensor& masks,
                               int64_t kernel_size, int64_t group_size, int64_t scale_factor) {
  carafe_check_inputs(features, masks, kernel_size, group_size, scale_factor);
  TORCH_CHECK(features.is_cuda(), "carafe_forward_cuda: expected CUDA tensors");
  const c10::cuda::CUDAGuard guard(features.device());
  const at::Tensor f = features.contiguous();
  const at::Tensor m = masks.contiguous();
  const CarafeDims d = make_dims(f, kernel_size, group_size, scale_factor);
  at::Tensor out = at::empty({d.N, d.C, d.Ho, d.Wo}, f.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, f.scalar_type(), "carafe_forward_cuda", [&] {
        carafe_forward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
            d, f.const_data_ptr<scalar_t>(), m.const_data_ptr<scalar_t>(),
            out.mutable_data_ptr<scalar_t>(), total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor> carafe_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& features, const at::Tensor& masks,
    int64_t kernel_size, int64_t group_size, int64_t scale_factor) {
  carafe_check_inputs(features, masks, kernel_size, group_size, scale_factor);
  TORCH_CHECK(features.is_cuda() && grad_output.device() == features.device(),
              "carafe_backward_cuda: expected CUDA tensors on one device");
  const c10::cuda::CUDAGuard guard(features.device());
  const at::Tensor f = features.contiguous();
  const at::Tensor m = masks.contiguous();
  const CarafeDims d = make_dims(f, kernel_size, group_size, scale_factor);
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
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, f.scalar_type(), "carafe_backward_cuda", [&] {
        const int64_t nf = grad_features.numel();
        carafe_backward_features_kernel<scalar_t><<<num_blocks(nf), kThreads, 0, stream>>>(
            d, go.const_data_ptr<scalar_t>(), m.const_data_ptr<scalar_t>(),
            grad_features.mutable_data_ptr<scalar_t>(), nf);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const int64_t nm = grad_masks.numel();
        carafe_backward_masks_kernel<scalar_t><<<num_blocks(nm), kThreads, 0, stream>>>(
            d, go.const_data_ptr<scalar_t>(), f.const_data_ptr<scalar_t>(),
            grad_masks.mutable_data_ptr<scalar_t>(), nm);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {grad_features, grad_masks};
}

TORCH_LIBRARY_IMPL(freqfusion_d2, CUDA, m) {
  m.impl("carafe_forward", &carafe_forward_cuda);
  m.impl("carafe_backward", &carafe_backward_cuda);
}

}  // namespace freqfusion_d2
