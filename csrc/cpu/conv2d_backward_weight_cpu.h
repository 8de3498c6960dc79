// conv2d_backward_weight on the CPU: the backend behind the op front
// (conv2d_front.h; registered in conv2d_cpu_ops.cpp, one copy per ISA:
// conv2d_cpu_isa.h), running the path select_path names (conv2d_cpu_plan.h).
// Each result element is reduced by one thread in a fixed order on all
// paths: no atomics, identical results run to run and across thread counts.
#pragma once

#include "conv2d_backward_weight_kernels.h"
#include "conv2d_backward_weight_pointwise_kernels.h"
#include "conv2d_cpu_plan.h"
#include "conv2d_depthwise_kernels.h"
#include "conv2d_first_layer_kernels.h"
#include "conv2d_generic_kernels.h"
#include "conv2d_grouped_kernels.h"
#include "conv2d_layout_kernels.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// Depthwise: one channel per task on the forward's phase-split planes, or
// vectors along the channels on channels_last (conv2d_depthwise_kernels.h).
template <typename T>
at::Tensor depthwise_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                         const Conv2dShape& p) {
  auto grad_weight = at::empty(p.weight_sizes(), grad_output.options());
  T* gw = grad_weight.mutable_data_ptr<T>();
  const bool channels_last = p.K_per_group == 1 && input.stride(1) == 1 && input.stride(3) != 1;
  if (depthwise::use_weight_grad_channel_blocks(p, simd::Vec<T>::size, channels_last)) {
    // Narrow NCHW rows and channels_last: sliding windows over channel blocks.
    if (channels_last) {
      depthwise::backward_weight_channel_blocks<T>(
          grad_output.contiguous(at::MemoryFormat::ChannelsLast), input, gw, p, true);
    } else {
      depthwise::backward_weight_channel_blocks<T>(grad_output.contiguous(), input.contiguous(),
                                                   gw, p, false);
    }
    return grad_weight;
  }
  if (channels_last) {
    depthwise::backward_weight_nhwc<T>(grad_output.contiguous(at::MemoryFormat::ChannelsLast),
                                       input, gw, p);
    return grad_weight;
  }
  const at::Tensor gy = grad_output.stride(3) == 1 ? grad_output : grad_output.contiguous();
  depthwise::backward_weight_planes<T>(gy, input, gw, p);
  return grad_weight;
}

