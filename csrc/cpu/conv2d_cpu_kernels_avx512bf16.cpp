// The bfloat16 dense / first-layer / pointwise forward with AVX512-BF16
// (conv2d_cpu_avx512bf16.h: when it runs, and its numerics). Compiled for
// AVX-512 with AVX512-BF16 in the namespace conv_ext::cpu::avx512bf16;
// nothing here runs before bf16_dot_active() has checked the CPU.
//
// The float32 dense kernel's scheme (conv2d_dense_kernels.h) on bf16 pairs:
//   * input: one zero-padded NHWC bf16 copy with the channels padded to Ce,
//     C rounded up to even (a zero channel: a 32-bit pair of channels never
//     straddles two pixels, so with dilation_w == 1 the (s, channel pair)
//     loops fuse into one contiguous loop of S * Ce / 2 pairs);
//   * weights: [K/16][R][S][Ce/2][16][2] bf16, zero past K and C: per
//     (r, s, pair) one 64-byte vector of 16 output channels x 2 channels,
//     the operand layout of vdpbf16ps;
//   * register tile: UR output pixels x NB vectors of 16 output channels
//     (24 float32 accumulators, dense_tile_shape); per (r, s, pair) NB
//     weight vectors are loaded and each pixel's pair (one 32-bit word) is
//     broadcast into NB vdpbf16ps;
//   * output: the accumulators start from the bias, go to a float block per
//     work item, and are rounded once to bf16 into the NCHW (block
//     transpose) or channels_last result;
//   * taps that meet only padding skipped on small planes (choose_dense_tiling).
// 1x1 layers with NCHW input and output (stride_w 1 or 2) take a second
// kernel with the pixels along the lanes instead (pointwise_nchw_forward
// below): no transposes in or out.
#include "conv2d_cpu_isa_prelude.h"
// (compiled for the baseline ISA, as the prelude)
#include "conv2d_cpu_avx512bf16.h"

