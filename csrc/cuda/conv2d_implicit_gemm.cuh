// The main loop shared by the dense kernels of all three ops: an implicit
// GEMM C[m][n] = sum_k A[k][m] * B[k][n] whose operands are gathered from
// the convolution's tensors on the fly (no im2col buffer). Each op supplies
// two operand descriptions; the loop stages BK x BM of A and BK x BN of B in
// shared memory, prefetching the next slab into registers while the block
// computes on the current one, and each thread accumulates a TM x TN
// register tile from outer products read out of shared memory.
#pragma once

#include "conv2d_cuda_common.cuh"

namespace conv_ext {
namespace cuda {

// An operand provides (see the kernels' *Operand structs):
//   acc_t                          accumulation type
//   kAlongK                        true: consecutive threads walk the
//                                  reduction index k (contiguous in memory
//                                  along k), false: along the columns
//   Column column(int64_t col)     per-column state, computed once per tile
//   Row row(int64_t k, bool valid) per-reduction-index state, once per slab
//   acc_t load(Row, Column)        the element, 0 outside the problem
// Each thread's set of columns is fixed for the whole tile, so their state
// (pointers, image coordinates) is computed once, not once per slab.
template <typename Tile, int COLS, typename Operand>
struct SlabLoader {
  using acc_t = typename Operand::acc_t;
  static constexpr int kThreads = Tile::kThreads;
  static constexpr int kBK = Tile::BK;
  static constexpr int kPerThread = kBK * COLS / kThreads;
  static constexpr bool kAlongK = Operand::kAlongK;
  // Threads per pass across the slab and the stride between passes.
  static constexpr int kPassStride = kAlongK ? kThreads / kBK : kThreads / COLS;

  typename Operand::Column cols[kAlongK ? kPerThread : 1];
  acc_t regs[kPerThread];

  __device__ __forceinline__ void init(const Operand& op, int64_t col0, int tid) {
    if constexpr (kAlongK) {
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        cols[i] = op.column(col0 + tid / kBK + i * kPassStride);
      }
    } else {
      cols[0] = op.column(col0 + tid % COLS);
    }
  }

  __device__ __forceinline__ void load(const Operand& op, int64_t k0,
                                       int64_t k_end, int tid) {
    if constexpr (kAlongK) {
      const int64_t k = k0 + tid % kBK;
      const auto row = op.row(k, k < k_end);
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) regs[i] = op.load(row, cols[i]);
    } else {
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const int64_t k = k0 + tid / COLS + i * kPassStride;
        regs[i] = op.load(op.row(k, k < k_end), cols[0]);
      }
    }
  }

  __device__ __forceinline__ void store(acc_t (*smem)[COLS], int tid) const {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      if constexpr (kAlongK) {
        smem[tid % kBK][tid / kBK + i * kPassStride] = regs[i];
      } else {
        smem[tid / COLS + i * kPassStride][tid % COLS] = regs[i];
      }
    }
  }
};

// The output rows and columns of thread (tx, ty) = (tid % kThreadsM,
// tid / kThreadsM): runs of four consecutive rows (columns), the runs of
// neighbouring threads adjacent, so a thread reads its fragments from shared
// memory in 128-bit loads without bank conflicts and a warp's stores cover
// contiguous pixels.
template <typename Tile>
__device__ __forceinline__ int tile_row(int tx, int i) {
  return (i / 4) * (Tile::kThreadsM * 4) + tx * 4 + i % 4;
}
template <typename Tile>
__device__ __forceinline__ int tile_col(int ty, int j) {
  return (j / 4) * (Tile::kThreadsN * 4) + ty * 4 + j % 4;
}

// Accumulates the block's BM x BN tile over the reduction range
// [k_begin, k_end); thread (tx, ty) owns rows m0 + tile_row(tx, i) and
// columns n0 + tile_col(ty, j).
template <typename Tile, typename OperandA, typename OperandB, typename acc_t>
__device__ __forceinline__ void gemm_tile(const OperandA& a, const OperandB& b,
                                          int64_t m0, int64_t n0,
                                          int64_t k_begin, int64_t k_end,
                                          acc_t (&acc)[Tile::TM][Tile::TN],
                                          acc_t (*As)[Tile::BM],
                                          acc_t (*Bs)[Tile::BN]) {
  static_assert(Tile::TM % 4 == 0 && Tile::TN % 4 == 0, "fragments are read in fours");
  const int tid = threadIdx.x;
  const int tx = tid % Tile::kThreadsM, ty = tid / Tile::kThreadsM;
#pragma unroll
  for (int i = 0; i < Tile::TM; ++i) {
#pragma unroll
    for (int j = 0; j < Tile::TN; ++j) acc[i][j] = acc_t(0);
  }
  if (k_begin >= k_end) return;  // uniform across the block

  SlabLoader<Tile, Tile::BM, OperandA> load_a;
  SlabLoader<Tile, Tile::BN, OperandB> load_b;
  load_a.init(a, m0, tid);
  load_b.init(b, n0, tid);
  load_a.load(a, k_begin, k_end, tid);
  load_b.load(b, k_begin, k_end, tid);

  for (int64_t k0 = k_begin; k0 < k_end; k0 += Tile::BK) {
    load_a.store(As, tid);
    load_b.store(Bs, tid);
    __syncthreads();
    // Global loads of the next slab are in flight while this one computes.
    if (k0 + Tile::BK < k_end) {
      load_a.load(a, k0 + Tile::BK, k_end, tid);
      load_b.load(b, k0 + Tile::BK, k_end, tid);
    }
#pragma unroll
    for (int kk = 0; kk < Tile::BK; ++kk) {
      acc_t a_frag[Tile::TM / 4][4], b_frag[Tile::TN / 4][4];
#pragma unroll
      for (int v = 0; v < Tile::TM / 4; ++v) {
        load_four(&As[kk][tile_row<Tile>(tx, 4 * v)], a_frag[v]);
      }
#pragma unroll
      for (int v = 0; v < Tile::TN / 4; ++v) {
        load_four(&Bs[kk][tile_col<Tile>(ty, 4 * v)], b_frag[v]);
      }
#pragma unroll
      for (int i = 0; i < Tile::TM; ++i) {
#pragma unroll
        for (int j = 0; j < Tile::TN; ++j) acc[i][j] += a_frag[i / 4][i % 4] * b_frag[j / 4][j % 4];
      }
    }
    // Everyone is done reading before the next slab (or tile) overwrites.
    __syncthreads();
  }
}

}  // namespace cuda
}  // namespace conv_ext
