// Dense direct convolution (groups == 1, float and double), the kernel of
// the dense, first-layer and channels_last pointwise forward paths and of
// every stride phase of the dense grad-input.
//
// Activations are copied once per call into a zero-padded NHWC buffer (a
// blocked copy, not an im2col matrix), weights are packed once per call as
// [K/L][R][S][C][L] (L = SIMD width, K padded with zeros). A register tile of
// UR output pixels x NB vectors of L output channels is held in
// accumulators; for every (r, s, c) the kernel loads NB weight vectors and
// broadcasts UR input values: the whole C*R*S reduction runs inside the tile.
// Padding lives in the copy, so the inner loop has no bounds check. With
// dilation_w == 1 the (s, c) loops fuse into one contiguous loop of S*C (for
// C=3 first layers: 21 iterations for 7x7, not 7 loops of 3). Output is
// written NHWC (K contiguous).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv2d_cpu_common.h"
#include "conv2d_layout_kernels.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// Register tile: UR output pixels x NB vectors of output channels. The
// accumulators, NB weight vectors and one broadcast must fit the register
// file: 32 vector registers with AVX-512 (24 accumulators: 6 x 4, 8 x 3,
// 12 x 2), 16 otherwise (12: 6 x 2, 12 x 1). A layer takes the widest NB
// that splits its K evenly (dense_tile_shape), UR = accumulators / NB.
inline constexpr int kTileNB = simd::kVectorBytes == 64 ? 4 : 2;
inline constexpr int kTileAccumulators = simd::kVectorBytes == 64 ? 24 : 12;
// NB = 1 would allow 24 pixels, but needs a broadcast per FMA either way.
inline constexpr int kTilePixels = 12;

constexpr int tile_pixels(int nb) { return std::min(kTilePixels, kTileAccumulators / nb); }

struct DenseTileShape {
  int64_t groups;  // channel groups of up to nb vectors
  int nb;          // vectors per group (the last group may have fewer)
  int ur;          // output pixels per tile
};

// kb vectors of output channels in groups of near-equal width: K = 96
// (6 vectors of 16) is 2 x 3 vectors at 8 pixels, not 4 + 2 vectors with the
// 2-vector tile at a third fewer FMAs per load.
inline DenseTileShape dense_tile_shape(int64_t kb) {
  const int64_t groups = (kb + kTileNB - 1) / kTileNB;
  const int nb = static_cast<int>((kb + groups - 1) / groups);
  return {groups, nb, tile_pixels(nb)};
}
// Packed weights of one tile column (NB vectors x R*S*C) above this many
// bytes are split along C so they stay in L2 while the tile sweeps the image.
// 640 KB (of a 1-2 MB L2): on Zen 5 (AVX-512, N=8, 2 threads) 384 KB split
// 3x3 layers with C = 256 in two chunks at 54% of peak (vgg_19_conv3_2,
// 0.63x torch); one chunk runs them at 83% (0.97x), and C = 512 3x3 and
// 5x5 layers gain 5-40% from fewer chunks (docs/cpu.md).
inline constexpr int64_t kWeightBlockBytes = 640 * 1024;
// 1x1 problems: the input pixels that every channel group sweeps in turn
// (dense_forward's super-blocks) are at most this many bytes, to stay in L2.
inline constexpr int64_t kDenseInputBlockBytes = 256 * 1024;
// ... and only where all packed weights, cycled through per super-block,
// are at most this many bytes (they stay in L2).
inline constexpr int64_t kDenseSuperWeightBytes = 1024 * 1024;

// Strides and loop bounds of the register tile in the padded NHWC buffers,
// derived from a DenseProblem by dense_forward.
struct DenseTileStrides {
  int64_t x_r = 0;       // elements between kernel rows in the input
  int64_t x_s = 0;       // ... between kernel columns (non-fused loop)
  int64_t w_kb = 0;      // elements between packed weight blocks of L channels
  int64_t w_r = 0;       // ... between kernel rows (S * C * L)
  int64_t w_rs = 0;      // ... between kernel columns (non-fused loop: C * L)
  int64_t R = 0, S_outer = 0, inner = 0;
  int64_t K = 0;
};