#if defined(__x86_64__)
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")
#define CONV_EXT_TARGET_AVX512
#include "conv2d_cpu_target_macros.h"
#define CONV_EXT_ISA avx512bf16
#include "conv2d_dense_kernels.h"
#include "conv2d_bf16_pair_words.h"
#include "conv2d_layout_kernels.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace avx512bf16 {
namespace {

using BF16 = c10::BFloat16;
// A 32-bit pair of bf16 channels read from the bf16 buffers.
typedef int32_t PairWord __attribute__((may_alias));

constexpr int L = 16;           // float32 lanes: output channels per vector
constexpr int kPairVector = 32;  // bf16 per packed weight vector (16 channels x 2)

// Strides of the register tile, in bf16 elements (x_r, x_s, w_*: all even)
// and loop counts; inner counts channel pairs.
struct PairStrides {
  int64_t x_r = 0, x_s = 0;          // input: between kernel rows, columns (unfused loop)
  int64_t w_kb = 0, w_r = 0, w_rs = 0;  // weights: per 16 channels, kernel row, column
  int64_t R = 0, S_outer = 0, inner = 0;
};

// UR pixels x NB vectors over the whole reduction: xs[u] the pixel's input
// at tap (0, 0), channel 0; w the packed weights of its first channel
// vector; bias NB * 16 floats (zero-padded); outs[u] NB * 16 floats.
template <int UR, int NB>
__attribute__((noinline)) void pair_tile(const BF16* const* xs, const BF16* w, const float* bias,
                                         float* const* outs, const PairStrides& g) {
  __m512 acc[UR][NB];
  for (int j = 0; j < NB; ++j) {
    const __m512 b = _mm512_loadu_ps(bias + j * L);
    for (int u = 0; u < UR; ++u) acc[u][j] = b;
  }
  const PairWord* x[UR];
  for (int u = 0; u < UR; ++u) x[u] = reinterpret_cast<const PairWord*>(xs[u]);
  for (int64_t r = 0; r < g.R; ++r) {
    for (int64_t so = 0; so < g.S_outer; ++so) {
      const int64_t x_off = (r * g.x_r + so * g.x_s) / 2;  // in pairs
      const BF16* wr = w + r * g.w_r + so * g.w_rs;
      for (int64_t i = 0; i < g.inner; ++i) {
        __m512i wv[NB];
        for (int j = 0; j < NB; ++j) wv[j] = _mm512_loadu_si512(wr + j * g.w_kb + i * kPairVector);
        for (int u = 0; u < UR; ++u) {
          const __m512i xb = _mm512_set1_epi32(x[u][x_off + i]);
          for (int j = 0; j < NB; ++j) {
            acc[u][j] = _mm512_dpbf16_ps(acc[u][j], (__m512bh)wv[j], (__m512bh)xb);
          }
        }
      }
    }
  }
  for (int j = 0; j < NB; ++j)
    for (int u = 0; u < UR; ++u) _mm512_storeu_ps(outs[u] + j * L, acc[u][j]);
}

using PairTileFn = void (*)(const BF16* const*, const BF16*, const float*, float* const*,
                            const PairStrides&);

const TileTable<PairTileFn, kTilePixels, kTileNB>& pair_tile_table() {
  static const TileTable<PairTileFn, kTilePixels, kTileNB> table(
      []<int UR, int NB>() -> PairTileFn {
        if constexpr (UR <= tile_pixels(NB)) {
          return &pair_tile<UR, NB>;
        } else {
          return nullptr;
        }
      });
  return table;
}

// Zero-padded NHWC bf16 copy of `input` (any strides): [N][Hp][Wp][Ce],
// channels C..Ce-1 zero.
at::Tensor padded_input(const at::Tensor& input, int64_t pad_h, int64_t pad_w, int64_t Ce) {
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w;
  at::Tensor out = at::empty({N, Hp, Wp, Ce}, input.options().dtype(at::kBFloat16)
                                                   .memory_format(at::MemoryFormat::Contiguous));
  const BF16* src = input.const_data_ptr<BF16>();
  BF16* dst = out.mutable_data_ptr<BF16>();
  const int64_t sn = input.stride(0), sc = input.stride(1), sh = input.stride(2),
                sw = input.stride(3);
  at::parallel_for(0, N * Hp, grain_for(Wp * Ce), [&](int64_t begin, int64_t end) {
    for (int64_t nh = begin; nh < end; ++nh) {
      const int64_t n = nh / Hp, hp = nh % Hp, h = hp - pad_h;
      BF16* row = dst + nh * Wp * Ce;
      if (h < 0 || h >= H) {
        std::memset(static_cast<void*>(row), 0, sizeof(BF16) * Wp * Ce);
        continue;
      }
      std::memset(static_cast<void*>(row), 0, sizeof(BF16) * pad_w * Ce);
      std::memset(static_cast<void*>(row + (pad_w + W) * Ce), 0, sizeof(BF16) * pad_w * Ce);
      const BF16* s = src + n * sn + h * sh;
      BF16* d = row + pad_w * Ce;
      if (Ce > C) {
        for (int64_t w = 0; w < W; ++w) d[w * Ce + C] = BF16(0.0f);
      }
      if (sc == 1) {  // channels_last rows
        for (int64_t w = 0; w < W; ++w) std::memcpy(d + w * Ce, s + w * sw, sizeof(BF16) * C);
      } else if (sw == 1) {  // NCHW rows: C x W transposed (widened and rounded back: exact)
        transpose_plane<float, BF16, BF16>(s, sc, C, W, d, Ce);
      } else {
        for (int64_t c = 0; c < C; ++c)
          for (int64_t w = 0; w < W; ++w) d[w * Ce + c] = s[c * sc + w * sw];
      }
    }
  });
  return out;
}

// Weights K x C x R x S (bf16, any strides) as [Kb][R][S][Ce/2][16][2],
// zero past K and C. Work items: (16 output channels, 16 channel pairs).
at::Tensor pack_pair_weights(const at::Tensor& weight, int64_t Ce) {
  const int64_t K = weight.size(0), C = weight.size(1), R = weight.size(2), S = weight.size(3);
  const int64_t taps = R * S, P2 = Ce / 2, Kb = (K + L - 1) / L, Cc = (P2 + 15) / 16;
  at::Tensor packed = at::empty({Kb * taps * P2 * kPairVector}, weight.options()
                                                                   .memory_format(at::MemoryFormat::Contiguous));
  BF16* dst = packed.mutable_data_ptr<BF16>();
  const BF16* src = weight.const_data_ptr<BF16>();
  const int64_t sk = weight.stride(0), sc = weight.stride(1), sr = weight.stride(2),
                ss = weight.stride(3);
  const bool taps_contiguous = ss == 1 && sr == S;  // tap t at offset t
  auto row = [&](int64_t kt, int64_t t, int64_t pair) {
    return dst + ((kt * taps + t) * P2 + pair) * kPairVector;
  };
  at::parallel_for(0, Kb * Cc, grain_for(16 * kPairVector * taps), [&](int64_t begin, int64_t end) {
    __m512i v[16];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t kt = item / Cc, cc = item % Cc;
      const int64_t pair0 = cc * 16, c_base = 2 * pair0;
      const int npairs = static_cast<int>(std::min<int64_t>(16, P2 - pair0));
      const int ks = static_cast<int>(std::min<int64_t>(L, K - kt * L));
      if (sc == 1) {
        // channels_last filters: per (k, tap) the channels are one run, each
        // 32-bit word one pair already; 16 filters x 16 pairs transposed.
        const int cs = static_cast<int>(std::min<int64_t>(32, C - c_base));
        const __mmask32 m = cs >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << cs) - 1);
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t off = (t / S) * sr + (t % S) * ss + c_base;
          for (int k = 0; k < 16; ++k) {
            v[k] = k < ks ? _mm512_maskz_loadu_epi16(m, src + (kt * L + k) * sk + off)
                          : _mm512_setzero_si512();
          }
          transpose_words(v);
          for (int i = 0; i < npairs; ++i) _mm512_storeu_si512(row(kt, t, pair0 + i), v[i]);
        }
      } else if (taps_contiguous) {
        // per (k, channel) the taps are one run: 16 filters x up to 16 taps
        // of a channel pair, transposed to one vector per tap.
        for (int i = 0; i < npairs; ++i) {
          const int64_t c = c_base + 2 * i;
          for (int64_t t0 = 0; t0 < taps; t0 += 16) {
            const int count = static_cast<int>(std::min<int64_t>(16, taps - t0));
            for (int k = 0; k < 16; ++k) {
              const BF16* f = src + (kt * L + k) * sk + t0;
              v[k] = k >= ks ? _mm512_setzero_si512()
                             : pair_words(f + c * sc, c + 1 < C ? f + (c + 1) * sc : nullptr, count);
            }
            transpose_words(v);
            for (int j = 0; j < count; ++j) _mm512_storeu_si512(row(kt, t0 + j, pair0 + i), v[j]);
          }
        }
      } else {
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t off = (t / S) * sr + (t % S) * ss;
          for (int i = 0; i < npairs; ++i) {
            BF16* out = row(kt, t, pair0 + i);
            for (int k = 0; k < L; ++k) {
              for (int e = 0; e < 2; ++e) {
                const int64_t c = c_base + 2 * i + e;
                out[2 * k + e] = k < ks && c < C ? src[(kt * L + k) * sk + c * sc + off] : BF16(0.0f);
              }
            }
          }
        }
      }
    }
  });
  return packed;
}

