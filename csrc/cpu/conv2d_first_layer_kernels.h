// Forward and grad-weight of dense convolutions with few input channels
// (first layers: RGB or grey images, audio waveforms and spectrograms), NCHW,
// vectorized along the output row.
//
// With C < 8 the channel-vectorized dense kernel (conv2d_dense_kernels.h)
// reduces over only C*R*S values per output and then spends more time
// transposing its NHWC result into NCHW than computing it (a 1-D waveform
// layer, 1 -> 512 channels, k10 s5: 60% of the time in the transpose). Here
// a register tile holds KT output channels x QV vectors of L consecutive
// output pixels of one row: per tap (c, r, s) it loads QV input vectors and
// broadcasts KT weights, and stores whole vectors straight into the NCHW
// rows (no NHWC buffer, no transpose).
//
// Each work item (an image and a band of output rows) copies the input rows
// it reads into a per-thread buffer, split by the column stride ("phases"):
// xp[c][padded row][phase][i] = x[n][c][row - pad_h][i * stride_w + phase
// - pad_w], zero outside the image and beyond it, so output pixel q reads tap
// s at xp[...][(s * dilation_w) % stride_w][q + (s * dilation_w) / stride_w]:
// consecutive pixels are consecutive floats at any stride, and no load needs
// a bounds check (rows are padded to whole tiles).
//
// Each output is summed by one tile in the order (c, r, s): results do not
// depend on the thread count or on which images share a call.
//
// grad-weight (backward_weight) reads the same phase-split rows and
// grad_output's NCHW rows in place: the NHWC copies of both that the dense
// grad-weight makes took 40% of a first layer's time (3 -> 32 3x3/2 @224,
// N=8, AVX2).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "conv2d_cpu_common.h"
#include "conv2d_epilogue_cpu.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h
namespace first_layer {

// KT accumulator rows x QV vectors, plus QV input vectors and a broadcast:
// 6 x 4 + 5 of 32 registers with AVX-512, 6 x 2 + 3 of 16 otherwise.
inline constexpr int kTileChannels = 6;
inline constexpr int kRowVectors = simd::kVectorBytes == 64 ? 4 : 2;

// The one rule for this kernel: few input channels, an NCHW output, rows of
// at least two vectors (shorter rows would waste most lanes; the dense
// kernel serves them).
inline bool fits(const Conv2dShape& p, int L) {
  return p.groups == 1 && p.C < 8 && p.Q >= 2 * L;
}

// grad-weight's rule: as fits, with at most an eighth of the rows' lanes
// idle. (AVX2, one thread: the NHWC path, vectors along K, took 35 against
// 32 GFLOP/s at Q = 19 and 43 against 39 at Q = 25; the row path led by
// 1.2-1.8x from Q = 36 up.)
inline bool weight_grad_fits(const Conv2dShape& p, int L) {
  return fits(p, L) && 8 * p.Q >= 7 * ((p.Q + L - 1) / L * L);
}

struct RowProblem {
  int64_t N, C, K, P, Q, R, S;
  int64_t stride_h;
  int64_t x_image, x_channel, x_row, Wx;  // strides of the phase-split input
  int64_t taps;                           // C * R * S
};

// One tile of KT channels x QV whole vectors of pixels.
// x: the phase-split input at (n, first input row of oh, phase 0, q0);
// off[t]: offset of tap t = (c, r, s), t < taps; w: packed [taps][KT] of
// this block; out: NCHW at (n, k0, oh, q0), out_channel apart per channel.
// Only whole, unconditional stores here: a store loop bounded at run time
// made GCC 12 keep the accumulators on the stack (a reload per FMA).
template <typename T, int QV>
__attribute__((noinline)) void row_tile_full(const T* x, const int64_t* off, int64_t taps,
                                             const T* w, const T* bias, T* out,
                                             int64_t out_channel) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  constexpr int KT = kTileChannels;
  typename V::type acc[KT][QV];
  for (int k = 0; k < KT; ++k) {
    const typename V::type b = bias != nullptr ? V::broadcast(bias[k]) : V::zero();
    for (int v = 0; v < QV; ++v) acc[k][v] = b;
  }
  for (int64_t t = 0; t < taps; ++t) {
    const T* xt = x + off[t];
    typename V::type xv[QV];
    for (int v = 0; v < QV; ++v) xv[v] = V::load(xt + v * L);
    const T* wt = w + t * KT;
    for (int k = 0; k < KT; ++k) {
      const typename V::type wb = V::broadcast(wt[k]);
      for (int v = 0; v < QV; ++v) acc[k][v] = simd::fmadd(xv[v], wb, acc[k][v]);
    }
  }
  for (int k = 0; k < KT; ++k)
    for (int v = 0; v < QV; ++v) V::store(out + k * out_channel + v * L, acc[k][v]);
}

