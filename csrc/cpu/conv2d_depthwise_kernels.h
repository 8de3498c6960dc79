// Depthwise convolution kernels (groups == C, one filter per channel), NCHW
// and channels_last, float and double, any stride/dilation/padding.
//
// NCHW: one (n, c) plane at a time. The plane is copied into a zero-padded
// buffer split into stride phases along BOTH axes: padded position (hp, wp)
// lives at [hp % sh][wp % sw][hp / sh][wp / sw], rows of row_len elements.
// Then output (oh, ow) at tap (r, s) reads flat element
//     tap_offset[r][s] + oh * row_len + ow
// for every stride and dilation: consecutive outputs of a row are
// consecutive elements, and so are outputs of consecutive rows once the
// row_len - Q junk columns between them are counted. So a vector of output
// positions can run along a row ("row" mode: vectors start at each row, the
// last one per row is partial) or along the flattened plane ("flat" mode:
// vectors cover rows and their junk columns alike, results go to a scratch
// plane whose rows are then copied out). Flat mode fills vectors on small
// planes (7x7: 4 vectors of 16 instead of 7 vectors 7/16 full); the plan
// picks whichever needs fewer vectors. Tiles of up to 8 vectors, possibly
// spanning rows, are in flight at once to cover FMA latency; each tap
// broadcasts its weight from memory (a load, not a shuffle) and feeds every
// vector of the tile with a memory-operand FMA.
//
// channels_last: vectors along the channels, no layout change. Where the
// padded input of one image's L channels fits in L2 (channel_blocks), its
// pixel vectors are copied into a zero-padded [Hp][Wp][L] block and the
// block's tiles (sliding windows, as for narrow NCHW planes below) write the
// NHWC output; else natively: a tile of up to 8 output pixels of one row x
// one channel vector; interior pixels run without bounds checks, border
// pixels skip the taps outside the image.
//
// Each output element is summed by one thread, taps in a fixed order: the
// results do not depend on thread count or batch split.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "../conv2d_params.h"
#include "conv2d_cpu_common.h"  // grain_for, valid_output_range, phase_tap_list
#include "conv2d_layout_kernels.h"  // transpose_square
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h
namespace depthwise {

inline constexpr int kMaxTileVectors = 8;

// One vector of zeros: what a tap outside the image reads.
template <typename T>
alignas(64) inline constexpr T kZeroVector[simd::Vec<T>::size] = {};

// One plane problem: an input plane of H x W placed at (top, left) in an
// otherwise zero padded plane, P x Q outputs. Forward: top/left = padding.
struct PlaneGeometry {
  int64_t H, W, P, Q, R, S, stride_h, stride_w, dilation_h, dilation_w, top, left;
  int64_t Hh = 0, row_len = 0;  // rows per phase, elements per phase row
  // Input rows that land in the buffer: [h0, h1), row h at row_start[h - h0]
  // (precomputed: a division per row costs more than a small plane's copy).
  int64_t h0 = 0, h1 = 0;
  std::vector<int64_t> row_start;
  int64_t phase_elems() const { return Hh * row_len; }
  int64_t buffer_elems(int L) const { return stride_h * stride_w * phase_elems() + 2 * L; }
};

inline PlaneGeometry plane_geometry(int64_t H, int64_t W, int64_t P, int64_t Q, int64_t R,
                                    int64_t S, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                                    int64_t top, int64_t left) {
  PlaneGeometry g{H, W, P, Q, R, S, sh, sw, dh, dw, top, left};
  g.Hh = P + ((R - 1) * dh) / sh;
  g.row_len = Q + ((S - 1) * dw) / sw;
  g.h0 = std::min(H, std::max<int64_t>(0, -top));
  g.h1 = g.h0;
  for (int64_t h = g.h0; h < H && (h + top) / sh < g.Hh; ++h, ++g.h1) {
    const int64_t hp = h + top;
    g.row_start.push_back((hp % sh) * sw * g.phase_elems() + (hp / sh) * g.row_len);
  }
  return g;
}

// Flat element offset of every tap (r, s) in the phase-split buffer.
inline std::vector<int64_t> tap_offsets(const PlaneGeometry& g) {
  std::vector<int64_t> off(g.R * g.S);
  for (int64_t r = 0; r < g.R; ++r) {
    const int64_t row = r * g.dilation_h;
    for (int64_t s = 0; s < g.S; ++s) {
      const int64_t col = s * g.dilation_w;
      const int64_t phase = (row % g.stride_h) * g.stride_w + col % g.stride_w;
      off[r * g.S + s] =
          phase * g.phase_elems() + (row / g.stride_h) * g.row_len + col / g.stride_w;
    }
  }
  return off;
}

// dst[0, n) = src[0, n) in vectors, the tail masked: rows of small planes
// are a few elements long, where a memcpy call costs more than the copy.
template <typename T>
inline void copy_row(T* dst, const T* src, int64_t n) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  int64_t i = 0;
  for (; i + L <= n; i += L) V::store(dst + i, V::load(src + i));
  if (i < n) V::store_partial(dst + i, V::load_partial(src + i, static_cast<int>(n - i)), static_cast<int>(n - i));
}

// Copies plane x (row stride xh, column stride xw) into the phase-split
// buffer. Only cells that hold input are written; the others are zeroed once
// when the buffer is made and stay zero for every plane of the same geometry.
template <typename T>
void fill_plane(const T* x, int64_t xh, int64_t xw, const PlaneGeometry& g, T* buf) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  // input columns [w0, w1) land inside the rows
  const int64_t w0 = std::max<int64_t>(0, -g.left);
  const int64_t w1 = std::min<int64_t>(g.W, g.row_len * g.stride_w - g.left);
  if (w0 >= w1) return;
  for (int64_t h = g.h0; h < g.h1; ++h) {
    const T* src = x + h * xh;
    T* rows = buf + g.row_start[h - g.h0];
    if (g.stride_w == 1) {
      T* dst = rows + w0 + g.left;
      if (xw == 1) {
        copy_row(dst, src + w0, w1 - w0);
      } else {
        for (int64_t w = w0; w < w1; ++w) dst[w - w0] = src[w * xw];
      }
      continue;
    }
    int64_t w = w0;
    if (g.stride_w == 2 && xw == 1) {
      // Pairs of vectors de-interleaved into even and odd padded columns.
      using I = typename simd::IndexVec<T>::type;
      const I even = simd::IndexVec<T>::even(), odd = even + 1;
      T* ph[2] = {rows, rows + g.phase_elems()};
      for (; w + 2 * L <= w1; w += 2 * L) {
        const typename V::type a = V::load(src + w), b = V::load(src + w + L);
        const int64_t wp = w + g.left;
        V::store(ph[wp & 1] + wp / 2, __builtin_shuffle(a, b, even));
        V::store(ph[(wp + 1) & 1] + (wp + 1) / 2, __builtin_shuffle(a, b, odd));
      }
      if (w < w1) {  // the rest (< 2L elements) through masked loads and stores
        const int rest = static_cast<int>(w1 - w);
        const typename V::type a = V::load_partial(src + w, std::min(rest, L));
        const typename V::type b =
            rest > L ? V::load_partial(src + w + L, rest - L) : V::zero();
        const int64_t wp = w + g.left;
        V::store_partial(ph[wp & 1] + wp / 2, __builtin_shuffle(a, b, even), (rest + 1) / 2);
        if (rest > 1) {
          V::store_partial(ph[(wp + 1) & 1] + (wp + 1) / 2, __builtin_shuffle(a, b, odd), rest / 2);
        }
        w = w1;
      }
    }
    for (; w < w1; ++w) {
      const int64_t wp = w + g.left;
      rows[(wp % g.stride_w) * g.phase_elems() + wp / g.stride_w] = src[w * xw];
    }
  }
}

// One tile of UV output vectors; vector u reads buf + vec_off[u] (+ tap
// offset) and is written to out[u] (lanes[u] lanes: row ends are partial).
// accumulate: start from out[u] instead of bias.
template <typename T, int UV>
inline void plane_tile(const T* buf, const int64_t* vec_off, T* const* out, const int* lanes,
                       const int64_t* tap_off, const T* w, int64_t taps, T bias, bool accumulate) {
  using V = simd::Vec<T>;
  typename V::type acc[UV];
  for (int u = 0; u < UV; ++u) {
    acc[u] = accumulate ? simd::load_upto<T>(out[u], lanes[u]) : V::broadcast(bias);
  }
  const T* src[UV];
  for (int u = 0; u < UV; ++u) src[u] = buf + vec_off[u];
  for (int64_t t = 0; t < taps; ++t) {
    const typename V::type wv = V::broadcast(w[t]);
    const int64_t o = tap_off[t];
    for (int u = 0; u < UV; ++u) acc[u] = simd::fmadd(V::load(src[u] + o), wv, acc[u]);
  }
  for (int u = 0; u < UV; ++u) {
    simd::store_upto<T>(out[u], acc[u], lanes[u]);
  }
}

