// Dense grad-input: a direct convolution of grad_output with the flipped
// filter, as an implicit GEMM over M = input pixels x N = input channels of
// one group, reducing over (output channel of the group, tap).
//
// For stride > 1 most (pixel, tap) pairs land between grad_output positions
// and contribute nothing. The input pixels are therefore split into
// stride_h x stride_w phases (h mod stride_h, w mod stride_w); within one
// phase the taps that land on real grad_output rows are exactly
// r = r0, r0 + step, ... (r * dh == h + ph mod sh), the same for every pixel of
// the phase (phase_taps, conv2d_shape.h, shared with the CPU), so the
// reduction visits only those taps: no multiplications by inserted zeros.
#pragma once

#include <ATen/OpMathType.h>

#include "conv2d_implicit_gemm.cuh"

namespace conv_ext {
namespace cuda {

template <typename scalar_t>
struct BackwardInputParams {
  const scalar_t* grad_output;  // N x K x P x Q
  const scalar_t* weight;       // K x Cg x R x S
  scalar_t* grad_input;         // N x C x H x W
  Conv2dShape g;
  int64_t phase_h_size, phase_w_size;  // ceil(H / sh), ceil(W / sw): largest phase
  int64_t tiles_m, tiles_n;            // tiles over N * largest phase, over Cg
};

// The reduction index k = (output channel in group, tap j_r, tap j_s),
// decoded once and used by both operands.
struct BackwardInputTap {
  int64_t out_channel;  // group * Kg + channel
  int r, s;
  bool valid;
};

struct BackwardInputPhase {
  const Conv2dShape* g;
  int64_t group, phase_h, phase_w;
  PhaseTaps taps_h, taps_w;
  // By the phase's tap count and by its taps along w (1 where there are
  // none: then the reduction is empty and nothing is decoded).
  FastDivmod taps_div, taps_w_div;

  __device__ __forceinline__ BackwardInputPhase(const Conv2dShape* geometry, int64_t group_,
                                                int64_t phase_h_, int64_t phase_w_)
      : g(geometry), group(group_), phase_h(phase_h_), phase_w(phase_w_),
        taps_h(phase_taps(phase_h_, g->pad_h, g->stride_h, g->dilation_h, g->R)),
        taps_w(phase_taps(phase_w_, g->pad_w, g->stride_w, g->dilation_w, g->S)),
        taps_div(taps_h.count * taps_w.count > 0 ? taps_h.count * taps_w.count : 1),
        taps_w_div(taps_w.count > 0 ? taps_w.count : 1) {}

  __device__ __forceinline__ int64_t reduction() const {
    return g->K_per_group * taps_h.count * taps_w.count;
  }
  __device__ __forceinline__ BackwardInputTap decode(int64_t k, bool valid) const {
    // Kg * R * S fits in int32 (the plan checks it).
    const int taps = taps_h.count * taps_w.count;
    if (!valid || taps == 0) return BackwardInputTap{0, 0, 0, false};
    int channel, tap, j_r, j_s;
    taps_div.divmod(static_cast<int>(k), channel, tap);
    taps_w_div.divmod(tap, j_r, j_s);
    return BackwardInputTap{group * g->K_per_group + channel, taps_h.first + j_r * taps_h.step,
                            taps_w.first + j_s * taps_w.step, true};
  }
};

// A[k][m = (n, i, j)] = grad_output[n][channel][i + offset_h(r)][j + offset_w(s)]
// for the phase's pixel (h, w) = (phase_h + i*sh, phase_w + j*sw).
template <typename scalar_t, typename acc_type>
struct BackwardInputGradOutputOperand {
  using acc_t = acc_type;
  static constexpr bool kAlongK = false;
  const scalar_t* grad_output;
  BackwardInputPhase phase;
  int64_t phase_h_size, phase_w_size;  // the grid every phase is laid on
  int64_t rows, cols;                  // this phase's real extent

  struct Column {
    const scalar_t* base;  // image n
    int64_t i, j;
    bool valid;
  };
  struct Row {
    int64_t channel_offset, p_offset, q_offset;
    bool valid;
  };
  __device__ __forceinline__ Column column(int64_t m) const {
    const int64_t plane = phase_h_size * phase_w_size;
    const int64_t n = m / plane, ij = m % plane;
    Column col{grad_output, ij / phase_w_size, ij % phase_w_size, false};
    col.valid = n < phase.g->N && col.i < rows && col.j < cols;
    if (col.valid) col.base = grad_output + n * phase.g->K * phase.g->P * phase.g->Q;
    return col;
  }
  __device__ __forceinline__ Row row(int64_t k, bool valid) const {
    const Conv2dShape& g = *phase.g;
    const BackwardInputTap t = phase.decode(k, valid);
    if (!t.valid) return Row{0, 0, 0, false};
    return Row{t.out_channel * g.P * g.Q,
               phase_tap_offset(phase.phase_h, g.pad_h, g.stride_h, g.dilation_h, t.r),
               phase_tap_offset(phase.phase_w, g.pad_w, g.stride_w, g.dilation_w, t.s),
               true};
  }
  __device__ __forceinline__ acc_t load(const Row& row, const Column& col) const {
    if (!(row.valid && col.valid)) return acc_t(0);
    const int64_t p = col.i + row.p_offset, q = col.j + row.q_offset;
    if (p < 0 || p >= phase.g->P || q < 0 || q >= phase.g->Q) return acc_t(0);
    return load_as<acc_t>(col.base + row.channel_offset + p * phase.g->Q + q);
  }
};

// B[k][n = input channel c in group] = weight[channel][c][r][s].
template <typename scalar_t, typename acc_type>
struct BackwardInputWeightOperand {
  using acc_t = acc_type;
  static constexpr bool kAlongK = true;
  const scalar_t* weight;
  BackwardInputPhase phase;

