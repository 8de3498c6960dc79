// Grouped (non-depthwise) convolution on the CPU, float and double:
// forward, grad-input and grad-weight as register-blocked direct kernels.
//
// Layout. A SIMD vector of L output lanes holds GB whole groups at once when
// a group has few output channels (GB = the largest power of two with
// GB * K_per_group <= L): lane j is output channel kk = j / GB of group
// b * GB + j % GB. The activations a work item reads are copied into a
// per-thread padded NHWC slab whose channels are interleaved the same way,
// [cc][GB] for the item's block (see "Fused layout" below):
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
#include <iterator>
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
  l.out_channels = l.blocks * l.vecs * L;
  return l;
}

// Position in an interleaved pixel of channel c (group-major numbering, per
// per_group channels a group), blocks block_stride apart.
inline int64_t interleaved_channel(int64_t c, int64_t per_group, int GB, int64_t block_stride) {
  const int64_t grp = c / per_group, i = c % per_group;
  return (grp / GB) * block_stride + i * GB + grp % GB;
}

// d[j * d_row + i] = rows[i][j] for i < n_out, j < cols (both <= L): an
// L x L transpose whose source rows come from a list of pointers (null: a
// zero row), so a channel permutation costs nothing extra. Rows of S
// (T, or bfloat16/float16 widened to T).
template <typename T, typename S>
inline void transpose_listed_rows(const S* const* rows, int cols, T* d, int64_t d_row,
                                  int n_out) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type v[L];
  for (int i = 0; i < L; ++i) {
    v[i] = rows[i] == nullptr ? V::zero() : simd::load_upto<T, S>(rows[i], cols);
  }
  transpose_square<T>(v);
  for (int j = 0; j < cols; ++j) {
    simd::store_upto<T>(d + j * d_row, v[j], n_out);
  }
}

// Weights packed as [blocks][vecs][taps R' x S' x in_per_group][L]; lane
// j = v * L + l of block b is output kk = j / GB of group b * GB + j % GB.
// weight_at(grp, out, in, r, s) reads the filter. One (block, vector) into
// dst (taps * L elements); lanes past the block's channels are zero.
template <typename T, typename WeightAt>
void pack_weight_vector(const Layout& l, int64_t R, int64_t S, const WeightAt& weight_at,
                        int64_t b, int64_t v, T* dst) {
  constexpr int L = kLanes<T>;
  for (int l_ = 0; l_ < L; ++l_) {
    const int64_t j = v * L + l_, kk = j / l.GB, grp = b * l.GB + j % l.GB;
    T* d = dst + l_;
    if (kk >= l.out_per_group || grp >= l.groups) {
      for (int64_t t = 0; t < R * S * l.in_per_group; ++t) d[t * L] = T(0);
      continue;
    }
    for (int64_t r = 0; r < R; ++r)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t i = 0; i < l.in_per_group; ++i, d += L) *d = weight_at(grp, kk, i, r, s);
  }
}

// All vectors of block b into dst ([vecs][taps][L]).
template <typename T, typename WeightAt>
void pack_weight_block(const Layout& l, int64_t R, int64_t S, const WeightAt& weight_at,
                       int64_t b, T* dst) {
  const int64_t taps = R * S * l.in_per_group;
  for (int64_t v = 0; v < l.vecs; ++v)
    pack_weight_vector<T>(l, R, S, weight_at, b, v, dst + v * taps * kLanes<T>);
}

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

// The same for UR pixels of one row, XP elements apart, and one output
// vector (NB = 1): pixel u reads x + off[i] + u * XP, a constant
// displacement, so no register per pixel. (The tile above keeps 12 pixel
// pointers; with the offset table, the weights and the loop counter that is
// more than the 15 free general registers, and GCC parks some in vector
// registers: three vmovq per step on an FMA port.) XP is L or 2L: a block
// of one vector of interleaved channels per pixel (ResNeXt, RegNet), stride
// 1 or 2.
template <typename T, int GB, int UR, int XP>
void forward_row_tile(const T* x, const int64_t* off, int64_t steps, const T* w, const T* bias,
                      T* out, int64_t out_pixel) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type acc[UR];
  const typename V::type b0 = bias != nullptr ? V::load(bias) : V::zero();
  for (int u = 0; u < UR; ++u) acc[u] = b0;
  for (int64_t i = 0; i < steps; ++i) {
    const typename V::type wv = V::load(w + i * L);
    const T* xo = x + off[i];
    for (int u = 0; u < UR; ++u) acc[u] = simd::fmadd(broadcast_chunk<T, GB>(xo + u * XP), wv, acc[u]);
  }
  for (int u = 0; u < UR; ++u) V::store(out + u * out_pixel, acc[u]);
}

template <typename T>
using RowTileFn = void (*)(const T*, const int64_t*, int64_t, const T*, const T*, T*, int64_t);

template <typename T, int XP>
RowTileFn<T> row_tile_for_gb(int GB) {
  constexpr int UR = tile_pixels(1);
  switch (GB) {
    case 1: return &forward_row_tile<T, 1, UR, XP>;
    case 2: return &forward_row_tile<T, 2, UR, XP>;
    case 4: return &forward_row_tile<T, 4, UR, XP>;
    case 8: return &forward_row_tile<T, 8, UR, XP>;
    default:
      if constexpr (kLanes<T> >= 16) return &forward_row_tile<T, 16, UR, XP>;
      return nullptr;
  }
}

// The row tile for pixels x_pixel elements apart, or null (none compiled).
template <typename T>
RowTileFn<T> row_tile_fn(int GB, int64_t x_pixel) {
  constexpr int L = kLanes<T>;
  if (x_pixel == L) return row_tile_for_gb<T, L>(GB);
  if (x_pixel == 2 * L) return row_tile_for_gb<T, 2 * L>(GB);
  return nullptr;
}

template <typename T>
using ForwardTileFn = void (*)(const T* const*, const int64_t*, int64_t, const T*, int64_t,
                               const T*, T* const*);