// row_tile_full for kcount <= KT real channels and a last vector of
// last_count pixels: a tail tile runs on a scratch tile, copied out.
template <typename T, int QV>
void row_tile(const T* x, const int64_t* off, int64_t taps, const T* w, const T* bias, T* out,
              int64_t out_channel, int kcount, int last_count) {
  constexpr int L = simd::Vec<T>::size;
  constexpr int KT = kTileChannels;
  if (kcount == KT && last_count == L) {
    return row_tile_full<T, QV>(x, off, taps, w, bias, out, out_channel);
  }
  alignas(64) T scratch[KT][QV * L];
  row_tile_full<T, QV>(x, off, taps, w, bias, &scratch[0][0], QV * L);
  const int64_t pixels = (QV - 1) * L + last_count;
  for (int k = 0; k < kcount; ++k) std::copy(scratch[k], scratch[k] + pixels, out + k * out_channel);
}

template <typename T>
using RowTileFn = void (*)(const T*, const int64_t*, int64_t, const T*, const T*, T*, int64_t, int,
                           int);

template <typename T>
RowTileFn<T> row_tile_fn(int qv) {
  static const TileTable<RowTileFn<T>, kRowVectors, 1> table(
      []<int QV, int>() -> RowTileFn<T> { return &row_tile<T, QV>; });
  return table(qv, 1);
}

// Padded rows [row0, row1) of image n of x (any strides), every channel,
// phase-split and zero-padded as described above, into dst[c][row -
// row0][phase][Wx] (channels x_channel apart).
template <typename T>
void copy_phase_rows(const at::Tensor& input, const Conv2dShape& p, int64_t Wx, int64_t n,
                     int64_t row0, int64_t row1, int64_t x_channel, T* dst) {
  const int64_t sw = p.stride_w;
  const T* x = input.const_data_ptr<T>();
  const int64_t xs_n = input.stride(0), xs_c = input.stride(1), xs_h = input.stride(2),
                xs_w = input.stride(3);
  for (int64_t c = 0; c < p.C; ++c) {
    for (int64_t row = row0; row < row1; ++row) {
      const int64_t h = row - p.pad_h;
      T* d = dst + c * x_channel + (row - row0) * sw * Wx;
      if (h < 0 || h >= p.H) {
        std::fill(d, d + sw * Wx, T(0));
        continue;
      }
      const T* src = x + n * xs_n + c * xs_c + h * xs_h;
      for (int64_t ph = 0; ph < sw; ++ph) {
        T* dp = d + ph * Wx;
        // Column of dp[i]: i * sw + ph - pad_w, inside the image for i in [lo, hi).
        const int64_t first = p.pad_w - ph;  // i * sw >= first
        const int64_t lo = std::min(Wx, first <= 0 ? 0 : (first + sw - 1) / sw);
        const int64_t last = p.W + p.pad_w - ph;  // i * sw < last
        const int64_t hi = std::clamp<int64_t>(last <= 0 ? 0 : (last + sw - 1) / sw, lo, Wx);
        std::fill(dp, dp + lo, T(0));
        if (hi > lo) {
          const T* s = src + (lo * sw + ph - p.pad_w) * xs_w;
          if (sw == 1 && xs_w == 1) {
            std::copy(s, s + (hi - lo), dp + lo);
          } else {
            for (int64_t i = lo; i < hi; ++i) dp[i] = s[(i - lo) * sw * xs_w];
          }
        }
        std::fill(dp + hi, dp + Wx, T(0));
      }
    }
  }
}