// The vectors of one plane (same for every plane of a call): source offset
// in the buffer, destination offset (in the output plane, or in the scratch
// plane in flat mode) and lanes.
struct PlanePlan {
  PlaneGeometry g;
  std::vector<int64_t> tap_off;
  std::vector<int64_t> src, dst;
  std::vector<int> lanes;
  bool flat = false;     // vectors run over the flattened plane, junk columns included
  bool row_blocks = false;  // row plan at unit vertical stride and dilation: row_block_tile
  bool direct = false;   // results go straight to a contiguous P x Q plane; else to
                         // scratch [P][row_len] (dst == src), whose rows are then copied
  int64_t scratch_elems(int L) const { return direct ? 0 : g.P * g.row_len + L; }
};

// allow_direct: the caller's output plane is contiguous P x Q.
inline PlanePlan plan_plane(const PlaneGeometry& g, int L, bool allow_direct) {
  PlanePlan plan;
  plan.g = g;
  plan.tap_off = tap_offsets(g);
  const int64_t row_vectors = g.P * ((g.Q + L - 1) / L);
  const int64_t flat_count = (g.P - 1) * g.row_len + g.Q;
  const int64_t flat_vectors = (flat_count + L - 1) / L;
  plan.flat = flat_vectors < row_vectors;
  plan.direct = allow_direct && !plan.flat;
  plan.row_blocks = !plan.flat && g.stride_h == 1 && g.dilation_h == 1 && g.R > 1;
  if (plan.flat) {
    for (int64_t m = 0; m < flat_count; m += L) {
      plan.src.push_back(m);
      plan.dst.push_back(m);
      plan.lanes.push_back(L);  // the scratch plane has room for whole vectors
    }
  } else {
    for (int64_t oh = 0; oh < g.P; ++oh) {
      for (int64_t q = 0; q < g.Q; q += L) {
        plan.src.push_back(oh * g.row_len + q);
        plan.dst.push_back(plan.direct ? oh * g.Q + q : oh * g.row_len + q);
        plan.lanes.push_back(static_cast<int>(std::min<int64_t>(L, g.Q - q)));
      }
    }
  }
  return plan;
}

// Row reuse at unit vertical stride and dilation: RB output rows x UV
// vectors of one column range. Output row j at kernel row r reads input row
// i = j + r, so each input row's vectors are loaded once per kernel column
// and feed every output row of the block that uses them (up to RB FMAs per
// load instead of one). Each output still sums its taps in (r, s) order:
// results are identical to plane_tile's. base: input row of output row 0 at
// the block's first column; col_off[s]: offset of kernel column s;
// out: output row 0 (rows out_row apart); the last vector has last_lanes.
inline constexpr int kRowBlockRows = simd::kVectorBytes == 64 ? 4 : 2;
inline constexpr int kRowBlockVectors = 4;

template <typename T, int RB, int UV>
inline void row_block_tile(const T* base, int64_t row_len, const int64_t* col_off, int64_t R,
                           int64_t S, const T* w, T bias, T* out, int64_t out_row, int last_lanes,
                           bool accumulate) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  typename V::type acc[RB][UV];
  for (int j = 0; j < RB; ++j) {
    for (int u = 0; u < UV; ++u) {
      T* o = out + j * out_row + u * L;
      const int lanes = u == UV - 1 ? last_lanes : L;
      acc[j][u] = accumulate ? simd::load_upto<T>(o, lanes) : V::broadcast(bias);
    }
  }
  for (int64_t i = 0; i < R + RB - 1; ++i) {
    const T* row = base + i * row_len;
    const bool all_rows = i >= RB - 1 && i < R;  // every output row j uses kernel row i - j
    for (int64_t s = 0; s < S; ++s) {
      typename V::type x[UV];
      for (int u = 0; u < UV; ++u) x[u] = V::load(row + col_off[s] + u * L);
      for (int j = 0; j < RB; ++j) {
        const int64_t r = i - j;
        if (!all_rows && (r < 0 || r >= R)) continue;
        const typename V::type wv = V::broadcast(w[r * S + s]);
        for (int u = 0; u < UV; ++u) acc[j][u] = simd::fmadd(x[u], wv, acc[j][u]);
      }
    }
  }
  for (int j = 0; j < RB; ++j) {
    for (int u = 0; u < UV; ++u) {
      T* o = out + j * out_row + u * L;
      simd::store_upto<T>(o, acc[j][u], u < UV - 1 ? L : last_lanes);
    }
  }
}

// f.template operator()<N>() for N = n (1..4).
template <typename F>
inline void with_small_size(int n, F&& f) {
  switch (n) {
    case 4: f.template operator()<4>(); break;
    case 3: f.template operator()<3>(); break;
    case 2: f.template operator()<2>(); break;
    default: f.template operator()<1>(); break;
  }
}

template <typename T>
void plane_forward_row_blocks(const PlanePlan& plan, const T* buf, const T* w, T bias, T* base,
                              bool accumulate) {
  constexpr int L = simd::Vec<T>::size;
  const PlaneGeometry& g = plan.g;
  const int64_t out_row = plan.direct ? g.Q : g.row_len;
  const int64_t* col_off = plan.tap_off.data();  // kernel row 0: the column offsets
  for (int64_t oh = 0; oh < g.P; oh += kRowBlockRows) {
    const int rb = static_cast<int>(std::min<int64_t>(kRowBlockRows, g.P - oh));
    for (int64_t q = 0; q < g.Q; q += kRowBlockVectors * L) {
      const int64_t left = g.Q - q;
      const int uv = static_cast<int>(std::min<int64_t>(kRowBlockVectors, (left + L - 1) / L));
      const int last = static_cast<int>(left - (uv - 1) * L >= L ? L : left - (uv - 1) * L);
      const T* b = buf + oh * g.row_len + q;
      T* o = base + oh * out_row + q;
      with_small_size(rb, [&]<int RB>() {
        with_small_size(uv, [&]<int UV>() {
          if constexpr (RB <= kRowBlockRows) {
            row_block_tile<T, RB, UV>(b, g.row_len, col_off, g.R, g.S, w, bias, o, out_row, last,
                                      accumulate);
          }
        });
      });
    }
  }
}

// Output plane of the plane in `buf`, written to out[oh * out_row + ow *
// out_col] (direct plans: out_row == Q, out_col == 1). Tiles of 8 vectors
// (spanning rows) while they last, then one tile of the rest. accumulate:
// add to the previous call's result (same out and scratch); write_out: copy
// the scratch plane out (the last call of a sum).
template <typename T>
void plane_forward(const PlanePlan& plan, const T* buf, const T* w, T bias, T* out,
                   int64_t out_row, int64_t out_col, T* scratch, bool accumulate = false,
                   bool write_out = true) {
  const int64_t nv = static_cast<int64_t>(plan.src.size());
  const int64_t taps = plan.g.R * plan.g.S;
  T* base = plan.direct ? out : scratch;
  if (plan.row_blocks) {
    plane_forward_row_blocks(plan, buf, w, bias, base, accumulate);
  }
  for (int64_t v = plan.row_blocks ? nv : 0; v < nv;) {
    const int n = static_cast<int>(std::min<int64_t>(kMaxTileVectors, nv - v));
    T* outs[kMaxTileVectors];
    for (int u = 0; u < n; ++u) outs[u] = base + plan.dst[v + u];
    const int64_t* off = plan.src.data() + v;
    const int* last = plan.lanes.data() + v;
    const int64_t* to = plan.tap_off.data();
    switch (n) {
      case 8: plane_tile<T, 8>(buf, off, outs, last, to, w, taps, bias, accumulate); break;
      case 7: plane_tile<T, 7>(buf, off, outs, last, to, w, taps, bias, accumulate); break;
      case 6: plane_tile<T, 6>(buf, off, outs, last, to, w, taps, bias, accumulate); break;
      case 5: plane_tile<T, 5>(buf, off, outs, last, to, w, taps, bias, accumulate); break;
      case 4: plane_tile<T, 4>(buf, off, outs, last, to, w, taps, bias, accumulate); break;
      case 3: plane_tile<T, 3>(buf, off, outs, last, to, w, taps, bias, accumulate); break;
      case 2: plane_tile<T, 2>(buf, off, outs, last, to, w, taps, bias, accumulate); break;
      default: plane_tile<T, 1>(buf, off, outs, last, to, w, taps, bias, accumulate); break;
    }
    v += n;
  }
  if (plan.direct || !write_out) return;
  for (int64_t oh = 0; oh < plan.g.P; ++oh) {
    const T* src = scratch + oh * plan.g.row_len;
    T* dst = out + oh * out_row;
    if (out_col == 1) {
      copy_row(dst, src, plan.g.Q);
    } else {
      for (int64_t q = 0; q < plan.g.Q; ++q) dst[q * out_col] = src[q];
    }
  }
}

