// The layout copies of the dense paths: NCHW (any strides) into a zero-padded
// NHWC buffer, NHWC back to NCHW, and the L x L in-register transpose they
// are made of. Compiled per ISA (namespace CONV_EXT_ISA, conv2d_cpu_isa.h):
// in the shared conv2d_cpu_common.h they compiled for the baseline (SSE2)
// only, and took 10-20% of a 56x56 layer's time.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "conv2d_cpu_common.h"
#include "conv2d_epilogue_cpu.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// v[i][j] <- v[j][i] for L = Vec<T>::size vectors of L lanes.
// float with AVX-512 (16 x 16) and AVX (8 x 8): the classic unpack / shuffle
// sequence, L * log2(L) one-cycle shuffles; anything else: log2(L) rounds
// of two-vector shuffles swapping off-diagonal blocks (GCC picks the
// instructions for each __builtin_shuffle). Always inlined, every index a
// constant: not inlined, the rounds loaded and stored v through memory
// (13% of a 7x7 depthwise layer's time).
template <int L, int B, typename E>
constexpr std::array<E, L> transpose_swap_mask(bool second) {
  std::array<E, L> m{};
  for (int l = 0; l < L; ++l) {
    const int other = second ? l : l ^ B;  // lane of the second row (l & B set)
    m[l] = static_cast<E>((l & B) ? L + other : (second ? l ^ B : l));
  }
  return m;
}

template <typename T, int B>
[[gnu::always_inline]] inline void transpose_swap_round(typename simd::Vec<T>::type* v) {
  using IV = simd::IndexVec<T>;
  constexpr int L = simd::Vec<T>::size;
  // Rows i and i | B (bit B of i clear) swap their off-diagonal B x B blocks.
  static constexpr auto kFirst = transpose_swap_mask<L, B, typename IV::element>(false);
  static constexpr auto kSecond = transpose_swap_mask<L, B, typename IV::element>(true);
  typename IV::type first, second;
  std::memcpy(&first, kFirst.data(), sizeof first);
  std::memcpy(&second, kSecond.data(), sizeof second);
#pragma GCC unroll 64
  for (int i = 0; i < L; ++i) {
    if (i & B) continue;
    const typename simd::Vec<T>::type a = v[i], c = v[i | B];
    v[i] = __builtin_shuffle(a, c, first);
    v[i | B] = __builtin_shuffle(a, c, second);
  }
  if constexpr (B > 1) transpose_swap_round<T, B / 2>(v);
}

template <typename T>
[[gnu::always_inline]] inline void transpose_square(typename simd::Vec<T>::type* v) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    // 1: pairs of rows interleaved per 128-bit chunk; 2: 4 x 4 transposes
    // within each chunk (u[4k + j], chunk q: rows 4k..4k+3 at column 4q + j);
    // 3, 4: chunks gathered across the four row groups.
    __m512 t[16], u[16];
