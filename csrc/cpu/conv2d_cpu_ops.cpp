// The CPU ops: the op fronts (conv2d_front.h) run the backends of the
// active ISA's copy of the kernels (conv2d_cpu_isa.h; the backends are
// conv2d_forward_cpu.h, conv2d_backward_input_cpu.h,
// conv2d_backward_weight_cpu.h), or the AMX tiles for the bfloat16 forward
// (conv2d_cpu_amx.h), or else AVX512-BF16 for it (conv2d_cpu_avx512bf16.h).
#include <torch/library.h>

#include "../conv2d_front.h"
#include "conv2d_cpu_amx.h"
#include "conv2d_cpu_avx512bf16.h"
#include "conv2d_cpu_isa.h"

namespace conv_ext {
namespace cpu {
namespace {

at::Tensor forward_backend(const at::Tensor& input, const at::Tensor& weight,
                           const at::Tensor& bias, const Conv2dShape& p, at::MemoryFormat format) {
  return forward_with_epilogue(input, weight, bias, p, format, nullptr);
}

at::Tensor conv2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_forward_front(input, weight, bias, stride, padding, dilation, groups,
                              forward_backend);
}

// bfloat16 grad-input at unit stride with vdpbf16ps (conv2d_cpu_avx512bf16.h):
// the forward of grad_output with the filter transposed (K <-> C) and
// rotated, padding dilation * (R - 1) - pad; else the active ISA's backend.
at::Tensor backward_input_backend(const at::Tensor& grad_output, const at::Tensor& weight,
                                  const Conv2dShape& p, at::MemoryFormat format) {
  const at::ScalarType dtype = grad_output.scalar_type();
  const CpuPath path = select_path(p, Pass::kBackwardInput, dtype);
  if (p.is_unit_stride() && p.K > 0 && p.P > 0 && p.Q > 0 &&
      use_bf16_dot_forward(p, dtype, path == CpuPath::kPointwise ? CpuPath::kDense : path)) {
    Conv2dShape f = p;
    f.C = f.C_per_group = p.K;
    f.K = f.K_per_group = p.C;
    f.H = p.P, f.W = p.Q;
    f.pad_h = p.dilation_h * (p.R - 1) - p.pad_h;
    f.pad_w = p.dilation_w * (p.S - 1) - p.pad_w;
    f.P = p.H, f.Q = p.W;
    const bool fits =
        f.pad_h >= 0 && f.pad_w >= 0 &&
        conv_output_length(f.H, f.pad_h, p.dilation_h * (p.R - 1) + 1, 1) == p.H &&
        conv_output_length(f.W, f.pad_w, p.dilation_w * (p.S - 1) + 1, 1) == p.W;
    if (fits) {
      // [C][K][R][S], rotated: a strided view the packing reads as it is
      // (flip copies the small filter once).
      const at::Tensor wt = weight.flip({2, 3}).transpose(0, 1);
      return avx512bf16::forward_bf16(grad_output, wt, at::Tensor(), f, format);
    }
  }
  return active_backends().backward_input(grad_output, weight, p, format);
}

at::Tensor conv2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                     at::IntArrayRef input_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups) {
  return conv2d_backward_input_front(grad_output, weight, input_size, stride, padding, dilation,
                                     groups, backward_input_backend);
}

// bfloat16 dense and pointwise grad-weight on AMX tiles where active
// (conv2d_cpu_amx.h), else the active ISA's backend.
at::Tensor backward_weight_backend(const at::Tensor& grad_output, const at::Tensor& input,
                                   const Conv2dShape& p, at::MemoryFormat format) {
  const at::ScalarType dtype = grad_output.scalar_type();
  if (input.scalar_type() == dtype &&
      use_amx_backward_weight(p, dtype, select_path(p, Pass::kBackwardWeight, dtype))) {
    return amx::backward_weight_bf16(grad_output, input, p, format);
  }
  return active_backends().backward_weight(grad_output, input, p, format);
}

at::Tensor conv2d_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                      at::IntArrayRef weight_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups) {
  return conv2d_backward_weight_front(grad_output, input, weight_size, stride, padding,
                                      dilation, groups, backward_weight_backend);
}

}  // namespace

// bfloat16 dense and pointwise problems on AMX tiles where the CPU has them
// (conv2d_cpu_amx.h: only while the avx512 copy is the active one), else
// with AVX512-BF16 where the CPU has it (conv2d_cpu_avx512bf16.h, same
// condition), the active ISA's kernels otherwise; the epilogue in their stores where the path
// takes it, else one pass over the output.
at::Tensor forward_with_epilogue(const at::Tensor& input, const at::Tensor& weight,
                                 const at::Tensor& bias, const Conv2dShape& p,
                                 at::MemoryFormat format, const EpilogueTensors* epilogue) {
  const at::ScalarType dtype = input.scalar_type();
  const CpuBackends& backends = active_backends();
  at::Tensor out;
  EpilogueRequest request{epilogue, false};
  const CpuPath path = select_path(p, Pass::kForward, dtype);
  if (use_amx_forward(p, dtype, path)) {
    out = amx::forward_bf16(input, weight, bias, p, format);
  } else if (use_bf16_dot_forward(p, dtype, path)) {
    out = avx512bf16::forward_bf16(input, weight, bias, p, format);
  } else {
    out = backends.forward(input, weight, bias, p, format, epilogue != nullptr ? &request : nullptr);
  }
  if (epilogue != nullptr && !request.applied) {
    out = out.contiguous(format);
    backends.epilogue(out, *epilogue, p, format);
  }
  return out;
}

TORCH_LIBRARY_IMPL(conv_ext, CPU, m) {
  m.impl("conv2d_forward", &conv2d_forward_cpu);
  m.impl("conv2d_backward_input", &conv2d_backward_input_cpu);
  m.impl("conv2d_backward_weight", &conv2d_backward_weight_cpu);
}

}  // namespace cpu
}  // namespace conv_ext