// The phase-split input of a band of output rows (see the top of the file):
// rows of Wx floats per phase (whole tiles of `row_width` pixels, plus the
// taps' reach), bands of `band` output rows whose input rows fit a
// per-thread buffer of kBandBytes, and at least `wanted` bands in all. (A
// whole-tensor phase-split copy was written and read back through memory,
// 9 MB at 299 x 299 x 3, N=8, and the tiles' 18-27 row streams then missed
// the caches.)
struct Bands {
  static constexpr int64_t kBandBytes = 128 * 1024;
  int64_t Wx, x_row, band, count, x_channel;
  int64_t rows_in(const Conv2dShape& p, int64_t rows) const {
    return (rows - 1) * p.stride_h + (p.R - 1) * p.dilation_h + 1;
  }
  // Buffer offset of tap t = (c, r, s), in (c, r, s) order.
  std::vector<int64_t> tap_offsets(const Conv2dShape& p) const {
    std::vector<int64_t> off(p.C * p.R * p.S);
    for (int64_t c = 0, t = 0; c < p.C; ++c)
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s = 0; s < p.S; ++s, ++t) {
          const int64_t col = s * p.dilation_w;
          off[t] = c * x_channel + r * p.dilation_h * x_row + (col % p.stride_w) * Wx +
                   col / p.stride_w;
        }
    return off;
  }
  // The input rows of output rows [oh0, oh1) of image n into dst.
  template <typename T>
  void copy(const at::Tensor& input, const Conv2dShape& p, int64_t n, int64_t oh0, int64_t oh1,
            T* dst) const {
    copy_phase_rows<T>(input, p, Wx, n, oh0 * p.stride_h, oh0 * p.stride_h + rows_in(p, oh1 - oh0),
                       x_channel, dst);
  }
};

inline Bands plan_bands(const Conv2dShape& p, int64_t row_width, int64_t elem_bytes,
                        int64_t wanted, int64_t min_rows = 1) {
  Bands b;
  b.Wx = row_width + ((p.S - 1) * p.dilation_w) / p.stride_w;
  b.x_row = p.stride_w * b.Wx;
  auto band_bytes = [&](int64_t rows) { return p.C * b.rows_in(p, rows) * b.x_row * elem_bytes; };
  b.band = p.P;
  while (b.band > 1 && (band_bytes(b.band) > Bands::kBandBytes ||
                        (p.N * ((p.P + b.band - 1) / b.band) < wanted && b.band / 2 >= min_rows))) {
    b.band = (b.band + 1) / 2;
  }
  b.count = (p.P + b.band - 1) / b.band;
  b.x_channel = b.rows_in(p, b.band) * b.x_row;
  return b;
}

