// The bfloat16 dense and pointwise forward on AMX tiles (conv2d_cpu_amx.h:
// when it runs, and its numerics). Compiled for AVX-512 with AMX-TILE and
// AMX-BF16 in the namespace conv_ext::cpu::amx; nothing here runs before
// amx_active() has checked the CPU and the OS permission.
//
// Layout (per call, like the float32 dense path: no im2col buffer):
//   * input: a zero-padded NHWC bf16 copy with the channels padded to
//     Cp = a multiple of 32, split into stride phases: phase (a, b) holds the
//     padded pixels (i * stride_h + a, j * stride_w + b), [Hph][Wph] per
//     image. Tap (r, s) reads phase ((r * dil_h) % stride_h,
//     (s * dil_w) % stride_w) at offset ((r * dil_h) / stride_h,
//     (s * dil_w) / stride_w): every tap is a unit-stride shift in one phase,
//     so the output pixels m = oh * Wph + ow of an image (ow < Q used, the
//     Wph - Q others computed and dropped) read evenly spaced rows: one
//     16-pixel A tile is one strided tile load (16 rows of 32 channels).
//     Only the phases some tap reads are copied.
//   * weights: B tiles of 16 channel pairs x 16 output channels x 2 (the
//     pair layout tdpbf16ps reads), [K/16][tap][C/32][16][16][2], zero past K
//     and C.
//   * output: 2 x 2 float accumulator tiles (32 pixels x 32 channels) over
//     the whole reduction (taps x C/32 steps, in that order), stored to a
//     small buffer, bias added, rounded once to bf16 into the NCHW or NHWC
//     result.
#include "conv2d_cpu_isa_prelude.h"
// (compiled for the baseline ISA, as the prelude)
#include "conv2d_cpu_amx.h"

#include <limits>