#pragma GCC unroll 16
    for (int k = 0; k < 16; k += 2) {
      t[k] = _mm512_unpacklo_ps(v[k], v[k + 1]);
      t[k + 1] = _mm512_unpackhi_ps(v[k], v[k + 1]);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 16; k += 4) {
      const __m512d a = _mm512_castps_pd(t[k]), b = _mm512_castps_pd(t[k + 1]),
                    c = _mm512_castps_pd(t[k + 2]), d = _mm512_castps_pd(t[k + 3]);
      u[k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
      u[k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
      u[k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
      u[k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512 s0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);
      const __m512 s1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
      const __m512 s2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
      const __m512 s3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
      v[j] = _mm512_shuffle_f32x4(s0, s2, 0x88);
      v[4 + j] = _mm512_shuffle_f32x4(s0, s2, 0xDD);
      v[8 + j] = _mm512_shuffle_f32x4(s1, s3, 0x88);
      v[12 + j] = _mm512_shuffle_f32x4(s1, s3, 0xDD);
    }
    return;
  }
#elif defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    __m256 t[8], u[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k += 2) {
      t[k] = _mm256_unpacklo_ps(v[k], v[k + 1]);
      t[k + 1] = _mm256_unpackhi_ps(v[k], v[k + 1]);
    }
#pragma GCC unroll 2
    for (int k = 0; k < 8; k += 4) {  // u[k + j]: rows k..k+3 at columns j, 4 + j
      u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
      u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
      u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
      u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
      v[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
    return;
  }
#endif
  transpose_swap_round<T, simd::Vec<T>::size / 2>(v);
}

// Every copy below reads elements of Src and writes elements of Dst through
// vectors of the compute type T (simd::Stored): for bfloat16/float16
// tensors the copy that changes the layout also widens to float (inputs) or
// rounds to the tensor's dtype (results), so no separate conversion pass.

// The transposes' default: the values are stored as they are. An epilogue
// (ColumnEpilogue, conv2d_epilogue_cpu.h) maps each transposed vector, column
// j of the source (j counted from the transpose_plane's first column), on its
// way to d + j * d_row; Dst is then T.
struct NoEpilogue {
  template <typename V, typename D>
  V operator()(V v, int64_t, const D*, int) const { return v; }
  template <typename E, typename D>
  E scalar(E v, int64_t, const D*) const { return v; }
};

// d[j * d_row + i] = s[i * s_row + j] for i, j < L: one whole block through registers.
template <typename T, typename Src = T, typename Dst = T, typename Ep = NoEpilogue>
inline void transpose_block(const Src* s, int64_t s_row, Dst* d, int64_t d_row,
                            const Ep& ep = Ep{}, int64_t col0 = 0) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type v[L];
  for (int i = 0; i < L; ++i) v[i] = simd::Stored<T, Src>::load(s + i * s_row);
  transpose_square<T>(v);
  for (int j = 0; j < L; ++j) {
    simd::Stored<T, Dst>::store(d + j * d_row, ep(v[j], col0 + j, d + j * d_row, L));
  }
}

// The same for i < rows, j < cols (both <= L): a block at the edge, masked.
template <typename T, typename Src = T, typename Dst = T, typename Ep = NoEpilogue>
__attribute__((noinline)) void transpose_edge_block(const Src* s, int64_t s_row, int rows,
                                                    int cols, Dst* d, int64_t d_row,
                                                    const Ep& ep = Ep{}, int64_t col0 = 0) {
  using V = simd::Vec<T>;
  using In = simd::Stored<T, Src>;
  using Out = simd::Stored<T, Dst>;
  constexpr int L = V::size;
  if constexpr (!simd::kMaskedAccess) {  // a partial load would be a memcpy call
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) {
        d[j * d_row + i] = Out::put(ep.scalar(In::get(s[i * s_row + j]), col0 + j, d + j * d_row + i));
      }
    return;
  }
  typename V::type v[L];
  for (int i = 0; i < L; ++i) {
    v[i] = i < rows ? simd::load_upto<T, Src>(s + i * s_row, cols) : V::zero();
  }
  transpose_square<T>(v);
  for (int j = 0; j < cols; ++j) {
    const typename V::type vj = ep(v[j], col0 + j, d + j * d_row, rows);
    simd::store_upto<T, Dst>(d + j * d_row, vj, rows);
  }
}

// d[j * d_row + i] = s[i * s_row + j] for i < rows, j < cols: a rows x cols
// matrix transposed in L x L blocks (ep: NoEpilogue above).
template <typename T, typename Src = T, typename Dst = T, typename Ep = NoEpilogue>
void transpose_plane(const Src* s, int64_t s_row, int64_t rows, int64_t cols, Dst* d,
                     int64_t d_row, const Ep& ep = Ep{}) {
  constexpr int L = simd::Vec<T>::size;
  const int64_t rows_full = rows / L * L, cols_full = cols / L * L;
  for (int64_t i0 = 0; i0 < rows; i0 += L) {
    const Src* si = s + i0 * s_row;
    Dst* di = d + i0;
    if (i0 < rows_full) {
      for (int64_t j0 = 0; j0 < cols_full; j0 += L)
        transpose_block<T, Src, Dst>(si + j0, s_row, di + j0 * d_row, d_row, ep, j0);
    }
    const int bi = static_cast<int>(std::min<int64_t>(L, rows - i0));
    for (int64_t j0 = i0 < rows_full ? cols_full : 0; j0 < cols; j0 += L) {
      const int bj = static_cast<int>(std::min<int64_t>(L, cols - j0));
      transpose_edge_block<T, Src, Dst>(si + j0, s_row, bi, bj, di + j0 * d_row, d_row, ep, j0);
    }
  }
}

// `options` with the dtype of T (the kernels' buffers).
template <typename T>
at::TensorOptions compute_options(const at::TensorOptions& options) {
  return options.dtype(c10::CppTypeToScalarType<T>::value);
}

