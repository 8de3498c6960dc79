// CUDA entry points of the conv_ext ops. Placeholder until the CUDA kernels
// land (issue 3): it proves the CUDA half of the build compiles and links.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../conv2d_params.h"

namespace conv_ext {
namespace cuda {
namespace {

at::Tensor conv2d_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups) {
  check_conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  TORCH_CHECK_NOT_IMPLEMENTED(false, "conv_ext: CUDA conv2d_forward is not implemented yet");
}

}  // namespace

TORCH_LIBRARY_IMPL(conv_ext, CUDA, m) {
  m.impl("conv2d_forward", &conv2d_forward_cuda);
}

}  // namespace cuda
}  // namespace conv_ext
