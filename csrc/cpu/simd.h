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

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

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

// Tensors of bfloat16 / float16 in memory, float in the kernels: the layout
// copies read and write elements of the op's dtype S, the kernels' buffers
// hold the compute type T (at::opmath_type<S>: float for bf16/fp16; T == S
// for float and double, where all of this is a plain load/store). Widening
// is exact; narrowing rounds to nearest even as torch's .to() does (NaN
// becomes a quiet NaN), so a result rounded once here equals the float32
// result converted afterwards, bit for bit.
template <typename T, typename S>
struct Stored {
  using type = typename Vec<T>::type;
  static constexpr int size = Vec<T>::size;
  static inline T get(S x) { return static_cast<T>(x); }
  static inline S put(T x) { return static_cast<S>(x); }
  static inline type load(const S* p) {
    type v;
    for (int i = 0; i < size; ++i) v[i] = get(p[i]);
    return v;
  }
  static inline type load_partial(const S* p, int n) {
    type v{};
    for (int i = 0; i < n; ++i) v[i] = get(p[i]);
    return v;
  }
  static inline void store(S* p, type v) {
    for (int i = 0; i < size; ++i) p[i] = put(v[i]);
  }
  static inline void store_partial(S* p, type v, int n) {
    for (int i = 0; i < n; ++i) p[i] = put(v[i]);
  }
};

template <typename T>
struct Stored<T, T> {
  using type = typename Vec<T>::type;
  static constexpr int size = Vec<T>::size;
  static inline T get(T x) { return x; }
  static inline T put(T x) { return x; }
  static inline type load(const T* p) { return Vec<T>::load(p); }
  static inline type load_partial(const T* p, int n) { return Vec<T>::load_partial(p, n); }
  static inline void store(T* p, type v) { Vec<T>::store(p, v); }
  static inline void store_partial(T* p, type v, int n) { Vec<T>::store_partial(p, v, n); }
};

#if defined(__AVX512F__)
// bf16 -> float: the 16 bits become the high half (exact).
inline __m512 widen_bf16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// float -> bf16, round to nearest even, NaN -> 0x7FC0 (c10::BFloat16's rule;
// not vcvtneps2bf16, which flushes denormals).
inline __m256i narrow_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(
      _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  r = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), r,
                              _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}
inline __mmask16 lanes16(int n) { return static_cast<__mmask16>((1u << n) - 1); }

template <>
struct Stored<float, c10::BFloat16> {
  using S = c10::BFloat16;
  using type = Vec<float>::type;
  static constexpr int size = 16;
  static inline float get(S x) { return static_cast<float>(x); }
  static inline S put(float x) { return S(x); }
  static inline type load(const S* p) {
    return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static inline type load_partial(const S* p, int n) {
    return widen_bf16(_mm256_maskz_loadu_epi16(lanes16(n), p));
  }
  static inline void store(S* p, type v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow_bf16(v));
  }
  static inline void store_partial(S* p, type v, int n) {
    _mm256_mask_storeu_epi16(p, lanes16(n), narrow_bf16(v));
  }
};

// float16: the F16C conversions (exact widening; narrowing to nearest even).
template <>
struct Stored<float, c10::Half> {
  using S = c10::Half;
  using type = Vec<float>::type;
  static constexpr int size = 16;
  static inline float get(S x) { return static_cast<float>(x); }
  static inline S put(float x) { return S(x); }
  static inline type load(const S* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static inline type load_partial(const S* p, int n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lanes16(n), p));
  }
  static inline void store(S* p, type v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static inline void store_partial(S* p, type v, int n) {
    _mm256_mask_storeu_epi16(p, lanes16(n),
                             _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};
#elif defined(__AVX2__)
// bf16 whole vectors with AVX2 integer ops (as the AVX-512 ones above);
// partial vectors and float16 (F16C is not part of this copy's target)
// take the scalar conversions of the generic Stored.
template <>
struct Stored<float, c10::BFloat16> {
  using S = c10::BFloat16;
  using type = Vec<float>::type;
  static constexpr int size = 8;
  static inline float get(S x) { return static_cast<float>(x); }
  static inline S put(float x) { return S(x); }
  static inline type load(const S* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static inline type load_partial(const S* p, int n) {
    type v{};
    for (int i = 0; i < n; ++i) v[i] = get(p[i]);
    return v;
  }
  static inline void store(S* p, type v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    r = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC0)), nan));
    // r <= 0xFFFF: the unsigned-saturating pack keeps it; lanes 0-3 and 4-7
    // sit in the two 128-bit halves, gathered into the low half.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
  static inline void store_partial(S* p, type v, int n) {
    for (int i = 0; i < n; ++i) p[i] = put(v[i]);
  }
};
#endif

// The first n lanes of p (all of them where n >= size; the rest zero):
// one whole load where the vector is full, a masked one for a tail.
template <typename T, typename S = T>
inline typename Vec<T>::type load_upto(const S* p, int n) {
  return n >= Vec<T>::size ? Stored<T, S>::load(p) : Stored<T, S>::load_partial(p, n);
}

// Its pair: the first n lanes of v to p (all of them where n >= size).
template <typename T, typename S = T>
inline void store_upto(S* p, typename Vec<T>::type v, int n) {
  if (n >= Vec<T>::size) {
    Stored<T, S>::store(p, v);
  } else {
    Stored<T, S>::store_partial(p, v, n);
  }
}

// The sum of the L lanes e[0..L), pairwise in a fixed order (the one rule
// for folding a reduction's lane partials: the same bits on every call).
template <typename T, int L>
inline T sum_lanes(const T* e) {
  T s[L];
  for (int l = 0; l < L; ++l) s[l] = e[l];
  for (int w = L / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) s[l] += s[l + w];
  return s[0];
}

// d[i] = s[i] for i < n, converted (Stored<T, S> in, Stored<T, D> out).
template <typename T, typename S, typename D>
inline void convert_copy(const S* s, D* d, int64_t n) {
  if constexpr (std::is_same_v<S, D>) {
    std::memcpy(d, s, sizeof(S) * n);
  } else {
    constexpr int L = Vec<T>::size;
    int64_t i = 0;
    for (; i + L <= n; i += L) Stored<T, D>::store(d + i, Stored<T, S>::load(s + i));
    for (; i < n; ++i) d[i] = Stored<T, D>::put(Stored<T, S>::get(s[i]));
  }
}

}  // namespace simd
}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
