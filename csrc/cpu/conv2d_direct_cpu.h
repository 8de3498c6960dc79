// Fast direct convolution machinery for the CPU ops (float and double):
//
// Dense (groups == 1): activations are copied once per call into a
// zero-padded NHWC buffer (a blocked copy, not an im2col matrix), weights are
// packed once per call as [K/L][R][S][C][L] (L = SIMD width, K padded with
// zeros). A register tile of UR output pixels x NB vectors of L output
// channels is held in accumulators; for every (r, s, c) the kernel loads NB
// weight vectors and broadcasts UR input values: the whole C*R*S reduction
// runs inside the tile. Padding lives in the copy, so the inner loop has no
// bounds check. With dilation_w == 1 the (s, c) loops fuse into one
// contiguous loop of S*C (for C=3 first layers: 21 iterations for 7x7, not
// 7 loops of 3). Output is written NHWC (K contiguous).
//
// Depthwise (groups == C == K): memory-bound; one (n, c) plane at a time,
// copied into a zero-padded buffer split into stride phases along the width
// (column j*stride + phase at [phase][j]) so every tap reads a contiguous
// vector of output columns, for any stride and dilation.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../conv2d_params.h"
#include "simd.h"

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

// Which kernel a problem runs on (exposed for tests via conv_ext::cpu_forward_path).
enum class ForwardPath { kGeneric, kPointwise, kFirstLayer, kDense, kDepthwise, kGrouped };

inline const char* path_name(ForwardPath path) {
  switch (path) {
    case ForwardPath::kPointwise: return "pointwise";
    case ForwardPath::kFirstLayer: return "first_layer";
    case ForwardPath::kDense: return "dense";
    case ForwardPath::kDepthwise: return "depthwise";
    case ForwardPath::kGrouped: return "grouped";
    default: return "generic";
  }
}

// groups == C, any channel multiplier K / C (depthwise_kernels_cpu.h).
inline bool is_depthwise(const Conv2dShape& p) {
  return p.groups > 1 && p.C_per_group == 1;
}

// bfloat16 and float16 run on the float32 kernels: converted on the way in,
// float32 accumulation, rounded once at the end (see run_in_float).
inline bool is_reduced_float(at::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf;
}

inline ForwardPath select_forward_path(const Conv2dShape& p, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kDouble && !is_reduced_float(dtype)) {
    return ForwardPath::kGeneric;
  }
  if (p.C_per_group == 0) return ForwardPath::kGeneric;  // output = bias: nothing to reduce
  if (is_depthwise(p)) return ForwardPath::kDepthwise;
  // Grouped with >= 2 input channels per group: conv2d_grouped_cpu.h.
  if (p.groups != 1) return p.C_per_group >= 2 ? ForwardPath::kGrouped : ForwardPath::kGeneric;
  if (p.R == 1 && p.S == 1 && p.pad_h == 0 && p.pad_w == 0) return ForwardPath::kPointwise;
  if (p.C < 8) return ForwardPath::kFirstLayer;
  return ForwardPath::kDense;
}

// Register tile: UR output pixels x NB vectors of output channels. The
// accumulators, NB weight vectors and one broadcast must fit the register
// file: 32 vector registers with AVX-512 (6 x 4), 16 otherwise (6 x 2).
inline constexpr int kTileNB = simd::kVectorBytes == 64 ? 4 : 2;
inline constexpr int kTilePixels = 6;
// Packed weights of one tile column (NB vectors x R*S*C) above this many
// bytes are split along C so they stay in L2 while the tile sweeps the image.
inline constexpr int64_t kWeightBlockBytes = 384 * 1024;

// Geometry of one dense problem in the padded NHWC buffers.
struct DenseGeometry {
  int64_t x_r = 0;       // elements between kernel rows in the input
  int64_t x_s = 0;       // ... between kernel columns (non-fused loop)
  int64_t w_kb = 0;      // elements between packed weight blocks of L channels
  int64_t w_rs = 0;      // ... between kernel taps (r, s) (non-fused) or rows (fused)
  int64_t R = 0, S_outer = 0, inner = 0;
  int64_t K = 0;
};

