// conv2d_forward on the CPU: the backend behind the op front
// (conv2d_front.h; registered in conv2d_cpu_ops.cpp, one copy per ISA:
// conv2d_cpu_isa.h), running the path select_path names (conv2d_cpu_plan.h).
// Every output element is summed in a fixed order by one thread on all
// paths, so results are identical run to run and across thread counts.
#pragma once

#include "conv2d_cpu_plan.h"
#include "conv2d_dense_kernels.h"
#include "conv2d_epilogue_cpu.h"
#include "conv2d_depthwise_kernels.h"
#include "conv2d_first_layer_kernels.h"
#include "conv2d_generic_kernels.h"
#include "conv2d_grouped_kernels.h"
#include "conv2d_layout_kernels.h"
#include "conv2d_pointwise_kernels.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// Dense, first-layer and channels_last pointwise paths: padded NHWC copy +
// packed weights + the register-blocked kernel, output written NHWC, or NCHW
// block by block from the kernel's work items (dense_writes_nchw).
// Tensors of S: T, or bfloat16/float16 on the float kernels (T = float),
// widened in the padded copy and the weight packing, the result rounded
// once where it leaves the kernel's buffers (NCHW block transpose, or the
// pass out of the NHWC buffer).
// epilogue: conv2d_fused's, applied in the tile stores (NHWC output), the
// NCHW block transpose or the NHWC -> NCHW pass, float and double only.
template <typename T, typename S = T>
at::Tensor dense_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& bias, const Conv2dShape& p, CpuPath path,
                             at::MemoryFormat format, EpilogueRequest* epilogue = nullptr) {
  constexpr int L = simd::Vec<T>::size;
  // A channels_last input is already the NHWC buffer: read in place, the
  // taps that meet padding skipped (DenseProblem::in_place), instead of a
  // zero-padded copy (about a tenth of a 3x3 layer's time on SPR, one
  // thread). Not for first layers (C < 8): their edge pixels would run in
  // tiles of 1-2 pixels on rows of few reduction steps.
  const bool use_input_as_is =
      std::is_same_v<S, T> && input.is_contiguous(at::MemoryFormat::ChannelsLast) &&
      (path == CpuPath::kPointwise || (path == CpuPath::kDense && p.pad_h + p.pad_w > 0) ||
       p.pad_h + p.pad_w == 0);
  const at::Tensor x = use_input_as_is ? input : padded_nhwc<T, S>(input, p.pad_h, p.pad_w);
  const at::Tensor w = pack_weights<T, S>(weight);
  const int64_t Kb = (p.K + L - 1) / L;
  at::Tensor b;
  if (bias.defined()) {
    b = at::zeros({Kb * L}, compute_options<T>(weight.options()));
    b.narrow(0, 0, p.K).copy_(bias);
  }
  DenseProblem d = dense_forward_problem(p);
  if (use_input_as_is && p.pad_h + p.pad_w > 0) {
    d.Hp = p.H;
    d.Wp = p.W;
    d.in_place = true;
    d.origin = -(p.pad_h * p.W + p.pad_w) * p.C;
  }
  d.nchw = format == at::MemoryFormat::Contiguous && dense_writes_nchw<T>(d);
  const T* bp = b.defined() ? b.const_data_ptr<T>() : nullptr;
  const bool fuse = std::is_same_v<S, T> && epilogue != nullptr;
  StoreEpilogue<T> ep;
  if (d.nchw) {
    auto out = at::empty(p.output_sizes(), input.options().memory_format(at::MemoryFormat::Contiguous));
    if (fuse) ep = store_epilogue<T>(*epilogue->tensors, out.const_data_ptr<T>());
    dense_forward<T, S>(x.const_data_ptr<T>(), w.const_data_ptr<T>(), bp,
                        out.mutable_data_ptr<S>(), d, fuse ? &ep : nullptr);
    if (fuse) epilogue->applied = true;
    return out;
  }
  at::Tensor out = at::empty(p.output_sizes(), compute_options<T>(input.options())
                                             .memory_format(at::MemoryFormat::ChannelsLast));
  const bool nhwc_final = format == at::MemoryFormat::ChannelsLast;
  if (fuse) ep = store_epilogue<T>(*epilogue->tensors, out.const_data_ptr<T>());
  dense_forward<T>(x.const_data_ptr<T>(), w.const_data_ptr<T>(), bp, out.mutable_data_ptr<T>(), d,
                   fuse && nhwc_final ? &ep : nullptr);
  if (!fuse || nhwc_final) {
    if (fuse) epilogue->applied = true;
    return nhwc_in_format<T, S>(out, format);
  }
  // NCHW result of a C-chunked problem: the epilogue in the transpose.
  at::Tensor nchw = at::empty(p.output_sizes(), input.options());
  if constexpr (std::is_same_v<S, T>) {
    ep = store_epilogue<T>(*epilogue->tensors, nchw.const_data_ptr<T>());
    nhwc_to_nchw<T, T>(out.const_data_ptr<T>(), nchw.mutable_data_ptr<T>(), p.N, p.K, p.P * p.Q,
                       &ep);
    epilogue->applied = true;
  }
  return nchw;
}

