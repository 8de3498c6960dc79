// Dense forward on the tensor cores: an implicit GEMM over channels_last
// tensors, M = N*P*Q output pixels x N = output channels of a group, reduced
// over k = (r, s, c). Operands are gathered 16 bytes (8 bf16/fp16 or 4 fp32
// channels) at a time with cp.async straight into a multi-stage shared-memory
// ring (zero-fill for padding and ragged edges: no im2col buffer), loaded
// into fragments with ldmatrix and multiplied with mma.sync: m16n8k16 for
// bf16/fp16, m16n8k8 on tf32 (rounded with cvt.rna) for float32 when TF32 is
// allowed. fp32 accumulators; deterministic (no atomics, fixed order).
//
// Layouts: input N x H x W x C, weight K x R x S x Cg, output N x P x Q x K
// (all channels_last); Cg must be a multiple of the 16-byte vector (the plan
// checks it), so a vector never straddles a pixel or a group.
//
// The reduction walks taps (r, s) and, per tap, channel chunks of one slab
// (64 bytes of channels); the slab position advances by counters, and every
// per-row quantity (image base, receptive-field origin, validity) is
// computed once per tile: no division in the main loop.
#pragma once

#include <ATen/OpMathType.h>

#include "conv2d_cuda_common.cuh"
#include "conv2d_warp_primitives.cuh"

