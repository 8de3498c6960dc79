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
//   cpu_amx_supported() -> bool
//       the CPU has AMX-BF16 and the OS grants this process the tile state
//       (cpu/conv2d_cpu_amx.h)
//   cpu_amx() -> bool
//       the bfloat16 forward and grad-weight run on AMX tiles now (supported, switched on,
//       the avx512 kernels active)
//   set_cpu_amx(enabled) -> bool
//       switch the AMX tiles on or off from now on; returns the previous
//       switch. Raises when switching on where unsupported. (The environment
//       variable CONV_EXT_CPU_AMX=0 switches them off from the start.)
//   cpu_forward_uses_amx(input, weight, stride, padding, dilation, groups) -> bool
//       whether conv2d_forward runs these arguments on the AMX tiles now
//   cpu_backward_weight_uses_amx(input, weight, stride, padding, dilation, groups) -> bool
//       whether conv2d_backward_weight runs the problem of these forward
//       arguments on the AMX tiles now
//   cpu_bf16_dot_supported() -> bool
//       the CPU has AVX512-BF16 (cpu/conv2d_cpu_avx512bf16.h)
//   cpu_bf16_dot() -> bool
//       the bfloat16 forward runs on vdpbf16ps now where AMX does not take it
//       (supported, switched on, the avx512 kernels active)
//   set_cpu_bf16_dot(enabled) -> bool
//       switch it on or off from now on; returns the previous switch. Raises
//       when switching on where unsupported. (On by default on AMD CPUs
//       only; CONV_EXT_CPU_BF16_DOT=0 / 1 switches it off / on from the start.)
//   cpu_forward_uses_bf16_dot(input, weight, stride, padding, dilation, groups) -> bool
//       whether conv2d_forward runs these arguments with vdpbf16ps now
//   cpu_backward_weight_uses_bf16_dot(grad_output, input, weight, stride, padding, dilation,
//                                     groups) -> bool
//       whether conv2d_backward_weight runs these operands with vdpbf16ps now
//   fma_peak_cpu(iterations, rounds) -> float
//       the machine's measured fp32 FMA throughput in GFLOP/s (all threads,
//       the active ISA's vectors), the "100%" of the benchmark's
//       share-of-peak column
#include <torch/library.h>

#include <string>
#include <vector>

#include "conv2d_params.h"
#include "cpu/conv2d_cpu_amx.h"
#include "cpu/conv2d_cpu_avx512bf16.h"
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

bool cpu_forward_uses_amx(const at::Tensor& input, const at::Tensor& weight,
                          at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape p = check_conv2d_forward(input, weight, std::nullopt, stride, padding,
                                             dilation, groups);
  const at::ScalarType dtype = input.scalar_type();
  return cpu::use_amx_forward(p, dtype, cpu::select_path(p, Pass::kForward, dtype));
}

bool cpu_backward_weight_uses_amx(const at::Tensor& input, const at::Tensor& weight,
                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape p = check_conv2d_forward(input, weight, std::nullopt, stride, padding,
                                             dilation, groups);
  const at::ScalarType dtype = input.scalar_type();
  return cpu::use_amx_backward_weight(p, dtype, cpu::select_path(p, Pass::kBackwardWeight, dtype));
}

bool cpu_forward_uses_bf16_dot(const at::Tensor& input, const at::Tensor& weight,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape p = check_conv2d_forward(input, weight, std::nullopt, stride, padding,
                                             dilation, groups);
  const at::ScalarType dtype = input.scalar_type();
  const cpu::CpuPath path = cpu::select_path(p, Pass::kForward, dtype);
  return !cpu::use_amx_forward(p, dtype, path) && cpu::use_bf16_dot_forward(p, dtype, path);
}

bool cpu_backward_weight_uses_bf16_dot(const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& weight, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef dilation,
                                       int64_t groups) {
  const Conv2dShape p = check_conv2d_forward(input, weight, std::nullopt, stride, padding,
                                             dilation, groups);
  const at::ScalarType dtype = input.scalar_type();
  return !cpu::use_amx_backward_weight(p, dtype, cpu::select_path(p, Pass::kBackwardWeight, dtype)) &&
         cpu::use_bf16_dot_backward_weight(grad_output, input, p);
}

bool cpu_bf16_dot_supported() { return cpu::bf16_dot_supported(); }

bool cpu_bf16_dot() { return cpu::bf16_dot_active(); }

bool set_cpu_bf16_dot(bool enabled) { return cpu::set_bf16_dot_enabled(enabled); }

bool cpu_amx_supported() { return cpu::amx_supported(); }

bool cpu_amx() { return cpu::amx_active(); }

bool set_cpu_amx(bool enabled) { return cpu::set_amx_enabled(enabled); }

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
  m.def("cpu_forward_uses_amx(Tensor input, Tensor weight, int[] stride, int[] padding, "
        "int[] dilation, int groups) -> bool", &cpu_forward_uses_amx);
  m.def("cpu_backward_weight_uses_amx(Tensor input, Tensor weight, int[] stride, "
        "int[] padding, int[] dilation, int groups) -> bool", &cpu_backward_weight_uses_amx);
  m.def("cpu_amx_supported() -> bool", &cpu_amx_supported);
  m.def("cpu_amx() -> bool", &cpu_amx);
  m.def("set_cpu_amx(bool enabled) -> bool", &set_cpu_amx);
  m.def("cpu_forward_uses_bf16_dot(Tensor input, Tensor weight, int[] stride, int[] padding, "
        "int[] dilation, int groups) -> bool", &cpu_forward_uses_bf16_dot);
  m.def("cpu_backward_weight_uses_bf16_dot(Tensor grad_output, Tensor input, Tensor weight, "
        "int[] stride, int[] padding, int[] dilation, int groups) -> bool",
        &cpu_backward_weight_uses_bf16_dot);
  m.def("cpu_bf16_dot_supported() -> bool", &cpu_bf16_dot_supported);
  m.def("cpu_bf16_dot() -> bool", &cpu_bf16_dot);
  m.def("set_cpu_bf16_dot(bool enabled) -> bool", &set_cpu_bf16_dot);
  m.def("simd_isa() -> str", &simd_isa);
  m.def("cpu_isas() -> str[]", &cpu_isas);
  m.def("set_cpu_isa(str isa) -> str", &set_cpu_isa);
  m.def("fma_peak_cpu(int iterations=20000000, int rounds=3) -> float", &fma_peak_cpu);
}

}  // namespace debug
}  // namespace conv_ext