#if defined(__x86_64__)
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-bf16")
#define CONV_EXT_TARGET_AVX512
#include "conv2d_cpu_target_macros.h"
#define CONV_EXT_ISA amx
#include "conv2d_bf16_pair_words.h"
#include "conv2d_layout_kernels.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace amx {
namespace {

using BF16 = c10::BFloat16;

// The tile instructions, with "memory" clobbers: tile loads and stores move
// memory the compiler does not see (GCC's _tile_loadd/_tile_stored have no
// memory operands, so ordinary loads of a stored tile could be moved before
// the store).
#define CONV_EXT_TILE_LOAD(tmm, base, stride_bytes)                                 \
  asm volatile("tileloadd (%0,%1,1), %%tmm" #tmm ::"r"(base),                     \
               "r"(static_cast<int64_t>(stride_bytes))                              \
               : "memory")
#define CONV_EXT_TILE_STORE(tmm, base, stride_bytes)                                \
  asm volatile("tilestored %%tmm" #tmm ", (%0,%1,1)" ::"r"(base),                 \
               "r"(static_cast<int64_t>(stride_bytes))                              \
               : "memory")
#define CONV_EXT_TILE_ZERO(tmm) asm volatile("tilezero %%tmm" #tmm ::)
// tmm_c += tmm_a (16 x 32 bf16) * tmm_b (16 pair rows x 16 x 2 bf16)
#define CONV_EXT_TILE_DP(c, a, b) asm volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

// Palette 1 (ldtilecfg's 64-byte operand): tiles 0-7 all 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

// The tile configuration is per thread: set it in every parallel task, and
// release the tiles at its end (a thread holding tile state costs its
// context switches the 8 KB of tile data).
class TileScope {
 public:
  TileScope() {
    TileConfig cfg;
    for (int i = 0; i < 8; ++i) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    asm volatile("ldtilecfg %0" ::"m"(cfg));
  }
  ~TileScope() { asm volatile("tilerelease" ::: "memory"); }
  TileScope(const TileScope&) = delete;
  TileScope& operator=(const TileScope&) = delete;
};

constexpr int kTileRows = 16;     // pixels of an A tile, rows of every tile
constexpr int kTileK = 32;        // bf16 channels of an A tile row
constexpr int kTileN = 16;        // output channels of a B / C tile
constexpr int kBlockPixels = 32;  // 2 A tiles
constexpr int kBlockChannels = 32;  // 2 B tiles
constexpr int64_t kBTileElements = int64_t{kTileK} * kTileN;  // 512 bf16 = 1 KB

// Everything the copies and the tile loop derive from the problem.
struct AmxPlan {
  int64_t N, C, Cp, H, W, K, Kt, P, Q;
  int64_t stride_h, stride_w, pad_h, pad_w;
  int64_t Hph, Wph;           // pixels of one image in one phase
  int64_t M;                  // output pixel slots per image: (P - 1) * Wph + Q
  int64_t phase_pixels;       // N * Hph * Wph + slack, per stored phase
  std::vector<int> phase_index;  // [a * stride_w + b]: stored phase or -1
  int64_t phases = 0;
  int64_t taps, Cc, steps;    // steps = taps * Cc, B tiles per 16 channels
  std::vector<int64_t> step_offset;  // elements from pixel (n, m) to its A tile at step i
};

AmxPlan make_plan(const Conv2dShape& p) {
  AmxPlan g;
  g.N = p.N, g.C = p.C, g.H = p.H, g.W = p.W, g.K = p.K, g.P = p.P, g.Q = p.Q;
  g.stride_h = p.stride_h, g.stride_w = p.stride_w, g.pad_h = p.pad_h, g.pad_w = p.pad_w;
  g.Cp = (p.C + kTileK - 1) / kTileK * kTileK;
  g.Kt = (p.K + kTileN - 1) / kTileN;
  const int64_t Hp = p.H + 2 * p.pad_h, Wp = p.W + 2 * p.pad_w;
  g.Hph = (Hp + p.stride_h - 1) / p.stride_h;
  g.Wph = (Wp + p.stride_w - 1) / p.stride_w;
  g.M = (p.P - 1) * g.Wph + p.Q;
  // A block of 32 pixel slots starting below M reads at most 31 slots past
  // the last image's last pixel (its taps stay inside the phase image).
  g.phase_pixels = p.N * g.Hph * g.Wph + kBlockPixels;
  g.phase_index.assign(p.stride_h * p.stride_w, -1);
  for (int64_t r = 0; r < p.R; ++r) {
    for (int64_t s = 0; s < p.S; ++s) {
      int& idx = g.phase_index[(r * p.dilation_h % p.stride_h) * p.stride_w +
                               s * p.dilation_w % p.stride_w];
      if (idx < 0) idx = static_cast<int>(g.phases++);
    }
  }
  g.taps = p.R * p.S;
  g.Cc = g.Cp / kTileK;
  g.steps = g.taps * g.Cc;
  g.step_offset.resize(g.steps);
  for (int64_t r = 0; r < p.R; ++r) {
    for (int64_t s = 0; s < p.S; ++s) {
      const int64_t dr = r * p.dilation_h, ds = s * p.dilation_w;
      const int phase = g.phase_index[(dr % p.stride_h) * p.stride_w + ds % p.stride_w];
      const int64_t pixel =
          phase * g.phase_pixels + (dr / p.stride_h) * g.Wph + ds / p.stride_w;
      for (int64_t cc = 0; cc < g.Cc; ++cc)
        g.step_offset[(r * p.S + s) * g.Cc + cc] = pixel * g.Cp + cc * kTileK;
    }
  }
  return g;
}

// The padded, phase-split NHWC bf16 copy of `input` (any strides):
// [phase][N][Hph][Wph][Cp] + slack per phase, zero outside the image and
// past C.
at::Tensor phase_split_input(const at::Tensor& input, const AmxPlan& g) {
  const int64_t pixels = g.phases * g.phase_pixels;
  at::Tensor buffer = at::empty({pixels * g.Cp}, input.options().dtype(at::kBFloat16));
  BF16* dst = buffer.mutable_data_ptr<BF16>();
  for (int64_t ph = 0; ph < g.phases; ++ph) {  // the slack past each phase
    std::memset(static_cast<void*>(dst + ((ph + 1) * g.phase_pixels - kBlockPixels) * g.Cp), 0,
                sizeof(BF16) * kBlockPixels * g.Cp);
  }
  const BF16* src = input.const_data_ptr<BF16>();
  const int64_t sn = input.stride(0), sc = input.stride(1), sh = input.stride(2),
                sw = input.stride(3);
  const int64_t rows = g.Hph * g.stride_h;  // padded rows, rounded up to whole phases
  const int64_t Wt = g.Wph * g.stride_w;     // padded columns, likewise
  at::parallel_for(0, g.N * rows, grain_for(Wt * g.Cp), [&](int64_t begin, int64_t end) {
    std::vector<BF16> temp;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / rows, hp = item % rows;
      const int64_t a = hp % g.stride_h, i = hp / g.stride_h, h = hp - g.pad_h;
      auto phase_row = [&](int64_t b) -> BF16* {
        const int idx = g.phase_index[a * g.stride_w + b];
        return idx < 0 ? nullptr
                       : dst + (idx * g.phase_pixels + (n * g.Hph + i) * g.Wph) * g.Cp;
      };
      if (h < 0 || h >= g.H) {
        for (int64_t b = 0; b < g.stride_w; ++b) {
          if (BF16* d = phase_row(b)) std::fill(d, d + g.Wph * g.Cp, BF16(0.0f));
        }
        continue;
      }
      BF16* row;  // Wt padded pixels of Cp channels
      if (g.stride_w == 1) {
        row = phase_row(0);
        if (row == nullptr) continue;
      } else {
        bool used = false;
        for (int64_t b = 0; b < g.stride_w; ++b) used = used || phase_row(b) != nullptr;
        if (!used) continue;
        temp.resize(Wt * g.Cp);
        row = temp.data();
      }
      std::fill(row, row + g.pad_w * g.Cp, BF16(0.0f));
      std::fill(row + (g.pad_w + g.W) * g.Cp, row + Wt * g.Cp, BF16(0.0f));
      BF16* d = row + g.pad_w * g.Cp;
      if (g.Cp > g.C) {
        for (int64_t w = 0; w < g.W; ++w) std::fill(d + w * g.Cp + g.C, d + (w + 1) * g.Cp, BF16(0.0f));
      }
      const BF16* s = src + n * sn + h * sh;
      if (sc == 1) {  // channels_last rows
        for (int64_t w = 0; w < g.W; ++w) std::memcpy(d + w * g.Cp, s + w * sw, sizeof(BF16) * g.C);
      } else if (sw == 1) {  // NCHW rows: C x W transposed (widened and rounded back: exact)
        transpose_plane<float, BF16, BF16>(s, sc, g.C, g.W, d, g.Cp);
      } else {
        for (int64_t c = 0; c < g.C; ++c)
          for (int64_t w = 0; w < g.W; ++w) d[w * g.Cp + c] = s[c * sc + w * sw];
      }
      if (g.stride_w > 1) {
        for (int64_t b = 0; b < g.stride_w; ++b) {
          BF16* out = phase_row(b);
          if (out == nullptr) continue;
          for (int64_t j = 0; j < g.Wph; ++j)
            std::memcpy(out + j * g.Cp, row + (j * g.stride_w + b) * g.Cp, sizeof(BF16) * g.Cp);
        }
      }
    }
  });
  return buffer;
}