// Dense: a GEMM over the output pixels (conv2d_backward_weight_kernels.h).
// One operand is read in place (broadcasts, any strides), the other as
// vectors of channels from an NHWC buffer: the smaller of the two copies
// (grad_output for stride-2 layers and 1x1 reductions, the input for 1x1
// expansions), or none where a channels_last operand already has whole
// vectors of channels. NCHW first layers with rows of two vectors or more:
// first_layer::backward_weight, both read in place along the rows. Other
// first layers, and tensors of S = bfloat16/float16
// (the in-place operand would need widening in the tile): the fused (s, c)
// tiles on padded NHWC copies of both, widened to T = float in the copies,
// the result rounded once in the unpacking copy.
template <typename T, typename S = T>
at::Tensor dense_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                     const Conv2dShape& p, bool first_layer) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t Kb = (p.K + L - 1) / L, Cb = (p.C + L - 1) / L;
  if constexpr (std::is_same_v<T, S>) {
    // NCHW first layers with rows of (nearly) whole vectors: both operands
    // read in place along the rows (conv2d_first_layer_kernels.h), no NHWC copies.
    if (first_layer && input.is_contiguous() && first_layer::weight_grad_fits(p, L)) {
      at::Tensor gw = at::empty({p.K, p.C, p.R, p.S}, input.options());
      first_layer::backward_weight<T>(input, grad_output.contiguous().const_data_ptr<T>(),
                                      gw.mutable_data_ptr<T>(), p);
      return gw;
    }
  }
  if (first_layer || !std::is_same_v<T, S>) {
    const at::Tensor x = padded_nhwc<T, S>(input, p.pad_h, p.pad_w);
    const at::Tensor gy = padded_nhwc<T, S>(grad_output, 0, 0, Kb * L);
    at::Tensor packed = at::empty({Kb, p.R, p.S, p.C, L}, compute_options<T>(input.options()));
    first_layer_backward_weight<T>(x.const_data_ptr<T>(), gy.const_data_ptr<T>(),
                                   packed.mutable_data_ptr<T>(), p, p.H + 2 * p.pad_h,
                                   p.W + 2 * p.pad_w);
    // [Kb][R][S][C][L] -> [K][C][R][S]
    if constexpr (!std::is_same_v<T, S>) {
      at::Tensor gw = at::empty({Kb, L, p.C, p.R, p.S}, input.options());
      gw.copy_(packed.permute({0, 4, 3, 1, 2}));  // rounds to nearest even, as .to()
      return gw.view({Kb * L, p.C, p.R, p.S}).narrow(0, 0, p.K);
    }
    return packed.permute({0, 4, 3, 1, 2}).reshape({Kb * L, p.C, p.R, p.S}).narrow(0, 0, p.K)
        .contiguous();
  }
  if constexpr (std::is_same_v<T, S>) {
    if (p.is_pointwise() && !p.is_unit_stride()) {
      // 1x1 with stride: only every stride-th input pixel meets grad_output.
      // A compact copy of those (a quarter of the input at stride 2, in the
      // input's layout) makes it a stride-1 problem: the input no longer
      // the A operand read with stride (a_pixel = 4: chunks a quarter as
      // long, every accumulator loaded and stored 4x as often: 2048 x 1024
      // accumulators are 8 MB) and, NCHW, the smaller operand to copy
      // to NHWC instead of grad_output.
      const at::Tensor sub = input.slice(2, 0, p.H, p.stride_h).slice(3, 0, p.W, p.stride_w);
      const at::Tensor xs = input.is_contiguous(at::MemoryFormat::ChannelsLast)
                                ? sub.contiguous(at::MemoryFormat::ChannelsLast)
                                : sub.contiguous();
      Conv2dShape q = p;
      q.H = p.P;
      q.W = p.Q;
      q.stride_h = q.stride_w = 1;
      return dense_backward_weight_cpu<T, S>(grad_output, xs, q, false);
    }
    // An NHWC tensor with whole vectors of channels serves as B without a copy.
    auto usable_in_place = [](const at::Tensor& t, int64_t channels) {
      return channels % L == 0 && t.is_contiguous(at::MemoryFormat::ChannelsLast);
    };
    const int64_t gy_copy = usable_in_place(grad_output, p.K) ? 0 : p.N * p.P * p.Q * Kb * L;
    const int64_t x_copy = usable_in_place(input, p.C) ? 0 : p.N * p.H * p.W * Cb * L;
    // Both in place (channels_last, whole vectors): grad_output is B, but
    // where the input is the wider operand with pixels 4 KB or more apart
    // (1024+ float channels), the input is: as A its pixels' lines all fall
    // in the same L1 sets (one line per pixel read per A tile) and miss
    // (SPR, one thread: ResNet-50's 1024 -> 256 @14 0.65x -> 0.75x torch,
    // 2048 -> 512 @7 0.73x -> 0.85x; 256 -> 64 @56 went 0.90x -> 0.83x the
    // other way round, so not for narrower inputs).
    const bool x_wide = p.C > p.K && p.C * static_cast<int64_t>(sizeof(T)) >= 4096;
    const bool b_is_gy = gy_copy == 0 && x_copy == 0 ? !x_wide : gy_copy <= x_copy;
    // x as an operand: offsets of (n, c, oh, ow, r, s) in a tensor of strides st.
    auto x_operand = [&](const T* data, at::IntArrayRef st) {
      return WgradOperand<T>{.data = data, .image = st[0], .channel = st[1],
                             .row = p.stride_h * st[2], .col = p.stride_w * st[3],
                             .tap_row = p.dilation_h * st[2], .tap_col = p.dilation_w * st[3],
                             .origin = -p.pad_h * st[2] - p.pad_w * st[3]};
    };
    auto gy_operand = [](const T* data, at::IntArrayRef st) {
      return WgradOperand<T>{.data = data, .image = st[0], .channel = st[1], .row = st[2],
                             .col = st[3]};
    };
    // B: NHWC with channels padded to whole vectors (zero past the end).
    auto nhwc_b = [&](const at::Tensor& t, int64_t channels) {
      return usable_in_place(t, channels) ? t : padded_nhwc<T>(t, 0, 0, (channels + L - 1) / L * L)
          .permute({0, 3, 1, 2});  // NCHW view: the strides as for `t`
    };
    WgradProblem<T> w;
    at::Tensor b_buffer;
    if (b_is_gy) {
      b_buffer = nhwc_b(grad_output, p.K);
      w.A = x_operand(input.const_data_ptr<T>(), input.strides());
      w.B = gy_operand(b_buffer.const_data_ptr<T>(), b_buffer.strides());
      w.a_count = p.C;
      w.b_vectors = Kb;
      w.a_pixel = p.stride_h * p.stride_w;
    } else {
      b_buffer = nhwc_b(input, p.C);
      w.A = gy_operand(grad_output.const_data_ptr<T>(), grad_output.strides());
      w.B = x_operand(b_buffer.const_data_ptr<T>(), b_buffer.strides());
      w.a_count = p.K;
      w.b_vectors = Cb;
    }
    const at::Tensor packed = at::empty({w.b_vectors, p.R, p.S, w.a_count, L}, input.options());
    dense_backward_weight<T>(w, packed.mutable_data_ptr<T>(), p);
    if (b_is_gy) {  // [Kb][R][S][C][L] -> [K][C][R][S]
      return packed.permute({0, 4, 3, 1, 2}).reshape({Kb * L, p.C, p.R, p.S}).narrow(0, 0, p.K)
          .contiguous();
    }
    // [Cb][R][S][K][L] -> [K][C][R][S]
    return packed.permute({3, 0, 4, 1, 2}).reshape({p.K, Cb * L, p.R, p.S}).narrow(1, 0, p.C)
        .contiguous();
  }
  return at::Tensor();  // (S != T returned above)
}

