// Dense grad-weight on the CPU (groups == 1, float and double):
//   gw[k][c][r][s] = sum over output pixels (n, oh, ow) whose input pixel at
//   tap (r, s) lies in the image of gy[n][k][oh][ow] * x[n][c][ih][iw].
// A GEMM over the pixels: a register tile holds UA channels of one operand
// ("A", read in place with any strides, one broadcast per channel and pixel)
// x NB vectors of L channels of the other ("B", an NHWC copy with channels
// padded to whole vectors, or the tensor itself where it already is one).
// Per pixel: NB vector loads and UA broadcasts for UA * NB FMAs.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "conv2d_cpu_common.h"
#include "conv2d_dense_kernels.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// How the tile reads one operand: element offset of image n, channel c, and
// the pixel that output pixel (oh, ow) reads at tap (r, s):
//   origin + n * image + c * channel + oh * row + ow * col + r * tap_row + s * tap_col.
// For the input x, row/col include the convolution's stride, tap_row/tap_col
// its dilation and origin the padding (negative); for grad_output the taps
// move nothing. Offsets are formed only for pixels inside the image.
template <typename T>
struct WgradOperand {
  const T* data = nullptr;
  int64_t image = 0, channel = 0, row = 0, col = 0, tap_row = 0, tap_col = 0, origin = 0;

  int64_t offset(int64_t n, int64_t c, int64_t oh, int64_t ow, int64_t r, int64_t s) const {
    return origin + n * image + c * channel + oh * row + ow * col + r * tap_row + s * tap_col;
  }
};

// One register tile: acc[u][j] += A[channel u] * B[vector j] over `images` x
// `rows` x `cols` output pixels, pixel by pixel in (image, row, column) order,
// added to gw (u at gw + u * L, vector j at gw + j * gw_b). a: channel 0 of A
// at the first pixel (the other channels a_channel apart); b: B's first vector.
// a_prefetch: elements ahead of each A stream to prefetch (kWgradPrefetchPixels).
// kAdjacentA: A's channels are adjacent elements (a_channel == 1, a
// channels_last operand): one line holds the tile's channels of a pixel (or
// two), so two prefetches per pixel instead of UA of mostly the same line.
template <typename T, int UA, int NB, bool kAdjacentA = false>
__attribute__((noinline)) void weight_grad_tile(const T* a, int64_t a_channel, int64_t a_image,
                                                int64_t a_row, int64_t a_col, const T* b,
                                                int64_t b_image, int64_t b_row, int64_t b_col,
                                                int64_t images, int64_t rows, int64_t cols, T* gw,
                                                int64_t gw_b, int64_t a_prefetch) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type acc[UA][NB];
  for (int u = 0; u < UA; ++u)
    for (int j = 0; j < NB; ++j) acc[u][j] = V::load(gw + j * gw_b + u * L);
  const T* ap[UA];
  for (int u = 0; u < UA; ++u) ap[u] = a + u * a_channel;
  for (int64_t i = 0; i < images; ++i) {
    for (int64_t row = 0; row < rows; ++row) {
      int64_t ao = i * a_image + row * a_row;
      const T* bp = b + i * b_image + row * b_row;
      for (int64_t q = 0; q < cols; ++q) {
        typename V::type bv[NB];
        for (int j = 0; j < NB; ++j) bv[j] = V::load(bp + j * L);
        if constexpr (kAdjacentA) {
          __builtin_prefetch(ap[0] + ao + a_prefetch);
          __builtin_prefetch(ap[UA - 1] + ao + a_prefetch);
        } else {
          for (int u = 0; u < UA; ++u) __builtin_prefetch(ap[u] + ao + a_prefetch);
        }
        for (int u = 0; u < UA; ++u) {
          const typename V::type ab = V::broadcast(ap[u][ao]);
          for (int j = 0; j < NB; ++j) acc[u][j] = simd::fmadd(ab, bv[j], acc[u][j]);
        }
        ao += a_col;
        bp += b_col;
      }
    }
  }
  for (int u = 0; u < UA; ++u)
    for (int j = 0; j < NB; ++j) V::store(gw + j * gw_b + u * L, acc[u][j]);
}

template <typename T>
using WeightGradTileFn = void (*)(const T*, int64_t, int64_t, int64_t, int64_t, const T*,
                                  int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, T*,
                                  int64_t, int64_t);

