// Host side of the tensor-core forward (conv2d_forward_mma_kernels.cuh):
// when it applies, its plan, and the launch. Called from
// conv2d_forward_impl (conv2d_cuda_ops.h) before the SIMT kernels, with the
// same Launcher, so the CPU emulation runs this path too.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string>

#include "../conv2d_params.h"
#include "conv2d_cuda_layout.h"
#include "conv2d_cuda_plan.h"
#include "conv2d_forward_mma_kernels.cuh"

namespace conv_ext {
namespace cuda {

// Test hooks: the dense kernel family ("mma" or "simt") the last forward and
// grad-input call used, so the emulated tests can tell which path a shape took.
inline std::string& last_dense_forward_path() {
  static std::string path;
  return path;
}
inline std::string& last_dense_backward_input_path() {
  static std::string path;
  return path;
}

// Whether torch would run a float32 convolution on TF32 now: read per call,
// so toggling torch.backends.cudnn.allow_tf32 (or, where torch has it,
// torch.backends.cudnn.conv.fp32_precision) takes effect at once; the fake
// kernels need not know (TF32 changes neither shape, dtype nor layout).
inline bool torch_allows_tf32_conv() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
  return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
#else
  return at::globalContext().allowTF32CuDNN();
#endif
}

// Whether the tensor-core forward takes this problem: 16-bit inputs, or
// float32 with TF32 allowed; channels per group a whole number of 16-byte
// vectors; a device with mma.sync (sm_80+); not overridden by a forced SIMT
// tile (tests). Pointers are checked for 16-byte alignment at launch.
// The one rule of which dtypes run on the tensor cores: channels per 16-byte
// vector (8 bf16/fp16; 4 float32 on TF32 where allowed), 0 where none.
inline int64_t mma_vector_channels(at::ScalarType dtype, bool allow_tf32) {
  if (dtype == at::kHalf || dtype == at::kBFloat16) return 8;
  if (dtype == at::kFloat && allow_tf32) return 4;
  return 0;
}

inline bool forward_mma_applies(const Conv2dShape& s, at::ScalarType dtype, bool allow_tf32,
                                bool device_has_mma) {
  if (!device_has_mma || s.C_per_group <= 1) return false;
  const std::string& forced = forced_tile();
  if (!forced.empty() && forced.rfind("mma", 0) != 0) return false;  // "mma" or "mma:<tile>"
  const int64_t vector = mma_vector_channels(dtype, allow_tf32);
  return vector > 0 && s.C_per_group % vector == 0;
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The forward's tensor-core tiles (conv2d_forward_mma_kernels.cuh).
enum class MmaForwardTile { k128x64, k128x64Deep, k128x128, k64x64 };

inline MmaForwardTile mma_forward_tile_by_name(const std::string& name) {
  if (name == "128x64") return MmaForwardTile::k128x64;
  if (name == "128x64deep") return MmaForwardTile::k128x64Deep;
  if (name == "128x128") return MmaForwardTile::k128x128;
  if (name == "64x64") return MmaForwardTile::k64x64;
  TORCH_CHECK(false, "conv_ext: unknown tensor-core tile '", name,
              "' (expected 128x64, 128x64deep, 128x128 or 64x64)");
}

// The tuning variables CONV_EXT_MMA_TILE and CONV_EXT_MMA_SPLITS (to compare
// tiles and splits on a GPU: bench/gpu_tile_sweep.sh), read once per process
// rather than by a getenv (a scan of the environment) on every launch. A bad
// tile name raises on each call until it is fixed.
struct MmaForwardEnv {
  std::string tile;    // "" = choose by shape
  int64_t splits = 0;  // 0 = choose by shape
};

inline const MmaForwardEnv& mma_forward_env() {
  static const MmaForwardEnv env = [] {
    MmaForwardEnv e;
    if (const char* v = std::getenv("CONV_EXT_MMA_TILE"); v != nullptr && *v != 0) {
      mma_forward_tile_by_name(v);  // validate now
      e.tile = v;
    }
    if (const char* v = std::getenv("CONV_EXT_MMA_SPLITS"); v != nullptr && *v != 0) {
      e.splits = std::atoll(v);
    }
    return e;
  }();
  return env;
}

// The tile of a forward problem: one forced by the test hook (forced_tile()
// = "mma:<tile>") or by CONV_EXT_MMA_TILE, else 128 x 64.
inline MmaForwardTile choose_mma_forward_tile(const Conv2dShape&) {
  const std::string& forced = forced_tile();
  if (forced.rfind("mma:", 0) == 0) return mma_forward_tile_by_name(forced.substr(4));
  if (const std::string& env = mma_forward_env().tile; !env.empty()) {
    return mma_forward_tile_by_name(env);
  }
  return MmaForwardTile::k128x64;
}

// Test hook: split the tensor-core forward's reduction this many ways (0:
// choose by shape); the environment variable CONV_EXT_MMA_SPLITS does the
// same on a GPU (mma_forward_env()).
inline int& forced_mma_splits() {
  static int splits = 0;
  return splits;
}

// Test hook: the splits of the last tensor-core forward (1: not split).
inline int64_t& last_forward_mma_splits() {
  static int64_t splits = 1;
  return splits;
}

// How many ways to split the reduction of a forward problem with `tiles`
// output tiles and `slabs` reduction steps per tile on a device with
// `sm_count` multiprocessors (unless forced): where the tiles fill at most
// half the SMs (deep layers on small planes, small batches), split until
// about one block per SM, keeping at least 16 slabs per split and at most
// 8 splits (the partials cost 4 bytes per output per split, written and
// read once).
inline int64_t choose_mma_forward_splits(int64_t tiles, int64_t slabs, int64_t sm_count) {
  int64_t splits = forced_mma_splits();
  if (splits == 0) splits = mma_forward_env().splits;
  if (splits == 0) {
    splits = tiles * 2 <= sm_count ? std::min<int64_t>({sm_count / tiles, slabs / 16, 8}) : 1;
  }
  return std::max<int64_t>(1, std::min<int64_t>({splits, slabs, kMaxGridYZ}));
}

template <typename Tile, typename Launcher>
void launch_forward_mma(const Launcher& launch, const Conv2dShape& s, const at::Tensor& x,
                        const at::Tensor& w, const at::Tensor& bias, at::Tensor& output) {
  const int64_t M = s.N * s.P * s.Q;
  const int64_t tiles_m = ceil_div(M, Tile::BM), tiles_n = ceil_div(s.K_per_group, Tile::BN);
  const int slab_channels = Tile::kSlabBytes / static_cast<int>(x.element_size());
  const int64_t slabs = s.R * s.S * ceil_div(s.C_per_group, slab_channels);
  int64_t splits =
      choose_mma_forward_splits(tiles_m * tiles_n * s.groups, slabs, launch.sm_count());
  // Every split non-empty: slabs_per_split * (splits - 1) < slabs.
  const int64_t slabs_per_split = ceil_div(slabs, splits);
  splits = ceil_div(slabs, slabs_per_split);
  last_forward_mma_splits() = splits;
  // fp32 partials [splits][M][K] from torch's caching allocator.
  const at::Tensor partials =
      splits > 1 ? at::empty({splits, M * s.K}, x.options().dtype(at::kFloat)) : at::Tensor();
  const auto run = [&](auto tag) {
    using scalar_t = decltype(tag);
    const LaunchDims dims{
        {grid_dim(tiles_m, kMaxGridX), grid_dim(tiles_n * s.groups, kMaxGridYZ),
         static_cast<uint32_t>(splits)},
        static_cast<uint32_t>(Tile::kThreads),
        static_cast<uint32_t>(mma_forward_shared_bytes<scalar_t, Tile>())};
    const MmaForwardParams<scalar_t> params{
        x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
        bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
        output.mutable_data_ptr<scalar_t>(), s, tiles_m, tiles_n,
        tiles_n * s.groups,
        splits > 1 ? partials.mutable_data_ptr<float>() : nullptr,
        static_cast<int>(slabs_per_split)};
    launch(conv2d_forward_mma_kernel<scalar_t, Tile>, dims, params);
    if (splits > 1) {
      const int64_t count = M * s.K;
      launch(sum_splits_kernel<scalar_t, float>,
             LaunchDims{{grid_dim(ceil_div(count, kReduceThreads), kMaxElementwiseBlocks), 1, 1},
                        static_cast<uint32_t>(kReduceThreads)},
             partials.const_data_ptr<float>(), splits, count, output.mutable_data_ptr<scalar_t>());
    }
  };
  switch (x.scalar_type()) {
    case at::kHalf: run(c10::Half{}); break;
    case at::kBFloat16: run(c10::BFloat16{}); break;
    default: run(float{}); break;
  }
}

// Runs the forward on the tensor cores into `output` (allocated here,
// channels_last) if forward_mma_applies and the tensors are aligned;
// returns false (nothing done) otherwise.
template <typename Launcher>
bool run_forward_mma(const Launcher& launch, const Conv2dShape& s, const at::Tensor& input,
                     const at::Tensor& weight, const at::Tensor& bias, bool allow_tf32,
                     at::Tensor& output) {
  if (!forward_mma_applies(s, input.scalar_type(), allow_tf32, launch.has_mma())) return false;
  // The kernel's offsets within an image (and a filter) are 32-bit, its
  // row and column arithmetic int, and kOutsideImage must stay outside
  // every tap's reach; larger problems take the SIMT kernels.
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  constexpr int64_t kReach = int64_t{1} << 29;
  if (s.H * s.W * s.C > kIntMax || s.R * s.S * s.C_per_group > kIntMax ||
      (s.R - 1) * s.dilation_h >= kReach || (s.S - 1) * s.dilation_w >= kReach ||
      s.pad_h >= kReach || s.pad_w >= kReach || s.H >= kReach || s.W >= kReach) {
    return false;
  }
  const at::Tensor x = to_memory_format(launch, input, at::MemoryFormat::ChannelsLast);
  const at::Tensor w = to_memory_format(launch, weight, at::MemoryFormat::ChannelsLast);
  if (!aligned16(x.const_data_ptr()) || !aligned16(w.const_data_ptr())) return false;
  output = at::empty(s.output_sizes(),
                     input.options().memory_format(at::MemoryFormat::ChannelsLast));
  switch (choose_mma_forward_tile(s)) {
    case MmaForwardTile::k128x64Deep:
      launch_forward_mma<MmaTile128x64Deep>(launch, s, x, w, bias, output);
      break;
    case MmaForwardTile::k128x128:
      launch_forward_mma<MmaTile128x128>(launch, s, x, w, bias, output);
      break;
    case MmaForwardTile::k64x64:
      launch_forward_mma<MmaTile64x64>(launch, s, x, w, bias, output);
      break;
    default:
      launch_forward_mma<MmaTile128x64>(launch, s, x, w, bias, output);
      break;
  }
  return true;
}

template <typename Launcher>
bool try_conv2d_forward_mma(const Launcher& launch, const Conv2dShape& s,
                            const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, bool allow_tf32, at::Tensor& output) {
  const bool done = run_forward_mma(launch, s, input, weight, bias, allow_tf32, output);
  last_dense_forward_path() = done ? "mma" : "simt";
  return done;
}

// grad-input at stride 1 is a forward convolution of grad_output with the
// filter flipped in (r, s) and its channel axes swapped per group, padded by
// dilation * (R - 1) - pad (when that is >= 0): the same tensor-core kernel.
// The flipped filter is a copy of the (small) weight; no im2col.
template <typename Launcher>
bool try_conv2d_backward_input_mma(const Launcher& launch, const Conv2dShape& s,
                                   const at::Tensor& grad_output, const at::Tensor& weight,
                                   bool allow_tf32, at::Tensor& grad_input) {
  Conv2dShape t = s;  // the forward problem: grad_output in, grad_input out
  t.C = s.K, t.H = s.P, t.W = s.Q, t.K = s.C, t.P = s.H, t.Q = s.W;
  t.C_per_group = s.K_per_group, t.K_per_group = s.C_per_group;
  t.pad_h = s.dilation_h * (s.R - 1) - s.pad_h;
  t.pad_w = s.dilation_w * (s.S - 1) - s.pad_w;
  bool done = false;
  if (s.stride_h == 1 && s.stride_w == 1 && t.pad_h >= 0 && t.pad_w >= 0 &&
      forward_mma_applies(t, grad_output.scalar_type(), allow_tf32, launch.has_mma())) {
    const auto flipped = weight.reshape({s.groups, s.K_per_group, s.C_per_group, s.R, s.S})
                             .transpose(1, 2)
                             .flip({3, 4})
                             .reshape({s.C, s.K_per_group, s.R, s.S});
    done = run_forward_mma(launch, t, grad_output, flipped, at::Tensor(), allow_tf32, grad_input);
  }
  last_dense_backward_input_path() = done ? "mma" : "simt";
  return done;
}

}  // namespace cuda
}  // namespace conv_ext
