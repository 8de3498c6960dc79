// conv2d_fused on the CPU: the forward convolution with the epilogue
// (conv2d_epilogue.h) in the kernels' store stage where the path takes it
// (conv2d_epilogue_cpu.h: dense and first-layer stores, the NHWC -> NCHW
// transposes, the pointwise tiles, the depthwise stores), else in one
// vectorized pass over the output in its layout (forward_with_epilogue).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../conv2d_front.h"
#include "conv2d_cpu_isa.h"

namespace conv_ext {
namespace cpu {
namespace {

at::Tensor conv2d_fused_cpu(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& scale,
                            const std::optional<at::Tensor>& shift,
                            const std::optional<at::Tensor>& residual,
                            c10::string_view activation, bool residual_before_activation,
                            at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups) {
  return conv2d_fused_front(
      input, weight, bias, scale, shift, residual, activation, residual_before_activation, stride,
      padding, dilation, groups,
      [](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const Conv2dShape& shape,
         at::MemoryFormat format, const EpilogueTensors& e) {
        return forward_with_epilogue(x, w, b, shape, format, &e);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(conv_ext, CPU, m) {
  m.impl("conv2d_fused", &conv2d_fused_cpu);
}

}  // namespace cpu
}  // namespace conv_ext
