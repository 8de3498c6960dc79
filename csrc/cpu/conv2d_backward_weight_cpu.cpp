// conv2d_backward_weight on the CPU: the backend behind the op front
// (conv2d_front.h), running the path select_path names (conv2d_cpu_plan.h).
// Each result element is reduced by one thread in a fixed order on all
// paths: no atomics, identical results run to run and across thread counts.
#include <torch/library.h>

#include "../conv2d_front.h"
#include "conv2d_backward_weight_kernels.h"
#include "conv2d_cpu_plan.h"
#include "conv2d_depthwise_kernels.h"
#include "conv2d_generic_kernels.h"
#include "conv2d_grouped_kernels.h"

namespace conv_ext {
namespace cpu {
namespace {

// Depthwise: one channel per task, images summed in order (vector partial
// sums, lanes reduced in a fixed order at the end).
template <typename T>
at::Tensor depthwise_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                         const Conv2dShape& p) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  auto grad_weight = at::empty(p.weight_sizes(), grad_output.options());
  T* gw = grad_weight.mutable_data_ptr<T>();
  const DepthwisePlane d = depthwise_plane(p, L);
  const std::vector<int64_t> tap_offset = depthwise_tap_offsets(p, d);
  const int64_t taps = p.taps();
  const at::Tensor gy_rows = grad_output.stride(3) == 1 ? grad_output : grad_output.contiguous();
  const T* gy = gy_rows.const_data_ptr<T>();
  const int64_t gsn = gy_rows.stride(0), gsc = gy_rows.stride(1), gsh = gy_rows.stride(2);
  const T* x = input.const_data_ptr<T>();
  const int64_t sn = input.stride(0), sc = input.stride(1), sh = input.stride(2),
                sw = input.stride(3);
  at::parallel_for(0, p.C, grain_for(p.N * p.P * p.Q * taps), [&](int64_t begin, int64_t end) {
    std::vector<T> buf(d.Hp * p.stride_w * d.row_len, T(0));  // padding stays zero
    std::vector<typename V::type> acc(taps);
    for (int64_t c = begin; c < end; ++c) {
      std::fill(acc.begin(), acc.end(), V::zero());
      for (int64_t n = 0; n < p.N; ++n) {
        fill_phase_split(x + n * sn + c * sc, sh, sw, p, d, buf.data());
        depthwise_plane_backward_weight(buf.data(), gy + n * gsn + c * gsc, gsh,
                                        tap_offset.data(), acc.data(), p, d);
      }
      for (int64_t t = 0; t < taps; ++t) {
        T sum = 0;
        for (int l = 0; l < L; ++l) sum += acc[t][l];
        gw[c * taps + t] = sum;
      }
    }
  });
  return grad_weight;
}

// Dense: on a padded NHWC input and an NHWC grad_output with channels padded
// to whole vectors, into the packed layout, then unpacked.
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

// Other dtypes and grouped convolutions: one (k, c) filter slice per task,
// reducing over N, P and Q.
at::Tensor generic_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                       const Conv2dShape& p) {
  auto grad_weight = at::empty(p.weight_sizes(), grad_output.options());
  const auto gy = grad_output.contiguous();
  const auto x = input.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(), "conv2d_backward_weight_cpu_generic",
      [&] {
        conv2d_backward_weight_slices<scalar_t>(gy.const_data_ptr<scalar_t>(),
                                                x.const_data_ptr<scalar_t>(),
                                                grad_weight.mutable_data_ptr<scalar_t>(), p);
      });
  return grad_weight;
}

at::Tensor backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                               const Conv2dShape& p, at::MemoryFormat format) {
  const CpuPath path = select_path(p, Pass::kBackwardWeight, grad_output.scalar_type());
  if (path == CpuPath::kGeneric) return generic_backward_weight_cpu(grad_output, input, p);
  if (is_reduced_float(grad_output.scalar_type())) {
    return backward_weight_cpu(to_float(grad_output), to_float(input), p, format)
        .to(grad_output.scalar_type());
  }
  at::Tensor result;
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_backward_weight_cpu", [&] {
    if (path == CpuPath::kGrouped) {
      result = grouped::backward_weight_op<scalar_t>(grad_output, input, p);
    } else if (path == CpuPath::kDepthwise) {
      result = depthwise_backward_weight_cpu<scalar_t>(grad_output, input, p);
    } else {
      result = dense_backward_weight_cpu<scalar_t>(grad_output, input, p);
    }
  });
  return result;
}

at::Tensor conv2d_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                      at::IntArrayRef weight_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups) {
  return conv2d_backward_weight_front(grad_output, input, weight_size, stride, padding,
                                      dilation, groups, backward_weight_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(conv_ext, CPU, m) {
  m.impl("conv2d_backward_weight", &conv2d_backward_weight_cpu);
}

}  // namespace cpu
}  // namespace conv_ext
