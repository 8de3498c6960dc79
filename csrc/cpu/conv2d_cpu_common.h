// Helpers shared by the CPU kernels: the parallel grain, the range of output
// positions whose input lies inside the image (so inner loops carry no bounds
// checks), the table of register-tile kernels for tail tiles, and the layout
// copies (zero-padded NHWC in, NHWC back to NCHW out).
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "../conv2d_params.h"

namespace conv_ext {
namespace cpu {

// Grain of at::parallel_for for items of `work` multiply-adds (or element
// copies) each: a thread gets at least ~32K of work, so small problems run
// on one thread instead of paying a fork/join (and, on a busy machine, a
// wait for a descheduled thread) per step.
inline int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kMinWork = int64_t{1} << 15;
  return std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, work_per_item));
}

// The taps of one phase along one axis (phase_taps in conv2d_shape.h) as
// lists: input index i*stride + a receives tap `tap[m]` from output index
// i + offset[m]; taps ordered by increasing offset.
struct PhaseTapList {
  std::vector<int64_t> tap, offset;
  int64_t count = 0;      // input positions in this phase
  int64_t spacing = 1;    // offset difference between consecutive taps
};

inline PhaseTapList phase_tap_list(int64_t a, int64_t size, int64_t kernel, int64_t stride,
                                   int64_t pad, int64_t dilation) {
  const PhaseTaps taps = phase_taps(a, pad, stride, dilation, kernel);
  PhaseTapList t;
  t.count = phase_positions(a, size, stride);
  for (int j = taps.count - 1; j >= 0; --j) {  // decreasing tap = increasing offset
    const int64_t r = taps.first + int64_t{j} * taps.step;
    t.tap.push_back(r);
    t.offset.push_back(phase_tap_offset(a, pad, stride, dilation, r));
  }
  if (t.tap.size() > 1) t.spacing = t.offset[1] - t.offset[0];
  return t;
}

// Smallest q with q * stride + offset >= 0, and one past the largest q with
// q * stride + offset < size, clamped to [0, count]. offset = kernel tap
// position minus padding; the interior [lo, hi) needs no bounds checks.
struct ValidRange {
  int64_t lo, hi;
};

inline ValidRange valid_output_range(int64_t offset, int64_t stride,
                                     int64_t size, int64_t count) {
  // q * stride + offset >= 0  <=>  q >= ceil(-offset / stride)
  int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  // q * stride + offset <= size - 1  <=>  q <= floor((size - 1 - offset) / stride)
  int64_t last = size - 1 - offset;
  int64_t hi = last < 0 ? 0 : last / stride + 1;
  lo = std::min(lo, count);
  hi = std::max(lo, std::min(hi, count));
  return {lo, hi};
}

// Output ranges for every kernel tap along one axis, computed once per call.
inline std::vector<ValidRange> tap_ranges(int64_t taps, int64_t dilation, int64_t pad,
                                          int64_t stride, int64_t size, int64_t outputs) {
  std::vector<ValidRange> ranges(taps);
  for (int64_t t = 0; t < taps; ++t) {
    ranges[t] = valid_output_range(t * dilation - pad, stride, size, outputs);
  }
  return ranges;
}

// Row ranges for every tap r, column ranges for every tap s.
inline std::vector<ValidRange> row_ranges(const Conv2dShape& p) {
  return tap_ranges(p.R, p.dilation_h, p.pad_h, p.stride_h, p.H, p.P);
}
inline std::vector<ValidRange> column_ranges(const Conv2dShape& p) {
  return tap_ranges(p.S, p.dilation_w, p.pad_w, p.stride_w, p.W, p.Q);
}

// The register-tile kernels of one loop nest, one per tail size:
// fn(a, b) = make.template operator()<a, b>() for 1 <= a <= A, 1 <= b <= B,
// e.g. TileTable<Fn, 6, 4> table([]<int UR, int NB>() { return &tile<T, UR, NB>; }).
// Tails (fewer pixels or channels than a full tile) get their own fully
// unrolled instance instead of a runtime loop bound.
template <typename Fn, int A, int B>
class TileTable {
 public:
  template <typename Make>
  explicit TileTable(Make make) {
    fill(make, std::make_integer_sequence<int, A * B>{});
  }
  Fn operator()(int a, int b) const { return fn_[a - 1][b - 1]; }

 private:
  template <typename Make, int... I>
  void fill(Make& make, std::integer_sequence<int, I...>) {
    ((fn_[I / B][I % B] = make.template operator()<I / B + 1, I % B + 1>()), ...);
  }
  std::array<std::array<Fn, B>, A> fn_{};
};

