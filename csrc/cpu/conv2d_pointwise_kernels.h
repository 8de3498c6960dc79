// Pointwise convolution (1x1, no padding, float and double) on NCHW data:
// a GEMM per image with no layout change. The forward of the pointwise path
// on contiguous tensors, and its grad-input (the transposed weight) where the
// stride is 1. channels_last pointwise problems run on the dense kernel.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv2d_cpu_common.h"
#include "conv2d_epilogue_cpu.h"
#include "conv2d_layout_kernels.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// Pointwise (1x1, no padding) on NCHW data is a GEMM per image,
// Y[K][HW] = W[K][C] X[C][HW], with no layout change: vectors run along the
// pixels, weights are broadcast. Register tile: kPwK output channels x kPwV
// vectors of pixels.
inline constexpr int kPwK = 6;
inline constexpr int kPwV = simd::kVectorBytes == 64 ? 4 : 2;

// One tile: UK output channels x UV vectors of pixels starting at x / out.
// x: X[0][hw0] with row stride x_row (>= hw0 + UV*L readable in every row);
// w: W[k0][0] with row stride w_row (unit stride along C); out: Y[k0][hw0]
// with row stride out_row, elements O (T, or bfloat16/float16: rounded
// once, here); lanes: valid pixels (<= UV*L). ep (O == T): conv2d_fused's
// epilogue, applied to the accumulators before the store; row i is output
// channel k0 + i.
template <typename T, typename O, int UK, int UV>
void pointwise_tile(const T* x, int64_t x_row, const T* w, int64_t w_row, int64_t C,
                    const T* bias, O* out, int64_t out_row, int64_t lanes,
                    const StoreEpilogue<T>* ep, int64_t k0) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type acc[UK][UV];
  for (int i = 0; i < UK; ++i) {
    const typename V::type b = V::broadcast(bias != nullptr ? bias[i] : T(0));
    for (int v = 0; v < UV; ++v) acc[i][v] = b;
  }
  for (int64_t c = 0; c < C; ++c) {
    typename V::type xv[UV];
    for (int v = 0; v < UV; ++v) xv[v] = V::load(x + c * x_row + v * L);
    for (int i = 0; i < UK; ++i) {
      const typename V::type wb = V::broadcast(w[i * w_row + c]);
      for (int v = 0; v < UV; ++v) acc[i][v] = simd::fmadd(wb, xv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < UK; ++i) {
    for (int v = 0; v < UV; ++v) {
      const int64_t n = std::min<int64_t>(L, lanes - v * L);
      if (n <= 0) break;
      if constexpr (std::is_same_v<O, T>) {
        if (ep != nullptr) {
          acc[i][v] = apply_epilogue_vector<T, false>(acc[i][v], *ep, k0 + i,
                                                      out + i * out_row + v * L, static_cast<int>(n));
        }
      }
      simd::store_upto<T, O>(out + i * out_row + v * L, acc[i][v], static_cast<int>(n));
    }
  }
}

template <typename T, typename O>
using PointwiseTileFn = void (*)(const T*, int64_t, const T*, int64_t, int64_t, const T*, O*,
                                 int64_t, int64_t, const StoreEpilogue<T>*, int64_t);

// pointwise_tile<T, O, uk, uv> for every uk <= kPwK, uv <= kPwV (tails).
template <typename T, typename O>
const TileTable<PointwiseTileFn<T, O>, kPwK, kPwV>& pointwise_tile_table() {
  static const TileTable<PointwiseTileFn<T, O>, kPwK, kPwV> table(
      []<int UK, int UV>() { return &pointwise_tile<T, O, UK, UV>; });
  return table;
}

// Copies pixels [m0, m1) (numbered across images, m = n * HW + hw) of x
// [N][C][x_row] (images x_image apart) into packed [pixel tile][C][tile_px] of T (widened), zeros
// past m1 in the last tile. Whole tiles within one image (all but the edges
// of images) are copied channel by channel across the block: each input row
// is then read as one sequential run (C rows at once defeat the prefetchers),
// with vector moves instead of a copy call per tile row (which cost as much
// as the tiles' arithmetic where K is small: C = K = 64).
template <typename T, typename S>
void pointwise_pack(const S* x, int64_t x_row, int64_t x_image, int64_t C, int64_t HW,
                    int64_t m0, int64_t m1, T* packed) {
  using V = simd::Vec<T>;
  using In = simd::Stored<T, S>;
  constexpr int L = V::size;
  constexpr int64_t tile_px = kPwV * L;
  // Runs of whole tiles within one image: [t0, t1) from pixel hw of image n.
  struct Run {
    int64_t t0, t1, n, hw;
  };
  std::vector<Run> runs;
  for (int64_t m = m0, t = 0; m < m1; m += tile_px, ++t) {
    const int64_t count = std::min(tile_px, m1 - m);
    const int64_t n = m / HW, hw = m - n * HW;
    if (count == tile_px && hw + tile_px <= HW) {
      if (!runs.empty() && runs.back().t1 == t && runs.back().n == n) {
        ++runs.back().t1;
      } else {
        runs.push_back({t, t + 1, n, hw});
      }
      continue;
    }
    T* dst = packed + t * C * tile_px;  // a tile at an image's edge or the end
    for (int64_t c = 0; c < C; ++c) {
      T* d = dst + c * tile_px;
      for (int64_t a = m; a < m + count;) {  // image by image
        const int64_t an = a / HW, ahw = a - an * HW, len = std::min(m + count - a, HW - ahw);
        simd::convert_copy<T>(x + an * x_image + c * x_row + ahw, d + (a - m), len);
        a += len;
      }
      std::fill(d + count, d + tile_px, T(0));
    }
  }
  for (const Run& r : runs) {
    for (int64_t c = 0; c < C; ++c) {
      const S* src = x + r.n * x_image + c * x_row + r.hw;
      T* d = packed + (r.t0 * C + c) * tile_px;
      for (int64_t t = r.t0; t < r.t1; ++t, src += tile_px, d += C * tile_px) {
        for (int v = 0; v < kPwV; ++v) V::store(d + v * L, In::load(src + v * L));
      }
    }
  }
}

// x: [N][C][x_row] of S (T, or bfloat16/float16, widened in the copy of
// the pixel block), w: [K][C] of T with row stride w_row (unit stride along C:
// the UK broadcasts of a step read UK rows, each one sequentially, so no
// packed copy is needed), bias padded to a multiple of kPwK or null,
// out: [N][K][HW] contiguous, of S (rounded once, by the tile's stores).
//
// Pixels are numbered across images (m = n * HW + hw) and cut into tiles of
// kPwV * L: on small planes a tile takes the end of one image and the start
// of the next (7x7: 8 images are 392 pixels, 25 vectors of 16, instead of
// 8 x 4 vectors of which 49/64 lanes are used). Each output element still
// sums its C products alone, in order: results do not depend on the tiling
// (bitwise identical for any batch split).
//
// ep (S == T, ep->out == out): conv2d_fused's epilogue in the tiles' stores.
//
// groups > 1: a grouped 1x1 convolution as one such GEMM per group, C and K
// counted per group: group g reads input channels [g * C, (g + 1) * C), W
// rows and bias [g * K, (g + 1) * K) and writes those output channels. The
// groups' work items share one parallel loop.
template <typename T, typename S = T>
void pointwise_forward(const S* x, int64_t x_row, const T* w, int64_t w_row, const T* bias,
                       S* out, int64_t N, int64_t C, int64_t K, int64_t HW,
                       const StoreEpilogue<T>* ep = nullptr, int64_t groups = 1) {
  constexpr int L = simd::Vec<T>::size;
  constexpr int64_t tile_px = kPwV * L;
  const int64_t M = N * HW;
  if (M <= 0 || K <= 0) return;
  const int64_t x_image = groups * C * x_row, out_image = groups * K * HW;
  // Pixel blocks whose C rows stay in L2 while all output channels sweep
  // them: near-equal runs of whole tiles (block hb: tiles [hb * tiles /
  // blocks, (hb + 1) * tiles / blocks)), as many as a multiple of the thread
  // count where there are several, so that the threads' shares match (1024
  // channels of 14 x 14 at N=1, AVX2: 13 tiles in 4 blocks of 3, 3, 3, 4, not
  // 4, 4, 4, 1, which 2 threads split 8 : 5).
  const int64_t tiles = (M + tile_px - 1) / tile_px;
  const int64_t max_block_tiles = std::max<int64_t>(
      1, 256 * 1024 / static_cast<int64_t>(sizeof(T)) / std::max<int64_t>(C, 1) / tile_px);
  int64_t blocks = (tiles + max_block_tiles - 1) / max_block_tiles;
  const int64_t threads = at::get_num_threads();
  if (blocks > 1 && blocks % threads != 0) {
    blocks = std::min(tiles, (blocks + threads - 1) / threads * threads);
  }
  const int64_t block_tiles = (tiles + blocks - 1) / blocks;  // the largest
  const int64_t Kt = (K + kPwK - 1) / kPwK;
  constexpr int64_t k_tiles_per_group = 8;
  const int64_t KG = (Kt + k_tiles_per_group - 1) / k_tiles_per_group;
  const auto& table = pointwise_tile_table<T, S>();
  at::parallel_for(0, groups * blocks * KG, grain_for(block_tiles * tile_px * C * k_tiles_per_group),
                   [&](int64_t begin, int64_t end) {
    // The block of X as [pixel tile][C][tile_px]: every tile then streams one
    // contiguous run instead of C rows a whole image apart (which costs a TLB
    // entry per row for large C).
    std::vector<T> packed(static_cast<size_t>(C * block_tiles * tile_px));
    // A tile spanning images writes here first, then each image's part.
    S spanning[kPwK][tile_px];
    int64_t packed_block = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t kg = item % KG, hb = (item / KG) % blocks, g = item / (KG * blocks);
      const int64_t m0 = hb * tiles / blocks * tile_px;
      const int64_t m1 = std::min(M, (hb + 1) * tiles / blocks * tile_px);
      if (packed_block != item / KG) {
        packed_block = item / KG;
        pointwise_pack<T, S>(x + g * C * x_row, x_row, x_image, C, HW, m0, m1, packed.data());
      }
      S* const out_g = out + g * K * HW;
      const int64_t k_g = g * K;  // the group's first output channel
      const int64_t kt_end = std::min(Kt, (kg + 1) * k_tiles_per_group);
      for (int64_t kt = kg * k_tiles_per_group; kt < kt_end; ++kt) {
        const int uk = static_cast<int>(std::min<int64_t>(kPwK, K - kt * kPwK));
        const T* wt = w + (k_g + kt * kPwK) * w_row;
        const T* bt = bias != nullptr ? bias + k_g + kt * kPwK : nullptr;
        for (int64_t m = m0, t = 0; m < m1; m += tile_px, ++t) {
          const int64_t lanes = std::min<int64_t>(tile_px, m1 - m);
          const int uv = static_cast<int>((lanes + L - 1) / L);
          const T* xt = packed.data() + t * C * tile_px;
          const int64_t n = m / HW, hw = m - n * HW;
          if (hw + lanes <= HW) {  // within image n
            table(uk, uv)(xt, tile_px, wt, w_row, C, bt, out_g + n * out_image + kt * kPwK * HW + hw,
                          HW, lanes, ep, k_g + kt * kPwK);
            continue;
          }
          // (the epilogue after the copy out: the residual is indexed by
          // the output address)
          table(uk, uv)(xt, tile_px, wt, w_row, C, bt, &spanning[0][0], tile_px, lanes, nullptr, 0);
          for (int64_t a = m; a < m + lanes;) {
            const int64_t an = a / HW, ahw = a - an * HW, len = std::min(m + lanes - a, HW - ahw);
            for (int i = 0; i < uk; ++i) {
              S* dst = out_g + an * out_image + (kt * kPwK + i) * HW + ahw;
              std::memcpy(dst, &spanning[i][a - m], sizeof(S) * len);
              if constexpr (std::is_same_v<S, T>) {
                if (ep != nullptr) epilogue_run<T, false>(*ep, dst, len, k_g + kt * kPwK + i);
              }
            }
            a += len;
          }
        }
      }
    }
  });
}

