// Dense grad-weight on the tensor cores: an implicit GEMM over channels_last
// tensors, M = output channels of a group x N = filter columns (r, s, c) of
// the group, reduced over the N*P*Q output pixels:
//   grad_weight[k][r][s][c] = sum over (n, p, q) of
//       grad_output[n][p][q][k] * input[n][p*sh - ph + r*dh][q*sw - pw + s*dw][c].
// Both operands are contiguous along their output dimension (channels), so
// a slab of the reduction is a few pixels x the tile's channels: each row of
// shared memory is one pixel, and the fragments come out transposed
// (ldmatrix.trans for bf16/fp16; single 32-bit loads for tf32, which
// ldmatrix cannot transpose). cp.async with zero-fill for padding and ragged
// edges into a multi-stage ring; mma.sync with fp32 accumulators (m16n8k16
// bf16/fp16, m16n8k8 tf32 after cvt.rna).
//
// The reduction is cut into chunks (split-K; the plan picks them from the
// shape alone); each block writes its fp32 partial tile to a workspace slice
// and sum_splits_kernel adds the slices in a fixed order: no atomics, the
// result is bitwise identical run to run.
//
// Layouts: grad_output N x P x Q x K, input N x H x W x C, workspace
// splits x K x (R*S*Cg) (the channels_last weight). Cg and Kg must be whole
// 16-byte vectors (the host checks), so a vector never straddles a tap, a
// pixel or a group.
#pragma once

#include "conv2d_cuda_common.cuh"
#include "conv2d_warp_primitives.cuh"

