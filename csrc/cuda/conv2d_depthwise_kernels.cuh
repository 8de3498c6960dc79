// Depthwise convolution (one input channel per group, any channel
// multiplier Kg): too little reduction per output for a GEMM tile, so these
// kernels are memory-bound and give one output element per thread, with
// consecutive threads on consecutive pixels so that loads and stores are
// coalesced and the receptive fields of a warp overlap in L1.
#pragma once

#include <ATen/OpMathType.h>

#include "conv2d_cuda_common.cuh"

namespace conv_ext {
namespace cuda {

template <typename scalar_t>
struct DepthwiseParams {
  const scalar_t* input;        // N x C x H x W
  const scalar_t* weight;       // K x 1 x R x S
  const scalar_t* bias;         // K or nullptr (forward)
  const scalar_t* grad_output;  // N x K x P x Q (backward)
  scalar_t* output;             // forward output or grad_input
  at::opmath_type<scalar_t>* workspace;  // grad-weight: splits x K x R x S
  ConvGeometry g;
  int64_t splits, chunk;  // grad-weight reduction chunks over N*P*Q
  bool narrow_index;      // the kernel's flat index range fits in int32
};

// Splits a flat index over [outer][channels][rows][cols] into its
// coordinates. These kernels do a few multiply-adds per element, so 64-bit
// division (~60 instructions each) would dominate them: when the whole range
// fits in int32 (nearly always; the plan decides, DepthwiseParams::narrow_index),
// the divisions are multiply-shifts.
struct FlatIndex {
  bool narrow;
  FastDivmod col_div, row_div, channel_div;
  int64_t channels, rows, cols;

  __device__ __forceinline__ FlatIndex(int64_t channels_, int64_t rows_, int64_t cols_,
                                       bool narrow_)
      : narrow(narrow_),
        col_div(narrow ? static_cast<int>(cols_) : 1),
        row_div(narrow ? static_cast<int>(rows_) : 1),
        channel_div(narrow ? static_cast<int>(channels_) : 1),
        channels(channels_), rows(rows_), cols(cols_) {}

  __device__ __forceinline__ void decode(int64_t index, int64_t& outer, int64_t& channel,
                                         int64_t& row, int64_t& col) const {
    if (narrow) {
      int rest, plane, o, c, r, q;
      col_div.divmod(static_cast<int>(index), rest, q);
      row_div.divmod(rest, plane, r);
      channel_div.divmod(plane, o, c);
      outer = o, channel = c, row = r, col = q;
    } else {
      col = index % cols;
      row = (index / cols) % rows;
      const int64_t plane = index / (cols * rows);
      channel = plane % channels;
      outer = plane / channels;
    }
  }
};

// output[n][k][p][q] = bias[k] + sum_{r,s} input[n][k / Kg][ih][iw] * weight[k][0][r][s].
template <typename scalar_t>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv2d_depthwise_forward_kernel(DepthwiseParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const ConvGeometry& g = p.g;
  const int64_t total = g.N * g.K * g.P * g.Q;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const FlatIndex flat(g.K, g.P, g.Q, p.narrow_index);
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       index < total; index += stride) {
    int64_t n, k, p_, q;
    flat.decode(index, n, k, p_, q);
    const scalar_t* x = p.input + (n * g.C + k / g.Kg) * g.H * g.W;
    const scalar_t* w = p.weight + k * g.R * g.S;
    acc_t sum = p.bias != nullptr ? load_as<acc_t>(p.bias + k) : acc_t(0);
    const int64_t ih0 = p_ * g.stride_h - g.pad_h, iw0 = q * g.stride_w - g.pad_w;
    for (int64_t r = 0; r < g.R; ++r) {
      const int64_t ih = ih0 + r * g.dilation_h;
      if (ih < 0 || ih >= g.H) continue;
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t iw = iw0 + s * g.dilation_w;
        if (iw < 0 || iw >= g.W) continue;
        sum += load_as<acc_t>(x + ih * g.W + iw) * load_as<acc_t>(w + r * g.S + s);
      }
    }
    p.output[index] = static_cast<scalar_t>(sum);
  }
}

