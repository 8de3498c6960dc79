// Helpers shared by the CPU kernels: the range of output columns whose input
// column lies inside the image (so the inner loops carry no bounds checks),
// and layout handling common to the three ops.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../conv2d_params.h"

namespace conv_ext {
namespace cpu {

// Smallest q with q * stride + offset >= 0, and one past the largest q with
// q * stride + offset < size, clamped to [0, count]. offset = kernel tap
// position minus padding; the interior [lo, hi) needs no bounds checks.
struct ValidRange {
  int64_t lo, hi;
};

inline ValidRange valid_output_range(int64_t offset, int64_t stride,
                                     int64_t size, int64_t count) {
  // q * stride + offset >= 0  <=>  q >= ceil(-offset / stride)
  int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  // q * stride + offset <= size - 1  <=>  q <= floor((size - 1 - offset) / stride)
  int64_t last = size - 1 - offset;
  int64_t hi = last < 0 ? 0 : last / stride + 1;
  lo = std::min(lo, count);
  hi = std::max(lo, std::min(hi, count));
  return {lo, hi};
}

// Column ranges for every kernel tap s along the width, computed once per call.
inline std::vector<ValidRange> column_ranges(const Conv2dShape& p) {
  std::vector<ValidRange> ranges(p.S);
  for (int64_t s = 0; s < p.S; ++s) {
    ranges[s] = valid_output_range(s * p.dilation_w - p.pad_w, p.stride_w,
                                   p.W, p.Q);
  }
  return ranges;
}

// Row ranges for every kernel tap r along the height.
inline std::vector<ValidRange> row_ranges(const Conv2dShape& p) {
  std::vector<ValidRange> ranges(p.R);
  for (int64_t r = 0; r < p.R; ++r) {
    ranges[r] = valid_output_range(r * p.dilation_h - p.pad_h, p.stride_h,
                                   p.H, p.P);
  }
  return ranges;
}

// Returns `result` (computed contiguous, NCHW) in the memory format torch
// would have given for these operands.
inline at::Tensor in_memory_format(const at::Tensor& result,
                                   at::MemoryFormat format) {
  return format == at::MemoryFormat::Contiguous
             ? result
             : result.contiguous(format);
}

// A bfloat16/float16 tensor as float32 (memory format kept), or undefined.
inline at::Tensor to_float(const at::Tensor& t) {
  return t.defined() ? t.to(at::kFloat) : t;
}

}  // namespace cpu
}  // namespace conv_ext
