// The one rule of how the CUDA backends change the memory format of an
// activation: contiguous NCHW <-> channels_last by the transpose kernel
// (conv2d_layout_kernels.cuh); anything else (strided views, a tensor
// already in the format, other formats) by torch. Needs LaunchDims.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "conv2d_cuda_plan.h"
#include "conv2d_layout_kernels.cuh"

namespace conv_ext {
namespace cuda {

template <typename Launcher>
at::Tensor to_memory_format(const Launcher& launch, const at::Tensor& t, at::MemoryFormat format) {
  using MF = at::MemoryFormat;
  const bool to_channels_last = format == MF::ChannelsLast;
  if (t.dim() != 4 || t.numel() == 0 || t.is_contiguous(format) ||
      (format != MF::Contiguous && !to_channels_last) ||
      !t.is_contiguous(to_channels_last ? MF::Contiguous : MF::ChannelsLast)) {
    return t.contiguous(format);
  }
  auto out = at::empty(t.sizes(), t.options().memory_format(format));
  const int64_t batch = t.size(0), channels = t.size(1), pixels = t.size(2) * t.size(3);
  const int64_t rows = to_channels_last ? channels : pixels;
  const int64_t cols = to_channels_last ? pixels : channels;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "conv_ext_transpose", [&] {
    constexpr int T = transpose_tile<scalar_t>();
    const LaunchDims dims{{grid_dim(ceil_div(cols, T), kMaxGridX),
                           grid_dim(ceil_div(rows, T), kMaxGridYZ), grid_dim(batch, kMaxGridYZ)},
                          static_cast<uint32_t>(kTransposeThreads)};
    launch(transpose_batched_kernel<scalar_t>, dims, t.const_data_ptr<scalar_t>(),
           out.mutable_data_ptr<scalar_t>(), batch, rows, cols);
  });
  return out;
}

}  // namespace cuda
}  // namespace conv_ext