struct PairProblem {
  int64_t N, Ce, Hp, Wp, K, R, S, P, Q;
  int64_t stride_h, stride_w, dilation_h, dilation_w;
};

// The forward on the prepared buffers: x padded NHWC [N][Hp][Wp][Ce], w
// packed pairs, bias Kb * 16 floats; out NCHW (nchw) or NHWC bf16.
// taps: the problem's tap windows per output row and column (DenseProblem's
// row_taps / col_taps, C = channel pairs): as in dense_forward, on small
// planes pixels are grouped by their windows and the taps that meet only
// padding are skipped (choose_dense_tiling; the same choice at any N or
// thread count, and every pixel sums its taps in one order whatever its tile).
void forward_pairs(const BF16* x, const BF16* w, const float* bias, BF16* out, bool nchw,
                   const PairProblem& d, const DenseProblem& taps) {
  const int64_t Kb = (d.K + L - 1) / L;
  const DenseTileShape shape = dense_tile_shape(Kb);
  const int64_t KG = shape.groups;
  const bool fused = d.dilation_w == 1;
  PairStrides g;
  g.x_r = d.dilation_h * d.Wp * d.Ce;
  g.x_s = d.dilation_w * d.Ce;
  g.w_kb = d.R * d.S * d.Ce / 2 * kPairVector;
  g.w_r = d.S * d.Ce / 2 * kPairVector;
  g.w_rs = d.Ce / 2 * kPairVector;
  g.R = d.R;
  g.S_outer = fused ? 1 : d.S;
  g.inner = fused ? d.S * d.Ce / 2 : d.Ce / 2;
  const auto& table = pair_tile_table();
  const DenseTiling tiling = choose_dense_tiling(taps, shape.ur, shape.nb);
  std::vector<int32_t> row_class(d.P, 0), col_class(d.Q, 0);
  int64_t n_col_classes = 1;
  std::vector<PairStrides> class_g;
  std::vector<int64_t> class_x, class_w;
  if (tiling != DenseTiling::kSpan) {
    const std::vector<ValidRange> rows = distinct_windows(taps.row_taps, row_class);
    std::vector<ValidRange> cols{ValidRange{0, d.S}};
    if (tiling == DenseTiling::kRowsColumns) cols = distinct_windows(taps.col_taps, col_class);
    n_col_classes = static_cast<int64_t>(cols.size());
    for (const ValidRange& rw : rows) {
      for (const ValidRange& cw : cols) {
        PairStrides gk = g;
        gk.R = rw.hi - rw.lo;
        if (fused) {
          gk.inner = (cw.hi - cw.lo) * d.Ce / 2;
        } else {
          gk.S_outer = cw.hi - cw.lo;
        }
        if (gk.R <= 0 || gk.S_outer <= 0 || gk.inner <= 0) gk.R = 0;  // bias only
        const bool empty = gk.R == 0;
        class_g.push_back(gk);
        class_x.push_back(empty ? 0 : rw.lo * g.x_r + cw.lo * g.x_s);
        class_w.push_back(empty ? 0 : rw.lo * g.w_r + cw.lo * g.w_rs);
      }
    }
  }
  // Work items: (channel group, block of output pixels), channel group
  // major; pixels numbered over all images and rows. Block sizes as in
  // dense_forward: 16 tiles, fewer where a thread would get fewer than 4
  // items. No block size changes a pixel's summation order.
  const int64_t M = d.N * d.P * d.Q, PQ = d.P * d.Q;
  const int64_t items_wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t blocks_wanted = std::max<int64_t>(1, (items_wanted + KG - 1) / KG);
  const int64_t block = std::clamp<int64_t>((M + blocks_wanted - 1) / blocks_wanted, shape.ur,
                                            shape.ur * 16);
  const int64_t blocks = (M + block - 1) / block;
  const int64_t block_width = shape.nb * L;
  at::parallel_for(0, KG * blocks, grain_for(block * d.R * d.S * d.Ce * shape.nb), [&](int64_t begin, int64_t end) {
    std::vector<float> block_out(block * block_width);
    std::vector<int64_t> sorted(tiling != DenseTiling::kSpan ? block : 0);
    std::vector<int64_t> class_start(class_g.size() + 1), class_fill;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t kg = item / blocks, m_begin = (item % blocks) * block;
      const int64_t m_end = std::min(M, m_begin + block);
      const int64_t kb0 = kg * shape.nb;
      const int nb = static_cast<int>(std::min<int64_t>(shape.nb, Kb - kb0));
      const BF16* wk = w + kb0 * g.w_kb;
      const float* b = bias + kb0 * L;
      if (tiling != DenseTiling::kSpan) {
        // The block's pixels sorted by tap class (stable), each class cut
        // into near-equal tiles.
        const int64_t classes = static_cast<int64_t>(class_g.size());
        auto key = [&](int64_t m) {
          return row_class[(m / d.Q) % d.P] * n_col_classes + col_class[m % d.Q];
        };
        std::fill(class_start.begin(), class_start.end(), 0);
        for (int64_t m = m_begin; m < m_end; ++m) ++class_start[key(m) + 1];
        for (int64_t k = 0; k < classes; ++k) class_start[k + 1] += class_start[k];
        class_fill.assign(class_start.begin(), class_start.end() - 1);
        for (int64_t m = m_begin; m < m_end; ++m) sorted[class_fill[key(m)]++] = m;
        for (int64_t k = 0; k < classes; ++k) {
          const int64_t* pixels = sorted.data() + class_start[k];
          near_equal_pieces(class_start[k + 1] - class_start[k], shape.ur, [&](int64_t i, int64_t count) {
            const int ur = static_cast<int>(count);
            const BF16* xs[kTilePixels];
            float* outs[kTilePixels];
            for (int u = 0; u < ur; ++u) {
              const int64_t m = pixels[i + u];
              const int64_t ow = m % d.Q, oh = (m / d.Q) % d.P, n = m / PQ;
              xs[u] = x + ((n * d.Hp + oh * d.stride_h) * d.Wp + ow * d.stride_w) * d.Ce +
                      class_x[k];
              outs[u] = block_out.data() + (m - m_begin) * block_width;
            }
            table(ur, nb)(xs, wk + class_w[k], b, outs, class_g[k]);
          });
        }
      } else {
        int64_t ow = m_begin % d.Q, oh = (m_begin / d.Q) % d.P, n = m_begin / PQ;
        near_equal_pieces(m_end - m_begin, shape.ur, [&](int64_t i, int64_t pixels) {
          const int ur = static_cast<int>(pixels);
          const BF16* xs[kTilePixels];
          float* outs[kTilePixels];
          for (int u = 0; u < ur; ++u) {
            xs[u] = x + ((n * d.Hp + oh * d.stride_h) * d.Wp + ow * d.stride_w) * d.Ce;
            outs[u] = block_out.data() + (i + u) * block_width;
            if (++ow == d.Q) {
              ow = 0;
              if (++oh == d.P) oh = 0, ++n;
            }
          }
          table(ur, nb)(xs, wk, b, outs, g);
        });
      }
      // One rounding to bf16 into the result.
      const int64_t channels = std::min<int64_t>(nb * L, d.K - kb0 * L);
      if (nchw) {
        for (int64_t a = m_begin; a < m_end;) {
          const int64_t image = a / PQ, e = std::min(m_end, (image + 1) * PQ);
          transpose_plane<float, float, BF16>(block_out.data() + (a - m_begin) * block_width,
                                              block_width, e - a, channels,
                                              out + (image * d.K + kb0 * L) * PQ + a - image * PQ,
                                              PQ);
          a = e;
        }
      } else {
        for (int64_t m = m_begin; m < m_end; ++m) {
          BF16* o = out + m * d.K + kb0 * L;
          const float* r = block_out.data() + (m - m_begin) * block_width;
          for (int j = 0; j * L < channels; ++j) {
            const int left = static_cast<int>(std::min<int64_t>(L, channels - j * L));
            const __m512 v = _mm512_loadu_ps(r + j * L);
            simd::store_upto<float, BF16>(o + j * L, v, left);
          }
        }
      }
    }
  });
}