// Weights K x C x R x S (bf16, any strides) as B tiles:
// [Kt][tap][Cc][16 pairs][16 channels][2], zero past K and C.
at::Tensor pack_weight_tiles(const at::Tensor& weight, const AmxPlan& g) {
  at::Tensor packed = at::empty({g.Kt * g.steps * kBTileElements}, weight.options());
  BF16* dst = packed.mutable_data_ptr<BF16>();
  const BF16* src = weight.const_data_ptr<BF16>();
  const int64_t sk = weight.stride(0), sc = weight.stride(1), sr = weight.stride(2),
                ss = weight.stride(3), S = weight.size(3);
  const bool taps_contiguous = ss == 1 && sr == S;  // tap t at offset t
  // B tile row (pair i) of tile (kt, tap t, chunk cc)
  auto tile_row = [&](int64_t kt, int64_t t, int64_t cc, int64_t i) {
    return dst + ((kt * g.taps + t) * g.Cc + cc) * kBTileElements + i * 2 * kTileN;
  };
  at::parallel_for(0, g.Kt * g.Cc, grain_for(kBTileElements * g.taps), [&](int64_t begin, int64_t end) {
    __m512i v[16];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t kt = item / g.Cc, cc = item % g.Cc;
      const int64_t c_base = cc * kTileK;
      const int ks = static_cast<int>(std::min<int64_t>(kTileN, g.K - kt * kTileN));
      if (sc == 1) {
        // channels_last filters: per (k, tap) the channels are one run, each
        // 32-bit word one pair already; 16 filters x 16 pairs transposed.
        const int cs = static_cast<int>(std::min<int64_t>(kTileK, g.C - c_base));
        const __mmask32 m = cs >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << cs) - 1);
        for (int64_t t = 0; t < g.taps; ++t) {
          const int64_t off = (t / S) * sr + (t % S) * ss + c_base;
          for (int k = 0; k < 16; ++k) {
            v[k] = k < ks ? _mm512_maskz_loadu_epi16(m, src + (kt * kTileN + k) * sk + off)
                          : _mm512_setzero_si512();
          }
          transpose_words(v);
          for (int i = 0; i < 16; ++i) _mm512_storeu_si512(tile_row(kt, t, cc, i), v[i]);
        }
      } else if (taps_contiguous) {
        // per (k, channel) the taps are one run: 16 filters x up to 16 taps
        // of a channel pair, transposed to one row per tap.
        for (int i = 0; i < 16; ++i) {
          const int64_t c = c_base + 2 * i;
          for (int64_t t0 = 0; t0 < g.taps; t0 += 16) {
            const int count = static_cast<int>(std::min<int64_t>(16, g.taps - t0));
            for (int k = 0; k < 16; ++k) {
              const BF16* f = src + (kt * kTileN + k) * sk + t0;
              v[k] = k >= ks || c >= g.C
                         ? _mm512_setzero_si512()
                         : pair_words(f + c * sc, c + 1 < g.C ? f + (c + 1) * sc : nullptr, count);
            }
            transpose_words(v);
            for (int j = 0; j < count; ++j) _mm512_storeu_si512(tile_row(kt, t0 + j, cc, i), v[j]);
          }
        }
      } else {
        for (int64_t t = 0; t < g.taps; ++t) {
          const int64_t off = (t / S) * sr + (t % S) * ss;
          for (int i = 0; i < 16; ++i) {
            BF16* row = tile_row(kt, t, cc, i);
            for (int k = 0; k < kTileN; ++k) {
              for (int e = 0; e < 2; ++e) {
                const int64_t c = c_base + 2 * i + e;
                row[2 * k + e] = k < ks && c < g.C ? src[(kt * kTileN + k) * sk + c * sc + off]
                                                   : BF16(0.0f);
              }
            }
          }
        }
      }
    }
  });
  return packed;
}

// One block of MT x 16 output pixel slots x NT x 16 output channels over the
// whole reduction: accumulators tmm0 (pixels 0-15, channels 0-15), tmm1
// (0-15, 16-31), tmm2 (16-31, 0-15), tmm3 (16-31, 16-31); A tiles tmm4/5,
// B tiles tmm6/7. x: the block's first pixel slot (A tile i at
// x + step_offset[i]); w: the B tiles of its first 16 channels; out: float
// [32][32].
template <int MT, int NT>
__attribute__((noinline)) void tile_block(const BF16* x, const int64_t* step_offset,
                                          int64_t steps, int64_t a_stride_bytes,
                                          int64_t a_second, const BF16* w, int64_t w_second,
                                          float* out) {
  CONV_EXT_TILE_ZERO(0);
  if constexpr (NT == 2) CONV_EXT_TILE_ZERO(1);
  if constexpr (MT == 2) CONV_EXT_TILE_ZERO(2);
  if constexpr (MT == 2 && NT == 2) CONV_EXT_TILE_ZERO(3);
  for (int64_t i = 0; i < steps; ++i) {
    const BF16* a = x + step_offset[i];
    const BF16* b = w + i * kBTileElements;
    CONV_EXT_TILE_LOAD(4, a, a_stride_bytes);
    CONV_EXT_TILE_LOAD(6, b, 2 * kTileN * sizeof(BF16));
    if constexpr (NT == 2) CONV_EXT_TILE_LOAD(7, b + w_second, 2 * kTileN * sizeof(BF16));
    CONV_EXT_TILE_DP(0, 4, 6);
    if constexpr (NT == 2) CONV_EXT_TILE_DP(1, 4, 7);
    if constexpr (MT == 2) {
      CONV_EXT_TILE_LOAD(5, a + a_second, a_stride_bytes);
      CONV_EXT_TILE_DP(2, 5, 6);
      if constexpr (NT == 2) CONV_EXT_TILE_DP(3, 5, 7);
    }
  }
  constexpr int64_t row_bytes = kBlockChannels * sizeof(float);
  CONV_EXT_TILE_STORE(0, out, row_bytes);
  if constexpr (NT == 2) CONV_EXT_TILE_STORE(1, out + kTileN, row_bytes);
  if constexpr (MT == 2) CONV_EXT_TILE_STORE(2, out + kTileRows * kBlockChannels, row_bytes);
  if constexpr (MT == 2 && NT == 2) {
    CONV_EXT_TILE_STORE(3, out + kTileRows * kBlockChannels + kTileN, row_bytes);
  }
}

using TileBlockFn = void (*)(const BF16*, const int64_t*, int64_t, int64_t, int64_t, const BF16*,
                             int64_t, float*);
constexpr TileBlockFn kTileBlocks[2][2] = {{&tile_block<1, 1>, &tile_block<1, 2>},
                                           {&tile_block<2, 1>, &tile_block<2, 2>}};

// Packed weights up to this size are read by every pixel block's items
// (half of a 2 MB L2).
constexpr int64_t kL2WeightBytes = int64_t{1} << 20;

// Up to this many 32-pixel blocks per work item (fewer where the problem
// would leave a thread fewer than 4 items).
constexpr int64_t kItemBlocks = 4;