// The forward of problem p (first_layer::fits) into `out`, contiguous NCHW;
// with ep, conv2d_fused's epilogue on each work item's rows as soon as its
// channel tiles are stored (while they are in L1).
template <typename T>
void forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
             const Conv2dShape& p, at::Tensor& out, const StoreEpilogue<T>* ep = nullptr) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  constexpr int KT = kTileChannels;
  constexpr int64_t kTilePixels = int64_t{kRowVectors} * L;
  const int64_t row_tiles = (p.Q + kTilePixels - 1) / kTilePixels;
  const Bands bands = plan_bands(p, row_tiles * kTilePixels, sizeof(T),
                                 4 * static_cast<int64_t>(at::get_num_threads()));
  const int64_t taps = p.C * p.R * p.S;
  const std::vector<int64_t> offsets = bands.tap_offsets(p);
  const int64_t* off = offsets.data();
  const int64_t x_row = bands.x_row, band = bands.band, x_channel = bands.x_channel;

  // Weights [K/KT][taps][KT], zero beyond K; bias padded the same way.
  const int64_t Kt = (p.K + KT - 1) / KT;
  std::vector<T> wp(Kt * taps * KT, T(0)), bp(bias.defined() ? Kt * KT : 0, T(0));
  {
    const at::Tensor w = weight.contiguous();
    const T* ws = w.const_data_ptr<T>();
    for (int64_t k = 0; k < p.K; ++k)
      for (int64_t t = 0; t < taps; ++t) wp[((k / KT) * taps + t) * KT + k % KT] = ws[k * taps + t];
    if (bias.defined()) {
      const at::Tensor b = bias.contiguous();
      std::copy(b.const_data_ptr<T>(), b.const_data_ptr<T>() + p.K, bp.begin());
    }
  }

  T* o = out.mutable_data_ptr<T>();
  const int64_t out_channel = p.P * p.Q;
  at::parallel_for(0, p.N * bands.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> xbuf(static_cast<size_t>(p.C * x_channel));
    const T* x = xbuf.data();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / bands.count, oh0 = (item % bands.count) * band;
      const int64_t oh1 = std::min(p.P, oh0 + band);
      bands.copy<T>(input, p, n, oh0, oh1, xbuf.data());
      // Channel blocks outermost: each block's KT output planes are written
      // along the band's rows (consecutive in each plane), KT sequential
      // streams the hardware prefetchers follow, instead of a short stretch
      // of every plane per row tile (K streams, each line's write a miss:
      // db_face_c1, 3 -> 64 3x3/2 @108, one thread, 28 -> 46 GFLOP/s). The
      // band's input rows (<= kBandBytes) are re-read per block from L2.
      const int64_t tiles = (oh1 - oh0) * row_tiles;
      for (int64_t kb = 0; kb < Kt; ++kb) {
        const int kcount = static_cast<int>(std::min<int64_t>(KT, p.K - kb * KT));
        for (int64_t rt = 0; rt < tiles; ++rt) {
          const int64_t qt = rt % row_tiles, oh = oh0 + rt / row_tiles;
          const int64_t q0 = qt * kTilePixels, pixels = std::min(kTilePixels, p.Q - q0);
          const int qv = static_cast<int>((pixels + L - 1) / L);
          const int last = static_cast<int>(pixels - (qv - 1) * L);
          row_tile_fn<T>(qv)(x + (oh - oh0) * p.stride_h * x_row + q0, off, taps,
                             wp.data() + kb * taps * KT,
                             bias.defined() ? bp.data() + kb * KT : nullptr,
                             o + ((n * p.K + kb * KT) * p.P + oh) * p.Q + q0, out_channel, kcount,
                             last);
        }
        if (ep != nullptr) {  // the block's band rows, just written (in L2)
          for (int64_t k = kb * KT; k < kb * KT + kcount; ++k) {
            epilogue_run<T, false>(*ep, o + (n * p.K + k) * out_channel + oh0 * p.Q,
                                   (oh1 - oh0) * p.Q, k);
          }
        }
      }
    }
  });
}

// grad-weight of problem p (first_layer::weight_grad_fits, NCHW grad_output `gy`,
// contiguous) into gw [K][C][R][S], without layout copies: a tile holds
// KB output channels x TT taps, each a vector of L lanes summing
// gy[k][oh][q] * x_tap[oh][q] over the row's pixels q = lane (mod L), both
// read as vectors along the row (the input from the band's phase-split
// rows, as forward reads it). Chunks of (image, band of rows) units sum
// into their own lane partials; the chunks (fixed by the shape, not by the
// thread count) are added in order, then the lanes: the same sums on any
// number of threads.
inline constexpr int kGradRowChannels = simd::kVectorBytes == 64 ? 4 : 3;
inline constexpr int kGradRowTaps = simd::kVectorBytes == 64 ? 6 : 4;

// acc (KB x TT vectors, in memory between calls) += the rows' products.
// x: the band buffer at the first row's tap (0, 0) input row; off: TT tap
// offsets; gy: KB rows of grad_output, gy_row apart from row to row.
template <typename T>
__attribute__((noinline)) void weight_grad_row_tile(const T* x, const int64_t* off, int64_t x_step,
                                                    const T* const* gy, int64_t gy_row,
                                                    int64_t rows, int64_t Q, T* acc_mem) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  constexpr int KB = kGradRowChannels, TT = kGradRowTaps;
  typename V::type acc[KB][TT];
  for (int k = 0; k < KB; ++k)
    for (int t = 0; t < TT; ++t) acc[k][t] = V::load(acc_mem + (k * TT + t) * L);
  for (int64_t row = 0; row < rows; ++row) {
    const T* xr = x + row * x_step;
    const int64_t g = row * gy_row;
    int64_t q = 0;
    for (; q + L <= Q; q += L) {
      typename V::type gv[KB];
      for (int k = 0; k < KB; ++k) gv[k] = V::load(gy[k] + g + q);
      for (int t = 0; t < TT; ++t) {
        const typename V::type xv = V::load(xr + off[t] + q);
        for (int k = 0; k < KB; ++k) acc[k][t] = simd::fmadd(gv[k], xv, acc[k][t]);
      }
    }
    if (q < Q) {  // both operands' lanes past Q zero (an input column no pixel reads may be inf)
      const int n = static_cast<int>(Q - q);
      typename V::type gv[KB];
      for (int k = 0; k < KB; ++k) gv[k] = simd::load_upto<T>(gy[k] + g + q, n);
      for (int t = 0; t < TT; ++t) {
        const typename V::type xv = simd::load_upto<T>(xr + off[t] + q, n);
        for (int k = 0; k < KB; ++k) acc[k][t] = simd::fmadd(gv[k], xv, acc[k][t]);
      }
    }
  }
  for (int k = 0; k < KB; ++k)
    for (int t = 0; t < TT; ++t) V::store(acc_mem + (k * TT + t) * L, acc[k][t]);
}

