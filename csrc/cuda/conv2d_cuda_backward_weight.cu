// CUDA entry point of the grad-weight op; its own translation unit so that the
// build compiles each pass's kernel templates in parallel.
#include "conv2d_cuda_launcher.cuh"

namespace conv_ext {
namespace cuda {

at::Tensor conv2d_backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                       at::IntArrayRef weight_size, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef dilation,
                                       int64_t groups) {
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  return conv2d_backward_weight_impl(CudaLauncher{}, grad_output, input, weight_size, stride,
                                     padding, dilation, groups);
}

}  // namespace cuda
}  // namespace conv_ext