namespace conv_ext {
namespace cuda {

// A block tile of BM x BN outputs, WarpsM x WarpsN warps, Stages slabs in
// flight. A slab is SlabBytes (64 or 128) of reduction per row; shared rows
// are padded by 16 bytes so that the 8 rows an ldmatrix reads hit distinct
// banks (row strides of 20 or 36 words).
template <int BM_, int BN_, int WarpsM_, int WarpsN_, int Stages_, int SlabBytes_ = 64>
struct MmaTile {
  static constexpr int BM = BM_, BN = BN_, kWarpsM = WarpsM_, kWarpsN = WarpsN_;
  static constexpr int kStages = Stages_;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpM = BM / kWarpsM, kWarpN = BN / kWarpsN;  // warp tile
  static constexpr int kFragsM = kWarpM / 16, kFragsN = kWarpN / 8;   // mma tiles per warp
  static constexpr int kSlabBytes = SlabBytes_, kRowBytes = SlabBytes_ + 16;
  static constexpr int kVectorsPerRow = kSlabBytes / 16;
  static_assert(kSlabBytes == 64 || kSlabBytes == 128, "64 or 128 bytes of reduction per slab");
  static_assert(kWarpM % 16 == 0 && kWarpN % 16 == 0, "warp tile of whole 16x16 fragments");
  static_assert((BM * kVectorsPerRow) % kThreads == 0 && (BN * kVectorsPerRow) % kThreads == 0,
                "whole vectors per thread");
  // Bytes of one stage and of the ring (dynamic shared memory).
  static constexpr int kStageBytes = (BM + BN) * kRowBytes;
  static constexpr int kSharedBytes = kStages * kStageBytes;
};

// The forward's tiles (conv2d_forward_mma.h picks one per problem):
// 128 x 64 outputs, 4 warps of 64 x 32, 3 stages of 64-byte slabs: 46 KB.
using MmaTile128x64 = MmaTile<128, 64, 2, 2, 3>;
// The same with 128-byte slabs (half the barriers and gather set-up per
// reduction step): 83 KB.
using MmaTile128x64Deep = MmaTile<128, 64, 2, 2, 3, 128>;
// 128 x 128 outputs, 8 warps of 64 x 32, 3 stages: 61 KB.
using MmaTile128x128 = MmaTile<128, 128, 2, 4, 3>;
// 64 x 64 outputs, 4 warps of 32 x 32, 4 stages: 41 KB; four times the
// tiles of 128 x 64 for problems with few output pixels.
using MmaTile64x64 = MmaTile<64, 64, 2, 2, 4>;

// Shared memory of the forward kernel: the ring, or the epilogue's staged
// output tile (BM rows of BN elements + 16 bytes; fp32 partials when the
// reduction is split) where that is larger.
template <typename out_t, typename Tile>
constexpr int mma_out_row_bytes() {
  return Tile::BN * static_cast<int>(sizeof(out_t)) + 16;
}
template <typename scalar_t, typename Tile>
constexpr int mma_forward_shared_bytes() {
  const int out_tile = Tile::BM * mma_out_row_bytes<float, Tile>();
  return out_tile > Tile::kSharedBytes ? out_tile : Tile::kSharedBytes;
}

// The epilogue, in two steps so that a tile's stores are whole 16-byte
// vectors of output rows rather than scattered 2- or 4-byte elements: (1)
// accumulator (i, j, e), which is D[row gid (+8)][column 2 tig (+1)], plus
// bias (nullptr: none), as out_t into a BM x BN tile staged in the (idle)
// ring, rows padded by 16 bytes; (2) the tile's rows out: row m of the tile
// to out + m * row_stride, columns below `columns`. Ends with a barrier (the
// next tile's loads reuse the ring).
template <typename out_t, typename Tile, typename bias_t>
__device__ __forceinline__ void store_mma_tile(
    const float (&acc)[Tile::kFragsM][Tile::kFragsN][4], const bias_t* bias,
    unsigned char* ring, out_t* out, int64_t row_stride, int64_t rows, int64_t columns) {
  constexpr int kOutRowBytes = mma_out_row_bytes<out_t, Tile>();
  constexpr int kVector = 16 / static_cast<int>(sizeof(out_t));
  const int tid = threadIdx.x, lane = lane_id(), warp = tid / 32;
  const int warp_m = warp % Tile::kWarpsM, warp_n = warp / Tile::kWarpsM;
  const int gid = lane / 4, tig = lane % 4;
#pragma unroll
  for (int j = 0; j < Tile::kFragsN; ++j) {
    const int col = warp_n * Tile::kWarpN + j * 8 + 2 * tig;
    float b[2] = {0.f, 0.f};
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (bias != nullptr && col + e < columns) b[e] = load_as<float>(bias + col + e);
    }
#pragma unroll
    for (int i = 0; i < Tile::kFragsM; ++i) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = warp_m * Tile::kWarpM + i * 16 + gid + 8 * half;
        auto* staged = reinterpret_cast<out_t*>(ring + row * kOutRowBytes) + col;
        staged[0] = static_cast<out_t>(acc[i][j][2 * half] + b[0]);
        staged[1] = static_cast<out_t>(acc[i][j][2 * half + 1] + b[1]);
      }
    }
  }
  __syncthreads();
  // Whole vectors where every row starts 16-byte aligned and the columns
  // are whole vectors; else element by element (the same values).
  const bool whole_vectors = row_stride % kVector == 0 && columns % kVector == 0 &&
                             reinterpret_cast<uintptr_t>(out) % 16 == 0;
  constexpr int kVectorsPerOutRow = Tile::BN / kVector;
  for (int idx = tid; idx < Tile::BM * kVectorsPerOutRow; idx += Tile::kThreads) {
    const int row = idx / kVectorsPerOutRow, v = idx % kVectorsPerOutRow;
    const int64_t n = static_cast<int64_t>(v) * kVector;
    if (row >= rows || n >= columns) continue;
    out_t* dst = out + row * row_stride + n;
    const unsigned char* staged = ring + row * kOutRowBytes + v * 16;
    if (whole_vectors) {
      copy16(dst, staged);
    } else {
      const auto* elems = reinterpret_cast<const out_t*>(staged);
      for (int e = 0; e < kVector && n + e < columns; ++e) dst[e] = elems[e];
    }
  }
  __syncthreads();
}

template <typename scalar_t>
struct MmaForwardParams {
  const scalar_t* input;   // N x H x W x C
  const scalar_t* weight;  // K x R x S x Cg
  const scalar_t* bias;    // K, or nullptr
  scalar_t* output;        // N x P x Q x K
  Conv2dShape g;
  int64_t tiles_m, tiles_n;
  int64_t tiles_y;  // tiles_n * groups, read from the parameter bank (a register spilled)
  // Split reduction (gridDim.z = splits > 1): split z sums slabs
  // [z * slabs_per_split, (z + 1) * slabs_per_split) into fp32 partials
  // [splits][N*P*Q][K] (bias in split 0's), summed by sum_splits_kernel in
  // a fixed order; nullptr when not split.
  float* partials;
  int slabs_per_split;
};