// The tile instances that exist, by GB (groups per vector) and nb (vectors
// of output channels per group): several vectors only when GB == 1, GB of
// 1, 2, 4, 8 (16 where a vector has 16 lanes). make.template
// operator()<GB, NB>() names the instance; nullptr where none exists.
template <typename T, typename Make>
auto grouped_tile_switch(int GB, int nb, const Make& make)
    -> decltype(make.template operator()<1, 1>()) {
  using Fn = decltype(make.template operator()<1, 1>());
  auto for_gb = [&]<int NB>() -> Fn {
    if constexpr (NB > 1) {
      return make.template operator()<1, NB>();
    } else {
      switch (GB) {
        case 1: return make.template operator()<1, 1>();
        case 2: return make.template operator()<2, 1>();
        case 4: return make.template operator()<4, 1>();
        case 8: return make.template operator()<8, 1>();
        default:
          if constexpr (kLanes<T> >= 16) return make.template operator()<16, 1>();
          return nullptr;
      }
    }
  };
  switch (nb) {
    case 1: return for_gb.template operator()<1>();
    case 2: return for_gb.template operator()<2>();
    case 3: if constexpr (kMaxNB >= 3) return for_gb.template operator()<3>(); return nullptr;
    default: if constexpr (kMaxNB >= 4) return for_gb.template operator()<4>(); return nullptr;
  }
}

template <typename T>
ForwardTileFn<T> forward_tile_fn(int GB, int nb) {
  return grouped_tile_switch<T>(GB, nb, []<int G, int NB>() -> ForwardTileFn<T> {
    return &forward_tile<T, G, tile_pixels(NB), NB>;
  });
}

// Shorter pointer tiles for the pixels a chunk has left over: the smallest
// of these at least as long as the remainder (or the full tile) runs it, so
// 1 pixel left of 12 costs a 1-pixel tile, not 12 pixels' FMAs. A tile of 8
// or fewer is bound by the FMA latency, not the FMA ports, and costs about
// as much per step as a full one of 8; past 8 the full tile is no dearer.
inline constexpr int kShortTilePixels[] = {1, 2, 4, 8};

template <typename T>
ForwardTileFn<T> short_forward_tile_fn(int GB, int nb, int pixels) {
  return grouped_tile_switch<T>(GB, nb, [pixels]<int G, int NB>() -> ForwardTileFn<T> {
    switch (pixels) {
      case 1: return &forward_tile<T, G, 1, NB>;
      case 2: return &forward_tile<T, G, 2, NB>;
      case 4: return &forward_tile<T, G, 4, NB>;
      default:
        if constexpr (tile_pixels(NB) > 8) return &forward_tile<T, G, 8, NB>;
        return nullptr;
    }
  });
}

inline int ur_for(int nb) {
  switch (nb) {
    case 1: return tile_pixels(1);
    case 2: return tile_pixels(2);
    case 3: return tile_pixels(3);
    default: return tile_pixels(4);
  }
}

// ---------------------------------------------------------------------------
// Fused layout (forward and grad-input). A work item is (image n, block b,
// a chunk of output rows): the input rows the chunk reads are copied,
// interleaved and zero-padded, into a per-thread slab; the tiles write a
// per-thread [pixels][vecs * L] buffer; that buffer goes into the result
// tensor (NCHW through L x L transposes) while it is in cache. No
// tensor-sized buffer: the activations are read once (plus the few halo rows
// a chunk shares with the next) and the result written once, where the
// whole-tensor copies read and wrote each twice (at stride 2 the input copy
// was four times the result's size).

// Position j of a block's interleaved pixel (j = i * GB + g, rounded up to
// whole vectors) -> channel g * per_group + i counted from the block's first
// channel, or -1 (a lane past the block's channels). In the last block, only
// channels below limit = (groups in it) * per_group exist.
inline std::vector<int64_t> block_channels(int64_t per_group, int GB, int64_t positions,
                                           int lanes) {
  std::vector<int64_t> rel((positions + lanes - 1) / lanes * lanes, -1);
  for (int g = 0; g < GB; ++g)
    for (int64_t i = 0; i < per_group; ++i) rel[i * GB + g] = g * per_group + i;
  return rel;
}

// Offset of every reduction step (r, s, i), in that order, in a padded
// interleaved row slab of row width Wp and cb channels per pixel.
inline std::vector<int64_t> step_offsets(const Layout& l, const Conv2dShape& p, int64_t Wp,
                                         int64_t cb) {
  std::vector<int64_t> off(p.R * p.S * l.in_per_group);
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t s = 0; s < p.S; ++s)
      for (int64_t i = 0; i < l.in_per_group; ++i)
        off[(r * p.S + s) * l.in_per_group + i] =
            (r * p.dilation_h * Wp + s * p.dilation_w) * cb + i * l.GB;
  return off;
}

// An N x C x H x W tensor of S, any strides.
template <typename S>
struct Image {
  const S* data;
  int64_t sn, sc, sh, sw, H, W;
  explicit Image(const at::Tensor& t)
      : data(t.const_data_ptr<S>()), sn(t.stride(0)), sc(t.stride(1)), sh(t.stride(2)),
        sw(t.stride(3)), H(t.size(2)), W(t.size(3)) {}
};

