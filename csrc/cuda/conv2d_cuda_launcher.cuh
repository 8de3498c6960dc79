// The real launcher of the CUDA ops (<<<>>> on the current stream, checked
// after every launch), shared by the per-pass translation units
// conv2d_cuda_<pass>.cu; the CPU emulation has its own (tests/cuda_emulation).
// One translation unit per op lets the build compile the passes' kernel
// templates in parallel. c10's stream header rather than
// ATen/cuda/CUDAContext.h, which pulls in cuSPARSE/cuBLAS headers that a
// minimal CUDA toolkit does not ship.
#pragma once

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "conv2d_cuda_ops.h"

namespace conv_ext {
namespace cuda {

struct CudaLauncher {
  template <typename... KernelArgs, typename... Args>
  void operator()(void (*kernel)(KernelArgs...), const LaunchDims& dims,
                  const Args&... args) const {
    // Above 48 KB a kernel must opt in to its dynamic shared memory.
    if (dims.shared_bytes > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(dims.shared_bytes)));
    }
    kernel<<<dim3(dims.grid[0], dims.grid[1], dims.grid[2]), dim3(dims.block), dims.shared_bytes,
             c10::cuda::getCurrentCUDAStream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // mma.sync, ldmatrix and cp.async need sm_80 or newer.
  bool has_mma() const {
    int major = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor,
                                          c10::cuda::current_device()));
    return major >= 8;
  }
  int64_t sm_count() const {
    int count = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount,
                                          c10::cuda::current_device()));
    return count;
  }
};

// The op entry points, one per translation unit, registered in conv2d_cuda.cu.
at::Tensor conv2d_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups);
at::Tensor conv2d_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                      at::IntArrayRef input_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups);
at::Tensor conv2d_backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                       at::IntArrayRef weight_size, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef dilation,
                                       int64_t groups);
at::Tensor conv2d_fused_cuda(const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& scale,
                             const std::optional<at::Tensor>& shift,
                             const std::optional<at::Tensor>& residual,
                             c10::string_view activation, bool residual_before_activation,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups);

}  // namespace cuda
}  // namespace conv_ext
