// The one SIMD abstraction of the fast CPU kernels: a vector of `Vec<T>::size`
// elements of T (float or double) as a GCC vector extension, whose width is
// chosen at compile time from the target ISA: 64 bytes with AVX-512, 32 with
// AVX/AVX2, 16 otherwise (SSE, NEON or plain scalar code, which the compiler
// lowers). Kernels are written once against this. The kernels are compiled
// once per ISA (conv2d_cpu_kernels_<isa>.cpp sets the target with
// `#pragma GCC target`, which also sets the __AVX512F__/__AVX__ macros read
// here) into the namespace conv_ext::cpu::CONV_EXT_ISA; conv2d_cpu_isa.h.
#pragma once

#include <cstdint>
#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>

#ifndef CONV_EXT_ISA
#error "the CPU kernel headers are compiled per ISA: include them from a conv2d_cpu_kernels_<isa>.cpp (conv2d_cpu_isa.h)"
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h
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
  // The first n (< size) lanes; the rest are zero. Masked instructions on
  // x86 (a variable-length memcpy would be a library call per row tail).
  static inline type load_partial(const T* p, int n);
  static inline void store_partial(T* p, type v, int n);
};

// A heap array of n zeroed vectors, aligned to the vector size. Use this,
// not std::vector<Vec<T>::type>: std::allocator's code is compiled before the
// ISA's target pragma (conv2d_cpu_isa.h), where g++ does not see the vector
// type's alignment, and hands out 16-byte-aligned memory.
template <typename T>
class VecArray {
 public:
  using type = typename Vec<T>::type;
  explicit VecArray(size_t n)
      : data_(static_cast<type*>(::operator new(sizeof(type) * (n > 0 ? n : 1),
                                                std::align_val_t{kVectorBytes}))),
        size_(n) {
    for (size_t i = 0; i < n; ++i) data_[i] = type{};
  }
  ~VecArray() { ::operator delete(data_, std::align_val_t{kVectorBytes}); }
  VecArray(const VecArray&) = delete;
  VecArray& operator=(const VecArray&) = delete;

  type* data() { return data_; }
  type* begin() { return data_; }
  type* end() { return data_ + size_; }
  type& operator[](size_t i) { return data_[i]; }

 private:
  type* data_;
  size_t size_;
};

// Integer vector with Vec<T>'s lane count, for __builtin_shuffle masks.
template <typename T>
struct IndexVec {
  using element = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef element type __attribute__((vector_size(kVectorBytes)));
  // 0, 2, 4, ...: the even elements of two concatenated vectors.
  static inline type even() {
    type v{};
    for (int i = 0; i < Vec<T>::size; ++i) v[i] = 2 * i;
    return v;
  }
};

// Whether load_partial/store_partial are single masked instructions (else
// a memcpy of n elements, which costs a library call).
#if defined(__AVX512F__) || defined(__AVX2__)
inline constexpr bool kMaskedAccess = true;
#else
inline constexpr bool kMaskedAccess = false;
#endif

#if defined(__AVX512F__)
template <>
inline Vec<float>::type Vec<float>::load_partial(const float* p, int n) {
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
}
template <>
inline void Vec<float>::store_partial(float* p, type v, int n) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
}
template <>
inline Vec<double>::type Vec<double>::load_partial(const double* p, int n) {
  return _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1), p);
}
template <>
inline void Vec<double>::store_partial(double* p, type v, int n) {
  _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1), v);
}
#elif defined(__AVX2__)
// Lane i is on when i < n (sign bit of the 32/64-bit mask element).
inline __m256i lane_mask32(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256i lane_mask64(int n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
template <>
inline Vec<float>::type Vec<float>::load_partial(const float* p, int n) {
  return _mm256_maskload_ps(p, lane_mask32(n));
}
template <>
inline void Vec<float>::store_partial(float* p, type v, int n) {
  _mm256_maskstore_ps(p, lane_mask32(n), v);
}
template <>
inline Vec<double>::type Vec<double>::load_partial(const double* p, int n) {
  return _mm256_maskload_pd(p, lane_mask64(n));
}
template <>
inline void Vec<double>::store_partial(double* p, type v, int n) {
  _mm256_maskstore_pd(p, lane_mask64(n), v);
}
#else
template <typename T>
inline typename Vec<T>::type Vec<T>::load_partial(const T* p, int n) {
  type v{};
  std::memcpy(&v, p, sizeof(T) * n);
  return v;
}
template <typename T>
inline void Vec<T>::store_partial(T* p, type v, int n) {
  std::memcpy(p, &v, sizeof(T) * n);
}
#endif

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
}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