// d[w * d_pixel + c] = s[c * sc + w * sw] for c < C, w < W: one image row
// from NCHW to NHWC. Whole 8 x 8 blocks go through a local array with fixed
// loop bounds, which GCC turns into vector shuffles: 1.9x (AVX-512) and 1.3x
// (AVX2) faster than the scalar strided loop, which is left for the edges.
template <typename T>
void transpose_rows(const T* s, int64_t sc, int64_t sw, int64_t C, int64_t W, T* d,
                    int64_t d_pixel) {
  constexpr int B = 8;
  const int64_t C_full = sw == 1 ? C / B * B : 0, W_full = sw == 1 ? W / B * B : 0;
  for (int64_t c0 = 0; c0 < C_full; c0 += B) {
    for (int64_t w0 = 0; w0 < W_full; w0 += B) {
      T t[B][B];
      for (int c = 0; c < B; ++c)
        for (int w = 0; w < B; ++w) t[c][w] = s[(c0 + c) * sc + w0 + w];
      for (int w = 0; w < B; ++w)
        for (int c = 0; c < B; ++c) d[(w0 + w) * d_pixel + c0 + c] = t[c][w];
    }
    for (int64_t c = c0; c < c0 + B; ++c)
      for (int64_t w = W_full; w < W; ++w) d[w * d_pixel + c] = s[c * sc + w * sw];
  }
  for (int64_t c = C_full; c < C; ++c)
    for (int64_t w = 0; w < W; ++w) d[w * d_pixel + c] = s[c * sc + w * sw];
}

// Zero-padded NHWC copy of `input` (any strides): [N][H + 2 pad_h][W + 2 pad_w][C].
// With channels_to > C, channels C..channels_to-1 are zero.
template <typename T>
at::Tensor padded_nhwc(const at::Tensor& input, int64_t pad_h, int64_t pad_w,
                       int64_t channels_to = 0) {
  const int64_t N = input.size(0), C0 = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t C = std::max(C0, channels_to);
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w;
  auto out = at::empty({N, Hp, Wp, C}, input.options());
  const T* src = input.const_data_ptr<T>();
  T* dst = out.mutable_data_ptr<T>();
  const int64_t sn = input.stride(0), sc = input.stride(1), sh = input.stride(2),
                sw = input.stride(3);
  at::parallel_for(0, N * Hp, grain_for(Wp * C), [&](int64_t begin, int64_t end) {
    for (int64_t nh = begin; nh < end; ++nh) {
      const int64_t n = nh / Hp, hp = nh % Hp, h = hp - pad_h;
      T* row = dst + nh * Wp * C;
      if (h < 0 || h >= H) {
        std::fill(row, row + Wp * C, T(0));
        continue;
      }
      std::fill(row, row + pad_w * C, T(0));
      std::fill(row + (pad_w + W) * C, row + Wp * C, T(0));
      const T* s = src + n * sn + h * sh;
      T* d = row + pad_w * C;
      if (C > C0) std::fill(d, d + W * C, T(0));
      if (sc == 1) {  // channels_last source: rows of C
        for (int64_t w = 0; w < W; ++w) std::memcpy(d + w * C, s + w * sw, sizeof(T) * C0);
      } else {  // NCHW source: transpose C x W
        transpose_rows<T>(s, sc, sw, C0, W, d, C);
      }
    }
  });
  return out;
}

// dst[n][c][hw] = src[n][hw][c]: NHWC to NCHW, in cache-sized tiles.
template <typename T>
void nhwc_to_nchw(const T* src, T* dst, int64_t N, int64_t C, int64_t HW) {
  constexpr int64_t kTileHW = 64;
  const int64_t hw_tiles = (HW + kTileHW - 1) / kTileHW;
  at::parallel_for(0, N * hw_tiles, grain_for(kTileHW * C), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / hw_tiles, hw0 = (item % hw_tiles) * kTileHW;
      const int64_t hw1 = std::min(HW, hw0 + kTileHW);
      // d[c][hw] = s[hw][c] over this tile's pixels, all channels
      transpose_rows<T>(src + (n * HW + hw0) * C, C, 1, hw1 - hw0, C, dst + n * C * HW + hw0, HW);
    }
  });
}

// An NHWC result (channels_last tensor `nhwc`) in `format`: as it is for
// channels_last, else a contiguous NCHW copy.
template <typename T>
at::Tensor nhwc_in_format(const at::Tensor& nhwc, at::MemoryFormat format) {
  if (format == at::MemoryFormat::ChannelsLast) return nhwc;
  auto out = at::empty(nhwc.sizes(), nhwc.options().memory_format(at::MemoryFormat::Contiguous));
  nhwc_to_nchw<T>(nhwc.const_data_ptr<T>(), out.mutable_data_ptr<T>(), nhwc.size(0),
                  nhwc.size(1), nhwc.size(2) * nhwc.size(3));
  return out;
}

// A bfloat16/float16 tensor as float32 (memory format kept), or undefined.
inline at::Tensor to_float(const at::Tensor& t) {
  return t.defined() ? t.to(at::kFloat) : t;
}

}  // namespace cpu
}  // namespace conv_ext
