// CUDA entry point of the forward op; its own translation unit so that the
// build compiles each pass's kernel templates in parallel.
#include "conv2d_cuda_launcher.cuh"

namespace conv_ext {
namespace cuda {

at::Tensor conv2d_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  return conv2d_forward_impl(CudaLauncher{}, input, weight, bias, stride, padding, dilation,
                             groups);
}

}  // namespace cuda
}  // namespace conv_ext
