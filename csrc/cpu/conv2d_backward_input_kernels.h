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

// Whether dense_backward_input can write grad_input as NCHW: where no
// phase's tile column of weights is split along K (dense_writes_nchw). At
// unit stride the one phase problem covers the whole grad_input and the
// dense kernel writes NCHW itself; with stride, the phases of a band of
// rows run in one work item (dense_backward_input_phases_nchw).
template <typename T>
bool dense_backward_input_writes_nchw(const Conv2dShape& p) {
  for (int64_t ah = 0; ah < p.stride_h; ++ah) {
    for (int64_t aw = 0; aw < p.stride_w; ++aw) {
      const PhaseTaps r = phase_taps(ah, p.pad_h, p.stride_h, p.dilation_h, p.R);
      const PhaseTaps s = phase_taps(aw, p.pad_w, p.stride_w, p.dilation_w, p.S);
      if (r.count == 0 || s.count == 0) continue;
      if (!dense_writes_nchw<T>(DenseProblem{.N = p.N, .C = p.K, .Hp = 0, .Wp = 0, .K = p.C,
                                             .R = r.count, .S = s.count, .P = p.H, .Q = p.W,
                                             .stride_h = 1, .stride_w = 1, .dilation_h = 1,
                                             .dilation_w = 1, .out_image = 0, .out_row = 0,
                                             .out_pixel = 0})) {
        return false;
      }
    }
  }
  return true;
}

// The taps of every stride phase, and the symmetric padding of grad_output
// that lets every phase's tiles read without bounds checks.
struct BackwardInputPhases {
  std::vector<PhaseTapList> rows, cols;
  int64_t pad_h = 0, pad_w = 0;
};

inline BackwardInputPhases backward_input_phases(const Conv2dShape& p) {
  BackwardInputPhases ph;
  ph.rows.resize(p.stride_h);
  ph.cols.resize(p.stride_w);
  int64_t top = 0, bottom = 0, left = 0, right = 0;
  for (int64_t a = 0; a < p.stride_h; ++a) {
    const PhaseTapList& t = ph.rows[a] = phase_tap_list(a, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h);
    if (t.tap.empty() || t.count == 0) continue;
    top = std::max(top, -t.offset.front());
    bottom = std::max(bottom, t.count - 1 + t.offset.back() - (p.P - 1));
  }
  for (int64_t a = 0; a < p.stride_w; ++a) {
    const PhaseTapList& t = ph.cols[a] = phase_tap_list(a, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w);
    if (t.tap.empty() || t.count == 0) continue;
    left = std::max(left, -t.offset.front());
    right = std::max(right, t.count - 1 + t.offset.back() - (p.Q - 1));
  }
  // Asymmetric padding through a symmetric copy of the larger side (a few
  // zero rows more, no branch in the kernel).
  ph.pad_h = std::max(top, bottom);
  ph.pad_w = std::max(left, right);
  return ph;
}