// One register tile of UR output pixels, anywhere in the output (a tile may
// span output rows and images, so no row has a short remainder tile).
// xs[u]: input of pixel u at tap (0, 0) and the first channel; w: packed
// weights of channel block kb0; outs[u]: output pixel u at channel kb0 * L.
// accumulate: add to the output instead of starting from bias (C is split).
template <typename T, int UR, int NB>
void dense_tile(const T* const* xs, const T* w, const T* bias, T* const* outs, int64_t k0,
                const DenseGeometry& g, bool accumulate) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type acc[UR][NB];
  for (int j = 0; j < NB; ++j) {
    const int64_t lanes = std::min<int64_t>(L, g.K - k0 - j * L);
    for (int u = 0; u < UR; ++u) {
      const T* o = outs[u] + j * L;
      if (accumulate) {
        acc[u][j] = lanes == L ? V::load(o) : V::load_partial(o, static_cast<int>(lanes));
      } else {
        acc[u][j] = bias != nullptr ? V::load(bias + j * L) : V::zero();
      }
    }
  }
  const T* x[UR];
  for (int u = 0; u < UR; ++u) x[u] = xs[u];
  for (int64_t r = 0; r < g.R; ++r) {
    for (int64_t so = 0; so < g.S_outer; ++so) {
      const int64_t x_off = r * g.x_r + so * g.x_s;
      const T* wr = w + (r * g.S_outer + so) * g.w_rs;
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
  for (int j = 0; j < NB; ++j) {
    const int64_t lanes = std::min<int64_t>(L, g.K - k0 - j * L);
    for (int u = 0; u < UR; ++u) {
      T* o = outs[u] + j * L;
      if (lanes == L) {
        V::store(o, acc[u][j]);
      } else {
        V::store_partial(o, acc[u][j], static_cast<int>(lanes));
      }
    }
  }
}

template <typename T>
using DenseTileFn = void (*)(const T* const*, const T*, const T*, T* const*, int64_t,
                             const DenseGeometry&, bool);

// dense_tile<T, ur, nb> for every ur <= kTilePixels, nb <= kTileNB (tails).
template <typename T>
struct DenseTileTable {
  std::array<std::array<DenseTileFn<T>, kTileNB>, kTilePixels> fn;
  template <int UR, int NB>
  void fill() {
    fn[UR - 1][NB - 1] = &dense_tile<T, UR, NB>;
    if constexpr (NB > 1) fill<UR, NB - 1>();
    if constexpr (NB == kTileNB && UR > 1) fill<UR - 1, kTileNB>();
  }
  DenseTileTable() { fill<kTilePixels, kTileNB>(); }
  static const DenseTileTable& get() {
    static const DenseTileTable table;
    return table;
  }
};

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
      } else {  // NCHW source: transpose C x W, reading rows contiguously
        for (int64_t c = 0; c < C0; ++c) {
          const T* sr = s + c * sc;
          for (int64_t w = 0; w < W; ++w) d[w * C + c] = sr[w * sw];
        }
      }
    }
  });
  return out;
}

// Weights K x C x R x S (any strides) packed as [ceil(K/L)][R][S][C][L],
// zero beyond K. With flip_and_swap, packs the grad-input filter instead:
// w'[c][k][R-1-r][S-1-s] (then "K" = C of the forward and "C" = K).
template <typename T>
at::Tensor pack_weights(const at::Tensor& weight, bool flip_and_swap = false) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t K0 = weight.size(0), C0 = weight.size(1), R = weight.size(2), S = weight.size(3);
  const int64_t K = flip_and_swap ? C0 : K0, C = flip_and_swap ? K0 : C0;
  const int64_t Kb = (K + L - 1) / L;
  auto packed = at::zeros({Kb, R, S, C, L}, weight.options());
  const T* w = weight.const_data_ptr<T>();
  T* dst = packed.mutable_data_ptr<T>();
  const int64_t s0 = weight.stride(0), s1 = weight.stride(1), s2 = weight.stride(2),
                s3 = weight.stride(3);
  at::parallel_for(0, Kb, grain_for(R * S * C * L), [&](int64_t begin, int64_t end) {
    for (int64_t kb = begin; kb < end; ++kb) {
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t l = 0; l < L && kb * L + l < K; ++l) {
              const int64_t k = kb * L + l;
              const T v = flip_and_swap
                              ? w[c * s0 + k * s1 + (R - 1 - r) * s2 + (S - 1 - s) * s3]
                              : w[k * s0 + c * s1 + r * s2 + s * s3];
              dst[(((kb * R + r) * S + s) * C + c) * L + l] = v;
            }
    }
  });
  return packed;
}

// The dense direct convolution on prepared buffers:
//   x: padded NHWC [N][Hp][Wp][C], w: packed [Kb][R][S][C][L],
//   bias: padded to Kb*L or null, out: NHWC with pixel stride out_pixel,
//   row stride out_row, image stride out_image (strided outputs let
//   grad-input write one stride phase of its result).
struct DenseProblem {
  int64_t N, C, Hp, Wp, K, R, S, P, Q;
  int64_t stride_h, stride_w, dilation_h, dilation_w;
  int64_t out_image, out_row, out_pixel;
};