// ---- 1x1 (stride_w 1 or 2), NCHW in and out: pixels along the vector lanes ----
// (the layout of the float32 pointwise_nchw GEMM: no transposes on the way
// in or out, which on 1x1 layers with few channels cost as much as the
// products). out[n][k][p] = bias[k] + sum over pairs of w[k][pair] . x[n][pair][p]:
//   * input: [N][HW / 64][C2][64 pixels][2] bf16 (C2 = channel pairs, the
//     64-pixel blocks zero-padded at the end of the image): per pair one
//     contiguous 256-byte run of a block;
//   * weights: [K][C2] 32-bit pairs, broadcast;
//   * register tile: UR output channels x 4 vectors of 16 pixels.
constexpr int kPwVectors = 4;
constexpr int kPwPixels = kPwVectors * 16;  // pixels per block
constexpr int kPwRows = 6;                  // output channels per tile (24 accumulators)

// out: the tile's first output (channel k0, pixel of vector 0), rows
// out_row apart, `valid` pixels stored; or, with out null, the float sums
// to scratch [UR][64] (a block that spans two images).
template <int UR>
__attribute__((noinline)) void pw_tile(const PairWord* xb, int64_t C2, const PairWord* w,
                                       const float* bias, BF16* out, int64_t out_row,
                                       int valid, float* scratch) {
  __m512 acc[UR][kPwVectors];
  for (int u = 0; u < UR; ++u) {
    const __m512 b = _mm512_set1_ps(bias[u]);
    for (int j = 0; j < kPwVectors; ++j) acc[u][j] = b;
  }
  for (int64_t c2 = 0; c2 < C2; ++c2) {
    __m512i xv[kPwVectors];
    for (int j = 0; j < kPwVectors; ++j) xv[j] = _mm512_loadu_si512(xb + c2 * kPwPixels + j * 16);
    for (int u = 0; u < UR; ++u) {
      const __m512i wb = _mm512_set1_epi32(w[u * C2 + c2]);
      for (int j = 0; j < kPwVectors; ++j) {
        acc[u][j] = _mm512_dpbf16_ps(acc[u][j], (__m512bh)xv[j], (__m512bh)wb);
      }
    }
  }
  if (out == nullptr) {
    for (int u = 0; u < UR; ++u)
      for (int j = 0; j < kPwVectors; ++j) _mm512_storeu_ps(scratch + u * kPwPixels + j * 16, acc[u][j]);
    return;
  }
  for (int u = 0; u < UR; ++u) {
    for (int j = 0; j < kPwVectors; ++j) {
      const int left = valid - j * 16;
      if (left >= 16) {
        simd::Stored<float, BF16>::store(out + u * out_row + j * 16, acc[u][j]);
      } else if (left > 0) {
        simd::Stored<float, BF16>::store_partial(out + u * out_row + j * 16, acc[u][j], left);
      }
    }
  }
}