template <typename T>
void backward_weight(const at::Tensor& input, const T* gy, T* gw, const Conv2dShape& p) {
  constexpr int L = simd::Vec<T>::size;
  constexpr int KB = kGradRowChannels, TT = kGradRowTaps;
  const int64_t Qv = (p.Q + L - 1) / L * L;  // pixels read per row: whole vectors
  // Bands of at least 16 vectors of pixels, where the memory allows: a tile
  // loads and stores its KB x TT accumulators once per band, and each chunk's
  // partials are cleared and summed (N = 1, Q = 19: 2-row bands ran at 13
  // GFLOP/s, less than half the NHWC path).
  const Bands bands = plan_bands(p, Qv, sizeof(T), 8, (16 * L + p.Q - 1) / p.Q);
  const int64_t taps = p.C * p.R * p.S;
  const int64_t tap_groups = (taps + TT - 1) / TT, k_blocks = (p.K + KB - 1) / KB;
  std::vector<int64_t> off = bands.tap_offsets(p);
  off.resize(tap_groups * TT, 0);  // padding taps: summed, never stored
  const int64_t tile_floats = KB * TT * L, chunk_floats = k_blocks * tap_groups * tile_floats;
  // Chunks: runs of consecutive (image, band) units, at most kMaxChunks of
  // them, so the partials do not grow with the batch (64 x 312 KB for a
  // 7x7 3 -> 64 stem).
  constexpr int64_t kMaxChunks = 64;
  const int64_t units = p.N * bands.count, chunks = std::min(units, kMaxChunks);
  std::vector<T> partial(static_cast<size_t>(chunks * chunk_floats), T(0));
  const std::vector<T> zero_row(p.K % KB != 0 ? p.P * p.Q : 0, T(0));  // channels past K
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> xbuf(static_cast<size_t>(p.C * bands.x_channel));
    for (int64_t unit = begin * units / chunks; unit < end * units / chunks; ++unit) {
      const int64_t n = unit / bands.count, oh0 = (unit % bands.count) * bands.band;
      const int64_t oh1 = std::min(p.P, oh0 + bands.band);
      bands.copy<T>(input, p, n, oh0, oh1, xbuf.data());
      // chunk c holds units [c * units / chunks, (c + 1) * units / chunks)
      const int64_t chunk = ((unit + 1) * chunks - 1) / units;
      T* acc = partial.data() + chunk * chunk_floats;
      for (int64_t kb = 0; kb < k_blocks; ++kb) {
        const T* rows[KB];
        for (int k = 0; k < KB; ++k) {
          const int64_t kk = kb * KB + k;
          rows[k] = kk < p.K ? gy + ((n * p.K + kk) * p.P + oh0) * p.Q : zero_row.data();
        }
        for (int64_t tg = 0; tg < tap_groups; ++tg) {
          weight_grad_row_tile<T>(xbuf.data(), off.data() + tg * TT, p.stride_h * bands.x_row, rows,
                                  p.Q, oh1 - oh0, p.Q, acc + (kb * tap_groups + tg) * tile_floats);
        }
      }
    }
  });
  // gw[k][t]: the chunks in order, then the lanes (simd::sum_lanes).
  at::parallel_for(0, p.K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t pos =
            ((k / KB) * tap_groups + t / TT) * tile_floats + ((k % KB) * TT + t % TT) * L;
        T lanes[L] = {};
        for (int64_t c = 0; c < chunks; ++c)
          for (int l = 0; l < L; ++l) lanes[l] += partial[c * chunk_floats + pos + l];
        gw[k * taps + t] = simd::sum_lanes<T, L>(lanes);
      }
    }
  });
}

}  // namespace first_layer
}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