template <typename T>
void dense_forward(const T* x, const T* w, const T* bias, T* out, const DenseProblem& d) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t Kb = (d.K + L - 1) / L;
  const int64_t KG = (Kb + kTileNB - 1) / kTileNB;
  // Split C when one tile column of weights would not stay in L2.
  const int64_t col_bytes = d.R * d.S * d.C * kTileNB * L * static_cast<int64_t>(sizeof(T));
  const int64_t chunks = std::min<int64_t>(d.C, (col_bytes + kWeightBlockBytes - 1) / kWeightBlockBytes);
  const int64_t chunk_c = (d.C + chunks - 1) / chunks;
  const bool fused = d.dilation_w == 1 && chunks == 1;
  DenseGeometry g;
  g.x_r = d.dilation_h * d.Wp * d.C;
  g.x_s = d.dilation_w * d.C;
  g.w_kb = d.R * d.S * d.C * L;
  g.R = d.R;
  g.K = d.K;
  if (fused) {
    g.S_outer = 1;
    g.inner = d.S * d.C;
    g.w_rs = d.S * d.C * L;
  } else {
    g.S_outer = d.S;
    g.w_rs = d.C * L;
  }
  const auto& table = DenseTileTable<T>::get();
  // Work items: (channel group, block of output pixels), channel group major
  // so a thread's consecutive items reuse the same packed weights. Pixels are
  // numbered over all images and rows (m = (n * P + oh) * Q + ow).
  const int64_t M = d.N * d.P * d.Q;
  const int64_t block = kTilePixels * 16;
  const int64_t blocks = (M + block - 1) / block;
  at::parallel_for(0, KG * blocks, grain_for(block * d.R * d.S * d.C * kTileNB), [&](int64_t begin, int64_t end) {
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t c0 = chunk * chunk_c;
      const int64_t cc = std::min(chunk_c, d.C - c0);
      if (cc <= 0) break;
      DenseGeometry gc = g;
      if (!fused) gc.inner = cc;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t kg = item / blocks, m_begin = (item % blocks) * block;
        const int64_t m_end = std::min(M, m_begin + block);
        const int64_t kb0 = kg * kTileNB;
        const int nb = static_cast<int>(std::min<int64_t>(kTileNB, Kb - kb0));
        const T* wk = w + kb0 * g.w_kb + c0 * L;
        const T* b = bias != nullptr ? bias + kb0 * L : nullptr;
        // Position of pixel m_begin, then stepped pixel by pixel.
        int64_t ow = m_begin % d.Q, oh = (m_begin / d.Q) % d.P, n = m_begin / (d.Q * d.P);
        for (int64_t m = m_begin; m < m_end;) {
          const int ur = static_cast<int>(std::min<int64_t>(kTilePixels, m_end - m));
          const T* xs[kTilePixels];
          T* outs[kTilePixels];
          for (int u = 0; u < ur; ++u) {
            xs[u] = x + ((n * d.Hp + oh * d.stride_h) * d.Wp + ow * d.stride_w) * d.C + c0;
            outs[u] = out + n * d.out_image + oh * d.out_row + ow * d.out_pixel + kb0 * L;
            if (++ow == d.Q) {
              ow = 0;
              if (++oh == d.P) oh = 0, ++n;
            }
          }
          table.fn[ur - 1][nb - 1](xs, wk, b, outs, kb0 * L, gc, chunk > 0);
          m += ur;
        }
      }
    }
  });
}

// dst[n][c][hw] = src[n][hw][c]: NHWC to NCHW, in cache-sized tiles.
template <typename T>
void nhwc_to_nchw(const T* src, T* dst, int64_t N, int64_t C, int64_t HW) {
  constexpr int64_t kTileHW = 64, kTileC = 16;
  const int64_t hw_tiles = (HW + kTileHW - 1) / kTileHW;
  at::parallel_for(0, N * hw_tiles, grain_for(kTileHW * C), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / hw_tiles, hw0 = (item % hw_tiles) * kTileHW;
      const int64_t hw1 = std::min(HW, hw0 + kTileHW);
      const T* s = src + n * HW * C;
      T* d = dst + n * C * HW;
      for (int64_t c0 = 0; c0 < C; c0 += kTileC) {
        const int64_t c1 = std::min(C, c0 + kTileC);
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t hw = hw0; hw < hw1; ++hw) d[c * HW + hw] = s[hw * C + c];
      }
    }
  });
}

// Pointwise (1x1, no padding) on NCHW data is a GEMM per image,
// Y[K][HW] = W[K][C] X[C][HW], with no layout change: vectors run along the
// pixels, weights are broadcast. Register tile: kPwK output channels x kPwV
// vectors of pixels.
inline constexpr int kPwK = 6;
inline constexpr int kPwV = simd::kVectorBytes == 64 ? 4 : 2;

