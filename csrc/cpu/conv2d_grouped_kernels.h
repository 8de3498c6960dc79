// Grouped (non-depthwise) convolution on the CPU, float and double:
// forward, grad-input and grad-weight as register-blocked direct kernels.
//
// Layout. A SIMD vector of L output lanes holds GB whole groups at once when
// a group has few output channels (GB = the largest power of two with
// GB * K_per_group <= L): lane j is output channel kk = j / GB of group
// b * GB + j % GB. The activations are copied once per call into a padded
// NHWC buffer whose channels are interleaved the same way, [block][cc][GB]:
// the GB input values one reduction step needs (channel cc of each of the
// GB groups) are adjacent, and one broadcast of that GB-element chunk to all
// L lanes (vbroadcastss/sd, vbroadcastf32x4, ...: a load, no shuffle) lines
// each group's lanes up with its own input. So ResNeXt's 4-channel groups
// fill all 16 AVX-512 lanes, with no multiply by a zero weight. Groups with
// K_per_group >= L use GB = 1: per group, the dense kernel's tile of
// UR pixels x NB vectors of output channels.
//
// Every output element is reduced by one thread in a fixed order, tiles are
// per pixel, so results are identical across thread counts and batch splits.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../conv2d_params.h"
#include "conv2d_backward_input_kernels.h"
#include "conv2d_cpu_common.h"
#include "conv2d_layout_kernels.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h
namespace grouped {

template <typename T>
inline constexpr int kLanes = simd::Vec<T>::size;
// Vectors of output channels per tile (GB == 1 only) and pixels per tile.
inline constexpr int kMaxNB = simd::kVectorBytes == 64 ? 4 : 2;
constexpr int tile_pixels(int nb) {
  return nb == 1 ? 12 : (simd::kVectorBytes == 64 && nb == 2 ? 12 : 6);
}

// A GB-element chunk at p repeated over the whole vector.
template <typename T, int GB>
inline typename simd::Vec<T>::type broadcast_chunk(const T* p) {
  using V = simd::Vec<T>;
  if constexpr (GB == 1) {
    return V::broadcast(*p);
  } else if constexpr (GB * sizeof(T) == simd::kVectorBytes) {
    return V::load(p);
  } else {
#if defined(__AVX512F__)
    if constexpr (GB * sizeof(T) == 8) {
      int64_t bits;
      std::memcpy(&bits, p, 8);
      return reinterpret_cast<typename V::type>(_mm512_set1_epi64(bits));
    } else if constexpr (GB * sizeof(T) == 16) {
      return reinterpret_cast<typename V::type>(
          _mm512_broadcast_f32x4(_mm_loadu_ps(reinterpret_cast<const float*>(p))));
    } else {
      return reinterpret_cast<typename V::type>(
          _mm512_broadcast_f64x4(_mm256_loadu_pd(reinterpret_cast<const double*>(p))));
    }
#elif defined(__AVX__)
    if constexpr (GB * sizeof(T) == 8) {
      double bits;
      std::memcpy(&bits, p, 8);
      return reinterpret_cast<typename V::type>(_mm256_set1_pd(bits));
    } else {
      return reinterpret_cast<typename V::type>(
          _mm256_broadcast_ps(reinterpret_cast<const __m128*>(p)));
    }
#else
    typename V::type v;
    for (int i = 0; i < V::size; ++i) v[i] = p[i % GB];
    return v;
#endif
  }
}

// How the channels of one grouped problem map onto vectors.
struct Layout {
  int64_t groups = 1;
  int64_t in_per_group = 0;   // reduction channels per group
  int64_t out_per_group = 0;  // output channels per group
  int GB = 1;                 // groups per vector
  int64_t blocks = 0;         // ceil(groups / GB)
  int64_t vecs = 0;           // output vectors per block
  int64_t x_channels = 0;     // channels per pixel of the interleaved input
  int64_t out_channels = 0;   // channels per pixel of the interleaved output
};

template <typename T>
Layout make_layout(int64_t groups, int64_t in_per_group, int64_t out_per_group) {
  constexpr int L = kLanes<T>;
  Layout l;
  l.groups = groups;
  l.in_per_group = in_per_group;
  l.out_per_group = out_per_group;
  while (2 * l.GB * out_per_group <= L && l.GB < groups) l.GB *= 2;
  l.blocks = (groups + l.GB - 1) / l.GB;
  l.vecs = (out_per_group * l.GB + L - 1) / L;
  l.x_channels = l.blocks * in_per_group * l.GB;
  l.out_channels = l.blocks * l.vecs * L;
  return l;
}

// Position in an interleaved pixel of channel c (group-major numbering, per
// per_group channels a group), blocks block_stride apart.
inline int64_t interleaved_channel(int64_t c, int64_t per_group, int GB, int64_t block_stride) {
  const int64_t grp = c / per_group, i = c % per_group;
  return (grp / GB) * block_stride + i * GB + grp % GB;
}

// For each of `positions` interleaved channels (rounded up to whole
// vectors), the source channel stored there, or -1 (a zero channel).
inline std::vector<int64_t> interleaved_sources(int64_t C, int64_t per_group, int GB,
                                                int64_t block_stride, int64_t positions,
                                                int lanes) {
  std::vector<int64_t> src((positions + lanes - 1) / lanes * lanes, -1);
  for (int64_t c = 0; c < C; ++c) src[interleaved_channel(c, per_group, GB, block_stride)] = c;
  return src;
}

// d[j * d_row + i] = rows[i][j] for i < n_out, j < cols (both <= L): an
// L x L transpose whose source rows come from a list of pointers (null: a
// zero row), so a channel permutation costs nothing extra. Rows of S
// (T, or bfloat16/float16 widened to T).
template <typename T, typename S>
inline void transpose_listed_rows(const S* const* rows, int cols, T* d, int64_t d_row,
                                  int n_out) {
  using V = simd::Vec<T>;
  using In = simd::Stored<T, S>;
  constexpr int L = V::size;
  typename V::type v[L];
  for (int i = 0; i < L; ++i) {
    v[i] = rows[i] == nullptr ? V::zero()
           : cols == L        ? In::load(rows[i])
                              : In::load_partial(rows[i], cols);
  }
  transpose_square<T>(v);
  for (int j = 0; j < cols; ++j) {
    if (n_out == L) {
      V::store(d + j * d_row, v[j]);
    } else {
      V::store_partial(d + j * d_row, v[j], n_out);
    }
  }
}

// Zero-padded NHWC copy of src (N x C x H x W, any strides) with channels
// interleaved: [N][H + 2 pad_h][W + 2 pad_w][channels], channel c at
// interleaved_channel(c, per_group, GB, block_stride); the rest zero.
// src of S, the copy of T (bfloat16/float16 widened to float here).
template <typename T, typename S = T>
at::Tensor interleaved_padded(const at::Tensor& src, int64_t pad_h, int64_t pad_w,
                              int64_t per_group, int GB, int64_t block_stride,
                              int64_t channels) {
  constexpr int L = kLanes<T>;
  const int64_t N = src.size(0), C = src.size(1), H = src.size(2), W = src.size(3);
  // One group per block with no gaps: the interleaving is the identity.
  if (GB == 1 && block_stride == per_group && channels == C) {
    return padded_nhwc<T, S>(src, pad_h, pad_w);
  }
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w;
  at::Tensor out = at::empty({N, Hp, Wp, channels}, compute_options<T>(src.options()));
  std::vector<int64_t> pos(C);
  for (int64_t c = 0; c < C; ++c) pos[c] = interleaved_channel(c, per_group, GB, block_stride);
  const std::vector<int64_t> source =
      interleaved_sources(C, per_group, GB, block_stride, channels, L);
  const S* s = src.const_data_ptr<S>();
  T* d = out.mutable_data_ptr<T>();
  const int64_t sn = src.stride(0), sc = src.stride(1), sh = src.stride(2), sw = src.stride(3);
  at::parallel_for(0, N * Hp, grain_for(Wp * channels), [&](int64_t begin, int64_t end) {
    for (int64_t nh = begin; nh < end; ++nh) {
      const int64_t n = nh / Hp, h = nh % Hp - pad_h;
      T* row = d + nh * Wp * channels;
      if (h < 0 || h >= H) {
        std::fill(row, row + Wp * channels, T(0));
        continue;
      }
      std::fill(row, row + pad_w * channels, T(0));
      std::fill(row + (pad_w + W) * channels, row + Wp * channels, T(0));
      const S* sr = s + n * sn + h * sh;
      T* dr = row + pad_w * channels;
      if (sw == 1 && sc != 1) {
        // NCHW rows: L pixels x L interleaved channels per register
        // transpose, source rows listed in interleaved order (gaps zero).
        for (int64_t w0 = 0; w0 < W; w0 += L) {
          const int cols = static_cast<int>(std::min<int64_t>(L, W - w0));
          for (int64_t d0 = 0; d0 < channels; d0 += L) {
            const S* rows[L];
            for (int i = 0; i < L; ++i) {
              const int64_t c = source[d0 + i];
              rows[i] = c < 0 ? nullptr : sr + c * sc + w0;
            }
            transpose_listed_rows<T, S>(rows, cols, dr + w0 * channels + d0, channels,
                                     static_cast<int>(std::min<int64_t>(L, channels - d0)));
          }
        }
        continue;
      }
      if (C < channels) std::fill(dr, dr + W * channels, T(0));  // groups past the last
      if (sc == 1) {
        for (int64_t w = 0; w < W; ++w)
          for (int64_t c = 0; c < C; ++c)
            dr[w * channels + pos[c]] = simd::Stored<T, S>::get(sr[w * sw + c]);
      } else {
        // Transpose in strips of 16 pixels: the strip's destination lines
        // stay in L1 while every channel row is read one line at a time.
        for (int64_t w0 = 0; w0 < W; w0 += 16) {
          const int64_t w1 = std::min(W, w0 + 16);
          for (int64_t c = 0; c < C; ++c) {
            const S* sc_row = sr + c * sc;
            T* dc = dr + pos[c];
            for (int64_t w = w0; w < w1; ++w) dc[w * channels] = simd::Stored<T, S>::get(sc_row[w * sw]);
          }
        }
      }
    }
  });
  return out;
}

// Weights packed as [blocks][vecs][taps R' x S' x in_per_group][L]; lane
// j = v * L + l of block b is output kk = j / GB of group b * GB + j % GB.
// weight(grp, out, in, r, s) reads the filter; rt/st list the taps used.
template <typename T, typename WeightAt>
at::Tensor pack_weights(const Layout& l, int64_t R, int64_t S, WeightAt weight_at,
                        const at::TensorOptions& options) {
  constexpr int L = kLanes<T>;
  const int64_t taps = R * S * l.in_per_group;
  at::Tensor packed = at::zeros({l.blocks, l.vecs, taps, L}, compute_options<T>(options));
  T* dst = packed.mutable_data_ptr<T>();
  at::parallel_for(0, l.blocks * l.vecs, grain_for(taps * L), [&](int64_t begin, int64_t end) {
    for (int64_t bv = begin; bv < end; ++bv) {
      const int64_t b = bv / l.vecs, v = bv % l.vecs;
      for (int l_ = 0; l_ < L; ++l_) {
        const int64_t j = v * L + l_, kk = j / l.GB, grp = b * l.GB + j % l.GB;
        if (kk >= l.out_per_group || grp >= l.groups) continue;
        for (int64_t r = 0; r < R; ++r)
          for (int64_t s = 0; s < S; ++s)
            for (int64_t i = 0; i < l.in_per_group; ++i)
              dst[(bv * taps + (r * S + s) * l.in_per_group + i) * L + l_] =
                  weight_at(grp, kk, i, r, s);
      }
    }
  });
  return packed;
}

// One forward problem on the interleaved buffers (unit or any stride).
struct Problem {
  int64_t N, Hp, Wp, P, Q, R, S;
  int64_t stride_h, stride_w, dilation_h, dilation_w;
  int64_t out_image, out_row, out_pixel;  // strides of the interleaved output
};

// UR output pixels x NB vectors; xs[u]: pixel u's input at tap (0, 0) of its
// block; off[i]: offset of reduction step i (tap and channel); w: packed
// weights of the first vector (vectors w_vec apart); outs[u]: output.
template <typename T, int GB, int UR, int NB>
void forward_tile(const T* const* xs, const int64_t* off, int64_t steps, const T* w,
                  int64_t w_vec, const T* bias, T* const* outs) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type acc[UR][NB];
  for (int j = 0; j < NB; ++j) {
    const typename V::type b0 = bias != nullptr ? V::load(bias + j * L) : V::zero();
    for (int u = 0; u < UR; ++u) acc[u][j] = b0;
  }
  const T* x[UR];
  for (int u = 0; u < UR; ++u) {
    // One scalar load each: a vector copy of the caller's just-stored
    // pointers would stall on store forwarding at every tile.
    const T* p = xs[u];
    asm("" : "+r"(p));
    x[u] = p;
  }
  for (int64_t i = 0; i < steps; ++i) {
    typename V::type wv[NB];
    for (int j = 0; j < NB; ++j) wv[j] = V::load(w + j * w_vec + i * L);
    const int64_t o = off[i];
    for (int u = 0; u < UR; ++u) {
      const typename V::type xb = broadcast_chunk<T, GB>(x[u] + o);
      for (int j = 0; j < NB; ++j) acc[u][j] = simd::fmadd(xb, wv[j], acc[u][j]);
    }
  }
  for (int u = 0; u < UR; ++u)
    for (int j = 0; j < NB; ++j) V::store(outs[u] + j * L, acc[u][j]);
}

