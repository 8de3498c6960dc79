// 1x1 stride-1 grad-weight on operands with the pixels of a plane
// contiguous (NCHW), read in place: no layout copy.
//   gw[k][c] = sum over (n, hw) of g[n][k][hw] * x[n][c][hw]
// A dot-product tile: vectors along the pixels, UK x UC accumulator vectors
// for UK output channels x UC input channels (per vector step UK + UC loads
// for UK * UC FMAs), each lane a partial sum of the pixels hw = lane mod L;
// the L lanes are summed once at the end, in a fixed order. Work items are
// (k tile, c tile), each reduced by one thread over every pixel in (n, hw)
// order, the pixels in chunks that stay in L2 while a thread's items sweep
// them (the lanes parked between chunks in a [K][C][L] buffer): the result
// is the same for any thread count and never splits the reduction.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "conv2d_cpu_common.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// Tile: UK x UC accumulator vectors plus UK operand vectors and one more:
// 4 x 6 (24 + 5 of 32 registers) with AVX-512, 3 x 4 (12 + 4 of 16) else.
inline constexpr int kPwWgradUK = simd::kVectorBytes == 64 ? 4 : 3;
inline constexpr int kPwWgradUC = simd::kVectorBytes == 64 ? 6 : 4;

// The pixels of a chunk: `images` planes (image strides g_image / x_image),
// each from pixel 0 of the plane pointers g, x, `vecs` whole vectors then a
// partial one of `tail` (0..L-1) lanes. acc: lane sums [UK][UC] at
// acc + (u * acc_k + v) * L, loaded first unless `first`.
template <typename T, typename S, int UK, int UC>
__attribute__((noinline)) void pointwise_wgrad_tile(const S* g, int64_t g_channel,
                                                    int64_t g_image, const S* x,
                                                    int64_t x_channel, int64_t x_image,
                                                    int64_t images, int64_t vecs, int tail,
                                                    T* acc, int64_t acc_k, bool first) {
  using V = simd::Vec<T>;
  using LS = simd::Stored<T, S>;
  constexpr int L = V::size;
  typename V::type a[UK][UC];
  for (int u = 0; u < UK; ++u)
    for (int v = 0; v < UC; ++v)
      a[u][v] = first ? V::zero() : V::load(acc + (u * acc_k + v) * L);
  for (int64_t i = 0; i < images; ++i) {
    const S* gp = g + i * g_image;
    const S* xp = x + i * x_image;
    for (int64_t q = 0; q < vecs; ++q, gp += L, xp += L) {
      typename V::type gv[UK];
      for (int u = 0; u < UK; ++u) gv[u] = LS::load(gp + u * g_channel);
      for (int v = 0; v < UC; ++v) {
        const typename V::type xv = LS::load(xp + v * x_channel);
        for (int u = 0; u < UK; ++u) a[u][v] = simd::fmadd(gv[u], xv, a[u][v]);
      }
    }
    if (tail > 0) {  // both operands zero past the end: no 0 * inf
      typename V::type gv[UK];
      for (int u = 0; u < UK; ++u) gv[u] = LS::load_partial(gp + u * g_channel, tail);
      for (int v = 0; v < UC; ++v) {
        const typename V::type xv = LS::load_partial(xp + v * x_channel, tail);
        for (int u = 0; u < UK; ++u) a[u][v] = simd::fmadd(gv[u], xv, a[u][v]);
      }
    }
  }
  for (int u = 0; u < UK; ++u)
    for (int v = 0; v < UC; ++v) V::store(acc + (u * acc_k + v) * L, a[u][v]);
}

template <typename T, typename S>
using PointwiseWgradTileFn = void (*)(const S*, int64_t, int64_t, const S*, int64_t, int64_t,
                                      int64_t, int64_t, int, T*, int64_t, bool);

template <typename T, typename S>
const TileTable<PointwiseWgradTileFn<T, S>, kPwWgradUK, kPwWgradUC>& pointwise_wgrad_tile_table() {
  static const TileTable<PointwiseWgradTileFn<T, S>, kPwWgradUK, kPwWgradUC> table(
      []<int UK, int UC>() { return &pointwise_wgrad_tile<T, S, UK, UC>; });
  return table;
}

// Chunks of pixels: the inner operand's channels (the fewer) over a chunk
// stay in L2 (kPwWgradChunkBytes) while a thread's items sweep it, one
// outer tile's rows in L1 (kPwWgradOuterBytes). Measured (one thread, AVX2,
// 64 -> 64 @ 56x56): chunks of 780-1560 pixels ran 1.3x faster than 380,
// 1.9x faster than 180 (the accumulators are loaded and stored per chunk).
inline constexpr int64_t kPwWgradChunkBytes = 256 * 1024;
inline constexpr int64_t kPwWgradOuterBytes = 24 * 1024;