// W[K][C] (any strides) packed as [ceil(K/kPwK)][C][kPwK], zero beyond K:
// the kPwK broadcasts of one c come from one cache line.
template <typename T>
at::Tensor pack_pointwise_weights(const at::Tensor& weight2d) {
  const int64_t K = weight2d.size(0), C = weight2d.size(1);
  const int64_t Kt = (K + kPwK - 1) / kPwK;
  auto packed = at::zeros({Kt, C, kPwK}, weight2d.options());
  auto acc = weight2d.accessor<T, 2>();
  T* dst = packed.mutable_data_ptr<T>();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) dst[((k / kPwK) * C + c) * kPwK + k % kPwK] = acc[k][c];
  return packed;
}

// One tile: UK output channels x UV vectors of pixels starting at x / out.
// x: X[0][hw0] with row stride x_row (>= hw0 + UV*L readable in every row);
// out: Y[k0][hw0] with row stride out_row; lanes: valid pixels (<= UV*L).
template <typename T, int UK, int UV>
void pointwise_tile(const T* x, int64_t x_row, const T* w, int64_t C, const T* bias, T* out,
                    int64_t out_row, int64_t lanes) {
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
      const typename V::type wb = V::broadcast(w[c * kPwK + i]);
      for (int v = 0; v < UV; ++v) acc[i][v] = simd::fmadd(wb, xv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < UK; ++i) {
    for (int v = 0; v < UV; ++v) {
      const int64_t n = std::min<int64_t>(L, lanes - v * L);
      if (n <= 0) break;
      if (n == L) {
        V::store(out + i * out_row + v * L, acc[i][v]);
      } else {
        V::store_partial(out + i * out_row + v * L, acc[i][v], static_cast<int>(n));
      }
    }
  }
}

template <typename T>
using PointwiseTileFn = void (*)(const T*, int64_t, const T*, int64_t, const T*, T*, int64_t, int64_t);

template <typename T>
struct PointwiseTileTable {
  std::array<std::array<PointwiseTileFn<T>, kPwV>, kPwK> fn;  // [UK - 1][UV - 1]
  template <int UK, int UV>
  void fill() {
    fn[UK - 1][UV - 1] = &pointwise_tile<T, UK, UV>;
    if constexpr (UV > 1) fill<UK, UV - 1>();
    if constexpr (UV == kPwV && UK > 1) fill<UK - 1, kPwV>();
  }
  PointwiseTileTable() { fill<kPwK, kPwV>(); }
  static const PointwiseTileTable& get() {
    static const PointwiseTileTable table;
    return table;
  }
};

// x: [N][C][x_row], w packed by
// pack_pointwise_weights, bias padded to a multiple of kPwK or null,
// out: [N][K][HW] contiguous.
template <typename T>
void pointwise_forward(const T* x, int64_t x_row, const T* w, const T* bias, T* out, int64_t N,
                       int64_t C, int64_t K, int64_t HW) {
  constexpr int L = simd::Vec<T>::size;
  constexpr int64_t tile_px = kPwV * L;
  // Pixel blocks whose C rows stay in L2 while all output channels sweep them.
  const int64_t block_px = std::max<int64_t>(
      tile_px, (256 * 1024 / static_cast<int64_t>(sizeof(T)) / std::max<int64_t>(C, 1)) / tile_px * tile_px);
  const int64_t hw_blocks = (HW + block_px - 1) / block_px;
  const int64_t Kt = (K + kPwK - 1) / kPwK;
  constexpr int64_t k_tiles_per_group = 8;
  const int64_t KG = (Kt + k_tiles_per_group - 1) / k_tiles_per_group;
  const auto& table = PointwiseTileTable<T>::get();
  at::parallel_for(0, N * hw_blocks * KG, grain_for(block_px * C * k_tiles_per_group), [&](int64_t begin, int64_t end) {
    // The block of X as [pixel tile][C][tile_px]: every tile then streams one
    // contiguous run instead of C rows a whole image apart (which costs a TLB
    // entry per row for large C).
    std::vector<T> packed(static_cast<size_t>(C * block_px));
    int64_t packed_block = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t kg = item % KG, hb = (item / KG) % hw_blocks, n = item / (KG * hw_blocks);
      const int64_t hw0 = hb * block_px, hw1 = std::min(HW, hw0 + block_px);
      const T* xn = x + n * C * x_row;
      if (packed_block != item / KG) {
        packed_block = item / KG;
        for (int64_t hw = hw0, t = 0; hw < hw1; hw += tile_px, ++t) {
          const int64_t count = std::min(tile_px, hw1 - hw);
          T* dst = packed.data() + t * C * tile_px;
          for (int64_t c = 0; c < C; ++c) {
            std::memcpy(dst + c * tile_px, xn + c * x_row + hw, sizeof(T) * count);
            std::fill(dst + c * tile_px + count, dst + (c + 1) * tile_px, T(0));
          }
        }
      }
      T* yn = out + n * K * HW;
      const int64_t kt_end = std::min(Kt, (kg + 1) * k_tiles_per_group);
      for (int64_t kt = kg * k_tiles_per_group; kt < kt_end; ++kt) {
        const int uk = static_cast<int>(std::min<int64_t>(kPwK, K - kt * kPwK));
        const T* wt = w + kt * C * kPwK;
        const T* bt = bias != nullptr ? bias + kt * kPwK : nullptr;
        for (int64_t hw = hw0, t = 0; hw < hw1; hw += tile_px, ++t) {
          const int64_t lanes = std::min<int64_t>(tile_px, hw1 - hw);
          const int uv = static_cast<int>((lanes + L - 1) / L);
          table.fn[uk - 1][uv - 1](packed.data() + t * C * tile_px, tile_px, wt, C, bt,
                                   yn + kt * kPwK * HW + hw, HW, lanes);
        }
      }
    }
  });
}

