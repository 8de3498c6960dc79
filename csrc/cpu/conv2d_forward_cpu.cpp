// conv2d_forward on the CPU: direct convolution, one output plane (n, k) per
// task. Each output element is summed over (c, r, s) in a fixed order by one
// thread, so results are identical run to run and across thread counts.
#include <torch/library.h>

#include "conv2d_cpu_common.h"

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

at::Tensor conv2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape p = check_conv2d_forward(input, weight, bias, stride,
                                             padding, dilation, groups);
  const auto format = conv2d_memory_format(input, weight);
  auto output = at::empty(p.output_sizes(), input.options());
  if (output.numel() == 0) return in_memory_format(output, format);
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

}  // namespace

TORCH_LIBRARY_IMPL(conv_ext, CPU, m) {
  m.impl("conv2d_forward", &conv2d_forward_cpu);
}

}  // namespace cpu
}  // namespace conv_ext
