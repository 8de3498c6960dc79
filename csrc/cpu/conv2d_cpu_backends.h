// One ISA's copy of the CPU kernels and its CpuBackends table. Included only
// by conv2d_cpu_kernels_<isa>.cpp, after conv2d_cpu_isa_prelude.h, the
// `#pragma GCC target` of the ISA and `#define CONV_EXT_ISA <isa>`.
#pragma once

#include <string_view>

#include "conv2d_backward_input_cpu.h"
#include "conv2d_backward_weight_cpu.h"
#include "conv2d_cpu_fma_peak.h"
#include "conv2d_forward_cpu.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {

#define CONV_EXT_CPU_STRINGIZE2(x) #x
#define CONV_EXT_CPU_STRINGIZE(x) CONV_EXT_CPU_STRINGIZE2(x)
inline constexpr std::string_view kTableName = CONV_EXT_CPU_STRINGIZE(CONV_EXT_ISA);
// The vector width follows the ISA's macros (simd.h): a copy for AVX2 or
// AVX-512 compiled with narrower vectors would pass every test but be slow.
// (The portable copy has the width of the build's -march, if one was set.)
static_assert(kTableName == simd::kIsaName || kTableName == "portable",
              "conv2d_cpu_kernels_<isa>.cpp: the ISA macros do not match its target");

inline constexpr CpuIsa compiled_isa() {
  return kTableName == "avx512" ? CpuIsa::kAvx512
         : kTableName == "avx2" ? CpuIsa::kAvx2
                                : CpuIsa::kPortable;
}

extern const CpuBackends kBackends;
constexpr CpuBackends kBackends = {compiled_isa(), CONV_EXT_CPU_STRINGIZE(CONV_EXT_ISA),
                                   &forward_cpu, &epilogue_cpu, &backward_input_cpu, &backward_weight_cpu,
                                   &fma_peak};

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