namespace conv_ext {
namespace cuda {

// A block tile of BM output channels x BN filter columns, WarpsM x WarpsN
// warps, Stages slabs in flight. A slab is 64 bytes of reduction per column:
// 32 pixels of bf16/fp16 (two k16 steps), 16 of fp32 (two k8 steps). Shared
// rows (one pixel each) are padded by 8 elements: a row pitch of an odd
// multiple of 16 bytes (16-bit) puts the 8 rows of an ldmatrix in distinct
// banks, and one of 8 words mod 32 (fp32) the 4 x 8 lanes of a fragment load.
template <int BM_, int BN_, int WarpsM_, int WarpsN_, int Stages_>
struct MmaWgradTile {
  static constexpr int BM = BM_, BN = BN_, kWarpsM = WarpsM_, kWarpsN = WarpsN_;
  static constexpr int kStages = Stages_;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpM = BM / kWarpsM, kWarpN = BN / kWarpsN;  // warp tile
  static constexpr int kFragsM = kWarpM / 16, kFragsN = kWarpN / 8;   // mma tiles per warp
  static constexpr int kSlabBytes = 64, kPadElements = 8;
  static_assert(kWarpM % 16 == 0 && kWarpN % 16 == 0, "warp tile of whole 16x16 fragments");
  // Pixels of a slab for elements of `bytes` bytes.
  static constexpr int rows(int bytes) { return kSlabBytes / bytes; }
  // Bytes of one stage (A rows, then B rows; the same for every element
  // size: rows * bytes == kSlabBytes) and of the ring.
  static constexpr int kStageBytes = kSlabBytes * (BM + BN + 2 * kPadElements);
  static constexpr int kSharedBytes = kStages * kStageBytes;
};

// 64 output channels x 128 filter columns, 4 warps of 32 x 64, 3 stages:
// 39 KB of shared memory.
using MmaWgradTile64x128 = MmaWgradTile<64, 128, 2, 2, 3>;

template <typename scalar_t>
struct MmaWgradParams {
  const scalar_t* grad_output;  // N x P x Q x K
  const scalar_t* input;        // N x H x W x C
  float* workspace;             // splits x K x (R*S*Cg)
  Conv2dShape g;
  int64_t tiles_m, tiles_n;     // tiles over Kg and over R*S*Cg
  int64_t splits, chunk;        // reduction chunks, each a whole number of slabs long
};

template <typename scalar_t, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads)
    conv2d_backward_weight_mma_kernel(MmaWgradParams<scalar_t> p) {
  using half_or_float = scalar_t;
  constexpr bool kTf32 = std::is_same_v<scalar_t, float>;
  static_assert(kTf32 || sizeof(scalar_t) == 2, "bf16/fp16 or tf32");
  constexpr int kVector = 16 / static_cast<int>(sizeof(scalar_t));  // channels per cp.async
  constexpr int kRows = Tile::rows(sizeof(scalar_t));                // pixels per slab
  constexpr int kPitchA = Tile::BM + Tile::kPadElements;             // elements per row
  constexpr int kPitchB = Tile::BN + Tile::kPadElements;
  constexpr int kStepRows = kTf32 ? 8 : 16;                          // k of one mma
  // Each thread loads one pixel row of a slab: kVectorsA + kVectorsB
  // vectors of it, kThreadsPerRow vectors apart.
  constexpr int kThreadsPerRow = Tile::kThreads / kRows;
  constexpr int kVectorsA = Tile::BM / kVector / kThreadsPerRow;
  constexpr int kVectorsB = Tile::BN / kVector / kThreadsPerRow;
  static_assert(Tile::kThreads % kRows == 0 && kVectorsA * kVector * kThreadsPerRow == Tile::BM &&
                    kVectorsB * kVector * kThreadsPerRow == Tile::BN,
                "whole vectors per thread");

  auto* ring = reinterpret_cast<unsigned char*>(
      shared_array<uint32_t, Tile::kSharedBytes / 4, 21>());
  const Conv2dShape& g = p.g;
  const int tid = threadIdx.x, lane = lane_id(), warp = tid / 32;
  const int warp_m = warp % Tile::kWarpsM, warp_n = warp / Tile::kWarpsM;
  const int load_row = tid / kThreadsPerRow, load_vector = tid % kThreadsPerRow;
  const int64_t PQ = g.P * g.Q, reduction = g.N * PQ;
  const int64_t columns = g.R * g.S * g.C_per_group;
  // Offsets within an image are 32-bit (the host checks that an image fits);
  // image bases and pixel rows of grad_output are 64-bit pointers.
  const int64_t image_elements = g.H * g.W * g.C;
  // A slab advances the pixel (n, p, q) by kRows = step_n*PQ + step_p*Q + step_q.
  const int64_t image_step = (kRows / PQ) * image_elements;
  const int64_t a_step = static_cast<int64_t>(kRows) * g.K;
  const int step_p = static_cast<int>((kRows % PQ) / g.Q), step_q = static_cast<int>(kRows % g.Q);
  const int P = static_cast<int>(g.P), Q = static_cast<int>(g.Q);
  const auto H = static_cast<uint32_t>(g.H), W = static_cast<uint32_t>(g.W);
  const auto C = static_cast<uint32_t>(g.C);
  const auto stride_h = static_cast<uint32_t>(g.stride_h);
  const auto stride_w = static_cast<uint32_t>(g.stride_w);

  // z walks (split, group), y the output-channel tiles, x the filter-column tiles.
  for (int64_t tile_z = blockIdx.z; tile_z < p.splits * g.groups; tile_z += gridDim.z) {
    const int64_t split = tile_z / g.groups, group = tile_z % g.groups;
    const int64_t k_begin = split * p.chunk;
    const int64_t k_end = k_begin + p.chunk < reduction ? k_begin + p.chunk : reduction;
    // Whole slabs but the last (rows past k_end load zeros); the host
    // checks that the count fits an int.
    const int slabs = static_cast<int>((k_end - k_begin + kRows - 1) / kRows);
    const int tail_rows = static_cast<int>(k_end - k_begin - static_cast<int64_t>(slabs - 1) * kRows);
    // Slabs in which this thread's pixel row is inside the chunk.
    const int my_slabs = load_row < tail_rows ? slabs : slabs - 1;
    for (int64_t tile_y = blockIdx.y; tile_y < p.tiles_m; tile_y += gridDim.y) {
      const int64_t m0 = tile_y * Tile::BM;
      for (int64_t tile_x = blockIdx.x; tile_x < p.tiles_n; tile_x += gridDim.x) {
        const int64_t n0 = tile_x * Tile::BN;
        // Per-column state, once per tile: A's channel offset; B's tap
        // (as receptive-field offsets) and channel.
        int a_channel[kVectorsA];
        bool a_valid[kVectorsA];
#pragma unroll
        for (int j = 0; j < kVectorsA; ++j) {
          const int64_t m = m0 + (load_vector + j * kThreadsPerRow) * kVector;
          a_valid[j] = m < g.K_per_group;
          a_channel[j] = static_cast<int>(group * g.K_per_group + m);
        }
        // B: the column's tap as a receptive-field offset (dh, dw) and its
        // offset within an image, (dh * W + dw) * C + channel (mod 2^32: the
        // sum with a pixel's offset is exact wherever the tap is inside).
        uint32_t b_dh[kVectorsB], b_dw[kVectorsB], b_offset[kVectorsB];
        bool b_valid[kVectorsB];
#pragma unroll
        for (int j = 0; j < kVectorsB; ++j) {
          const int64_t n = n0 + (load_vector + j * kThreadsPerRow) * kVector;
          b_valid[j] = n < columns;
          const int64_t nn = b_valid[j] ? n : 0;
          const int64_t rs = nn / g.C_per_group, c = nn % g.C_per_group;
          const int64_t dh = (rs / g.S) * g.dilation_h - g.pad_h;
          const int64_t dw = (rs % g.S) * g.dilation_w - g.pad_w;
          b_dh[j] = static_cast<uint32_t>(dh);
          b_dw[j] = static_cast<uint32_t>(dw);
          b_offset[j] = static_cast<uint32_t>((dh * g.W + dw) * g.C + group * g.C_per_group + c);
        }
        // This thread's pixel of the next slab: its grad_output row, its
        // image and (p, q), advanced by counters (no division in the loop).
        const int64_t first_k = k_begin + load_row;
        const scalar_t* a_pixel = p.grad_output + first_k * g.K;
        const scalar_t* b_image = p.input + (first_k / PQ) * image_elements;
        int load_p = static_cast<int>((first_k % PQ) / g.Q), load_q = static_cast<int>(first_k % g.Q);
        int loaded = 0, load_stage = 0;
        const auto load_slab = [&]() {
          auto* a_smem = reinterpret_cast<scalar_t*>(ring + load_stage * Tile::kStageBytes);
          scalar_t* b_smem = a_smem + kRows * kPitchA;
          const bool k_valid = loaded < my_slabs;
#pragma unroll
          for (int j = 0; j < kVectorsA; ++j) {
            const bool valid = k_valid && a_valid[j];
            cp_async<16>(a_smem + load_row * kPitchA + (load_vector + j * kThreadsPerRow) * kVector,
                         valid ? a_pixel + a_channel[j] : p.grad_output, valid);
          }
          // Unsigned: a negative ih or iw compares as huge, one test per side.
          const uint32_t ih0 = static_cast<uint32_t>(load_p) * stride_h;
          const uint32_t iw0 = static_cast<uint32_t>(load_q) * stride_w;
          const uint32_t pixel_offset = (ih0 * W + iw0) * C;
#pragma unroll
          for (int j = 0; j < kVectorsB; ++j) {
            const bool valid =
                k_valid && b_valid[j] && ih0 + b_dh[j] < H && iw0 + b_dw[j] < W;
            cp_async<16>(b_smem + load_row * kPitchB + (load_vector + j * kThreadsPerRow) * kVector,
                         valid ? b_image + (pixel_offset + b_offset[j]) : p.input, valid);
          }
          // Advance by kRows pixels: each carry is at most one.
          a_pixel += a_step;
          b_image += image_step;
          load_q += step_q;
          if (load_q >= Q) {
            load_q -= Q;
            ++load_p;
          }
          load_p += step_p;
          if (load_p >= P) {
            load_p -= P;
            b_image += image_elements;
          }
          ++loaded;
          load_stage = load_stage + 1 == Tile::kStages ? 0 : load_stage + 1;
        };

        float acc[Tile::kFragsM][Tile::kFragsN][4];
#pragma unroll
        for (int i = 0; i < Tile::kFragsM; ++i) {
#pragma unroll
          for (int j = 0; j < Tile::kFragsN; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
          }
        }

        // Prologue: Stages - 1 slabs in flight (empty groups past the end
        // keep the group count, and so the waits, uniform).
#pragma unroll
        for (int stage = 0; stage < Tile::kStages - 1; ++stage) {
          if (loaded < slabs) load_slab();
          cp_async_commit();
        }
        int read_stage = 0;
        for (int t = 0; t < slabs; ++t) {
          // Slab t has landed (this thread's copies; after the barrier,
          // everyone's), and everyone is done with slab t - 1, whose stage
          // the next load reuses.
          cp_async_wait<Tile::kStages - 2>();
          __syncthreads();
          if (loaded < slabs) load_slab();
          cp_async_commit();

          const auto* a_smem =
              reinterpret_cast<const scalar_t*>(ring + read_stage * Tile::kStageBytes);
          read_stage = read_stage + 1 == Tile::kStages ? 0 : read_stage + 1;
          const scalar_t* b_smem = a_smem + kRows * kPitchA;
#pragma unroll
          for (int step = 0; step < kRows / kStepRows; ++step) {
            uint32_t a[Tile::kFragsM][4], b[Tile::kFragsN][2];
            if constexpr (kTf32) {
              // m16n8k8 tf32 fragments, element (row, col) of A = smem_a[k = col][m = row]:
              // a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4); b0 (k t, n g),
              // b1 (k t + 4, n g). Lanes hit word t * pitch + g: 32 distinct banks.
              const int gid = lane / 4, tig = lane % 4;
              const scalar_t* a_k = a_smem + (step * kStepRows + tig) * kPitchA;
              const scalar_t* b_k = b_smem + (step * kStepRows + tig) * kPitchB;
#pragma unroll
              for (int i = 0; i < Tile::kFragsM; ++i) {
                const int m = warp_m * Tile::kWarpM + i * 16 + gid;
                a[i][0] = cvt_rna_tf32(a_k[m]);
                a[i][1] = cvt_rna_tf32(a_k[m + 8]);
                a[i][2] = cvt_rna_tf32(a_k[4 * kPitchA + m]);
                a[i][3] = cvt_rna_tf32(a_k[4 * kPitchA + m + 8]);
              }
#pragma unroll
              for (int j = 0; j < Tile::kFragsN; ++j) {
                const int n = warp_n * Tile::kWarpN + j * 8 + gid;
                b[j][0] = cvt_rna_tf32(b_k[n]);
                b[j][1] = cvt_rna_tf32(b_k[4 * kPitchB + n]);
              }
            } else {
              // Shared rows are k (pixels), so ldmatrix.trans. Lane l points at
              // row l % 8 of matrix l / 8.
              const int quad = lane / 8;
#pragma unroll
              for (int i = 0; i < Tile::kFragsM; ++i) {
                // Matrices: (m 0-7, k lo), (m 8-15, k lo), (m 0-7, k hi), (m 8-15, k hi).
                const int k = step * kStepRows + lane % 8 + (quad / 2) * 8;
                const int m = warp_m * Tile::kWarpM + i * 16 + (quad % 2) * 8;
                ldmatrix<4, true>(a[i], a_smem + k * kPitchA + m);
              }
#pragma unroll
              for (int j = 0; j < Tile::kFragsN; j += 2) {
                // Matrices: (n 0-7, k lo), (n 0-7, k hi), (n 8-15, k lo), (n 8-15, k hi).
                const int k = step * kStepRows + lane % 8 + (quad % 2) * 8;
                const int n = warp_n * Tile::kWarpN + j * 8 + (quad / 2) * 8;
                uint32_t r[4];
                ldmatrix<4, true>(r, b_smem + k * kPitchB + n);
                b[j][0] = r[0];
                b[j][1] = r[1];
                b[j + 1][0] = r[2];
                b[j + 1][1] = r[3];
              }
            }
#pragma unroll
            for (int i = 0; i < Tile::kFragsM; ++i) {
#pragma unroll
              for (int j = 0; j < Tile::kFragsN; ++j) {
                if constexpr (kTf32) {
                  mma_m16n8k8_tf32(acc[i][j], a[i], b[j]);
                } else {
                  mma_m16n8k16<half_or_float>(acc[i][j], a[i], b[j]);
                }
              }
            }
          }
        }
        // Nothing may still write the ring when the next tile starts loading.
        cp_async_wait<0>();
        __syncthreads();

        // Epilogue: accumulator (i, j, e) is D[row g (+8)][column 2t (+1)];
        // every tile writes its slice, zeros included (all slices are summed).
        const int gid = lane / 4, tig = lane % 4;
        float* out = p.workspace + (split * g.K + group * g.K_per_group) * columns;
#pragma unroll
        for (int i = 0; i < Tile::kFragsM; ++i) {
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int64_t m = m0 + warp_m * Tile::kWarpM + i * 16 + gid + 8 * half;
            if (m >= g.K_per_group) continue;
#pragma unroll
            for (int j = 0; j < Tile::kFragsN; ++j) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int64_t n = n0 + warp_n * Tile::kWarpN + j * 8 + 2 * tig + e;
                if (n < columns) out[m * columns + n] = acc[i][j][2 * half + e];
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace cuda
}  // namespace conv_ext
