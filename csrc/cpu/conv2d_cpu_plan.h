// Which CPU kernel runs a problem: the one place the CPU ops choose a path,
// for all three passes.
//
//   depthwise    groups > 1, one input channel per group, any channel
//                multiplier (float, double): NCHW per plane on a zero-padded,
//                stride-phase-split copy; channels_last natively, vectors
//                along the channels (conv2d_depthwise_kernels.h)
//   pointwise    1x1, no padding (float, double): forward a GEMM per image on
//                NCHW data (conv2d_pointwise_kernels.h); grad-input the same
//                with the transposed weight where the stride is 1;
//                grad-weight at stride 1 with K + C <= 256 dot-product tiles
//                on the NCHW operands in place
//                (conv2d_backward_weight_pointwise_kernels.h)
//   first_layer  few input channels (C < 8): forward into NCHW with output
//                rows of 2+ vectors, tiles of output channels x pixels along
//                the row (conv2d_first_layer_kernels.h), else the dense
//                kernel with its (s, c) loops fused; grad-weight tiles over
//                the fused (s, c) index (conv2d_backward_weight_kernels.h)
//   dense        groups == 1 (float, double): register-blocked direct
//                convolution on padded NHWC copies (conv2d_dense_kernels.h);
//                grad-input one such problem per stride phase
//                (conv2d_backward_input_kernels.h), grad-weight a GEMM over
//                the pixels on one operand in place and an NHWC copy of the
//                other (conv2d_backward_weight_kernels.h); 1x1 with stride
//                as a stride-1 problem on a compact copy of the input pixels
//                that meet grad_output
//   grouped      groups > 1 with 2+ input channels per group: register-blocked
//                direct kernels with several groups per SIMD vector
//                (conv2d_grouped_kernels.h)
//   generic      everything else (other dtypes, empty reductions): plain
//                loops, one output plane per task
//                (conv2d_generic_kernels.h)
//
// bfloat16 and float16 take the float32 kernels of their path: widened to
// float inside the layout copies and packing, float32 accumulation, one
// rounding (to nearest even) where the result leaves the kernels' buffers;
// depthwise still converts whole tensors first (see is_reduced_float).
#pragma once


#include <ATen/ATen.h>

#include "../conv2d_shape.h"

namespace conv_ext {
namespace cpu {

enum class CpuPath { kGeneric, kPointwise, kFirstLayer, kDense, kDepthwise, kGrouped };

inline const char* path_name(CpuPath path) {
  switch (path) {
    case CpuPath::kPointwise: return "pointwise";
    case CpuPath::kFirstLayer: return "first_layer";
    case CpuPath::kDense: return "dense";
    case CpuPath::kDepthwise: return "depthwise";
    case CpuPath::kGrouped: return "grouped";
    case CpuPath::kGeneric: break;
  }
  return "generic";
}

// bfloat16 and float16 run on the float32 kernels (T = at::opmath_type,
// elements in memory simd::Stored): converted in the copies on the way in,
// float32 accumulation, rounded once at the end.
inline bool is_reduced_float(at::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf;
}

// grad-weight of 1x1 stride-1 layers up to this many channels (K + C) runs
// the dot-product tiles on NCHW operands in place (no layout copy); above,
// the dense GEMM's copy of one operand is amortised over more FMAs.
inline constexpr int64_t kPointwiseWgradMaxChannels = 256;

// A grouped 1x1 convolution (no padding) whose groups have at least this
// many channels on both sides runs, on NCHW tensors, as one pointwise GEMM
// per group (`pointwise_forward` with groups; grad-input at unit stride on
// the transposed weight; grad-weight at unit stride as one
// `pointwise_backward_weight` per group): wide groups fill its 6-row x 2-4-vector tiles,
// where the grouped kernel's lanes run over a group's output channels
// (ShuffleNet's 20 of 24 lanes on AVX2) and it copies the input into its
// interleaved layout first.
inline constexpr int64_t kGroupedPointwiseMinChannels = 16;
inline bool grouped_runs_pointwise(const Conv2dShape& p, Pass pass) {
  if (!p.is_grouped() || !p.is_pointwise()) return false;
  if (pass != Pass::kForward && !p.is_unit_stride()) return false;
  // (grad-weight: as the groups-1 rule; ShuffleNet's 320 + 80 channels per
  // group ran 93 GFLOP/s grouped, 85 per-group pointwise, AVX2)
  if (pass == Pass::kBackwardWeight &&
      p.C_per_group + p.K_per_group > kPointwiseWgradMaxChannels) {
    return false;
  }
  return p.C_per_group >= kGroupedPointwiseMinChannels &&
         p.K_per_group >= kGroupedPointwiseMinChannels;
}

// Call with a checked, non-empty problem (the op front handles empty ones).
inline CpuPath select_path(const Conv2dShape& p, Pass pass, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kDouble && !is_reduced_float(dtype)) {
    return CpuPath::kGeneric;
  }
  // The forward output of an empty reduction is the bias: nothing to compute.
  if (p.C_per_group == 0) return CpuPath::kGeneric;
  // Depthwise with any channel multiplier; C = 1 without groups is a first
  // layer (the dense kernel's fused (s, c) loops serve it better).
  if (p.is_depthwise() && p.groups > 1) return CpuPath::kDepthwise;
  if (p.is_grouped()) return p.C_per_group >= 2 ? CpuPath::kGrouped : CpuPath::kGeneric;
  switch (pass) {
    case Pass::kForward:
      if (p.is_pointwise()) return CpuPath::kPointwise;
      return p.C < 8 ? CpuPath::kFirstLayer : CpuPath::kDense;
    case Pass::kBackwardInput:
      return p.is_pointwise() && p.is_unit_stride() ? CpuPath::kPointwise : CpuPath::kDense;
    case Pass::kBackwardWeight:
      if (p.C < 8) return CpuPath::kFirstLayer;
      // (the backend takes it where both operands have contiguous planes,
      // i.e. NCHW, else the dense GEMM)
      if (p.is_pointwise() && p.is_unit_stride() && p.K + p.C <= kPointwiseWgradMaxChannels) {
        return CpuPath::kPointwise;
      }
      return CpuPath::kDense;
  }
  return CpuPath::kDense;
}

}  // namespace cpu
}  // namespace conv_ext