void forward_tiles(const BF16* x, const BF16* w, const float* bias, BF16* out, bool nchw,
                   const AmxPlan& g) {
  const int64_t KG = (g.Kt + 1) / 2;                        // groups of 32 channels
  const int64_t blocks = (g.M + kBlockPixels - 1) / kBlockPixels;  // per image
  const int64_t wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t per_item =
      std::clamp<int64_t>(KG * g.N * blocks / std::max<int64_t>(1, wanted), 1, kItemBlocks);
  const int64_t chunks = (blocks + per_item - 1) / per_item;  // items per (group, image)
  const int64_t PQ = g.P * g.Q;
  const int64_t image_pixels = g.Hph * g.Wph;
  const int64_t a_stride_bytes = g.Cp * static_cast<int64_t>(sizeof(BF16));
  // Item order. A channels_last result takes the channel groups innermost
  // (a thread's consecutive items: one pixel block, all groups), so each
  // pixel's K channels are stored together; with the groups outermost its
  // lines were stored 64 bytes at a time K * 2 bytes apart, pass after pass
  // (1x1 64 -> 256 @56, one thread: 165 -> 311 GFLOP/s). Only where all
  // packed weights stay in L2 (each item reads its group's). NCHW results
  // keep the groups outermost: their transposed stores run along the planes
  // (the same 1x1 with groups innermost: 215 -> 109).
  const bool groups_inner =
      !nchw && g.Kt * g.steps * kBTileElements * static_cast<int64_t>(sizeof(BF16)) <= kL2WeightBytes;
  at::parallel_for(0, KG * g.N * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(per_item * kBlockPixels * kBlockChannels);
    TileScope tiles;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t kg = groups_inner ? item % KG : item / (g.N * chunks);
      const int64_t n = groups_inner ? item / (KG * chunks) : item / chunks % g.N;
      const int64_t chunk = groups_inner ? item / KG % chunks : item % chunks;
      const int nt = static_cast<int>(std::min<int64_t>(2, g.Kt - 2 * kg));
      const int64_t k0 = kg * kBlockChannels;
      const int64_t channels = std::min<int64_t>(nt * kTileN, g.K - k0);
      const BF16* wk = w + 2 * kg * g.steps * kBTileElements;
      const int64_t m_begin = chunk * per_item * kBlockPixels;
      const int64_t m_end = std::min(g.M, m_begin + per_item * kBlockPixels);
      for (int64_t m0 = m_begin; m0 < m_end; m0 += kBlockPixels) {
        const int mt = m_end - m0 > kTileRows ? 2 : 1;
        kTileBlocks[mt - 1][nt - 1](x + (n * image_pixels + m0) * g.Cp, g.step_offset.data(),
                                    g.steps, a_stride_bytes, kTileRows * g.Cp, wk,
                                    g.steps * kBTileElements,
                                    scratch.data() + (m0 - m_begin) * kBlockChannels);
      }
      // Bias, then one rounding into the output, output row by output row.
      for (int64_t m = m_begin; m < m_end;) {
        const int64_t oh = m / g.Wph, ow = m % g.Wph;
        if (ow >= g.Q) {  // dropped slots between rows
          m += g.Wph - ow;
          continue;
        }
        const int64_t run = std::min(g.Q - ow, m_end - m);
        float* rows = scratch.data() + (m - m_begin) * kBlockChannels;
        if (nchw) {
          for (int64_t u = 0; u < run; ++u) {
            for (int j = 0; j < nt; ++j) {
              float* r = rows + u * kBlockChannels + j * kTileN;
              _mm512_storeu_ps(r, _mm512_add_ps(_mm512_loadu_ps(r), _mm512_loadu_ps(bias + k0 + j * kTileN)));
            }
          }
          transpose_plane<float, float, BF16>(rows, kBlockChannels, run, channels,
                                              out + (n * g.K + k0) * PQ + oh * g.Q + ow, PQ);
        } else {  // the bias added on the way out (the same sum, one pass less)
          __m512 b[2];
          for (int j = 0; j < nt; ++j) b[j] = _mm512_loadu_ps(bias + k0 + j * kTileN);
          for (int64_t u = 0; u < run; ++u) {
            BF16* o = out + ((n * g.P + oh) * g.Q + ow + u) * g.K + k0;
            for (int j = 0; j < nt; ++j) {
              const int left = static_cast<int>(std::min<int64_t>(kTileN, channels - j * kTileN));
              const __m512 v = _mm512_add_ps(_mm512_loadu_ps(rows + u * kBlockChannels + j * kTileN), b[j]);
              simd::store_upto<float, BF16>(o + j * kTileN, v, left);
            }
          }
        }
        m += run;
      }
    }
  });
}

}  // namespace

at::Tensor forward_bf16(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                        const Conv2dShape& p, at::MemoryFormat format) {
  TORCH_INTERNAL_ASSERT(input.scalar_type() == at::kBFloat16 &&
                        weight.scalar_type() == at::kBFloat16 && p.groups == 1);
  const AmxPlan g = make_plan(p);
  const at::Tensor w = pack_weight_tiles(weight, g);
  at::Tensor b = at::zeros({g.Kt * kTileN}, input.options().dtype(at::kFloat));
  if (bias.defined()) b.narrow(0, 0, p.K).copy_(bias);
  const bool nchw = format != at::MemoryFormat::ChannelsLast;
  at::Tensor out = at::empty(p.output_sizes(), input.options().memory_format(
                                                   nchw ? at::MemoryFormat::Contiguous
                                                        : at::MemoryFormat::ChannelsLast));
  // A channels_last 1x1 problem at unit stride without padding, its channels
  // filling whole A tiles, is its own phase-split copy: its images are read
  // in place, all but the last (whose last pixel block reads up to 31 slots
  // past it), which goes through the copy. The same tiles, the same sums:
  // bitwise the result of the copy. (1x1 256->64 @56, one thread: the copy
  // was ~45% of the call.)
  const bool in_place = p.N >= 2 && g.phases == 1 && p.R == 1 && p.S == 1 && p.pad_h == 0 &&
                        p.pad_w == 0 && p.is_unit_stride() && g.Cp == p.C &&
                        input.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (in_place) {
    Conv2dShape head = p, last = p;
    head.N = p.N - 1, last.N = 1;
    const AmxPlan last_plan = make_plan(last);
    const at::Tensor x = phase_split_input(input.narrow(0, p.N - 1, 1), last_plan);
    forward_tiles(input.const_data_ptr<BF16>(), w.const_data_ptr<BF16>(),
                  b.const_data_ptr<float>(), out.mutable_data_ptr<BF16>(), nchw, make_plan(head));
    forward_tiles(x.const_data_ptr<BF16>(), w.const_data_ptr<BF16>(), b.const_data_ptr<float>(),
                  out.mutable_data_ptr<BF16>() + (p.N - 1) * p.K * p.P * p.Q, nchw, last_plan);
    return out;
  }
  const at::Tensor x = phase_split_input(input, g);
  forward_tiles(x.const_data_ptr<BF16>(), w.const_data_ptr<BF16>(), b.const_data_ptr<float>(),
                out.mutable_data_ptr<BF16>(), nchw, g);
  return out;
}