// Depthwise: NCHW planes through a phase-split buffer, or channels_last
// natively with vectors along the channels (conv2d_depthwise_kernels.h).
// epilogue: conv2d_fused's, in the stores (where the output has the
// format the residual was prepared in).
template <typename T>
at::Tensor depthwise_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                                 const at::Tensor& bias, const Conv2dShape& p,
                                 at::MemoryFormat format, EpilogueRequest* epilogue = nullptr) {
  const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
  const T* bp = b.defined() ? b.const_data_ptr<T>() : nullptr;
  StoreEpilogue<T> ep;
  auto epilogue_for = [&](const at::Tensor& out) -> const StoreEpilogue<T>* {
    if (epilogue == nullptr || !out.is_contiguous(format)) return nullptr;
    ep = store_epilogue<T>(*epilogue->tensors, out.const_data_ptr<T>());
    epilogue->applied = true;
    return &ep;
  };
  if (format == at::MemoryFormat::ChannelsLast && p.K_per_group == 1) {
    const at::Tensor x = input.stride(1) == 1 ? input : input.contiguous(at::MemoryFormat::ChannelsLast);
    // weights as [R][S][C]: one contiguous vector of channels per tap
    const at::Tensor wt = weight.reshape({p.C, p.taps()}).t().contiguous();
    auto out = at::empty(p.output_sizes(), input.options().memory_format(at::MemoryFormat::ChannelsLast));
    depthwise::forward_nhwc<T>(x, wt.const_data_ptr<T>(), bp, out.mutable_data_ptr<T>(), p,
                               epilogue_for(out));
    return out;
  }
  auto out = at::empty(p.output_sizes(), input.options());
  if (depthwise::use_channel_blocks(p, simd::Vec<T>::size)) {
    const at::Tensor w = weight.contiguous();
    depthwise::forward_channel_blocks<T>(input.contiguous(), w.const_data_ptr<T>(), bp,
                                         out.mutable_data_ptr<T>(), p, epilogue_for(out));
    return out;
  }
  const at::Tensor w = weight.contiguous();
  depthwise::forward_planes<T>(input, w.const_data_ptr<T>(), bp, out.mutable_data_ptr<T>(), p,
                               epilogue_for(out));
  return out;
}

// Other dtypes and grouped convolutions: contiguous NCHW, one plane per task.
at::Tensor generic_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                               const at::Tensor& bias, const Conv2dShape& p) {
  auto output = at::empty(p.output_sizes(), input.options());
  const auto x = input.contiguous();
  const auto w = weight.contiguous();
  const auto b = bias.defined() ? bias.contiguous() : bias;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "conv2d_forward_cpu_generic", [&] {
        conv2d_forward_planes<scalar_t>(
            x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
            b.defined() ? b.const_data_ptr<scalar_t>() : nullptr,
            output.mutable_data_ptr<scalar_t>(), p);
      });
  return output;
}

// conv2d_fused's epilogue as a separate pass over a finished output in `format`.
inline void epilogue_cpu(at::Tensor& output, const EpilogueTensors& tensors, const Conv2dShape& p,
                         at::MemoryFormat format) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "conv2d_fused_cpu", [&] {
    epilogue_pass<scalar_t>(output.mutable_data_ptr<scalar_t>(), tensors, p.N, p.K, p.P * p.Q,
                            format == at::MemoryFormat::ChannelsLast);
  });
}

// epilogue: null for conv2d_forward; for conv2d_fused the paths below that
// take it in their stores (float and double) mark it applied.
at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                       const Conv2dShape& p, at::MemoryFormat format,
                       EpilogueRequest* epilogue = nullptr) {
  const CpuPath path = select_path(p, Pass::kForward, input.scalar_type());
  if (path == CpuPath::kGeneric) return generic_forward_cpu(input, weight, bias, p);
  if (is_reduced_float(input.scalar_type()) && path == CpuPath::kDepthwise) {
    // Depthwise still converts the whole tensors (its plane copies do not
    // convert yet): the float32 kernels, one rounding at the end.
    return forward_cpu(to_float(input), to_float(weight), to_float(bias), p, format)
        .to(input.scalar_type());
  }
  at::Tensor result;
  // bfloat16/float16 (scalar_t) run on the float kernels (T = float): the
  // layout copies widen, the result is rounded once (is_reduced_float).
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "conv2d_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    if (path == CpuPath::kGrouped && format == at::MemoryFormat::Contiguous &&
        grouped_runs_pointwise(p, Pass::kForward)) {
      result = pointwise_nchw<T, scalar_t>(input, weight.view({p.K, p.C_per_group}), bias,
                                           p.stride_h, p.stride_w, p.P, p.Q, nullptr, p.groups);
    } else if (path == CpuPath::kGrouped) {
      result = grouped::forward_op<T, scalar_t>(input, weight, bias, p, format);
    } else if (path == CpuPath::kDepthwise) {
      if constexpr (std::is_same_v<T, scalar_t>) {
        result = depthwise_forward_cpu<scalar_t>(input, weight, bias, p, format, epilogue);
      }
    } else if (std::is_same_v<T, scalar_t> && path == CpuPath::kFirstLayer &&
               format == at::MemoryFormat::Contiguous &&
               first_layer::fits(p, simd::Vec<T>::size)) {
      // float and double only: its copies do not convert (bfloat16 and
      // float16 first layers take the dense kernel, whose copies do).
      if constexpr (std::is_same_v<T, scalar_t>) {
        StoreEpilogue<scalar_t> ep;
        result = at::empty(p.output_sizes(), input.options());
        if (epilogue != nullptr) {
          ep = store_epilogue<scalar_t>(*epilogue->tensors, result.const_data_ptr<scalar_t>());
          epilogue->applied = true;
        }
        first_layer::forward<scalar_t>(input, weight, bias, p, result,
                                       epilogue != nullptr ? &ep : nullptr);
      }
    } else if (path == CpuPath::kPointwise && format == at::MemoryFormat::Contiguous) {
      result = pointwise_nchw<T, scalar_t>(input, weight.view({p.K, p.C}), bias, p.stride_h,
                                           p.stride_w, p.P, p.Q, epilogue);
    } else {  // channels_last pointwise runs as a dense problem: NHWC in, NHWC out
      result = dense_forward_cpu<T, scalar_t>(input, weight, bias, p, path, format, epilogue);
    }
  });
  return result;
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
