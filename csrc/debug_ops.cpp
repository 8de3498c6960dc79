// The conv_ext_debug op library: test and benchmark helpers, not part of
// conv_ext's public ops (torch.ops.conv_ext). All of them are declared here.
//
//   cpu_forward_path(input, weight, stride, padding, dilation, groups) -> str
//       the CPU path conv2d_forward takes for these arguments (select_path,
//       conv2d_cpu_plan.h): "pointwise", "first_layer", "dense", "depthwise"
//       or "generic"
//   simd_isa() -> str
//       the ISA whose copy of the CPU kernels runs now: "avx512", "avx2" or
//       "portable" (cpu/conv2d_cpu_isa.h)
//   cpu_isas() -> str[]
//       the ISAs this CPU can run, best first ("portable" last)
//   set_cpu_isa(isa) -> str
//       run the CPU kernels of `isa` ("auto": the best this CPU has) from now
//       on; returns the previous one. Raises for an ISA the CPU lacks. (The
//       environment variable CONV_EXT_CPU_ISA sets the first choice.)
//   fma_peak_cpu(iterations, rounds) -> float
//       the machine's measured fp32 FMA throughput in GFLOP/s (all threads,
//       the active ISA's vectors), the "100%" of the benchmark's
//       share-of-peak column
#include <torch/library.h>

#include <string>
#include <vector>

#include "conv2d_params.h"
#include "cpu/conv2d_cpu_isa.h"
#include "cpu/conv2d_cpu_plan.h"

namespace conv_ext {
namespace debug {
namespace {

std::string cpu_forward_path(const at::Tensor& input, const at::Tensor& weight,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape p = check_conv2d_forward(input, weight, std::nullopt, stride, padding,
                                             dilation, groups);
  return cpu::path_name(cpu::select_path(p, Pass::kForward, input.scalar_type()));
}

std::string simd_isa() { return cpu::active_backends().name; }

std::vector<std::string> cpu_isas() { return cpu::supported_isas(); }

std::string set_cpu_isa(const std::string& isa) { return cpu::set_active_isa(isa); }

// GFLOP/s of all threads (at::get_num_threads()) together, best of `rounds`,
// with the active ISA's vectors.
double fma_peak_cpu(int64_t iterations, int64_t rounds) {
  TORCH_CHECK(iterations > 0 && rounds > 0, "fma_peak_cpu: expected positive arguments");
  return cpu::active_backends().fma_peak(iterations, rounds);
}

}  // namespace

TORCH_LIBRARY(conv_ext_debug, m) {
  m.def("cpu_forward_path(Tensor input, Tensor weight, int[] stride, int[] padding, "
        "int[] dilation, int groups) -> str", &cpu_forward_path);
  m.def("simd_isa() -> str", &simd_isa);
  m.def("cpu_isas() -> str[]", &cpu_isas);
  m.def("set_cpu_isa(str isa) -> str", &set_cpu_isa);
  m.def("fma_peak_cpu(int iterations=20000000, int rounds=3) -> float", &fma_peak_cpu);
}

}  // namespace debug
}  // namespace conv_ext