// Padded rows [hp0, hp1) of image n (padded row hp = row hp - pad_h), the
// channels c0 + rel[j] (rel[j] in [0, limit)) at position j, into
// dst[hp - hp0][Wp][cb]; everything else zero.
template <typename T, typename S>
void copy_block_rows(const Image<S>& src, int64_t n, int64_t c0, const int64_t* rel,
                     int64_t limit, int64_t cb, int64_t hp0, int64_t hp1, int64_t pad_h,
                     int64_t pad_w, int64_t Wp, T* dst) {
  constexpr int L = kLanes<T>;
  const int64_t W = src.W;
  bool identity = limit == cb;  // position j holds channel j
  for (int64_t j = 0; identity && j < cb; ++j) identity = rel[j] == j;
  for (int64_t hp = hp0; hp < hp1; ++hp) {
    T* row = dst + (hp - hp0) * Wp * cb;
    const int64_t h = hp - pad_h;
    if (h < 0 || h >= src.H) {
      std::fill(row, row + Wp * cb, T(0));
      continue;
    }
    std::fill(row, row + pad_w * cb, T(0));
    std::fill(row + (pad_w + W) * cb, row + Wp * cb, T(0));
    const S* sr = src.data + n * src.sn + h * src.sh + c0 * src.sc;
    T* dr = row + pad_w * cb;
    if (src.sw == 1 && src.sc != 1) {
      // NCHW rows: L pixels x L positions per register transpose.
      for (int64_t w0 = 0; w0 < W; w0 += L) {
        const int cols = static_cast<int>(std::min<int64_t>(L, W - w0));
        for (int64_t d0 = 0; d0 < cb; d0 += L) {
          const S* rows[L];
          for (int i = 0; i < L; ++i) {
            const int64_t c = rel[d0 + i];
            rows[i] = c < 0 || c >= limit ? nullptr : sr + c * src.sc + w0;
          }
          transpose_listed_rows<T, S>(rows, cols, dr + w0 * cb + d0, cb,
                                      static_cast<int>(std::min<int64_t>(L, cb - d0)));
        }
      }
    } else if (src.sc == 1 && identity) {
      // channels_last, one group per block: the pixel's channels as they are.
      using In = simd::Stored<T, S>;
      for (int64_t w = 0; w < W; ++w) {
        const S* sp = sr + w * src.sw;
        T* dp = dr + w * cb;
        int64_t j = 0;
        for (; j + L <= cb; j += L) simd::Vec<T>::store(dp + j, In::load(sp + j));
        if (j < cb) {
          simd::Vec<T>::store_partial(dp + j, In::load_partial(sp + j, static_cast<int>(cb - j)),
                                      static_cast<int>(cb - j));
        }
      }
    } else if (src.sc == 1 && cb <= L) {
      // channels_last, the block within one vector: its channels are
      // contiguous in each pixel, one (masked) load permuted into place.
      using I = typename simd::IndexVec<T>::type;
      I idx;
      for (int j = 0; j < L; ++j) {
        const int64_t c = rel[j];
        idx[j] = static_cast<typename simd::IndexVec<T>::element>(
            c >= 0 && c < limit ? c : std::min<int64_t>(limit, L - 1));  // a zero lane
      }
      for (int64_t w = 0; w < W; ++w) {
        const typename simd::Vec<T>::type v =
            simd::load_upto<T, S>(sr + w * src.sw, static_cast<int>(limit));
        simd::store_upto<T>(dr + w * cb, __builtin_shuffle(v, idx), static_cast<int>(cb));
      }
    } else {
      for (int64_t w = 0; w < W; ++w) {
        const S* sp = sr + w * src.sw;
        T* dp = dr + w * cb;
        for (int64_t j = 0; j < cb; ++j) {
          const int64_t c = rel[j];
          dp[j] = c < 0 || c >= limit ? T(0) : simd::Stored<T, S>::get(sp[c * src.sc]);
        }
      }
    }
  }
}

// count pixels of buf ([count][cob], position j = kk * GB + g) into the
// result: channel rel[j] < limit at out + rel[j] * oc + pixel * opix, the
// pixels numbered from the first. opix == 1 (NCHW planes): L pixels x L
// positions per register transpose; else per element.
template <typename T, typename O>
void store_block_pixels(const T* buf, int64_t cob, int64_t count, O* out, int64_t oc,
                        int64_t opix, const int64_t* rel, int64_t limit) {
  using V = simd::Vec<T>;
  using Out = simd::Stored<T, O>;
  constexpr int L = kLanes<T>;
  if (opix == 1) {
    for (int64_t j0 = 0; j0 < cob; j0 += L) {
      for (int64_t t0 = 0; t0 < count; t0 += L) {
        const int cnt = static_cast<int>(std::min<int64_t>(L, count - t0));
        typename V::type v[L];
        for (int u = 0; u < L; ++u) v[u] = u < cnt ? V::load(buf + (t0 + u) * cob + j0) : V::zero();
        transpose_square<T>(v);
        for (int j = 0; j < L; ++j) {
          const int64_t c = rel[j0 + j];
          if (c < 0 || c >= limit) continue;
          simd::store_upto<T, O>(out + c * oc + t0, v[j], cnt);
        }
      }
    }
    return;
  }
  bool identity = oc == 1;
  for (int64_t j = 0; identity && j < limit; ++j) identity = rel[j] == j;
  if (identity) {
    // One group per block (channels_last): each pixel's channels are the
    // buffer's first `limit` lanes, copied as they are.
    for (int64_t t = 0; t < count; ++t) {
      const T* bp = buf + t * cob;
      O* op = out + t * opix;
      int64_t j = 0;
      for (; j + L <= limit; j += L) Out::store(op + j, V::load(bp + j));
      if (j < limit) Out::store_partial(op + j, V::load(bp + j), static_cast<int>(limit - j));
    }
    return;
  }
  if (oc == 1 && cob == L) {
    // channels_last: the block's channels are contiguous in each pixel, one
    // vector permuted into channel order and stored (masked) per pixel.
    using I = typename simd::IndexVec<T>::type;
    I idx{};
    for (int j = 0; j < L; ++j)
      if (rel[j] >= 0 && rel[j] < limit) idx[rel[j]] = static_cast<typename simd::IndexVec<T>::element>(j);
    for (int64_t t = 0; t < count; ++t) {
      const typename V::type v = __builtin_shuffle(V::load(buf + t * cob), idx);
      simd::store_upto<T, O>(out + t * opix, v, static_cast<int>(limit));
    }
    return;
  }
  for (int64_t t = 0; t < count; ++t) {
    const T* bp = buf + t * cob;
    O* op = out + t * opix;
    for (int64_t j = 0; j < cob; ++j) {
      const int64_t c = rel[j];
      if (c >= 0 && c < limit) op[c * oc] = Out::put(bp[j]);
    }
  }
}

// Per-thread buffer of n elements of T, vector-aligned.
template <typename T>
struct Scratch {
  simd::VecArray<T> vecs;
  explicit Scratch(int64_t n)
      : vecs(static_cast<size_t>((n + kLanes<T> - 1) / kLanes<T>)) {}
  T* data() { return reinterpret_cast<T*>(vecs.data()); }
};

