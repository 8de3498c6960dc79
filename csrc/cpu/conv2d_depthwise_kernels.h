// Depthwise convolution on the CPU (one input and one output channel per
// group, float and double): memory-bound, so one (n, c) plane at a time,
// copied into a zero-padded buffer split into stride phases along the width
// (column j*stride + phase at [phase][j]) so every tap reads a contiguous
// vector of output columns, for any stride and dilation. Forward, grad-input
// and grad-weight of one plane; conv2d_*_cpu.cpp run them over the planes.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "conv2d_cpu_common.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {

// The phase-split buffer of one plane: Hp padded rows x stride_w phases x
// row_len elements.
struct DepthwisePlane {
  int64_t Hp, row_len;
};

inline DepthwisePlane depthwise_plane(const Conv2dShape& p, int vector_size) {
  // Rows and columns reached by any tap of any output (padding included).
  const int64_t Wp = input_span(p.Q, p.stride_w, p.S, p.dilation_w);
  // Whole vectors may run past Q: room for one more vector per phase row.
  return DepthwisePlane{input_span(p.P, p.stride_h, p.R, p.dilation_h),
                        (Wp + p.stride_w - 1) / p.stride_w + vector_size};
}

// Copies plane x (strides sh, sw) into buf as zero-padded, width-phase-split
// rows. Only input positions are written: the padding cells are zeroed once
// per buffer (zero_padding) and stay zero for every later plane.
template <typename T>
void fill_phase_split(const T* x, int64_t sh, int64_t sw, const Conv2dShape& p, const DepthwisePlane& d, T* buf) {
  for (int64_t hp = 0; hp < d.Hp; ++hp) {
    const int64_t h = hp - p.pad_h;
    if (h < 0 || h >= p.H) continue;
    const T* src = x + h * sh;
    if (p.stride_w == 1) {
      T* dst = buf + hp * d.row_len + p.pad_w;
      const int64_t n = std::min(p.W, d.row_len - p.pad_w);
      if (sw == 1) {
        std::memcpy(dst, src, sizeof(T) * n);
      } else {
        for (int64_t w = 0; w < n; ++w) dst[w] = src[w * sw];
      }
      continue;
    }
    for (int64_t phase = 0; phase < p.stride_w; ++phase) {
      T* dst = buf + (hp * p.stride_w + phase) * d.row_len;
      // column j * stride_w + phase of the padded row is input column w:
      int64_t j = 0;
      int64_t w = phase - p.pad_w;
      if (w < 0) {
        j = (-w + p.stride_w - 1) / p.stride_w;
        w += j * p.stride_w;
      }
      for (; w < p.W && j < d.row_len; ++j, w += p.stride_w) dst[j] = src[w * sw];
    }
  }
}

// Element offset in the phase-split buffer of every tap (r, s), relative to
// the first tap of an output row.
inline std::vector<int64_t> depthwise_tap_offsets(const Conv2dShape& p, const DepthwisePlane& d) {
  std::vector<int64_t> offsets(p.R * p.S);
  for (int64_t r = 0; r < p.R; ++r) {
    for (int64_t s = 0; s < p.S; ++s) {
      const int64_t col = s * p.dilation_w;
      offsets[r * p.S + s] =
          (r * p.dilation_h * p.stride_w + col % p.stride_w) * d.row_len + col / p.stride_w;
    }
  }
  return offsets;
}