// Whether each (n, c) plane of t has its H x W pixels contiguous (NCHW,
// also channel- or image-strided views).
inline bool pixels_contiguous(const at::Tensor& t) {
  return (t.size(3) == 1 || t.stride(3) == 1) && (t.size(2) == 1 || t.stride(2) == t.size(3));
}

// 1x1 stride 1 with both operands' planes contiguous: the dot-product tiles
// on the tensors in place (conv2d_backward_weight_pointwise_kernels.h).
template <typename T, typename S>
at::Tensor pointwise_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                         const Conv2dShape& p) {
  auto grad_weight = at::empty(p.weight_sizes(), grad_output.options());
  pointwise_backward_weight<T, S>(grad_output.const_data_ptr<S>(), grad_output.stride(0),
                                  grad_output.stride(1), input.const_data_ptr<S>(),
                                  input.stride(0), input.stride(1),
                                  grad_weight.mutable_data_ptr<S>(), p.N, p.K, p.C, p.H * p.W);
  return grad_weight;
}

// Other dtypes and grouped convolutions: one (k, c) filter slice per task,
// reducing over N, P and Q.
at::Tensor generic_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                       const Conv2dShape& p) {
  auto grad_weight = at::empty(p.weight_sizes(), grad_output.options());
  const auto gy = grad_output.contiguous();
  const auto x = input.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(), "conv2d_backward_weight_cpu_generic",
      [&] {
        conv2d_backward_weight_slices<scalar_t>(gy.const_data_ptr<scalar_t>(),
                                                x.const_data_ptr<scalar_t>(),
                                                grad_weight.mutable_data_ptr<scalar_t>(), p);
      });
  return grad_weight;
}

at::Tensor backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                               const Conv2dShape& p, at::MemoryFormat format) {
  const CpuPath path = select_path(p, Pass::kBackwardWeight, grad_output.scalar_type());
  if (path == CpuPath::kGeneric) return generic_backward_weight_cpu(grad_output, input, p);
  if (is_reduced_float(grad_output.scalar_type()) && path == CpuPath::kDepthwise) {
    // (depthwise: whole-tensor conversion, see forward_cpu)
    return backward_weight_cpu(to_float(grad_output), to_float(input), p, format)
        .to(grad_output.scalar_type());
  }
  at::Tensor result;
  // bfloat16/float16 (scalar_t) on the float kernels (T = float), as forward_cpu.
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "conv2d_backward_weight_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    if (path == CpuPath::kGrouped && grouped_runs_pointwise(p, Pass::kBackwardWeight) &&
        pixels_contiguous(grad_output) && pixels_contiguous(input)) {
      // One 1x1 grad-weight per group, on the group's planes in place.
      result = at::empty(p.weight_sizes(), grad_output.options());
      const int64_t Kg = p.K_per_group, Cg = p.C_per_group;
      for (int64_t g = 0; g < p.groups; ++g) {
        pointwise_backward_weight<T, scalar_t>(
            grad_output.const_data_ptr<scalar_t>() + g * Kg * grad_output.stride(1),
            grad_output.stride(0), grad_output.stride(1),
            input.const_data_ptr<scalar_t>() + g * Cg * input.stride(1), input.stride(0),
            input.stride(1), result.mutable_data_ptr<scalar_t>() + g * Kg * Cg, p.N, Kg, Cg,
            p.H * p.W);
      }
    } else if (path == CpuPath::kGrouped) {
      result = grouped::backward_weight_op<T, scalar_t>(grad_output, input, p);
    } else if (path == CpuPath::kDepthwise) {
      if constexpr (std::is_same_v<T, scalar_t>) {
        result = depthwise_backward_weight_cpu<scalar_t>(grad_output, input, p);
      }
    } else if (path == CpuPath::kPointwise && pixels_contiguous(grad_output) &&
               pixels_contiguous(input)) {
      result = pointwise_backward_weight_cpu<T, scalar_t>(grad_output, input, p);
    } else {  // (pointwise with other layouts: the dense GEMM)
      result = dense_backward_weight_cpu<T, scalar_t>(grad_output, input, p,
                                                      path == CpuPath::kFirstLayer);
    }
  });
  return result;
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