// ---------------------------------------------------------------------------
// bfloat16 grad-weight on AMX tiles (conv2d_cpu_amx.h: use_amx_backward_weight).
//
// grad_weight[k][c][r][s] = sum over (n, p, q) of gy[n][k][p][q] * x at the
// tap, as tiles C[16 c][16 k] += A[16 c][32 pixels] * B[16 pixel pairs][16 k][2]:
//   * A (the input): phase-split, zero-padded planes [phase][N][Cp][plane],
//     one plane per (image, channel) in the forward's pixel slots
//     m = oh * Wph + ow (conv2d_cpu_kernels_amx.cpp's phases above), so
//     every tap is a shift of the plane: an A tile is 16 channel planes at
//     one offset (row stride: the plane), for any stride and dilation.
//     `plane` = Hph * Wph + slack (zero), a multiple of 32.
//   * B (grad_output): pixel pairs [N][Mp / 2][Kp][2], the pair layout
//     tdpbf16ps reads, zero at the dropped slots (ow >= Q) and past M, so
//     those slots add exact zeros (the A values they meet are finite
//     padded-input values; a non-finite input value there would give NaN).
//   * accumulators: 2 x 2 tiles (32 c x 32 k) per work item (k group, c
//     group, tap), over blocks of pixel steps (32 slots of one image each),
//     stored to the item's float block after each pixel block and loaded
//     before the next (a thread runs each block over all its items of one
//     k group, so their tiles stay in L1): each element is reduced in the
//     one order
//     (images, then slots in steps of 32, each step one tdpbf16ps),
//     whatever the threads. The items are split over the threads; after
//     the last pixel block each item's block is rounded once to bf16 into
//     the [Kp][taps][Cp] (channels_last) result.
namespace {

constexpr int64_t kWgSlack = 32;  // zero slots past each plane: steps read up to 31 past M

// Short bf16 runs (rows of 7-56 pixels): vectors of 32 and a masked tail,
// no library call per row.
inline __mmask32 first_lanes(int64_t n) {
  return n >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << n) - 1);
}
inline void copy_run(BF16* d, const BF16* s, int64_t n) {
  for (; n >= 32; n -= 32, d += 32, s += 32) _mm512_storeu_si512(d, _mm512_loadu_si512(s));
  if (n > 0) _mm512_mask_storeu_epi16(d, first_lanes(n), _mm512_maskz_loadu_epi16(first_lanes(n), s));
}
inline void zero_run(BF16* d, int64_t n) {
  for (; n >= 32; n -= 32, d += 32) _mm512_storeu_si512(d, _mm512_setzero_si512());
  if (n > 0) _mm512_mask_storeu_epi16(d, first_lanes(n), _mm512_setzero_si512());
}

struct WgradPlan {
  AmxPlan g;             // the forward's phases (Hph, Wph, M, phase_index, phases, taps)
  int64_t Kp, Kg, Cg;    // K padded to 32, groups of 32 output / input channels
  int64_t plane;         // elements per (phase, n, c) plane
  int64_t Mp;            // slots per image, padded to 32
  int64_t chunks;        // steps per image: Mp / 32
  std::vector<int64_t> tap_offset;  // [tap]: phase plane base + shift
};

WgradPlan make_wgrad_plan(const Conv2dShape& p) {
  WgradPlan w;
  w.g = make_plan(p);
  const AmxPlan& g = w.g;
  w.Kp = (p.K + kBlockChannels - 1) / kBlockChannels * kBlockChannels;
  w.Kg = w.Kp / kBlockChannels;
  w.Cg = g.Cp / kBlockChannels;
  w.plane = (g.Hph * g.Wph + kWgSlack + 31) / 32 * 32;
  w.Mp = (g.M + kBlockPixels - 1) / kBlockPixels * kBlockPixels;
  w.chunks = w.Mp / kBlockPixels;
  w.tap_offset.resize(g.taps);
  for (int64_t r = 0; r < p.R; ++r) {
    for (int64_t s = 0; s < p.S; ++s) {
      const int64_t dr = r * p.dilation_h, ds = s * p.dilation_w;
      const int phase = g.phase_index[(dr % p.stride_h) * p.stride_w + ds % p.stride_w];
      w.tap_offset[r * p.S + s] =
          phase * p.N * g.Cp * w.plane + (dr / p.stride_h) * g.Wph + ds / p.stride_w;
    }
  }
  return w;
}

