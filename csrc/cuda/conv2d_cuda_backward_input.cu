// CUDA entry point of the grad-input op; its own translation unit so that the
// build compiles each pass's kernel templates in parallel.
#include "conv2d_cuda_launcher.cuh"

namespace conv_ext {
namespace cuda {

at::Tensor conv2d_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                      at::IntArrayRef input_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups) {
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  return conv2d_backward_input_impl(CudaLauncher{}, grad_output, weight, input_size, stride,
                                    padding, dilation, groups);
}

}  // namespace cuda
}  // namespace conv_ext