// The tiles of one chunk: pixels m in [0, rows * Q) at (oh, ow) = (m / Q,
// m % Q), input at x + (oh * x_row + ow * x_pixel), output at out +
// (oh * out_row + ow * out_pixel); all vectors of a block.
template <typename T>
void chunk_tiles(const T* x, int64_t x_row, int64_t x_pixel, const int64_t* off, int64_t steps,
                 const T* w, const T* bias, T* out, int64_t out_row, int64_t out_pixel,
                 int64_t rows, int64_t Q, const Layout& l) {
  constexpr int L = kLanes<T>;
  const int64_t w_vec = steps * L;
  for (int64_t v0 = 0; v0 < l.vecs; v0 += kMaxNB) {
    const int nb = static_cast<int>(std::min<int64_t>(kMaxNB, l.vecs - v0));
    const int ur = ur_for(nb);
    const ForwardTileFn<T> fn = forward_tile_fn<T>(l.GB, nb);
    const RowTileFn<T> row_fn = nb == 1 ? row_tile_fn<T>(l.GB, x_pixel) : nullptr;
    const T* wb = w + v0 * w_vec;
    const T* bb = bias != nullptr ? bias + v0 * L : nullptr;
    // Whole row tiles where there is a row tile; the pixels left over (all
    // of them without one) gathered across rows into pointer tiles.
    std::array<ForwardTileFn<T>, std::size(kShortTilePixels)> short_fn{};
    for (size_t i = 0; i < short_fn.size(); ++i) {
      if (kShortTilePixels[i] < ur) short_fn[i] = short_forward_tile_fn<T>(l.GB, nb, kShortTilePixels[i]);
    }
    const T* xs[12];
    T* outs[12];
    int count = 0;
    auto flush = [&] {
      ForwardTileFn<T> f = fn;
      int pixels = ur;
      for (size_t i = 0; i < short_fn.size(); ++i) {
        if (short_fn[i] != nullptr && kShortTilePixels[i] >= count) {
          f = short_fn[i];
          pixels = kShortTilePixels[i];
          break;
        }
      }
      // A tile longer than the pixels left repeats the last one: same
      // inputs, same value stored twice.
      for (int u = count; u < pixels; ++u) xs[u] = xs[count - 1], outs[u] = outs[count - 1];
      f(xs, off, steps, wb, w_vec, bb, outs);
      count = 0;
    };
    for (int64_t oh = 0; oh < rows; ++oh) {
      int64_t ow = 0;
      if (row_fn != nullptr) {
        for (; ow + ur <= Q; ow += ur) {
          row_fn(x + oh * x_row + ow * x_pixel, off, steps, wb, bb,
                 out + oh * out_row + ow * out_pixel + v0 * L, out_pixel);
        }
      }
      for (; ow < Q; ++ow) {
        xs[count] = x + oh * x_row + ow * x_pixel;
        outs[count] = out + oh * out_row + ow * out_pixel + v0 * L;
        if (++count == ur) flush();
      }
    }
    if (count > 0) flush();
  }
}

// Rows per work item: the whole plane, halved while the item's buffers
// exceed kItemBytes or the items are too few to share among the threads.
template <typename Bytes>
int64_t rows_per_item(int64_t rows, int64_t other_items, Bytes bytes) {
  constexpr int64_t kItemBytes = 256 * 1024;  // well inside L2 (2 MiB here)
  const int64_t wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  int64_t k = rows;
  while (k > 1 && (bytes(k) > kItemBytes || other_items * ((rows + k - 1) / k) < wanted)) {
    k = (k + 1) / 2;
  }
  return std::max<int64_t>(k, 1);
}

// A block's packed weights up to this size are packed by the thread that
// runs the block, into its own buffer, as it comes to the block (work items
// are ordered block-major, so a thread meets few blocks): they are then in
// that core's cache when its tiles read them, and no pass over all the
// weights precedes the convolution. Larger blocks are packed once, shared.
inline constexpr int64_t kBlockPackBytes = 256 * 1024;

// The packed weights of every block, block_elems each; pack(b, dst) packs
// block b. Either all packed up front into one shared tensor (blocks over
// kBlockPackBytes) or left to each thread's Reader, which packs the block it
// is working on into its own buffer when the block changes.
template <typename T, typename Pack>
class PackedBlocks {
 public:
  PackedBlocks(int64_t blocks, int64_t block_elems, const Pack& pack,
               const at::TensorOptions& options)
      : block_elems_(block_elems),
        per_thread_(block_elems * static_cast<int64_t>(sizeof(T)) <= kBlockPackBytes),
        pack_(pack) {
    if (per_thread_) return;
    shared_ = at::empty({blocks, block_elems}, compute_options<T>(options));
    T* dst = shared_.template mutable_data_ptr<T>();
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) pack_(b, dst + b * block_elems_);
    });
  }

  // One per thread (inside the parallel region).
  class Reader {
   public:
    explicit Reader(const PackedBlocks& src)
        : src_(src), buf_(src.per_thread_ ? src.block_elems_ : 0) {}
    const T* block(int64_t b) {
      if (!src_.per_thread_) return src_.shared_.template const_data_ptr<T>() + b * src_.block_elems_;
      if (b != packed_) {
        src_.pack_(b, buf_.data());
        packed_ = b;
      }
      return buf_.data();
    }

   private:
    const PackedBlocks& src_;
    Scratch<T> buf_;
    int64_t packed_ = -1;
  };

 private:
  int64_t block_elems_;
  bool per_thread_;
  const Pack& pack_;
  at::Tensor shared_;
};