// Pointwise convolution of NCHW `input` [N][C][H][W] with matrix weight2d
// [K][C] (any strides), stride (sh, sw), output [N][K][P][Q] contiguous.
// The input is used as it is when contiguous with unit stride; otherwise
// through a compact (subsampled) [N][C][P][Q] copy.
template <typename T>
at::Tensor pointwise_nchw(const at::Tensor& input, const at::Tensor& weight2d,
                          const at::Tensor& bias, int64_t sh, int64_t sw, int64_t P, int64_t Q) {
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t K = weight2d.size(0), HW = P * Q;
  at::Tensor x;
  int64_t x_row = HW;
  if (sh == 1 && sw == 1 && input.is_contiguous()) {
    x = input;
  } else {
    x = at::empty({N, C, P, Q}, input.options());
    x.copy_(input.slice(2, 0, H, sh).slice(3, 0, W, sw));
  }
  const at::Tensor w = pack_pointwise_weights<T>(weight2d);
  at::Tensor b;
  if (bias.defined()) {
    b = at::zeros({(K + kPwK - 1) / kPwK * kPwK}, weight2d.options());
    b.narrow(0, 0, K).copy_(bias);
  }
  auto out = at::empty({N, K, P, Q}, input.options());
  pointwise_forward<T>(x.const_data_ptr<T>(), x_row, w.const_data_ptr<T>(),
                       b.defined() ? b.const_data_ptr<T>() : nullptr, out.mutable_data_ptr<T>(),
                       N, C, K, HW);
  return out;
}

// Depthwise: one (n, c) plane. buf: Hp rows x stride_w phases x row_len.
struct DepthwisePlane {
  int64_t H, W, P, Q, R, S, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t Hp, row_len;  // padded rows, elements per phase row
};

inline DepthwisePlane depthwise_plane(const Conv2dShape& p, int vector_size) {
  DepthwisePlane d{p.H, p.W, p.P, p.Q, p.R, p.S, p.stride_h, p.stride_w,
                   p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, 0, 0};
  // Rows and columns reached by any tap of any output (padding included).
  d.Hp = (p.P - 1) * p.stride_h + (p.R - 1) * p.dilation_h + 1;
  const int64_t Wp = (p.Q - 1) * p.stride_w + (p.S - 1) * p.dilation_w + 1;
  // Whole vectors may run past Q: room for one more vector per phase row.
  d.row_len = (Wp + p.stride_w - 1) / p.stride_w + vector_size;
  return d;
}

// Copies plane x (strides sh, sw) into buf as zero-padded, width-phase-split
// rows. Only input positions are written: the padding cells are zeroed once
// per buffer (zero_padding) and stay zero for every later plane.
template <typename T>
void fill_phase_split(const T* x, int64_t sh, int64_t sw, const DepthwisePlane& d, T* buf) {
  for (int64_t hp = 0; hp < d.Hp; ++hp) {
    const int64_t h = hp - d.pad_h;
    if (h < 0 || h >= d.H) continue;
    const T* src = x + h * sh;
    if (d.stride_w == 1) {
      T* dst = buf + hp * d.row_len + d.pad_w;
      const int64_t n = std::min(d.W, d.row_len - d.pad_w);
      if (sw == 1) {
        std::memcpy(dst, src, sizeof(T) * n);
      } else {
        for (int64_t w = 0; w < n; ++w) dst[w] = src[w * sw];
      }
      continue;
    }
    for (int64_t phase = 0; phase < d.stride_w; ++phase) {
      T* dst = buf + (hp * d.stride_w + phase) * d.row_len;
      // column j * stride_w + phase of the padded row is input column w:
      int64_t j = 0;
      int64_t w = phase - d.pad_w;
      if (w < 0) {
        j = (-w + d.stride_w - 1) / d.stride_w;
        w += j * d.stride_w;
      }
      for (; w < d.W && j < d.row_len; ++j, w += d.stride_w) dst[j] = src[w * sw];
    }
  }
}

