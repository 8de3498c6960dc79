// conv2d_backward_input on the CPU: the backend behind the op front
// (conv2d_front.h; registered in conv2d_cpu_ops.cpp, one copy per ISA:
// conv2d_cpu_isa.h), running the path select_path names (conv2d_cpu_plan.h).
// Every element is accumulated by one thread in a fixed order on all paths:
// no atomics, identical results run to run and across thread counts.
#pragma once

#include "conv2d_backward_input_kernels.h"
#include "conv2d_cpu_plan.h"
#include "conv2d_depthwise_kernels.h"
#include "conv2d_generic_kernels.h"
#include "conv2d_grouped_kernels.h"
#include "conv2d_layout_kernels.h"
#include "conv2d_pointwise_kernels.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// Depthwise: per plane and stride phase, a forward problem on the
// grad_output plane with the rotated sub-filter (conv2d_depthwise_kernels.h).
template <typename T>
at::Tensor depthwise_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                        const Conv2dShape& p, at::MemoryFormat format) {
  if (format == at::MemoryFormat::ChannelsLast && depthwise::nhwc_input_grad_as_forward(p)) {
    // The channels_last forward kernel with the rotated filter, as [R][S][C].
    const at::Tensor gy = grad_output.stride(1) == 1
                              ? grad_output
                              : grad_output.contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor wt = weight.flip({2, 3}).reshape({p.C, p.taps()}).t().contiguous();
    auto gx = at::empty(p.input_sizes(),
                        grad_output.options().memory_format(at::MemoryFormat::ChannelsLast));
    depthwise::forward_nhwc<T>(gy, wt.const_data_ptr<T>(), nullptr, gx.mutable_data_ptr<T>(),
                               depthwise::input_grad_forward_shape(p));
    return gx;
  }
  auto grad_input = at::empty(p.input_sizes(), grad_output.options());
  if (depthwise::nhwc_input_grad_as_forward(p) &&
      depthwise::use_channel_blocks(depthwise::input_grad_forward_shape(p), simd::Vec<T>::size)) {
    // Narrow planes: the channel-blocked forward with the rotated filter.
    const at::Tensor w = weight.flip({2, 3}).contiguous();
    depthwise::forward_channel_blocks<T>(grad_output.contiguous(), w.const_data_ptr<T>(), nullptr,
                                         grad_input.mutable_data_ptr<T>(),
                                         depthwise::input_grad_forward_shape(p));
    return grad_input;
  }
  const at::Tensor w = weight.contiguous();
  const at::Tensor gy = grad_output.stride(3) == 1 ? grad_output : grad_output.contiguous();
  depthwise::backward_input_planes<T>(gy, w.const_data_ptr<T>(), grad_input.mutable_data_ptr<T>(), p);
  return grad_input;
}

// Dense (and pointwise on channels_last): one unit-stride dense problem per
// stride phase, NHWC grad_input. Tensors of S: T, or bfloat16/float16 on
// the float kernels (T = float), rounded once where the result leaves them.
template <typename T, typename S = T>
at::Tensor dense_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                    const Conv2dShape& p, at::MemoryFormat format) {
  if (format == at::MemoryFormat::Contiguous && dense_backward_input_writes_nchw<T>(p)) {
    auto gx = at::empty(p.input_sizes(), grad_output.options());
    dense_backward_input<T, S, S>(grad_output, weight, gx.mutable_data_ptr<S>(), p,
                                  /*nchw=*/true);
    return gx;
  }
  const at::TensorOptions options = compute_options<T>(grad_output.options())
                           .memory_format(at::MemoryFormat::ChannelsLast);
  // (at::zeros would ignore the memory format in options)
  auto gx = at::empty(p.input_sizes(), options);
  if (backward_input_has_empty_phase(p)) zero_empty_phases_nhwc<T>(gx.mutable_data_ptr<T>(), p);
  dense_backward_input<T, S>(grad_output, weight, gx.mutable_data_ptr<T>(), p);
  return nhwc_in_format<T, S>(gx, format);
}

// Other dtypes and grouped convolutions: the transpose of the forward loop
// nest, one grad_input plane (n, c) per task.
at::Tensor generic_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                      const Conv2dShape& p) {
  auto grad_input = at::empty(p.input_sizes(), grad_output.options());
  const auto gy = grad_output.contiguous();
  const auto w = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(), "conv2d_backward_input_cpu_generic",
      [&] {
        conv2d_backward_input_planes<scalar_t>(gy.const_data_ptr<scalar_t>(),
                                               w.const_data_ptr<scalar_t>(),
                                               grad_input.mutable_data_ptr<scalar_t>(), p);
      });
  return grad_input;
}

at::Tensor backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                              const Conv2dShape& p, at::MemoryFormat format) {
  const CpuPath path = select_path(p, Pass::kBackwardInput, grad_output.scalar_type());
  if (path == CpuPath::kGeneric) return generic_backward_input_cpu(grad_output, weight, p);
  if (is_reduced_float(grad_output.scalar_type()) && path == CpuPath::kDepthwise) {
    // (depthwise: whole-tensor conversion, see forward_cpu)
    return backward_input_cpu(to_float(grad_output), to_float(weight), p, format)
        .to(grad_output.scalar_type());
  }
  at::Tensor result;
  // bfloat16/float16 (scalar_t) on the float kernels (T = float), as forward_cpu.
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "conv2d_backward_input_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    if (path == CpuPath::kGrouped && format == at::MemoryFormat::Contiguous &&
        grouped_runs_pointwise(p, Pass::kBackwardInput)) {
      // Per group g: grad_input[Cg][HW] = W_g^T[Cg][Kg] grad_output[Kg][HW].
      const at::Tensor wt = weight.view({p.groups, p.K_per_group, p.C_per_group})
                                .transpose(1, 2)
                                .reshape({p.C, p.K_per_group});
      result = pointwise_nchw<T, scalar_t>(grad_output, wt, at::Tensor(), 1, 1, p.H, p.W,
                                           nullptr, p.groups);
    } else if (path == CpuPath::kGrouped) {
      result = grouped::backward_input_op<T, scalar_t>(grad_output, weight, p, format);
    } else if (path == CpuPath::kDepthwise) {
      if constexpr (std::is_same_v<T, scalar_t>) {
        result = depthwise_backward_input_cpu<scalar_t>(grad_output, weight, p, format);
      }
    } else if (path == CpuPath::kPointwise && format == at::MemoryFormat::Contiguous) {
      // grad_input[C][HW] = W^T[C][K] grad_output[K][HW] per image.
      result = pointwise_nchw<T, scalar_t>(grad_output, weight.view({p.K, p.C}).t(),
                                           at::Tensor(), 1, 1, p.H, p.W);
    } else {  // channels_last pointwise runs as a dense problem: NHWC in, NHWC out
      result = dense_backward_input_cpu<T, scalar_t>(grad_output, weight, p, format);
    }
  });
  return result;
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
