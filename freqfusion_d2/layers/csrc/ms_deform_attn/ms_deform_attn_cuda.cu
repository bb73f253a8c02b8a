// CUDA launchers of multi-scale deformable attention: input checks, device guard, current
// stream, dtype dispatch. The level table is read by the kernels from device memory, so no
// host synchronisation is needed.
//
// Determinism: grad_value is accumulated with atomic adds (in float for half / bfloat16), so it
// may differ in the last bits from run to run; grad_sampling_locations and
// grad_attention_weights are deterministic.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "ms_deform_attn/ms_deform_attn.h"
#include "ms_deform_attn/ms_deform_attn_kernel.cuh"

namespace freqfusion_d2 {
namespace {

constexpr int kThreads = 256;

// Grid-stride loops cover any size; the grid is capped to stay well inside launch limits.
unsigned int num_blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 1 << 22));
}

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights) {
  const MSDeformAttnDims d = ms_deform_attn_check_inputs(value, spatial_shapes, level_start_index,
                                                         sampling_locations, attention_weights);
  TORCH_CHECK(value.is_cuda(), "ms_deform_attn_forward_cuda: expected CUDA tensors");
  const c10::cuda::CUDAGuard guard(value.device());
  const at::Tensor v = value.contiguous();
  const at::Tensor shapes = spatial_shapes.contiguous();
  const at::Tensor starts = level_start_index.contiguous();
  const at::Tensor loc = sampling_locations.contiguous();
  const at::Tensor attn = attention_weights.contiguous();
  at::Tensor out = at::empty({d.N, d.Lq, d.M * d.D}, v.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, v.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
        ms_deform_attn_forward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
            d, v.const_data_ptr<scalar_t>(), shapes.const_data_ptr<int64_t>(),
            starts.const_data_ptr<int64_t>(), loc.const_data_ptr<scalar_t>(),
            attn.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const MSDeformAttnDims d = ms_deform_attn_check_inputs(value, spatial_shapes, level_start_index,
                                                         sampling_locations, attention_weights);
  ms_deform_attn_check_grad_output(grad_output, d, value);
  TORCH_CHECK(value.is_cuda(), "ms_deform_attn_backward_cuda: expected CUDA tensors");
  const c10::cuda::CUDAGuard guard(value.device());
  const at::Tensor v = value.contiguous();
  const at::Tensor shapes = spatial_shapes.contiguous();
  const at::Tensor starts = level_start_index.contiguous();
  const at::Tensor loc = sampling_locations.contiguous();
  const at::Tensor attn = attention_weights.contiguous();
  const at::Tensor go = grad_output.to(v.scalar_type()).contiguous();
  const auto acc_dtype = at::toOpMathType(v.scalar_type());
  // Scatter target: zeros (rows no sample reaches keep a zero gradient), float for half/bf16.
  at::Tensor grad_value_acc = at::zeros(v.sizes(), v.options().dtype(acc_dtype));
  at::Tensor grad_loc = at::empty_like(loc);
  at::Tensor grad_attn = at::empty_like(attn);
  if (go.numel() == 0 || grad_attn.numel() == 0) {
    return {grad_value_acc.to(v.scalar_type()), grad_loc.zero_(), grad_attn.zero_()};
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, v.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const int64_t n_out = go.numel();
        ms_deform_attn_backward_value_kernel<scalar_t, acc_t>
            <<<num_blocks(n_out), kThreads, 0, stream>>>(
                d, go.const_data_ptr<scalar_t>(), shapes.const_data_ptr<int64_t>(),
                starts.const_data_ptr<int64_t>(), loc.const_data_ptr<scalar_t>(),
                attn.const_data_ptr<scalar_t>(), grad_value_acc.mutable_data_ptr<acc_t>(),
                n_out);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const int64_t n_samples = attn.numel();
        ms_deform_attn_backward_sample_kernel<scalar_t>
            <<<num_blocks(n_samples), kThreads, 0, stream>>>(
                d, go.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
                shapes.const_data_ptr<int64_t>(), starts.const_data_ptr<int64_t>(),
                loc.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(),
                grad_loc.mutable_data_ptr<scalar_t>(), grad_attn.mutable_data_ptr<scalar_t>(),
                n_samples);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {grad_value_acc.to(v.scalar_type()), grad_loc, grad_attn};
}

TORCH_LIBRARY_IMPL(freqfusion_d2, CUDA, m) {
  m.impl("ms_deform_attn_forward", &ms_deform_attn_forward_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace freqfusion_d2
