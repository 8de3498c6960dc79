// Host side of the CUDA ops, written once for two launchers: the real one in
// conv2d_cuda.cu (<<<>>> on the current stream) and the CPU emulation in
// tests/cuda_emulation. The op fronts (conv2d_front.h: checks, memory format,
// empty problems), plans, workspaces and dtype dispatch therefore run
// identically in both.
//
// A Launcher is callable as launch(kernel, LaunchDims, params).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../conv2d_front.h"
#include "../static_switch.h"
#include "conv2d_backward_input_kernels.cuh"
#include "conv2d_backward_weight_kernels.cuh"
#include "conv2d_cuda_plan.h"
#include "conv2d_depthwise_kernels.cuh"
#include "conv2d_epilogue_kernels.cuh"
#include "conv2d_forward_kernels.cuh"

namespace conv_ext {
namespace cuda {

struct LaunchDims {
  uint32_t grid[3];
  uint32_t block;
  uint32_t shared_bytes = 0;  // dynamic shared memory (dynamic_shared_bytes)
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

}  // namespace cuda
}  // namespace conv_ext

// Needs dims_of and launch_sum_splits.
#include "conv2d_backward_weight_mma.h"

namespace conv_ext {
namespace cuda {

// The backends behind the op fronts (conv2d_front.h): contiguous NCHW
// operands (channels_last for the tensor cores), results in contiguous NCHW
// or `format`.
template <typename Launcher>
at::Tensor conv2d_forward_cuda_backend(const Launcher& launch, const at::Tensor& input,
                                       const at::Tensor& weight, const at::Tensor& bias,
                                       const Conv2dShape& g, at::MemoryFormat format) {
  const auto b = bias.defined() ? bias.contiguous() : bias;
  // The tensor cores where they apply (conv2d_forward_mma.h); computed
  // channels_last.
  at::Tensor mma_output;
  if (try_conv2d_forward_mma(launch, g, input, weight, b,
                             input.scalar_type() == at::kFloat && torch_allows_tf32_conv(),
                             mma_output)) {
    return to_memory_format(launch, mma_output, format);
  }
  auto output = at::empty(g.output_sizes(), input.options());
  const at::Tensor x = to_memory_format(launch, input, at::MemoryFormat::Contiguous);
  const auto w = weight.contiguous();
  const LaunchPlan plan = plan_conv2d_forward(g, input.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "conv_ext_conv2d_forward_cuda", [&] {
        const scalar_t* bias_ptr = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
        if (plan.kernel == KernelKind::kDepthwise ||
            plan.kernel == KernelKind::kDepthwiseTiled) {
          const DepthwiseParams<scalar_t> params{
              x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), bias_ptr, nullptr,
              output.mutable_data_ptr<scalar_t>(), nullptr, g, 1, 0, plan.narrow_index};
          if (plan.kernel == KernelKind::kDepthwise) {
            launch(conv2d_depthwise_forward_kernel<scalar_t>, dims_of(plan), params);
            return;
          }
          KERNEL_SIZE_SWITCH(g.R, g.S, kKernel, [&] {
            launch(conv2d_depthwise_forward_tiled_kernel<scalar_t, kKernel>, dims_of(plan),
                   params, plan.dw_tile);
          });
          return;
        }
        const ForwardParams<scalar_t> params{
            x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), bias_ptr,
            output.mutable_data_ptr<scalar_t>(), g, plan.tiles_m, plan.tiles_n};
        with_gemm_tile(plan.kernel, [&](auto tile) {
          launch(conv2d_forward_gemm_kernel<scalar_t, decltype(tile)>, dims_of(plan), params);
        });
      });
  return to_memory_format(launch, output, format);
}

template <typename Launcher>
at::Tensor conv2d_backward_input_cuda_backend(const Launcher& launch,
                                              const at::Tensor& grad_output,
                                              const at::Tensor& weight, const Conv2dShape& g,
                                              at::MemoryFormat format) {
  // Stride 1: the tensor-core forward with the flipped filter
  // (conv2d_forward_mma.h); computed channels_last.
  at::Tensor mma_grad_input;
  if (try_conv2d_backward_input_mma(
          launch, g, grad_output, weight,
          grad_output.scalar_type() == at::kFloat && torch_allows_tf32_conv(), mma_grad_input)) {
    return to_memory_format(launch, mma_grad_input, format);
  }
  auto grad_input = at::empty(g.input_sizes(), grad_output.options());
  const at::Tensor gy = to_memory_format(launch, grad_output, at::MemoryFormat::Contiguous);
  const auto w = weight.contiguous();
  const LaunchPlan plan = plan_conv2d_backward_input(g, grad_output.scalar_type());
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
            return;
          }
          KERNEL_SIZE_SWITCH(g.R, g.S, kKernel, [&] {
            launch(conv2d_depthwise_backward_input_tiled_kernel<scalar_t, kKernel>,
                   dims_of(plan), params, plan.dw_tile);
          });
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
  return to_memory_format(launch, grad_input, format);
}