using PwTileFn = void (*)(const PairWord*, int64_t, const PairWord*, const float*, BF16*, int64_t,
                          int, float*);
constexpr PwTileFn kPwTiles[kPwRows] = {&pw_tile<1>, &pw_tile<2>, &pw_tile<3>,
                                        &pw_tile<4>, &pw_tile<5>, &pw_tile<6>};

// Whether forward_bf16 runs problem p on the pixel-lane kernel.
// The input pairs of a strided 1x1 (stride_w 1 or 2, any stride_h) in the
// blocked layout of pointwise_nchw_forward: per output row and 16 output
// pixels, the sampled pixels of two channel rows (stride 2: 31 loaded, the
// even ones kept by truncating 32-bit lanes), stored at their slots (a run
// across a block border: the rest compress-stored into the next block).
void strided_pair_copy(const BF16* src, const Conv2dShape& p, int64_t C2, PairWord* xp) {
  const int64_t C = p.C, HW = p.H * p.W, PQ = p.P * p.Q, M = p.N * PQ;
  const int64_t blocks = (M + kPwPixels - 1) / kPwPixels, used = M - (blocks - 1) * kPwPixels;
  if (used < kPwPixels) {  // the last block's slots past M
    for (int64_t c2 = 0; c2 < C2; ++c2) {
      std::memset(static_cast<void*>(xp + ((blocks - 1) * C2 + c2) * kPwPixels + used), 0,
                  sizeof(PairWord) * (kPwPixels - used));
    }
  }
  auto sampled = [&](const BF16* row, int count) -> __m512i {
    if (p.stride_w == 1) return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(simd::lanes16(count), row));
    const int n = 2 * count - 1;
    const __m512i v = _mm512_maskz_loadu_epi16(static_cast<__mmask32>((1u << n) - 1), row);
    return _mm512_cvtepu16_epi32(_mm512_cvtepi32_epi16(v));
  };
  at::parallel_for(0, p.N * p.P, grain_for(p.Q * C), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / p.P, oh = item % p.P;
      const BF16* row = src + n * C * HW + oh * p.stride_h * p.W;
      for (int64_t ow0 = 0; ow0 < p.Q; ow0 += 16) {
        const int count = static_cast<int>(std::min<int64_t>(16, p.Q - ow0));
        const int64_t m = n * PQ + oh * p.Q + ow0, b = m / kPwPixels, slot = m % kPwPixels;
        const int first = static_cast<int>(std::min<int64_t>(count, kPwPixels - slot));
        const __mmask16 head = simd::lanes16(first);
        const __mmask16 rest = static_cast<__mmask16>(simd::lanes16(count) & ~head);
        for (int64_t c2 = 0; c2 < C2; ++c2) {
          const BF16* l = row + 2 * c2 * HW + ow0 * p.stride_w;
          __m512i v = sampled(l, count);
          if (2 * c2 + 1 < C) v = _mm512_or_si512(v, _mm512_slli_epi32(sampled(l + HW, count), 16));
          _mm512_mask_storeu_epi32(xp + (b * C2 + c2) * kPwPixels + slot, head, v);
          if (rest != 0) _mm512_mask_compressstoreu_epi32(xp + ((b + 1) * C2 + c2) * kPwPixels, rest, v);
        }
      }
    }
  });
}

bool pointwise_nchw_applies(const at::Tensor& input, const Conv2dShape& p,
                            at::MemoryFormat format) {
  return p.is_pointwise() && p.stride_w <= 2 && format != at::MemoryFormat::ChannelsLast &&
         input.is_contiguous();
}

