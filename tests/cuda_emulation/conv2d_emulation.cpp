// Python bindings of the emulated CUDA ops: the host code of the real CUDA
// ops (csrc/cuda/conv2d_cuda_ops.h: checks, plans, workspaces, dispatch) with
// a launcher that runs the kernels on the CPU (cuda_emulation.h). Built by
// tests/test_cuda_emulation.py with torch.utils.cpp_extension.load.
#include "cuda_emulation.h"  // must precede the kernel headers

#include <torch/extension.h>

#include "../../csrc/cuda/conv2d_cuda_ops.h"

namespace {

namespace cuda = conv_ext::cuda;

struct EmulatedLauncher {
  template <typename... KernelArgs, typename... Args>
  void operator()(void (*kernel)(KernelArgs...), const cuda::LaunchDims& dims,
                  const Args&... args) const {
    // No zero-size launches, as on the GPU (where they are an error).
    TORCH_CHECK(dims.grid[0] > 0 && dims.grid[1] > 0 && dims.grid[2] > 0 && dims.block > 0,
                "emulated launch with an empty grid or block");
    TORCH_CHECK(dims.grid[1] <= 65535 && dims.grid[2] <= 65535 && dims.block <= 1024,
                "emulated launch exceeds CUDA's grid/block limits");
    cuda_emulation::emulate_launch(kernel, dims.grid, dims.block, args...);
  }
  // The emulation has every warp-level instruction the kernels use.
  bool has_mma() const { return true; }
  // An H100 / H200's multiprocessors, for the plans that depend on them.
  int64_t sm_count() const { return 132; }
};

at::Tensor forward(const at::Tensor& input, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, std::vector<int64_t> stride,
                   std::vector<int64_t> padding, std::vector<int64_t> dilation,
                   int64_t groups) {
  return cuda::conv2d_forward_impl(EmulatedLauncher{}, input, weight, bias, stride, padding,
                                   dilation, groups);
}

at::Tensor backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                          std::vector<int64_t> input_size, std::vector<int64_t> stride,
                          std::vector<int64_t> padding, std::vector<int64_t> dilation,
                          int64_t groups) {
  return cuda::conv2d_backward_input_impl(EmulatedLauncher{}, grad_output, weight, input_size,
                                          stride, padding, dilation, groups);
}

at::Tensor backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                           std::vector<int64_t> weight_size, std::vector<int64_t> stride,
                           std::vector<int64_t> padding, std::vector<int64_t> dilation,
                           int64_t groups) {
  return cuda::conv2d_backward_weight_impl(EmulatedLauncher{}, grad_output, input,
                                           weight_size, stride, padding, dilation, groups);
}

at::Tensor fused(const at::Tensor& input, const at::Tensor& weight,
                 const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& scale,
                 const std::optional<at::Tensor>& shift,
                 const std::optional<at::Tensor>& residual, const std::string& activation,
                 bool residual_before_activation, std::vector<int64_t> stride,
                 std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups) {
  return cuda::conv2d_fused_impl(EmulatedLauncher{}, input, weight, bias, scale, shift, residual,
                                 activation, residual_before_activation, stride, padding,
                                 dilation, groups);
}

// The plan each op would use for a problem, as text: lets the tests assert
// which kernel a shape selects.
std::string describe_plan(const std::string& op, std::vector<int64_t> input_size,
                          std::vector<int64_t> weight_size, std::vector<int64_t> stride,
                          std::vector<int64_t> padding, std::vector<int64_t> dilation,
                          int64_t groups) {
  const auto shape = conv_ext::make_conv2d_shape(input_size, weight_size, std::nullopt, stride,
                                                 padding, dilation, groups);
  if (op == "forward") return cuda::plan_conv2d_forward(shape, at::kFloat).describe();
  if (op == "backward_input") return cuda::plan_conv2d_backward_input(shape, at::kFloat).describe();
  if (op == "backward_weight") return cuda::plan_conv2d_backward_weight(shape, at::kFloat).describe();
  // The tensor-core grad-weight's plan (bf16: 32 pixels a slab; tf32: 16).
  if (op == "backward_weight_mma") {
    return cuda::plan_backward_weight_mma(shape, at::kBFloat16).describe();
  }
  if (op == "backward_weight_mma_tf32") {
    return cuda::plan_backward_weight_mma(shape, at::kFloat).describe();
  }
  TORCH_CHECK(false, "unknown op ", op);
}

void force_tile(const std::string& tile) {
  TORCH_CHECK(tile.empty() || tile == "small" || tile == "large" || tile == "huge" || tile == "mma" ||
                  tile.rfind("mma:", 0) == 0 || tile == "elementwise",
              "unknown tile ", tile);
  cuda::forced_tile() = tile;
}

// The memory-format copy of the CUDA backends (conv2d_cuda_layout.h).
at::Tensor to_memory_format(const at::Tensor& t, bool channels_last) {
  return cuda::to_memory_format(EmulatedLauncher{}, t,
                                channels_last ? at::MemoryFormat::ChannelsLast
                                              : at::MemoryFormat::Contiguous);
}

void force_mma_splits(int64_t splits) { cuda::forced_mma_splits() = static_cast<int>(splits); }
int64_t last_forward_mma_splits() { return cuda::last_forward_mma_splits(); }

void force_wide_index(bool wide) { cuda::forced_wide_index() = wide; }

std::string last_dense_path(const std::string& op) {
  if (op == "forward") return cuda::last_dense_forward_path();
  if (op == "backward_weight") return cuda::last_dense_backward_weight_path();
  TORCH_CHECK(op == "backward_input", "unknown op ", op);
  return cuda::last_dense_backward_input_path();
}

}  // namespace

// warp_primitive_tests.cpp: test kernels of the warp-level primitives.
void register_warp_primitive_tests(pybind11::module& m);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("conv2d_forward", &forward);
  m.def("conv2d_backward_input", &backward_input);
  m.def("conv2d_backward_weight", &backward_weight);
  m.def("conv2d_fused", &fused);
  m.def("describe_plan", &describe_plan);
  m.def("last_forward_mma_splits", &last_forward_mma_splits, "splits of the last tensor-core forward");
  m.def("force_mma_splits", &force_mma_splits, "tensor-core forward: split the reduction n ways (0: by shape)");
  m.def("to_memory_format", &to_memory_format, "NCHW <-> channels_last as the CUDA backends copy");
  m.def("force_tile", &force_tile,
        "'small', 'large', 'huge', 'elementwise' (untiled depthwise) or '' (by shape)");
  m.def("force_wide_index", &force_wide_index, "depthwise kernels: 64-bit index decoding");
  m.def("last_dense_path", &last_dense_path, "'mma' or 'simt': the last forward/backward_input/backward_weight");
  register_warp_primitive_tests(m);
}
