// Dense grad-weight: implicit GEMM over M = (c, r, s) of one group x
// N = output channels of the group, reducing over the N*P*Q output pixels. The
// reduction is long, so it is cut into a fixed number of chunks (the plan
// picks it from the shape alone); each block writes its partial tile to a
// workspace slice and sum_splits_kernel adds the slices in a fixed order.
// No atomics: the result is bitwise identical run to run.
#pragma once

#include <ATen/OpMathType.h>

#include "conv2d_implicit_gemm.cuh"

namespace conv_ext {
namespace cuda {

template <typename scalar_t>
struct BackwardWeightParams {
  const scalar_t* grad_output;           // N x K x P x Q
  const scalar_t* input;                 // N x C x H x W
  at::opmath_type<scalar_t>* workspace;  // splits x K x (Cg*R*S)
  Conv2dShape g;
  int64_t tiles_m, tiles_n;  // tiles over Cg*R*S and over Kg
  int64_t splits, chunk;     // reduction chunks, each a multiple of BK long
};

// B[k = (n, p, q)][n = output channel in group] = grad_output[n][group*Kg + m][p][q]:
// contiguous along k.
template <typename scalar_t, typename acc_type>
struct BackwardWeightGradOutputOperand {
  using acc_t = acc_type;
  static constexpr bool kAlongK = true;
  const scalar_t* grad_output;
  const Conv2dShape* g;
  int64_t group;

  struct Column {
    int64_t offset;
    bool valid;
  };
  struct Row {
    int64_t offset;
    bool valid;
  };
  __device__ __forceinline__ Column column(int64_t m) const {
    return Column{(group * g->K_per_group + m) * g->P * g->Q, m < g->K_per_group};
  }
  __device__ __forceinline__ Row row(int64_t k, bool valid) const {
    const int64_t PQ = g->P * g->Q;
    return Row{(k / PQ) * g->K * PQ + k % PQ, valid};
  }
  __device__ __forceinline__ acc_t load(const Row& row, const Column& col) const {
    return row.valid && col.valid ? load_as<acc_t>(grad_output + row.offset + col.offset)
                                  : acc_t(0);
  }
};

// A[k = (n, p, q)][m = (c, r, s)] = input[n][group*Cg + c][p*sh - ph + r*dh][q*sw - pw + s*dw].
template <typename scalar_t, typename acc_type>
struct BackwardWeightInputOperand {
  using acc_t = acc_type;
  static constexpr bool kAlongK = true;
  const scalar_t* input;
  const Conv2dShape* g;
  int64_t group;

  struct Column {
    int64_t channel_offset, dh, dw;
    bool valid;
  };
  struct Row {
    int64_t image_offset, ih0, iw0;
    bool valid;
  };
  __device__ __forceinline__ Column column(int64_t crs) const {
    const int64_t RS = g->R * g->S;
    const int64_t c = crs / RS, rs = crs % RS;
    return Column{(group * g->C_per_group + c) * g->H * g->W, (rs / g->S) * g->dilation_h,
                  (rs % g->S) * g->dilation_w, crs < g->C_per_group * RS};
  }
  __device__ __forceinline__ Row row(int64_t k, bool valid) const {
    const int64_t PQ = g->P * g->Q;
    const int64_t n = k / PQ, pq = k % PQ;
    return Row{n * g->C * g->H * g->W, (pq / g->Q) * g->stride_h - g->pad_h,
               (pq % g->Q) * g->stride_w - g->pad_w, valid};
  }
  __device__ __forceinline__ acc_t load(const Row& row, const Column& col) const {
    if (!(row.valid && col.valid)) return acc_t(0);
    const int64_t ih = row.ih0 + col.dh, iw = row.iw0 + col.dw;
    if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) return acc_t(0);
    return load_as<acc_t>(input + row.image_offset + col.channel_offset + ih * g->W + iw);
  }
};

template <typename scalar_t, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads)
    conv2d_backward_weight_gemm_kernel(BackwardWeightParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  auto* As = reinterpret_cast<acc_t(*)[Tile::BM]>(shared_array<acc_t, Tile::BK * Tile::BM, 0>());
  auto* Bs = reinterpret_cast<acc_t(*)[Tile::BN]>(shared_array<acc_t, Tile::BK * Tile::BN, 1>());
  const Conv2dShape& g = p.g;
  const int64_t columns = g.C_per_group * g.R * g.S, reduction = g.N * g.P * g.Q;
  const int tx = threadIdx.x % Tile::kThreadsM, ty = threadIdx.x / Tile::kThreadsM;

  // blockIdx.z walks (split, group), y the output-channel tiles, x the
  // (c, r, s) tiles. M = (c, r, s) so that neighbouring threads write
  // neighbouring weight elements.
  for (int64_t tile_z = blockIdx.z; tile_z < p.splits * g.groups; tile_z += gridDim.z) {
    const int64_t split = tile_z / g.groups, group = tile_z % g.groups;
    const int64_t k_begin = split * p.chunk;
    const int64_t k_end = k_begin + p.chunk < reduction ? k_begin + p.chunk : reduction;
    const BackwardWeightInputOperand<scalar_t, acc_t> a{p.input, &g, group};
    const BackwardWeightGradOutputOperand<scalar_t, acc_t> b{p.grad_output, &g, group};
    for (int64_t tile_y = blockIdx.y; tile_y < p.tiles_n; tile_y += gridDim.y) {
      const int64_t n0 = tile_y * Tile::BN;
      for (int64_t tile_x = blockIdx.x; tile_x < p.tiles_m; tile_x += gridDim.x) {
        const int64_t m0 = tile_x * Tile::BM;
        acc_t acc[Tile::TM][Tile::TN];
        // An empty chunk still writes its zeros: every slice is summed.
        gemm_tile<Tile>(a, b, m0, n0, k_begin, k_end, acc, As, Bs);
        acc_t* out = p.workspace + (split * g.K + group * g.K_per_group) * columns;
#pragma unroll
        for (int i = 0; i < Tile::TM; ++i) {
          const int64_t m = m0 + tile_row<Tile>(tx, i);
          if (m >= columns) continue;
#pragma unroll
          for (int j = 0; j < Tile::TN; ++j) {
            const int64_t n = n0 + tile_col<Tile>(ty, j);
            if (n < g.K_per_group) out[n * columns + m] = acc[i][j];
          }
        }
      }
    }
  }
}

}  // namespace cuda
}  // namespace conv_ext