// grad_input[n][c][h][w] = sum over the channel's Kg outputs k and the taps
// (r, s) that map (h, w) onto a real output position (p, q) of
// grad_output[n][k][p][q] * weight[k][0][r][s]: a gather, one input element
// per thread, no atomics.
template <typename scalar_t>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv2d_depthwise_backward_input_kernel(DepthwiseParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const ConvGeometry& g = p.g;
  const int64_t total = g.N * g.C * g.H * g.W;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const FlatIndex flat(g.C, g.H, g.W, p.narrow_index);
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       index < total; index += stride) {
    int64_t n, c, h, w_;
    flat.decode(index, n, c, h, w_);
    acc_t sum = acc_t(0);
    for (int64_t m = 0; m < g.Kg; ++m) {
      const int64_t k = c * g.Kg + m;
      const scalar_t* dy = p.grad_output + (n * g.K + k) * g.P * g.Q;
      const scalar_t* w = p.weight + k * g.R * g.S;
      for (int64_t r = 0; r < g.R; ++r) {
        const int64_t ph = h + g.pad_h - r * g.dilation_h;  // p * stride_h
        if (ph < 0) break;  // decreases with r
        if (ph % g.stride_h != 0 || ph / g.stride_h >= g.P) continue;
        const int64_t out_row = ph / g.stride_h;
        for (int64_t s = 0; s < g.S; ++s) {
          const int64_t qw = w_ + g.pad_w - s * g.dilation_w;
          if (qw < 0) break;
          if (qw % g.stride_w != 0 || qw / g.stride_w >= g.Q) continue;
          sum += load_as<acc_t>(dy + out_row * g.Q + qw / g.stride_w) *
                 load_as<acc_t>(w + r * g.S + s);
        }
      }
    }
    p.output[index] = static_cast<scalar_t>(sum);
  }
}

// grad_weight partials: block (k, r, s) x split sums
// grad_output[n][k][p][q] * input[n][k / Kg][ih][iw] over its chunk of
// N*P*Q, each thread a strided share; the block's partials are then added
// in a fixed order (kWeightGroups threads add kWeightGroupSize each, then
// thread 0 adds those): two barriers rather than a log2(threads)-deep tree.
// workspace[split][k][r][s]; sum_splits_kernel finishes.
template <typename scalar_t>
__global__ void __launch_bounds__(kDepthwiseWeightThreads)
    conv2d_depthwise_backward_weight_kernel(DepthwiseParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kWeightGroups = 16;
  constexpr int kWeightGroupSize = kDepthwiseWeightThreads / kWeightGroups;
  acc_t* partial = shared_array<acc_t, kDepthwiseWeightThreads, 0>();
  acc_t* group_sum = shared_array<acc_t, kWeightGroups, 1>();
  const ConvGeometry& g = p.g;
  const int64_t taps = g.R * g.S, PQ = g.P * g.Q, reduction = g.N * PQ;
  const int tid = threadIdx.x;
  const FlatIndex flat(1, g.P, g.Q, p.narrow_index);
  for (int64_t split = blockIdx.y; split < p.splits; split += gridDim.y) {
    const int64_t begin = split * p.chunk;
    const int64_t end = begin + p.chunk < reduction ? begin + p.chunk : reduction;
    for (int64_t ktap = blockIdx.x; ktap < g.K * taps; ktap += gridDim.x) {
      const int64_t k = ktap / taps, r = (ktap % taps) / g.S, s = ktap % g.S;
      const int64_t c = k / g.Kg;
      acc_t sum = acc_t(0);
      for (int64_t e = begin + tid; e < end; e += kDepthwiseWeightThreads) {
        int64_t n, unused, out_row, out_col;
        flat.decode(e, n, unused, out_row, out_col);
        const int64_t ih = out_row * g.stride_h - g.pad_h + r * g.dilation_h;
        const int64_t iw = out_col * g.stride_w - g.pad_w + s * g.dilation_w;
        if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
        sum += load_as<acc_t>(p.grad_output + (n * g.K + k) * PQ + out_row * g.Q + out_col) *
               load_as<acc_t>(p.input + ((n * g.C + c) * g.H + ih) * g.W + iw);
      }
      partial[tid] = sum;
      __syncthreads();
      if (tid < kWeightGroups) {
        acc_t group = partial[tid];
        for (int i = 1; i < kWeightGroupSize; ++i) group += partial[tid + i * kWeightGroups];
        group_sum[tid] = group;
      }
      __syncthreads();
      if (tid == 0) {
        acc_t total = group_sum[0];
        for (int i = 1; i < kWeightGroups; ++i) total += group_sum[i];
        p.workspace[split * g.K * taps + ktap] = total;
      }
      // group_sum is read before the next (k, tap) overwrites it; partial
      // is only rewritten after the first barrier of the next iteration.
    }
  }
}

}  // namespace cuda
}  // namespace conv_ext
