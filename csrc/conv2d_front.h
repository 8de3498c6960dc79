// The front of each conv_ext op, shared by the CPU and CUDA backends: the
// argument checks (conv2d_params.h), the memory format of the result and the
// empty cases happen here, once. A backend then gets the checked problem and
// returns the result in any dense layout; the front gives it the memory
// format torch would (a no-op where the backend already did).
//
// Backends are callables:
//   forward(input, weight, bias, shape, format)     bias undefined if none
//   backward_input(grad_output, weight, shape, format)
//   backward_weight(grad_output, input, shape, format)
// each called only for a non-empty result (and, for grad-weight, a non-empty
// reduction), and for conv2d_fused
//   fused(input, weight, bias, shape, format, epilogue_tensors)
// which returns the output with the epilogue applied.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "conv2d_fused_params.h"
#include "conv2d_params.h"

namespace conv_ext {

// `result` in `format`: as it is for contiguous NCHW (every backend's
// results are dense), else a copy unless it is already in that format.
inline at::Tensor in_memory_format(const at::Tensor& result, at::MemoryFormat format) {
  return format == at::MemoryFormat::Contiguous ? result : result.contiguous(format);
}

inline int64_t element_count(const std::array<int64_t, 4>& sizes) {
  return sizes[0] * sizes[1] * sizes[2] * sizes[3];
}

template <typename Backend>
at::Tensor conv2d_forward_front(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups, const Backend& backend) {
  const Conv2dShape shape =
      check_conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  const auto format = conv2d_memory_format(input, weight);
  if (element_count(shape.output_sizes()) == 0) {
    return in_memory_format(at::empty(shape.output_sizes(), input.options()), format);
  }
  const at::Tensor b = bias.has_value() && bias->defined() ? *bias : at::Tensor();
  return in_memory_format(backend(input, weight, b, shape, format), format);
}

template <typename Backend>
at::Tensor conv2d_backward_input_front(const at::Tensor& grad_output, const at::Tensor& weight,
                                       at::IntArrayRef input_size, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef dilation,
                                       int64_t groups, const Backend& backend) {
  const Conv2dShape shape =
      check_conv2d_backward("conv2d_backward_input", grad_output, input_size, weight.sizes(),
                            weight, "weight", stride, padding, dilation, groups);
  const auto format = conv2d_memory_format(grad_output, weight);
  if (element_count(shape.input_sizes()) == 0) {
    return in_memory_format(at::empty(shape.input_sizes(), grad_output.options()), format);
  }
  return in_memory_format(backend(grad_output, weight, shape, format), format);
}

template <typename Backend>
at::Tensor conv2d_backward_weight_front(const at::Tensor& grad_output, const at::Tensor& input,
                                        at::IntArrayRef weight_size, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef dilation,
                                        int64_t groups, const Backend& backend) {
  const Conv2dShape shape =
      check_conv2d_backward("conv2d_backward_weight", grad_output, input.sizes(), weight_size,
                            input, "input", stride, padding, dilation, groups);
  const auto format = conv2d_memory_format(grad_output, input);
  auto empty = [&] { return at::empty(shape.weight_sizes(), grad_output.options()); };
  if (element_count(shape.weight_sizes()) == 0) return in_memory_format(empty(), format);
  // An empty reduction (N = 0): the gradient is zero, no kernel.
  if (shape.N * shape.P * shape.Q == 0) return in_memory_format(empty().zero_(), format);
  return in_memory_format(backend(grad_output, input, shape, format), format);
}

// The fused op's checks, epilogue preparation and empty case, in one place
// for both backends. backend(input, weight, bias, shape, format, epilogue)
// returns the output in `format` with the epilogue applied: in the kernels'
// store stage (CPU) or as a pass after the forward (CUDA). bias is an
// undefined tensor when absent.
template <typename Backend>
at::Tensor conv2d_fused_front(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias,
                              const std::optional<at::Tensor>& scale,
                              const std::optional<at::Tensor>& shift,
                              const std::optional<at::Tensor>& residual,
                              c10::string_view activation, bool residual_before_activation,
                              at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, int64_t groups, const Backend& backend) {
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
  return in_memory_format(backend(input, weight, b, shape, format, e), format);
}

}  // namespace conv_ext