template <typename T, typename S, typename O>
void dense_backward_input_phases_nchw(const at::Tensor& grad_output, const at::Tensor& weight,
                                      O* gx, const Conv2dShape& p) {
  constexpr int L = simd::Vec<T>::size;
  const BackwardInputPhases ph = backward_input_phases(p);
  const at::Tensor gy = padded_nhwc<T, S>(grad_output, ph.pad_h, ph.pad_w);
  const int64_t Hp = p.P + 2 * ph.pad_h, Wp = p.Q + 2 * ph.pad_w;
  const int64_t Cb = (p.C + L - 1) / L;
  const DenseTileShape shape = dense_tile_shape(Cb);
  // The phases with taps, their tile strides and where their taps start in
  // the packed filter and grad_output.
  struct Phase {
    int64_t ah, aw, tap0, x0;
    DenseTileStrides g;
  };
  std::vector<Phase> phases;
  std::vector<int64_t> offsets;
  bool empty_phase = false;
  for (int64_t ah = 0; ah < p.stride_h; ++ah) {
    for (int64_t aw = 0; aw < p.stride_w; ++aw) {
      const PhaseTapList& rt = ph.rows[ah];
      const PhaseTapList& ct = ph.cols[aw];
      if (rt.count == 0 || ct.count == 0) continue;  // no such input pixels
      if (rt.tap.empty() || ct.tap.empty()) {
        empty_phase = true;
        continue;
      }
      Phase f{.ah = ah, .aw = aw, .tap0 = static_cast<int64_t>(offsets.size()),
              .x0 = ((ph.pad_h + rt.offset.front()) * Wp + ph.pad_w + ct.offset.front()) * p.K};
      const std::vector<int64_t> o = tap_offsets(rt.tap, ct.tap, weight.stride(2), weight.stride(3));
      offsets.insert(offsets.end(), o.begin(), o.end());
      const int64_t rows = static_cast<int64_t>(rt.tap.size());
      const int64_t cols = static_cast<int64_t>(ct.tap.size());
      const bool fused = ct.spacing == 1 || cols == 1;
      f.g.x_r = rt.spacing * Wp * p.K;
      f.g.x_s = ct.spacing * p.K;
      f.g.w_r = cols * p.K * L;
      f.g.w_rs = p.K * L;
      f.g.R = rows;
      f.g.S_outer = fused ? 1 : cols;
      f.g.inner = fused ? cols * p.K : p.K;
      f.g.K = Cb * L;  // whole vectors: the block has them
      phases.push_back(f);
    }
  }
  const int64_t taps = static_cast<int64_t>(offsets.size());
  // One packing of every phase's sub-filter: [Cb][taps][K][L].
  at::Tensor packed = at::empty({Cb, std::max<int64_t>(taps, 1), p.K, L},
                                compute_options<T>(weight.options()));
  if (taps > 0) {
    pack_lane_blocks<T, S>(weight.const_data_ptr<S>(), p.C, weight.stride(1), p.K,
                           weight.stride(0), offsets, packed.mutable_data_ptr<T>());
  }
  for (Phase& f : phases) f.g.w_kb = taps * p.K * L;
  const T* w = packed.const_data_ptr<T>();
  const T* x = gy.const_data_ptr<T>();
  // Work items: (channel group, image, band of input rows), channel group
  // major (a thread's consecutive items reuse the packed weights). A band
  // is whole stride periods of rows, about 16 tiles per phase, fewer where
  // that leaves under 4 items per thread (N = 1, small planes).
  const int64_t HW = p.H * p.W, period = p.stride_h * p.stride_w;
  const int64_t periods = (p.H + p.stride_h - 1) / p.stride_h;
  const int64_t KG = shape.groups;
  const int64_t items_wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t bands_wanted = std::max<int64_t>(1, (items_wanted + KG * p.N - 1) / (KG * p.N));
  const int64_t target_rows = std::max<int64_t>(1, 16 * shape.ur * period / std::max<int64_t>(p.W, 1) / p.stride_h);
  const int64_t band_periods = std::clamp<int64_t>((periods + bands_wanted - 1) / bands_wanted, 1, target_rows);
  const int64_t bands = (periods + band_periods - 1) / band_periods;
  const int64_t band_rows = band_periods * p.stride_h;
  const int64_t block_width = shape.nb * L;
  const auto& table = dense_tile_table<T>();
  const int64_t taps_per_pixel = std::max<int64_t>(1, taps / std::max<int64_t>(1, period));
  at::parallel_for(0, KG * p.N * bands,
                   grain_for(band_rows * p.W * taps_per_pixel * p.K * shape.nb),
                   [&](int64_t begin, int64_t end) {
    std::vector<T> block(band_rows * p.W * block_width);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t kg = item / (p.N * bands), n = (item / bands) % p.N, band = item % bands;
      const int64_t h0 = band * band_rows, h1 = std::min(p.H, h0 + band_rows);
      const int64_t kb0 = kg * shape.nb;
      const int nb = static_cast<int>(std::min<int64_t>(shape.nb, Cb - kb0));
      if (empty_phase) std::fill(block.begin(), block.begin() + (h1 - h0) * p.W * block_width, T(0));
      for (const Phase& f : phases) {
        const PhaseTapList& rt = ph.rows[f.ah];
        const PhaseTapList& ct = ph.cols[f.aw];
        // phase rows i with h = i * stride_h + ah in [h0, h1)
        const int64_t i0 = std::max<int64_t>(0, (h0 - f.ah + p.stride_h - 1) / p.stride_h);
        const int64_t i1 = std::min(rt.count, (h1 - f.ah + p.stride_h - 1) / p.stride_h);
        if (i0 >= i1) continue;
        const T* xn = x + n * Hp * Wp * p.K + f.x0;
        const T* wk = w + kb0 * f.g.w_kb + f.tap0 * p.K * L;
        int64_t i = i0, j = 0;
        near_equal_pieces((i1 - i0) * ct.count, shape.ur, [&](int64_t, int64_t pixels) {
          const int ur = static_cast<int>(pixels);
          const T* xs[kTilePixels];
          T* outs[kTilePixels];
          for (int u = 0; u < ur; ++u) {
            xs[u] = xn + (i * Wp + j) * p.K;
            outs[u] = block.data() +
                      ((i * p.stride_h + f.ah - h0) * p.W + j * p.stride_w + f.aw) * block_width;
            if (++j == ct.count) j = 0, ++i;
          }
          table(ur, nb)(xs, wk, nullptr, outs, kb0 * L, f.g, false);
        });
      }
      const int64_t channels = std::min<int64_t>(block_width, p.C - kb0 * L);
      transpose_plane<T, T, O>(block.data(), block_width, (h1 - h0) * p.W, channels,
                               gx + (n * p.C + kb0 * L) * HW + h0 * p.W, HW);
    }
  });
}