// One register tile of UR output pixels, anywhere in the output (a tile may
// span output rows and images, so no row has a short remainder tile).
// xs[u]: input of pixel u at tap (0, 0) and the first channel; w: packed
// weights of channel block kb0; outs[u]: output pixel u at channel kb0 * L,
// NB whole vectors (dense_tile handles the end of K).
// accumulate: add to the output instead of starting from bias (C is split).
// No masked access here: one in this function made GCC 12 spill a weight
// vector out of the hot loop (a store and UR reloads per reduction step).
template <typename T, int UR, int NB>
__attribute__((noinline)) void dense_tile_full(const T* const* xs, const T* w, const T* bias,
                                               T* const* outs, const DenseTileStrides& g,
                                               bool accumulate) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  // The accumulators start from one load each, from a per-pixel source
  // (the output, the bias or zeros): with a choice between loads and
  // constants GCC 12 built them in a stack array (a `rep stos` of UR * NB
  // vectors, then reloads).
  alignas(64) static constexpr T kZeros[NB * L] = {};
  const T* init[UR];
  for (int u = 0; u < UR; ++u) init[u] = accumulate ? outs[u] : bias != nullptr ? bias : kZeros;
  typename V::type acc[UR][NB];
  for (int j = 0; j < NB; ++j)
    for (int u = 0; u < UR; ++u) acc[u][j] = V::load(init[u] + j * L);
  const T* x[UR];
  for (int u = 0; u < UR; ++u) x[u] = xs[u];
  for (int64_t r = 0; r < g.R; ++r) {
    for (int64_t so = 0; so < g.S_outer; ++so) {
      const int64_t x_off = r * g.x_r + so * g.x_s;
      const T* wr = w + r * g.w_r + so * g.w_rs;
      for (int64_t i = 0; i < g.inner; ++i) {
        typename V::type wv[NB];
        for (int j = 0; j < NB; ++j) wv[j] = V::load(wr + j * g.w_kb + i * L);
        for (int u = 0; u < UR; ++u) {
          const typename V::type xb = V::broadcast(x[u][x_off + i]);
          for (int j = 0; j < NB; ++j) acc[u][j] = simd::fmadd(xb, wv[j], acc[u][j]);
        }
      }
    }
  }
  for (int j = 0; j < NB; ++j)
    for (int u = 0; u < UR; ++u) V::store(outs[u] + j * L, acc[u][j]);
}

// Prefetch (for writing) the output lines a register tile is about to
// store: its stores come only after the whole reduction, so the lines
// arrive while it runs. A large NHWC output is not in cache, and without
// this the stores waited on their lines: on Zen 5 (2 threads, N=8) the
// channels_last forward of ResNet-50's 1x1 layers at 56x56 ran 15-25%
// slower, its first layer 20% (docs/cpu.md).
template <typename T>
inline void prefetch_tile_outputs(T* const* outs, int ur, int nb) {
  constexpr int L = simd::Vec<T>::size;
  for (int u = 0; u < ur; ++u)
    for (int j = 0; j < nb; ++j) __builtin_prefetch(outs[u] + j * L, 1, 3);
}

// dense_tile_full at any k0; a tile at the end of K (fewer than NB * L
// channels left) runs on a full-width scratch tile (packed weights and bias
// are zero-padded to whole vectors), copied in (accumulate) and out.
template <typename T, int UR, int NB>
void dense_tile(const T* const* xs, const T* w, const T* bias, T* const* outs, int64_t k0,
                const DenseTileStrides& g, bool accumulate) {
  constexpr int W = NB * simd::Vec<T>::size;
  const int64_t left = g.K - k0;
  if (left >= W) return dense_tile_full<T, UR, NB>(xs, w, bias, outs, g, accumulate);
  alignas(64) T scratch[UR][W];
  T* tile_outs[UR];
  for (int u = 0; u < UR; ++u) {
    tile_outs[u] = scratch[u];
    if (accumulate) std::memcpy(scratch[u], outs[u], sizeof(T) * left);
  }
  dense_tile_full<T, UR, NB>(xs, w, bias, tile_outs, g, accumulate);
  for (int u = 0; u < UR; ++u) std::memcpy(outs[u], scratch[u], sizeof(T) * left);
}

template <typename T>
using DenseTileFn = void (*)(const T* const*, const T*, const T*, T* const*, int64_t,
                             const DenseTileStrides&, bool);

// dense_tile<T, ur, nb> for every ur <= tile_pixels(nb), nb <= kTileNB
// (tails); null beyond the register file.
template <typename T>
const TileTable<DenseTileFn<T>, kTilePixels, kTileNB>& dense_tile_table() {
  static const TileTable<DenseTileFn<T>, kTilePixels, kTileNB> table(
      []<int UR, int NB>() -> DenseTileFn<T> {
        if constexpr (UR <= tile_pixels(NB)) {
          return &dense_tile<T, UR, NB>;
        } else {
          return nullptr;
        }
      });
  return table;
}

// The packing of every dense filter: dst[b][t][c][l] = src[(b * L + l) * lane_stride +
// c * c_stride + tap_offset[t]] for b < ceil(lanes / L), zero for b * L + l >= lanes.
// Per (b, c) the L x taps values are gathered into a small [taps][L] block,
// then stored as whole vectors: the reads run along the source's contiguous
// axis (taps of one filter row, or L filters' taps) instead of one element
// per lane from L rows a whole filter apart.
//
// Where each lane's (c, t) values are one contiguous run (a contiguous
// forward filter: c_stride = taps, tap_offset[t] = t), pack_contiguous_lanes
// instead: L lanes x L values of the run through an in-register transpose.
//
// src holds elements of S (T, or bfloat16/float16 widened to T = float on
// the way: simd::Stored).
template <typename T, typename S = T>
void pack_contiguous_lanes(const S* src, int64_t lanes, int64_t lane_stride, int64_t C,
                           int64_t taps, T* dst);

