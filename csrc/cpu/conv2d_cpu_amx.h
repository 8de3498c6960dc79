// AMX bfloat16 tiles for the dense and pointwise forward, and through it the
// dense grad-input (conv2d_cpu_ops.cpp: bf16_tile_backward_input), and the
// dense and pointwise grad-weight (Intel AMX-BF16:
// `tdpbf16ps`, a 16 x 16 float accumulator tile += 16 x 32 bf16 by 32 x 16
// bf16, about 16x the multiply-adds per cycle of the AVX-512 FMA tiles).
//
// The kernel lives in its own translation unit, conv2d_cpu_kernels_amx.cpp
// (compiled with the AMX target, namespace conv_ext::cpu::amx); this header
// is compiled for the baseline ISA: which problems it takes, and the
// run-time switch. It runs only where
//   * the CPU has AMX-TILE and AMX-BF16 (cpuid) and Linux granted this
//     process the tile data state (arch_prctl(ARCH_REQ_XCOMP_PERM,
//     XFEATURE_XTILEDATA)), and
//   * the AVX-512 copy of the kernels is the active one (conv2d_cpu_isa.h:
//     forcing avx2 or portable turns AMX off too), and
//   * it is not switched off: CONV_EXT_CPU_AMX=0 (read once), or the debug op
//     set_cpu_amx(False).
// Everything else (float16, which has no AMX here, other CPUs, the
// switch off) runs the float32 kernels as before.
//
// Numerics: products of bf16 pairs accumulated in float32 tiles (the tile
// unit treats bf16 denormal inputs as zero), the bias added once at the end
// in float32, one rounding to bf16 (nearest even, torch's rule). The
// reduction order of every output element is fixed (taps, then channel
// blocks of 32, in a constant order) and independent of threads, batch size
// and the element's place in a tile: results are bitwise identical across
// thread counts and batch splits. They differ from the float32 kernels'
// rounded result (another summation order), within one bf16 rounding.
#pragma once

#include <ATen/ATen.h>

#include "../conv2d_shape.h"
#include "conv2d_cpu_plan.h"

namespace conv_ext {
namespace cpu {

// The CPU has AMX-BF16 and the OS lets this process use the tiles (the
// permission is requested on the first call).
bool amx_supported();
// AMX runs now: supported, switched on, and the avx512 kernels active.
bool amx_active();
// Switches AMX on or off from now on; returns the previous setting (false
// where unsupported). Raises when switching on where it is not supported.
bool set_amx_enabled(bool enabled);

// Whether the AMX forward takes problem p (dtype, path: select_path's), if
// AMX is active: bfloat16 dense and pointwise problems (groups == 1, at
// least 8 input channels: the first layers keep their own kernel).
inline bool amx_forward_applies(const Conv2dShape& p, at::ScalarType dtype, CpuPath path) {
  return dtype == at::kBFloat16 && p.groups == 1 && p.C >= 8 &&
         (path == CpuPath::kDense || path == CpuPath::kPointwise);
}

inline bool use_amx_forward(const Conv2dShape& p, at::ScalarType dtype, CpuPath path) {
  return amx_forward_applies(p, dtype, path) && amx_active();
}

// Whether the AMX grad-weight takes problem p (path: select_path's for
// Pass::kBackwardWeight), if AMX is active: bfloat16 dense and pointwise
// problems (groups == 1, at least 8 input channels), as the forward.
inline bool amx_backward_weight_applies(const Conv2dShape& p, at::ScalarType dtype,
                                        CpuPath path) {
  return dtype == at::kBFloat16 && p.groups == 1 && p.C >= 8 &&
         (path == CpuPath::kDense || path == CpuPath::kPointwise);
}

inline bool use_amx_backward_weight(const Conv2dShape& p, at::ScalarType dtype, CpuPath path) {
  return amx_backward_weight_applies(p, dtype, path) && amx_active();
}

namespace amx {
// The grad-weight of a bfloat16 problem on AMX tiles (float32 accumulation
// over the N * P * Q pixels in a fixed order, one rounding to bf16), in
// `format`. Call only where use_amx_backward_weight holds.
at::Tensor backward_weight_bf16(const at::Tensor& grad_output, const at::Tensor& input,
                                const Conv2dShape& p, at::MemoryFormat format);
// The forward of a bfloat16 problem on AMX tiles (conv2d_cpu_kernels_amx.cpp);
// the result in `format`. Call only where use_amx_forward holds.
at::Tensor forward_bf16(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                        const Conv2dShape& p, at::MemoryFormat format);
}  // namespace amx

}  // namespace cpu
}  // namespace conv_ext
