// conv2d_backward_weight on the CPU: one (k, c) filter slice per task, each
// reducing over N, P and Q in a fixed order. Dot products keep a fixed
// number of partial sums combined in a fixed order, so results are identical
// run to run and across thread counts, with no atomics.
#include <torch/library.h>

#include "conv2d_cpu_common.h"
#include "conv2d_direct_cpu.h"
#include "conv2d_grouped_cpu.h"
#include "depthwise_kernels_cpu.h"

namespace conv_ext {
namespace cpu {
namespace {

constexpr int kLanes = 16;  // partial sums per dot product (SIMD-friendly)

template <typename acc_t, typename scalar_t>
inline acc_t strided_dot(const scalar_t* a, const scalar_t* b,
                         int64_t b_stride, int64_t count) {
  acc_t lanes[kLanes] = {};
  int64_t i = 0;
  if (b_stride == 1) {
    for (; i + kLanes <= count; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        lanes[l] += static_cast<acc_t>(a[i + l]) * static_cast<acc_t>(b[i + l]);
      }
    }
  }
  for (; i < count; ++i) {
    lanes[i % kLanes] +=
        static_cast<acc_t>(a[i]) * static_cast<acc_t>(b[i * b_stride]);
  }
  acc_t sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

template <typename scalar_t>
void conv2d_backward_weight_slices(const scalar_t* grad_output,
                                   const scalar_t* input,
                                   scalar_t* grad_weight,
                                   const Conv2dShape& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto rows = row_ranges(p);
  const auto cols = column_ranges(p);
  const int64_t taps = p.R * p.S;
  at::parallel_for(0, p.K * p.C_per_group, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(taps);
    for (int64_t kc = begin; kc < end; ++kc) {
      const int64_t k = kc / p.C_per_group, cg = kc % p.C_per_group;
      const int64_t c = (k / p.K_per_group) * p.C_per_group + cg;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t n = 0; n < p.N; ++n) {
        const scalar_t* gy = grad_output + (n * p.K + k) * p.P * p.Q;
        const scalar_t* x = input + (n * p.C + c) * p.H * p.W;
        for (int64_t r = 0; r < p.R; ++r) {
          for (int64_t s = 0; s < p.S; ++s) {
            const int64_t q0 = cols[s].lo, q1 = cols[s].hi;
            const int64_t col0 = q0 * p.stride_w + s * p.dilation_w - p.pad_w;
            acc_t sum = 0;
            for (int64_t oh = rows[r].lo; oh < rows[r].hi; ++oh) {
              const int64_t ih = oh * p.stride_h + r * p.dilation_h - p.pad_h;
              sum += strided_dot<acc_t>(gy + oh * p.Q + q0, x + ih * p.W + col0,
                                        p.stride_w, q1 - q0);
            }
            acc[r * p.S + s] += sum;
          }
        }
      }
      scalar_t* gw = grad_weight + kc * taps;
      for (int64_t i = 0; i < taps; ++i) gw[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

// Depthwise: one channel per task on the forward's phase-split planes
// (depthwise_kernels_cpu.h).
template <typename T>
void depthwise_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                   T* gw, const Conv2dShape& p) {
  if (p.K_per_group == 1 && input.stride(1) == 1 && input.stride(3) != 1) {  // channels_last input: vectors along C
    depthwise::backward_weight_nhwc<T>(grad_output.contiguous(at::MemoryFormat::ChannelsLast),
                                       input, gw, p);
    return;
  }
  const at::Tensor gy = grad_output.stride(3) == 1 ? grad_output : grad_output.contiguous();
  depthwise::backward_weight_planes<T>(gy, input, gw, p);
}

template <typename T>
at::Tensor dense_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                     const Conv2dShape& p) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t Kb = (p.K + L - 1) / L;
  const at::Tensor x = padded_nhwc<T>(input, p.pad_h, p.pad_w);
  const at::Tensor gy = padded_nhwc<T>(grad_output, 0, 0, Kb * L);
  auto packed = at::empty({Kb, p.R, p.S, p.C, L}, input.options());
  dense_backward_weight<T>(x.const_data_ptr<T>(), gy.const_data_ptr<T>(),
                           packed.mutable_data_ptr<T>(), p, p.H + 2 * p.pad_h, p.W + 2 * p.pad_w);
  // [Kb][R][S][C][L] -> [K][C][R][S]
  return packed.permute({0, 4, 3, 1, 2}).reshape({Kb * L, p.C, p.R, p.S}).narrow(0, 0, p.K)
      .contiguous();
}

at::Tensor conv2d_backward_weight_cpu(const at::Tensor& grad_output,
                                      const at::Tensor& input,
                                      at::IntArrayRef weight_size,
                                      at::IntArrayRef stride,
                                      at::IntArrayRef padding,
                                      at::IntArrayRef dilation,
                                      int64_t groups) {
  const Conv2dShape p = check_conv2d_backward_weight(
      grad_output, input, weight_size, stride, padding, dilation, groups);
  const auto format = conv2d_memory_format(grad_output, input);
  auto grad_weight = at::empty(p.weight_sizes(), grad_output.options());
  if (grad_weight.numel() == 0) return in_memory_format(grad_weight, format);
  const bool fast_dtype = grad_output.scalar_type() == at::kFloat ||
                          grad_output.scalar_type() == at::kDouble;
  const bool fast_shape =
      p.N * p.P * p.Q > 0 && (is_depthwise(p) || p.groups == 1 || is_grouped_fast(p));
  if (fast_shape && is_reduced_float(grad_output.scalar_type())) {
    return conv2d_backward_weight_cpu(to_float(grad_output), to_float(input), weight_size,
                                      stride, padding, dilation, groups)
        .to(grad_output.scalar_type());
  }
  if (fast_dtype && fast_shape) {
    AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_backward_weight_cpu_direct", [&] {
      if (is_grouped_fast(p)) {
        grad_weight = grouped::backward_weight_op<scalar_t>(grad_output, input, p);
      } else if (is_depthwise(p)) {
        auto gw = at::empty(p.weight_sizes(), grad_output.options());
        depthwise_backward_weight_cpu<scalar_t>(grad_output, input, gw.mutable_data_ptr<scalar_t>(), p);
        grad_weight = gw;
      } else {
        grad_weight = dense_backward_weight_cpu<scalar_t>(grad_output, input, p);
      }
    });
    return in_memory_format(grad_weight, format);
  }
  const auto gy = grad_output.contiguous();
  const auto x = input.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(),
      "conv2d_backward_weight_cpu", [&] {
        conv2d_backward_weight_slices<scalar_t>(
            gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
            grad_weight.mutable_data_ptr<scalar_t>(), p);
      });
  return in_memory_format(grad_weight, format);
}

}  // namespace

TORCH_LIBRARY_IMPL(conv_ext, CPU, m) {
  m.impl("conv2d_backward_weight", &conv2d_backward_weight_cpu);
}

}  // namespace cpu
}  // namespace conv_ext
