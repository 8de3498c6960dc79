// Host side of the CUDA ops, written once for two launchers: the real one in
// conv2d_cuda.cu (<<<>>> on the current stream) and the CPU emulation in
// tests/cuda_emulation. Checks (conv2d_params.h), layouts, empty problems,
// plans, workspaces and dtype dispatch therefore run identically in both.
//
// A Launcher is callable as launch(kernel, LaunchDims, params).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../conv2d_params.h"
#include "conv2d_backward_input_kernels.cuh"
#include "conv2d_backward_weight_kernels.cuh"
#include "conv2d_cuda_plan.h"
#include "conv2d_depthwise_kernels.cuh"
#include "conv2d_forward_kernels.cuh"

namespace conv_ext {
namespace cuda {

struct LaunchDims {
  uint32_t grid[3];
  uint32_t block;
};

}  // namespace cuda
}  // namespace conv_ext

// Needs LaunchDims.
#include "conv2d_forward_mma.h"

namespace conv_ext {
namespace cuda {

inline LaunchDims dims_of(const LaunchPlan& plan) {
  return LaunchDims{{plan.grid[0], plan.grid[1], plan.grid[2]}, plan.block};
}

// The result computed in contiguous NCHW, in the format torch would return.
inline at::Tensor in_memory_format(const at::Tensor& result, at::MemoryFormat format) {
  return format == at::MemoryFormat::Contiguous ? result : result.contiguous(format);
}

// Calls f(Tile{}) with the GEMM tile type of a dense plan.
template <typename F>
void with_gemm_tile(KernelKind kind, F&& f) {
  switch (kind) {
    case KernelKind::kGemmHuge: f(HugeTile{}); break;
    case KernelKind::kGemmLarge: f(LargeTile{}); break;
    default: f(SmallTile{}); break;
  }
}

// Launches the fixed-order sum of the split partials into `out`.
template <typename scalar_t, typename Launcher>
void launch_sum_splits(const Launcher& launch, const LaunchPlan& plan,
                       const at::Tensor& workspace, int64_t count, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  launch(sum_splits_kernel<scalar_t, acc_t>,
         LaunchDims{{plan.reduce_grid, 1, 1}, static_cast<uint32_t>(kReduceThreads)},
         workspace.const_data_ptr<acc_t>(), plan.splits, count, out);
}

template <typename Launcher>
at::Tensor conv2d_forward_impl(const Launcher& launch, const at::Tensor& input,
                               const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape shape =
      check_conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  const auto format = conv2d_memory_format(input, weight);
  auto output = at::empty(shape.output_sizes(), input.options());
  if (output.numel() == 0) return in_memory_format(output, format);
  const bool has_bias = bias.has_value() && bias->defined();
  const auto b = has_bias ? bias->contiguous() : at::Tensor();
  // The tensor cores where they apply (conv2d_forward_mma.h).
  if (try_conv2d_forward_mma(launch, shape, input, weight, b,
                             input.scalar_type() == at::kFloat && torch_allows_tf32_conv(),
                             output)) {
    return output.contiguous(format);  // computed channels_last
  }
  const auto x = input.contiguous();
  const auto w = weight.contiguous();
  const LaunchPlan plan = plan_conv2d_forward(shape);
  const ConvGeometry g = make_geometry(shape);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "conv_ext_conv2d_forward_cuda", [&] {
        const scalar_t* bias_ptr = has_bias ? b.const_data_ptr<scalar_t>() : nullptr;
        if (plan.kernel == KernelKind::kDepthwise ||
            plan.kernel == KernelKind::kDepthwiseTiled) {
          const DepthwiseParams<scalar_t> params{
              x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), bias_ptr, nullptr,
              output.mutable_data_ptr<scalar_t>(), nullptr, g, 1, 0, plan.narrow_index};
          if (plan.kernel == KernelKind::kDepthwise) {
            launch(conv2d_depthwise_forward_kernel<scalar_t>, dims_of(plan), params);
          } else if (g.R == 3 && g.S == 3) {
            launch(conv2d_depthwise_forward_tiled_kernel<scalar_t, 3>, dims_of(plan), params,
                   plan.dw_tile);
          } else if (g.R == 5 && g.S == 5) {
            launch(conv2d_depthwise_forward_tiled_kernel<scalar_t, 5>, dims_of(plan), params,
                   plan.dw_tile);
          } else {
            launch(conv2d_depthwise_forward_tiled_kernel<scalar_t, 0>, dims_of(plan), params,
                   plan.dw_tile);
          }
          return;
        }
        const ForwardParams<scalar_t> params{
            x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), bias_ptr,
            output.mutable_data_ptr<scalar_t>(), g, plan.tiles_m, plan.tiles_n};
        with_gemm_tile(plan.kernel, [&](auto tile) {
          launch(conv2d_forward_gemm_kernel<scalar_t, decltype(tile)>, dims_of(plan), params);
        });
      });
  return in_memory_format(output, format);
}

