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

enum class KernelKind { kGemmSmall, kGemmLarge, kDepthwise };

inline const char* kernel_kind_name(KernelKind kind) {
  switch (kind) {
    case KernelKind::kGemmSmall: return "gemm_small";
    case KernelKind::kGemmLarge: return "gemm_large";
    case KernelKind::kDepthwise: return "depthwise";
  }
  return "?";
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

// Test hook: force a tile ("small" or "large") for every dense plan, so the
// emulated tests can run each tile on small shapes with ragged edges.
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

inline ConvGeometry make_geometry(const Conv2dShape& s) {
  return ConvGeometry{s.N, s.C, s.H, s.W, s.K, s.R, s.S, s.P, s.Q,
                      s.groups, s.C_per_group, s.K_per_group, s.stride_h, s.stride_w,
                      s.pad_h, s.pad_w, s.dilation_h, s.dilation_w};
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline uint32_t grid_dim(int64_t tiles, int64_t limit) {
  return static_cast<uint32_t>(std::max<int64_t>(1, std::min(tiles, limit)));
}

inline bool is_depthwise(const Conv2dShape& s) { return s.C_per_group == 1; }

// The dense kernels decode their reduction index in 32-bit arithmetic.
inline void check_reduction_fits_int32(int64_t length, const char* what) {
  TORCH_CHECK(length <= std::numeric_limits<int32_t>::max(),
              "conv_ext CUDA: ", what, " (", length,
              ") exceeds 2^31 - 1, which the CUDA kernels do not support");
}

// Picks the tile of a dense GEMM with M x N outputs per group: the large one
// when both dimensions fill it and it still yields `min_blocks` blocks.
inline KernelKind choose_tile(int64_t M, int64_t N, int64_t groups,
                              int64_t min_blocks = kMinLargeTileBlocks) {
  const std::string& forced = forced_tile();
  if (forced == "small") return KernelKind::kGemmSmall;
  if (forced == "large") return KernelKind::kGemmLarge;
  const int64_t large_blocks =
      ceil_div(M, LargeTile::BM) * ceil_div(N, LargeTile::BN) * groups;
  return N >= LargeTile::BN && M >= LargeTile::BM && large_blocks >= min_blocks
             ? KernelKind::kGemmLarge
             : KernelKind::kGemmSmall;
}

inline void set_gemm_tiles(LaunchPlan& plan, int64_t M, int64_t N) {
  const bool large = plan.kernel == KernelKind::kGemmLarge;
  plan.tiles_m = ceil_div(M, large ? LargeTile::BM : SmallTile::BM);
  plan.tiles_n = ceil_div(N, large ? LargeTile::BN : SmallTile::BN);
  plan.block = large ? LargeTile::kThreads : SmallTile::kThreads;
}

inline void set_elementwise_grid(LaunchPlan& plan, int64_t elements) {
  plan.kernel = KernelKind::kDepthwise;
  plan.block = kDepthwiseThreads;
  plan.grid[0] = grid_dim(ceil_div(elements, kDepthwiseThreads), kMaxElementwiseBlocks);
  plan.narrow_index = fits_narrow_index(elements);
}

// Forward: M = N*P*Q pixels x N = Kg channels per group (grid y walks
// group x channel tile), reduction Cg*R*S; depthwise: one output per thread.
inline LaunchPlan plan_conv2d_forward(const Conv2dShape& s) {
  LaunchPlan plan;
  if (is_depthwise(s)) {
    set_elementwise_grid(plan, s.N * s.K * s.P * s.Q);
    return plan;
  }
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
// phase's taps; depthwise: one input element per thread.
inline LaunchPlan plan_conv2d_backward_input(const Conv2dShape& s) {
  LaunchPlan plan;
  if (is_depthwise(s)) {
    set_elementwise_grid(plan, s.N * s.C * s.H * s.W);
    return plan;
  }
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
inline LaunchPlan plan_conv2d_backward_weight(const Conv2dShape& s) {
  LaunchPlan plan;
  const int64_t reduction = s.N * s.P * s.Q;
  const int64_t weight_elements = s.K * s.C_per_group * s.R * s.S;
  if (is_depthwise(s)) {
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
  const int64_t bk = plan.kernel == KernelKind::kGemmLarge ? LargeTile::BK : SmallTile::BK;
  set_splits(plan, reduction, plan.tiles_m * plan.tiles_n * s.groups, weight_elements,
             32 * bk, bk);
  plan.grid[0] = grid_dim(plan.tiles_m, kMaxGridX);
  plan.grid[1] = grid_dim(plan.tiles_n, kMaxGridYZ);
  plan.grid[2] = grid_dim(plan.splits * s.groups, kMaxGridYZ);
  return plan;
}

}  // namespace cuda
}  // namespace conv_ext
