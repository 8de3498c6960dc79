// Host-side launch plans of the CUDA kernels: which kernel, which tile, grid
// and block dimensions, split counts and workspace sizes for a problem shape.
// Plain C++ (no CUDA runtime, no launches): the real launchers and the CPU
// emulation of the kernels both use it, so the emulated tests exercise the
// same dispatch decisions as the GPU. Plans depend on the shape only (not on
// the device), so results are reproducible across runs and machines.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>

#include "../conv2d_params.h"
#include "conv2d_cuda_geometry.h"

namespace conv_ext {
namespace cuda {

// kMma: a tensor-core kernel (conv2d_*_mma.h plan those).
enum class KernelKind { kGemmSmall, kGemmLarge, kGemmHuge, kDepthwise, kDepthwiseTiled, kMma };

inline const char* kernel_kind_name(KernelKind kind) {
  switch (kind) {
    case KernelKind::kGemmSmall: return "gemm_small";
    case KernelKind::kGemmLarge: return "gemm_large";
    case KernelKind::kGemmHuge: return "gemm_huge";
    case KernelKind::kDepthwise: return "depthwise";
    case KernelKind::kDepthwiseTiled: return "depthwise_tiled";
    case KernelKind::kMma: return "mma";
  }
  return "?";
}

// The algorithm a problem runs on, for each pass: the one place the CUDA ops
// choose a path. Depthwise problems (any channel multiplier) run on the
// depthwise kernels (conv2d_depthwise_kernels.cuh), everything else on the
// implicit GEMMs (conv2d_*_kernels.cuh over conv2d_implicit_gemm.cuh). Every
// dtype takes the same kernels (accumulating in its op-math type); the plan
// then picks the tile (plan_conv2d_*).
enum class CudaPath { kImplicitGemm, kDepthwise };

inline CudaPath select_path(const Conv2dShape& s, Pass /*pass*/, at::ScalarType /*dtype*/) {
  return s.is_depthwise() ? CudaPath::kDepthwise : CudaPath::kImplicitGemm;
}

// Hardware limits of a grid; kernels loop over tiles beyond them.
constexpr int64_t kMaxGridX = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxGridYZ = 65535;
// Grid size of the element-wise kernels: enough to fill any current GPU,
// small enough that each thread loops a few times on huge tensors.
constexpr int64_t kMaxElementwiseBlocks = int64_t{1} << 20;
// Blocks the split reductions aim for: a few waves on a 132-SM H100.
constexpr int64_t kTargetBlocks = 4 * 132;
// The large tile only pays off with at least this many blocks to run.
constexpr int64_t kMinLargeTileBlocks = 128;
// Cap on the grad-weight workspace (elements) a split count may ask for.
constexpr int64_t kMaxWorkspaceElements = int64_t{1} << 26;

struct LaunchPlan {
  KernelKind kernel = KernelKind::kGemmSmall;
  uint32_t grid[3] = {1, 1, 1};
  uint32_t block = 1;
  int64_t tiles_m = 0, tiles_n = 0;
  // Split reductions (grad-weight): chunks, their length, and the workspace
  // of opmath-typed partials plus the grid of the fixed-order sum.
  int64_t splits = 1, chunk = 0;
  int64_t workspace_elements = 0;
  uint32_t reduce_grid = 1;
  // grad-input phases: the largest phase's extent (ceil(H / sh), ceil(W / sw)).
  int64_t phase_h_size = 0, phase_w_size = 0;
  // Tiled depthwise forward: the tile (kernel kDepthwiseTiled only).
  DepthwiseTile dw_tile{};
  // Depthwise kernels: their flat element index fits in int32, so they
  // decode it with 32-bit multiply-shifts instead of 64-bit division.
  bool narrow_index = true;