// Dense grad-input into an NHWC buffer gx [N][H][W][C] (zeroed by the caller
// when some phase has no taps), or, with nchw (where
// dense_backward_input_writes_nchw), a contiguous NCHW one. grad_output and
// weight of S (T, or bfloat16/float16 widened in the padded copy and the
// packing); gx of O: T, or S with nchw (rounded by the NCHW transpose).
template <typename T, typename S = T, typename O = T>
void dense_backward_input(const at::Tensor& grad_output, const at::Tensor& weight, O* gx,
                          const Conv2dShape& p, bool nchw = false) {
  if (nchw && !p.is_unit_stride()) {
    return dense_backward_input_phases_nchw<T, S, O>(grad_output, weight, gx, p);
  }
  const BackwardInputPhases ph = backward_input_phases(p);
  const std::vector<PhaseTapList>& rows = ph.rows;
  const std::vector<PhaseTapList>& cols = ph.cols;
  const int64_t pad_h = ph.pad_h, pad_w = ph.pad_w;
  // A channels_last grad_output already is the NHWC buffer the phases read:
  // no copy; with padding, each phase skips the taps that meet it
  // (DenseProblem::in_place, tap windows per phase output row and column).
  // Not where grad-input has few channels (first layers, C < 8: the
  // phases' edge pixels would run in tiles of 1-2 pixels of one vector;
  // ResNet-50's 3-channel 7x7/2 measured 0.81x -> 0.73x torch in place,
  // within this machine's noise then, so kept out as the forward's are).
  const bool gy_as_is = std::is_same_v<S, T> &&
                        grad_output.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                        (p.C >= 8 || pad_h + pad_w == 0);
  const bool unpadded = gy_as_is && pad_h + pad_w > 0;
  const at::Tensor gy = gy_as_is ? grad_output : padded_nhwc<T, S>(grad_output, pad_h, pad_w);
  const int64_t Hp = gy_as_is ? p.P : p.P + 2 * pad_h, Wp = gy_as_is ? p.Q : p.Q + 2 * pad_w;
  // Phase output i, tap t reads grad_output row first + t * spacing + i (unpadded).
  auto windows = [](const PhaseTapList& list, int64_t extent) {
    std::vector<ValidRange> by_tap(list.tap.size());
    for (size_t t = 0; t < list.tap.size(); ++t) {
      by_tap[t] = valid_output_range(list.offset[t], 1, extent, list.count);
    }
    return output_tap_windows(by_tap, list.count);
  };
  for (int64_t ah = 0; ah < p.stride_h; ++ah) {
    for (int64_t aw = 0; aw < p.stride_w; ++aw) {
      const PhaseTapList& rt = rows[ah];
      const PhaseTapList& ct = cols[aw];
      if (rt.tap.empty() || ct.tap.empty() || rt.count == 0 || ct.count == 0) continue;
      const at::Tensor w = pack_phase_weights<T, S>(weight, rt.tap, ct.tap);
      const int64_t x_offset =
          unpadded ? 0 : ((pad_h + rt.offset.front()) * Wp + pad_w + ct.offset.front()) * p.K;
      // Unit stride over grad_output (forward "C" = K, "K" = C), the phase's
      // taps, every stride-th pixel of the NHWC grad_input.
      DenseProblem d{.N = p.N, .C = p.K, .Hp = Hp, .Wp = Wp, .K = p.C,
                     .R = static_cast<int64_t>(rt.tap.size()),
                     .S = static_cast<int64_t>(ct.tap.size()), .P = rt.count,
                     .Q = ct.count, .stride_h = 1, .stride_w = 1,
                     .dilation_h = rt.spacing, .dilation_w = ct.spacing,
                     .out_image = p.H * p.W * p.C, .out_row = p.stride_h * p.W * p.C,
                     .out_pixel = p.stride_w * p.C, .nchw = nchw};
      if (unpadded) {
        d.in_place = true;
        d.origin = (rt.offset.front() * Wp + ct.offset.front()) * p.K;
        d.row_taps = windows(rt, p.P);
        d.col_taps = windows(ct, p.Q);
      }
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

// Zeroes the pixels of the NHWC grad_input gx [N][H][W][C] that no stride
// phase writes (row or column phase without taps: 1x1 stride 2 leaves 3 of
// 4 pixels), and only those: the phases' problems write every other pixel,
// so the whole buffer is not cleared first.
template <typename T>
void zero_empty_phases_nhwc(T* gx, const Conv2dShape& p) {
  std::vector<char> row_empty(p.stride_h), col_empty(p.stride_w);
  for (int64_t a = 0; a < p.stride_h; ++a)
    row_empty[a] = phase_taps(a, p.pad_h, p.stride_h, p.dilation_h, p.R).count == 0;
  for (int64_t a = 0; a < p.stride_w; ++a)
    col_empty[a] = phase_taps(a, p.pad_w, p.stride_w, p.dilation_w, p.S).count == 0;
  const int64_t row = p.W * p.C;
  at::parallel_for(0, p.N * p.H, grain_for(row), [&](int64_t begin, int64_t end) {
    for (int64_t nh = begin; nh < end; ++nh) {
      T* r = gx + nh * row;
      if (row_empty[(nh % p.H) % p.stride_h]) {
        std::fill(r, r + row, T(0));
        continue;
      }
      for (int64_t w = 0; w < p.W; ++w) {
        if (col_empty[w % p.stride_w]) std::fill(r + w * p.C, r + (w + 1) * p.C, T(0));
      }
    }
  });
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