at::Tensor pointwise_nchw_forward(const at::Tensor& input, const at::Tensor& weight,
                                  const float* bias, const Conv2dShape& p) {
  const int64_t N = p.N, C = p.C, K = p.K, HW = p.H * p.W, PQ = p.P * p.Q, C2 = (C + 1) / 2;
  // Output pixels m = n * PQ + p numbered across the images: blocks of 64
  // span image borders (no padding per image: 196 or 49 pixels would
  // otherwise fill 256 or 64 slots).
  const int64_t M = N * PQ;
  const int64_t blocks = (M + kPwPixels - 1) / kPwPixels;
  // Input pairs, blocked: [blocks][C2][64] words.
  at::Tensor xt = at::empty({blocks * C2 * kPwPixels * 2}, input.options());
  PairWord* xp = reinterpret_cast<PairWord*>(xt.mutable_data_ptr<BF16>());
  const BF16* src = input.const_data_ptr<BF16>();
  if (!p.is_unit_stride()) {
    strided_pair_copy(src, p, C2, xp);
  } else at::parallel_for(0, blocks, grain_for(C2 * kPwPixels), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int j = 0; j < kPwVectors; ++j) {
        const int64_t m0 = b * kPwPixels + j * 16;
        const int64_t n = m0 / HW, p0 = m0 % HW;
        const int count = static_cast<int>(std::clamp<int64_t>(M - m0, 0, 16));
        PairWord* d = xp + b * C2 * kPwPixels + j * 16;
        if (count > 0 && p0 + count <= HW) {  // one image
          const BF16* lo = src + n * C * HW + p0;
          for (int64_t c2 = 0; c2 < C2; ++c2) {
            const BF16* l = lo + 2 * c2 * HW;
            _mm512_storeu_si512(d + c2 * kPwPixels,
                                pair_words(l, 2 * c2 + 1 < C ? l + HW : nullptr, count));
          }
        } else {  // past the end, or across an image border
          for (int64_t c2 = 0; c2 < C2; ++c2) {
            alignas(64) uint16_t v[32] = {};
            for (int i = 0; i < count; ++i) {
              const int64_t m = m0 + i, mn = m / HW, mp = m % HW;
              for (int e = 0; e < 2; ++e) {
                const int64_t c = 2 * c2 + e;
                if (c < C) {
                  v[2 * i + e] = src[(mn * C + c) * HW + mp].x;
                }
              }
            }
            std::memcpy(d + c2 * kPwPixels, v, sizeof(v));
          }
        }
      }
    }
  });
  // Weight pairs [K][C2]: a contiguous filter with C even is that already.
  const BF16* ws = weight.const_data_ptr<BF16>();
  const int64_t sk = weight.stride(0), sc = weight.stride(1);
  at::Tensor wt;
  const PairWord* wp = reinterpret_cast<const PairWord*>(ws);
  if (!(sc == 1 && sk == C && C % 2 == 0)) {
    wt = at::empty({K * C2 * 2}, weight.options().memory_format(at::MemoryFormat::Contiguous));
    BF16* wd = wt.mutable_data_ptr<BF16>();
    at::parallel_for(0, K, grain_for(2 * C2), [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        for (int64_t c = 0; c < 2 * C2; ++c) {
          wd[k * 2 * C2 + c] = c < C ? ws[k * sk + c * sc] : BF16(0.0f);
        }
      }
    });
    wp = reinterpret_cast<const PairWord*>(wd);
  }
  at::Tensor out = at::empty(p.output_sizes(), input.options().memory_format(at::MemoryFormat::Contiguous));
  BF16* o = out.mutable_data_ptr<BF16>();
  // Work items: (pixel block, chunk of output channels); chunks only where
  // fewer than 4 items per thread would be left. Every output element is
  // one tile's sum over all pairs, in pair order.
  const int64_t row_tiles = (K + kPwRows - 1) / kPwRows;
  const int64_t wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t chunks = std::clamp<int64_t>((wanted + blocks - 1) / blocks, 1, row_tiles);
  const int64_t chunk_tiles = (row_tiles + chunks - 1) / chunks;
  at::parallel_for(0, blocks * chunks, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float scratch[kPwRows * kPwPixels];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks, chunk = item % chunks;
      const int64_t m0 = b * kPwPixels, m1 = std::min(M, m0 + kPwPixels);
      const int64_t n = m0 / PQ, p0 = m0 % PQ;
      const bool one_image = p0 + (m1 - m0) <= PQ;
      const PairWord* xb = xp + b * C2 * kPwPixels;
      const int64_t k_end = std::min(K, (chunk + 1) * chunk_tiles * kPwRows);
      for (int64_t k0 = chunk * chunk_tiles * kPwRows; k0 < k_end; k0 += kPwRows) {
        const int ur = static_cast<int>(std::min<int64_t>(kPwRows, K - k0));
        if (one_image) {
          kPwTiles[ur - 1](xb, C2, wp + k0 * C2, bias + k0, o + (n * K + k0) * PQ + p0, PQ,
                           static_cast<int>(m1 - m0), nullptr);
          continue;
        }
        kPwTiles[ur - 1](xb, C2, wp + k0 * C2, bias + k0, nullptr, PQ, 0, scratch);
        // The block's pixels image by image, rounded once.
        for (int64_t a = m0; a < m1;) {
          const int64_t an = a / PQ, ap = a % PQ, e = std::min(m1, (an + 1) * PQ);
          for (int u = 0; u < ur; ++u) {
            const float* r = scratch + u * kPwPixels + (a - m0);
            BF16* dst = o + (an * K + k0 + u) * PQ + ap;
            for (int64_t i = 0; i < e - a; i += 16) {
              const int cnt = static_cast<int>(std::min<int64_t>(16, e - a - i));
              const __m512 v = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << cnt) - 1), r + i);
              simd::Stored<float, BF16>::store_partial(dst + i, v, cnt);
            }
          }
          a = e;
        }
      }
    }
  });
  return out;
}

}  // namespace

at::Tensor forward_bf16(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                        const Conv2dShape& p, at::MemoryFormat format) {
  TORCH_INTERNAL_ASSERT(input.scalar_type() == at::kBFloat16 &&
                        weight.scalar_type() == at::kBFloat16 && p.groups == 1);
  const int64_t Ce = p.C + (p.C & 1);
  const int64_t Kb = (p.K + L - 1) / L;
  at::Tensor b = at::zeros({Kb * L}, input.options().dtype(at::kFloat));
  if (bias.defined()) b.narrow(0, 0, p.K).copy_(bias);
  if (pointwise_nchw_applies(input, p, format)) {
    return pointwise_nchw_forward(input, weight, b.const_data_ptr<float>(), p);
  }
  const at::Tensor x = padded_input(input, p.pad_h, p.pad_w, Ce);
  const at::Tensor w = pack_pair_weights(weight, Ce);
  const bool nchw = format != at::MemoryFormat::ChannelsLast;
  at::Tensor out = at::empty(p.output_sizes(), input.options().memory_format(
                                                   nchw ? at::MemoryFormat::Contiguous
                                                        : at::MemoryFormat::ChannelsLast));
  const PairProblem d{.N = p.N, .Ce = Ce, .Hp = p.H + 2 * p.pad_h, .Wp = p.W + 2 * p.pad_w,
                      .K = p.K, .R = p.R, .S = p.S, .P = p.P, .Q = p.Q,
                      .stride_h = p.stride_h, .stride_w = p.stride_w,
                      .dilation_h = p.dilation_h, .dilation_w = p.dilation_w};
  DenseProblem taps = dense_forward_problem(p);
  taps.C = Ce / 2;  // reduction steps per tap, for the tiling's cost model
  forward_pairs(x.const_data_ptr<BF16>(), w.const_data_ptr<BF16>(), b.const_data_ptr<float>(),
                out.mutable_data_ptr<BF16>(), nchw, d, taps);
  return out;
}