template <typename Launcher>
at::Tensor conv2d_backward_weight_cuda_backend(const Launcher& launch,
                                               const at::Tensor& grad_output,
                                               const at::Tensor& input, const Conv2dShape& g) {
  // The tensor cores where they apply (conv2d_backward_weight_mma.h);
  // computed channels_last.
  at::Tensor mma_grad_weight;
  if (try_conv2d_backward_weight_mma(
          launch, g, grad_output, input,
          input.scalar_type() == at::kFloat && torch_allows_tf32_conv(), mma_grad_weight)) {
    return mma_grad_weight;
  }
  auto grad_weight = at::empty(g.weight_sizes(), grad_output.options());
  const at::Tensor gy = to_memory_format(launch, grad_output, at::MemoryFormat::Contiguous);
  const at::Tensor x = to_memory_format(launch, input, at::MemoryFormat::Contiguous);
  const LaunchPlan plan = plan_conv2d_backward_weight(g, grad_output.scalar_type());
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
  return grad_weight;
}

// The ops: the shared fronts with these backends.
template <typename Launcher>
at::Tensor conv2d_forward_impl(const Launcher& launch, const at::Tensor& input,
                               const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups) {
  return conv2d_forward_front(
      input, weight, bias, stride, padding, dilation, groups,
      [&](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const Conv2dShape& g,
          at::MemoryFormat format) {
        return conv2d_forward_cuda_backend(launch, x, w, b, g, format);
      });
}

template <typename Launcher>
at::Tensor conv2d_backward_input_impl(const Launcher& launch, const at::Tensor& grad_output,
                                      const at::Tensor& weight, at::IntArrayRef input_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups) {
  return conv2d_backward_input_front(
      grad_output, weight, input_size, stride, padding, dilation, groups,
      [&](const at::Tensor& gy, const at::Tensor& w, const Conv2dShape& g,
          at::MemoryFormat format) {
        return conv2d_backward_input_cuda_backend(launch, gy, w, g, format);
      });
}

template <typename Launcher>
at::Tensor conv2d_backward_weight_impl(const Launcher& launch, const at::Tensor& grad_output,
                                       const at::Tensor& input, at::IntArrayRef weight_size,
                                       at::IntArrayRef stride, at::IntArrayRef padding,
                                       at::IntArrayRef dilation, int64_t groups) {
  return conv2d_backward_weight_front(
      grad_output, input, weight_size, stride, padding, dilation, groups,
      [&](const at::Tensor& gy, const at::Tensor& x, const Conv2dShape& g, at::MemoryFormat) {
        return conv2d_backward_weight_cuda_backend(launch, gy, x, g);
      });
}

// conv2d_fused: the forward, then its epilogue in one elementwise pass over
// the output in the output's layout.
template <typename Launcher>
at::Tensor conv2d_fused_impl(const Launcher& launch, const at::Tensor& input,
                             const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& scale,
                             const std::optional<at::Tensor>& shift,
                             const std::optional<at::Tensor>& residual,
                             c10::string_view activation, bool residual_before_activation,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups) {
  return conv2d_fused_front(
      input, weight, bias, scale, shift, residual, activation, residual_before_activation, stride,
      padding, dilation, groups,
      [&](const at::Tensor& x, const at::Tensor& w, const at::Tensor& /*b*/,
          const Conv2dShape& shape, at::MemoryFormat format, const EpilogueTensors& e) {
        // The epilogue is a pass after the forward (not yet in the kernels' store).
        at::Tensor output = conv2d_forward_impl(launch, x, w, bias, stride, padding, dilation,
                                                groups)
                                .contiguous(format);  // a no-op: the forward returns this layout
        AT_DISPATCH_FLOATING_TYPES_AND2(
            at::kHalf, at::kBFloat16, output.scalar_type(), "conv_ext_conv2d_fused_cuda", [&] {
              const Epilogue<scalar_t> ep = e.view<scalar_t>();
              if (ep.is_identity()) return;
              const int64_t count = output.numel();
              launch(conv2d_epilogue_kernel<scalar_t>,
                     LaunchDims{{grid_dim(ceil_div(count, kEpilogueThreads), kMaxElementwiseBlocks),
                                 1, 1},
                                static_cast<uint32_t>(kEpilogueThreads)},
                     output.mutable_data_ptr<scalar_t>(), ep, count, shape.K, shape.P * shape.Q,
                     format == at::MemoryFormat::ChannelsLast);
            });
        return output;
      });
}

}  // namespace cuda
}  // namespace conv_ext