// weight_grad_tile<T, ua, nb> for every ua <= tile_pixels(nb), nb <= kTileNB
// (tails); null beyond the register file.
template <typename T, bool kAdjacentA = false>
const TileTable<WeightGradTileFn<T>, kTilePixels, kTileNB>& weight_grad_tile_table() {
  static const TileTable<WeightGradTileFn<T>, kTilePixels, kTileNB> table(
      []<int UA, int NB>() -> WeightGradTileFn<T> {
        if constexpr (UA <= tile_pixels(NB)) {
          return &weight_grad_tile<T, UA, NB, kAdjacentA>;
        } else {
          return nullptr;
        }
      });
  return table;
}

// The reduction of dense_backward_weight: A channels (a_count of them) x B
// vectors (b_vectors), into gw packed as [b_vectors][R][S][a_count][L].
// a_pixel: elements of one A channel per output pixel (stride_h * stride_w
// for the input, 1 for grad_output).
template <typename T>
struct WgradProblem {
  WgradOperand<T> A, B;
  int64_t a_count = 0, b_vectors = 0, a_pixel = 1;
};

// Work items: (group of B vectors, tile of A channels, r, s), each reduced by
// one thread over every output pixel in (n, oh, ow) order: results identical
// run to run and for any thread count, without partial buffers or atomics.
// A thread sweeps the output in chunks of up to kWgradChunkPixels pixels
// (whole images or bands of rows), all of its items over one chunk before
// the next, so the chunk stays in L2 while the items sweep it: its A block
// (every A channel) is read once per vector group, its B block (128 KB per group of 4 vectors at 512 pixels) once per
// A tile. Measured (one thread, AVX-512, ResNet-50): 512 pixels beat 128 on
// the 3x3 layers by 5-10%; 512 pixels of a 512-channel stride-2 input
// (3.2 MB) ran 25% slower than 128. The chunk's A and B pixels together are
// at most kWgradChunkBytes: with A alone bounded (768 KB), a 1x1 expansion
// with B = a channels_last grad_output of 1024-2048 channels (4-8 KB a
// pixel) swept 2 MB per chunk and fell out of L2 (SPR, one thread:
// ResNet-50's 256 -> 1024 @14 0.62x -> 0.82x torch, 512 -> 2048 @7 0.74x ->
// 0.82x; docs/cpu.md "channels_last training, SPR-class").
inline constexpr int64_t kWgradChunkPixels = 512;
inline constexpr int64_t kWgradChunkBytes = 1024 * 1024;
// Each A channel is a short stream per item and chunk (a row band of an
// NCHW plane: 512 values), too short for the hardware prefetcher, and the
// items jump between planes: the 1x1 layers ran at half speed waiting on
// DRAM. The tile prefetches every stream this many pixels ahead (into the
// next chunk's rows at the end of a band): 1x1 layers 0.58-0.68x -> 0.9-1.1x
// of torch.
inline constexpr int64_t kWgradPrefetchPixels = 64;
// 1x1 grad-weight copies its operands into per-chunk panels
// (dense_backward_weight) where one operand's pixels are this far apart.
// ResNet-50's 1x1 layers, AVX2, 2 threads, GFLOP/s without -> with panels:
// 1-8 KB pixels 54-82 -> 81-118 (r50_12/13/16/18/19/21/22), 2 KB 76-85 ->
// 78-88, 256 B - 1 KB 71-76 -> 40-61.
inline constexpr int64_t kWgradPanelStrideBytes = 2048;