// Pointwise convolution of NCHW `input` [N][C][H][W] with matrix weight2d
// [K][C / groups] (any strides; group g's rows are [g * K / groups, ...)),
// stride (sh, sw), output [N][K][P][Q] contiguous.
// The input is used as it is when contiguous with unit stride; otherwise
// through a compact (subsampled) [N][C][P][Q] copy. Elements S: T, or
// bfloat16/float16 (T = float): input widened in the tiles' pixel-block
// copy, weights in one float copy, output rounded by the tiles.
// epilogue: conv2d_fused's, in the tiles' stores (S == T).
template <typename T, typename S = T>
at::Tensor pointwise_nchw(const at::Tensor& input, const at::Tensor& weight2d,
                          const at::Tensor& bias, int64_t sh, int64_t sw, int64_t P, int64_t Q,
                          EpilogueRequest* epilogue = nullptr, int64_t groups = 1) {
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t K = weight2d.size(0), HW = P * Q, Cg = weight2d.size(1);
  at::Tensor x;
  int64_t x_row = HW;
  if (sh == 1 && sw == 1 && input.is_contiguous()) {
    x = input;
  } else {
    x = at::empty({N, C, P, Q}, input.options());
    x.copy_(input.slice(2, 0, H, sh).slice(3, 0, W, sw));
  }
  // (grad-input's transposed weight view: one transposing copy)
  at::Tensor w;
  if constexpr (std::is_same_v<S, T>) {
    w = weight2d.stride(1) == 1 ? weight2d : weight2d.contiguous();
  } else {
    w = at::empty({K, Cg}, compute_options<T>(weight2d.options()));
    w.copy_(weight2d);  // exact: float holds every bfloat16/float16 value
  }
  at::Tensor b;
  if (bias.defined()) {
    b = at::zeros({(K + kPwK - 1) / kPwK * kPwK}, compute_options<T>(weight2d.options()));
    b.narrow(0, 0, K).copy_(bias);
  }
  auto out = at::empty({N, K, P, Q}, input.options());
  StoreEpilogue<T> ep;
  const bool fuse = std::is_same_v<S, T> && epilogue != nullptr;
  if constexpr (std::is_same_v<S, T>) {
    if (fuse) {
      ep = store_epilogue<T>(*epilogue->tensors, out.const_data_ptr<T>());
      epilogue->applied = true;
    }
  }
  pointwise_forward<T, S>(x.const_data_ptr<S>(), x_row, w.const_data_ptr<T>(), w.stride(0),
                          b.defined() ? b.const_data_ptr<T>() : nullptr,
                          out.mutable_data_ptr<S>(), N, Cg, K / groups, HW, fuse ? &ep : nullptr,
                          groups);
  return out;
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
