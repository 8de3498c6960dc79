// CUDA entry points of the forward op and the fused (epilogue) forward op,
// which runs the same kernels: one translation unit per pass, so that the
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

at::Tensor conv2d_fused_cuda(const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& scale,
                             const std::optional<at::Tensor>& shift,
                             const std::optional<at::Tensor>& residual,
                             c10::string_view activation, bool residual_before_activation,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  return conv2d_fused_impl(CudaLauncher{}, input, weight, bias, scale, shift, residual,
                           activation, residual_before_activation, stride, padding, dilation,
                           groups);
}

}  // namespace cuda
}  // namespace conv_ext
