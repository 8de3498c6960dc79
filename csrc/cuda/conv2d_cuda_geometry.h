// Plain data shared by the CUDA kernels (device code), the host-side plan and
// the CPU emulation of the kernels: the GEMM and depthwise tile shapes (the
// problem itself is Conv2dShape, conv2d_shape.h, passed to the kernels by
// value). No CUDA or ATen types, so every compiler accepts it.
#pragma once

#include <cstdint>

#include "../conv2d_shape.h"

namespace conv_ext {
namespace cuda {

// Block tile of an implicit GEMM: BM x BN outputs per block, the reduction
// staged through shared memory BK at a time, each thread holding TM x TN
// outputs in registers. The thread count follows from the tile.
template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int kThreadsM = BM / TM, kThreadsN = BN / TN;
  static constexpr int kThreads = kThreadsM * kThreadsN;
  static_assert(BM % TM == 0 && BN % TN == 0, "tile must divide evenly");
  static_assert(kThreads % BM == 0 && kThreads % BN == 0 && kThreads % BK == 0,
                "shared-memory loads assume whole rows/columns per pass");
};

// 128 x 128 outputs, 256 threads, 8 x 8 per thread: the widest layers; 64
// FMAs per 16 shared-memory reads (the large tile does 32 per 12).
using HugeTile = GemmTile<128, 128, 8, 8, 8>;
// 128 x 64 outputs, 256 threads, 8 x 4 per thread: wide layers.
using LargeTile = GemmTile<128, 64, 8, 8, 4>;
// 32 x 32 outputs, 64 threads, 4 x 4 per thread: few channels or pixels,
// where a large tile would leave most of the GPU idle or compute padding.
using SmallTile = GemmTile<32, 32, 8, 4, 4>;

// Threads per block of the depthwise and element-wise kernels.
constexpr int kDepthwiseThreads = 256;
// grad-weight of depthwise: one (channel, tap) per block, a block-wide sum.
constexpr int kDepthwiseWeightThreads = 128;
constexpr int kReduceThreads = 256;

// Tiled depthwise forward: a block stages, for each of `planes` (n, k)
// planes, the input tile of its tile_h x tile_w outputs (with the halo the
// filter reaches) and the filter in shared memory, then each thread computes
// rows_per_thread outputs of one column from shared memory. Small planes
// share a block (planes > 1) so that 7x7 or 14x14 outputs don't leave most
// threads idle. Budgets are in elements of the accumulation type, sized for
// double (8 bytes) so that one plan fits every dtype: 40 KB + 4 KB < 48 KB.
constexpr int kDepthwiseTileElements = 5120;
constexpr int kDepthwiseTileTaps = 512;
struct DepthwiseTile {
  int tx, ty;             // threads per plane along W and H (tx * ty * planes = block)
  int rows_per_thread;    // outputs per thread, ty rows apart
  int planes;             // (n, k) planes per block
  int tile_h, tile_w;     // outputs per plane per block: ty * rows_per_thread, tx
  int tiles_w;            // tiles along Q (grid x = tiles_h * tiles_w)
  int in_h, in_w;         // staged input tile with halo
};

}  // namespace cuda
}  // namespace conv_ext