template <typename T>
using ForwardTileFn = void (*)(const T* const*, const int64_t*, int64_t, const T*, int64_t,
                               const T*, T* const*);

template <typename T, int NB>
ForwardTileFn<T> forward_tile_for_gb(int GB) {
  constexpr int UR = tile_pixels(NB);
  if constexpr (NB > 1) {
    return &forward_tile<T, 1, UR, NB>;  // several vectors only when GB == 1
  } else {
    switch (GB) {
      case 1: return &forward_tile<T, 1, UR, 1>;
      case 2: return &forward_tile<T, 2, UR, 1>;
      case 4: return &forward_tile<T, 4, UR, 1>;
      case 8: return &forward_tile<T, 8, UR, 1>;
      default:
        if constexpr (kLanes<T> >= 16) return &forward_tile<T, 16, UR, 1>;
        return nullptr;
    }
  }
}

template <typename T>
ForwardTileFn<T> forward_tile_fn(int GB, int nb) {
  switch (nb) {
    case 1: return forward_tile_for_gb<T, 1>(GB);
    case 2: return forward_tile_for_gb<T, 2>(GB);
    case 3: if constexpr (kMaxNB >= 3) return forward_tile_for_gb<T, 3>(GB); return nullptr;
    default: if constexpr (kMaxNB >= 4) return forward_tile_for_gb<T, 4>(GB); return nullptr;
  }
}