namespace {

// grad-weight of a 1x1 unpadded problem as a GEMM over the output pixels:
// dW[k][c] = sum over the N*P*Q output pixels m of gy[m][k] * x[m's input
// pixel][c]. vdpbf16ps sums pairs, so the pair is two pixels: both operands
// are packed once as 32-bit words of pixels (2j, 2j + 1), G [J][Ks] and
// X [J][Cs] (J = ceil(M / 2); zero past M, K and C). Register tile: kGwRows
// input channels x NB vectors of 16 output channels; per pixel pair NB
// loads of G, kGwRows broadcasts of X, kGwRows * NB vdpbf16ps. The
// reduction runs in chunks of pairs whose G and X stay in L2 while every
// tile sweeps them; a tile's float32 sums go to F [Cr][Ks] between chunks. Each element is one
// tile's sum, chunk after chunk, pair after pair: the same order at any
// thread count.
constexpr int kGwRows = 6;
constexpr int kGwMaxNB = 4;
alignas(64) constexpr float kGwZeros[kGwMaxNB * L] = {};

template <int NB>
__attribute__((noinline)) void gw_pair_tile(const PairWord* g, int64_t ks, const PairWord* x,
                                            int64_t cs, int64_t pairs, float* f, int64_t f_row,
                                            bool first) {
  // (one load per accumulator from its source: see dense_tile_full)
  const float* init[kGwRows];
  for (int u = 0; u < kGwRows; ++u) init[u] = first ? kGwZeros : f + u * f_row;
  __m512 acc[kGwRows][NB];
  for (int u = 0; u < kGwRows; ++u)
    for (int v = 0; v < NB; ++v) acc[u][v] = _mm512_loadu_ps(init[u] + v * L);
  for (int64_t j = 0; j < pairs; ++j) {
    __m512i gv[NB];
    for (int v = 0; v < NB; ++v) gv[v] = _mm512_loadu_si512(g + j * ks + v * L);
    for (int u = 0; u < kGwRows; ++u) {
      const __m512i xb = _mm512_set1_epi32(x[j * cs + u]);
      for (int v = 0; v < NB; ++v) {
        acc[u][v] = _mm512_dpbf16_ps(acc[u][v], (__m512bh)gv[v], (__m512bh)xb);
      }
    }
  }
  for (int u = 0; u < kGwRows; ++u)
    for (int v = 0; v < NB; ++v) _mm512_storeu_ps(f + u * f_row + v * L, acc[u][v]);
}

using GwTileFn = void (*)(const PairWord*, int64_t, const PairWord*, int64_t, int64_t, float*,
                          int64_t, bool);
constexpr GwTileFn kGwTiles[kGwMaxNB] = {&gw_pair_tile<1>, &gw_pair_tile<2>, &gw_pair_tile<3>,
                                         &gw_pair_tile<4>};

// Elements (pixel m, channel c) as words [J][cs] from channels_last rows
// (pixel m's C channels contiguous at row(m)) two at a time.
template <typename Row>
void pack_pixel_pairs_nhwc(const Row& row, int64_t M, int64_t C, int64_t cs, PairWord* dst) {
  const int64_t J = (M + 1) / 2;
  at::parallel_for(0, J, grain_for(cs), [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const BF16* lo = row(2 * j);
      const BF16* hi = 2 * j + 1 < M ? row(2 * j + 1) : nullptr;
      for (int64_t c0 = 0; c0 < cs; c0 += L) {
        const int count = static_cast<int>(std::clamp<int64_t>(C - c0, 0, L));
        _mm512_storeu_si512(dst + j * cs + c0,
                            count > 0 ? pair_words(lo + c0, hi != nullptr ? hi + c0 : nullptr, count)
                                      : _mm512_setzero_si512());
      }
    }
  });
}

// The same from NCHW planes (HW pixels each): blocks of 16 channels x 16
// pairs (32 consecutive pixels), transposed in registers. A channel's 32
// pixels within one image are 16 words of its plane, read as they are (at
// any alignment); runs across an image border or past M are gathered
// into a zeroed buffer first.
void pack_pixel_pairs_nchw(const BF16* src, int64_t N, int64_t C, int64_t HW, int64_t cs,
                           PairWord* dst) {
  const int64_t M = N * HW, J = (M + 1) / 2, pair_blocks = (J + L - 1) / L;
  const int64_t channel_blocks = cs / L;
  at::parallel_for(0, pair_blocks, grain_for(cs * L), [&](int64_t begin, int64_t end) {
    __m512i v[16];
    alignas(64) BF16 run[2 * L];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t j0 = item * L, m0 = 2 * j0;
      const int count = static_cast<int>(std::min<int64_t>(L, J - j0));  // pairs
      const int64_t pixels = std::min<int64_t>(2 * L, M - m0);
      const int64_t n0 = m0 / HW, hw0 = m0 % HW;
      const bool direct = pixels == 2 * count && hw0 + pixels <= HW;
      for (int64_t cb = 0; cb < channel_blocks; ++cb) {
        for (int i = 0; i < 16; ++i) {
          const int64_t c = cb * L + i;
          if (c >= C) {
            v[i] = _mm512_setzero_si512();
          } else if (direct) {
            v[i] = _mm512_maskz_loadu_epi32(simd::lanes16(count), src + (n0 * C + c) * HW + hw0);
          } else {
            std::memset(static_cast<void*>(run), 0, sizeof(run));
            for (int64_t a = 0; a < pixels;) {
              const int64_t m = m0 + a, n = m / HW, hw = m % HW;
              const int64_t len = std::min(pixels - a, HW - hw);
              std::memcpy(static_cast<void*>(run + a), src + (n * C + c) * HW + hw, sizeof(BF16) * len);
              a += len;
            }
            v[i] = _mm512_load_si512(run);
          }
        }
        transpose_words(v);
        PairWord* d = dst + j0 * cs + cb * L;
        for (int t = 0; t < count; ++t) _mm512_storeu_si512(d + t * cs, v[t]);
      }
    }
  });
}

}  // namespace