template <typename T>
void dense_backward_weight(const WgradProblem<T>& w, T* gw, const Conv2dShape& p) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  const DenseTileShape shape = dense_tile_shape(w.b_vectors);
  const int64_t BG = shape.groups;
  // A channels in tiles of near-equal size (64 = 9 x 6 + 2 x 5, not 10 x 6 + 4).
  const int64_t AT = (w.a_count + shape.ur - 1) / shape.ur;
  const int64_t a_base = w.a_count / AT, a_longer = w.a_count % AT;
  const int64_t items = BG * AT * p.R * p.S;
  const int64_t gw_b = p.R * p.S * w.a_count * L;
  const std::vector<ValidRange> row_range = row_ranges(p), col_range = column_ranges(p);
  // Chunks: whole images where a plane is small, else bands of rows.
  const int64_t a_pixel_bytes = w.a_count * w.a_pixel * static_cast<int64_t>(sizeof(T));
  const int64_t b_pixel_bytes = w.b_vectors * L * static_cast<int64_t>(sizeof(T));
  const int64_t chunk_pixels = std::clamp<int64_t>(
      kWgradChunkBytes / (a_pixel_bytes + b_pixel_bytes), 1, kWgradChunkPixels);
  const int64_t chunk_rows = std::max<int64_t>(1, chunk_pixels / std::max<int64_t>(p.Q, 1));
  const int64_t images_per_chunk = std::max<int64_t>(1, chunk_rows / p.P);
  const int64_t bands = chunk_rows >= p.P ? 1 : (p.P + chunk_rows - 1) / chunk_rows;
  const int64_t band_rows = (p.P + bands - 1) / bands;
  const auto& table = w.A.channel == 1 ? weight_grad_tile_table<T, true>()
                                        : weight_grad_tile_table<T, false>();
  // Panels: a channels_last A read in place has each pixel's tile channels
  // C elements (1-8 KB) from the previous pixel's, and B's vectors K
  // elements: the tile waits on a new line of each operand at every pixel
  // (and, past 4 KB, a new page). For 1x1 filters without padding, where
  // every item reads the whole chunk, each thread copies a chunk's A tiles
  // into [pixels][ua] panels and its B vector groups into [pixels][nb * L]
  // panels, once per chunk, as it first needs each; the tiles then stream
  // them. (The sums are the same, in the same order.) Only where an
  // operand's pixels are kWgradPanelStrideBytes or more apart: with narrower
  // pixels the hardware prefetcher keeps up, and a copy that each thread
  // makes of every A tile and reuses for few B groups costs more than it
  // saves (ResNet-50's 64 -> 64 @56, AVX2, 2 threads: 75 -> 40 GFLOP/s).
  // An A read along channel planes (NCHW) streams in place; its B (the
  // NHWC copy of the other operand) gets panels where its own pixels are
  // that far apart (strided 1x1 layers: the compact input copy).
  const bool panel_shape = p.R == 1 && p.S == 1 && p.pad_h == 0 && p.pad_w == 0;
  auto wide = [](int64_t pixel_elems) {
    return pixel_elems * static_cast<int64_t>(sizeof(T)) >= kWgradPanelStrideBytes;
  };
  const bool pack_a = panel_shape && w.A.channel == 1 && (wide(w.A.col) || wide(w.B.col));
  const bool pack_b = panel_shape && (pack_a || wide(w.B.col));
  const int64_t max_chunk_pixels = images_per_chunk * band_rows * p.Q;
  const int64_t work = p.N * p.P * p.Q * shape.ur * shape.nb;
  at::parallel_for(0, items, grain_for(work), [&](int64_t begin, int64_t end) {
    struct Item {
      int64_t a0, r, s, at, bg;
      int ua, nb;
      T* g;
      int64_t b0;
    };
    auto item_at = [&](int64_t item) {
      Item t;
      t.s = item % p.S;
      t.r = (item / p.S) % p.R;
      t.at = (item / (p.S * p.R)) % AT;
      t.bg = item / (p.S * p.R * AT);
      t.a0 = t.at * a_base + std::min(t.at, a_longer);
      t.ua = static_cast<int>(a_base + (t.at < a_longer ? 1 : 0));
      t.b0 = t.bg * shape.nb;
      t.nb = static_cast<int>(std::min<int64_t>(shape.nb, w.b_vectors - t.b0));
      t.g = gw + t.b0 * gw_b + ((t.r * p.S + t.s) * w.a_count + t.a0) * L;
      return t;
    };
    for (int64_t item = begin; item < end; ++item) {
      const Item t = item_at(item);
      for (int j = 0; j < t.nb; ++j) std::memset(t.g + j * gw_b, 0, sizeof(T) * t.ua * L);
    }
    simd::VecArray<T> a_panels(pack_a ? (w.a_count * max_chunk_pixels + L - 1) / L + AT : 0);
    simd::VecArray<T> b_panels(pack_b ? w.b_vectors * max_chunk_pixels : 0);
    std::vector<char> a_packed(pack_a ? AT : 0), b_packed(pack_b ? BG : 0);
    for (int64_t n0 = 0; n0 < p.N; n0 += images_per_chunk) {
      const int64_t images = std::min(images_per_chunk, p.N - n0);
      for (int64_t band = 0; band < bands; ++band) {
        const int64_t oh0 = band * band_rows, oh1 = std::min(p.P, oh0 + band_rows);
        std::fill(a_packed.begin(), a_packed.end(), 0);
        std::fill(b_packed.begin(), b_packed.end(), 0);
        for (int64_t item = begin; item < end; ++item) {
          const Item t = item_at(item);
          const int64_t lo = std::max(oh0, row_range[t.r].lo), hi = std::min(oh1, row_range[t.r].hi);
          const ValidRange cols = col_range[t.s];
          if (lo >= hi || cols.lo >= cols.hi) continue;
          const int64_t rows = hi - lo, pixels = images * rows * (cols.hi - cols.lo);
          const T* a = w.A.data + w.A.offset(n0, t.a0, lo, cols.lo, t.r, t.s);
          const T* b = w.B.data + w.B.offset(n0, t.b0 * L, lo, cols.lo, t.r, t.s);
          int64_t a_image = w.A.image, a_row = w.A.row, a_col = w.A.col;
          int64_t b_image = w.B.image, b_row = w.B.row, b_col = w.B.col;
          // Copies `count` channels of every chunk pixel from `op` (of `channels`),
          // from channel c0, to dst. Whole vectors are stored (the panels have a
          // vector of slack; the next pixel's copy overwrites the excess): a
          // masked store costs tens of cycles on AMD. Loads past the pixel's
          // channels are masked (the last pixel's could leave the tensor).
          auto pack = [&](const WgradOperand<T>& op, int64_t channels, int64_t c0, int64_t count,
                          T* dst) {
            const bool whole = c0 + (count + L - 1) / L * L <= channels;
            for (int64_t i = 0; i < images; ++i)
              for (int64_t oh = lo; oh < hi; ++oh) {
                const T* src = op.data + op.offset(n0 + i, c0, oh, cols.lo, t.r, t.s);
                for (int64_t q = cols.lo; q < cols.hi; ++q, src += op.col, dst += count) {
                  int64_t e = 0;
                  for (; e + L <= count; e += L) V::store(dst + e, V::load(src + e));
                  if (e < count) {
                    V::store(dst + e, whole ? V::load(src + e)
                                            : V::load_partial(src + e, static_cast<int>(count - e)));
                  }
                }
              }
          };
          if (pack_a) {
            T* ap = reinterpret_cast<T*>(a_panels.data()) + t.a0 * pixels + t.at * L;
            if (!a_packed[t.at]) pack(w.A, w.a_count, t.a0, t.ua, ap);
            a_packed[t.at] = 1;
            a = ap;
            a_col = t.ua;
            a_row = (cols.hi - cols.lo) * a_col;
            a_image = rows * a_row;
          }
          if (pack_b) {
            const int64_t nbl = t.nb * L;
            T* bp = reinterpret_cast<T*>(b_panels.data()) + t.b0 * L * pixels;
            if (!b_packed[t.bg]) pack(w.B, w.b_vectors * L, t.b0 * L, nbl, bp);
            b_packed[t.bg] = 1;
            b = bp;
            b_col = nbl;
            b_row = (cols.hi - cols.lo) * b_col;
            b_image = rows * b_row;
          }
          table(t.ua, t.nb)(a, w.A.channel, a_image, a_row, a_col, b, b_image, b_row, b_col,
                            images, rows, cols.hi - cols.lo, t.g, gw_b,
                            kWgradPrefetchPixels * a_col);
        }
      }
    }
  });
}

