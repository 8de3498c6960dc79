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

// Every tap (r, s) with the output rows `rows` and columns [q0, q1) = `cols`
// whose input lies inside the image (row_ranges, column_ranges): output
// (oh, q) reads input row input_row(p, oh, r), column
// col0 + (q - q0) * stride_w. Calls f(r, s, rows, cols, col0).
template <typename F>
void for_each_tap(const Conv2dShape& p, const std::vector<ValidRange>& rows,
                  const std::vector<ValidRange>& cols, const F& f) {
  for (int64_t r = 0; r < p.R; ++r) {
    for (int64_t s = 0; s < p.S; ++s) {
      f(r, s, rows[r], cols[s], cols[s].lo * p.stride_w + s * p.dilation_w - p.pad_w);
    }
  }
}

inline int64_t input_row(const Conv2dShape& p, int64_t oh, int64_t r) {
  return oh * p.stride_h + r * p.dilation_h - p.pad_h;
}

// y[i] += a * x[i * stride] for i < count (the forward's gather).
template <typename acc_t, typename scalar_t>
inline void gather_axpy(acc_t* y, acc_t a, const scalar_t* x, int64_t stride, int64_t count) {
  if (stride == 1) {  // a separate loop: it vectorizes
    for (int64_t i = 0; i < count; ++i) y[i] += a * static_cast<acc_t>(x[i]);
  } else {
    for (int64_t i = 0; i < count; ++i) y[i] += a * static_cast<acc_t>(x[i * stride]);
  }
}

// y[i * stride] += a * x[i] for i < count (grad-input's scatter).
template <typename acc_t, typename scalar_t>
inline void scatter_axpy(acc_t* y, int64_t stride, acc_t a, const scalar_t* x, int64_t count) {
  if (stride == 1) {
    for (int64_t i = 0; i < count; ++i) y[i] += a * static_cast<acc_t>(x[i]);
  } else {
    for (int64_t i = 0; i < count; ++i) y[i * stride] += a * static_cast<acc_t>(x[i]);
  }
}

// Forward: one output plane (n, k) per task.
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
        const scalar_t* x = input + ((n * p.C + g * p.C_per_group + c) * p.H) * p.W;
        const scalar_t* w = weight + ((k * p.C_per_group + c) * p.R) * p.S;
        for_each_tap(p, rows, cols, [&](int64_t r, int64_t s, ValidRange rr, ValidRange cr,
                                        int64_t col0) {
          const acc_t wv = static_cast<acc_t>(w[r * p.S + s]);
          for (int64_t oh = rr.lo; oh < rr.hi; ++oh) {
            gather_axpy(acc.data() + oh * p.Q + cr.lo, wv, x + input_row(p, oh, r) * p.W + col0,
                        p.stride_w, cr.hi - cr.lo);
          }
        });
      }
      scalar_t* y = output + nk * plane;
      for (int64_t i = 0; i < plane; ++i) y[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

// grad-input: the transpose of the forward loop nest, one grad_input plane
// (n, c) per task.
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
        for_each_tap(p, rows, cols, [&](int64_t r, int64_t s, ValidRange rr, ValidRange cr,
                                        int64_t col0) {
          const acc_t wv = static_cast<acc_t>(w[r * p.S + s]);
          for (int64_t oh = rr.lo; oh < rr.hi; ++oh) {
            scatter_axpy(acc.data() + input_row(p, oh, r) * p.W + col0, p.stride_w, wv,
                         gy + oh * p.Q + cr.lo, cr.hi - cr.lo);
          }
        });
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

// grad-weight: one (k, c) filter slice per task, reducing over N, P and Q.
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
        for_each_tap(p, rows, cols, [&](int64_t r, int64_t s, ValidRange rr, ValidRange cr,
                                        int64_t col0) {
          acc_t sum = 0;
          for (int64_t oh = rr.lo; oh < rr.hi; ++oh) {
            sum += strided_dot<acc_t>(gy + oh * p.Q + cr.lo, x + input_row(p, oh, r) * p.W + col0,
                                      p.stride_w, cr.hi - cr.lo);
          }
          acc[r * p.S + s] += sum;
        });
      }
      scalar_t* gw = grad_weight + kc * taps;
      for (int64_t i = 0; i < taps; ++i) gw[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
