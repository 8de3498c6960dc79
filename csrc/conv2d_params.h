// Shared shape arithmetic and argument checks for every conv_ext op, used by
// the CPU and CUDA kernels alike. The checks follow at::_convolution's order
// and messages (users and PyTorch's OpInfo error_inputs match on them):
// parameter lengths, signs, dimensionality, groups, channels, bias, kernel
// size, then dtype/device agreement, then supported dtypes.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/irange.h>

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "conv2d_shape.h"

namespace conv_ext {

// Accepts one value (used for both dimensions) or two, as F.conv2d does.
inline std::array<int64_t, 2> expand_conv2d_param(
    at::IntArrayRef values, const char* name) {
  TORCH_CHECK(values.size() == 1 || values.size() == 2,
              "expected ", name,
              " to be a single integer value or a list of 2 values to match the "
              "convolution dimensions, but got ", name, "=", values);
  if (values.size() == 1) return {values[0], values[0]};
  return {values[0], values[1]};
}

// d * (k - 1) + 1 without signed overflow; saturates at INT64_MAX, which is
// larger than any real input, so the kernel-size check still fires.
inline int64_t dilated_kernel_extent(int64_t kernel, int64_t dilation) {
  if (kernel <= 0) return 0;  // rejected by the kernel-size check
  int64_t span = 0;
  if (__builtin_mul_overflow(dilation, kernel - 1, &span) ||
      span == std::numeric_limits<int64_t>::max()) {
    return std::numeric_limits<int64_t>::max();
  }
  return span + 1;
}

inline std::string describe_dtype(const at::Tensor& t) {
  return std::string(t.dtype().name());
}

// Parameter checks shared by the three ops: signs and lengths of stride,
// padding, dilation and groups.
inline void check_conv2d_params(const std::array<int64_t, 2>& stride,
                                const std::array<int64_t, 2>& padding,
                                const std::array<int64_t, 2>& dilation,
                                int64_t groups) {
  TORCH_CHECK(groups > 0, "non-positive groups is not supported");
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0,
              "negative padding is not supported");
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0,
              "non-positive stride is not supported");
  TORCH_CHECK(dilation[0] > 0 && dilation[1] > 0,
              "dilation should be greater than zero, but got [", dilation[0],
              ", ", dilation[1], "]");
  // 2 * padding must not overflow when it is added to the input size.
  constexpr int64_t kMaxPad = std::numeric_limits<int64_t>::max() / 4;
  for (const auto i : c10::irange(2)) {
    TORCH_CHECK(padding[i] <= kMaxPad, "Given padding=", padding[i],
                " at dimension ", i, " , expected padding to be at most ",
                kMaxPad);
  }
}

// Checks of a (input, weight) pair against each other, in at::_convolution's
// order, and the output size. `input_sizes` and `weight_sizes` are sizes
// (not tensors) so the backward ops can check the sizes they are given.
inline Conv2dShape make_conv2d_shape(at::IntArrayRef input_sizes,
                                     at::IntArrayRef weight_sizes,
                                     const std::optional<at::IntArrayRef>& bias_sizes,
                                     at::IntArrayRef stride_arg,
                                     at::IntArrayRef padding_arg,
                                     at::IntArrayRef dilation_arg,
                                     int64_t groups) {
  const auto stride = expand_conv2d_param(stride_arg, "stride");
  const auto padding = expand_conv2d_param(padding_arg, "padding");
  const auto dilation = expand_conv2d_param(dilation_arg, "dilation");
  check_conv2d_params(stride, padding, dilation, groups);

  const int64_t k = static_cast<int64_t>(input_sizes.size());
  const int64_t weight_dim = static_cast<int64_t>(weight_sizes.size());
  TORCH_CHECK(weight_dim == k, "Expected ", weight_dim,
              "-dimensional input for ", weight_dim, "-dimensional weight ",
              weight_sizes, ", but got ", k, "-dimensional input of size ",
              input_sizes, " instead");
  TORCH_CHECK(k == 4, "Expected 4-dimensional input for 4-dimensional weight ",
              weight_sizes, ", but got ", k, "-dimensional input of size ",
              input_sizes, " instead");
  TORCH_CHECK(weight_sizes[0] >= groups, "Given groups=", groups,
              ", expected weight to be at least ", groups,
              " at dimension 0, but got weight of size ", weight_sizes,
              " instead");
  TORCH_CHECK(weight_sizes[0] % groups == 0, "Given groups=", groups,
              ", expected weight to be divisible by ", groups,
              " at dimension 0, but got weight of size [", weight_sizes,
              "] instead");
  TORCH_CHECK(input_sizes[1] == weight_sizes[1] * groups, "Given groups=",
              groups, ", weight of size ", weight_sizes, ", expected input",
              input_sizes, " to have ", weight_sizes[1] * groups,
              " channels, but got ", input_sizes[1], " channels instead");
  if (bias_sizes.has_value()) {
    const auto& b = *bias_sizes;
    TORCH_CHECK(b.size() == 1 && b[0] == weight_sizes[0], "Given weight of size ",
                weight_sizes, ", expected bias to be 1-dimensional with ",
                weight_sizes[0], " elements, but got bias of size ", b,
                " instead");
  }

  std::array<int64_t, 2> padded{input_sizes[2] + 2 * padding[0],
                                input_sizes[3] + 2 * padding[1]};
  std::array<int64_t, 2> extent{
      dilated_kernel_extent(weight_sizes[2], dilation[0]),
      dilated_kernel_extent(weight_sizes[3], dilation[1])};
  TORCH_CHECK(padded[0] >= extent[0] && padded[1] >= extent[1],
              "Calculated padded input size per channel: (", padded[0], " x ",
              padded[1], "). Kernel size: (", extent[0], " x ", extent[1],
              "). Kernel size can't be greater than actual input size");
  TORCH_CHECK(input_sizes[0] == 0 || input_sizes[1] == 0 ||
                  (input_sizes[2] > 0 && input_sizes[3] > 0),
              "Only zero batch or zero channel inputs are supported, but got "
              "input shape: ", input_sizes);
  TORCH_CHECK(weight_sizes[2] > 0 && weight_sizes[3] > 0,
              "kernel size should be greater than zero, but got kernel_height: ",
              weight_sizes[2], " kernel_width: ", weight_sizes[3]);

  Conv2dShape s;
  s.N = input_sizes[0];
  s.C = input_sizes[1];
  s.H = input_sizes[2];
  s.W = input_sizes[3];
  s.K = weight_sizes[0];
  s.R = weight_sizes[2];
  s.S = weight_sizes[3];
  s.groups = groups;
  s.C_per_group = weight_sizes[1];
  s.K_per_group = weight_sizes[0] / groups;
  s.stride_h = stride[0];
  s.stride_w = stride[1];
  s.pad_h = padding[0];
  s.pad_w = padding[1];
  s.dilation_h = dilation[0];
  s.dilation_w = dilation[1];
  s.P = conv_output_length(s.H, s.pad_h, extent[0], s.stride_h);
  s.Q = conv_output_length(s.W, s.pad_w, extent[1], s.stride_w);
  return s;
}