// The forward convolution of src into out (N x K x P x Q of O, NCHW or
// channels_last), fused with its layout copies; weight_at(grp, out, in, r,
// s) reads the filter (see pack_weight_vector), bias interleaved
// [blocks][vecs * L] or null.
template <typename T, typename S, typename O, typename WeightAt>
void forward_fused(const Image<S>& src, const WeightAt& weight_at,
                   const at::TensorOptions& options, const T* bias, const at::Tensor& out,
                   const Layout& l, const Conv2dShape& p) {
  constexpr int L = kLanes<T>;
  const int64_t cb = l.in_per_group * l.GB, cob = l.vecs * L;
  const int64_t Wp = p.W + 2 * p.pad_w;
  const int64_t steps = p.R * p.S * l.in_per_group;
  auto pack_block = [&](int64_t b, T* dst) {
    pack_weight_block<T>(l, p.R, p.S, weight_at, b, dst);
  };
  using Weights = PackedBlocks<T, decltype(pack_block)>;
  const Weights weights(l.blocks, l.vecs * steps * L, pack_block, options);
  const std::vector<int64_t> off = step_offsets(l, p, Wp, cb);
  const std::vector<int64_t> in_rel = block_channels(l.in_per_group, l.GB, cb, L);
  const std::vector<int64_t> out_rel = block_channels(l.out_per_group, l.GB, cob, L);
  auto rows_in = [&](int64_t k) { return (k - 1) * p.stride_h + (p.R - 1) * p.dilation_h + 1; };
  const int64_t k = rows_per_item(p.P, p.N * l.blocks, [&](int64_t rows) {
    return (rows_in(rows) * Wp * cb + rows * p.Q * cob) * static_cast<int64_t>(sizeof(T));
  });
  const int64_t chunks = (p.P + k - 1) / k;
  O* o = out.mutable_data_ptr<O>();
  const int64_t on = out.stride(0), oc = out.stride(1), opix = out.stride(3);
  at::parallel_for(0, l.blocks * p.N * chunks, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> slab(rows_in(k) * Wp * cb), buf(k * p.Q * cob);
    typename Weights::Reader block_w(weights);
    for (int64_t item = begin; item < end; ++item) {
      // Items (block, image, chunk): a thread's items share few blocks.
      const int64_t c = item % chunks, n = (item / chunks) % p.N, b = item / (chunks * p.N);
      const T* w = block_w.block(b);
      const int64_t oh0 = c * k, oh1 = std::min(p.P, oh0 + k);
      const int64_t groups_here = std::min<int64_t>(l.GB, p.groups - b * l.GB);
      copy_block_rows<T, S>(src, n, b * l.GB * l.in_per_group, in_rel.data(),
                            groups_here * l.in_per_group, cb, oh0 * p.stride_h,
                            oh0 * p.stride_h + rows_in(oh1 - oh0), p.pad_h, p.pad_w, Wp,
                            slab.data());
      chunk_tiles<T>(slab.data(), p.stride_h * Wp * cb, p.stride_w * cb, off.data(), steps, w,
                     bias != nullptr ? bias + b * cob : nullptr, buf.data(), p.Q * cob, cob,
                     oh1 - oh0, p.Q, l);
      store_block_pixels<T, O>(buf.data(), cob, (oh1 - oh0) * p.Q,
                               o + n * on + b * l.GB * l.out_per_group * oc + oh0 * p.Q * opix,
                               oc, opix, out_rel.data(), groups_here * l.out_per_group);
    }
  });
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

template <typename T>
WeightTileFn<T> weight_tile_fn(int GB, int nb) {
  return grouped_tile_switch<T>(GB, nb, []<int G, int NB>() -> WeightTileFn<T> {
    return &weight_tile<T, G, tile_pixels(NB), NB>;
  });
}

// The same with one output vector, for TAPS taps x CC consecutive
// channels of a group (steps t * C_per_group + c0 + cc): channel cc sits at
// the constant displacement cc * GB from its tap's offset, so the tile keeps
// TAPS offsets in registers, not one per step (the tile above needs 12 and
// reloads several from the stack at every pixel). tap_off[t]: offset of tap
// t at channel c0; dst: step (t0, c0), taps dst_tap apart, channels L apart.
template <typename T, int GB, int TAPS, int CC>
void weight_tap_tile(const T* x, const T* gy, int64_t rows, int64_t Q, int64_t x_row,
                     int64_t x_pixel, int64_t gy_row, int64_t gy_pixel, const int64_t* tap_off,
                     T* dst, int64_t dst_tap, bool accumulate) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type acc[TAPS][CC];
  for (int t = 0; t < TAPS; ++t)
    for (int cc = 0; cc < CC; ++cc)
      acc[t][cc] = accumulate ? V::load(dst + t * dst_tap + cc * L) : V::zero();
  int64_t o[TAPS];
  for (int t = 0; t < TAPS; ++t) {
    int64_t v = tap_off[t];
    asm("" : "+r"(v));  // scalar loads (see forward_tile)
    o[t] = v;
  }
  for (int64_t row = 0; row < rows; ++row) {
    const T* xq = x + row * x_row;
    const T* gq = gy + row * gy_row;
    for (int64_t q = 0; q < Q; ++q, xq += x_pixel, gq += gy_pixel) {
      const typename V::type gv = V::load(gq);
      for (int t = 0; t < TAPS; ++t) {
        const T* xt = xq + o[t];
        for (int cc = 0; cc < CC; ++cc) {
          acc[t][cc] = simd::fmadd(broadcast_chunk<T, GB>(xt + cc * GB), gv, acc[t][cc]);
        }
      }
    }
  }
  for (int t = 0; t < TAPS; ++t)
    for (int cc = 0; cc < CC; ++cc) V::store(dst + t * dst_tap + cc * L, acc[t][cc]);
}

template <typename T>
using WeightTapTileFn = void (*)(const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 int64_t, const int64_t*, T*, int64_t, bool);

template <typename T, int TAPS, int CC>
WeightTapTileFn<T> weight_tap_tile_for_gb(int GB) {
  switch (GB) {
    case 1: return &weight_tap_tile<T, 1, TAPS, CC>;
    case 2: return &weight_tap_tile<T, 2, TAPS, CC>;
    case 4: return &weight_tap_tile<T, 4, TAPS, CC>;
    case 8: return &weight_tap_tile<T, 8, TAPS, CC>;
    default:
      if constexpr (kLanes<T> >= 16) return &weight_tap_tile<T, 16, TAPS, CC>;
      return nullptr;
  }
}

// The tap tile's shape for C_per_group = cg with one output vector: 12
// accumulators (16 with AVX-512's 32 registers) as taps x channels, or
// null (cg 3, 5, 6, 7, ...: the step-list tile).
struct TapTileShape {
  int taps = 0, channels = 0;
};