// The input (bf16, any strides) as phase-split zero-padded planes
// [phase][N][Cp][plane], zero past C and in each plane's slack.
at::Tensor wgrad_input_planes(const at::Tensor& input, const WgradPlan& w) {
  const AmxPlan& g = w.g;
  at::Tensor buffer = at::empty({g.phases * g.N * g.Cp * w.plane}, input.options());
  BF16* dst = buffer.mutable_data_ptr<BF16>();
  const BF16* src = input.const_data_ptr<BF16>();
  const int64_t sn = input.stride(0), sc = input.stride(1), sh = input.stride(2),
                sw = input.stride(3);
  const int64_t used = g.Hph * g.Wph;
  const int64_t rows = g.Hph * g.stride_h;  // padded rows, rounded up to whole phases
  const int64_t Wt = g.Wph * g.stride_w;     // padded columns, likewise
  at::parallel_for(0, g.N * rows, grain_for(Wt * g.Cp), [&](int64_t begin, int64_t end) {
    std::vector<BF16> temp;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / rows, hp = item % rows;
      const int64_t a = hp % g.stride_h, i = hp / g.stride_h, h = hp - g.pad_h;
      // channel 0's row i of phase (a, b) in image n (channel c: + c * plane)
      auto phase_row = [&](int64_t b) -> BF16* {
        const int idx = g.phase_index[a * g.stride_w + b];
        return idx < 0 ? nullptr : dst + ((idx * g.N + n) * g.Cp) * w.plane + i * g.Wph;
      };
      if (i == g.Hph - 1) {  // the slack after the last row
        for (int64_t b = 0; b < g.stride_w; ++b) {
          if (BF16* d = phase_row(b)) {
            for (int64_t c = 0; c < g.Cp; ++c) {
              zero_run(d + c * w.plane + g.Wph, w.plane - used);
            }
          }
        }
      }
      if (h < 0 || h >= g.H) {
        for (int64_t b = 0; b < g.stride_w; ++b) {
          if (BF16* d = phase_row(b)) {
            for (int64_t c = 0; c < g.Cp; ++c) zero_run(d + c * w.plane, g.Wph);
          }
        }
        continue;
      }
      BF16* row;  // [Cp] rows of Wt padded columns, row stride row_stride
      int64_t row_stride;
      if (g.stride_w == 1) {
        row = phase_row(0);
        if (row == nullptr) continue;
        row_stride = w.plane;
      } else {
        bool any = false;
        for (int64_t b = 0; b < g.stride_w; ++b) any = any || phase_row(b) != nullptr;
        if (!any) continue;
        temp.resize(g.Cp * Wt);
        row = temp.data();
        row_stride = Wt;
      }
      for (int64_t c = 0; c < g.C; ++c) {
        BF16* d = row + c * row_stride;
        zero_run(d, g.pad_w);
        zero_run(d + g.pad_w + g.W, Wt - g.pad_w - g.W);
      }
      for (int64_t c = g.C; c < g.Cp; ++c) zero_run(row + c * row_stride, Wt);
      const BF16* s = src + n * sn + h * sh;
      BF16* d = row + g.pad_w;
      if (sw == 1) {  // NCHW rows
        for (int64_t c = 0; c < g.C; ++c) copy_run(d + c * row_stride, s + c * sc, g.W);
      } else if (sc == 1) {  // channels_last: W x C transposed (widened and rounded back: exact)
        transpose_plane<float, BF16, BF16>(s, sw, g.W, g.C, d, row_stride);
      } else {
        for (int64_t c = 0; c < g.C; ++c)
          for (int64_t x = 0; x < g.W; ++x) d[c * row_stride + x] = s[c * sc + x * sw];
      }
      if (g.stride_w == 2) {  // even and odd columns, 32 of each per 2 vectors
        BF16* even = phase_row(0);
        BF16* odd = phase_row(1);
        const __m512i even_idx = _mm512_set_epi16(62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40,
                                                  38, 36, 34, 32, 30, 28, 26, 24, 22, 20, 18, 16,
                                                  14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i odd_idx = _mm512_add_epi16(even_idx, _mm512_set1_epi16(1));
        for (int64_t c = 0; c < g.Cp; ++c) {
          const BF16* in = row + c * row_stride;
          int64_t j = 0;
          for (; j + 32 <= g.Wph; j += 32) {
            const __m512i lo = _mm512_loadu_si512(in + 2 * j);
            const __m512i hi = _mm512_loadu_si512(in + 2 * j + 32);
            if (even) _mm512_storeu_si512(even + c * w.plane + j, _mm512_permutex2var_epi16(lo, even_idx, hi));
            if (odd) _mm512_storeu_si512(odd + c * w.plane + j, _mm512_permutex2var_epi16(lo, odd_idx, hi));
          }
          if (j < g.Wph) {  // the last n < 32 of each: 2n inputs, masked
            const int n = static_cast<int>(g.Wph - j);
            const __m512i lo = _mm512_maskz_loadu_epi16(first_lanes(2 * n), in + 2 * j);
            const __m512i hi =
                _mm512_maskz_loadu_epi16(first_lanes(std::max(0, 2 * n - 32)), in + 2 * j + 32);
            if (even) {
              _mm512_mask_storeu_epi16(even + c * w.plane + j, first_lanes(n),
                                       _mm512_permutex2var_epi16(lo, even_idx, hi));
            }
            if (odd) {
              _mm512_mask_storeu_epi16(odd + c * w.plane + j, first_lanes(n),
                                       _mm512_permutex2var_epi16(lo, odd_idx, hi));
            }
          }
        }
      } else if (g.stride_w > 1) {
        for (int64_t b = 0; b < g.stride_w; ++b) {
          BF16* out = phase_row(b);
          if (out == nullptr) continue;
          for (int64_t c = 0; c < g.Cp; ++c) {
            const BF16* in = row + c * row_stride + b;
            BF16* o = out + c * w.plane;
            for (int64_t j = 0; j < g.Wph; ++j) o[j] = in[j * g.stride_w];
          }
        }
      }
    }
  });
  return buffer;
}

// grad_output (bf16, any strides) as pixel pairs [N][Mp / 2][Kp][2]: word
// (pair i, k) = (gy at slot 2i, gy at slot 2i + 1), zero at dropped slots
// and past K.
at::Tensor wgrad_output_pairs(const at::Tensor& gy, const WgradPlan& w) {
  const AmxPlan& g = w.g;
  at::Tensor buffer = at::empty({g.N * w.Mp * w.Kp}, gy.options());
  BF16* dst = buffer.mutable_data_ptr<BF16>();
  const BF16* src = gy.const_data_ptr<BF16>();
  const int64_t sn = gy.stride(0), sk = gy.stride(1), sh = gy.stride(2), sw = gy.stride(3);
  const int64_t groups = w.Kp / kTileN;  // of 16 output channels
  const int64_t pairs = w.Mp / 2;
  if (sk == 1) {
    // channels_last: the K channels of a slot are one run; per pair of
    // slots all the 16-channel groups, 2 masked loads each (pair_words).
    at::parallel_for(0, g.N * w.chunks, grain_for(kBlockPixels * w.Kp), [&](int64_t begin, int64_t end) {
      alignas(64) static const BF16 zeros[kTileN] = {};
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / w.chunks, m_begin = (item % w.chunks) * kBlockPixels;
        int64_t oh = m_begin / g.Wph, ow = m_begin % g.Wph;  // of slot m, counted along
        const BF16* s = src + n * sn;
        BF16* out = dst + (n * w.Mp + m_begin) * w.Kp;  // pair i at out + i * 2 * Kp
        for (int64_t i = 0; i < kBlockPixels / 2; ++i) {
          const BF16* slot[2];
          for (int e = 0; e < 2; ++e) {
            slot[e] = oh < g.P && ow < g.Q ? s + oh * sh + ow * sw : nullptr;
            if (++ow == g.Wph) ow = 0, ++oh;
          }
          BF16* o = out + i * 2 * w.Kp;
          for (int64_t k0 = 0; k0 < w.Kp; k0 += kTileN) {
            const int count = static_cast<int>(std::clamp<int64_t>(g.K - k0, 0, kTileN));
            const __m512i v = count == 0 || (slot[0] == nullptr && slot[1] == nullptr)
                                  ? _mm512_setzero_si512()
                                  : pair_words(slot[0] ? slot[0] + k0 : zeros,
                                               slot[1] ? slot[1] + k0 : nullptr, count);
            _mm512_storeu_si512(o + 2 * k0, v);
          }
        }
      }
    });
    return buffer;
  }
  at::parallel_for(0, g.N * groups, grain_for(w.Mp * kTileN), [&](int64_t begin, int64_t end) {
    std::vector<BF16> temp;
    __m512i v[16];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / groups, k0 = (item % groups) * kTileN;
      const int count = static_cast<int>(std::clamp<int64_t>(g.K - k0, 0, kTileN));
      BF16* out = dst + n * w.Mp * w.Kp + 2 * k0;  // pair i at out + i * 2 * Kp
      if (count == 0) {
        for (int64_t i = 0; i < pairs; ++i) _mm512_storeu_si512(out + i * 2 * w.Kp, _mm512_setzero_si512());
        continue;
      }
      const BF16* s = src + n * sn + k0 * sk;
      // Other layouts: 16 slot rows [16][Mp] (zero at dropped slots), then
      // 32 slots of 16 channels transposed per step.
      temp.resize(kTileN * w.Mp);
      for (int kk = 0; kk < kTileN; ++kk) {
        BF16* t = temp.data() + kk * w.Mp;
        if (kk >= count) {
          zero_run(t, w.Mp);
          continue;
        }
        for (int64_t oh = 0; oh < g.P; ++oh) {
          BF16* d = t + oh * g.Wph;
          const BF16* r = s + kk * sk + oh * sh;
          if (sw == 1) {
            copy_run(d, r, g.Q);
          } else {
            for (int64_t q = 0; q < g.Q; ++q) d[q] = r[q * sw];
          }
          zero_run(d + g.Q, oh + 1 < g.P ? g.Wph - g.Q : w.Mp - g.M);  // dropped slots
        }
      }
      for (int64_t j = 0; j < w.chunks; ++j) {
        for (int kk = 0; kk < kTileN; ++kk) v[kk] = _mm512_loadu_si512(temp.data() + kk * w.Mp + j * kBlockPixels);
        transpose_words(v);
        for (int i = 0; i < 16; ++i) _mm512_storeu_si512(out + (j * 16 + i) * 2 * w.Kp, v[i]);
      }
    }
  });
  return buffer;
}

