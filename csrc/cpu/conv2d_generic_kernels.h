// The generic CPU kernels: every dtype (half and bfloat16 included), any
// groups; the generic path of conv2d_cpu_plan.h. Plain loops over one output
// plane (forward: (n, k); grad-input: (n, c)) or one filter slice (grad-weight:
// (k, c)) per task, accumulating in the op-math type. Every element is summed
// by one thread in a fixed order (grad-weight's dot products keep a fixed
// number of partial sums combined in a fixed order), so results are
// identical run to run and across thread counts, with no atomics.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "conv2d_cpu_common.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

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

inline constexpr int kDotLanes = 16;  // partial sums per dot product (SIMD-friendly)

template <typename acc_t, typename scalar_t>
inline acc_t strided_dot(const scalar_t* a, const scalar_t* b,
                         int64_t b_stride, int64_t count) {
  acc_t lanes[kDotLanes] = {};
  int64_t i = 0;
  if (b_stride == 1) {
    for (; i + kDotLanes <= count; i += kDotLanes) {
      for (int l = 0; l < kDotLanes; ++l) {
        lanes[l] += static_cast<acc_t>(a[i + l]) * static_cast<acc_t>(b[i + l]);
      }
    }
  }
  for (; i < count; ++i) {
    lanes[i % kDotLanes] +=
        static_cast<acc_t>(a[i]) * static_cast<acc_t>(b[i * b_stride]);
  }
  acc_t sum = 0;
  for (int l = 0; l < kDotLanes; ++l) sum += lanes[l];
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

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