inline PlaneGeometry forward_geometry(const Conv2dShape& p) {
  return plane_geometry(p.H, p.W, p.P, p.Q, p.R, p.S, p.stride_h, p.stride_w, p.dilation_h,
                        p.dilation_w, p.pad_h, p.pad_w);
}

// Forward on NCHW-like tensors (any strides): out is contiguous N x K x P x Q.
// groups == C with K = m * C (m = K_per_group): output channel k reads
// input channel k / m.
// ep (ep->out == out): conv2d_fused's epilogue on each plane as soon as it
// is written (in L1/L2).
template <typename T>
void forward_planes(const at::Tensor& input, const T* w, const T* bias, T* out,
                    const Conv2dShape& p, const StoreEpilogue<T>* ep = nullptr) {
  constexpr int L = simd::Vec<T>::size;
  const PlanePlan plan = plan_plane(forward_geometry(p), L, true);
  const T* x = input.const_data_ptr<T>();
  const int64_t sn = input.stride(0), sc = input.stride(1), sh = input.stride(2),
                sw = input.stride(3);
  const int64_t taps = p.R * p.S;
  const int64_t buf_elems = plan.g.buffer_elems(L);
  const int64_t scratch_elems = plan.scratch_elems(L);
  const int64_t m = p.K_per_group;
  at::parallel_for(0, p.N * p.K, grain_for(p.P * p.Q * taps), [&](int64_t begin, int64_t end) {
    std::vector<T> buf(buf_elems, T(0));  // padding cells stay zero
    std::vector<T> scratch(scratch_elems);
    int64_t filled = -1;  // input plane n * C + c now in buf
    for (int64_t nk = begin; nk < end; ++nk) {
      const int64_t n = nk / p.K, k = nk % p.K, c = k / m;
      if (filled != n * p.C + c) {
        fill_plane(x + n * sn + c * sc, sh, sw, plan.g, buf.data());
        filled = n * p.C + c;
      }
      plane_forward(plan, buf.data(), w + k * taps, bias != nullptr ? bias[k] : T(0),
                    out + nk * p.P * p.Q, p.Q, 1, scratch.data());
      if (ep != nullptr) epilogue_run<T, false>(*ep, out + nk * p.P * p.Q, p.P * p.Q, k);
    }
  });
}

// ---------------------------------------------------------------------------
// NCHW backward.
//
// grad-input: input position h = i * stride + a (phase a) receives taps r
// with (a + pad - r * dilation) divisible by the stride, evenly spaced, from
// grad_output rows i + offset (phase_tap_list, conv2d_cpu_common.h). So each of
// the stride_h x stride_w phases is a unit-stride forward problem on the
// grad_output plane with its own sub-filter (rotated: taps by increasing
// offset) and dilation (the tap spacing), written to every stride-th element
// of grad_input; at stride 1 the one phase is the forward with the filter
// rotated by 180 degrees. Phases no tap reaches are zero.

struct InputGradPhase {
  int64_t ah, aw;
  PlanePlan plan;             // empty (no vectors) when no tap reaches the phase
  std::vector<int64_t> taps;  // sub-filter: index r * S + s of each tap, in plan order
};

inline std::vector<InputGradPhase> input_grad_phases(const Conv2dShape& p, int L) {
  std::vector<InputGradPhase> phases;
  for (int64_t ah = 0; ah < p.stride_h; ++ah) {
    const PhaseTapList rt = phase_tap_list(ah, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h);
    for (int64_t aw = 0; aw < p.stride_w; ++aw) {
      const PhaseTapList ct = phase_tap_list(aw, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w);
      InputGradPhase ph{ah, aw, {}, {}};
      if (rt.count == 0 || ct.count == 0) continue;  // no input positions in this phase
      if (!rt.tap.empty() && !ct.tap.empty()) {
        const int64_t Rt = static_cast<int64_t>(rt.tap.size()), St = static_cast<int64_t>(ct.tap.size());
        ph.plan = plan_plane(plane_geometry(p.P, p.Q, rt.count, ct.count, Rt, St, 1, 1, rt.spacing,
                                            ct.spacing, -rt.offset.front(), -ct.offset.front()),
                             L, p.stride_h == 1 && p.stride_w == 1);
        for (int64_t m = 0; m < Rt; ++m)
          for (int64_t k = 0; k < St; ++k) ph.taps.push_back(rt.tap[m] * p.S + ct.tap[k]);
      } else {
        ph.plan.g = plane_geometry(p.P, p.Q, rt.count, ct.count, 1, 1, 1, 1, 1, 1, 0, 0);
      }
      phases.push_back(std::move(ph));
    }
  }
  return phases;
}

// gy: any strides; w: contiguous K x R x S; gx: contiguous N x C x H x W.
// With a channel multiplier m, grad-input channel c sums the m output
// channels c * m + j in order j = 0, 1, ...
template <typename T>
void backward_input_planes(const at::Tensor& gy, const T* w, T* gx, const Conv2dShape& p) {
  constexpr int L = simd::Vec<T>::size;
  const std::vector<InputGradPhase> phases = input_grad_phases(p, L);
  const int64_t taps = p.R * p.S;
  // Sub-filters of every phase, per channel: [phase][C][taps of the phase].
  std::vector<std::vector<T>> sub(phases.size());
  int64_t buf_elems = 0, scratch_elems = 0;
  for (size_t i = 0; i < phases.size(); ++i) {
    const InputGradPhase& ph = phases[i];
    const int64_t nt = static_cast<int64_t>(ph.taps.size());
    sub[i].resize(p.K * nt);
    for (int64_t k = 0; k < p.K; ++k)
      for (int64_t t = 0; t < nt; ++t) sub[i][k * nt + t] = w[k * taps + ph.taps[t]];
    if (nt > 0) {
      buf_elems += ph.plan.g.buffer_elems(L);
      scratch_elems = std::max(scratch_elems, ph.plan.scratch_elems(L));
    }
  }
  const T* y = gy.const_data_ptr<T>();
  const int64_t sn = gy.stride(0), sc = gy.stride(1), sh = gy.stride(2), sw = gy.stride(3);
  const int64_t m = p.K_per_group;
  at::parallel_for(0, p.N * p.C, grain_for(p.P * p.Q * taps * m), [&](int64_t begin, int64_t end) {
    std::vector<T> buf(buf_elems, T(0));  // one buffer per phase; padding stays zero
    std::vector<T> scratch(scratch_elems);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / p.C, c = nc % p.C;
      T* out = gx + nc * p.H * p.W;
      T* b = buf.data();
      for (size_t i = 0; i < phases.size(); ++i) {
        const InputGradPhase& ph = phases[i];
        T* o = out + ph.ah * p.W + ph.aw;
        const int64_t nt = static_cast<int64_t>(ph.taps.size());
        if (nt == 0) {
          for (int64_t r = 0; r < ph.plan.g.P; ++r)
            for (int64_t q = 0; q < ph.plan.g.Q; ++q) o[r * p.stride_h * p.W + q * p.stride_w] = T(0);
          continue;
        }
        for (int64_t j = 0; j < m; ++j) {
          const int64_t k = c * m + j;
          fill_plane(y + n * sn + k * sc, sh, sw, ph.plan.g, b);
          plane_forward(ph.plan, b, sub[i].data() + k * nt, T(0), o, p.stride_h * p.W,
                        p.stride_w, scratch.data(), j > 0, j == m - 1);
        }
        b += ph.plan.g.buffer_elems(L);
      }
    }
  });
}

// grad-weight: gw[c][t] = sum over n and output positions of gy * x at tap
// t: on the forward's phase-split buffer of x, every vector of the forward's
// plan against the matching grad_output vector (copied into a zero-junk
// scratch plane laid out like the plan's output). Taps in groups held in
// registers; one channel per task, images in order, lanes summed in a fixed
// order at the end: identical for any thread count.
inline constexpr int kWeightGradTapGroup = simd::kVectorBytes == 64 ? 16 : 8;

