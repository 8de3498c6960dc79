// Host side of the tensor-core grad-weight
// (conv2d_backward_weight_mma_kernels.cuh): when it applies, its plan, the
// launch and the fixed-order sum of its split partials. Called from
// conv2d_backward_weight_cuda_backend (conv2d_cuda_ops.h) before the SIMT
// kernels, with the same Launcher, so the CPU emulation runs this path too.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <string>

#include "conv2d_backward_weight_mma_kernels.cuh"
#include "conv2d_cuda_plan.h"
#include "conv2d_forward_mma.h"

namespace conv_ext {
namespace cuda {

using WgradTile = MmaWgradTile64x128;

// Test hook: "mma" or "simt", the dense grad-weight family of the last call.
inline std::string& last_dense_backward_weight_path() {
  static std::string path;
  return path;
}

// Shortest reduction chunk, in slabs: a chunk fills the cp.async ring a few
// times over.
constexpr int64_t kMinWgradChunkSlabs = 4;

// Tiles over Kg x (R*S*Cg), grid x = column tiles, y = channel tiles,
// z = split x group; chunks a whole number of slabs long.
inline LaunchPlan plan_backward_weight_mma(const Conv2dShape& s, at::ScalarType dtype) {
  LaunchPlan plan;
  plan.kernel = KernelKind::kMma;
  const int64_t rows = WgradTile::rows(static_cast<int>(c10::elementSize(dtype)));
  const int64_t columns = s.R * s.S * s.C_per_group;
  plan.tiles_m = ceil_div(s.K_per_group, WgradTile::BM);
  plan.tiles_n = ceil_div(columns, WgradTile::BN);
  plan.block = WgradTile::kThreads;
  set_splits(plan, s.N * s.P * s.Q, plan.tiles_m * plan.tiles_n * s.groups, s.K * columns,
             kMinWgradChunkSlabs * rows, rows);
  plan.grid[0] = grid_dim(plan.tiles_n, kMaxGridX);
  plan.grid[1] = grid_dim(plan.tiles_m, kMaxGridYZ);
  plan.grid[2] = grid_dim(plan.splits * s.groups, kMaxGridYZ);
  return plan;
}

// Runs grad-weight on the tensor cores into `grad_weight` (allocated here,
// channels_last) where the tensor-core rule of conv2d_forward_mma.h holds
// for both channel axes (input channels and output channels per group are
// whole vectors) and the tensors are 16-byte aligned; returns false (nothing
// done) otherwise.
template <typename Launcher>
bool run_backward_weight_mma(const Launcher& launch, const Conv2dShape& s,
                             const at::Tensor& grad_output, const at::Tensor& input,
                             bool allow_tf32, at::Tensor& grad_weight) {
  const at::ScalarType dtype = input.scalar_type();
  if (!forward_mma_applies(s, dtype, allow_tf32, launch.has_mma())) return false;
  if (s.K_per_group % mma_vector_channels(dtype, allow_tf32) != 0) return false;
  // The kernel's offsets within an image are 32-bit, and it counts a
  // chunk's slabs in an int.
  const LaunchPlan plan = plan_backward_weight_mma(s, dtype);
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  if (s.H * s.W * s.C > kIntMax ||
      ceil_div(plan.chunk, WgradTile::rows(static_cast<int>(c10::elementSize(dtype)))) > kIntMax) {
    return false;
  }
  const at::Tensor gy = to_memory_format(launch, grad_output, at::MemoryFormat::ChannelsLast);
  const at::Tensor x = to_memory_format(launch, input, at::MemoryFormat::ChannelsLast);
  if (!aligned16(gy.const_data_ptr()) || !aligned16(x.const_data_ptr())) return false;
  // fp32 partials from torch's caching allocator; the sum casts into the
  // channels_last weight (K x R x S x Cg in memory).
  const auto workspace =
      at::empty({plan.workspace_elements}, input.options().dtype(at::kFloat));
  grad_weight = at::empty(s.weight_sizes(),
                          input.options().memory_format(at::MemoryFormat::ChannelsLast));
  const auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    const MmaWgradParams<scalar_t> params{
        gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
        workspace.mutable_data_ptr<float>(), s, plan.tiles_m, plan.tiles_n, plan.splits,
        plan.chunk};
    launch(conv2d_backward_weight_mma_kernel<scalar_t, WgradTile>, dims_of(plan), params);
    launch_sum_splits<scalar_t>(launch, plan, workspace, grad_weight.numel(),
                                grad_weight.mutable_data_ptr<scalar_t>());
  };
  switch (dtype) {
    case at::kHalf: run(c10::Half{}); break;
    case at::kBFloat16: run(c10::BFloat16{}); break;
    default: run(float{}); break;
  }
  return true;
}

template <typename Launcher>
bool try_conv2d_backward_weight_mma(const Launcher& launch, const Conv2dShape& s,
                                    const at::Tensor& grad_output, const at::Tensor& input,
                                    bool allow_tf32, at::Tensor& grad_weight) {
  const bool done = run_backward_weight_mma(launch, s, grad_output, input, allow_tf32, grad_weight);
  last_dense_backward_weight_path() = done ? "mma" : "simt";
  return done;
}

}  // namespace cuda
}  // namespace conv_ext