  std::string describe() const {
    std::ostringstream out;
    out << kernel_kind_name(kernel) << " grid=(" << grid[0] << "," << grid[1] << ","
        << grid[2] << ") block=" << block << " splits=" << splits;
    return out.str();
  }
};

// Test hook: force a tile ("small", "large" or "huge") for every dense plan, so the
// emulated tests can run each tile on small shapes with ragged edges;
// "elementwise" forces the untiled depthwise forward and grad-input.
// Empty: choose by shape. Never set by the library itself.
inline std::string& forced_tile() {
  static std::string tile;
  return tile;
}

// Test hook: decode the depthwise kernels' indices in 64 bits even where 32
// would do, so the emulated tests cover the path huge tensors take.
inline bool& forced_wide_index() {
  static bool wide = false;
  return wide;
}

inline bool fits_narrow_index(int64_t elements) {
  return elements <= std::numeric_limits<int32_t>::max() && !forced_wide_index();
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline uint32_t grid_dim(int64_t tiles, int64_t limit) {
  return static_cast<uint32_t>(std::max<int64_t>(1, std::min(tiles, limit)));
}

// The dense kernels decode their reduction index in 32-bit arithmetic.
inline void check_reduction_fits_int32(int64_t length, const char* what) {
  TORCH_CHECK(length <= std::numeric_limits<int32_t>::max(),
              "conv_ext CUDA: ", what, " (", length,
              ") exceeds 2^31 - 1, which the CUDA kernels do not support");
}

// Picks the tile of a dense GEMM with M x N outputs per group: the biggest
// one that both dimensions fill and that still yields `min_blocks` blocks.
inline KernelKind choose_tile(int64_t M, int64_t N, int64_t groups,
                              int64_t min_blocks = kMinLargeTileBlocks) {
  const std::string& forced = forced_tile();
  if (forced == "small") return KernelKind::kGemmSmall;
  if (forced == "large") return KernelKind::kGemmLarge;
  if (forced == "huge") return KernelKind::kGemmHuge;
  const auto fills = [&](int64_t bm, int64_t bn) {
    return N >= bn && M >= bm && ceil_div(M, bm) * ceil_div(N, bn) * groups >= min_blocks;
  };
  if (fills(HugeTile::BM, HugeTile::BN)) return KernelKind::kGemmHuge;
  if (fills(LargeTile::BM, LargeTile::BN)) return KernelKind::kGemmLarge;
  return KernelKind::kGemmSmall;
}

struct TileDims {
  int64_t BM, BN, BK, threads;
};

inline TileDims tile_dims(KernelKind kind) {
  switch (kind) {
    case KernelKind::kGemmHuge:
      return {HugeTile::BM, HugeTile::BN, HugeTile::BK, HugeTile::kThreads};
    case KernelKind::kGemmLarge:
      return {LargeTile::BM, LargeTile::BN, LargeTile::BK, LargeTile::kThreads};
    default:
      return {SmallTile::BM, SmallTile::BN, SmallTile::BK, SmallTile::kThreads};
  }
}

inline void set_gemm_tiles(LaunchPlan& plan, int64_t M, int64_t N) {
  const TileDims t = tile_dims(plan.kernel);
  plan.tiles_m = ceil_div(M, t.BM);
  plan.tiles_n = ceil_div(N, t.BN);
  plan.block = static_cast<uint32_t>(t.threads);
}

inline void set_elementwise_grid(LaunchPlan& plan, int64_t elements) {
  plan.kernel = KernelKind::kDepthwise;
  plan.block = kDepthwiseThreads;
  plan.grid[0] = grid_dim(ceil_div(elements, kDepthwiseThreads), kMaxElementwiseBlocks);
  plan.narrow_index = fits_narrow_index(elements);
}

inline int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

// The tile of a tiled depthwise kernel over planes of rows x cols results
// (forward: output planes P x Q; grad-input: input planes H x W), or false
// where the staged tile cannot fit shared memory (large dilations or
// kernels): those use the element-wise kernels. staged(n, stride, kernel,
// dilation): elements staged along one axis for n results along it.
template <typename Staged>
inline bool plan_depthwise_tile(const Conv2dShape& s, int64_t rows, int64_t cols,
                                const Staged& staged, DepthwiseTile& t) {
  const int64_t threads = kDepthwiseThreads;
  const int64_t tx = std::min<int64_t>(32, next_pow2(cols));
  const int64_t ty_max = threads / tx;
  const int64_t ty = std::min(ty_max, next_pow2(rows));
  const int64_t planes = threads / (tx * ty);
  int64_t rows_per_thread = ty == ty_max ? std::min<int64_t>(4, ceil_div(rows, ty)) : 1;
  if (planes * s.taps() > kDepthwiseTileTaps) return false;
  for (; rows_per_thread >= 1; --rows_per_thread) {
    const int64_t tile_h = ty * rows_per_thread;
    const int64_t in_h = staged(tile_h, s.stride_h, s.R, s.dilation_h);
    const int64_t in_w = staged(tx, s.stride_w, s.S, s.dilation_w);
    if (planes * in_h * in_w > kDepthwiseTileElements) continue;
    t.tx = static_cast<int>(tx);
    t.ty = static_cast<int>(ty);
    t.rows_per_thread = static_cast<int>(rows_per_thread);
    t.planes = static_cast<int>(planes);
    t.tile_h = static_cast<int>(tile_h);
    t.tile_w = static_cast<int>(tx);
    t.tiles_w = static_cast<int>(ceil_div(cols, tx));
    t.in_h = static_cast<int>(in_h);
    t.in_w = static_cast<int>(in_w);
    return true;
  }
  return false;
}

// Depthwise forward and grad-input: tiled through shared memory where the
// tile fits, else one result element per thread. The forward stages the
// input its output tile reads; grad-input the grad_output its input tile
// receives from.
inline LaunchPlan plan_depthwise(const Conv2dShape& s, Pass pass) {
  const bool forward = pass == Pass::kForward;
  const int64_t planes = forward ? s.N * s.K : s.N * s.C;
  const int64_t rows = forward ? s.P : s.H, cols = forward ? s.Q : s.W;
  const auto staged = [&](int64_t n, int64_t stride, int64_t kernel, int64_t dilation) {
    // grad-input: grad_output positions n inputs receive from, at most.
    return forward ? input_span(n, stride, kernel, dilation)
                   : (n - 1 + (kernel - 1) * dilation) / stride + 2;
  };
  LaunchPlan plan;
  DepthwiseTile t{};
  if (forced_tile() != "elementwise" && plan_depthwise_tile(s, rows, cols, staged, t)) {
    const int64_t tiles = ceil_div(rows, t.tile_h) * t.tiles_w;
    if (tiles <= kMaxGridX) {
      plan.kernel = KernelKind::kDepthwiseTiled;
      plan.dw_tile = t;
      plan.block = kDepthwiseThreads;
      plan.grid[0] = grid_dim(tiles, kMaxGridX);
      plan.grid[1] = grid_dim(ceil_div(planes, t.planes), kMaxGridYZ);
      return plan;
    }
  }
  set_elementwise_grid(plan, planes * rows * cols);
  return plan;
}

// Forward: M = N*P*Q pixels x N = Kg channels per group (grid y walks
// group x channel tile), reduction Cg*R*S; depthwise: tiled through shared
// memory where the tile fits, else one output per thread.
inline LaunchPlan plan_conv2d_forward(const Conv2dShape& s, at::ScalarType dtype) {
  if (select_path(s, Pass::kForward, dtype) == CudaPath::kDepthwise) {
    return plan_depthwise(s, Pass::kForward);
  }
  LaunchPlan plan;
  check_reduction_fits_int32(s.C_per_group * s.R * s.S, "C/groups * kernel size");
  const int64_t M = s.N * s.P * s.Q;
  plan.kernel = choose_tile(M, s.K_per_group, s.groups);
  set_gemm_tiles(plan, M, s.K_per_group);
  plan.grid[0] = grid_dim(plan.tiles_m, kMaxGridX);
  plan.grid[1] = grid_dim(plan.tiles_n * s.groups, kMaxGridYZ);
  return plan;
}

// grad-input: per phase M = N * ceil(H/sh) * ceil(W/sw) pixels x N = Cg
// channels (grid y walks group x phase x channel tile), reduction Kg x the
// phase's taps; depthwise: tiled where the tile fits, else one input
// element per thread.
inline LaunchPlan plan_conv2d_backward_input(const Conv2dShape& s, at::ScalarType dtype) {
  if (select_path(s, Pass::kBackwardInput, dtype) == CudaPath::kDepthwise) {
    return plan_depthwise(s, Pass::kBackwardInput);
  }
  LaunchPlan plan;
  check_reduction_fits_int32(s.K_per_group * s.R * s.S, "K/groups * kernel size");
  plan.phase_h_size = ceil_div(s.H, s.stride_h);
  plan.phase_w_size = ceil_div(s.W, s.stride_w);
  const int64_t M = s.N * plan.phase_h_size * plan.phase_w_size;
  const int64_t phases = s.stride_h * s.stride_w;
  plan.kernel = choose_tile(M, s.C_per_group, s.groups * phases);
  set_gemm_tiles(plan, M, s.C_per_group);
  plan.grid[0] = grid_dim(plan.tiles_m, kMaxGridX);
  plan.grid[1] = grid_dim(plan.tiles_n * s.groups * phases, kMaxGridYZ);
  return plan;
}

// Reduction chunks: enough blocks to fill the GPU, but at least
// `min_chunk` reduction elements per chunk and a bounded workspace.
inline void set_splits(LaunchPlan& plan, int64_t reduction, int64_t blocks_per_split,
                       int64_t partials_per_split, int64_t min_chunk, int64_t align) {
  int64_t splits = ceil_div(kTargetBlocks, std::max<int64_t>(1, blocks_per_split));
  splits = std::min(splits, std::max<int64_t>(1, reduction / min_chunk));
  splits = std::min(splits, std::max<int64_t>(1, kMaxWorkspaceElements / partials_per_split));
  splits = std::max<int64_t>(1, splits);
  plan.chunk = ceil_div(ceil_div(reduction, splits), align) * align;
  // No empty trailing chunks after rounding.
  plan.splits = ceil_div(reduction, plan.chunk);
  plan.workspace_elements = plan.splits * partials_per_split;
  plan.reduce_grid = grid_dim(ceil_div(partials_per_split, kReduceThreads), kMaxElementwiseBlocks);
}

// grad-weight: M = Cg*R*S x N = Kg per group, reduction N*P*Q in chunks
// (grid z walks split x group); depthwise: a block per (k, tap) x split.
// Call only with a non-empty reduction and weight.
inline LaunchPlan plan_conv2d_backward_weight(const Conv2dShape& s, at::ScalarType dtype) {
  LaunchPlan plan;
  const int64_t reduction = s.N * s.P * s.Q;
  const int64_t weight_elements = s.K * s.C_per_group * s.R * s.S;
  if (select_path(s, Pass::kBackwardWeight, dtype) == CudaPath::kDepthwise) {
    plan.kernel = KernelKind::kDepthwise;
    plan.block = kDepthwiseWeightThreads;
    const int64_t blocks = s.K * s.R * s.S;
    set_splits(plan, reduction, blocks, weight_elements, 4 * kDepthwiseWeightThreads, 1);
    plan.narrow_index = fits_narrow_index(reduction);
    plan.grid[0] = grid_dim(blocks, kMaxGridX);
    plan.grid[1] = grid_dim(plan.splits, kMaxGridYZ);
    return plan;
  }
  const int64_t columns = s.C_per_group * s.R * s.S;
  // Split chunks supply the parallelism here, so block count is no concern.
  plan.kernel = choose_tile(columns, s.K_per_group, s.groups, 1);
  set_gemm_tiles(plan, columns, s.K_per_group);
  const int64_t bk = tile_dims(plan.kernel).BK;
  set_splits(plan, reduction, plan.tiles_m * plan.tiles_n * s.groups, weight_elements,
             32 * bk, bk);
  plan.grid[0] = grid_dim(plan.tiles_m, kMaxGridX);
  plan.grid[1] = grid_dim(plan.tiles_n, kMaxGridYZ);
  plan.grid[2] = grid_dim(plan.splits * s.groups, kMaxGridYZ);
  return plan;
}

}  // namespace cuda
}  // namespace conv_ext