template <typename T, int G>
inline void weight_grad_taps(const PlanePlan& plan, const T* buf, const T* gys, const int64_t* tap_off,
                             typename simd::Vec<T>::type* acc) {
  using V = simd::Vec<T>;
  typename V::type a[G];
  for (int g = 0; g < G; ++g) a[g] = V::zero();
  const int64_t nv = static_cast<int64_t>(plan.src.size());
  for (int64_t v = 0; v < nv; ++v) {
    const int64_t m = plan.src[v];
    const typename V::type gv = simd::load_upto<T>(gys + m, plan.lanes[v]);
    const T* x = buf + m;
    for (int g = 0; g < G; ++g) a[g] = simd::fmadd(gv, V::load(x + tap_off[g]), a[g]);
  }
  for (int g = 0; g < G; ++g) acc[g] += a[g];
}

template <typename T, int G = kWeightGradTapGroup>
inline void weight_grad_taps_n(int n, const PlanePlan& plan, const T* buf, const T* gys,
                               const int64_t* tap_off, typename simd::Vec<T>::type* acc) {
  if constexpr (G > 1) {
    if (n < G) return weight_grad_taps_n<T, G - 1>(n, plan, buf, gys, tap_off, acc);
  }
  weight_grad_taps<T, G>(plan, buf, gys, tap_off, acc);
}

// gy, x: any strides; gw: K x taps (output channel k reads input channel k / m).
template <typename T>
void backward_weight_planes(const at::Tensor& gy, const at::Tensor& input, T* gw,
                            const Conv2dShape& p) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  const PlanePlan plan = plan_plane(forward_geometry(p), L, false);
  const int64_t taps = p.R * p.S;
  const T* x = input.const_data_ptr<T>();
  const int64_t sn = input.stride(0), sc = input.stride(1), sh = input.stride(2),
                sw = input.stride(3);
  const T* y = gy.const_data_ptr<T>();
  const int64_t gsn = gy.stride(0), gsc = gy.stride(1), gsh = gy.stride(2), gsw = gy.stride(3);
  const int64_t m = p.K_per_group;
  at::parallel_for(0, p.K, grain_for(p.N * p.P * p.Q * taps), [&](int64_t begin, int64_t end) {
    std::vector<T> buf(plan.g.buffer_elems(L), T(0));
    std::vector<T> gys(plan.scratch_elems(L), T(0));  // junk columns stay zero
    simd::VecArray<T> acc(taps);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t c = k / m;
      std::fill(acc.begin(), acc.end(), V::zero());
      for (int64_t n = 0; n < p.N; ++n) {
        fill_plane(x + n * sn + c * sc, sh, sw, plan.g, buf.data());
        const T* g = y + n * gsn + k * gsc;
        for (int64_t oh = 0; oh < p.P; ++oh) {
          T* dst = gys.data() + oh * plan.g.row_len;
          if (gsw == 1) {
            std::memcpy(dst, g + oh * gsh, sizeof(T) * p.Q);
          } else {
            for (int64_t q = 0; q < p.Q; ++q) dst[q] = g[oh * gsh + q * gsw];
          }
        }
        for (int64_t t0 = 0; t0 < taps; t0 += kWeightGradTapGroup) {
          const int cnt = static_cast<int>(std::min<int64_t>(kWeightGradTapGroup, taps - t0));
          weight_grad_taps_n<T>(cnt, plan, buf.data(), gys.data(), plan.tap_off.data() + t0,
                                acc.data() + t0);
        }
      }
      for (int64_t t = 0; t < taps; ++t) {
        T sum = 0;
        for (int l = 0; l < L; ++l) sum += acc[t][l];
        gw[k * taps + t] = sum;
      }
    }
  });
}

// ---------------------------------------------------------------------------
// channels_last.

// One channel vector of a tile: all lanes, or the first `lanes` (the
// channel tail) when kPartial.
template <typename T, bool kPartial>
inline typename simd::Vec<T>::type load_lanes(const T* p, int lanes) {
  return kPartial ? simd::Vec<T>::load_partial(p, lanes) : simd::Vec<T>::load(p);
}

template <typename T, int UQ, bool kPartial>
inline void store_pixels(T* const* out, const typename simd::Vec<T>::type* acc, int lanes) {
  for (int u = 0; u < UQ; ++u) {
    if (kPartial) {
      simd::Vec<T>::store_partial(out[u], acc[u], lanes);
    } else {
      simd::Vec<T>::store(out[u], acc[u]);
    }
  }
}

// UQ output pixels (input pixel pointers x[u], tap (0, 0)) x one vector of
// channels; taps_r x taps_s taps starting at w (tap stride w_tap), input tap
// strides xr (rows) and xs (columns).
template <typename T, int UQ, bool kPartial>
inline void nhwc_tile(const T* const* x, const T* w, int64_t w_tap, int64_t r0, int64_t r1,
                      int64_t s0, int64_t s1, int64_t S, int64_t xr, int64_t xs,
                      typename simd::Vec<T>::type bias, T* const* out, int lanes) {
  using V = simd::Vec<T>;
  typename V::type acc[UQ];
  for (int u = 0; u < UQ; ++u) acc[u] = bias;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t s = s0; s < s1; ++s) {
      const T* wp = w + (r * S + s) * w_tap;
      const typename V::type wv = load_lanes<T, kPartial>(wp, lanes);
      const int64_t o = r * xr + s * xs;
      for (int u = 0; u < UQ; ++u) {
        const typename V::type xv = load_lanes<T, kPartial>(x[u] + o, lanes);
        acc[u] = simd::fmadd(xv, wv, acc[u]);
      }
    }
  }
  store_pixels<T, UQ, kPartial>(out, acc, lanes);
}

// Sliding window over kernel columns, for unit horizontal stride and
// dilation: output pixel u at tap (r, s) reads input column u + s, so each
// input column feeds up to UQ outputs of the tile. The tile holds UQ
// consecutive columns in registers (column k in win[k % UQ]) and slides one
// column per tap: per kernel row UQ + S - 1 input loads and S weight loads
// for UQ * S FMAs, where nhwc_tile loads UQ + 1 vectors per UQ FMAs (load-
// port bound: 8 loads per 7 FMAs at 7x7). With RB = 2 the tile also spans
// two output rows (unit vertical stride and dilation): output row j at
// kernel row r reads input row j + r, so each input row's window feeds both
// rows (twice the accumulators on short rows: 7-wide planes). Every output
// sums bias and its taps in (r, s) order, as nhwc_tile: the results are
// identical. x: pixel 0's input at tap (0, 0); xs: column stride; xr: input
// row stride; w: taps (r, s) at w + (r * S + s) * w_tap; out[j * UQ + u]:
// row j, pixel u. Output row j sums kernel rows [r0[j], r1[j]) only (the
// rows that read the image, not its zero padding: on a 7x7 plane a 7x7
// kernel has 37 of 49 such rows, a 13x13 kernel 49 of 91); skipping a tap
// whose input is zero leaves the sum as it was.
inline constexpr int kWindowTilePixels = simd::kVectorBytes == 64 ? 12 : 6;
inline constexpr int kWindowTwoRowPixels = simd::kVectorBytes == 64 ? 8 : 4;

// Tap s + I of input row `row` (I a constant, so every win index is one):
// column s + I + UQ - 1 replaces column s + I - 1 in its slot, then UQ FMAs
// per output row j that uses this input row (wr[j]: its kernel row's
// weights, null if none). Helpers instead of lambdas: GCC did not inline
// the lambdas and kept the arrays in memory (always_inline keeps acc and win
// in registers).
template <typename T, int RB, int UQ, bool kPartial, int I, int... U>
[[gnu::always_inline]] inline void window_tap(typename simd::Vec<T>::type (&acc)[RB * UQ],
                                              typename simd::Vec<T>::type (&win)[UQ],
                                              const T* row, int64_t xs, const T* const* wr,
                                              int64_t w_tap, int64_t s, int lanes,
                                              std::integer_sequence<int, U...>) {
  win[(I + UQ - 1) % UQ] = load_lanes<T, kPartial>(row + (s + I + UQ - 1) * xs, lanes);
#pragma GCC unroll 4
  for (int j = 0; j < RB; ++j) {
    if (RB > 1 && wr[j] == nullptr) continue;
    const typename simd::Vec<T>::type wv = load_lanes<T, kPartial>(wr[j] + (s + I) * w_tap, lanes);
    ((acc[j * UQ + U] = simd::fmadd(win[(I + U) % UQ], wv, acc[j * UQ + U])), ...);
  }
}