// Element offset in the phase-split buffer of every tap (r, s), relative to
// the first tap of an output row.
inline std::vector<int64_t> depthwise_tap_offsets(const DepthwisePlane& d) {
  std::vector<int64_t> offsets(d.R * d.S);
  for (int64_t r = 0; r < d.R; ++r) {
    for (int64_t s = 0; s < d.S; ++s) {
      const int64_t col = s * d.dilation_w;
      offsets[r * d.S + s] =
          (r * d.dilation_h * d.stride_w + col % d.stride_w) * d.row_len + col / d.stride_w;
    }
  }
  return offsets;
}

// Output plane (row stride out_row, contiguous columns) from the phase-split
// buffer. tap_weight: R*S broadcast weights of this channel.
template <typename T>
void depthwise_plane_forward(const T* buf, const int64_t* tap_offset,
                             const typename simd::Vec<T>::type* tap_weight, T bias, T* out,
                             int64_t out_row, const DepthwisePlane& d) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  constexpr int UV = 4;  // independent vectors in flight (FMA latency)
  const int64_t taps = d.R * d.S;
  const typename V::type b = V::broadcast(bias);
  for (int64_t oh = 0; oh < d.P; ++oh) {
    const T* row = buf + oh * d.stride_h * d.stride_w * d.row_len;
    T* o = out + oh * out_row;
    int64_t q = 0;
    for (; q + UV * L <= d.Q; q += UV * L) {
      typename V::type acc[UV];
      for (int u = 0; u < UV; ++u) acc[u] = b;
      for (int64_t t = 0; t < taps; ++t) {
        const T* src = row + tap_offset[t] + q;
        for (int u = 0; u < UV; ++u) acc[u] = simd::fmadd(V::load(src + u * L), tap_weight[t], acc[u]);
      }
      for (int u = 0; u < UV; ++u) V::store(o + q + u * L, acc[u]);
    }
    for (; q < d.Q; q += L) {
      typename V::type acc = b;
      for (int64_t t = 0; t < taps; ++t) {
        acc = simd::fmadd(V::load(row + tap_offset[t] + q), tap_weight[t], acc);
      }
      const int64_t lanes = std::min<int64_t>(L, d.Q - q);
      if (lanes == L) {
        V::store(o + q, acc);
      } else {
        V::store_partial(o + q, acc, static_cast<int>(lanes));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Backward.
//
// grad-input of a dense convolution is a direct convolution of grad_output
// with the flipped, transposed filter. With stride > 1 the input positions
// split into stride_h x stride_w phases; the input positions of one phase
// receive contributions from a fixed subset of taps only, evenly spaced, so
// each phase is a dense forward problem (unit stride, its own dilation) on a
// padded NHWC copy of grad_output, writing every stride-th pixel of grad
// input. No multiply touches an inserted zero.

// Taps of one phase along one axis: input index i*stride + a receives tap
// `tap[m]` from output index i + offset[m]; taps ordered by increasing offset.
struct PhaseTaps {
  std::vector<int64_t> tap, offset;
  int64_t count = 0;      // input positions in this phase
  int64_t spacing = 1;    // offset difference between consecutive taps
};

inline PhaseTaps phase_taps(int64_t a, int64_t size, int64_t kernel, int64_t stride,
                            int64_t pad, int64_t dilation) {
  PhaseTaps t;
  t.count = a < size ? (size - a + stride - 1) / stride : 0;
  for (int64_t r = kernel - 1; r >= 0; --r) {  // decreasing r = increasing offset
    const int64_t num = a + pad - r * dilation;
    if (((num % stride) + stride) % stride != 0) continue;
    t.tap.push_back(r);
    // exact division (num is a multiple of stride; it may be negative)
    t.offset.push_back(num / stride);
  }
  if (t.tap.size() > 1) t.spacing = t.offset[1] - t.offset[0];
  return t;
}

// Packs w'[c][k][taps] (K x C x R x S weights, any strides) for the phase
// problem: forward "K" = C, forward "C" = K, taps (rt[m], st[m']).
template <typename T>
at::Tensor pack_phase_weights(const at::Tensor& weight, const std::vector<int64_t>& rt,
                              const std::vector<int64_t>& st) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t K = weight.size(0), C = weight.size(1);
  const int64_t R = static_cast<int64_t>(rt.size()), S = static_cast<int64_t>(st.size());
  const int64_t Cb = (C + L - 1) / L;
  auto packed = at::zeros({Cb, R, S, K, L}, weight.options());
  const T* w = weight.const_data_ptr<T>();
  T* dst = packed.mutable_data_ptr<T>();
  const int64_t s0 = weight.stride(0), s1 = weight.stride(1), s2 = weight.stride(2),
                s3 = weight.stride(3);
  at::parallel_for(0, Cb, grain_for(R * S * K * L), [&](int64_t begin, int64_t end) {
    for (int64_t cb = begin; cb < end; ++cb)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t k = 0; k < K; ++k)
            for (int64_t l = 0; l < L && cb * L + l < C; ++l)
              dst[(((cb * R + r) * S + s) * K + k) * L + l] =
                  w[k * s0 + (cb * L + l) * s1 + rt[r] * s2 + st[s] * s3];
  });
  return packed;
}

// Dense grad-input into an NHWC buffer gx [N][H][W][C] (zeroed by the caller
// when some phase has no taps).
template <typename T>
void dense_backward_input(const at::Tensor& grad_output, const at::Tensor& weight, T* gx,
                          const Conv2dShape& p) {
  std::vector<PhaseTaps> rows(p.stride_h), cols(p.stride_w);
  int64_t top = 0, bottom = 0, left = 0, right = 0;
  for (int64_t a = 0; a < p.stride_h; ++a) {
    rows[a] = phase_taps(a, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h);
    if (rows[a].tap.empty() || rows[a].count == 0) continue;
    top = std::max(top, -rows[a].offset.front());
    bottom = std::max(bottom, rows[a].count - 1 + rows[a].offset.back() - (p.P - 1));
  }
  for (int64_t a = 0; a < p.stride_w; ++a) {
    cols[a] = phase_taps(a, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w);
    if (cols[a].tap.empty() || cols[a].count == 0) continue;
    left = std::max(left, -cols[a].offset.front());
    right = std::max(right, cols[a].count - 1 + cols[a].offset.back() - (p.Q - 1));
  }
  // Padded NHWC grad_output; asymmetric padding through a symmetric copy of
  // the larger side (a few zero rows more, no branch in the kernel).
  const int64_t pad_h = std::max(top, bottom), pad_w = std::max(left, right);
  const at::Tensor gy = padded_nhwc<T>(grad_output, pad_h, pad_w);
  const int64_t Hp = p.P + 2 * pad_h, Wp = p.Q + 2 * pad_w;
  for (int64_t ah = 0; ah < p.stride_h; ++ah) {
    for (int64_t aw = 0; aw < p.stride_w; ++aw) {
      const PhaseTaps& rt = rows[ah];
      const PhaseTaps& ct = cols[aw];
      if (rt.tap.empty() || ct.tap.empty() || rt.count == 0 || ct.count == 0) continue;
      const at::Tensor w = pack_phase_weights<T>(weight, rt.tap, ct.tap);
      const int64_t x_offset = ((pad_h + rt.offset.front()) * Wp + pad_w + ct.offset.front()) * p.K;
      const DenseProblem d{p.N, p.K, Hp, Wp, p.C,
                           static_cast<int64_t>(rt.tap.size()), static_cast<int64_t>(ct.tap.size()),
                           rt.count, ct.count, 1, 1, rt.spacing, ct.spacing,
                           p.H * p.W * p.C, p.stride_h * p.W * p.C, p.stride_w * p.C};
      dense_forward<T>(gy.const_data_ptr<T>() + x_offset, w.const_data_ptr<T>(), nullptr,
                       gx + (ah * p.W + aw) * p.C, d);
    }
  }
}

inline bool backward_input_has_empty_phase(const Conv2dShape& p) {
  for (int64_t a = 0; a < p.stride_h; ++a) {
    if (phase_taps(a, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h).tap.empty()) return true;
  }
  for (int64_t a = 0; a < p.stride_w; ++a) {
    if (phase_taps(a, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w).tap.empty()) return true;
  }
  return false;
}

// grad-weight of a dense convolution: gw[k][c][r][s] = sum over (n, oh, ow)
// of gy[n][oh][ow][k] * x[n][oh*sh + r*dh][ow*sw + s*dw][c] on NHWC copies.
// Each thread owns a set of register tiles (NB vectors of k x UC values of
// the (s, c) index, one r) of the result and sums all pixels into them in
// one fixed order: results identical run to run and for any thread count,
// without partial buffers or atomics. Pixels go in chunks of output rows so
// a chunk of gy and x stays in cache while the thread's tiles sweep it.
inline constexpr int kWgradUC = simd::kVectorBytes == 64 ? 6 : 6;

template <typename T, int UC, int NB>
void weight_grad_tile(const T* x, const T* gy, int64_t rows, int64_t Q, int64_t x_row,
                      int64_t x_pixel, int64_t gy_row, int64_t gy_pixel, T* gw, int64_t gw_kb,
                      bool accumulate) {
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
using WeightGradTileFn = void (*)(const T*, const T*, int64_t, int64_t, int64_t, int64_t,
                                  int64_t, int64_t, T*, int64_t, bool);

template <typename T>
struct WeightGradTileTable {
  std::array<std::array<WeightGradTileFn<T>, kTileNB>, kWgradUC> fn;  // [UC - 1][NB - 1]
  template <int UC, int NB>
  void fill() {
    fn[UC - 1][NB - 1] = &weight_grad_tile<T, UC, NB>;
    if constexpr (NB > 1) fill<UC, NB - 1>();
    if constexpr (NB == kTileNB && UC > 1) fill<UC - 1, kTileNB>();
  }
  WeightGradTileTable() { fill<kWgradUC, kTileNB>(); }
  static const WeightGradTileTable& get() {
    static const WeightGradTileTable table;
    return table;
  }
};

// x: padded NHWC [N][Hp][Wp][C]; gy: NHWC [N][P][Q][Kp] with Kp = Kb * L
// (zero channels past K); gw: [Kb][R][S][C][L] (the packed-weight layout).
template <typename T>
void dense_backward_weight(const T* x, const T* gy, T* gw, const Conv2dShape& p, int64_t Hp,
                           int64_t Wp) {
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
  const auto& table = WeightGradTileTable<T>::get();
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
          table.fn[uc - 1][nb - 1](xp, gp, rows, p.Q, p.stride_h * Wp * p.C, p.stride_w * p.C,
                                   p.Q * Kp, Kp, g, gw_kb, row > 0);
          row += rows;
        }
      }
    }
  });
}

