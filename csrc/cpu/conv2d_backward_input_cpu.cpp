// conv2d_backward_input on the CPU. float and double: dense grad-input as a
// direct convolution of grad_output with the flipped filter, one unit-stride
// problem per stride phase, on the forward's register-blocked kernel
// (pointwise NCHW: the transposed GEMM); depthwise: per plane, vectorized
// along the width. Other dtypes and grouped convolutions: the generic kernel
// below, the transpose of the forward loop nest, one grad_input plane (n, c)
// per task. Every element is accumulated by one thread in a fixed order on
// all paths: no atomics, identical results run to run and across thread
// counts.
#include <torch/library.h>

#include "conv2d_cpu_common.h"
#include "conv2d_direct_cpu.h"
#include "conv2d_grouped_cpu.h"
#include "depthwise_kernels_cpu.h"

namespace conv_ext {
namespace cpu {
namespace {

template <typename scalar_t>
void conv2d_backward_input_planes(const scalar_t* grad_output,
                                  const scalar_t* weight, scalar_t* grad_input,
                                  const Conv2dShape& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto rows = row_ranges(p);
  const auto cols = column_ranges(p);
  const int64_t plane = p.H * p.W;
  at::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(plane);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / p.C, c = nc % p.C;
      const int64_t g = c / p.C_per_group, cg = c % p.C_per_group;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t kk = 0; kk < p.K_per_group; ++kk) {
        const int64_t k = g * p.K_per_group + kk;
        const scalar_t* gy = grad_output + (n * p.K + k) * p.P * p.Q;
        const scalar_t* w = weight + ((k * p.C_per_group + cg) * p.R) * p.S;
        for (int64_t r = 0; r < p.R; ++r) {
          for (int64_t s = 0; s < p.S; ++s) {
            const acc_t wv = static_cast<acc_t>(w[r * p.S + s]);
            const int64_t q0 = cols[s].lo, q1 = cols[s].hi;
            const int64_t col0 = q0 * p.stride_w + s * p.dilation_w - p.pad_w;
            for (int64_t oh = rows[r].lo; oh < rows[r].hi; ++oh) {
              const int64_t ih = oh * p.stride_h + r * p.dilation_h - p.pad_h;
              acc_t* gx = acc.data() + ih * p.W + col0;
              const scalar_t* gyrow = gy + oh * p.Q;
              if (p.stride_w == 1) {
                for (int64_t q = q0; q < q1; ++q) {
                  gx[q - q0] += wv * static_cast<acc_t>(gyrow[q]);
                }
              } else {
                for (int64_t q = q0; q < q1; ++q) {
                  gx[(q - q0) * p.stride_w] += wv * static_cast<acc_t>(gyrow[q]);
                }
              }
            }
          }
        }
      }
      scalar_t* out = grad_input + nc * plane;
      for (int64_t i = 0; i < plane; ++i) out[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

// Depthwise: per plane and stride phase, a forward problem on the
// grad_output plane with the rotated sub-filter (depthwise_kernels_cpu.h).
template <typename T>
at::Tensor depthwise_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                        const Conv2dShape& p, at::MemoryFormat format) {
  if (format == at::MemoryFormat::ChannelsLast && depthwise::nhwc_input_grad_as_forward(p)) {
    // The channels_last forward kernel with the rotated filter, as [R][S][C].
    const at::Tensor gy = grad_output.stride(1) == 1
                              ? grad_output
                              : grad_output.contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor wt = weight.flip({2, 3}).reshape({p.C, p.R * p.S}).t().contiguous();
    auto gx = at::empty(p.input_sizes(), grad_output.options().memory_format(at::MemoryFormat::ChannelsLast));
    depthwise::forward_nhwc<T>(gy, wt.const_data_ptr<T>(), nullptr, gx.mutable_data_ptr<T>(),
                               depthwise::input_grad_forward_shape(p));
    return gx;
  }
  auto grad_input = at::empty(p.input_sizes(), grad_output.options());
  const at::Tensor w = weight.contiguous();
  const at::Tensor gy = grad_output.stride(3) == 1 ? grad_output : grad_output.contiguous();
  depthwise::backward_input_planes<T>(gy, w.const_data_ptr<T>(), grad_input.mutable_data_ptr<T>(), p);
  return in_memory_format(grad_input, format);
}

template <typename T>
at::Tensor dense_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                    const Conv2dShape& p, at::MemoryFormat format) {
  if (p.R == 1 && p.S == 1 && p.pad_h == 0 && p.pad_w == 0 && p.stride_h == 1 &&
      p.stride_w == 1 && format == at::MemoryFormat::Contiguous) {
    // grad_input[C][HW] = W^T[C][K] grad_output[K][HW] per image.
    return pointwise_nchw<T>(grad_output, weight.view({p.K, p.C}).t(), at::Tensor(), 1, 1, p.H,
                             p.W);
  }
  const auto options = grad_output.options().memory_format(at::MemoryFormat::ChannelsLast);
  // (at::zeros would ignore the memory format in options)
  auto gx = at::empty(p.input_sizes(), options);
  if (backward_input_has_empty_phase(p)) gx.zero_();
  dense_backward_input<T>(grad_output, weight, gx.mutable_data_ptr<T>(), p);
  if (format == at::MemoryFormat::ChannelsLast) return gx;
  auto out = at::empty(p.input_sizes(), grad_output.options());
  nhwc_to_nchw<T>(gx.const_data_ptr<T>(), out.mutable_data_ptr<T>(), p.N, p.C, p.H * p.W);
  return out;
}

at::Tensor conv2d_backward_input_cpu(const at::Tensor& grad_output,
                                     const at::Tensor& weight,
                                     at::IntArrayRef input_size,
                                     at::IntArrayRef stride,
                                     at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape p = check_conv2d_backward_input(
      grad_output, weight, input_size, stride, padding, dilation, groups);
  const auto format = conv2d_memory_format(grad_output, weight);
  auto grad_input = at::empty(p.input_sizes(), grad_output.options());
  if (grad_input.numel() == 0) return in_memory_format(grad_input, format);
  const bool fast_dtype = grad_output.scalar_type() == at::kFloat ||
                          grad_output.scalar_type() == at::kDouble;
  const bool fast_shape = p.P * p.Q > 0 && p.K_per_group > 0 &&
                          (is_depthwise(p) || p.groups == 1 || is_grouped_fast(p));
  if (fast_shape && is_reduced_float(grad_output.scalar_type())) {
    return conv2d_backward_input_cpu(to_float(grad_output), to_float(weight), input_size, stride,
                                     padding, dilation, groups)
        .to(grad_output.scalar_type());
  }
  if (fast_dtype && fast_shape) {
    at::Tensor result;
    AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_backward_input_cpu_direct", [&] {
      result = is_grouped_fast(p)
                   ? grouped::backward_input_op<scalar_t>(grad_output, weight, p, format)
               : is_depthwise(p) ? depthwise_backward_input_cpu<scalar_t>(grad_output, weight, p, format)
                               : dense_backward_input_cpu<scalar_t>(grad_output, weight, p, format);
    });
    return result;
  }
  const auto gy = grad_output.contiguous();
  const auto w = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(),
      "conv2d_backward_input_cpu", [&] {
        conv2d_backward_input_planes<scalar_t>(
            gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
            grad_input.mutable_data_ptr<scalar_t>(), p);
      });
  return in_memory_format(grad_input, format);
}

}  // namespace

TORCH_LIBRARY_IMPL(conv_ext, CPU, m) {
  m.impl("conv2d_backward_input", &conv2d_backward_input_cpu);
}

}  // namespace cpu
}  // namespace conv_ext
