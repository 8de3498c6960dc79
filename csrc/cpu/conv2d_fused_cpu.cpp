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
  // conv2d_fused_front's checks and order, with the epilogue handed to the
  // backend instead of applied after it.
  const Conv2dShape shape =
      check_conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  check_conv2d_epilogue(input, shape, scale, shift, residual);
  const auto format = conv2d_memory_format(input, weight);
  const EpilogueTensors e = prepare_epilogue(scale, shift, residual, activation,
                                             residual_before_activation, format);
  if (element_count(shape.output_sizes()) == 0) {
    return in_memory_format(at::empty(shape.output_sizes(), input.options()), format);
  }
  const at::Tensor b = bias.has_value() && bias->defined() ? *bias : at::Tensor();
  return in_memory_format(forward_with_epilogue(input, weight, b, shape, format, &e), format);
}

}  // namespace

TORCH_LIBRARY_IMPL(conv_ext, CPU, m) {
  m.impl("conv2d_fused", &conv2d_fused_cpu);
}

}  // namespace cpu
}  // namespace conv_ext
