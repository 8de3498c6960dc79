// The CPU ops: the op fronts (conv2d_front.h) run the backends of the
// active ISA's copy of the kernels (conv2d_cpu_isa.h; the backends are
// conv2d_forward_cpu.h, conv2d_backward_input_cpu.h,
// conv2d_backward_weight_cpu.h), or the AMX tiles for the bfloat16 forward
// (conv2d_cpu_amx.h), or else AVX512-BF16 for it (conv2d_cpu_avx512bf16.h).
#include <torch/library.h>

#include <algorithm>
#include <vector>

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

// The bfloat16 forward on AMX tiles, else with vdpbf16ps, where one of them
// takes problem f (conv2d_cpu_amx.h, conv2d_cpu_avx512bf16.h); an undefined
// tensor where neither does.
at::Tensor bf16_tile_forward(const at::Tensor& input, const at::Tensor& weight,
                             const Conv2dShape& f, at::MemoryFormat format) {
  const CpuPath path = select_path(f, Pass::kForward, at::kBFloat16);
  if (use_amx_forward(f, at::kBFloat16, path)) {
    return amx::forward_bf16(input, weight, at::Tensor(), f, format);
  }
  if (use_bf16_dot_forward(f, at::kBFloat16, path)) {
    return avx512bf16::forward_bf16(input, weight, at::Tensor(), f, format);
  }
  return at::Tensor();
}

// One axis of a grad-input stride phase (conv2d_shape.h: phase_taps) as a
// unit-stride forward over grad_output: the phase's outputs (input positions
// phase + i * stride) take the phase's taps in reverse order at dilation /
// gcd(dilation, stride), output i reading from grad_output row i + lo. The
// forward pads grad_output by `pad` on both sides (enough for both ends) and
// its outputs from `skip` on are the phase's.
struct PhaseAxis {
  PhaseTaps taps;
  int64_t outputs = 0, dilation = 1, pad = 0, skip = 0, last_tap = 0;
  bool empty() const { return taps.count == 0 || outputs == 0; }
};

PhaseAxis phase_axis(int64_t phase, int64_t size, int64_t out_size, int64_t pad,
                     int64_t stride, int64_t dilation, int64_t kernel) {
  PhaseAxis a;
  a.taps = phase_taps(phase, pad, stride, dilation, kernel);
  a.outputs = phase_positions(phase, size, stride);
  if (a.empty()) return a;
  a.last_tap = a.taps.first + (a.taps.count - 1) * a.taps.step;
  a.dilation = a.taps.step * dilation / stride;  // offsets fall by this per tap
  const int64_t lo = phase_tap_offset(phase, pad, stride, dilation, a.last_tap);
  const int64_t hi = lo + a.outputs + (a.taps.count - 1) * a.dilation - out_size;  // rows past the end
  a.pad = std::max<int64_t>({-lo, hi, 0});
  a.skip = a.pad + lo;
  return a;
}