template <typename T>
WeightTapTileFn<T> weight_tap_tile_fn(int GB, int64_t cg, int64_t vecs, TapTileShape* shape) {
  constexpr bool kWide = simd::kVectorBytes == 64;
  if (vecs != 1) return nullptr;
  if (cg == 2) {
    *shape = TapTileShape{6, 2};
    return weight_tap_tile_for_gb<T, 6, 2>(GB);
  }
  if (cg == 4) {
    *shape = TapTileShape{3, 4};
    return weight_tap_tile_for_gb<T, 3, 4>(GB);
  }
  if (cg % 8 == 0) {
    *shape = TapTileShape{kWide ? 2 : 1, 8};
    return weight_tap_tile_for_gb<T, kWide ? 2 : 1, 8>(GB);
  }
  return nullptr;
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
  const S* wp = weight.const_data_ptr<S>();
  const int64_t w0 = weight.stride(0), w1 = weight.stride(1), w2 = weight.stride(2),
                w3 = weight.stride(3);
  const int64_t Kg = p.K_per_group;
  auto weight_at = [&](int64_t grp, int64_t kk, int64_t i, int64_t r, int64_t s) {
    return In::get(wp[(grp * Kg + kk) * w0 + i * w1 + r * w2 + s * w3]);
  };
  at::Tensor b;
  if (bias.defined()) {
    b = at::zeros({l.out_channels}, compute_options<T>(weight.options()));
    const at::Tensor bc = bias.contiguous();
    const S* bs = bc.const_data_ptr<S>();
    T* bd = b.mutable_data_ptr<T>();
    for (int64_t k = 0; k < p.K; ++k)
      bd[interleaved_channel(k, Kg, l.GB, l.vecs * L)] = In::get(bs[k]);
  }
  at::Tensor out = at::empty(p.output_sizes(), input.options().memory_format(format));
  if (out.numel() == 0) return out;
  forward_fused<T, S, S>(Image<S>(input), weight_at, weight.options(),
                         b.defined() ? b.const_data_ptr<T>() : nullptr, out, l, p);
  return out;
}

// grad-input: the grouped convolution of grad_output with the flipped,
// transposed filter, one unit-stride problem per stride phase (as the
// dense grad-input, see dense_backward_input).
template <typename T, typename E = T>
at::Tensor backward_input_op(const at::Tensor& grad_output, const at::Tensor& weight,
                             const Conv2dShape& p, at::MemoryFormat format) {
  constexpr int L = kLanes<T>;
  std::vector<PhaseTapList> rows(p.stride_h), cols(p.stride_w);
  int64_t left = 0, right = 0;
  int64_t front = 0, back = 0;  // extreme row offsets over the phases with taps
  bool empty_phase = false, first = true;
  for (int64_t a = 0; a < p.stride_h; ++a) {
    rows[a] = phase_tap_list(a, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h);
    if (rows[a].tap.empty()) empty_phase = true;
    if (rows[a].tap.empty() || rows[a].count == 0) continue;
    front = first ? rows[a].offset.front() : std::min(front, rows[a].offset.front());
    back = first ? rows[a].offset.back() : std::max(back, rows[a].offset.back());
    first = false;
  }
  for (int64_t a = 0; a < p.stride_w; ++a) {
    cols[a] = phase_tap_list(a, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w);
    if (cols[a].tap.empty()) empty_phase = true;
    if (cols[a].tap.empty() || cols[a].count == 0) continue;
    left = std::max(left, -cols[a].offset.front());
    right = std::max(right, cols[a].count - 1 + cols[a].offset.back() - (p.Q - 1));
  }
  at::Tensor gx = at::empty(p.input_sizes(), grad_output.options().memory_format(format));
  if (gx.numel() == 0) return gx;
  // Transposed problem: reduction over K_per_group, outputs C_per_group.
  const Layout l = make_layout<T>(p.groups, p.K_per_group, p.C_per_group);
  const int64_t cb = l.in_per_group * l.GB, cob = l.vecs * L;
  const int64_t pad_w = std::max(left, right), Wp = p.Q + 2 * pad_w;
  const E* wp = weight.const_data_ptr<E>();
  const int64_t w0 = weight.stride(0), w1 = weight.stride(1), w2 = weight.stride(2),
                w3 = weight.stride(3);
  const int64_t Kg = p.K_per_group;
  // Each phase: a unit-stride problem on the slab with its sub-filter.
  struct Phase {
    int64_t ah, aw, rows, cols, steps, slab_offset;
    const PhaseTapList* rt;
    const PhaseTapList* ct;
    int64_t block_offset = 0;  // in a block's packed weights (all phases)
    std::vector<int64_t> off;
  };
  std::vector<Phase> phases;
  for (int64_t ah = 0; ah < p.stride_h; ++ah) {
    for (int64_t aw = 0; aw < p.stride_w; ++aw) {
      const PhaseTapList& rt = rows[ah];
      const PhaseTapList& ct = cols[aw];
      if (rt.tap.empty() || ct.tap.empty() || rt.count == 0 || ct.count == 0) continue;
      const int64_t R = static_cast<int64_t>(rt.tap.size()), S = static_cast<int64_t>(ct.tap.size());
      Phase ph{ah, aw, rt.count, ct.count, R * S * Kg,
               ((rt.offset.front() - front) * Wp + pad_w + ct.offset.front()) * cb, &rt, &ct,
               0, {}};
      ph.off.resize(ph.steps);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t i = 0; i < Kg; ++i)
            ph.off[(r * S + s) * Kg + i] = (r * rt.spacing * Wp + s * ct.spacing) * cb + i * l.GB;
      phases.push_back(std::move(ph));
    }
  }
  // The phases' sub-filters of one block, packed one after the other.
  auto phase_weight_at = [&](const Phase& ph) {
    return [&wp, &ph, w0, w1, w2, w3, Kg](int64_t grp, int64_t cc, int64_t kk, int64_t r,
                                          int64_t s) {
      return simd::Stored<T, E>::get(
          wp[(grp * Kg + kk) * w0 + cc * w1 + ph.rt->tap[r] * w2 + ph.ct->tap[s] * w3]);
    };
  };
  int64_t block_elems = 0;
  for (Phase& ph : phases) {
    ph.block_offset = block_elems;
    block_elems += l.vecs * ph.steps * L;
  }
  auto pack_block = [&](int64_t b, T* dst) {
    for (const Phase& ph : phases) {
      pack_weight_block<T>(l, static_cast<int64_t>(ph.rt->tap.size()),
                           static_cast<int64_t>(ph.ct->tap.size()), phase_weight_at(ph), b,
                           dst + ph.block_offset);
    }
  };
  using Weights = PackedBlocks<T, decltype(pack_block)>;
  const Weights weights(l.blocks, block_elems, pack_block, weight.options());
  // Work items: (image, block, a chunk of phase rows t: input rows
  // [t0 * stride_h, t1 * stride_h)), reading grad_output rows
  // [t0 + front, t1 + back).
  const int64_t sh = p.stride_h, sw = p.stride_w;
  const int64_t phase_rows = (p.H + sh - 1) / sh, span = back - front;
  const int64_t k = rows_per_item(phase_rows, p.N * l.blocks, [&](int64_t rows) {
    return ((rows + span) * Wp * cb + rows * sh * p.W * cob) * static_cast<int64_t>(sizeof(T));
  });
  const int64_t chunks = (phase_rows + k - 1) / k;
  const std::vector<int64_t> in_rel = block_channels(Kg, l.GB, cb, L);
  const std::vector<int64_t> out_rel = block_channels(p.C_per_group, l.GB, cob, L);
  const Image<E> src(grad_output);
  E* o = gx.mutable_data_ptr<E>();
  const int64_t on = gx.stride(0), oc = gx.stride(1), opix = gx.stride(3);
  at::parallel_for(0, l.blocks * p.N * chunks, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> slab((k + span) * Wp * cb), buf(k * sh * p.W * cob);
    typename Weights::Reader block_w(weights);
    for (int64_t item = begin; item < end; ++item) {
      // Items (block, image, chunk): a thread's items share few blocks.
      const int64_t c = item % chunks, n = (item / chunks) % p.N, b = item / (chunks * p.N);
      const T* w_block = block_w.block(b);
      const int64_t t0 = c * k, t1 = std::min(phase_rows, t0 + k);
      const int64_t groups_here = std::min<int64_t>(l.GB, p.groups - b * l.GB);
      // Padding: rows outside grad_output read as zero (copy_block_rows).
      copy_block_rows<T, E>(src, n, b * l.GB * Kg, in_rel.data(), groups_here * Kg, cb,
                            t0 + front, t1 + back, 0, pad_w, Wp, slab.data());
      const int64_t h_rows = std::min(p.H, t1 * sh) - t0 * sh;
      if (empty_phase) std::fill(buf.data(), buf.data() + h_rows * p.W * cob, T(0));
      for (const Phase& ph : phases) {
        const int64_t rows_here = std::min(t1, ph.rows) - t0;
        if (rows_here <= 0) continue;
        chunk_tiles<T>(slab.data() + ph.slab_offset, Wp * cb, cb, ph.off.data(), ph.steps,
                       w_block + ph.block_offset, nullptr,
                       buf.data() + (ph.ah * p.W + ph.aw) * cob, sh * p.W * cob, sw * cob,
                       rows_here, ph.cols, l);
      }
      store_block_pixels<T, E>(buf.data(), cob, h_rows * p.W,
                               o + n * on + b * l.GB * p.C_per_group * oc + t0 * sh * p.W * opix,
                               oc, opix, out_rel.data(), groups_here * p.C_per_group);
    }
  });
  return gx;
}

