// Dense forward: implicit GEMM over M = N*P*Q output pixels x N = output
// channels of one group, reducing over k = (c, r, s) of the group. The input
// operand is gathered straight from the image (zero outside the padding), so
// no im2col buffer exists; the bias is added in the epilogue.
#pragma once

#include <ATen/OpMathType.h>

#include "conv2d_implicit_gemm.cuh"

namespace conv_ext {
namespace cuda {

template <typename scalar_t>
struct ForwardParams {
  const scalar_t* input;   // N x C x H x W
  const scalar_t* weight;  // K x Cg x R x S
  const scalar_t* bias;    // K, or nullptr
  scalar_t* output;        // N x K x P x Q
  Conv2dShape g;
  int64_t tiles_m, tiles_n;  // tiles over N*P*Q and over K per group
};

// A[k = (c, r, s)][m = (n, p, q)] = input[n][group*Cg + c][p*sh - ph + r*dh][q*sw - pw + s*dw].
// Columns (pixels) are walked by consecutive threads: neighbouring output
// pixels read neighbouring input pixels.
template <typename scalar_t, typename acc_type>
struct ForwardInputOperand {
  using acc_t = acc_type;
  static constexpr bool kAlongK = false;
  const scalar_t* input;
  const Conv2dShape* g;
  int64_t group;
  FastDivmod taps_div, s_div;  // by R*S and by S

  struct Column {
    const scalar_t* base;  // image n, first channel of the group
    int64_t ih0, iw0;      // top-left input position of the receptive field
    bool valid;
  };
  struct Row {
    int64_t channel_offset;
    int64_t dh, dw;  // tap offsets r*dh, s*dw
    bool valid;
  };

  __device__ __forceinline__ Column column(int64_t m) const {
    Column col{input, 0, 0, m < g->N * g->P * g->Q};
    if (col.valid) {
      const int64_t pq = m % (g->P * g->Q), n = m / (g->P * g->Q);
      col.base = input + (n * g->C + group * g->C_per_group) * g->H * g->W;
      col.ih0 = (pq / g->Q) * g->stride_h - g->pad_h;
      col.iw0 = (pq % g->Q) * g->stride_w - g->pad_w;
    }
    return col;
  }
  __device__ __forceinline__ Row row(int64_t k, bool valid) const {
    if (!valid) return Row{0, 0, 0, false};
    // The reduction length Cg*R*S fits in int32 (the plan checks it).
    int c, rs, r, s;
    taps_div.divmod(static_cast<int>(k), c, rs);
    s_div.divmod(rs, r, s);
    return Row{c * g->H * g->W, r * g->dilation_h, s * g->dilation_w, true};
  }
  __device__ __forceinline__ acc_t load(const Row& row, const Column& col) const {
    if (!(row.valid && col.valid)) return acc_t(0);
    const int64_t ih = col.ih0 + row.dh, iw = col.iw0 + row.dw;
    if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) return acc_t(0);
    return load_as<acc_t>(col.base + row.channel_offset + ih * g->W + iw);
  }
};

// B[k = (c, r, s)][n = output channel in group] = weight[group*Kg + n][c][r][s]:
// contiguous along k, so consecutive threads walk k.
template <typename scalar_t, typename acc_type>
struct ForwardWeightOperand {
  using acc_t = acc_type;
  static constexpr bool kAlongK = true;
  const scalar_t* weight;
  const Conv2dShape* g;
  int64_t group;

  struct Column {
    const scalar_t* filter;
    bool valid;
  };
  struct Row {
    int64_t k;
    bool valid;
  };
  __device__ __forceinline__ Column column(int64_t n) const {
    const bool valid = n < g->K_per_group;
    return Column{valid ? weight + (group * g->K_per_group + n) * g->C_per_group * g->R * g->S : weight, valid};
  }
  __device__ __forceinline__ Row row(int64_t k, bool valid) const { return Row{k, valid}; }
  __device__ __forceinline__ acc_t load(const Row& row, const Column& col) const {
    return row.valid && col.valid ? load_as<acc_t>(col.filter + row.k) : acc_t(0);
  }
};

// Resident blocks per SM asked of ptxas for float accumulators: 16 warps,
// i.e. at most 128 registers a thread, which both tiles fit without spills
// (the large one takes 167 uncapped: one block, 8 warps, to hide latency).
// With double accumulators the cap spills, so there is none.
template <typename scalar_t, typename Tile>
constexpr int kForwardMinBlocks =
    sizeof(at::opmath_type<scalar_t>) == 4 ? 512 / Tile::kThreads : 1;

template <typename scalar_t, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, (kForwardMinBlocks<scalar_t, Tile>))
    conv2d_forward_gemm_kernel(ForwardParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  auto* As = reinterpret_cast<acc_t(*)[Tile::BM]>(shared_array<acc_t, Tile::BK * Tile::BM, 0>());
  auto* Bs = reinterpret_cast<acc_t(*)[Tile::BN]>(shared_array<acc_t, Tile::BK * Tile::BN, 1>());
  const Conv2dShape& g = p.g;
  const int64_t PQ = g.P * g.Q, M = g.N * PQ, reduction = g.C_per_group * g.R * g.S;
  const int tx = threadIdx.x % Tile::kThreadsM, ty = threadIdx.x / Tile::kThreadsM;

  for (int64_t tile_y = blockIdx.y; tile_y < p.tiles_n * g.groups; tile_y += gridDim.y) {
    const int64_t group = tile_y / p.tiles_n, n0 = (tile_y % p.tiles_n) * Tile::BN;
    const ForwardInputOperand<scalar_t, acc_t> a{p.input, &g, group,
                                                 FastDivmod(static_cast<int>(g.R * g.S)),
                                                 FastDivmod(static_cast<int>(g.S))};
    const ForwardWeightOperand<scalar_t, acc_t> b{p.weight, &g, group};
    for (int64_t tile_x = blockIdx.x; tile_x < p.tiles_m; tile_x += gridDim.x) {
      const int64_t m0 = tile_x * Tile::BM;
      acc_t acc[Tile::TM][Tile::TN];
      gemm_tile<Tile>(a, b, m0, n0, 0, reduction, acc, As, Bs);
#pragma unroll
      for (int i = 0; i < Tile::TM; ++i) {
        const int64_t m = m0 + tile_row<Tile>(tx, i);
        if (m >= M) continue;
        scalar_t* out = p.output + (m / PQ) * g.K * PQ + m % PQ;
#pragma unroll
        for (int j = 0; j < Tile::TN; ++j) {
          const int64_t n = n0 + tile_col<Tile>(ty, j);
          if (n >= g.K_per_group) continue;
          const int64_t k = group * g.K_per_group + n;
          const acc_t bias = p.bias != nullptr ? load_as<acc_t>(p.bias + k) : acc_t(0);
          out[k * PQ] = static_cast<scalar_t>(acc[i][j] + bias);
        }
      }
    }
  }
}

}  // namespace cuda
}  // namespace conv_ext