inline int ur_for(int nb) {
  switch (nb) {
    case 1: return tile_pixels(1);
    case 2: return tile_pixels(2);
    case 3: return tile_pixels(3);
    default: return tile_pixels(4);
  }
}

// x: interleaved padded input (x_channels per pixel), w: packed weights,
// bias: [blocks][vecs * L] or null, out: interleaved output.
template <typename T>
void forward(const T* x, const T* w, const T* bias, T* out, const Layout& l, const Problem& d) {
  constexpr int L = kLanes<T>;
  const int64_t steps = d.R * d.S * l.in_per_group;
  std::vector<int64_t> off(steps);
  for (int64_t r = 0; r < d.R; ++r)
    for (int64_t s = 0; s < d.S; ++s)
      for (int64_t i = 0; i < l.in_per_group; ++i)
        off[(r * d.S + s) * l.in_per_group + i] =
            (r * d.dilation_h * d.Wp + s * d.dilation_w) * l.x_channels + i * l.GB;
  const int64_t vec_groups = (l.vecs + kMaxNB - 1) / kMaxNB;
  const int64_t M = d.N * d.P * d.Q;
  const int64_t block = 96;
  const int64_t pixel_blocks = (M + block - 1) / block;
  const int64_t w_vec = steps * L;
  at::parallel_for(0, l.blocks * vec_groups * pixel_blocks,
                   grain_for(block * steps * std::min<int64_t>(l.vecs, kMaxNB) * L),
                   [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bg = item / pixel_blocks;
      const int64_t b = bg / vec_groups, v0 = (bg % vec_groups) * kMaxNB;
      const int nb = static_cast<int>(std::min<int64_t>(kMaxNB, l.vecs - v0));
      const int ur = ur_for(nb);
      const ForwardTileFn<T> fn = forward_tile_fn<T>(l.GB, nb);
      const int64_t m_begin = (item % pixel_blocks) * block, m_end = std::min(M, m_begin + block);
      const T* wb = w + (b * l.vecs + v0) * w_vec;
      const T* bb = bias != nullptr ? bias + (b * l.vecs + v0) * L : nullptr;
      const T* xb = x + b * l.in_per_group * l.GB;
      T* ob = out + (b * l.vecs + v0) * L;
      int64_t ow = m_begin % d.Q, oh = (m_begin / d.Q) % d.P, n = m_begin / (d.Q * d.P);
      for (int64_t m = m_begin; m < m_end;) {
        const int count = static_cast<int>(std::min<int64_t>(ur, m_end - m));
        const T* xs[12];
        T* outs[12];
        for (int u = 0; u < count; ++u) {
          xs[u] = xb + ((n * d.Hp + oh * d.stride_h) * d.Wp + ow * d.stride_w) * l.x_channels;
          outs[u] = ob + n * d.out_image + oh * d.out_row + ow * d.out_pixel;
          if (++ow == d.Q) {
            ow = 0;
            if (++oh == d.P) oh = 0, ++n;
          }
        }
        // A short tile repeats its last pixel: same inputs, same value stored twice.
        for (int u = count; u < ur; ++u) xs[u] = xs[count - 1], outs[u] = outs[count - 1];
        fn(xs, off.data(), steps, wb, w_vec, bb, outs);
        m += count;
      }
    }
  });
}

