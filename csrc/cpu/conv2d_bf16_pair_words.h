// bf16 channel pairs as 32-bit words: the operand layout that both
// vdpbf16ps (conv2d_cpu_kernels_avx512bf16.cpp) and the AMX-BF16 B tiles
// (conv2d_cpu_kernels_amx.cpp) read, built by their weight packers.
// Compiled per ISA (namespace CONV_EXT_ISA, conv2d_cpu_isa.h); AVX-512BW only.
#pragma once

// (c10::BFloat16 and the intrinsics come with conv2d_cpu_isa_prelude.h)
#include "conv2d_layout_kernels.h"
#include "simd.h"

#if defined(__AVX512BW__)
namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// v[i][j] <- v[j][i] for 16 vectors of 16 32-bit words (channel pairs).
inline void transpose_words(__m512i* v) {
  simd::Vec<float>::type f[16];
  for (int i = 0; i < 16; ++i) f[i] = _mm512_castsi512_ps(v[i]);
  transpose_square<float>(f);
  for (int i = 0; i < 16; ++i) v[i] = _mm512_castps_si512(f[i]);
}

// 32-bit words: bf16 of channel pair (c, c + 1) of `count` (<= 16) taps in
// a row from two rows of taps (lo: channel c, hi: channel c + 1 or null).
inline __m512i pair_words(const c10::BFloat16* lo, const c10::BFloat16* hi, int count) {
  const __mmask16 m = static_cast<__mmask16>((1u << count) - 1);
  const __m512i l = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, lo));
  if (hi == nullptr) return l;
  const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, hi));
  return _mm512_or_si512(l, _mm512_slli_epi32(h, 16));
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
#endif  // __AVX512BW__
