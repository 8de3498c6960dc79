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
              if (left == kTileN) {
                simd::Stored<float, BF16>::store(o + j * kTileN, v);
              } else {
                simd::Stored<float, BF16>::store_partial(o + j * kTileN, v, left);
              }
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
  const at::Tensor x = phase_split_input(input, g);
  const at::Tensor w = pack_weight_tiles(weight, g);
  at::Tensor b = at::zeros({g.Kt * kTileN}, input.options().dtype(at::kFloat));
  if (bias.defined()) b.narrow(0, 0, p.K).copy_(bias);
  const bool nchw = format != at::MemoryFormat::ChannelsLast;
  at::Tensor out = at::empty(p.output_sizes(), input.options().memory_format(
                                                   nchw ? at::MemoryFormat::Contiguous
                                                        : at::MemoryFormat::ChannelsLast));
  forward_tiles(x.const_data_ptr<BF16>(), w.const_data_ptr<BF16>(), b.const_data_ptr<float>(),
                out.mutable_data_ptr<BF16>(), nchw, g);
  return out;
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
}  // namespace amx
}  // namespace cpu
}  // namespace conv_ext

#endif