at::Tensor backward_weight_pointwise_bf16(const at::Tensor& grad_output, const at::Tensor& input,
                                          const Conv2dShape& p) {
  TORCH_INTERNAL_ASSERT(use_bf16_dot_backward_weight(grad_output, input, p));
  const bool nhwc = grad_output.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                    input.is_contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t HW = p.H * p.W;
  const int64_t M = p.N * p.P * p.Q, J = (M + 1) / 2;
  const int64_t Ks = (p.K + L - 1) / L * L;
  // Whole tiles of kGwRows input channels, rows of whole vectors.
  const int64_t Cr = (p.C + kGwRows - 1) / kGwRows * kGwRows;
  const int64_t Cs = (Cr + L - 1) / L * L;
  at::Tensor gt = at::empty({J * Ks * 2}, grad_output.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor xt = at::empty({J * Cs * 2}, input.options().memory_format(at::MemoryFormat::Contiguous));
  PairWord* G = reinterpret_cast<PairWord*>(gt.mutable_data_ptr<BF16>());
  PairWord* X = reinterpret_cast<PairWord*>(xt.mutable_data_ptr<BF16>());
  if (nhwc) {
    const BF16* gy = grad_output.const_data_ptr<BF16>();
    const BF16* x = input.const_data_ptr<BF16>();
    pack_pixel_pairs_nhwc([&](int64_t m) { return gy + m * p.K; }, M, p.K, Ks, G);
    // (with stride: the input pixel each output pixel reads)
    const int64_t PQ = p.P * p.Q;
    pack_pixel_pairs_nhwc(
        [&](int64_t m) {
          const int64_t n = m / PQ, oh = m % PQ / p.Q, ow = m % p.Q;
          return x + ((n * p.H + oh * p.stride_h) * p.W + ow * p.stride_w) * p.C;
        },
        M, p.C, Cs, X);
  } else {
    pack_pixel_pairs_nchw(grad_output.const_data_ptr<BF16>(), p.N, p.K, HW, Ks, G);
    pack_pixel_pairs_nchw(input.const_data_ptr<BF16>(), p.N, p.C, HW, Cs, X);
  }
  at::Tensor ft = at::empty({Cr, Ks}, input.options().dtype(at::kFloat));
  float* F = ft.mutable_data_ptr<float>();
  // Chunks of pairs: G and X of one chunk about 384 KB (in L2 while every
  // tile sweeps them). Tiles: (kGwRows input channels, channel group of up
  // to kGwMaxNB vectors); a thread takes a range of them, all chunks in order.
  const int64_t JC = std::min(J, std::max<int64_t>(16, 384 * 1024 / (4 * (Ks + Cs))));
  const int64_t kb = Ks / L, KG = (kb + kGwMaxNB - 1) / kGwMaxNB, rows = Cr / kGwRows;
  at::parallel_for(0, rows * KG, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j0 = 0; j0 < J; j0 += JC) {
      const int64_t pairs = std::min(JC, J - j0);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t row = t / KG, kg = t % KG;
        const int nb = static_cast<int>(std::min<int64_t>(kGwMaxNB, kb - kg * kGwMaxNB));
        const int64_t c0 = row * kGwRows, k0 = kg * kGwMaxNB * L;
        kGwTiles[nb - 1](G + j0 * Ks + k0, Ks, X + j0 * Cs + c0, Cs, pairs, F + c0 * Ks + k0, Ks,
                         j0 == 0);
      }
    }
  });
  // dW[k][c] = F[c][k], rounded once (the front gives it the memory format).
  return ft.narrow(0, 0, p.C).narrow(1, 0, p.K).t().contiguous().to(at::kBFloat16).view(p.weight_sizes());
}

}  // namespace avx512bf16
}  // namespace cpu
}  // namespace conv_ext

#else  // not x86-64: bf16_dot_supported() is false, nothing calls this

namespace conv_ext {
namespace cpu {
namespace avx512bf16 {
at::Tensor forward_bf16(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const Conv2dShape&, at::MemoryFormat) {
  TORCH_CHECK(false, "conv_ext: the AVX512-BF16 kernels exist on x86-64 only");
}
at::Tensor backward_weight_pointwise_bf16(const at::Tensor&, const at::Tensor&, const Conv2dShape&) {
  TORCH_CHECK(false, "conv_ext: the AVX512-BF16 kernels exist on x86-64 only");
}
}  // namespace avx512bf16
}  // namespace cpu
}  // namespace conv_ext

#endif
