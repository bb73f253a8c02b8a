// The one binding file of freqfusion_d2._C.
//
// Ops are registered with the PyTorch dispatcher (TORCH_LIBRARY) so they are reachable as
// torch.ops.freqfusion_d2.* from Python, TorchScript and torch.compile; the CPU and CUDA kernels
// register themselves in their own translation units. The pybind11 module only reports how the
// extension was built.
#include <torch/extension.h>
#include <torch/library.h>

namespace freqfusion_d2 {

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace freqfusion_d2

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("with_cuda", &freqfusion_d2::with_cuda, "Whether the CUDA kernels were compiled in.");
}

TORCH_LIBRARY(freqfusion_d2, m) {
  m.def(
      "carafe_forward(Tensor features, Tensor masks, int kernel_size, int group_size, "
      "int scale_factor) -> Tensor");
  m.def(
      "carafe_backward(Tensor grad_output, Tensor features, Tensor masks, int kernel_size, "
      "int group_size, int scale_factor) -> (Tensor, Tensor)");
  m.def(
      "ms_deform_attn_forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}