template <typename T, typename S = T>
void pack_lane_blocks(const S* src, int64_t lanes, int64_t lane_stride, int64_t C,
                      int64_t c_stride, const std::vector<int64_t>& tap_offset, T* dst) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t taps = static_cast<int64_t>(tap_offset.size());
  bool contiguous = c_stride == taps;
  for (int64_t t = 0; t < taps; ++t) contiguous = contiguous && tap_offset[t] == t;
  if (contiguous) return pack_contiguous_lanes<T, S>(src, lanes, lane_stride, C, taps, dst);
  const int64_t blocks = (lanes + L - 1) / L;
  constexpr int64_t kChannelChunk = 64;
  const int64_t chunks = (C + kChannelChunk - 1) / kChannelChunk;
  // Work item -> lane block b, channels [c0, c1), lanes used in the block.
  struct Item {
    int64_t b, c0, c1, used;
  };
  auto item_at = [&](int64_t item) {
    const int64_t b = item / chunks, c0 = (item % chunks) * kChannelChunk;
    return Item{b, c0, std::min(C, c0 + kChannelChunk), std::min<int64_t>(L, lanes - b * L)};
  };
  if (lane_stride == 1) {
    // Adjacent lanes (grad-input's filter, [K][C] with C the lanes): one
    // vector load per (c, t) instead of L scalar reads; the element-wise
    // path below ran at a third of the 1x1 grad-input tile's time
    // (2048 x 512 filter, AVX2).
    at::parallel_for(0, blocks * chunks, grain_for(kChannelChunk * taps * L), [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const Item it = item_at(item);
        T* out = dst + it.b * taps * C * L;
        for (int64_t c = it.c0; c < it.c1; ++c) {
          const S* s = src + it.b * L + c * c_stride;
          for (int64_t t = 0; t < taps; ++t) {
            simd::Vec<T>::store(out + (t * C + c) * L,
                                simd::load_upto<T, S>(s + tap_offset[t], static_cast<int>(it.used)));
          }
        }
      }
    });
    return;
  }
  at::parallel_for(0, blocks * chunks, grain_for(kChannelChunk * taps * L), [&](int64_t begin, int64_t end) {
    std::vector<T> block(taps * L, T(0));
    for (int64_t item = begin; item < end; ++item) {
      const Item it = item_at(item);
      if (it.used < L) std::fill(block.begin(), block.end(), T(0));
      T* out = dst + it.b * taps * C * L;
      for (int64_t c = it.c0; c < it.c1; ++c) {
        const S* s = src + it.b * L * lane_stride + c * c_stride;
        for (int64_t l = 0; l < it.used; ++l)
          for (int64_t t = 0; t < taps; ++t)
            block[t * L + l] = simd::Stored<T, S>::get(s[l * lane_stride + tap_offset[t]]);
        for (int64_t t = 0; t < taps; ++t)
          std::memcpy(out + (t * C + c) * L, block.data() + t * L, sizeof(T) * L);
      }
    }
  });
}

// dst[b][t][c][l] = src[(b * L + l) * lane_stride + c * taps + t], zero for
// b * L + l >= lanes. Per lane the (c, t) values are the run f = c * taps + t
// (f < C * taps); L lanes x L values of it are transposed in registers and
// each resulting vector of L lanes stored at its (t, c).
template <typename T, typename S>
void pack_contiguous_lanes(const S* src, int64_t lanes, int64_t lane_stride, int64_t C,
                           int64_t taps, T* dst) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  const int64_t blocks = (lanes + L - 1) / L, run = C * taps;
  constexpr int64_t kChunk = 64 * L;  // run elements per work item
  const int64_t chunks = (run + kChunk - 1) / kChunk;
  at::parallel_for(0, blocks * chunks, grain_for(kChunk * L), [&](int64_t begin, int64_t end) {
    typename V::type v[L];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks, f0 = (item % chunks) * kChunk;
      const int64_t f1 = std::min(run, f0 + kChunk);
      const int used = static_cast<int>(std::min<int64_t>(L, lanes - b * L));
      const S* s = src + b * L * lane_stride;
      T* out = dst + b * taps * C * L;
      for (int64_t f = f0; f < f1; f += L) {
        const int count = static_cast<int>(std::min<int64_t>(L, f1 - f));
        for (int l = 0; l < L; ++l) {
          v[l] = l < used ? simd::load_upto<T, S>(s + l * lane_stride + f, count) : V::zero();
        }
        transpose_square<T>(v);
        int64_t c = f / taps, t = f % taps;
        for (int j = 0; j < count; ++j) {
          V::store(out + (t * C + c) * L, v[j]);
          if (++t == taps) t = 0, ++c;
        }
      }
    }
  });
}