// acc (a [32 c][32 k] float block) += the steps' products: tmm0 (c 0-15,
// k 0-15), tmm1 (c 0-15, k 16-31), tmm2 (c 16-31, k 0-15), tmm3 (c 16-31,
// k 16-31); A tiles tmm4/5, B tiles tmm6/7. Step i: A at a + a_off[i]
// (second 16 channels + a_second), B at b + b_off[i] (second 16 k + 32).
__attribute__((noinline)) void wgrad_tiles(const BF16* a, const BF16* b, const int64_t* a_off,
                                           const int64_t* b_off, int64_t steps,
                                           int64_t a_stride_bytes, int64_t a_second,
                                           int64_t b_stride_bytes, float* acc, bool first) {
  constexpr int64_t row_bytes = kBlockChannels * sizeof(float);
  if (first) {
    CONV_EXT_TILE_ZERO(0);
    CONV_EXT_TILE_ZERO(1);
    CONV_EXT_TILE_ZERO(2);
    CONV_EXT_TILE_ZERO(3);
  } else {
    CONV_EXT_TILE_LOAD(0, acc, row_bytes);
    CONV_EXT_TILE_LOAD(1, acc + kTileN, row_bytes);
    CONV_EXT_TILE_LOAD(2, acc + kTileRows * kBlockChannels, row_bytes);
    CONV_EXT_TILE_LOAD(3, acc + kTileRows * kBlockChannels + kTileN, row_bytes);
  }
  for (int64_t i = 0; i < steps; ++i) {
    const BF16* ai = a + a_off[i];
    const BF16* bi = b + b_off[i];
    CONV_EXT_TILE_LOAD(4, ai, a_stride_bytes);
    CONV_EXT_TILE_LOAD(6, bi, b_stride_bytes);
    CONV_EXT_TILE_LOAD(7, bi + 2 * kTileN, b_stride_bytes);
    CONV_EXT_TILE_DP(0, 4, 6);
    CONV_EXT_TILE_DP(1, 4, 7);
    CONV_EXT_TILE_LOAD(5, ai + a_second, a_stride_bytes);
    CONV_EXT_TILE_DP(2, 5, 6);
    CONV_EXT_TILE_DP(3, 5, 7);
  }
  CONV_EXT_TILE_STORE(0, acc, row_bytes);
  CONV_EXT_TILE_STORE(1, acc + kTileN, row_bytes);
  CONV_EXT_TILE_STORE(2, acc + kTileRows * kBlockChannels, row_bytes);
  CONV_EXT_TILE_STORE(3, acc + kTileRows * kBlockChannels + kTileN, row_bytes);
}

// Pixel steps per block, and items per group (below). With taps: blocks of
// 8 steps, an item's A and B tiles of a block (4 KB a step) stay in L1 for
// the next items (the same B tiles, the A tiles of the next taps shifted),
// groups of 128 items; single thread, N=8, against blocks of about 768 KB of
// operands and one group: r50_08 3.3-3.6 ms against 4.0-4.2, r50_17 2.4
// against 2.7. 1x1: nothing shared but the B tiles, and each block ends
// with 4 tile stores and loads that wait for the tile unit to drain: blocks
// of about 768 KB of operands (both operands' 32-pixel steps, all channels,
// in L2 for all the items), one group (r50_19 2.8-3.0 ms against 3.3 with
// the 3x3 settings, r50_22 2.2 against 2.6).
constexpr int64_t kWgradGroupItems = 128;

int64_t wgrad_block_steps(int64_t taps, int64_t Cp, int64_t Kp) {
  if (taps > 1) return 8;
  const int64_t step_bytes = (Cp + Kp) * kBlockPixels * static_cast<int64_t>(sizeof(BF16));
  return std::clamp<int64_t>(768 * 1024 / step_bytes, 4, 256);
}

}  // namespace

