// Memory-format copies of the tensor-core paths: NCHW <-> NHWC is, per
// image, a [rows][cols] -> [cols][rows] transpose (rows = C and cols = H*W
// one way, the reverse the other). torch's generic permuted copy reads or
// writes with a stride on one side (about 300 GB/s for bf16 on an H200); a
// tile staged in shared memory makes both sides coalesced.
#pragma once

#include "conv2d_cuda_common.cuh"

namespace conv_ext {
namespace cuda {

constexpr int kTransposeThreads = 256;

// Tile edge: 64 elements for 16-bit types (128-byte rows), 32 otherwise.
template <typename scalar_t>
constexpr int transpose_tile() {
  return sizeof(scalar_t) == 2 ? 64 : 32;
}

// out[b][c][r] = in[b][r][c] for b < batch, r < rows, c < cols. Grid-stride
// over (column tile, row tile, batch), so any size fits the grid limits.
template <typename scalar_t>
__global__ void __launch_bounds__(kTransposeThreads)
    transpose_batched_kernel(const scalar_t* __restrict__ in, scalar_t* __restrict__ out,
                             int64_t batch, int64_t rows, int64_t cols) {
  constexpr int T = transpose_tile<scalar_t>();
  constexpr int kRowsPerPass = kTransposeThreads / T;
  // One padding element per row: the column-wise reads of the tile hit
  // distinct banks (up to 2-way for 16-bit types).
  scalar_t* tile = shared_array<scalar_t, T * (T + 1), 30>();
  const int lane_col = threadIdx.x % T, lane_row = threadIdx.x / T;
  const int64_t col_tiles = (cols + T - 1) / T, row_tiles = (rows + T - 1) / T;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const scalar_t* src = in + b * rows * cols;
    scalar_t* dst = out + b * rows * cols;
    for (int64_t rt = blockIdx.y; rt < row_tiles; rt += gridDim.y) {
      for (int64_t ct = blockIdx.x; ct < col_tiles; ct += gridDim.x) {
        const int64_t r0 = rt * T, c0 = ct * T;
        // Read rows of the input tile (coalesced along cols) ...
        for (int i = lane_row; i < T; i += kRowsPerPass) {
          const int64_t r = r0 + i, c = c0 + lane_col;
          if (r < rows && c < cols) tile[i * (T + 1) + lane_col] = src[r * cols + c];
        }
        __syncthreads();
        // ... write rows of the output tile (coalesced along rows).
        for (int i = lane_row; i < T; i += kRowsPerPass) {
          const int64_t c = c0 + i, r = r0 + lane_col;
          if (r < rows && c < cols) dst[c * rows + r] = tile[lane_col * (T + 1) + i];
        }
        __syncthreads();  // the tile is reused by the next iteration
      }
    }
  }
}

}  // namespace cuda
}  // namespace conv_ext