// grad-weight tiles over a list of steps (count of them), vectors v0 of
// block b (as many as fit a tile), on a chunk's slabs: tiles of uc steps,
// a short tile repeating its last step.
template <typename T>
void weight_list_tiles(const T* xs, const T* gs, int64_t rows, const Conv2dShape& p, int64_t Wp,
                       int64_t cb, int64_t cob, const int64_t* list, int64_t count_all,
                       const int64_t* off, T* gw, int64_t b, int64_t v0, const Layout& l,
                       int64_t steps, bool accumulate) {
  constexpr int L = kLanes<T>;
  const int nb = static_cast<int>(std::min<int64_t>(kMaxNB, l.vecs - v0));
  const int uc = ur_for(nb);
  const WeightTileFn<T> fn = weight_tile_fn<T>(l.GB, nb);
  for (int64_t i0 = 0; i0 < count_all; i0 += uc) {
    const int count = static_cast<int>(std::min<int64_t>(uc, count_all - i0));
    int64_t xoff[12];
    T* dst[12];
    for (int u = 0; u < uc; ++u) {
      const int64_t i = list[i0 + std::min(u, count - 1)];  // short tile: repeat the last step
      xoff[u] = off[i];
      dst[u] = gw + ((b * l.vecs + v0) * steps + i) * L;
    }
    fn(xs, gs + v0 * L, rows, p.Q, p.stride_h * Wp * cb, p.stride_w * cb, p.Q * cob, cob, xoff,
       dst, steps * L, accumulate);
  }
}