// Zero-padded NHWC copy of `input` (any strides, elements S, T's dtype or
// one that T widens): [N][H + 2 pad_h][W + 2 pad_w][C] of T.
// With channels_to > C, channels C..channels_to-1 are zero.
template <typename T, typename S = T>
at::Tensor padded_nhwc(const at::Tensor& input, int64_t pad_h, int64_t pad_w,
                       int64_t channels_to = 0) {
  const int64_t N = input.size(0), C0 = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t C = std::max(C0, channels_to);
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w;
  at::Tensor out = at::empty({N, Hp, Wp, C}, compute_options<T>(input.options()));
  const S* src = input.const_data_ptr<S>();
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
      const S* s = src + n * sn + h * sh;
      T* d = row + pad_w * C;
      if (C > C0) {
        for (int64_t w = 0; w < W; ++w) std::fill(d + w * C + C0, d + (w + 1) * C, T(0));
      }
      if (sc == 1) {  // channels_last source: rows of C
        for (int64_t w = 0; w < W; ++w) simd::convert_copy<T>(s + w * sw, d + w * C, C0);
      } else if (sw == 1) {  // NCHW source: transpose C x W
        transpose_plane<T, S, T>(s, sc, C0, W, d, C);
      } else {
        for (int64_t c = 0; c < C0; ++c)
          for (int64_t w = 0; w < W; ++w)
            d[w * C + c] = simd::Stored<T, S>::get(s[c * sc + w * sw]);
      }
    }
  });
  return out;
}

// dst[n][c][hw] = src[n][hw][c]: NHWC to NCHW, in cache-sized tiles; with
// ep (D == T), conv2d_fused's epilogue on the way (ep->out == dst).
template <typename T, typename D = T>
void nhwc_to_nchw(const T* src, D* dst, int64_t N, int64_t C, int64_t HW,
                  const StoreEpilogue<T>* ep = nullptr) {
  constexpr int64_t kTileHW = 64;
  const int64_t hw_tiles = (HW + kTileHW - 1) / kTileHW;
  at::parallel_for(0, N * hw_tiles, grain_for(kTileHW * C), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / hw_tiles, hw0 = (item % hw_tiles) * kTileHW;
      const int64_t hw1 = std::min(HW, hw0 + kTileHW);
      if constexpr (std::is_same_v<T, D>) {
        if (ep != nullptr) {
          transpose_plane<T, T, D>(src + (n * HW + hw0) * C, C, hw1 - hw0, C,
                                   dst + n * C * HW + hw0, HW, ColumnEpilogue<T>{ep, 0});
          continue;
        }
      }
      transpose_plane<T, T, D>(src + (n * HW + hw0) * C, C, hw1 - hw0, C,
                               dst + n * C * HW + hw0, HW);
    }
  });
}

// dst[i] = src[i] for i < n, rounded to D (one parallel pass).
template <typename T, typename D>
void convert_buffer(const T* src, D* dst, int64_t n) {
  constexpr int64_t kChunk = 16384;
  at::parallel_for(0, (n + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t a = i * kChunk;
      simd::convert_copy<T>(src + a, dst + a, std::min(kChunk, n - a));
    }
  });
}

// An NHWC result of T (channels_last tensor `nhwc`) as a tensor of D in
// `format`: as it is for channels_last when D is T, else a copy (NCHW:
// transposed; D narrower than T: rounded in the same pass).
template <typename T, typename D = T>
at::Tensor nhwc_in_format(const at::Tensor& nhwc, at::MemoryFormat format) {
  if (format == at::MemoryFormat::ChannelsLast && std::is_same_v<T, D>) return nhwc;
  at::Tensor out = at::empty(nhwc.sizes(), nhwc.options()
                                         .dtype(c10::CppTypeToScalarType<D>::value)
                                         .memory_format(format));
  if (format == at::MemoryFormat::ChannelsLast) {
    convert_buffer<T, D>(nhwc.const_data_ptr<T>(), out.mutable_data_ptr<D>(), nhwc.numel());
    return out;
  }
  nhwc_to_nchw<T, D>(nhwc.const_data_ptr<T>(), out.mutable_data_ptr<D>(), nhwc.size(0),
                     nhwc.size(1), nhwc.size(2) * nhwc.size(3));
  return out;
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