// Taps s .. s + count - 1 (count <= UQ; == UQ: the window ends in the slots
// it started in).
template <typename T, int RB, int UQ, bool kPartial, int... I>
[[gnu::always_inline]] inline void window_taps(typename simd::Vec<T>::type (&acc)[RB * UQ],
                                               typename simd::Vec<T>::type (&win)[UQ],
                                               const T* row, int64_t xs, const T* const* wr,
                                               int64_t w_tap, int64_t s, int64_t count,
                                               int lanes, std::integer_sequence<int, I...>) {
  using Pixels = std::make_integer_sequence<int, UQ>;
  (void)((I < count ? (window_tap<T, RB, UQ, kPartial, I>(acc, win, row, xs, wr, w_tap, s, lanes,
                                                           Pixels{}),
                       true)
                    : false) &&
         ...);
}

template <typename T, int RB, int UQ, bool kPartial>
inline void window_tile(const T* x, int64_t xs, const T* w, int64_t w_tap, const int64_t* r0,
                        const int64_t* r1, int64_t S, int64_t xr,
                        typename simd::Vec<T>::type bias, T* const* out, int lanes) {
  using V = simd::Vec<T>;
  using Pixels = std::make_integer_sequence<int, UQ>;
  typename V::type acc[RB * UQ], win[UQ];
#pragma GCC unroll 32
  for (int u = 0; u < RB * UQ; ++u) acc[u] = bias;
  // Input rows: output row j at kernel row r reads input row j + r.
  int64_t i0 = INT64_MAX, i1 = 0;
  for (int j = 0; j < RB; ++j) {
    if (r0[j] >= r1[j]) continue;
    i0 = std::min(i0, r0[j] + j);
    i1 = std::max(i1, r1[j] + j);
  }
  for (int64_t i = i0; i < i1; ++i) {
    const T* row = x + i * xr;
    const T* wr[RB];  // kernel row i - j of output row j
    for (int j = 0; j < RB; ++j) wr[j] = i - j >= r0[j] && i - j < r1[j] ? w + (i - j) * S * w_tap : nullptr;
#pragma GCC unroll 16
    for (int k = 0; k < UQ - 1; ++k) win[k] = load_lanes<T, kPartial>(row + k * xs, lanes);
    int64_t s = 0;
    for (; s + UQ <= S; s += UQ) {
      window_taps<T, RB, UQ, kPartial>(acc, win, row, xs, wr, w_tap, s, UQ, lanes, Pixels{});
    }
    if (s < S) {
      window_taps<T, RB, UQ, kPartial>(acc, win, row, xs, wr, w_tap, s, S - s, lanes, Pixels{});
    }
  }
  store_pixels<T, RB * UQ, kPartial>(out, acc, lanes);
}

// f.template operator()<N>() for N = n (1..kMax).
template <int kMax, typename F>
inline void with_size_up_to(int n, F&& f) {
  if constexpr (kMax > 1) {
    if (n < kMax) return with_size_up_to<kMax - 1>(n, std::forward<F>(f));
  }
  f.template operator()<kMax>();
}

// The same for pixels near the left/right edge: a tap column outside the
// image reads a zero vector instead. xrow: input row ih0 at column 0 and the
// tile's first channel; pixel u's tap s is at column iw0 + u * stride_w + s * dw.
template <typename T, int UQ, bool kPartial>
inline void nhwc_border_tile(const T* xrow, int64_t iw0, int64_t stride_w, const T* w, int64_t w_tap,
                             int64_t r0, int64_t r1, int64_t S, int64_t xr, int64_t dw,
                             int64_t sw, int64_t W, const T* zeros,
                             typename simd::Vec<T>::type bias, T* const* out, int lanes) {
  using V = simd::Vec<T>;
  typename V::type acc[UQ];
  for (int u = 0; u < UQ; ++u) acc[u] = bias;
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = xrow + r * xr;
    for (int64_t s = 0; s < S; ++s) {
      const T* wp = w + (r * S + s) * w_tap;
      const typename V::type wv = load_lanes<T, kPartial>(wp, lanes);
      for (int u = 0; u < UQ; ++u) {
        const int64_t iw = iw0 + u * stride_w + s * dw;
        const T* ptr = iw >= 0 && iw < W ? row + iw * sw : zeros;
        const typename V::type xv = load_lanes<T, kPartial>(ptr, lanes);
        acc[u] = simd::fmadd(xv, wv, acc[u]);
      }
    }
  }
  store_pixels<T, UQ, kPartial>(out, acc, lanes);
}

// f.template operator()<N>() for N = n (1..kMaxTileVectors).
template <typename F>
inline void with_tile_size(int n, F&& f) {
  switch (n) {
    case 8: f.template operator()<8>(); break;
    case 7: f.template operator()<7>(); break;
    case 6: f.template operator()<6>(); break;
    case 5: f.template operator()<5>(); break;
    case 4: f.template operator()<4>(); break;
    case 3: f.template operator()<3>(); break;
    case 2: f.template operator()<2>(); break;
    default: f.template operator()<1>(); break;
  }
}

// Weights w[c * c_stride + t * tap_stride] as [C / L][taps][L], lanes past
// C zero: the taps of one channel vector are adjacent. (As [R][S][C] they
// sit C elements apart: for C = 1024 that is 4 KB, all taps in one L1 set.)
template <typename T>
std::vector<T> pack_channel_blocks(const T* w, int64_t C, int64_t taps, int64_t c_stride,
                                   int64_t tap_stride) {
  constexpr int L = simd::Vec<T>::size;
  std::vector<T> packed(((C + L - 1) / L) * taps * L, T(0));
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t t = 0; t < taps; ++t) {
      packed[((c / L) * taps + t) * L + c % L] = w[c * c_stride + t * tap_stride];
    }
  }
  return packed;
}

// A zero-padded [Hp][Wp][L] block of one image's L channels (the input the
// output needs) that stays in L2: up to 256K elements.
inline bool fits_channel_block(const Conv2dShape& p, int L) {
  const int64_t block = input_span(p.P, p.stride_h, p.R, p.dilation_h) *
                        input_span(p.Q, p.stride_w, p.S, p.dilation_w) * L;
  return block <= (int64_t{1} << 18);
}

template <typename T>
void channel_blocks(const at::Tensor& input, const T* packed, const T* bias, T* out,
                    const Conv2dShape& p, bool channels_last, const StoreEpilogue<T>* ep);

// input: channels-contiguous (stride(1) == 1), any other strides;
// wt: weights as [R][S][C]; bias: C values or null; out: NHWC contiguous.
// Runs channel_blocks where the block fits (the padding in the block, the
// sliding-window tiles), else natively (the padding checked per tap on
// border pixels).
// Smallest filter (R * S taps) whose channels_last forward goes through the
// padded channel block (forward_nhwc).
inline constexpr int64_t kMinChannelsLastBlockTaps = 25;