// The dtype/device agreement checks, after the shape checks as in torch.
inline void check_same_type(const at::Tensor& input, const char* input_name,
                            const at::Tensor& other, const char* other_name) {
  TORCH_CHECK(input.scalar_type() == other.scalar_type(), input_name,
              " type (", describe_dtype(input), ") and ", other_name, " type (",
              describe_dtype(other), ") should be the same");
  TORCH_CHECK(input.device() == other.device(), input_name, " type (",
              input.toString(), ") and ", other_name, " type (",
              other.toString(), ") should be the same, but got ", input_name,
              " on ", input.device(), " and ", other_name, " on ",
              other.device());
}

// conv_ext computes in floating point only; integer convolution is refused
// (NotImplementedError, a RuntimeError subclass) rather than approximated.
inline void check_supported_dtype(const at::Tensor& t, const char* op) {
  const auto st = t.scalar_type();
  TORCH_CHECK_NOT_IMPLEMENTED(
      st == at::kFloat || st == at::kDouble || st == at::kHalf ||
          st == at::kBFloat16,
      "conv_ext::", op,
      ": expected a floating-point tensor (float32, float64, float16 or "
      "bfloat16) but got ", t.scalar_type());
}

// The memory format torch gives a convolution's output: channels_last if
// either operand suggests it, else contiguous. An empty batch gives a
// contiguous output, as in torch.
inline at::MemoryFormat conv2d_memory_format(const at::Tensor& a,
                                             const at::Tensor& b) {
  if (a.dim() == 4 && a.size(0) == 0) return at::MemoryFormat::Contiguous;
  if (a.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
      b.suggest_memory_format() == at::MemoryFormat::ChannelsLast) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

// Forward: all checks of conv2d_forward, returning the problem shape.
inline Conv2dShape check_conv2d_forward(const at::Tensor& input,
                                        const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias,
                                        at::IntArrayRef stride,
                                        at::IntArrayRef padding,
                                        at::IntArrayRef dilation,
                                        int64_t groups) {
  const bool has_bias = bias.has_value() && bias->defined();
  std::optional<at::IntArrayRef> bias_sizes;
  if (has_bias) bias_sizes = bias->sizes();
  auto shape = make_conv2d_shape(input.sizes(), weight.sizes(), bias_sizes,
                                 stride, padding, dilation, groups);
  check_same_type(input, "Input", weight, "weight");
  if (has_bias) check_same_type(input, "Input", *bias, "bias");
  check_supported_dtype(input, "conv2d_forward");
  return shape;
}

// The backward ops: the sizes they are given (input and weight, one of them
// as a tensor `operand`) checked as a forward problem, then grad_output
// against that problem's output size.
inline Conv2dShape check_conv2d_backward(const char* op, const at::Tensor& grad_output,
                                         at::IntArrayRef input_size,
                                         at::IntArrayRef weight_size,
                                         const at::Tensor& operand, const char* operand_name,
                                         at::IntArrayRef stride, at::IntArrayRef padding,
                                         at::IntArrayRef dilation, int64_t groups) {
  auto shape = make_conv2d_shape(input_size, weight_size, std::nullopt, stride, padding,
                                 dilation, groups);
  const auto output_sizes = shape.output_sizes();
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(output_sizes), "conv_ext::", op,
              ": expected grad_output of size ", at::IntArrayRef(output_sizes), " but got ",
              grad_output.sizes());
  check_same_type(grad_output, "grad_output", operand, operand_name);
  check_supported_dtype(grad_output, op);
  return shape;
}

}  // namespace conv_ext