// The interleaved result `src` ([N][H][W][out_channels]) as an N x C x H x W
// tensor of O (T, or bfloat16/float16: rounded here; `options` has O's
// dtype) in `format`; channel c at interleaved_channel(c, ...).
template <typename T, typename O = T>
at::Tensor deinterleave(const at::Tensor& src_buffer, const Layout& l, at::IntArrayRef sizes,
                        at::MemoryFormat format, const at::TensorOptions& options) {
  constexpr int L = kLanes<T>;
  using Out = simd::Stored<T, O>;
  const int64_t N = sizes[0], C = sizes[1], HW = sizes[2] * sizes[3];
  const int64_t Co = l.out_channels;
  // Whole vectors per group, one group per block: the buffer is NHWC already
  // (rounded in one pass for O narrower than T).
  if (format == at::MemoryFormat::ChannelsLast && l.GB == 1 && Co == C) {
    return nhwc_in_format<T, O>(src_buffer.permute({0, 3, 1, 2}), format);
  }
  const T* src = src_buffer.const_data_ptr<T>();
  auto out = at::empty(sizes, options.memory_format(format));
  std::vector<int64_t> pos(C);
  for (int64_t c = 0; c < C; ++c) pos[c] = interleaved_channel(c, l.out_per_group, l.GB, l.vecs * L);
  O* d = out.mutable_data_ptr<O>();
  if (format == at::MemoryFormat::ChannelsLast) {
    at::parallel_for(0, N * HW, grain_for(C), [&](int64_t begin, int64_t end) {
      for (int64_t px = begin; px < end; ++px)
        for (int64_t c = 0; c < C; ++c) d[px * C + c] = Out::put(src[px * Co + pos[c]]);
    });
    return out;
  }
  // NCHW: L pixels x L interleaved channels per register transpose; each
  // transposed vector is one channel's L pixels (gaps dropped).
  const std::vector<int64_t> channel = interleaved_sources(C, l.out_per_group, l.GB, l.vecs * L, Co, L);
  const int64_t tiles = (HW + L - 1) / L;
  constexpr int64_t kTilesPerItem = 4;
  const int64_t items_per_image = (tiles + kTilesPerItem - 1) / kTilesPerItem;
  at::parallel_for(0, N * items_per_image, grain_for(kTilesPerItem * L * C),
                   [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / items_per_image;
      const int64_t t0 = (item % items_per_image) * kTilesPerItem;
      const int64_t t1 = std::min(tiles, t0 + kTilesPerItem);
      const T* s = src + n * HW * Co;
      O* dn = d + n * C * HW;
      for (int64_t j0 = 0; j0 < Co; j0 += L) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t p0 = t * L;
          const int count = static_cast<int>(std::min<int64_t>(L, HW - p0));
          using V = simd::Vec<T>;
          typename V::type v[L];
          for (int u = 0; u < L; ++u) v[u] = u < count ? V::load(s + (p0 + u) * Co + j0) : V::zero();
          transpose_square<T>(v);
          for (int j = 0; j < L; ++j) {
            const int64_t c = channel[j0 + j];
            if (c < 0) continue;
            if (count == L) {
              Out::store(dn + c * HW + p0, v[j]);
            } else {
              Out::store_partial(dn + c * HW + p0, v[j], count);
            }
          }
        }
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------------------
// grad-weight: gw[grp, kk, cc, r, s] = sum over pixels of gy[.., grp*Kg+kk] *
// x[.. + tap, grp*Cg+cc]. Each thread owns tiles of UC reduction steps
// (tap, cc) x NB vectors of the packed result and sums every pixel into
// them in one fixed order (chunks of output rows).
template <typename T, int GB, int UC, int NB>
void weight_tile(const T* x, const T* gy, int64_t rows, int64_t Q, int64_t x_row,
                 int64_t x_pixel, int64_t gy_row, int64_t gy_pixel, const int64_t* xoff,
                 T* const* dst, int64_t dst_vec, bool accumulate) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type acc[UC][NB];
  for (int u = 0; u < UC; ++u)
    for (int j = 0; j < NB; ++j)
      acc[u][j] = accumulate ? V::load(dst[u] + j * dst_vec) : V::zero();
  int64_t o[UC];
  for (int u = 0; u < UC; ++u) {
    int64_t v = xoff[u];
    asm("" : "+r"(v));  // scalar loads (see forward_tile)
    o[u] = v;
  }
  for (int64_t row = 0; row < rows; ++row) {
    const T* xr = x + row * x_row;
    const T* gr = gy + row * gy_row;
    for (int64_t q = 0; q < Q; ++q) {
      typename V::type gv[NB];
      for (int j = 0; j < NB; ++j) gv[j] = V::load(gr + q * gy_pixel + j * L);
      const T* xq = xr + q * x_pixel;
      for (int u = 0; u < UC; ++u) {
        const typename V::type xb = broadcast_chunk<T, GB>(xq + o[u]);
        for (int j = 0; j < NB; ++j) acc[u][j] = simd::fmadd(xb, gv[j], acc[u][j]);
      }
    }
  }
  for (int u = 0; u < UC; ++u)
    for (int j = 0; j < NB; ++j) V::store(dst[u] + j * dst_vec, acc[u][j]);
}

template <typename T>
using WeightTileFn = void (*)(const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t,
                              int64_t, const int64_t*, T* const*, int64_t, bool);

template <typename T, int NB>
WeightTileFn<T> weight_tile_for_gb(int GB) {
  constexpr int UC = tile_pixels(NB);
  if constexpr (NB > 1) {
    return &weight_tile<T, 1, UC, NB>;
  } else {
    switch (GB) {
      case 1: return &weight_tile<T, 1, UC, 1>;
      case 2: return &weight_tile<T, 2, UC, 1>;
      case 4: return &weight_tile<T, 4, UC, 1>;
      case 8: return &weight_tile<T, 8, UC, 1>;
      default:
        if constexpr (kLanes<T> >= 16) return &weight_tile<T, 16, UC, 1>;
        return nullptr;
    }
  }
}

template <typename T>
WeightTileFn<T> weight_tile_fn(int GB, int nb) {
  switch (nb) {
    case 1: return weight_tile_for_gb<T, 1>(GB);
    case 2: return weight_tile_for_gb<T, 2>(GB);
    case 3: if constexpr (kMaxNB >= 3) return weight_tile_for_gb<T, 3>(GB); return nullptr;
    default: if constexpr (kMaxNB >= 4) return weight_tile_for_gb<T, 4>(GB); return nullptr;
  }
}

// x: interleaved padded input; gy: interleaved grad_output (out_channels per
// pixel); gw: packed [blocks][vecs][R*S*Cg][L].
template <typename T>
void backward_weight(const T* x, const T* gy, T* gw, const Layout& l, const Conv2dShape& p,
                     int64_t Hp, int64_t Wp) {
  constexpr int L = kLanes<T>;
  const int64_t steps = p.R * p.S * l.in_per_group;
  std::vector<int64_t> off(steps);
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t s = 0; s < p.S; ++s)
      for (int64_t i = 0; i < l.in_per_group; ++i)
        off[(r * p.S + s) * l.in_per_group + i] =
            (r * p.dilation_h * Wp + s * p.dilation_w) * l.x_channels + i * l.GB;
  const int64_t vec_groups = (l.vecs + kMaxNB - 1) / kMaxNB;
  const int64_t uc_max = tile_pixels(std::min<int64_t>(l.vecs, kMaxNB));
  const int64_t step_tiles = (steps + uc_max - 1) / uc_max;
  const int64_t items = l.blocks * vec_groups * step_tiles;
  const int64_t chunk_rows = std::max<int64_t>(1, 64 / std::max<int64_t>(p.Q, 1));
  const int64_t total_rows = p.N * p.P;
  const int64_t Co = l.out_channels;
  const int64_t dst_vec = steps * L;
  at::parallel_for(0, items, grain_for(total_rows * p.Q * uc_max * L), [&](int64_t begin, int64_t end) {
    for (int64_t row0 = 0; row0 < total_rows; row0 += chunk_rows) {
      const int64_t row1 = std::min(total_rows, row0 + chunk_rows);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t st = item % step_tiles, bg = item / step_tiles;
        const int64_t b = bg / vec_groups, v0 = (bg % vec_groups) * kMaxNB;
        const int nb = static_cast<int>(std::min<int64_t>(kMaxNB, l.vecs - v0));
        const int uc = ur_for(nb);
        const WeightTileFn<T> fn = weight_tile_fn<T>(l.GB, nb);
        // Tiles of uc steps (uc depends on nb; the step tiling uses uc_max,
        // so a tile with fewer vectors covers its range in several calls).
        const int64_t i_begin = st * uc_max, i_end = std::min(steps, i_begin + uc_max);
        for (int64_t i0 = i_begin; i0 < i_end; i0 += uc) {
          const int count = static_cast<int>(std::min<int64_t>(uc, i_end - i0));
          int64_t xoff[12];
          T* dst[12];
          for (int u = 0; u < uc; ++u) {
            const int64_t i = i0 + std::min(u, count - 1);  // short tile: repeat the last step
            xoff[u] = off[i];
            dst[u] = gw + ((b * l.vecs + v0) * steps + i) * L;
          }
          for (int64_t row = row0; row < row1;) {
            const int64_t n = row / p.P, oh = row % p.P;
            const int64_t rows = std::min(row1, (n + 1) * p.P) - row;
            const T* xp = x + ((n * Hp + oh * p.stride_h) * Wp) * l.x_channels +
                          b * l.in_per_group * l.GB;
            const T* gp = gy + ((n * p.P + oh) * p.Q) * Co + (b * l.vecs + v0) * L;
            fn(xp, gp, rows, p.Q, p.stride_h * Wp * l.x_channels, p.stride_w * l.x_channels,
               p.Q * Co, Co, xoff, dst, dst_vec, row > 0);
            row += rows;
          }
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------
// The three ops. `input`/`grad_output` any strides; results in `format`.
// Tensors of S: T, or bfloat16/float16 on the float kernels (T = float):
// the layout copies widen, the result is rounded once where it leaves the
// kernels' buffers.

template <typename T, typename S = T>
at::Tensor forward_op(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                      const Conv2dShape& p, at::MemoryFormat format) {
  constexpr int L = kLanes<T>;
  using In = simd::Stored<T, S>;
  const Layout l = make_layout<T>(p.groups, p.C_per_group, p.K_per_group);
  const at::Tensor x = interleaved_padded<T, S>(input, p.pad_h, p.pad_w, p.C_per_group, l.GB,
                                                p.C_per_group * l.GB, l.x_channels);
  const S* wp = weight.const_data_ptr<S>();
  const int64_t w0 = weight.stride(0), w1 = weight.stride(1), w2 = weight.stride(2),
                w3 = weight.stride(3);
  const int64_t Kg = p.K_per_group;
  const at::Tensor w = pack_weights<T>(
      l, p.R, p.S,
      [&](int64_t grp, int64_t kk, int64_t i, int64_t r, int64_t s) {
        return In::get(wp[(grp * Kg + kk) * w0 + i * w1 + r * w2 + s * w3]);
      },
      weight.options());
  at::Tensor b;
  if (bias.defined()) {
    b = at::zeros({l.out_channels}, compute_options<T>(weight.options()));
    const at::Tensor bc = bias.contiguous();
    const S* bs = bc.const_data_ptr<S>();
    T* bd = b.mutable_data_ptr<T>();
    for (int64_t k = 0; k < p.K; ++k)
      bd[interleaved_channel(k, Kg, l.GB, l.vecs * L)] = In::get(bs[k]);
  }
  at::Tensor out = at::empty({p.N, p.P, p.Q, l.out_channels}, compute_options<T>(input.options()));
  const Problem d{p.N, p.H + 2 * p.pad_h, p.W + 2 * p.pad_w, p.P, p.Q, p.R, p.S,
                  p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                  p.P * p.Q * l.out_channels, p.Q * l.out_channels, l.out_channels};
  forward<T>(x.const_data_ptr<T>(), w.const_data_ptr<T>(),
             b.defined() ? b.const_data_ptr<T>() : nullptr, out.mutable_data_ptr<T>(), l, d);
  return deinterleave<T, S>(out, l, p.output_sizes(), format, input.options());
}

// grad-input: the grouped convolution of grad_output with the flipped,
// transposed filter, one unit-stride problem per stride phase (as the
// dense grad-input, see dense_backward_input).
template <typename T, typename E = T>
at::Tensor backward_input_op(const at::Tensor& grad_output, const at::Tensor& weight,
                             const Conv2dShape& p, at::MemoryFormat format) {
  std::vector<PhaseTapList> rows(p.stride_h), cols(p.stride_w);
  int64_t top = 0, bottom = 0, left = 0, right = 0;
  bool empty_phase = false;
  for (int64_t a = 0; a < p.stride_h; ++a) {
    rows[a] = phase_tap_list(a, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h);
    if (rows[a].tap.empty()) empty_phase = true;
    if (rows[a].tap.empty() || rows[a].count == 0) continue;
    top = std::max(top, -rows[a].offset.front());
    bottom = std::max(bottom, rows[a].count - 1 + rows[a].offset.back() - (p.P - 1));
  }
  for (int64_t a = 0; a < p.stride_w; ++a) {
    cols[a] = phase_tap_list(a, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w);
    if (cols[a].tap.empty()) empty_phase = true;
    if (cols[a].tap.empty() || cols[a].count == 0) continue;
    left = std::max(left, -cols[a].offset.front());
    right = std::max(right, cols[a].count - 1 + cols[a].offset.back() - (p.Q - 1));
  }
  // Transposed problem: reduction over K_per_group, outputs C_per_group.
  const Layout l = make_layout<T>(p.groups, p.K_per_group, p.C_per_group);
  const int64_t pad_h = std::max(top, bottom), pad_w = std::max(left, right);
  const at::Tensor gy = interleaved_padded<T, E>(grad_output, pad_h, pad_w, p.K_per_group, l.GB,
                                                 p.K_per_group * l.GB, l.x_channels);
  const int64_t Hp = p.P + 2 * pad_h, Wp = p.Q + 2 * pad_w;
  const at::TensorOptions buffer = compute_options<T>(grad_output.options());
  at::Tensor gx = empty_phase ? at::zeros({p.N, p.H, p.W, l.out_channels}, buffer)
                        : at::empty({p.N, p.H, p.W, l.out_channels}, buffer);
  const E* wp = weight.const_data_ptr<E>();
  const int64_t w0 = weight.stride(0), w1 = weight.stride(1), w2 = weight.stride(2),
                w3 = weight.stride(3);
  const int64_t Kg = p.K_per_group;
  for (int64_t ah = 0; ah < p.stride_h; ++ah) {
    for (int64_t aw = 0; aw < p.stride_w; ++aw) {
      const PhaseTapList& rt = rows[ah];
      const PhaseTapList& ct = cols[aw];
      if (rt.tap.empty() || ct.tap.empty() || rt.count == 0 || ct.count == 0) continue;
      const int64_t R = static_cast<int64_t>(rt.tap.size()), S = static_cast<int64_t>(ct.tap.size());
      const at::Tensor w = pack_weights<T>(
          l, R, S,
          [&](int64_t grp, int64_t cc, int64_t kk, int64_t r, int64_t s) {
            return simd::Stored<T, E>::get(
                wp[(grp * Kg + kk) * w0 + cc * w1 + rt.tap[r] * w2 + ct.tap[s] * w3]);
          },
          weight.options());
      const int64_t x_offset = ((pad_h + rt.offset.front()) * Wp + pad_w + ct.offset.front()) *
                               l.x_channels;
      const Problem d{p.N, Hp, Wp, rt.count, ct.count, R, S, 1, 1, rt.spacing, ct.spacing,
                      p.H * p.W * l.out_channels, p.stride_h * p.W * l.out_channels,
                      p.stride_w * l.out_channels};
      forward<T>(gy.const_data_ptr<T>() + x_offset, w.const_data_ptr<T>(), nullptr,
                 gx.mutable_data_ptr<T>() + (ah * p.W + aw) * l.out_channels, l, d);
    }
  }
  return deinterleave<T, E>(gx, l, p.input_sizes(), format, grad_output.options());
}

template <typename T, typename S = T>
at::Tensor backward_weight_op(const at::Tensor& grad_output, const at::Tensor& input,
                              const Conv2dShape& p) {
  constexpr int L = kLanes<T>;
  const Layout l = make_layout<T>(p.groups, p.C_per_group, p.K_per_group);
  const at::Tensor x = interleaved_padded<T, S>(input, p.pad_h, p.pad_w, p.C_per_group, l.GB,
                                                p.C_per_group * l.GB, l.x_channels);
  const at::Tensor gy = interleaved_padded<T, S>(grad_output, 0, 0, p.K_per_group, l.GB,
                                                 l.vecs * L, l.out_channels);
  const int64_t steps = p.R * p.S * p.C_per_group;
  at::Tensor packed = at::empty({l.blocks, l.vecs, steps, L}, compute_options<T>(input.options()));
  backward_weight<T>(x.const_data_ptr<T>(), gy.const_data_ptr<T>(), packed.mutable_data_ptr<T>(),
                     l, p, p.H + 2 * p.pad_h, p.W + 2 * p.pad_w);
  auto gw = at::empty(p.weight_sizes(), input.options());
  const T* src = packed.const_data_ptr<T>();
  S* dst = gw.mutable_data_ptr<S>();
  const int64_t Kg = p.K_per_group, Cg = p.C_per_group, RS = p.R * p.S;
  at::parallel_for(0, p.K, grain_for(steps), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t grp = k / Kg, kk = k % Kg;
      const int64_t j = kk * l.GB + grp % l.GB;
      const T* s = src + ((grp / l.GB) * l.vecs + j / L) * steps * L + j % L;
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t t = 0; t < RS; ++t)
          dst[(k * Cg + c) * RS + t] = simd::Stored<T, S>::put(s[(t * Cg + c) * L]);
    }
  });
  return gw;
}

}  // namespace grouped

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
