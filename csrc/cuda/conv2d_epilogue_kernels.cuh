// conv2d_fused's epilogue (conv2d_epilogue.h) as one elementwise pass over a
// finished forward output, in its layout: out[i] = epilogue(out[i]) with the
// channel of element i. One thread per element, grid-stride.
#pragma once

#include <ATen/OpMathType.h>

#include "../conv2d_epilogue.h"
#include "conv2d_cuda_common.cuh"

namespace conv_ext {
namespace cuda {

constexpr int kEpilogueThreads = 256;

// out: N x K x HW elements, [N][HW][K] when channels_last, else [N][K][HW].
template <typename scalar_t>
__global__ void __launch_bounds__(kEpilogueThreads)
    conv2d_epilogue_kernel(scalar_t* __restrict__ out, Epilogue<scalar_t> epilogue,
                           int64_t count, int64_t K, int64_t HW, bool channels_last) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    const int64_t k = channels_last ? i % K : (i / HW) % K;
    out[i] = static_cast<scalar_t>(
        epilogue.template apply<acc_t>(static_cast<acc_t>(out[i]), k, i));
  }
}

}  // namespace cuda
}  // namespace conv_ext