  struct Column {
    int64_t offset;
    bool valid;
  };
  struct Row {
    int64_t offset;
    bool valid;
  };
  __device__ __forceinline__ Column column(int64_t c) const {
    return Column{c * phase.g->R * phase.g->S, c < phase.g->C_per_group};
  }
  __device__ __forceinline__ Row row(int64_t k, bool valid) const {
    const Conv2dShape& g = *phase.g;
    const BackwardInputTap t = phase.decode(k, valid);
    return Row{t.valid ? t.out_channel * g.C_per_group * g.R * g.S + t.r * g.S + t.s : 0, t.valid};
  }
  __device__ __forceinline__ acc_t load(const Row& row, const Column& col) const {
    return row.valid && col.valid ? load_as<acc_t>(weight + row.offset + col.offset)
                                  : acc_t(0);
  }
};

template <typename scalar_t, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads)
    conv2d_backward_input_gemm_kernel(BackwardInputParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  auto* As = reinterpret_cast<acc_t(*)[Tile::BM]>(shared_array<acc_t, Tile::BK * Tile::BM, 0>());
  auto* Bs = reinterpret_cast<acc_t(*)[Tile::BN]>(shared_array<acc_t, Tile::BK * Tile::BN, 1>());
  const Conv2dShape& g = p.g;
  const int64_t phases = g.stride_h * g.stride_w;
  const int64_t plane = p.phase_h_size * p.phase_w_size;
  const int tx = threadIdx.x % Tile::kThreadsM, ty = threadIdx.x / Tile::kThreadsM;

  // blockIdx.y walks (group, phase, channel tile).
  for (int64_t tile_y = blockIdx.y; tile_y < g.groups * phases * p.tiles_n;
       tile_y += gridDim.y) {
    const int64_t n0 = (tile_y % p.tiles_n) * Tile::BN;
    const int64_t phase_index = (tile_y / p.tiles_n) % phases;
    const int64_t group = tile_y / (p.tiles_n * phases);
    const int64_t phase_h = phase_index / g.stride_w, phase_w = phase_index % g.stride_w;
    const BackwardInputPhase phase(&g, group, phase_h, phase_w);
    // Pixels of this phase: h = phase_h + i * sh < H.
    const int64_t rows = phase_positions(phase_h, g.H, g.stride_h);
    const int64_t cols = phase_positions(phase_w, g.W, g.stride_w);
    const BackwardInputGradOutputOperand<scalar_t, acc_t> a{
        p.grad_output, phase, p.phase_h_size, p.phase_w_size, rows, cols};
    const BackwardInputWeightOperand<scalar_t, acc_t> b{p.weight, phase};
    for (int64_t tile_x = blockIdx.x; tile_x < p.tiles_m; tile_x += gridDim.x) {
      const int64_t m0 = tile_x * Tile::BM;
      acc_t acc[Tile::TM][Tile::TN];
      gemm_tile<Tile>(a, b, m0, n0, 0, phase.reduction(), acc, As, Bs);
#pragma unroll
      for (int i = 0; i < Tile::TM; ++i) {
        const int64_t m = m0 + tile_row<Tile>(tx, i);
        const int64_t n = m / plane, ij = m % plane;
        const int64_t pi = ij / p.phase_w_size, pj = ij % p.phase_w_size;
        if (n >= g.N || pi >= rows || pj >= cols) continue;
        const int64_t h = phase_h + pi * g.stride_h, w = phase_w + pj * g.stride_w;
        scalar_t* out = p.grad_input + (n * g.C + group * g.C_per_group) * g.H * g.W + h * g.W + w;
#pragma unroll
        for (int j = 0; j < Tile::TN; ++j) {
          const int64_t c = n0 + tile_col<Tile>(ty, j);
          if (c < g.C_per_group) out[c * g.H * g.W] = static_cast<scalar_t>(acc[i][j]);
        }
      }
    }
  }
}

}  // namespace cuda
}  // namespace conv_ext