// Output plane (row stride out_row, contiguous columns) from the phase-split
// buffer. tap_weight: R*S broadcast weights of this channel.
template <typename T>
void depthwise_plane_forward(const T* buf, const int64_t* tap_offset,
                             const typename simd::Vec<T>::type* tap_weight, T bias, T* out,
                             int64_t out_row, const Conv2dShape& p, const DepthwisePlane& d) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  constexpr int UV = 4;  // independent vectors in flight (FMA latency)
  const int64_t taps = p.R * p.S;
  const typename V::type b = V::broadcast(bias);
  for (int64_t oh = 0; oh < p.P; ++oh) {
    const T* row = buf + oh * p.stride_h * p.stride_w * d.row_len;
    T* o = out + oh * out_row;
    int64_t q = 0;
    for (; q + UV * L <= p.Q; q += UV * L) {
      typename V::type acc[UV];
      for (int u = 0; u < UV; ++u) acc[u] = b;
      for (int64_t t = 0; t < taps; ++t) {
        const T* src = row + tap_offset[t] + q;
        for (int u = 0; u < UV; ++u) acc[u] = simd::fmadd(V::load(src + u * L), tap_weight[t], acc[u]);
      }
      for (int u = 0; u < UV; ++u) V::store(o + q + u * L, acc[u]);
    }
    for (; q < p.Q; q += L) {
      typename V::type acc = b;
      for (int64_t t = 0; t < taps; ++t) {
        acc = simd::fmadd(V::load(row + tap_offset[t] + q), tap_weight[t], acc);
      }
      const int64_t lanes = std::min<int64_t>(L, p.Q - q);
      if (lanes == L) {
        V::store(o + q, acc);
      } else {
        V::store_partial(o + q, acc, static_cast<int>(lanes));
      }
    }
  }
}

// Depthwise grad-input of one plane: every tap adds w * gy[oh][ow..] into a
// zeroed, padded, phase-split buffer (contiguous vectors for any stride),
// then the input positions are read back out of it.
template <typename T>
void depthwise_plane_backward_input(const T* gy, int64_t gy_row, const int64_t* tap_offset,
                                    const typename simd::Vec<T>::type* tap_weight, T* buf,
                                    T* gx, int64_t gx_row, const Conv2dShape& p, const DepthwisePlane& d) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  std::fill(buf, buf + d.Hp * p.stride_w * d.row_len, T(0));
  const int64_t taps = p.R * p.S;
  for (int64_t oh = 0; oh < p.P; ++oh) {
    T* row = buf + oh * p.stride_h * p.stride_w * d.row_len;
    const T* g = gy + oh * gy_row;
    for (int64_t q = 0; q < p.Q; q += L) {
      const int64_t lanes = std::min<int64_t>(L, p.Q - q);
      const typename V::type gv =
          lanes == L ? V::load(g + q) : V::load_partial(g + q, static_cast<int>(lanes));
      for (int64_t t = 0; t < taps; ++t) {
        T* dst = row + tap_offset[t] + q;
        V::store(dst, simd::fmadd(gv, tap_weight[t], V::load(dst)));
      }
    }
  }
  // Read back: input (h, w) is padded (h + pad_h, w + pad_w).
  for (int64_t h = 0; h < p.H; ++h) {
    const int64_t hp = h + p.pad_h;
    T* out = gx + h * gx_row;
    if (hp >= d.Hp) {
      std::fill(out, out + p.W, T(0));
      continue;
    }
    for (int64_t w = 0; w < p.W; ++w) {
      const int64_t col = w + p.pad_w;
      const int64_t j = col / p.stride_w;
      out[w] = j < d.row_len ? buf[(hp * p.stride_w + col % p.stride_w) * d.row_len + j] : T(0);
    }
  }
}

// Depthwise grad-weight of one plane pair, added to acc[taps] (vectors; the
// caller reduces lanes at the end): acc[t] += gy[oh][ow..] * x(tap t).
template <typename T>
void depthwise_plane_backward_weight(const T* buf, const T* gy, int64_t gy_row,
                                     const int64_t* tap_offset, typename simd::Vec<T>::type* acc,
                                     const Conv2dShape& p, const DepthwisePlane& d) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  const int64_t taps = p.R * p.S;
  for (int64_t oh = 0; oh < p.P; ++oh) {
    const T* row = buf + oh * p.stride_h * p.stride_w * d.row_len;
    const T* g = gy + oh * gy_row;
    for (int64_t q = 0; q < p.Q; q += L) {
      const int64_t lanes = std::min<int64_t>(L, p.Q - q);
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