// ep (ep->out == out): conv2d_fused's epilogue on each output row once
// written (in L1/L2).
template <typename T>
void forward_nhwc(const at::Tensor& input, const T* wt, const T* bias, T* out,
                  const Conv2dShape& p, const StoreEpilogue<T>* ep = nullptr) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  const int64_t taps = p.R * p.S;
  const std::vector<T> packed = pack_channel_blocks<T>(wt, p.C, taps, 1, p.C);
  // The padded block pays off for large filters (7x7 ConvNeXt: 0.69 ->
  // 0.47 ms at 768x7); at 3x3 its copy costs more than the border checks it
  // saves (256x28: 2.58 -> 4.28 ms), so small filters stay on this kernel.
  if (taps >= kMinChannelsLastBlockTaps && fits_channel_block(p, L)) {
    channel_blocks<T>(input, packed.data(), bias, out, p, true, ep);
    return;
  }
  const T* x = input.const_data_ptr<T>();
  const int64_t sn = input.stride(0), sh = input.stride(2), sw = input.stride(3);
  const int64_t C = p.C;
  const int64_t xr = p.dilation_h * sh, xs = p.dilation_w * sw;
  // Output columns whose every tap column is inside the image: [q_lo, q_hi).
  const int64_t q_lo = std::min(p.Q, (p.pad_w + p.stride_w - 1) / p.stride_w);
  const int64_t last_ok = p.W - 1 - (p.S - 1) * p.dilation_w + p.pad_w;  // ow*sw <= last_ok
  const int64_t q_hi = std::max(q_lo, std::min(p.Q, last_ok < 0 ? 0 : last_ok / p.stride_w + 1));
  const T* zeros = kZeroVector<T>;  // taps outside the image
  at::parallel_for(0, p.N * p.P, grain_for(p.Q * C * taps), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / p.P, oh = item % p.P;
      const int64_t ih0 = oh * p.stride_h - p.pad_h;
      // taps r with 0 <= ih0 + r * dh < H
      int64_t r0 = 0, r1 = p.R;
      while (r0 < p.R && ih0 + r0 * p.dilation_h < 0) ++r0;
      while (r1 > r0 && ih0 + (r1 - 1) * p.dilation_h >= p.H) --r1;
      const T* xrow = x + n * sn + ih0 * sh;  // may point before the image; only offset with r >= r0
      T* orow = out + (item * p.Q) * C;
      for (int64_t c0 = 0; c0 < C; c0 += L) {
        const int lanes = static_cast<int>(std::min<int64_t>(L, C - c0));
        const typename V::type b =
            bias == nullptr ? V::zero() : simd::load_upto<T>(bias + c0, lanes);
        const T* wc = packed.data() + (c0 / L) * taps * L;
        // Tiles of up to 8 pixels along the row; those with a pixel near
        // the left/right edge check every tap column.
        for (int64_t q = 0; q < p.Q; q += kMaxTileVectors) {
          const int count = static_cast<int>(std::min<int64_t>(kMaxTileVectors, p.Q - q));
          T* outs[kMaxTileVectors];
          for (int u = 0; u < count; ++u) outs[u] = orow + (q + u) * C + c0;
          const bool interior = q >= q_lo && q + count <= q_hi;
          with_tile_size(count, [&]<int UQ>() {
            if (interior) {
              const T* xs_ptr[kMaxTileVectors];
              for (int u = 0; u < UQ; ++u) xs_ptr[u] = xrow + ((q + u) * p.stride_w - p.pad_w) * sw + c0;
              if (lanes == L) {
                nhwc_tile<T, UQ, false>(xs_ptr, wc, L, r0, r1, 0, p.S, p.S, xr, xs, b, outs, lanes);
              } else {
                nhwc_tile<T, UQ, true>(xs_ptr, wc, L, r0, r1, 0, p.S, p.S, xr, xs, b, outs, lanes);
              }
            } else {
              const int64_t iw0 = q * p.stride_w - p.pad_w;
              if (lanes == L) {
                nhwc_border_tile<T, UQ, false>(xrow + c0, iw0, p.stride_w, wc, L, r0, r1, p.S, xr,
                                               p.dilation_w, sw, p.W, zeros, b, outs, lanes);
              } else {
                nhwc_border_tile<T, UQ, true>(xrow + c0, iw0, p.stride_w, wc, L, r0, r1, p.S, xr,
                                              p.dilation_w, sw, p.W, zeros, b, outs, lanes);
              }
            }
          });
        }
      }
      if (ep != nullptr) {
        for (int64_t q = 0; q < p.Q; ++q) epilogue_run<T, true>(*ep, orow + q * C, C, 0);
      }
    }
  });
}

// ---------------------------------------------------------------------------
// NCHW on narrow planes, channel-blocked.
//
// The per-plane kernels run vectors along a row: a 7-wide output row fills
// 7 of 16 lanes (the flat plan's junk columns grow with the kernel). Here
// the planes of L channels of one image are transposed, L x L elements at a
// time in registers, into a zero-padded [Hp][Wp][L] block; the channels_last
// tile runs on the block with every lane busy and no bounds checks; and the
// [P*Q][L] result is transposed back into the L output planes. The
// transposes cost O(H*W) shuffles against O(P*Q*R*S) multiply-adds. The
// same block kernel serves channels_last (pixel vectors copied in, no
// transposes).

// Output rows of up to 4 vectors (the per-plane kernels waste lanes at each
// row end; measured faster from 7x7 to 56x56 planes), channel multiplier 1,
// and a block that stays in L2 (up to 256K elements: a tall narrow plane
// goes per plane instead).
inline bool use_channel_blocks(const Conv2dShape& p, int L) {
  return p.K_per_group == 1 && p.Q < 4 * L && fits_channel_block(p, L);
}

// One image's channels c0 .. c0 + lanes - 1 of x into the zero-padded
// [Hp][Wp][L] block: input element m = h * W + w goes to slot[m] (-1: not
// read). NCHW (planes contiguous, sc apart): L elements of each of the L
// planes transposed to L pixels at a time; channels_last (channels
// contiguous): one pixel vector at a time. Lanes past `lanes` are zero.
template <typename T>
void fill_channel_block(const T* x, int64_t sc, int64_t sh, int64_t sw, int64_t H, int64_t W,
                        bool channels_last, int lanes, const int64_t* slot, T* block) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  if (channels_last) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t w = 0; w < W; ++w) {
        const int64_t at = slot[h * W + w];
        if (at < 0) continue;
        const T* px = x + h * sh + w * sw;
        V::store(block + at, simd::load_upto<T>(px, lanes));
      }
    }
    return;
  }
  const int64_t HW = H * W;
  typename V::type v[L];
  for (int64_t m0 = 0; m0 < HW; m0 += L) {
    const int count = static_cast<int>(std::min<int64_t>(L, HW - m0));
#pragma GCC unroll 64
    for (int l = 0; l < L; ++l) {
      v[l] = l < lanes ? simd::load_upto<T>(x + l * sc + m0, count) : V::zero();
    }
    transpose_square<T>(v);
#pragma GCC unroll 64
    for (int j = 0; j < L; ++j) {
      const int64_t at = j < count ? slot[m0 + j] : -1;
      if (at >= 0) V::store(block + at, v[j]);
    }
  }
}