// Offsets of the taps (rt[i], st[j]) in a filter with row stride sr and column stride ss.
inline std::vector<int64_t> tap_offsets(const std::vector<int64_t>& rt,
                                        const std::vector<int64_t>& st, int64_t sr, int64_t ss) {
  std::vector<int64_t> off;
  off.reserve(rt.size() * st.size());
  for (const int64_t r : rt)
    for (const int64_t s : st) off.push_back(r * sr + s * ss);
  return off;
}

// 0, 1, ..., n - 1.
inline std::vector<int64_t> all_taps(int64_t n) {
  std::vector<int64_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = i;
  return t;
}

// Weights K x C x R x S (any strides, elements E) packed as
// [ceil(K/L)][R][S][C][L] of T, zero beyond K.
template <typename T, typename E = T>
at::Tensor pack_weights(const at::Tensor& weight) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t K = weight.size(0), C = weight.size(1), R = weight.size(2), S = weight.size(3);
  at::Tensor packed = at::empty({(K + L - 1) / L, R, S, C, L}, compute_options<T>(weight.options()));
  pack_lane_blocks<T, E>(weight.const_data_ptr<E>(), K, weight.stride(0), C, weight.stride(1),
                      tap_offsets(all_taps(R), all_taps(S), weight.stride(2), weight.stride(3)),
                      packed.mutable_data_ptr<T>());
  return packed;
}

// The dense direct convolution on prepared buffers:
//   x: padded NHWC [N][Hp][Wp][C], w: packed [Kb][R][S][C][L],
//   bias: padded to Kb*L or null, out: NHWC with pixel stride out_pixel,
//   row stride out_row, image stride out_image (strided outputs let
//   grad-input write one stride phase of its result), or, with nchw,
//   contiguous NCHW [N][K][P][Q] (the out_* strides unused; only where
//   dense_writes_nchw). The output's elements O: T, or with nchw a
//   narrower type (bfloat16/float16) the NCHW transpose rounds to.
struct DenseProblem {
  int64_t N, C, Hp, Wp, K, R, S, P, Q;
  int64_t stride_h, stride_w, dilation_h, dilation_w;
  int64_t out_image, out_row, out_pixel;
  bool nchw = false;
  // in_place: x is the unpadded NHWC tensor itself ([N][Hp][Wp][C] with Hp,
  // Wp its own size), and a pixel's first tap lies `origin` elements from
  // where the padded buffer would put it (negative: minus the padding).
  // Every tap that meets padding must then be skipped: dense_forward tiles
  // by tap class (row_taps / col_taps must be set), whatever the cost.
  bool in_place = false;
  int64_t origin = 0;
  // Output row oh reads the image only through kernel rows
  // [row_taps[oh].lo, .hi); the other rows of the filter meet the buffer's
  // zero padding. Likewise col_taps for columns. Empty: not known, every
  // tap runs (the zeros are multiplied in).
  std::vector<ValidRange> row_taps, col_taps;
};

// The forward of problem p on its padded NHWC input (padding p.pad_h, p.pad_w)
// into an NHWC output.
inline DenseProblem dense_forward_problem(const Conv2dShape& p) {
  return DenseProblem{.N = p.N, .C = p.C, .Hp = p.H + 2 * p.pad_h, .Wp = p.W + 2 * p.pad_w,
                      .K = p.K, .R = p.R, .S = p.S, .P = p.P, .Q = p.Q,
                      .stride_h = p.stride_h, .stride_w = p.stride_w,
                      .dilation_h = p.dilation_h, .dilation_w = p.dilation_w,
                      .out_image = p.P * p.Q * p.K, .out_row = p.Q * p.K, .out_pixel = p.K,
                      .row_taps = output_tap_windows(row_ranges(p), p.P),
                      .col_taps = output_tap_windows(column_ranges(p), p.Q)};
}

// Chunks of C (outer loop of dense_forward): one tile column of weights
// (NB vectors x R*S*C) above kWeightBlockBytes is split so it stays in L2
// while the tiles sweep the image.
template <typename T>
int64_t dense_c_chunks(const DenseProblem& d) {
  constexpr int L = simd::Vec<T>::size;
  const DenseTileShape shape = dense_tile_shape((d.K + L - 1) / L);
  const int64_t col_bytes = d.R * d.S * d.C * shape.nb * L * static_cast<int64_t>(sizeof(T));
  return std::min<int64_t>(d.C, (col_bytes + kWeightBlockBytes - 1) / kWeightBlockBytes);
}

// Whether dense_forward can write problem d's output as NCHW: each work item
// transposes its block of output pixels into the NCHW result while the
// block is in cache (no NHWC output buffer, no second pass over it). Not
// with C chunks, whose later passes add to the output the earlier wrote.
template <typename T>
bool dense_writes_nchw(const DenseProblem& d) {
  return dense_c_chunks<T>(d) == 1;
}