at::Tensor backward_weight_bf16(const at::Tensor& grad_output, const at::Tensor& input,
                                const Conv2dShape& p, at::MemoryFormat format) {
  TORCH_INTERNAL_ASSERT(input.scalar_type() == at::kBFloat16 &&
                        grad_output.scalar_type() == at::kBFloat16 && p.groups == 1);
  const WgradPlan w = make_wgrad_plan(p);
  const AmxPlan& g = w.g;
  const at::Tensor xa = wgrad_input_planes(input, w);
  const at::Tensor gb = wgrad_output_pairs(grad_output, w);
  const BF16* x = xa.const_data_ptr<BF16>();
  const BF16* gy = gb.const_data_ptr<BF16>();
  // Steps: (image n, slots j * 32 ...), in that order.
  const int64_t steps = g.N * w.chunks;
  std::vector<int64_t> a_off(steps), b_off(steps);
  for (int64_t n = 0; n < g.N; ++n) {
    for (int64_t j = 0; j < w.chunks; ++j) {
      a_off[n * w.chunks + j] = n * g.Cp * w.plane + j * kBlockPixels;
      b_off[n * w.chunks + j] = (n * w.Mp + j * kBlockPixels) * w.Kp;
    }
  }
  const int64_t block_steps = wgrad_block_steps(g.taps, g.Cp, w.Kp);
  const int64_t group_items = g.taps > 1 ? kWgradGroupItems : std::numeric_limits<int64_t>::max();
  // Items (k group, c group, tap), taps innermost (they share the B tiles).
  const int64_t items = w.Kg * w.Cg * g.taps;
  constexpr int64_t kBlock = int64_t{kBlockChannels} * kBlockChannels;
  at::Tensor acc = at::empty({items * kBlock}, input.options().dtype(at::kFloat));
  float* accp = acc.mutable_data_ptr<float>();
  // The result: an NCHW result with taps [Kp][Cp][taps], written from the
  // float blocks after the tiles (each (k, c) takes all the taps' blocks);
  // else [Kp][taps][Cp] (channels_last, and 1x1 NCHW), written by each
  // thread after its tiles. Narrowed at the end.
  const bool nchw_out = format != at::MemoryFormat::ChannelsLast && g.taps > 1;
  at::Tensor packed = at::empty(nchw_out ? std::vector<int64_t>{w.Kp, g.Cp, g.taps}
                                         : std::vector<int64_t>{w.Kp, g.taps, g.Cp},
                                input.options());
  BF16* out = packed.mutable_data_ptr<BF16>();
  const int64_t a_stride_bytes = w.plane * static_cast<int64_t>(sizeof(BF16));
  const int64_t b_stride_bytes = 2 * w.Kp * static_cast<int64_t>(sizeof(BF16));
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    TileScope tiles;
    // The thread's items in groups (with taps: up to kWgradGroupItems, their
    // float blocks, 4 KB each, stay in L2; 1x1: all), each group over all
    // the pixel blocks: in a block, the B tiles of a k group stay in L1 for
    // its items, the A tiles of a c group for its taps, the block's operands
    // in L2 for the group.
    for (int64_t g0 = begin; g0 < end;) {
      const int64_t g1 = g0 + std::min(group_items, end - g0);
      for (int64_t s0 = 0; s0 < steps; s0 += block_steps) {
        const int64_t count = std::min(block_steps, steps - s0);
        for (int64_t item = g0; item < g1; ++item) {
          const int64_t kg = item / (w.Cg * g.taps), cg = item / g.taps % w.Cg, t = item % g.taps;
          wgrad_tiles(x + w.tap_offset[t] + cg * kBlockChannels * w.plane,
                      gy + 2 * kg * kBlockChannels, a_off.data() + s0, b_off.data() + s0, count,
                      a_stride_bytes, kTileRows * w.plane, b_stride_bytes, accp + item * kBlock,
                      s0 == 0);
        }
      }
      g0 = g1;
    }
    if (nchw_out) return;
    // One rounding: block [32 c][32 k] -> out[k][t][c].
    for (int64_t item = begin; item < end; ++item) {
      const int64_t kg = item / (w.Cg * g.taps), cg = item / g.taps % w.Cg, t = item % g.taps;
      transpose_plane<float, float, BF16>(
          accp + item * kBlock, kBlockChannels, kBlockChannels, kBlockChannels,
          out + (kg * kBlockChannels * g.taps + t) * g.Cp + cg * kBlockChannels, g.taps * g.Cp);
    }
  });
  if (nchw_out) {
    // One rounding into out[k][c][t], per (k group, c group): the taps'
    // blocks transposed to [t][k][c], then per k the [taps][32 c] rows
    // transposed into the 32 x taps run of the result.
    at::parallel_for(0, w.Kg * w.Cg, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> blocks(g.taps * kBlock);
      for (int64_t pair = begin; pair < end; ++pair) {
        const int64_t kg = pair / w.Cg, cg = pair % w.Cg;
        for (int64_t t = 0; t < g.taps; ++t) {
          transpose_plane<float, float, float>(accp + (pair * g.taps + t) * kBlock, kBlockChannels,
                                               kBlockChannels, kBlockChannels,
                                               blocks.data() + t * kBlock, kBlockChannels);
        }
        for (int64_t k = 0; k < kBlockChannels; ++k) {
          transpose_plane<float, float, BF16>(
              blocks.data() + k * kBlockChannels, kBlock, g.taps, kBlockChannels,
              out + ((kg * kBlockChannels + k) * g.Cp + cg * kBlockChannels) * g.taps, g.taps);
        }
      }
    });
    return packed.view({w.Kp, g.Cp, p.R, p.S}).narrow(0, 0, p.K).narrow(1, 0, p.C).contiguous();
  }
  const at::Tensor result = packed.view({w.Kp, p.R, p.S, g.Cp})
                                .permute({0, 3, 1, 2})
                                .narrow(0, 0, p.K)
                                .narrow(1, 0, p.C);
  return result.contiguous(format == at::MemoryFormat::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                                    : at::MemoryFormat::Contiguous);
}

}  // namespace amx
}  // namespace cpu
}  // namespace conv_ext

#else  // not x86-64: amx_supported() is false, nothing calls this

namespace conv_ext {
namespace cpu {
namespace amx {
at::Tensor forward_bf16(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const Conv2dShape&, at::MemoryFormat) {
  TORCH_CHECK(false, "conv_ext: the AMX kernels exist on x86-64 only");
}
at::Tensor backward_weight_bf16(const at::Tensor&, const at::Tensor&, const Conv2dShape&,
                                at::MemoryFormat) {
  TORCH_CHECK(false, "conv_ext: the AMX kernels exist on x86-64 only");
}
}  // namespace amx
}  // namespace cpu
}  // namespace conv_ext

#endif