// The block kernel for both layouts. NCHW (channels_last false): input
// with contiguous planes (stride(3) == 1, stride(2) == W), L planes
// transposed into the block, out contiguous NCHW (the result transposed
// back). channels_last: input channels-contiguous (stride(1) == 1), any
// other strides, copied into the block one pixel vector at a time; out
// contiguous NHWC, written by the tiles (through the scratch result when the
// last channel block is partial). packed: weights as [C / L][taps][L].
// ep (ep->out == out): conv2d_fused's epilogue, in the transposed NCHW
// stores, else on the item's pixels once written.
template <typename T>
void channel_blocks(const at::Tensor& input, const T* packed, const T* bias, T* out,
                    const Conv2dShape& p, bool channels_last, const StoreEpilogue<T>* ep) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  const T* x = input.const_data_ptr<T>();
  const int64_t taps = p.R * p.S;
  const int64_t sn = input.stride(0), sc = input.stride(1), sh = input.stride(2),
                sw = input.stride(3);
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q, C = p.C;
  const int64_t Hp = input_span(p.P, p.stride_h, p.R, p.dilation_h);
  const int64_t Wp = input_span(p.Q, p.stride_w, p.S, p.dilation_w);
  // Block position of each input element (-1: never read, past the block).
  std::vector<int64_t> slot(HW);
  for (int64_t h = 0; h < p.H; ++h) {
    for (int64_t w = 0; w < p.W; ++w) {
      const int64_t hp = h + p.pad_h, wp = w + p.pad_w;
      slot[h * p.W + w] = hp < Hp && wp < Wp ? (hp * Wp + wp) * L : -1;
    }
  }
  const int64_t blocks = (C + L - 1) / L;
  const int64_t xr = p.dilation_h * Wp * L, xs = p.dilation_w * L;
  const bool sliding_window = p.stride_w == 1 && p.dilation_w == 1;
  // Two-row window tiles where output rows share input rows (xr: one input
  // row) and a row is at most two tiles (measured on 7x7 kernels, one thread:
  // 7- and 14-wide rows 3-5% faster than one-row tiles, 28- and 56-wide
  // rows 5-20% slower).
  const bool two_row_tiles = p.stride_h == 1 && p.dilation_h == 1 && p.Q <= 2 * kWindowTwoRowPixels;
  // Kernel rows [r_lo[oh], r_hi[oh]) of output row oh read image rows; the
  // others read the block's zero padding and are skipped.
  std::vector<int64_t> r_lo(p.P, p.R), r_hi(p.P, 0);
  const std::vector<ValidRange> rows = row_ranges(p);
  for (int64_t r = 0; r < p.R; ++r) {
    for (int64_t oh = rows[r].lo; oh < rows[r].hi; ++oh) {
      r_lo[oh] = std::min(r_lo[oh], r);
      r_hi[oh] = std::max(r_hi[oh], r + 1);
    }
  }
  at::parallel_for(0, p.N * blocks, grain_for(L * PQ * p.R * p.S), [&](int64_t begin, int64_t end) {
    std::vector<T> block(Hp * Wp * L, T(0));  // padding cells stay zero
    std::vector<T> result(PQ * L);
    typename V::type v[L];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks, c0 = (item % blocks) * L;
      const int lanes = static_cast<int>(std::min<int64_t>(L, C - c0));
      fill_channel_block(x + n * sn + c0 * sc, sc, sh, sw, p.H, p.W, channels_last, lanes,
                         slot.data(), block.data());
      // The channels_last tile over the block: sliding-window tiles of up to
      // kWindowTilePixels pixels at unit horizontal stride and dilation, else
      // nhwc_tile over up to 8 pixels. Pixel m's result goes to
      // out + (n * PQ + m) * C + c0 when the tiles write the NHWC output
      // directly, else to the scratch result[m][L].
      const bool direct = channels_last && lanes == L;
      T* const dst = direct ? out + n * PQ * C + c0 : result.data();
      const int64_t dst_pixel = direct ? C : L;
      const typename V::type b =
          bias == nullptr ? V::zero() : simd::load_upto<T>(bias + c0, lanes);
      const T* wc = packed + (c0 / L) * taps * L;
      for (int64_t oh = 0; oh < p.P; ++oh) {
        const T* xrow = block.data() + oh * p.stride_h * Wp * L;
        if (sliding_window) {
          const bool two_rows = two_row_tiles && oh + 1 < p.P;
          const int64_t width = two_rows ? kWindowTwoRowPixels : kWindowTilePixels;
          near_equal_pieces(p.Q, width, [&](int64_t q, int64_t count) {
            auto tile = [&]<int RB, int UQ>() {
              T* outs[RB * UQ];
              for (int j = 0; j < RB; ++j)
                for (int u = 0; u < UQ; ++u) outs[j * UQ + u] = dst + ((oh + j) * p.Q + q + u) * dst_pixel;
              window_tile<T, RB, UQ, false>(xrow + q * L, L, wc, L, r_lo.data() + oh,
                                            r_hi.data() + oh, p.S, xr, b, outs, L);
            };
            if (two_rows) {
              with_size_up_to<kWindowTwoRowPixels>(static_cast<int>(count), [&]<int UQ>() {
                tile.template operator()<2, UQ>();
              });
            } else {
              with_size_up_to<kWindowTilePixels>(static_cast<int>(count), [&]<int UQ>() {
                tile.template operator()<1, UQ>();
              });
            }
          });
          if (two_rows) ++oh;
          continue;
        }
        for (int64_t q = 0; q < p.Q; q += kMaxTileVectors) {
          const int count = static_cast<int>(std::min<int64_t>(kMaxTileVectors, p.Q - q));
          with_tile_size(count, [&]<int UQ>() {
            const T* xs_ptr[kMaxTileVectors];
            T* outs[kMaxTileVectors];
            for (int u = 0; u < UQ; ++u) {
              xs_ptr[u] = xrow + (q + u) * p.stride_w * L;
              outs[u] = dst + (oh * p.Q + q + u) * dst_pixel;
            }
            // all lanes: the block and the packed weights are zero past C
            nhwc_tile<T, UQ, false>(xs_ptr, wc, L, r_lo[oh], r_hi[oh], 0, p.S, p.S, xr, xs, b,
                                    outs, L);
          });
        }
      }
      if (direct) {
        if (ep != nullptr) {
          T* oc = out + n * PQ * C + c0;
          for (int64_t m = 0; m < PQ; ++m) epilogue_run<T, true>(*ep, oc + m * C, L, c0);
        }
        continue;
      }
      if (channels_last) {  // Out: the partial last channel block.
        T* oc = out + n * PQ * C + c0;
        for (int64_t m = 0; m < PQ; ++m) {
          typename V::type r = V::load(result.data() + m * L);
          if (ep != nullptr) r = apply_epilogue_vector<T, true>(r, *ep, c0, oc + m * C, lanes);
          V::store_partial(oc + m * C, r, lanes);
        }
        continue;
      }
      // Out: L pixels of L channels, transposed to L elements of each plane.
      T* oc = out + (n * C + c0) * PQ;
      for (int64_t m0 = 0; m0 < PQ; m0 += L) {
        const int count = static_cast<int>(std::min<int64_t>(L, PQ - m0));
#pragma GCC unroll 64
        for (int j = 0; j < L; ++j) {
          v[j] = j < count ? V::load(result.data() + (m0 + j) * L) : V::zero();
        }
        transpose_square<T>(v);
#pragma GCC unroll 64
        for (int l = 0; l < L; ++l) {
          if (l >= lanes) break;
          if (ep != nullptr) v[l] = apply_epilogue_vector<T, false>(v[l], *ep, c0 + l, oc + l * PQ + m0, count);
          simd::store_upto<T>(oc + l * PQ + m0, v[l], count);
        }
      }
    }
  });
}

// input: NCHW with contiguous planes (stride(3) == 1, stride(2) == W);
// w: contiguous C x R x S; bias: C values or null; out: contiguous NCHW.
template <typename T>
void forward_channel_blocks(const at::Tensor& input, const T* w, const T* bias, T* out,
                            const Conv2dShape& p, const StoreEpilogue<T>* ep = nullptr) {
  const int64_t taps = p.R * p.S;
  const std::vector<T> packed = pack_channel_blocks<T>(w, p.C, taps, taps, 1);
  channel_blocks<T>(input, packed.data(), bias, out, p, false, ep);
}

// grad-weight on channel blocks at unit horizontal stride and dilation:
// kernel-row taps s0 .. s0 + G - 1 summed over the pixels of one output row.
// Pixel u's grad_output vector multiplies block columns u + s0 + k, so a
// window of G columns slides one column per pixel (a load of x and of
// grad_output per G FMAs); the accumulators alternate between two sets by
// pixel parity (2G independent chains), added in a fixed order at the end.
template <typename T, int G, int I, int... K>
[[gnu::always_inline]] inline void wgrad_pixel(typename simd::Vec<T>::type (&a)[2][G],
                                               typename simd::Vec<T>::type (&win)[G],
                                               const T* xrow, const T* grow, int64_t u,
                                               std::integer_sequence<int, K...>) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  win[(I + G - 1) % G] = V::load(xrow + (u + I + G - 1) * L);
  const typename V::type g = V::load(grow + (u + I) * L);
  ((a[I % 2][K] = simd::fmadd(g, win[(I + K) % G], a[I % 2][K])), ...);
}

template <typename T, int G, int... I>
[[gnu::always_inline]] inline void wgrad_pixels(typename simd::Vec<T>::type (&a)[2][G],
                                                typename simd::Vec<T>::type (&win)[G],
                                                const T* xrow, const T* grow, int64_t u,
                                                int64_t count, std::integer_sequence<int, I...>) {
  using Taps = std::make_integer_sequence<int, G>;
  (void)((I < count ? (wgrad_pixel<T, G, I>(a, win, xrow, grow, u, Taps{}), true) : false) && ...);
}

// acc[k] += sum over output rows oh in [oh0, oh1) and pixels u < Q of
// grow(oh)[u] * xrow(oh)[u + k], k < G (xrow(oh) = x + oh * x_row: the block
// row of kernel row r, already offset by s0 columns; grow(oh) = g + oh * g_row).
template <typename T, int G>
void wgrad_taps(const T* x, int64_t x_row, const T* g, int64_t g_row, int64_t oh0, int64_t oh1,
                int64_t Q, typename simd::Vec<T>::type* acc) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  using Pixels = std::make_integer_sequence<int, 2 * G>;
  typename V::type a[2][G], win[G];
#pragma GCC unroll 32
  for (int k = 0; k < G; ++k) a[0][k] = a[1][k] = V::zero();
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const T* xrow = x + oh * x_row;
    const T* grow = g + oh * g_row;
#pragma GCC unroll 16
    for (int k = 0; k < G - 1; ++k) win[k] = V::load(xrow + k * L);
    int64_t u = 0;
    // Chunks of 2G pixels: the window ends in the slots it started in, and
    // pixel parity matches the accumulator set.
    for (; u + 2 * G <= Q; u += 2 * G) wgrad_pixels<T, G>(a, win, xrow, grow, u, 2 * G, Pixels{});
    if (u < Q) wgrad_pixels<T, G>(a, win, xrow, grow, u, Q - u, Pixels{});
  }
#pragma GCC unroll 32
  for (int k = 0; k < G; ++k) acc[k] += a[0][k] + a[1][k];
}

