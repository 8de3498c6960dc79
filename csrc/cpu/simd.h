// The one SIMD abstraction of the fast CPU kernels: a vector of `Vec<T>::size`
// elements of T (float or double) as a GCC vector extension, whose width is
// chosen at compile time from the target ISA (-march): 64 bytes with
// AVX-512, 32 with AVX/AVX2, 16 otherwise (SSE, NEON or plain scalar code,
// which the compiler lowers). Kernels are written once against this.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

namespace conv_ext {
namespace cpu {
namespace simd {

#if defined(__AVX512F__)
inline constexpr int kVectorBytes = 64;
inline constexpr const char* kIsaName = "avx512";
#elif defined(__AVX__)
inline constexpr int kVectorBytes = 32;
inline constexpr const char* kIsaName = "avx2";
#else
inline constexpr int kVectorBytes = 16;
inline constexpr const char* kIsaName = "portable";
#endif

template <typename T>
struct Vec {
  static constexpr int size = kVectorBytes / static_cast<int>(sizeof(T));
  typedef T type __attribute__((vector_size(kVectorBytes)));
  // Same vector, alignment of one element: loads/stores at any address.
  typedef T unaligned __attribute__((vector_size(kVectorBytes), aligned(sizeof(T))));

  static inline type load(const T* p) { return *reinterpret_cast<const unaligned*>(p); }
  static inline void store(T* p, type v) { *reinterpret_cast<unaligned*>(p) = v; }
  static inline type broadcast(T x);
  static inline type zero() { return type{}; }
  // The first n (< size) lanes; the rest are zero.
  static inline type load_partial(const T* p, int n) {
    type v{};
    std::memcpy(&v, p, sizeof(T) * n);
    return v;
  }
  static inline void store_partial(T* p, type v, int n) { std::memcpy(p, &v, sizeof(T) * n); }
};

// One broadcast instruction (GCC turns both `type{} + x` and a lane-wise
// fill into several shuffles on x86).
template <>
inline Vec<float>::type Vec<float>::broadcast(float x) {
#if defined(__AVX512F__)
  return _mm512_set1_ps(x);
#elif defined(__AVX__)
  return _mm256_set1_ps(x);
#else
  type v;
  for (int i = 0; i < size; ++i) v[i] = x;
  return v;
#endif
}

template <>
inline Vec<double>::type Vec<double>::broadcast(double x) {
#if defined(__AVX512F__)
  return _mm512_set1_pd(x);
#elif defined(__AVX__)
  return _mm256_set1_pd(x);
#else
  type v;
  for (int i = 0; i < size; ++i) v[i] = x;
  return v;
#endif
}

// a * b + c in one rounding where the ISA has FMA. ISO C++ modes turn off
// GCC's floating-point contraction, so a*b+c would stay two instructions.
inline Vec<float>::type fmadd(Vec<float>::type a, Vec<float>::type b, Vec<float>::type c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(a, b, c);
#elif defined(__FMA__) && defined(__AVX__)
  return _mm256_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}

inline Vec<double>::type fmadd(Vec<double>::type a, Vec<double>::type b, Vec<double>::type c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_pd(a, b, c);
#elif defined(__FMA__) && defined(__AVX__)
  return _mm256_fmadd_pd(a, b, c);
#else
  return a * b + c;
#endif
}

}  // namespace simd
}  // namespace cpu
}  // namespace conv_ext