// How dense_forward groups a work item's pixels into register tiles.
//   kSpan: consecutive pixels, across rows and images; every tap runs.
//   kRows: pixels grouped by their row's tap window; the kernel rows that
//     meet only zero padding are skipped.
//   kRowsColumns: grouped by row and column windows; no tap that meets only
//     padding runs (dilated filters on small planes: DeepLab's ASPP, SSD's
//     fc6).
// Which one runs depends on the layer's shape only, never on N or the
// thread count, and within one every pixel sums the same taps in the same
// order whatever tile it lands in: results stay identical across thread
// counts and batch splits. (Skipped products are zero times a weight:
// leaving them out changes nothing unless a weight is infinite or NaN,
// where a skipped tap no longer turns a result into NaN, as in oneDNN.)
enum class DenseTiling { kSpan, kRows, kRowsColumns };

// Distinct windows of `windows`, and each output index's class among them.
inline std::vector<ValidRange> distinct_windows(const std::vector<ValidRange>& windows,
                                                std::vector<int32_t>& class_of) {
  std::vector<ValidRange> distinct;
  class_of.resize(windows.size());
  for (size_t o = 0; o < windows.size(); ++o) {
    ValidRange v = windows[o];
    if (v.hi <= v.lo) v = ValidRange{0, 0};  // no tap: one empty class
    size_t k = 0;
    while (k < distinct.size() && (distinct[k].lo != v.lo || distinct[k].hi != v.hi)) ++k;
    if (k == distinct.size()) distinct.push_back(v);
    class_of[o] = static_cast<int32_t>(k);
  }
  return distinct;
}

// Relative time of one register tile of u pixels x nb vectors over `steps`
// reduction steps (taps x input channels): per step nb weight loads, u
// broadcasts and u * nb FMAs on two FMA ports, at most 8 chains in flight
// (4-cycle latency x 2 ports); plus loading and storing the accumulators.
inline double dense_tile_cost(int64_t u, int64_t nb, int64_t steps) {
  return static_cast<double>(steps) * static_cast<double>(std::max({u * nb, nb + u, int64_t{8}})) +
         2.0 * static_cast<double>(u * nb + 10);
}

// n pixels of equal step count in near-equal tiles of at most ur.
inline double dense_run_cost(int64_t n, int64_t ur, int64_t nb, int64_t steps) {
  double cost = 0.0;
  near_equal_pieces(n, ur, [&](int64_t, int64_t u) { cost += dense_tile_cost(u, nb, steps); });
  return cost;
}

// The tiling of problem d by the cost model above, on one image cut into
// nominal work items of 16 tiles (a fixed size, so that the choice does
// not depend on N or the thread count). Skipping pays where the padding
// is a large share of the taps (small planes, large dilation); on large
// planes the shorter tiles at class borders cost more than the few
// skipped taps.
inline DenseTiling choose_dense_tiling(const DenseProblem& d, int64_t ur, int64_t nb) {
  if (d.row_taps.empty() || d.col_taps.empty()) return DenseTiling::kSpan;
  std::vector<int32_t> row_class, col_class;
  const std::vector<ValidRange> rows = distinct_windows(d.row_taps, row_class);
  const std::vector<ValidRange> cols = distinct_windows(d.col_taps, col_class);
  const bool full_rows = rows.size() == 1 && rows[0].lo == 0 && rows[0].hi == d.R;
  const bool full_cols = cols.size() == 1 && cols[0].lo == 0 && cols[0].hi == d.S;
  if (full_rows && full_cols) return DenseTiling::kSpan;
  // No padding in the buffer: no tap may meet it.
  if (d.in_place) return full_cols ? DenseTiling::kRows : DenseTiling::kRowsColumns;
  const int64_t PQ = d.P * d.Q, block = std::min(PQ, 16 * ur);
  const int64_t nr = static_cast<int64_t>(rows.size()), nc = static_cast<int64_t>(cols.size());
  double span = 0.0, by_rows = 0.0, by_both = 0.0;
  std::vector<int64_t> count_rows(nr), count_both(nr * nc);
  for (int64_t m0 = 0; m0 < PQ; m0 += block) {
    const int64_t m1 = std::min(PQ, m0 + block);
    span += dense_run_cost(m1 - m0, ur, nb, d.R * d.S * d.C);
    std::fill(count_rows.begin(), count_rows.end(), 0);
    std::fill(count_both.begin(), count_both.end(), 0);
    for (int64_t m = m0; m < m1; ++m) {
      const int32_t rc = row_class[m / d.Q], cc = col_class[m % d.Q];
      ++count_rows[rc];
      ++count_both[rc * nc + cc];
    }
    for (int64_t rc = 0; rc < nr; ++rc) {
      const int64_t r_taps = rows[rc].hi - rows[rc].lo;
      by_rows += dense_run_cost(count_rows[rc], ur, nb, r_taps * d.S * d.C);
      for (int64_t cc = 0; cc < nc; ++cc) {
        by_both += dense_run_cost(count_both[rc * nc + cc], ur, nb,
                                  r_taps * (cols[cc].hi - cols[cc].lo) * d.C);
      }
    }
  }
  // A margin for what the model leaves out (tile bookkeeping, sorting).
  DenseTiling best = DenseTiling::kSpan;
  double best_cost = span;
  if (!full_rows && by_rows < 0.97 * best_cost) best = DenseTiling::kRows, best_cost = by_rows;
  if (!full_cols && by_both < 0.97 * best_cost) best = DenseTiling::kRowsColumns;
  return best;
}

