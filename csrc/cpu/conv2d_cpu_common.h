// Helpers shared by the CPU kernels, compiled once for the build's baseline
// ISA (conv2d_cpu_isa_prelude.h): the parallel grain, the range of output
// positions whose input lies inside the image (so inner loops carry no bounds
// checks), the table of register-tile kernels for tail tiles. Nothing here
// may move data in bulk: such loops go into the per-ISA headers (the layout
// copies: conv2d_layout_kernels.h).
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

// The other way round: for every output index o, the taps [lo, hi) that
// read the image (the taps outside read only zero padding; lo >= hi: none).
// Contiguous because an output's input position grows with the tap.
inline std::vector<ValidRange> output_tap_windows(const std::vector<ValidRange>& by_tap,
                                                  int64_t outputs) {
  const int64_t taps = static_cast<int64_t>(by_tap.size());
  std::vector<ValidRange> windows(outputs, ValidRange{taps, 0});
  for (int64_t t = 0; t < taps; ++t) {
    for (int64_t o = by_tap[t].lo; o < by_tap[t].hi; ++o) {
      windows[o].lo = std::min(windows[o].lo, t);
      windows[o].hi = std::max(windows[o].hi, t + 1);
    }
  }
  return windows;
}

// Splits [0, n) into ceil(n / max) pieces of near-equal size (56 = 4 x 11 + 12,
// not 4 x 12 + 8: a short last piece runs at a fraction of the rate): f(start, size) for each.
template <typename F>
inline void near_equal_pieces(int64_t n, int64_t max, F&& f) {
  const int64_t pieces = (n + max - 1) / max;
  for (int64_t i = 0, start = 0; i < pieces; ++i) {
    const int64_t size = (n - start) / (pieces - i);
    f(start, size);
    start += size;
  }
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

// A bfloat16/float16 tensor as float32 (memory format kept), or undefined.
inline at::Tensor to_float(const at::Tensor& t) {
  return t.defined() ? t.to(at::kFloat) : t;
}

}  // namespace cpu
}  // namespace conv_ext