inline constexpr int kWeightGradWindowTaps = simd::kVectorBytes == 64 ? 8 : 4;

// Whether backward_weight_channel_blocks runs: multiplier 1, unit
// horizontal stride and dilation (the window), the block in L2; NCHW also
// only where the forward runs channel blocks (narrow rows).
inline bool use_weight_grad_channel_blocks(const Conv2dShape& p, int L, bool channels_last) {
  return p.K_per_group == 1 && p.stride_w == 1 && p.dilation_w == 1 &&
         (channels_last ? fits_channel_block(p, L) : use_channel_blocks(p, L));
}

// gw[c][r][s] = sum over n, oh, ow of gy[n][c][oh][ow] * x_padded[n][c][oh *
// sh + r * dh][ow + s]: one task per block of L channels (all images, in
// order), the image's x and grad_output blocks filled as in the forward;
// per image, kernel row and group of taps the sum runs over output rows and
// pixels in order: identical for any thread count or batch split... (batch:
// the sum runs over images, so a split changes it: grad-weight is only
// thread-count invariant, as the other grad-weight kernels).
// input, gy: NCHW with contiguous planes or channels-contiguous
// (channels_last); gw: C x R x S contiguous.
template <typename T>
void backward_weight_channel_blocks(const at::Tensor& gy, const at::Tensor& input, T* gw,
                                    const Conv2dShape& p, bool channels_last) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  const T* x = input.const_data_ptr<T>();
  const T* y = gy.const_data_ptr<T>();
  const int64_t sn = input.stride(0), sc = input.stride(1), sh = input.stride(2),
                sw = input.stride(3);
  const int64_t gsn = gy.stride(0), gsc = gy.stride(1), gsh = gy.stride(2), gsw = gy.stride(3);
  const int64_t C = p.C, taps = p.R * p.S, PQ = p.P * p.Q;
  const int64_t Hp = input_span(p.P, p.stride_h, p.R, p.dilation_h);
  const int64_t Wp = input_span(p.Q, p.stride_w, p.S, p.dilation_w);
  std::vector<int64_t> slot(p.H * p.W), gslot(PQ);
  for (int64_t h = 0; h < p.H; ++h) {
    for (int64_t w = 0; w < p.W; ++w) {
      const int64_t hp = h + p.pad_h, wp = w + p.pad_w;
      slot[h * p.W + w] = hp < Hp && wp < Wp ? (hp * Wp + wp) * L : -1;
    }
  }
  for (int64_t m = 0; m < PQ; ++m) gslot[m] = m * L;
  const std::vector<ValidRange> rows = row_ranges(p);  // output rows reading image rows, per r
  const int64_t blocks = (C + L - 1) / L;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> block(Hp * Wp * L, T(0));  // padding cells stay zero
    std::vector<T> gblock(PQ * L);
    simd::VecArray<T> acc(taps);
    for (int64_t cb = begin; cb < end; ++cb) {
      const int64_t c0 = cb * L;
      const int lanes = static_cast<int>(std::min<int64_t>(L, C - c0));
      std::fill(acc.begin(), acc.end(), V::zero());
      for (int64_t n = 0; n < p.N; ++n) {
        fill_channel_block(x + n * sn + c0 * sc, sc, sh, sw, p.H, p.W, channels_last, lanes,
                           slot.data(), block.data());
        fill_channel_block(y + n * gsn + c0 * gsc, gsc, gsh, gsw, p.P, p.Q, channels_last, lanes,
                           gslot.data(), gblock.data());
        for (int64_t r = 0; r < p.R; ++r) {
          if (rows[r].lo >= rows[r].hi) continue;
          const T* xr = block.data() + r * p.dilation_h * Wp * L;
          for (int64_t s0 = 0; s0 < p.S; s0 += kWeightGradWindowTaps) {
            const int count = static_cast<int>(std::min<int64_t>(kWeightGradWindowTaps, p.S - s0));
            with_size_up_to<kWeightGradWindowTaps>(count, [&]<int G>() {
              wgrad_taps<T, G>(xr + s0 * L, p.stride_h * Wp * L, gblock.data(), p.Q * L,
                               rows[r].lo, rows[r].hi, p.Q, acc.data() + r * p.S + s0);
            });
          }
        }
      }
      for (int l = 0; l < lanes; ++l)
        for (int64_t t = 0; t < taps; ++t) gw[(c0 + l) * taps + t] = acc[t][l];
    }
  });
}

// grad-input at stride 1 is the forward with the filter rotated by 180
// degrees and padding (R-1)*dilation - pad on grad_output (when that is not
// negative): the shape of that forward problem.
inline bool nhwc_input_grad_as_forward(const Conv2dShape& p) {
  return p.K_per_group == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h <= (p.R - 1) * p.dilation_h &&
         p.pad_w <= (p.S - 1) * p.dilation_w;
}

inline Conv2dShape input_grad_forward_shape(const Conv2dShape& p) {
  Conv2dShape q = p;
  q.H = p.P;
  q.W = p.Q;
  q.P = p.H;
  q.Q = p.W;
  q.pad_h = (p.R - 1) * p.dilation_h - p.pad_h;
  q.pad_w = (p.S - 1) * p.dilation_w - p.pad_w;
  return q;
}

// channels_last grad-weight: one vector of channels per task (so each sum
// has one fixed order: images, rows, kernel rows, kernel columns, then the
// output columns in two interleaved partial sums); x: channels-contiguous,
// any other strides; gy: NHWC contiguous; gw: C x R x S.
template <typename T, bool kPartial>
inline typename simd::Vec<T>::type nhwc_row_dot(const T* g, const T* x, int64_t count,
                                                int64_t C, int64_t x_step, int lanes) {
  using V = simd::Vec<T>;
  auto ld = [&](const T* ptr) { return load_lanes<T, kPartial>(ptr, lanes); };
  typename V::type a0 = V::zero(), a1 = V::zero();
  int64_t q = 0;
  for (; q + 2 <= count; q += 2) {
    a0 = simd::fmadd(ld(g + q * C), ld(x + q * x_step), a0);
    a1 = simd::fmadd(ld(g + (q + 1) * C), ld(x + (q + 1) * x_step), a1);
  }
  if (q < count) a0 = simd::fmadd(ld(g + q * C), ld(x + q * x_step), a0);
  return a0 + a1;
}

template <typename T>
void backward_weight_nhwc(const at::Tensor& gy, const at::Tensor& input, T* gw,
                          const Conv2dShape& p) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  const T* x = input.const_data_ptr<T>();
  const int64_t sn = input.stride(0), sh = input.stride(2), sw = input.stride(3);
  const T* y = gy.const_data_ptr<T>();
  const int64_t C = p.C, taps = p.R * p.S;
  std::vector<ValidRange> cols(p.S);
  for (int64_t s = 0; s < p.S; ++s)
    cols[s] = valid_output_range(s * p.dilation_w - p.pad_w, p.stride_w, p.W, p.Q);
  const int64_t blocks = (C + L - 1) / L;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    simd::VecArray<T> acc(taps);
    for (int64_t cb = begin; cb < end; ++cb) {
      const int64_t c0 = cb * L;
      const int lanes = static_cast<int>(std::min<int64_t>(L, C - c0));
      std::fill(acc.begin(), acc.end(), V::zero());
      for (int64_t n = 0; n < p.N; ++n) {
        for (int64_t oh = 0; oh < p.P; ++oh) {
          const T* grow = y + ((n * p.P + oh) * p.Q) * C + c0;
          for (int64_t r = 0; r < p.R; ++r) {
            const int64_t ih = oh * p.stride_h + r * p.dilation_h - p.pad_h;
            if (ih < 0 || ih >= p.H) continue;
            for (int64_t s = 0; s < p.S; ++s) {
              const int64_t q0 = cols[s].lo, q1 = cols[s].hi;
              if (q0 >= q1) continue;
              const int64_t iw = q0 * p.stride_w + s * p.dilation_w - p.pad_w;
              const T* xp = x + n * sn + ih * sh + iw * sw + c0;
              acc[r * p.S + s] += lanes == L
                  ? nhwc_row_dot<T, false>(grow + q0 * C, xp, q1 - q0, C, p.stride_w * sw, lanes)
                  : nhwc_row_dot<T, true>(grow + q0 * C, xp, q1 - q0, C, p.stride_w * sw, lanes);
            }
          }
        }
      }
      for (int l = 0; l < lanes; ++l)
        for (int64_t t = 0; t < taps; ++t) gw[(c0 + l) * taps + t] = acc[t][l];
    }
  });
}

}  // namespace depthwise
}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
