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
  Conv2dShape g;
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
  const Conv2dShape& g = p.g;
  const int64_t total = g.N * g.K * g.P * g.Q;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const FlatIndex flat(g.K, g.P, g.Q, p.narrow_index);
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       index < total; index += stride) {
    int64_t n, k, p_, q;
    flat.decode(index, n, k, p_, q);
    const scalar_t* x = p.input + (n * g.C + k / g.K_per_group) * g.H * g.W;
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

// What both tiled depthwise kernels set up alike: the block's shared arrays
// and the thread's place in its tile (DepthwiseTile), with the problem's
// filter, stride and dilation as 32-bit values (kKernel: the filter size
// when it is kKernel x kKernel, 0 for any size).
template <typename acc_t, int kKernel>
struct DepthwiseTileBlock {
  acc_t* tile;            // staged input (forward) or grad_output (grad-input)
  acc_t* filters;         // the filters of the block's planes
  int64_t* plane_offset;  // offset of each of the block's planes (-1: past the last)
  int R, S, taps, sh, sw, dh, dw;
  int tid, local_plane, tx, ty;

  __device__ __forceinline__ DepthwiseTileBlock(const Conv2dShape& g, const DepthwiseTile& t)
      : tile(shared_array<acc_t, kDepthwiseTileElements, 0>()),
        filters(shared_array<acc_t, kDepthwiseTileTaps, 1>()),
        plane_offset(shared_array<int64_t, kDepthwiseThreads, 2>()),
        R(kKernel > 0 ? kKernel : static_cast<int>(g.R)),
        S(kKernel > 0 ? kKernel : static_cast<int>(g.S)),
        taps(R * S),
        sh(static_cast<int>(g.stride_h)),
        sw(static_cast<int>(g.stride_w)),
        dh(static_cast<int>(g.dilation_h)),
        dw(static_cast<int>(g.dilation_w)),
        tid(static_cast<int>(threadIdx.x)),
        local_plane(tid / (t.tx * t.ty)),
        tx(tid % t.tx),
        ty((tid % (t.tx * t.ty)) / t.tx) {}

  // Stages, for each of the block's planes (plane_offset, written before a
  // barrier), the window of rows [row0, row0 + t.in_h) x columns
  // [col0, col0 + t.in_w) of a rows x cols plane of src, zero outside the
  // plane or past the last plane; and the filter of each plane
  // first + i, weight + ((plane % channels) * multiplier + m) * taps. One pass
  // each over all the block's planes, 32-bit indexing per element;
  // consecutive threads read consecutive columns (coalesced).
  template <typename scalar_t>
  __device__ __forceinline__ void stage(const DepthwiseTile& t, const scalar_t* src,
                                        int64_t row0, int64_t col0, int64_t rows,
                                        int64_t cols, const scalar_t* weight, int64_t first,
                                        int64_t planes_total, int64_t channels,
                                        int64_t multiplier, int64_t m) const {
    const int window = t.in_h * t.in_w;
    for (int i = tid; i < t.planes * window; i += blockDim.x) {
      const int lp = i / window, e = i - lp * window;
      const int row = e / t.in_w, col = e - row * t.in_w;
      const int64_t offset = plane_offset[lp];
      const int64_t r = row0 + row, c = col0 + col;
      tile[i] = offset >= 0 && r >= 0 && r < rows && c >= 0 && c < cols
                    ? load_as<acc_t>(src + offset + r * cols + c)
                    : acc_t(0);
    }
    for (int i = tid; i < t.planes * taps; i += blockDim.x) {
      const int64_t plane = first + i / taps;
      filters[i] = plane < planes_total
                       ? load_as<acc_t>(weight + ((plane % channels) * multiplier + m) * taps +
                                        i % taps)
                       : acc_t(0);
    }
  }
};

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
  const DepthwiseTileBlock<acc_t, kKernel> block(p.g, t);
  const acc_t* tile = block.tile;
  const acc_t* filters = block.filters;
  int64_t* plane_offset = block.plane_offset;
  const Conv2dShape& g = p.g;
  const int R = block.R, S = block.S, taps = block.taps;
  const int sh = block.sh, sw = block.sw, dh = block.dh, dw = block.dw;
  const int tid = block.tid, local_plane = block.local_plane, tx = block.tx, ty = block.ty;
  const int in_elements = t.in_h * t.in_w;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x / t.tiles_w) * t.tile_h;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x % t.tiles_w) * t.tile_w;
  const int64_t ih0 = p0 * g.stride_h - g.pad_h, iw0 = q0 * g.stride_w - g.pad_w;
  const int64_t planes_total = g.N * g.K, PQ = g.P * g.Q;
  for (int64_t first = static_cast<int64_t>(blockIdx.y) * t.planes; first < planes_total;
       first += static_cast<int64_t>(gridDim.y) * t.planes) {
    // Stage: consecutive threads read consecutive input columns (coalesced);
    // zeros where the tile reaches into the padding or past the last plane.
    // Each plane's 64-bit offset is decoded once (by one thread), so all the
    // block's planes are staged in one pass with 32-bit indexing per element.
    if (tid < t.planes) {
      const int64_t plane = first + tid;
      plane_offset[tid] = plane < planes_total
                              ? ((plane / g.K) * g.C + (plane % g.K) / g.K_per_group) * g.H * g.W
                              : int64_t{-1};
    }
    __syncthreads();
    block.stage(t, p.input, ih0, iw0, g.H, g.W, p.weight, first, planes_total, g.K, 1, 0);
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
  const Conv2dShape& g = p.g;
  const int64_t total = g.N * g.C * g.H * g.W;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const FlatIndex flat(g.C, g.H, g.W, p.narrow_index);
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       index < total; index += stride) {
    int64_t n, c, h, w_;
    flat.decode(index, n, c, h, w_);
    acc_t sum = acc_t(0);
    for (int64_t m = 0; m < g.K_per_group; ++m) {
      const int64_t k = c * g.K_per_group + m;
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
  const DepthwiseTileBlock<acc_t, kKernel> block(p.g, t);
  const acc_t* tile = block.tile;
  const acc_t* filters = block.filters;
  int64_t* plane_offset = block.plane_offset;
  const Conv2dShape& g = p.g;
  const int R = block.R, S = block.S, taps = block.taps;
  const int sh = block.sh, sw = block.sw, dh = block.dh, dw = block.dw;
  const int tid = block.tid, local_plane = block.local_plane, tx = block.tx, ty = block.ty;
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
    for (int64_t m = 0; m < g.K_per_group; ++m) {
      // Plane offsets decoded once per plane; one staging pass over all the
      // block's planes with 32-bit indexing per element.
      if (tid < t.planes) {
        const int64_t pl = first + tid;
        plane_offset[tid] = pl < planes_total
                                ? ((pl / g.C) * g.K + (pl % g.C) * g.K_per_group + m) * PQ
                                : int64_t{-1};
      }
      __syncthreads();
      block.stage(t, p.grad_output, p_lo, q_lo, g.P, g.Q, p.weight, first, planes_total, g.C,
              g.K_per_group, m);
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
  const Conv2dShape& g = p.g;
  const int64_t taps = g.R * g.S, PQ = g.P * g.Q, reduction = g.N * PQ;
  const int tid = threadIdx.x;
  const FlatIndex flat(1, g.P, g.Q, p.narrow_index);
  for (int64_t split = blockIdx.y; split < p.splits; split += gridDim.y) {
    const int64_t begin = split * p.chunk;
    const int64_t end = begin + p.chunk < reduction ? begin + p.chunk : reduction;
    for (int64_t ktap = blockIdx.x; ktap < g.K * taps; ktap += gridDim.x) {
      const int64_t k = ktap / taps, r = (ktap % taps) / g.S, s = ktap % g.S;
      const int64_t c = k / g.K_per_group;
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
