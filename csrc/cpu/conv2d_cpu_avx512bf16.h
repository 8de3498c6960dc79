// bfloat16 dense, first-layer and pointwise forward on AVX512-BF16
// (`vdpbf16ps`: a float32 vector += 16 pairs of bf16 products, twice the
// multiply-adds of an fp32 FMA per instruction), for CPUs with AVX512-BF16
// (AMD Zen 4/5); also the dense grad-input, as forwards of grad_output with
// the rotated, transposed filter (conv2d_cpu_ops.cpp:
// bf16_tile_backward_input), and the grad-weight of 1x1 layers (a GEMM over
// pixel pairs: backward_weight_pointwise_bf16).
//
// The kernel lives in its own translation unit,
// conv2d_cpu_kernels_avx512bf16.cpp (compiled for AVX-512 + AVX512-BF16,
// namespace conv_ext::cpu::avx512bf16); this header is compiled for the
// baseline ISA: which problems it takes, and the run-time switch. It runs
// only where
//   * the CPU has AVX512-BF16 (and the AVX-512 set of the avx512 copy), and
//   * the AVX-512 copy of the kernels is the active one (conv2d_cpu_isa.h:
//     forcing avx2 or portable turns it off too), and
//   * the AMX tiles do not take the problem (conv2d_cpu_amx.h: they go first), and
//   * it is switched on: by default on AMD CPUs only (on an Intel Xeon it
//     ran slower than the float32 kernels: conv2d_cpu_isa.cpp,
//     bf16_dot_pays); CONV_EXT_CPU_BF16_DOT=0 or 1 (read once), or the
//     debug op set_cpu_bf16_dot, override that.
// Everything else (float16, CPUs without it, the switch off) runs the
// float32 kernels with widening copies as before.
//
// Numerics: products of bf16 pairs accumulated in float32 (vdpbf16ps rounds
// to nearest even after each of its two products and treats bf16 denormal
// inputs and float32 denormal results as zero, whatever MXCSR says), the
// bias as the accumulators' starting value, one rounding to bf16 (nearest
// even, torch's rule). Every output element sums its taps and channel pairs
// in one fixed order (kernel row, column, channel pair) whatever its tile,
// thread or batch split: results are bitwise identical across thread counts
// and batch splits. They differ from the float32 kernels' rounded result
// (other roundings inside the sum) within about one bf16 rounding.
#pragma once

#include <ATen/ATen.h>

#include "../conv2d_shape.h"
#include "conv2d_cpu_plan.h"

namespace conv_ext {
namespace cpu {

// The CPU has AVX512-BF16 and the AVX-512 set the avx512 copy needs.
bool bf16_dot_supported();
// The AVX512-BF16 forward runs now: supported, switched on, avx512 kernels active.
bool bf16_dot_active();
// Switches it on or off from now on; returns the previous setting (false
// where unsupported). Raises when switching on where it is not supported.
bool set_bf16_dot_enabled(bool enabled);

// Whether the AVX512-BF16 forward takes problem p (dtype, path: select_path's)
// if active: bfloat16, groups == 1, the paths that run the dense kernel or
// the pointwise GEMM on float32 (dense, first layer, pointwise).
inline bool bf16_dot_forward_applies(const Conv2dShape& p, at::ScalarType dtype, CpuPath path) {
  return dtype == at::kBFloat16 && p.groups == 1 &&
         (path == CpuPath::kDense || path == CpuPath::kPointwise ||
          path == CpuPath::kFirstLayer);
}

// (the caller checks the AMX tiles first: conv2d_cpu_ops.cpp)
inline bool use_bf16_dot_forward(const Conv2dShape& p, at::ScalarType dtype, CpuPath path) {
  return bf16_dot_forward_applies(p, dtype, path) && bf16_dot_active();
}

// grad-weight of 1x1 unpadded bfloat16 problems (groups 1): vdpbf16ps
// over pixel pairs, where active and not on AMX. Operands: both contiguous
// channels_last (any stride), or both contiguous NCHW at unit stride where
// K + C > kPointwiseWgradMaxChannels (below, the float32 dot-product tiles
// on the NCHW operands in place ran faster than packing both: 347 against
// 225 GFLOP/s for 64 -> 64 channels at 56x56, Zen 5, 2 threads).
inline bool use_bf16_dot_backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                         const Conv2dShape& p) {
  if (grad_output.scalar_type() != at::kBFloat16 || input.scalar_type() != at::kBFloat16 ||
      p.groups != 1 || !p.is_pointwise() || !bf16_dot_active()) {
    return false;
  }
  constexpr auto kNhwc = at::MemoryFormat::ChannelsLast;
  if (grad_output.is_contiguous(kNhwc) && input.is_contiguous(kNhwc)) return true;
  return grad_output.is_contiguous() && input.is_contiguous() && p.is_unit_stride() &&
         p.K + p.C > kPointwiseWgradMaxChannels;
}

namespace avx512bf16 {
// The forward of a bfloat16 problem with vdpbf16ps
// (conv2d_cpu_kernels_avx512bf16.cpp); the result in `format`. Call only
// where use_bf16_dot_forward holds.
at::Tensor forward_bf16(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                        const Conv2dShape& p, at::MemoryFormat format);
// dW of a problem use_bf16_dot_backward_weight takes. Each element sums
// the pixels in pairs, in one fixed order (float32, vdpbf16ps), rounded
// once to bf16.
at::Tensor backward_weight_pointwise_bf16(const at::Tensor& grad_output, const at::Tensor& input,
                                          const Conv2dShape& p);
}  // namespace avx512bf16

}  // namespace cpu
}  // namespace conv_ext
