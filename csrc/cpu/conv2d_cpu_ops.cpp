// The CPU ops: the op fronts (conv2d_front.h) run the backends of the
// active ISA's copy of the kernels (conv2d_cpu_isa.h; the backends are
// conv2d_forward_cpu.h, conv2d_backward_input_cpu.h,
// conv2d_backward_weight_cpu.h), or the AMX tiles for the bfloat16 forward
// (conv2d_cpu_amx.h).
#include <torch/library.h>

#include "../conv2d_front.h"
#include "conv2d_cpu_amx.h"
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

at::Tensor conv2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                     at::IntArrayRef input_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups) {
  return conv2d_backward_input_front(grad_output, weight, input_size, stride, padding, dilation,
                                     groups, active_backends().backward_input);
}

at::Tensor conv2d_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                      at::IntArrayRef weight_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups) {
  return conv2d_backward_weight_front(grad_output, input, weight_size, stride, padding,
                                      dilation, groups, active_backends().backward_weight);
}

}  // namespace

// bfloat16 dense and pointwise problems on AMX tiles where the CPU has them
// (conv2d_cpu_amx.h: only while the avx512 copy is the active one), the
// active ISA's kernels otherwise; the epilogue in their stores where the path
// takes it, else one pass over the output.
at::Tensor forward_with_epilogue(const at::Tensor& input, const at::Tensor& weight,
                                 const at::Tensor& bias, const Conv2dShape& p,
                                 at::MemoryFormat format, const EpilogueTensors* epilogue) {
  const at::ScalarType dtype = input.scalar_type();
  const CpuBackends& backends = active_backends();
  at::Tensor out;
  EpilogueRequest request{epilogue, false};
  if (use_amx_forward(p, dtype, select_path(p, Pass::kForward, dtype))) {
    out = amx::forward_bf16(input, weight, bias, p, format);
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
