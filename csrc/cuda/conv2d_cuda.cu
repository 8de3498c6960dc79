// Registration of the CUDA ops. The entry points live in one translation
// unit per op (conv2d_cuda_<pass>.cu, launcher in conv2d_cuda_launcher.cuh);
// everything else (checks, plans, workspaces, dtype dispatch) is
// conv2d_cuda_ops.h, shared with the CPU emulation of the kernels that tests
// them without a GPU.
#include <torch/library.h>

#include "conv2d_cuda_launcher.cuh"

namespace conv_ext {
namespace cuda {

TORCH_LIBRARY_IMPL(conv_ext, CUDA, m) {
  m.impl("conv2d_forward", &conv2d_forward_cuda);
  m.impl("conv2d_backward_input", &conv2d_backward_input_cuda);
  m.impl("conv2d_backward_weight", &conv2d_backward_weight_cuda);
  m.impl("conv2d_fused", &conv2d_fused_cuda);
}

}  // namespace cuda
}  // namespace conv_ext
