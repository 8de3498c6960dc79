// CUDA entry points of the conv_ext ops: the launcher (<<<>>> on the current
// stream, checked after every launch) and the registration. Everything else
// (checks, plans, workspaces, dtype dispatch) is conv2d_cuda_ops.h, shared
// with the CPU emulation of the kernels that tests them without a GPU.
// c10's stream header rather than ATen/cuda/CUDAContext.h, which pulls in
// cuSPARSE/cuBLAS headers that a minimal CUDA toolkit does not ship.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "conv2d_cuda_ops.h"

namespace conv_ext {
namespace cuda {
namespace {

struct CudaLauncher {
  template <typename... KernelArgs, typename... Args>
  void operator()(void (*kernel)(KernelArgs...), const LaunchDims& dims,
                  const Args&... args) const {
    kernel<<<dim3(dims.grid[0], dims.grid[1], dims.grid[2]), dim3(dims.block), 0,
             c10::cuda::getCurrentCUDAStream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // mma.sync, ldmatrix and cp.async need sm_80 or newer.
  bool has_mma() const {
    int major = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor,
                                          c10::cuda::current_device()));
    return major >= 8;
  }
};

at::Tensor conv2d_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  return conv2d_forward_impl(CudaLauncher{}, input, weight, bias, stride, padding, dilation,
                             groups);
}

at::Tensor conv2d_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                      at::IntArrayRef input_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups) {
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  return conv2d_backward_input_impl(CudaLauncher{}, grad_output, weight, input_size, stride,
                                    padding, dilation, groups);
}

at::Tensor conv2d_backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                       at::IntArrayRef weight_size, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef dilation,
                                       int64_t groups) {
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  return conv2d_backward_weight_impl(CudaLauncher{}, grad_output, input, weight_size, stride,
                                     padding, dilation, groups);
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

}  // namespace

TORCH_LIBRARY_IMPL(conv_ext, CUDA, m) {
  m.impl("conv2d_forward", &conv2d_forward_cuda);
  m.impl("conv2d_backward_input", &conv2d_backward_input_cuda);
  m.impl("conv2d_backward_weight", &conv2d_backward_weight_cuda);
  m.impl("conv2d_fused", &conv2d_fused_cuda);
}

}  // namespace cuda
}  // namespace conv_ext
