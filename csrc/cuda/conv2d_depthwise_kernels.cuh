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
};

// output[n][k][p][q] = bias[k] + sum_{r,s} input[n][k / Kg][ih][iw] * weight[k][0][r][s].
template <typename scalar_t>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv2d_depthwise_forward_kernel(DepthwiseParams<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const ConvGeometry& g = p.g;
  const int64_t total = g.N * g.K * g.P * g.Q;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       index < total; index += stride) {
    const int64_t q = index % g.Q, p_ = (index / g.Q) % g.P;
    const int64_t nk = index / (g.P * g.Q), k = nk % g.K, n = nk / g.K;
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

// The same sum, tiled (see DepthwiseTile): the block stages the input tile
// of each of its planes and their filters in shared memory once, so every
// input element is read from global memory about once per plane instead of
// once per tap, and the inner loop does 32-bit shared-memory indexing only.
// kKernel: the filter size when it is kKernel x kKernel (unrolled taps),
// 0 for any size.
template <typename scalar_t, int kKernel>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv2d_depthwise_forward_tiled_kernel(DepthwiseParams<scalar_t> p, DepthwiseTile t) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t* tile = shared_array<acc_t, kDepthwiseTileElements, 0>();
  acc_t* filters = shared_array<acc_t, kDepthwiseTileTaps, 1>();
  const ConvGeometry& g = p.g;
  const int R = kKernel > 0 ? kKernel : static_cast<int>(g.R);
  const int S = kKernel > 0 ? kKernel : static_cast<int>(g.S);
  const int taps = R * S;
  const int sh = static_cast<int>(g.stride_h), sw = static_cast<int>(g.stride_w);
  const int dh = static_cast<int>(g.dilation_h), dw = static_cast<int>(g.dilation_w);
  const int tid = threadIdx.x;
  const int plane_threads = t.tx * t.ty;
  const int local_plane = tid / plane_threads;
  const int tx = tid % t.tx, ty = (tid % plane_threads) / t.tx;
  const int in_elements = t.in_h * t.in_w;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x / t.tiles_w) * t.tile_h;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x % t.tiles_w) * t.tile_w;
  const int64_t ih0 = p0 * g.stride_h - g.pad_h, iw0 = q0 * g.stride_w - g.pad_w;
  const int64_t planes_total = g.N * g.K, PQ = g.P * g.Q;
  for (int64_t first = static_cast<int64_t>(blockIdx.y) * t.planes; first < planes_total;
       first += static_cast<int64_t>(gridDim.y) * t.planes) {
    // Stage: consecutive threads read consecutive input columns (coalesced);
    // zeros where the tile reaches into the padding or past the last plane.
    // The plane's 64-bit decoding happens once per plane, not per element.
    for (int lp = 0; lp < t.planes; ++lp) {
      const int64_t plane = first + lp;
      acc_t* dst = tile + lp * in_elements;
      if (plane >= planes_total) {
        for (int e = tid; e < in_elements; e += blockDim.x) dst[e] = acc_t(0);
        continue;
      }
      const int64_t n = plane / g.K, c = (plane % g.K) / g.Kg;
      const scalar_t* src = p.input + (n * g.C + c) * g.H * g.W;
      for (int e = tid; e < in_elements; e += blockDim.x) {
        const int row = e / t.in_w, col = e - row * t.in_w;
        const int64_t ih = ih0 + row, iw = iw0 + col;
        dst[e] = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W
                     ? load_as<acc_t>(src + ih * g.W + iw)
                     : acc_t(0);
      }
    }
    for (int i = tid; i < t.planes * taps; i += blockDim.x) {
      const int64_t plane = first + i / taps;
      filters[i] = plane < planes_total
                       ? load_as<acc_t>(p.weight + (plane % g.K) * taps + i % taps)
                       : acc_t(0);
    }
    __syncthreads();
    const int64_t plane = first + local_plane;
    const int64_t q = q0 + tx;
    if (local_plane < t.planes && plane < planes_total && q < g.Q) {
      const int64_t k = plane % g.K;
      const acc_t b = p.bias != nullptr ? load_as<acc_t>(p.bias + k) : acc_t(0);
      const acc_t* in = tile + local_plane * in_elements + tx * sw;
      // Fixed sizes: the filter in registers for all of the thread's rows.
      constexpr int kRegTaps = kKernel > 0 ? kKernel * kKernel : 1;
      acc_t f_reg[kRegTaps];
      const acc_t* f = filters + local_plane * taps;
      if constexpr (kKernel > 0) {
#pragma unroll
        for (int i = 0; i < kRegTaps; ++i) f_reg[i] = f[i];
        f = f_reg;
      }
      scalar_t* out = p.output + plane * PQ + q;
      for (int j = 0; j < t.rows_per_thread; ++j) {
        const int row = ty + j * t.ty;
        if (p0 + row >= g.P) break;  // rows grow with j
        const acc_t* base = in + row * sh * t.in_w;
        acc_t sum = b;
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
          for (int s_ = 0; s_ < S; ++s_) {
            sum += base[r * dh * t.in_w + s_ * dw] * f[r * S + s_];
          }
        }
        out[(p0 + row) * g.Q] = static_cast<scalar_t>(sum);
      }
    }
    // The tile is read before the next planes overwrite it.
    __syncthreads();
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
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       index < total; index += stride) {
    const int64_t w_ = index % g.W, h = (index / g.W) % g.H;
    const int64_t nc = index / (g.H * g.W), c = nc % g.C, n = nc / g.C;
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

__device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// grad_input, tiled like the forward (DepthwiseTile, over the input plane
// (n, c) this time): per output channel k = c * Kg + m the block stages the
// grad_output rows and columns its input tile receives from (zeros outside)
// and the filter, and each thread gathers its rows_per_thread inputs from
// shared memory: a tap contributes only where (h + pad - r * dilation) is a
// multiple of the stride, so no multiply meets an inserted zero.
// tile rows/cols: t.in_h x t.in_w grad_output elements per plane.
template <typename scalar_t, int kKernel>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv2d_depthwise_backward_input_tiled_kernel(DepthwiseParams<scalar_t> p,
                                                 DepthwiseTile t) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kMaxRows = 4;
  acc_t* tile = shared_array<acc_t, kDepthwiseTileElements, 0>();
  acc_t* filters = shared_array<acc_t, kDepthwiseTileTaps, 1>();
  const ConvGeometry& g = p.g;
  const int R = kKernel > 0 ? kKernel : static_cast<int>(g.R);
  const int S = kKernel > 0 ? kKernel : static_cast<int>(g.S);
  const int taps = R * S;
  const int sh = static_cast<int>(g.stride_h), sw = static_cast<int>(g.stride_w);
  const int dh = static_cast<int>(g.dilation_h), dw = static_cast<int>(g.dilation_w);
  const int tid = threadIdx.x;
  const int plane_threads = t.tx * t.ty;
  const int local_plane = tid / plane_threads;
  const int tx = tid % t.tx, ty = (tid % plane_threads) / t.tx;
  const int tile_elements = t.in_h * t.in_w;
  const int64_t h0 = static_cast<int64_t>(blockIdx.x / t.tiles_w) * t.tile_h;
  const int64_t w0 = static_cast<int64_t>(blockIdx.x % t.tiles_w) * t.tile_w;
  // First grad_output row/column any input of the tile receives from.
  const int64_t p_lo = floor_div(h0 + g.pad_h - (R - 1) * g.dilation_h, g.stride_h);
  const int64_t q_lo = floor_div(w0 + g.pad_w - (S - 1) * g.dilation_w, g.stride_w);
  // Offsets making the numerators below non-negative multiples' tests exact.
  const int row_base = static_cast<int>(h0 + g.pad_h - p_lo * g.stride_h);
  const int col_base = static_cast<int>(w0 + g.pad_w - q_lo * g.stride_w);
  const int64_t planes_total = g.N * g.C, PQ = g.P * g.Q, HW = g.H * g.W;
  const int64_t w_ = w0 + tx;
  for (int64_t first = static_cast<int64_t>(blockIdx.y) * t.planes; first < planes_total;
       first += static_cast<int64_t>(gridDim.y) * t.planes) {
    const int64_t plane = first + local_plane;
    const bool active = local_plane < t.planes && plane < planes_total && w_ < g.W;
    acc_t acc[kMaxRows];
#pragma unroll
    for (int j = 0; j < kMaxRows; ++j) acc[j] = acc_t(0);
    for (int64_t m = 0; m < g.Kg; ++m) {
      // Plane decoding once per plane; 32-bit indexing per element.
      for (int lp = 0; lp < t.planes; ++lp) {
        const int64_t pl = first + lp;
        acc_t* dst = tile + lp * tile_elements;
        if (pl >= planes_total) {
          for (int e = tid; e < tile_elements; e += blockDim.x) dst[e] = acc_t(0);
          continue;
        }
        const int64_t n = pl / g.C, k = (pl % g.C) * g.Kg + m;
        const scalar_t* src = p.grad_output + (n * g.K + k) * PQ;
        for (int e = tid; e < tile_elements; e += blockDim.x) {
          const int row = e / t.in_w, col = e - row * t.in_w;
          const int64_t pp = p_lo + row, qq = q_lo + col;
          dst[e] = pp >= 0 && pp < g.P && qq >= 0 && qq < g.Q
                       ? load_as<acc_t>(src + pp * g.Q + qq)
                       : acc_t(0);
        }
      }
      for (int i = tid; i < t.planes * taps; i += blockDim.x) {
        const int64_t pl = first + i / taps;
        filters[i] = pl < planes_total
                         ? load_as<acc_t>(p.weight + ((pl % g.C) * g.Kg + m) * taps + i % taps)
                         : acc_t(0);
      }
      __syncthreads();
      if (active) {
        const acc_t* gy = tile + local_plane * tile_elements;
        const acc_t* f = filters + local_plane * taps;
        for (int j = 0; j < t.rows_per_thread; ++j) {
          const int row = ty + j * t.ty;
          if (h0 + row >= g.H) break;
          acc_t sum = acc[j];
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const int num_h = row_base + row - r * dh;  // (h + pad - r*d) - p_lo*stride >= 0
            if (num_h % sh != 0) continue;
            const acc_t* gy_row = gy + (num_h / sh) * t.in_w;
#pragma unroll
            for (int s_ = 0; s_ < S; ++s_) {
              const int num_w = col_base + tx - s_ * dw;
              if (num_w % sw != 0) continue;
              sum += gy_row[num_w / sw] * f[r * S + s_];
            }
          }
          acc[j] = sum;
        }
      }
      // Everyone is done with this channel's tile before the next one.
      __syncthreads();
    }
    if (active) {
      scalar_t* out = p.output + plane * HW + w_;
      for (int j = 0; j < t.rows_per_thread; ++j) {
        const int64_t h = h0 + ty + j * t.ty;
        if (h >= g.H) break;
        out[h * g.W] = static_cast<scalar_t>(acc[j]);
      }
    }
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
  for (int64_t split = blockIdx.y; split < p.splits; split += gridDim.y) {
    const int64_t begin = split * p.chunk;
    const int64_t end = begin + p.chunk < reduction ? begin + p.chunk : reduction;
    for (int64_t ktap = blockIdx.x; ktap < g.K * taps; ktap += gridDim.x) {
      const int64_t k = ktap / taps, r = (ktap % taps) / g.S, s = ktap % g.S;
      const int64_t c = k / g.Kg;
      acc_t sum = acc_t(0);
      for (int64_t e = begin + tid; e < end; e += kDepthwiseWeightThreads) {
        const int64_t n = e / PQ, pq = e % PQ;
        const int64_t ih = (pq / g.Q) * g.stride_h - g.pad_h + r * g.dilation_h;
        const int64_t iw = (pq % g.Q) * g.stride_w - g.pad_w + s * g.dilation_w;
        if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
        sum += load_as<acc_t>(p.grad_output + (n * g.K + k) * PQ + pq) *
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
