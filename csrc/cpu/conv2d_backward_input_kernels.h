// Dense grad-input on the CPU (groups == 1, float and double): a direct
// convolution of grad_output with the flipped, transposed filter. With
// stride > 1 the input positions split into stride_h x stride_w phases
// (phase_taps, conv2d_shape.h); the input positions of one phase receive
// contributions from a fixed subset of taps only, evenly spaced, so each
// phase is a dense forward problem (unit stride, its own dilation) on a
// padded NHWC copy of grad_output, writing every stride-th pixel of grad
// input. No multiply touches an inserted zero.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "conv2d_cpu_common.h"
#include "conv2d_dense_kernels.h"
#include "conv2d_layout_kernels.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// Packs w'[c][k][taps] (K x C x R x S weights, any strides) for the phase
// problem: forward "K" = C, forward "C" = K, taps (rt[m], st[m']).
// Weights of E (T, or bfloat16/float16 widened here), packed as T.
template <typename T, typename E = T>
at::Tensor pack_phase_weights(const at::Tensor& weight, const std::vector<int64_t>& rt,
                              const std::vector<int64_t>& st) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t K = weight.size(0), C = weight.size(1);
  const int64_t R = static_cast<int64_t>(rt.size()), S = static_cast<int64_t>(st.size());
  at::Tensor packed = at::empty({(C + L - 1) / L, R, S, K, L}, compute_options<T>(weight.options()));
  pack_lane_blocks<T, E>(weight.const_data_ptr<E>(), C, weight.stride(1), K, weight.stride(0),
                      tap_offsets(rt, st, weight.stride(2), weight.stride(3)),
                      packed.mutable_data_ptr<T>());
  return packed;
}

// Whether dense_backward_input can write grad_input as NCHW: at unit stride
// its one phase problem covers the whole NHWC-contiguous grad_input, so the
// dense kernel's NCHW output applies (dense_writes_nchw).
template <typename T>
bool dense_backward_input_writes_nchw(const Conv2dShape& p) {
  return p.stride_h == 1 && p.stride_w == 1 &&
         dense_writes_nchw<T>(DenseProblem{.N = p.N, .C = p.K, .Hp = 0, .Wp = 0, .K = p.C,
                                           .R = p.R, .S = p.S, .P = p.H, .Q = p.W,
                                           .stride_h = 1, .stride_w = 1, .dilation_h = 1,
                                           .dilation_w = 1, .out_image = 0, .out_row = 0,
                                           .out_pixel = 0});
}

// Dense grad-input into an NHWC buffer gx [N][H][W][C] (zeroed by the caller
// when some phase has no taps), or, with nchw (where
// dense_backward_input_writes_nchw), a contiguous NCHW one. grad_output and
// weight of S (T, or bfloat16/float16 widened in the padded copy and the
// packing); gx of O: T, or S with nchw (rounded by the NCHW transpose).
template <typename T, typename S = T, typename O = T>
void dense_backward_input(const at::Tensor& grad_output, const at::Tensor& weight, O* gx,
                          const Conv2dShape& p, bool nchw = false) {
  std::vector<PhaseTapList> rows(p.stride_h), cols(p.stride_w);
  int64_t top = 0, bottom = 0, left = 0, right = 0;
  for (int64_t a = 0; a < p.stride_h; ++a) {
    rows[a] = phase_tap_list(a, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h);
    if (rows[a].tap.empty() || rows[a].count == 0) continue;
    top = std::max(top, -rows[a].offset.front());
    bottom = std::max(bottom, rows[a].count - 1 + rows[a].offset.back() - (p.P - 1));
  }
  for (int64_t a = 0; a < p.stride_w; ++a) {
    cols[a] = phase_tap_list(a, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w);
    if (cols[a].tap.empty() || cols[a].count == 0) continue;
    left = std::max(left, -cols[a].offset.front());
    right = std::max(right, cols[a].count - 1 + cols[a].offset.back() - (p.Q - 1));
  }
  // Padded NHWC grad_output; asymmetric padding through a symmetric copy of
  // the larger side (a few zero rows more, no branch in the kernel).
  const int64_t pad_h = std::max(top, bottom), pad_w = std::max(left, right);
  const at::Tensor gy = padded_nhwc<T, S>(grad_output, pad_h, pad_w);
  const int64_t Hp = p.P + 2 * pad_h, Wp = p.Q + 2 * pad_w;
  for (int64_t ah = 0; ah < p.stride_h; ++ah) {
    for (int64_t aw = 0; aw < p.stride_w; ++aw) {
      const PhaseTapList& rt = rows[ah];
      const PhaseTapList& ct = cols[aw];
      if (rt.tap.empty() || ct.tap.empty() || rt.count == 0 || ct.count == 0) continue;
      const at::Tensor w = pack_phase_weights<T, S>(weight, rt.tap, ct.tap);
      const int64_t x_offset = ((pad_h + rt.offset.front()) * Wp + pad_w + ct.offset.front()) * p.K;
      // Unit stride over grad_output (forward "C" = K, "K" = C), the phase's
      // taps, every stride-th pixel of the NHWC grad_input.
      const DenseProblem d{.N = p.N, .C = p.K, .Hp = Hp, .Wp = Wp, .K = p.C,
                           .R = static_cast<int64_t>(rt.tap.size()),
                           .S = static_cast<int64_t>(ct.tap.size()), .P = rt.count,
                           .Q = ct.count, .stride_h = 1, .stride_w = 1,
                           .dilation_h = rt.spacing, .dilation_w = ct.spacing,
                           .out_image = p.H * p.W * p.C, .out_row = p.stride_h * p.W * p.C,
                           .out_pixel = p.stride_w * p.C, .nchw = nchw};
      dense_forward<T, O>(gy.const_data_ptr<T>() + x_offset, w.const_data_ptr<T>(), nullptr,
                       gx + (ah * p.W + aw) * p.C, d);
    }
  }
}

// Whether some input positions receive no tap (their gradient is zero).
inline bool backward_input_has_empty_phase(const Conv2dShape& p) {
  for (int64_t a = 0; a < p.stride_h; ++a) {
    if (phase_taps(a, p.pad_h, p.stride_h, p.dilation_h, p.R).count == 0) return true;
  }
  for (int64_t a = 0; a < p.stride_w; ++a) {
    if (phase_taps(a, p.pad_w, p.stride_w, p.dilation_w, p.S).count == 0) return true;
  }
  return false;
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