// bfloat16 dense grad-input on the bf16 forward kernels (bf16_tile_forward):
// the forward of grad_output with the filter transposed (K <-> C) and
// rotated. At unit stride one forward with padding dilation * (R - 1) - pad;
// at larger strides one forward per stride phase (its taps only), written
// into the phase's positions. Each element is one phase's forward sum: the
// fixed order of that kernel. An undefined tensor where the kernels do not
// take the problem.
at::Tensor bf16_tile_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                    const Conv2dShape& p, at::MemoryFormat format) {
  if (grad_output.scalar_type() != at::kBFloat16 || p.groups != 1 || p.K == 0 || p.P == 0 ||
      p.Q == 0 || p.N == 0) {
    return at::Tensor();
  }
  Conv2dShape f = p;
  f.C = f.C_per_group = p.K;
  f.K = f.K_per_group = p.C;
  f.stride_h = f.stride_w = 1;
  if (p.is_unit_stride()) {
    f.H = p.P, f.W = p.Q;
    f.pad_h = p.dilation_h * (p.R - 1) - p.pad_h;
    f.pad_w = p.dilation_w * (p.S - 1) - p.pad_w;
    f.P = p.H, f.Q = p.W;
    const bool fits =
        f.pad_h >= 0 && f.pad_w >= 0 &&
        conv_output_length(f.H, f.pad_h, p.dilation_h * (p.R - 1) + 1, 1) == p.H &&
        conv_output_length(f.W, f.pad_w, p.dilation_w * (p.S - 1) + 1, 1) == p.W;
    if (!fits) return at::Tensor();
    // [C][K][R][S], rotated: a strided view the packers read as it is
    // (flip copies the small filter once).
    return bf16_tile_forward(grad_output, weight.flip({2, 3}).transpose(0, 1), f, format);
  }
  // Phases: all must be taken (the same kernels for the whole problem).
  std::vector<PhaseAxis> rows, cols;
  for (int64_t a = 0; a < p.stride_h; ++a)
    rows.push_back(phase_axis(a, p.H, p.P, p.pad_h, p.stride_h, p.dilation_h, p.R));
  for (int64_t b = 0; b < p.stride_w; ++b)
    cols.push_back(phase_axis(b, p.W, p.Q, p.pad_w, p.stride_w, p.dilation_w, p.S));
  auto phase_problem = [&](const PhaseAxis& r, const PhaseAxis& c) {
    Conv2dShape g = f;
    g.H = p.P, g.W = p.Q;
    g.R = r.taps.count, g.S = c.taps.count;
    g.pad_h = r.pad, g.pad_w = c.pad;
    g.dilation_h = r.dilation, g.dilation_w = c.dilation;
    g.P = conv_output_length(g.H, g.pad_h, (g.R - 1) * g.dilation_h + 1, 1);
    g.Q = conv_output_length(g.W, g.pad_w, (g.S - 1) * g.dilation_w + 1, 1);
    return g;
  };
  bool any = false, covered = true;
  for (const PhaseAxis& r : rows) {
    for (const PhaseAxis& c : cols) {
      if (r.empty() || c.empty()) {
        covered = covered && (r.outputs == 0 || c.outputs == 0);  // positions no tap reaches
        continue;
      }
      const Conv2dShape g = phase_problem(r, c);
      const CpuPath path = select_path(g, Pass::kForward, at::kBFloat16);
      if (!use_amx_forward(g, at::kBFloat16, path) && !use_bf16_dot_forward(g, at::kBFloat16, path)) {
        return at::Tensor();
      }
      any = true;
    }
  }
  at::Tensor grad_input = at::empty(p.input_sizes(), grad_output.options().memory_format(format));
  if (!covered || !any) grad_input.zero_();
  // Rotated once: tap t of the flipped filter is tap R - 1 - t.
  const at::Tensor rotated = weight.flip({2, 3});
  for (int64_t a = 0; a < p.stride_h; ++a) {
    const PhaseAxis& r = rows[a];
    if (r.empty()) continue;
    for (int64_t b = 0; b < p.stride_w; ++b) {
      const PhaseAxis& c = cols[b];
      if (c.empty()) continue;
      // The phase's taps in reverse order, [C][K][taps]: a strided view.
      const at::Tensor taps = rotated.slice(2, p.R - 1 - r.last_tap, p.R, r.taps.step)
                                  .slice(3, p.S - 1 - c.last_tap, p.S, c.taps.step)
                                  .transpose(0, 1);
      const at::Tensor phase = bf16_tile_forward(grad_output, taps, phase_problem(r, c), format);
      grad_input.slice(2, a, p.H, p.stride_h)
          .slice(3, b, p.W, p.stride_w)
          .copy_(phase.narrow(2, r.skip, r.outputs).narrow(3, c.skip, c.outputs));
    }
  }
  return grad_input;
}

at::Tensor backward_input_backend(const at::Tensor& grad_output, const at::Tensor& weight,
                                  const Conv2dShape& p, at::MemoryFormat format) {
  at::Tensor out = bf16_tile_backward_input(grad_output, weight, p, format);
  if (out.defined()) return out;
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
// (conv2d_cpu_amx.h), else 1x1 ones with vdpbf16ps where active and the
// operands' layouts allow (conv2d_cpu_avx512bf16.h), else the active ISA's
// backend.
at::Tensor backward_weight_backend(const at::Tensor& grad_output, const at::Tensor& input,
                                   const Conv2dShape& p, at::MemoryFormat format) {
  const at::ScalarType dtype = grad_output.scalar_type();
  if (input.scalar_type() == dtype &&
      use_amx_backward_weight(p, dtype, select_path(p, Pass::kBackwardWeight, dtype))) {
    return amx::backward_weight_bf16(grad_output, input, p, format);
  }
  if (use_bf16_dot_backward_weight(grad_output, input, p)) {
    return avx512bf16::backward_weight_pointwise_bf16(grad_output, input, p);
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