// Depthwise grad-input of one plane: every tap adds w * gy[oh][ow..] into a
// zeroed, padded, phase-split buffer (contiguous vectors for any stride),
// then the input positions are read back out of it.
template <typename T>
void depthwise_plane_backward_input(const T* gy, int64_t gy_row, const int64_t* tap_offset,
                                    const typename simd::Vec<T>::type* tap_weight, T* buf,
                                    T* gx, int64_t gx_row, const DepthwisePlane& d) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  std::fill(buf, buf + d.Hp * d.stride_w * d.row_len, T(0));
  const int64_t taps = d.R * d.S;
  for (int64_t oh = 0; oh < d.P; ++oh) {
    T* row = buf + oh * d.stride_h * d.stride_w * d.row_len;
    const T* g = gy + oh * gy_row;
    for (int64_t q = 0; q < d.Q; q += L) {
      const int64_t lanes = std::min<int64_t>(L, d.Q - q);
      const typename V::type gv =
          lanes == L ? V::load(g + q) : V::load_partial(g + q, static_cast<int>(lanes));
      for (int64_t t = 0; t < taps; ++t) {
        T* dst = row + tap_offset[t] + q;
        V::store(dst, simd::fmadd(gv, tap_weight[t], V::load(dst)));
      }
    }
  }
  // Read back: input (h, w) is padded (h + pad_h, w + pad_w).
  for (int64_t h = 0; h < d.H; ++h) {
    const int64_t hp = h + d.pad_h;
    T* out = gx + h * gx_row;
    if (hp >= d.Hp) {
      std::fill(out, out + d.W, T(0));
      continue;
    }
    for (int64_t w = 0; w < d.W; ++w) {
      const int64_t col = w + d.pad_w;
      const int64_t j = col / d.stride_w;
      out[w] = j < d.row_len ? buf[(hp * d.stride_w + col % d.stride_w) * d.row_len + j] : T(0);
    }
  }
}

// Depthwise grad-weight of one plane pair, added to acc[taps] (vectors; the
// caller reduces lanes at the end): acc[t] += gy[oh][ow..] * x(tap t).
template <typename T>
void depthwise_plane_backward_weight(const T* buf, const T* gy, int64_t gy_row,
                                     const int64_t* tap_offset, typename simd::Vec<T>::type* acc,
                                     const DepthwisePlane& d) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  const int64_t taps = d.R * d.S;
  for (int64_t oh = 0; oh < d.P; ++oh) {
    const T* row = buf + oh * d.stride_h * d.stride_w * d.row_len;
    const T* g = gy + oh * gy_row;
    for (int64_t q = 0; q < d.Q; q += L) {
      const int64_t lanes = std::min<int64_t>(L, d.Q - q);
      const typename V::type gv =
          lanes == L ? V::load(g + q) : V::load_partial(g + q, static_cast<int>(lanes));
      for (int64_t t = 0; t < taps; ++t) {
        acc[t] = simd::fmadd(gv, V::load(row + tap_offset[t] + q), acc[t]);
      }
    }
  }
}

}  // namespace cpu
}  // namespace conv_ext