// grad-weight fused with its layout copies: work items (block b, a share of
// its (vector group, step tile) units) sweep the pixels in (n, oh, ow) order
// in chunks of output rows; per chunk the input rows it reads and the
// grad_output rows are copied (interleaved) into per-thread slabs and every
// unit's tile sums the chunk into its packed result. Each result element is
// one sequential sum over all pixels in that order, whatever the chunking
// or the thread count. gw: packed [blocks][vecs][R*S*Cg][L].
template <typename T, typename S>
void backward_weight_fused(const Image<S>& x, const Image<S>& gy, T* gw, const Layout& l,
                           const Conv2dShape& p) {
  constexpr int L = kLanes<T>;
  const int64_t cb = l.in_per_group * l.GB, cob = l.vecs * L;
  const int64_t Wp = p.W + 2 * p.pad_w;
  const int64_t steps = p.R * p.S * l.in_per_group;
  const std::vector<int64_t> off = step_offsets(l, p, Wp, cb);
  const std::vector<int64_t> in_rel = block_channels(l.in_per_group, l.GB, cb, L);
  const std::vector<int64_t> out_rel = block_channels(l.out_per_group, l.GB, cob, L);
  const int64_t vec_groups = (l.vecs + kMaxNB - 1) / kMaxNB;
  const int64_t Cg = l.in_per_group, RS = p.R * p.S;
  // Units of work: tap tiles (taps x a chunk of channels), else step tiles
  // of uc_max consecutive steps per vector group.
  TapTileShape shape;
  const WeightTapTileFn<T> tap_fn = weight_tap_tile_fn<T>(l.GB, Cg, l.vecs, &shape);
  const int64_t uc_max = tile_pixels(static_cast<int>(std::min<int64_t>(l.vecs, kMaxNB)));
  const int64_t tap_tiles = tap_fn != nullptr ? (RS + shape.taps - 1) / shape.taps : 0;
  const int64_t channel_chunks = tap_fn != nullptr ? Cg / shape.channels : 0;
  const int64_t step_tiles = (steps + uc_max - 1) / uc_max;
  const int64_t units = tap_fn != nullptr ? tap_tiles * channel_chunks : vec_groups * step_tiles;
  // Shares per block: enough items for the threads (each share copies the
  // block's slabs again, so no more than that).
  const int64_t threads = at::get_num_threads();
  const int64_t shares =
      std::min(units, std::max<int64_t>(1, (2 * threads + l.blocks - 1) / l.blocks));
  auto rows_in = [&](int64_t k) { return (k - 1) * p.stride_h + (p.R - 1) * p.dilation_h + 1; };
  constexpr int64_t kChunkBytes = 256 * 1024;
  int64_t k = p.P;
  while (k > 1 && (rows_in(k) * Wp * cb + k * p.Q * cob) * static_cast<int64_t>(sizeof(T)) >
                      kChunkBytes) {
    k = (k + 1) / 2;
  }
  const int64_t chunks = (p.P + k - 1) / k;
  // Input rows a chunk shares with the previous one (moved, not copied again).
  const int64_t shared = std::max<int64_t>(0, (p.R - 1) * p.dilation_h + 1 - p.stride_h);
  at::parallel_for(0, l.blocks * shares, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> xs(rows_in(k) * Wp * cb), gs(k * p.Q * cob);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / shares, share = item % shares;
      const int64_t u0 = share * units / shares, u1 = (share + 1) * units / shares;
      const int64_t groups_here = std::min<int64_t>(l.GB, p.groups - b * l.GB);
      for (int64_t n = 0; n < p.N; ++n) {
        for (int64_t c = 0; c < chunks; ++c) {
          const int64_t oh0 = c * k, oh1 = std::min(p.P, oh0 + k), rows = oh1 - oh0;
          const int64_t kept = c > 0 ? std::min(shared, rows_in(rows)) : 0;
          if (kept > 0) {
            std::memmove(xs.data(), xs.data() + (rows_in(k) - kept) * Wp * cb,
                         sizeof(T) * kept * Wp * cb);
          }
          copy_block_rows<T, S>(x, n, b * l.GB * l.in_per_group, in_rel.data(),
                                groups_here * l.in_per_group, cb, oh0 * p.stride_h + kept,
                                oh0 * p.stride_h + rows_in(rows), p.pad_h, p.pad_w, Wp,
                                xs.data() + kept * Wp * cb);
          copy_block_rows<T, S>(gy, n, b * l.GB * l.out_per_group, out_rel.data(),
                                groups_here * l.out_per_group, cob, oh0, oh1, 0, 0, p.Q,
                                gs.data());
          const bool accumulate = n > 0 || c > 0;
          for (int64_t unit = u0; unit < u1; ++unit) {
            if (tap_fn != nullptr) {
              const int64_t t0 = (unit / channel_chunks) * shape.taps;
              const int64_t c0 = (unit % channel_chunks) * shape.channels;
              const int64_t t1 = std::min(RS, t0 + shape.taps);
              if (t1 - t0 == shape.taps) {
                int64_t o[16];
                for (int t = 0; t < shape.taps; ++t) o[t] = off[(t0 + t) * Cg + c0];
                tap_fn(xs.data(), gs.data(), rows, p.Q, p.stride_h * Wp * cb, p.stride_w * cb,
                       p.Q * cob, cob, o, gw + (b * steps + t0 * Cg + c0) * L, Cg * L,
                       accumulate);
                continue;
              }
              // The last taps, fewer than a tile: listed steps.
              std::vector<int64_t> list;
              for (int64_t t = t0; t < t1; ++t)
                for (int64_t cc = 0; cc < shape.channels; ++cc) list.push_back(t * Cg + c0 + cc);
              weight_list_tiles<T>(xs.data(), gs.data(), rows, p, Wp, cb, cob, list.data(),
                                   static_cast<int64_t>(list.size()), off.data(), gw, b, 0, l,
                                   steps, accumulate);
              continue;
            }
            const int64_t st = unit % step_tiles, v0 = (unit / step_tiles) * kMaxNB;
            const int64_t i_begin = st * uc_max, i_end = std::min(steps, i_begin + uc_max);
            int64_t list[12];
            for (int64_t i = i_begin; i < i_end; ++i) list[i - i_begin] = i;
            weight_list_tiles<T>(xs.data(), gs.data(), rows, p, Wp, cb, cob, list,
                                 i_end - i_begin, off.data(), gw, b, v0, l, steps, accumulate);
          }
        }
      }
    }
  });
}

template <typename T, typename S = T>
at::Tensor backward_weight_op(const at::Tensor& grad_output, const at::Tensor& input,
                              const Conv2dShape& p) {
  constexpr int L = kLanes<T>;
  const Layout l = make_layout<T>(p.groups, p.C_per_group, p.K_per_group);
  const int64_t steps = p.R * p.S * p.C_per_group;
  if (p.N * p.P * p.Q == 0) return at::zeros(p.weight_sizes(), input.options());
  at::Tensor packed = at::empty({l.blocks, l.vecs, steps, L}, compute_options<T>(input.options()));
  backward_weight_fused<T, S>(Image<S>(input), Image<S>(grad_output),
                              packed.mutable_data_ptr<T>(), l, p);
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