// First layers (C < 8): A = (s, c) fused into one index of the padded NHWC
// input (21 values for 7x7 with 3 channels; the per-tap tiles above would
// hold 3 channels), B = grad_output. Each thread owns a set of register tiles
// (NB vectors of k x UC values of the (s, c) index, one r) and sums all
// pixels into them in one fixed order.
inline constexpr int kWgradUC = 6;

template <typename T, int UC, int NB>
void weight_grad_fused_tile(const T* x, const T* gy, int64_t rows, int64_t Q, int64_t x_row,
                            int64_t x_pixel, int64_t gy_row, int64_t gy_pixel, T* gw,
                            int64_t gw_kb, bool accumulate) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type acc[UC][NB];
  for (int u = 0; u < UC; ++u)
    for (int j = 0; j < NB; ++j)
      acc[u][j] = accumulate ? V::load(gw + j * gw_kb + u * L) : V::zero();
  for (int64_t row = 0; row < rows; ++row) {
    const T* xr = x + row * x_row;
    const T* gr = gy + row * gy_row;
    for (int64_t q = 0; q < Q; ++q) {
      typename V::type gv[NB];
      for (int j = 0; j < NB; ++j) gv[j] = V::load(gr + q * gy_pixel + j * L);
      for (int u = 0; u < UC; ++u) {
        const typename V::type xb = V::broadcast(xr[q * x_pixel + u]);
        for (int j = 0; j < NB; ++j) acc[u][j] = simd::fmadd(xb, gv[j], acc[u][j]);
      }
    }
  }
  for (int u = 0; u < UC; ++u)
    for (int j = 0; j < NB; ++j) V::store(gw + j * gw_kb + u * L, acc[u][j]);
}