template <typename Launcher>
at::Tensor conv2d_backward_input_impl(const Launcher& launch, const at::Tensor& grad_output,
                                      const at::Tensor& weight, at::IntArrayRef input_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape shape = check_conv2d_backward_input(grad_output, weight, input_size,
                                                        stride, padding, dilation, groups);
  const auto format = conv2d_memory_format(grad_output, weight);
  auto grad_input = at::empty(shape.input_sizes(), grad_output.options());
  if (grad_input.numel() == 0) return in_memory_format(grad_input, format);
  // Stride 1: the tensor-core forward with the flipped filter (conv2d_forward_mma.h).
  if (try_conv2d_backward_input_mma(
          launch, shape, grad_output, weight,
          grad_output.scalar_type() == at::kFloat && torch_allows_tf32_conv(), grad_input)) {
    return grad_input.contiguous(format);  // computed channels_last
  }
  const auto gy = grad_output.contiguous();
  const auto w = weight.contiguous();
  const LaunchPlan plan = plan_conv2d_backward_input(shape);
  const ConvGeometry g = make_geometry(shape);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(),
      "conv_ext_conv2d_backward_input_cuda", [&] {
        if (plan.kernel == KernelKind::kDepthwise ||
            plan.kernel == KernelKind::kDepthwiseTiled) {
          const DepthwiseParams<scalar_t> params{
              nullptr, w.const_data_ptr<scalar_t>(), nullptr, gy.const_data_ptr<scalar_t>(),
              grad_input.mutable_data_ptr<scalar_t>(), nullptr, g, 1, 0, plan.narrow_index};
          if (plan.kernel == KernelKind::kDepthwise) {
            launch(conv2d_depthwise_backward_input_kernel<scalar_t>, dims_of(plan), params);
          } else if (g.R == 3 && g.S == 3) {
            launch(conv2d_depthwise_backward_input_tiled_kernel<scalar_t, 3>, dims_of(plan),
                   params, plan.dw_tile);
          } else if (g.R == 5 && g.S == 5) {
            launch(conv2d_depthwise_backward_input_tiled_kernel<scalar_t, 5>, dims_of(plan),
                   params, plan.dw_tile);
          } else {
            launch(conv2d_depthwise_backward_input_tiled_kernel<scalar_t, 0>, dims_of(plan),
                   params, plan.dw_tile);
          }
          return;
        }
        const BackwardInputParams<scalar_t> params{
            gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
            grad_input.mutable_data_ptr<scalar_t>(), g, plan.phase_h_size,
            plan.phase_w_size, plan.tiles_m, plan.tiles_n};
        with_gemm_tile(plan.kernel, [&](auto tile) {
          launch(conv2d_backward_input_gemm_kernel<scalar_t, decltype(tile)>, dims_of(plan), params);
        });
      });
  return in_memory_format(grad_input, format);
}

template <typename Launcher>
at::Tensor conv2d_backward_weight_impl(const Launcher& launch, const at::Tensor& grad_output,
                                       const at::Tensor& input, at::IntArrayRef weight_size,
                                       at::IntArrayRef stride, at::IntArrayRef padding,
                                       at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape shape = check_conv2d_backward_weight(grad_output, input, weight_size,
                                                         stride, padding, dilation, groups);
  const auto format = conv2d_memory_format(grad_output, input);
  auto grad_weight = at::empty(shape.weight_sizes(), grad_output.options());
  if (grad_weight.numel() == 0) return in_memory_format(grad_weight, format);
  // An empty reduction (N = 0): the gradient is zero, no launch.
  if (grad_output.numel() == 0) return in_memory_format(grad_weight.zero_(), format);
  const auto gy = grad_output.contiguous();
  const auto x = input.contiguous();
  const LaunchPlan plan = plan_conv2d_backward_weight(shape);
  const ConvGeometry g = make_geometry(shape);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(),
      "conv_ext_conv2d_backward_weight_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        // Partials in the accumulation type, from torch's caching allocator.
        const auto workspace = at::empty(
            {plan.workspace_elements},
            grad_output.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
        if (plan.kernel == KernelKind::kDepthwise) {
          const DepthwiseParams<scalar_t> params{
              x.const_data_ptr<scalar_t>(), nullptr, nullptr, gy.const_data_ptr<scalar_t>(),
              nullptr, workspace.mutable_data_ptr<acc_t>(), g, plan.splits, plan.chunk, plan.narrow_index};
          launch(conv2d_depthwise_backward_weight_kernel<scalar_t>, dims_of(plan), params);
        } else {
          const BackwardWeightParams<scalar_t> params{
              gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
              workspace.mutable_data_ptr<acc_t>(), g, plan.tiles_m, plan.tiles_n,
              plan.splits, plan.chunk};
          with_gemm_tile(plan.kernel, [&](auto tile) {
            launch(conv2d_backward_weight_gemm_kernel<scalar_t, decltype(tile)>, dims_of(plan), params);
          });
        }
        launch_sum_splits<scalar_t>(launch, plan, workspace, grad_weight.numel(),
                                    grad_weight.mutable_data_ptr<scalar_t>());
      });
  return in_memory_format(grad_weight, format);
}

}  // namespace cuda
}  // namespace conv_ext
