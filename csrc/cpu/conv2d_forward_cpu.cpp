// conv2d_forward on the CPU. float and double run on the fast direct kernels
// of conv2d_direct_cpu.h (dense register-blocked, pointwise, first layer,
// depthwise); other dtypes and grouped (non-depthwise) convolutions run on
// the generic kernel below: one output plane (n, k) per task. Every output
// element is summed over (c, r, s) in a fixed order by one thread, so
// results are identical run to run and across thread counts on all paths.
#include <torch/library.h>

#include "conv2d_cpu_common.h"
#include "conv2d_direct_cpu.h"
#include "conv2d_grouped_cpu.h"
#include "depthwise_kernels_cpu.h"

namespace conv_ext {
namespace cpu {
namespace {

template <typename scalar_t>
void conv2d_forward_planes(const scalar_t* input, const scalar_t* weight,
                           const scalar_t* bias, scalar_t* output,
                           const Conv2dShape& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto rows = row_ranges(p);
  const auto cols = column_ranges(p);
  const int64_t plane = p.P * p.Q;
  at::parallel_for(0, p.N * p.K, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(plane);
    for (int64_t nk = begin; nk < end; ++nk) {
      const int64_t n = nk / p.K, k = nk % p.K, g = k / p.K_per_group;
      std::fill(acc.begin(), acc.end(),
                bias != nullptr ? static_cast<acc_t>(bias[k]) : acc_t(0));
      for (int64_t c = 0; c < p.C_per_group; ++c) {
        const scalar_t* x =
            input + ((n * p.C + g * p.C_per_group + c) * p.H) * p.W;
        const scalar_t* w = weight + ((k * p.C_per_group + c) * p.R) * p.S;
        for (int64_t r = 0; r < p.R; ++r) {
          for (int64_t s = 0; s < p.S; ++s) {
            const acc_t wv = static_cast<acc_t>(w[r * p.S + s]);
            const int64_t q0 = cols[s].lo, q1 = cols[s].hi;
            const int64_t col0 = q0 * p.stride_w + s * p.dilation_w - p.pad_w;
            for (int64_t oh = rows[r].lo; oh < rows[r].hi; ++oh) {
              const int64_t ih = oh * p.stride_h + r * p.dilation_h - p.pad_h;
              const scalar_t* xrow = x + ih * p.W + col0;
              acc_t* out = acc.data() + oh * p.Q;
              if (p.stride_w == 1) {
                for (int64_t q = q0; q < q1; ++q) {
                  out[q] += wv * static_cast<acc_t>(xrow[q - q0]);
                }
              } else {
                for (int64_t q = q0; q < q1; ++q) {
                  out[q] += wv * static_cast<acc_t>(xrow[(q - q0) * p.stride_w]);
                }
              }
            }
          }
        }
      }
      scalar_t* y = output + nk * plane;
      for (int64_t i = 0; i < plane; ++i) y[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

// Dense, pointwise and first-layer paths: padded NHWC copy + packed weights
// + the register-blocked kernel, output written channels_last.
template <typename T>
at::Tensor dense_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& bias, const Conv2dShape& p,
                             ForwardPath path, at::MemoryFormat format) {
  constexpr int L = simd::Vec<T>::size;
  const bool use_input_as_is =
      path == ForwardPath::kPointwise && input.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor x = use_input_as_is ? input : padded_nhwc<T>(input, p.pad_h, p.pad_w);
  const at::Tensor w = pack_weights<T>(weight);
  const int64_t Kb = (p.K + L - 1) / L;
  at::Tensor b;
  if (bias.defined()) {
    b = at::zeros({Kb * L}, weight.options());
    b.narrow(0, 0, p.K).copy_(bias);
  }
  auto out = at::empty(p.output_sizes(), input.options().memory_format(at::MemoryFormat::ChannelsLast));
  const DenseProblem d{p.N, p.C, p.H + 2 * p.pad_h, p.W + 2 * p.pad_w, p.K, p.R, p.S, p.P, p.Q,
                       p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                       p.P * p.Q * p.K, p.Q * p.K, p.K};
  dense_forward<T>(x.const_data_ptr<T>(), w.const_data_ptr<T>(),
                   b.defined() ? b.const_data_ptr<T>() : nullptr, out.mutable_data_ptr<T>(), d);
  if (format == at::MemoryFormat::ChannelsLast) return out;
  auto out_nchw = at::empty(p.output_sizes(), input.options());
  nhwc_to_nchw<T>(out.const_data_ptr<T>(), out_nchw.mutable_data_ptr<T>(), p.N, p.K, p.P * p.Q);
  return out_nchw;
}

// Depthwise: NCHW planes through a phase-split buffer, or channels_last
// natively with vectors along the channels (depthwise_kernels_cpu.h).
template <typename T>
at::Tensor depthwise_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                                 const at::Tensor& bias, const Conv2dShape& p,
                                 at::MemoryFormat format) {
  const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
  const T* bp = b.defined() ? b.const_data_ptr<T>() : nullptr;
  if (format == at::MemoryFormat::ChannelsLast && p.K_per_group == 1) {
    const at::Tensor x = input.stride(1) == 1 ? input : input.contiguous(at::MemoryFormat::ChannelsLast);
    // weights as [R][S][C]: one contiguous vector of channels per tap
    const at::Tensor wt = weight.reshape({p.C, p.R * p.S}).t().contiguous();
    auto out = at::empty(p.output_sizes(), input.options().memory_format(at::MemoryFormat::ChannelsLast));
    depthwise::forward_nhwc<T>(x, wt.const_data_ptr<T>(), bp, out.mutable_data_ptr<T>(), p);
    return out;
  }
  auto out = at::empty(p.output_sizes(), input.options());
  const at::Tensor w = weight.contiguous();
  depthwise::forward_planes<T>(input, w.const_data_ptr<T>(), bp, out.mutable_data_ptr<T>(), p);
  return in_memory_format(out, format);
}

at::Tensor conv2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape p = check_conv2d_forward(input, weight, bias, stride,
                                             padding, dilation, groups);
  const auto format = conv2d_memory_format(input, weight);
  auto output = at::empty(p.output_sizes(), input.options());
  if (output.numel() == 0) return in_memory_format(output, format);
  const bool with_bias = bias.has_value() && bias->defined();
  const at::Tensor bias_or_undefined = with_bias ? *bias : at::Tensor();
  const ForwardPath path = select_forward_path(p, input.scalar_type());
  if (path != ForwardPath::kGeneric && is_reduced_float(input.scalar_type())) {
    // The float32 kernels, one rounding at the end (as the generic kernel's
    // float accumulator): packing in float costs one pass over the data.
    return conv2d_forward_cpu(to_float(input), to_float(weight), to_float(bias_or_undefined),
                              stride, padding, dilation, groups)
        .to(input.scalar_type());
  }
  if (path != ForwardPath::kGeneric) {
    at::Tensor result;
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_forward_cpu_direct", [&] {
      if (path == ForwardPath::kGrouped) {
        result = grouped::forward_op<scalar_t>(input, weight, bias_or_undefined, p, format);
      } else if (path == ForwardPath::kDepthwise) {
        result = depthwise_forward_cpu<scalar_t>(input, weight, bias_or_undefined, p, format);
      } else if (path == ForwardPath::kPointwise && format == at::MemoryFormat::Contiguous) {
        result = pointwise_nchw<scalar_t>(input, weight.view({p.K, p.C}), bias_or_undefined,
                                          p.stride_h, p.stride_w, p.P, p.Q);
      } else {  // channels_last pointwise runs as a dense problem: NHWC in, NHWC out
        result = dense_forward_cpu<scalar_t>(input, weight, bias_or_undefined, p, path, format);
      }
    });
    return result;
  }
  const auto x = input.contiguous();
  const auto w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const auto b = has_bias ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "conv2d_forward_cpu", [&] {
        conv2d_forward_planes<scalar_t>(
            x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
            has_bias ? b.const_data_ptr<scalar_t>() : nullptr,
            output.mutable_data_ptr<scalar_t>(), p);
      });
  return in_memory_format(output, format);
}

// Name of the kernel conv2d_forward would run for these arguments on the CPU.
std::string cpu_forward_path(const at::Tensor& input, const at::Tensor& weight,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape p = check_conv2d_forward(input, weight, std::nullopt, stride, padding,
                                             dilation, groups);
  return path_name(select_forward_path(p, input.scalar_type()));
}

}  // namespace

TORCH_LIBRARY_IMPL(conv_ext, CPU, m) {
  m.impl("conv2d_forward", &conv2d_forward_cpu);
}

TORCH_LIBRARY_FRAGMENT(conv_ext, m) {
  m.def("cpu_forward_path(Tensor input, Tensor weight, int[] stride, int[] padding, "
        "int[] dilation, int groups) -> str", &cpu_forward_path);
}

}  // namespace cpu
}  // namespace conv_ext