template <typename T>
using WeightGradFusedTileFn = void (*)(const T*, const T*, int64_t, int64_t, int64_t, int64_t,
                                       int64_t, int64_t, T*, int64_t, bool);

template <typename T>
const TileTable<WeightGradFusedTileFn<T>, kWgradUC, kTileNB>& weight_grad_fused_tile_table() {
  static const TileTable<WeightGradFusedTileFn<T>, kWgradUC, kTileNB> table(
      []<int UC, int NB>() { return &weight_grad_fused_tile<T, UC, NB>; });
  return table;
}

// x: padded NHWC [N][Hp][Wp][C]; gy: NHWC [N][P][Q][Kp] with Kp = Kb * L
// (zero channels past K); gw: [Kb][R][S][C][L] (the packed-weight layout).
// Pixels go in chunks of output rows so a chunk of gy and x stays in cache
// while the thread's tiles sweep it.
template <typename T>
void first_layer_backward_weight(const T* x, const T* gy, T* gw, const Conv2dShape& p,
                                 int64_t Hp, int64_t Wp) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t Kb = (p.K + L - 1) / L, Kp = Kb * L;
  const int64_t KG = (Kb + kTileNB - 1) / kTileNB;
  const bool fused = p.dilation_w == 1;
  const int64_t S_outer = fused ? 1 : p.S, inner = fused ? p.S * p.C : p.C;
  const int64_t inner_tiles = (inner + kWgradUC - 1) / kWgradUC;
  const int64_t items = KG * p.R * S_outer * inner_tiles;
  const int64_t gw_kb = p.R * p.S * p.C * L;
  // Chunks of output rows: about 64 pixels.
  const int64_t chunk_rows = std::max<int64_t>(1, 64 / std::max<int64_t>(p.Q, 1));
  const int64_t total_rows = p.N * p.P;
  const auto& table = weight_grad_fused_tile_table<T>();
  at::parallel_for(0, items, grain_for(total_rows * p.Q * kWgradUC * kTileNB), [&](int64_t begin, int64_t end) {
    for (int64_t row0 = 0; row0 < total_rows; row0 += chunk_rows) {
      const int64_t row1 = std::min(total_rows, row0 + chunk_rows);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t it = item % inner_tiles;
        const int64_t so = (item / inner_tiles) % S_outer;
        const int64_t r = (item / (inner_tiles * S_outer)) % p.R;
        const int64_t kg = item / (inner_tiles * S_outer * p.R);
        const int64_t kb0 = kg * kTileNB;
        const int nb = static_cast<int>(std::min<int64_t>(kTileNB, Kb - kb0));
        const int64_t i0 = it * kWgradUC;
        const int uc = static_cast<int>(std::min<int64_t>(kWgradUC, inner - i0));
        T* g = gw + kb0 * gw_kb + ((r * S_outer + so) * inner + i0) * L;
        // Rows of one image at a time (x rows are not evenly spaced across images).
        for (int64_t row = row0; row < row1;) {
          const int64_t n = row / p.P, oh = row % p.P;
          const int64_t rows = std::min(row1, (n + 1) * p.P) - row;
          const T* xp = x + ((n * Hp + oh * p.stride_h + r * p.dilation_h) * Wp) * p.C +
                        so * p.dilation_w * p.C + i0;
          const T* gp = gy + ((n * p.P + oh) * p.Q) * Kp + kb0 * L;
          table(uc, nb)(xp, gp, rows, p.Q, p.stride_h * Wp * p.C, p.stride_w * p.C,
                                   p.Q * Kp, Kp, g, gw_kb, row > 0);
          row += rows;
        }
      }
    }
  });
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
