// Runtime ISA dispatch of the CPU kernels.
//
// The kernel headers (simd.h, conv2d_*_kernels.h and the backends
// conv2d_*_cpu.h) are compiled once per ISA, each copy in its own namespace
// conv_ext::cpu::<isa> so the inline functions and templates of different
// ISAs never meet in the linker (ODR):
//
//   conv2d_cpu_kernels_avx512.cpp   avx512f/bw/vl/dq + avx2/fma (64-byte vectors)
//   conv2d_cpu_kernels_avx2.cpp     avx2 + fma (32-byte vectors)
//   conv2d_cpu_kernels_portable.cpp the build's baseline ISA (16-byte vectors)
//
// Each includes conv2d_cpu_isa_prelude.h (every header the kernels use,
// compiled for the baseline ISA), then sets its target with
// `#pragma GCC target` (functions defined before the pragma, template
// definitions included, keep the baseline ISA), then includes
// conv2d_cpu_backends.h, which defines that ISA's CpuBackends table. The ops
// (conv2d_cpu_ops.cpp) call through active_backends(): the best table the
// CPU supports (__builtin_cpu_supports), or the one CONV_EXT_CPU_ISA names
// (read once), or the one set_active_isa chose (debug op set_cpu_isa).
// Nothing compiled for an ISA runs before that check.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "../conv2d_shape.h"

namespace conv_ext {

struct EpilogueTensors;  // conv2d_fused_params.h

namespace cpu {

// What a forward backend is asked to apply after the convolution
// (conv2d_fused), and whether it did: the paths that can take the epilogue
// in their stores set `applied`; the others leave it to a separate pass
// (CpuBackends::epilogue).
struct EpilogueRequest {
  const EpilogueTensors* tensors = nullptr;
  bool applied = false;
};

enum class CpuIsa { kPortable, kAvx2, kAvx512 };

// The entry points of one ISA's copy of the kernels: the backends behind the
// op fronts (conv2d_front.h), and the FMA peak of the benchmark.
struct CpuBackends {
  CpuIsa isa;
  const char* name;  // "avx512", "avx2", "portable"
  // epilogue: null for conv2d_forward; conv2d_fused's epilogue, applied in
  // the kernels' stores where the path can (epilogue->applied), else not.
  at::Tensor (*forward)(const at::Tensor& input, const at::Tensor& weight,
                        const at::Tensor& bias, const Conv2dShape& p, at::MemoryFormat format,
                        EpilogueRequest* epilogue);
  // The epilogue as a separate pass over a finished output in `format`.
  void (*epilogue)(at::Tensor& output, const EpilogueTensors& tensors, const Conv2dShape& p,
                   at::MemoryFormat format);
  at::Tensor (*backward_input)(const at::Tensor& grad_output, const at::Tensor& weight,
                               const Conv2dShape& p, at::MemoryFormat format);
  at::Tensor (*backward_weight)(const at::Tensor& grad_output, const at::Tensor& input,
                                const Conv2dShape& p, at::MemoryFormat format);
  // GFLOP/s of vector FMAs on all threads, best of `rounds`.
  double (*fma_peak)(int64_t iterations, int64_t rounds);
};

namespace avx512 { extern const CpuBackends kBackends; }
namespace avx2 { extern const CpuBackends kBackends; }
namespace portable { extern const CpuBackends kBackends; }

// The forward of conv2d_forward (epilogue null) and conv2d_fused: the active
// ISA's backend, or AMX tiles (conv2d_cpu_amx.h), then the epilogue where the
// kernels did not apply it. Returns the output in `format`.
at::Tensor forward_with_epilogue(const at::Tensor& input, const at::Tensor& weight,
                                 const at::Tensor& bias, const Conv2dShape& p,
                                 at::MemoryFormat format, const EpilogueTensors* epilogue);

// The table the ops run with (chosen on first use).
const CpuBackends& active_backends();
// The ISAs this CPU can run, best first ("portable" always last).
std::vector<std::string> supported_isas();
// Runs the kernels of `name` from now on ("auto": the best supported);
// returns the previous ISA's name. Raises for an unknown ISA or one this CPU
// lacks.
std::string set_active_isa(const std::string& name);

}  // namespace cpu
}  // namespace conv_ext