// One thread's share of a slab of one operand: Rows rows (kRowStride apart)
// at a fixed 16-byte column of the slab.
template <typename Tile, int Rows>
struct SlabRows {
  static constexpr int kRowStride = Tile::kThreads / Tile::kVectorsPerRow;
  int row0, vector;  // first row, 16-byte column of the slab
  __device__ __forceinline__ explicit SlabRows(int tid)
      : row0(tid / Tile::kVectorsPerRow), vector(tid % Tile::kVectorsPerRow) {}
  __device__ __forceinline__ int row(int i) const { return row0 + i * kRowStride; }
  // Byte offset of this thread's vector of row i within a stage's operand.
  __device__ __forceinline__ int smem_offset(int i) const {
    return row(i) * Tile::kRowBytes + vector * 16;
  }
};

// A receptive-field origin row that no filter tap brings into the image
// (taps reach at most (R - 1) * dilation_h < 2^29 rows; the host checks).
constexpr int kOutsideImage = -(1 << 30);

template <typename scalar_t, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads)
    conv2d_forward_mma_kernel(MmaForwardParams<scalar_t> p) {
  using half_or_float = scalar_t;
  constexpr bool kTf32 = std::is_same_v<scalar_t, float>;
  constexpr int kElemBytes = sizeof(scalar_t);
  constexpr int kVector = 16 / kElemBytes;                   // channels per cp.async
  constexpr int kSlabChannels = Tile::kSlabBytes / kElemBytes;
  constexpr int kStepBytes = 32;                             // k16 (16-bit) or k8 (tf32)
  constexpr int kRowsA = Tile::BM * Tile::kVectorsPerRow / Tile::kThreads;
  constexpr int kRowsB = Tile::BN * Tile::kVectorsPerRow / Tile::kThreads;
  static_assert(kTf32 || sizeof(scalar_t) == 2, "bf16/fp16 or tf32");

  unsigned char* ring = dynamic_shared_bytes<mma_forward_shared_bytes<scalar_t, Tile>(), 20>();
  const Conv2dShape& g = p.g;
  const int tid = threadIdx.x, lane = lane_id(), warp = tid / 32;
  const int warp_m = warp % Tile::kWarpsM, warp_n = warp / Tile::kWarpsM;
  const int64_t M = g.N * g.P * g.Q;
  const int c_chunks = static_cast<int>((g.C_per_group + kSlabChannels - 1) / kSlabChannels);
  const int slabs = static_cast<int>(g.R * g.S) * c_chunks;
  const SlabRows<Tile, kRowsA> a_rows(tid);
  const SlabRows<Tile, kRowsB> b_rows(tid);

  for (int64_t tile_y = blockIdx.y; tile_y < p.tiles_y; tile_y += gridDim.y) {
    const int64_t group = tile_y / p.tiles_n, n0 = (tile_y % p.tiles_n) * Tile::BN;
    for (int64_t tile_x = blockIdx.x; tile_x < p.tiles_m; tile_x += gridDim.x) {
      const int64_t m0 = tile_x * Tile::BM;
      // Per-row state of the gather, once per tile. Offsets within an image
      // are 32-bit (the host sends images of 2^31 elements or more to the
      // SIMT kernels): row i of a slab reads a_image[i] + a_offset[i] +
      // the slab's tap offset. A row past M gets a receptive-field origin
      // that no tap brings into the image, so one unsigned test per axis
      // covers padding, edges and ragged tiles.
      const int H = static_cast<int>(g.H), W = static_cast<int>(g.W), C = static_cast<int>(g.C);
      const int Cg = static_cast<int>(g.C_per_group), S = static_cast<int>(g.S);
      const int dilation_h = static_cast<int>(g.dilation_h);
      const int dilation_w = static_cast<int>(g.dilation_w);
      const scalar_t* a_image[kRowsA];
      int a_ih0[kRowsA], a_iw0[kRowsA];
      unsigned a_offset[kRowsA];  // mod 2^32: exact where the element is in the image
#pragma unroll
      for (int i = 0; i < kRowsA; ++i) {
        const int64_t m = m0 + a_rows.row(i);
        const bool valid = m < M;
        const int64_t mm = valid ? m : 0;
        const int64_t n = mm / (g.P * g.Q), pq = mm % (g.P * g.Q);
        a_ih0[i] = valid ? static_cast<int>((pq / g.Q) * g.stride_h - g.pad_h) : kOutsideImage;
        a_iw0[i] = static_cast<int>((pq % g.Q) * g.stride_w - g.pad_w);
        a_offset[i] = valid ? (static_cast<unsigned>(a_ih0[i]) * W + static_cast<unsigned>(a_iw0[i])) * C
                            : 0u;
        a_image[i] = p.input + n * g.H * g.W * g.C + group * g.C_per_group + a_rows.vector * kVector;
      }
      const scalar_t* b_base[kRowsB];
      bool b_valid[kRowsB];
#pragma unroll
      for (int i = 0; i < kRowsB; ++i) {
        const int64_t n = n0 + b_rows.row(i);
        b_valid[i] = n < g.K_per_group;
        b_base[i] = p.weight + (group * g.K_per_group + (b_valid[i] ? n : 0)) * g.R * g.S * g.C_per_group +
                    b_rows.vector * kVector;
      }

      // This block's slabs: all, or its split's range (the host makes every
      // split non-empty). The next slab to load: tap (r, s) (and its index
      // r * S + s), channel chunk start c0, from the first one.
      const int first_slab = static_cast<int>(blockIdx.z) * p.slabs_per_split;
      const int count = p.partials == nullptr ? slabs
                                                : (slabs - first_slab < p.slabs_per_split
                                                       ? slabs - first_slab
                                                       : p.slabs_per_split);
      int load_tap = first_slab / c_chunks;
      int load_r = load_tap / S, load_s = load_tap % S;
      int load_c0 = (first_slab % c_chunks) * kSlabChannels, loaded = 0;
      const auto load_slab = [&](int stage) {
        unsigned char* a_smem = ring + stage * Tile::kStageBytes;
        unsigned char* b_smem = a_smem + Tile::BM * Tile::kRowBytes;
        const bool c_valid = load_c0 + a_rows.vector * kVector < Cg;  // same column for A and B
        const int dh = load_r * dilation_h, dw = load_s * dilation_w;
        // Unsigned (mod 2^32): an offset is exact, and below 2^31, where its
        // element is in the image; elsewhere it is never dereferenced.
        const unsigned tap_offset =
            (static_cast<unsigned>(dh) * W + static_cast<unsigned>(dw)) * C + load_c0;
#pragma unroll
        for (int i = 0; i < kRowsA; ++i) {
          const bool valid = c_valid && static_cast<unsigned>(a_ih0[i] + dh) < static_cast<unsigned>(H) &&
                             static_cast<unsigned>(a_iw0[i] + dw) < static_cast<unsigned>(W);
          const int offset = static_cast<int>(a_offset[i] + tap_offset);
          cp_async<16>(a_smem + a_rows.smem_offset(i), valid ? a_image[i] + offset : p.input, valid);
        }
        const int b_offset = load_tap * Cg + load_c0;
#pragma unroll
        for (int i = 0; i < kRowsB; ++i) {
          const bool valid = b_valid[i] && c_valid;
          cp_async<16>(b_smem + b_rows.smem_offset(i), valid ? b_base[i] + b_offset : p.weight, valid);
        }
        // Advance (c0, s, r) without division.
        load_c0 += kSlabChannels;
        if (load_c0 >= Cg) {
          load_c0 = 0;
          ++load_tap;
          if (++load_s == S) {
            load_s = 0;
            ++load_r;
          }
        }
        ++loaded;
      };

      float acc[Tile::kFragsM][Tile::kFragsN][4];
#pragma unroll
      for (int i = 0; i < Tile::kFragsM; ++i) {
#pragma unroll
        for (int j = 0; j < Tile::kFragsN; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
        }
      }

      // Prologue: Stages - 1 slabs in flight (empty groups past the end keep
      // the group count, and so the waits, uniform).
#pragma unroll
      for (int stage = 0; stage < Tile::kStages - 1; ++stage) {
        if (loaded < count) load_slab(stage);
        cp_async_commit();
      }
      for (int t = 0; t < count; ++t) {
        // Slab t has landed (this thread's copies), and after the barrier
        // everyone's; everyone is also done computing on slab t - 1, whose
        // stage the next load reuses.
        cp_async_wait<Tile::kStages - 2>();
        __syncthreads();
        if (loaded < count) load_slab((t + Tile::kStages - 1) % Tile::kStages);
        cp_async_commit();

        const unsigned char* a_smem = ring + (t % Tile::kStages) * Tile::kStageBytes;
        const unsigned char* b_smem = a_smem + Tile::BM * Tile::kRowBytes;
#pragma unroll
        for (int step = 0; step < Tile::kSlabBytes / kStepBytes; ++step) {
          uint32_t a[Tile::kFragsM][4], b[Tile::kFragsN][2];
#pragma unroll
          for (int i = 0; i < Tile::kFragsM; ++i) {
            // Lanes 0-15: rows 0-15 at the step's first 16 bytes; 16-31: the next 16.
            const int row = warp_m * Tile::kWarpM + i * 16 + lane % 16;
            ldmatrix<4>(a[i], a_smem + row * Tile::kRowBytes + step * kStepBytes + (lane / 16) * 16);
          }
#pragma unroll
          for (int j = 0; j < Tile::kFragsN; j += 2) {
            // Matrices: (n 0-7, k lo), (n 0-7, k hi), (n 8-15, k lo), (n 8-15, k hi).
            const int quad = lane / 8;
            const int row = warp_n * Tile::kWarpN + j * 8 + (quad / 2) * 8 + lane % 8;
            uint32_t r[4];
            ldmatrix<4>(r, b_smem + row * Tile::kRowBytes + step * kStepBytes + (quad % 2) * 16);
            b[j][0] = r[0];
            b[j][1] = r[1];
            b[j + 1][0] = r[2];
            b[j + 1][1] = r[3];
          }
          if constexpr (kTf32) {
#pragma unroll
            for (int i = 0; i < Tile::kFragsM; ++i) {
#pragma unroll
              for (int e = 0; e < 4; ++e) a[i][e] = cvt_rna_tf32(bits_as_float(a[i][e]));
            }
#pragma unroll
            for (int j = 0; j < Tile::kFragsN; ++j) {
#pragma unroll
              for (int e = 0; e < 2; ++e) b[j][e] = cvt_rna_tf32(bits_as_float(b[j][e]));
            }
          }
#pragma unroll
          for (int i = 0; i < Tile::kFragsM; ++i) {
#pragma unroll
            for (int j = 0; j < Tile::kFragsN; ++j) {
              if constexpr (kTf32) {
                mma_m16n8k8_tf32(acc[i][j], a[i], b[j]);
              } else {
                mma_m16n8k16<half_or_float>(acc[i][j], a[i], b[j]);
              }
            }
          }
        }
      }
      // Nothing may still write the ring when the next tile starts loading.
      cp_async_wait<0>();
      __syncthreads();

      const int64_t rows = M - m0 < Tile::BM ? M - m0 : Tile::BM;
      const int64_t columns = g.K_per_group - n0 < Tile::BN ? g.K_per_group - n0 : Tile::BN;
      const int64_t first_column = group * g.K_per_group + n0;
      const scalar_t* bias = p.bias == nullptr || blockIdx.z != 0 ? nullptr : p.bias + first_column;
      if (p.partials == nullptr) {
        store_mma_tile<scalar_t, Tile>(acc, bias, ring, p.output + m0 * g.K + first_column, g.K,
                                       rows, columns);
      } else {
        float* partials = p.partials + static_cast<int64_t>(blockIdx.z) * M * g.K;
        store_mma_tile<float, Tile>(acc, bias, ring, partials + m0 * g.K + first_column, g.K,
                                    rows, columns);
      }
    }
  }
}

}  // namespace cuda
}  // namespace conv_ext