// ep: conv2d_fused's epilogue (O == T), ep->out == out: applied to each
// register tile's pixels as soon as they are stored (NHWC output, last C
// chunk), while in L1, or in the NCHW block transpose.
template <typename T, typename O = T>
void dense_forward(const T* x, const T* w, const T* bias, O* out, const DenseProblem& d,
                   const StoreEpilogue<T>* ep = nullptr) {
  constexpr int L = simd::Vec<T>::size;
  if constexpr (!std::is_same_v<O, T>) {
    TORCH_INTERNAL_ASSERT(d.nchw, "dense_forward: a rounded output must be NCHW");
  }
  T* out_nhwc = nullptr;  // the NHWC output (O == T only)
  if constexpr (std::is_same_v<O, T>) out_nhwc = out;
  const int64_t Kb = (d.K + L - 1) / L;
  const DenseTileShape shape = dense_tile_shape(Kb);
  const int64_t KG = shape.groups;
  const int64_t chunks = dense_c_chunks<T>(d);
  TORCH_INTERNAL_ASSERT(!d.nchw || chunks == 1, "dense_forward: NCHW output with C chunks");
  const int64_t chunk_c = (d.C + chunks - 1) / chunks;
  const bool fused = d.dilation_w == 1 && chunks == 1;
  DenseTileStrides g;
  g.x_r = d.dilation_h * d.Wp * d.C;
  g.x_s = d.dilation_w * d.C;
  g.w_kb = d.R * d.S * d.C * L;
  g.w_r = d.S * d.C * L;
  g.w_rs = d.C * L;
  g.R = d.R;
  g.K = d.K;
  g.S_outer = fused ? 1 : d.S;
  g.inner = fused ? d.S * d.C : d.C;
  const auto& table = dense_tile_table<T>();
  // Tap classes (kRows, kRowsColumns): each class's strides and offsets of
  // its first tap in the input and the packed weights.
  const DenseTiling tiling = choose_dense_tiling(d, shape.ur, shape.nb);
  TORCH_INTERNAL_ASSERT(!d.in_place || d.origin == 0 || !d.row_taps.empty(),
                        "dense_forward: an unpadded input needs its tap windows");
  std::vector<int32_t> row_class(d.P, 0), col_class(d.Q, 0);
  int64_t n_col_classes = 1;
  std::vector<DenseTileStrides> class_g;
  std::vector<int64_t> class_x, class_w;
  if (tiling != DenseTiling::kSpan) {
    const std::vector<ValidRange> rows = distinct_windows(d.row_taps, row_class);
    std::vector<ValidRange> cols{ValidRange{0, d.S}};
    if (tiling == DenseTiling::kRowsColumns) cols = distinct_windows(d.col_taps, col_class);
    n_col_classes = static_cast<int64_t>(cols.size());
    for (const ValidRange& rw : rows) {
      for (const ValidRange& cw : cols) {
        DenseTileStrides gk = g;
        gk.R = rw.hi - rw.lo;
        if (fused) {
          gk.inner = (cw.hi - cw.lo) * d.C;
        } else {
          gk.S_outer = cw.hi - cw.lo;
        }
        if (gk.R == 0 || gk.S_outer == 0 || gk.inner == 0) gk.R = 0;  // bias only
        const bool empty = gk.R == 0;
        class_g.push_back(gk);
        class_x.push_back(empty ? 0 : rw.lo * g.x_r + cw.lo * g.x_s);
        class_w.push_back(empty ? 0 : rw.lo * g.w_r + cw.lo * g.w_rs);
      }
    }
  }
  // Work items: (channel group, block of output pixels), channel group major
  // so a thread's consecutive items reuse the same packed weights. Pixels are
  // numbered over all images and rows (m = (n * P + oh) * Q + ow).
  const int64_t M = d.N * d.P * d.Q;
  // Blocks of 16 tiles, smaller where that leaves fewer than 4 items per
  // thread (N = 1, small planes, few channel groups), so every core gets
  // work. Tiling does not change any output's summation order.
  const int64_t items_wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t blocks_wanted = std::max<int64_t>(1, (items_wanted + KG - 1) / KG);
  const int64_t block = std::clamp<int64_t>((M + blocks_wanted - 1) / blocks_wanted, shape.ur,
                                            shape.ur * 16);
  const int64_t blocks = (M + block - 1) / block;
  // Item order. With one tap (1x1 layers, grad-input's 1x1 phases) a tile
  // column's weights are small and the input is the large operand: the
  // pixel blocks go in super-blocks whose input stays in L2
  // (kDenseInputBlockBytes) while every channel group sweeps them (super-
  // block major, then channel group, then block), instead of every channel
  // group streaming the whole input from memory (K/64 passes over it).
  // Otherwise channel group major (a thread's consecutive items reuse the
  // same packed weights). The order changes no output's summation order.
  // Only where that moves fewer bytes: the input read once instead of KG
  // times, against the packed weights read once per super-block instead of
  // once; and only where all packed weights stay in L2
  // (kDenseSuperWeightBytes) and there are no C chunks: always reordering
  // made ResNet-50's 2048 -> 1024 channel 1x1 grad-input (8 MB of packed
  // weights, cycled through per block of 96 pixels) slower.
  int64_t super_blocks = blocks;
  if (d.R * d.S == 1 && KG > 1 && chunks == 1 &&
      Kb * L * d.C * static_cast<int64_t>(sizeof(T)) <= kDenseSuperWeightBytes) {
    const int64_t pixel_bytes = d.C * static_cast<int64_t>(sizeof(T));
    const int64_t per_super =
        std::clamp<int64_t>(kDenseInputBlockBytes / (pixel_bytes * block), 1, blocks);
    const int64_t supers = (blocks + per_super - 1) / per_super;
    const double input_bytes = static_cast<double>(M) * static_cast<double>(pixel_bytes);
    const double weight_bytes = static_cast<double>(Kb * L * d.C * sizeof(T));
    if (static_cast<double>(KG - 1) * input_bytes > static_cast<double>(supers - 1) * weight_bytes) {
      super_blocks = per_super;
    }
  }
  auto item_at = [&](int64_t item, int64_t& kg, int64_t& blk) {
    const int64_t s = item / (KG * super_blocks), within = item - s * KG * super_blocks;
    const int64_t count = std::min(super_blocks, blocks - s * super_blocks);
    kg = within / count;
    blk = s * super_blocks + within % count;
  };
  // NCHW output: the tiles of one work item write [pixel][nb * L] here
  // (whole vectors: packed weights and bias are zero-padded to Kb * L), then
  // the block goes to NCHW.
  const int64_t block_width = shape.nb * L;
  at::parallel_for(0, KG * blocks, grain_for(block * d.R * d.S * d.C * shape.nb), [&](int64_t begin, int64_t end) {
    std::vector<T> block_out(d.nchw ? block * block_width : 0);
    // Pixels [m0, m1) sorted by tap class (stable: in pixel order within a
    // class), each class cut into near-equal tiles of at most shape.ur:
    // fn(class, pixels of the tile, tile size), a pixel given by its
    // SortedPixel offsets. The pixels' (n, oh, ow) are stepped, not divided
    // out per pixel: with few channels (C, K = 16-32) the divisions took
    // more time than the tiles (3x3 16 -> 16 @56 channels_last, AVX2: 34
    // GFLOP/s against 58 through a padded copy).
    struct SortedPixel {
      int64_t x;    // input offset of tap (0, 0), channel 0 (before the class's)
      int64_t out;  // output offset (NHWC), or pixel index in the block (NCHW)
    };
    const int64_t classes = static_cast<int64_t>(class_g.size());
    const int64_t class_pixels = tiling != DenseTiling::kSpan ? block : 0;
    std::vector<SortedPixel> in_order(class_pixels), sorted(class_pixels);
    std::vector<int32_t> pixel_class(class_pixels);
    std::vector<int64_t> class_start(classes + 1), class_fill;
    auto tile_by_class = [&](int64_t m0, int64_t m1, const auto& fn) {
      // One pass in pixel order (class and offsets), then a stable scatter.
      std::fill(class_start.begin(), class_start.end(), 0);
      int64_t ow = m0 % d.Q, oh = (m0 / d.Q) % d.P, n = m0 / (d.Q * d.P);
      for (int64_t i = 0; i < m1 - m0; ++i) {
        const int32_t k = row_class[oh] * static_cast<int32_t>(n_col_classes) + col_class[ow];
        pixel_class[i] = k;
        ++class_start[k + 1];
        in_order[i] = SortedPixel{((n * d.Hp + oh * d.stride_h) * d.Wp + ow * d.stride_w) * d.C + d.origin,
                                  d.nchw ? i : n * d.out_image + oh * d.out_row + ow * d.out_pixel};
        if (++ow == d.Q) {
          ow = 0;
          if (++oh == d.P) oh = 0, ++n;
        }
      }
      for (int64_t k = 0; k < classes; ++k) class_start[k + 1] += class_start[k];
      class_fill.assign(class_start.begin(), class_start.end() - 1);
      for (int64_t i = 0; i < m1 - m0; ++i) sorted[class_fill[pixel_class[i]]++] = in_order[i];
      for (int64_t k = 0; k < classes; ++k) {
        const SortedPixel* pixels = sorted.data() + class_start[k];
        near_equal_pieces(class_start[k + 1] - class_start[k], shape.ur,
                          [&](int64_t i, int64_t ur) { fn(k, pixels + i, static_cast<int>(ur)); });
      }
    };
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t c0 = chunk * chunk_c;
      const int64_t cc = std::min(chunk_c, d.C - c0);
      if (cc <= 0) break;
      DenseTileStrides gc = g;
      if (!fused) gc.inner = cc;
      if (d.nchw) gc.K = Kb * L;  // no end-of-K tiles: block_out has whole vectors
      for (int64_t item = begin; item < end; ++item) {
        int64_t kg, blk;
        item_at(item, kg, blk);
        const int64_t m_begin = blk * block;
        const int64_t m_end = std::min(M, m_begin + block);
        const int64_t kb0 = kg * shape.nb;
        const int nb = static_cast<int>(std::min<int64_t>(shape.nb, Kb - kb0));
        const T* wk = w + kb0 * g.w_kb + c0 * L;
        const T* b = bias != nullptr ? bias + kb0 * L : nullptr;
        // The epilogue on the NHWC output's tiles (the last C chunk's sums).
        const bool tile_epilogue = ep != nullptr && !d.nchw && chunk == chunks - 1;
        const int64_t tile_channels = std::min<int64_t>(nb * L, d.K - kb0 * L);
        if (tiling != DenseTiling::kSpan) {
          tile_by_class(m_begin, m_end, [&](int64_t k, const SortedPixel* pixels, int ur) {
            const T* xs[kTilePixels];
            T* outs[kTilePixels];
            for (int u = 0; u < ur; ++u) {
              // (a class without taps reads nothing: no pointer outside x)
              xs[u] = class_g[k].R == 0 ? x : x + pixels[u].x + c0 + class_x[k];
              outs[u] = d.nchw ? block_out.data() + pixels[u].out * block_width
                               : out_nhwc + pixels[u].out + kb0 * L;
            }
            DenseTileStrides gk = class_g[k];
            if (!fused) gk.inner = cc;
            if (d.nchw) gk.K = Kb * L;
            if (!d.nchw) prefetch_tile_outputs(outs, ur, nb);
            table(ur, nb)(xs, wk + class_w[k], b, outs, kb0 * L, gk, chunk > 0);
            if (tile_epilogue) {
              for (int u = 0; u < ur; ++u) epilogue_run<T, true>(*ep, outs[u], tile_channels, kb0 * L);
            }
          });
        } else {
          // Position of pixel m_begin, then stepped pixel by pixel.
          int64_t ow = m_begin % d.Q, oh = (m_begin / d.Q) % d.P, n = m_begin / (d.Q * d.P);
          // The block's pixels in tiles of near-equal size (49 = 4 x 6 + 5 x 5,
          // not 8 x 6 + 1): a 1- or 2-pixel tail tile would run at a fraction
          // of the FMA rate (NB weight loads per UR broadcasts).
          near_equal_pieces(m_end - m_begin, shape.ur, [&](int64_t i, int64_t pixels) {
            const int64_t m = m_begin + i;
            const int ur = static_cast<int>(pixels);
            const T* xs[kTilePixels];
            T* outs[kTilePixels];
            for (int u = 0; u < ur; ++u) {
              xs[u] = x + (((n * d.Hp + oh * d.stride_h) * d.Wp + ow * d.stride_w) * d.C +
                           d.origin + c0);
              outs[u] = d.nchw ? block_out.data() + (m - m_begin + u) * block_width
                               : out_nhwc + n * d.out_image + oh * d.out_row + ow * d.out_pixel +
                                     kb0 * L;
              if (++ow == d.Q) {
                ow = 0;
                if (++oh == d.P) oh = 0, ++n;
              }
            }
            if (!d.nchw) prefetch_tile_outputs(outs, ur, nb);
            table(ur, nb)(xs, wk, b, outs, kb0 * L, gc, chunk > 0);
            if (tile_epilogue) {
              for (int u = 0; u < ur; ++u) epilogue_run<T, true>(*ep, outs[u], tile_channels, kb0 * L);
            }
          });
        }
        if (d.nchw) {  // the block's pixels, image by image, to NCHW
          const int64_t PQ = d.P * d.Q, channels = std::min<int64_t>(block_width, d.K - kb0 * L);
          for (int64_t a = m_begin; a < m_end;) {
            const int64_t image = a / PQ, e = std::min(m_end, (image + 1) * PQ);
            O* dst = out + (image * d.K + kb0 * L) * PQ + a - image * PQ;
            if constexpr (std::is_same_v<O, T>) {
              if (ep != nullptr) {
                transpose_plane<T, T, O>(block_out.data() + (a - m_begin) * block_width,
                                         block_width, e - a, channels, dst, PQ,
                                         ColumnEpilogue<T>{ep, kb0 * L});
                a = e;
                continue;
              }
            }
            transpose_plane<T, T, O>(block_out.data() + (a - m_begin) * block_width, block_width,
                                     e - a, channels, dst, PQ);
            a = e;
          }
        }
      }
    }
  });
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