// g: [N][K][HW] with strides (g_image, g_channel, 1); x: [N][C][HW] with
// strides (x_image, x_channel, 1); gw: [K][C] contiguous, of S (rounded once
// from the float sums for bfloat16/float16).
template <typename T, typename S>
void pointwise_backward_weight(const S* g, int64_t g_image, int64_t g_channel, const S* x,
                               int64_t x_image, int64_t x_channel, S* gw, int64_t N, int64_t K,
                               int64_t C, int64_t HW) {
  constexpr int L = simd::Vec<T>::size;
  // k and c tiles of near-equal size (64 = 20 x 3 + 2 x 2, not 21 x 3 + 1).
  const int64_t KT = (K + kPwWgradUK - 1) / kPwWgradUK, CT = (C + kPwWgradUC - 1) / kPwWgradUC;
  const int64_t k_base = K / KT, k_longer = K % KT, c_base = C / CT, c_longer = C % CT;
  // Chunks: whole images where a plane is small, else bands of whole vectors.
  // The operand with more channels is the outer one: each of its tiles is
  // read once per chunk (from memory) and kept in L1 while the inner
  // operand's tiles, its whole chunk in L2, sweep past it.
  const bool c_outer = C > K;
  const int64_t inner_channels = std::min(K, C);
  const int64_t chunk_pixels = std::max<int64_t>(
      L, std::min(kPwWgradChunkBytes / (inner_channels * static_cast<int64_t>(sizeof(T))),
                  kPwWgradOuterBytes / (std::max(kPwWgradUK, kPwWgradUC) *
                                        static_cast<int64_t>(sizeof(T)))) / L * L);
  const int64_t images_per_chunk = std::max<int64_t>(1, chunk_pixels / std::max<int64_t>(HW, 1));
  const int64_t bands = HW <= chunk_pixels ? 1 : (HW + chunk_pixels - 1) / chunk_pixels;
  // Band boundaries at whole vectors: near-equal counts of vectors per band.
  const int64_t plane_vecs = HW / L;
  const int tail = static_cast<int>(HW % L);
  at::Tensor lanes = at::empty({K, C, L}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  T* acc = lanes.mutable_data_ptr<T>();
  const auto& table = pointwise_wgrad_tile_table<T, S>();
  at::parallel_for(0, KT * CT, grain_for(N * HW * kPwWgradUK * kPwWgradUC),
                   [&](int64_t begin, int64_t end) {
    struct Item {
      int64_t k0, c0;
      int uk, uc;
    };
    auto item_at = [&](int64_t item) {
      const int64_t kt = c_outer ? item % KT : item / CT, ct = c_outer ? item / KT : item % CT;
      return Item{kt * k_base + std::min(kt, k_longer), ct * c_base + std::min(ct, c_longer),
                  static_cast<int>(k_base + (kt < k_longer ? 1 : 0)),
                  static_cast<int>(c_base + (ct < c_longer ? 1 : 0))};
    };
    bool first = true;
    for (int64_t n0 = 0; n0 < N; n0 += images_per_chunk) {
      const int64_t images = std::min(images_per_chunk, N - n0);
      for (int64_t band = 0; band < bands; ++band) {
        // vectors [v0, v1) of the plane; the last band takes the tail
        const int64_t v0 = plane_vecs * band / bands, v1 = plane_vecs * (band + 1) / bands;
        const int band_tail = band + 1 == bands ? tail : 0;
        for (int64_t item = begin; item < end; ++item) {
          const Item t = item_at(item);
          table(t.uk, t.uc)(g + n0 * g_image + t.k0 * g_channel + v0 * L, g_channel, g_image,
                            x + n0 * x_image + t.c0 * x_channel + v0 * L, x_channel, x_image,
                            images, v1 - v0, band_tail, acc + (t.k0 * C + t.c0) * L, C, first);
        }
        first = false;
      }
    }
    // The lanes of each element summed in a fixed order.
    for (int64_t item = begin; item < end; ++item) {
      const Item t = item_at(item);
      for (int u = 0; u < t.uk; ++u) {
        for (int v = 0; v < t.uc; ++v) {
          const T* e = acc + ((t.k0 + u) * C + t.c0 + v) * L;
          gw[(t.k0 + u) * C + t.c0 + v] = simd::Stored<T, S>::put(simd::sum_lanes<T, L>(e));
        }
      }
    }
  });
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
