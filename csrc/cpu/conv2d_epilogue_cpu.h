// conv2d_fused's epilogue (../conv2d_epilogue.h) on SIMD vectors, for the
// CPU kernels' store stage: the finished sums go through it on their way to
// memory (in registers where a kernel stores whole vectors of one shape, or
// on the block a work item has just written, while it is in L1), so the
// output is written once and no separate pass reads it back. Two shapes of
// vector: lanes along consecutive channels of one pixel (NHWC stores) or
// along consecutive pixels of one channel (NCHW stores).
//
// The arithmetic is Epilogue<T>::apply's, operation for operation: scale
// (a multiply), shift (an add), the residual (an add, before or after the
// activation), each one IEEE operation per lane as in the scalar code (the
// product is rounded before the shift: epilogue_detail::rounded), ReLU and
// ReLU6 and hardswish as the same compare-and-select and operations (NaN
// stays NaN, -0 stays -0), so these are bitwise equal to the scalar
// epilogue. SiLU on float uses a vector exp (exp_vector, within 2 ulp of
// expf: SiLU within a few ulp of the scalar formula, not bitwise); on
// double, and GELU, lane by lane through the scalar `activate` (libm's
// exp, erff, tanhf: bitwise equal to the scalar code).
#pragma once

#include <cstdint>
#include <cstring>

#include "../conv2d_epilogue.h"
#include "../conv2d_fused_params.h"
#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// An epilogue for a kernel writing into `out`: the residual is indexed like
// `out` (same layout), by the offset of the store address from `out`.
template <typename T>
struct StoreEpilogue {
  Epilogue<T> e;
  const T* out = nullptr;
};

// The epilogue tensors as a StoreEpilogue for an output of T at `out`
// (null: nothing to apply).
template <typename T>
StoreEpilogue<T> store_epilogue(const EpilogueTensors& tensors, const T* out) {
  StoreEpilogue<T> s;
  s.e = tensors.view<T>();
  s.out = out;
  return s;
}

namespace epilogue_detail {

// The product rounded before the next add: g++ contracts a multiply and an
// add into an FMA in C++ (-ffp-contract=fast even in ISO mode) where the
// target has one, which the scalar epilogue (two roundings) does not do.
template <typename V>
inline void rounded(V& v) {
#if defined(__x86_64__) || defined(__i386__)
  asm("" : "+x"(v));
#elif defined(__aarch64__)
  asm("" : "+w"(v));
#endif
}

template <typename T, Activation A>
inline typename simd::Vec<T>::type activate_lanes(typename simd::Vec<T>::type v) {
  using V = simd::Vec<T>;
  T lanes[V::size];
  std::memcpy(lanes, &v, sizeof(v));
  for (int l = 0; l < V::size; ++l) lanes[l] = activate(lanes[l], A);
  std::memcpy(&v, lanes, sizeof(v));
  return v;
}

// exp(x) on float vectors: Cody-Waite reduction by ln 2 and a degree-6
// polynomial (Cephes expf), within 2 ulp of libm's expf; x below -87.3
// gives 0, above 88.7 infinity, NaN stays NaN.
inline simd::Vec<float>::type exp_vector(simd::Vec<float>::type x) {
  using V = simd::Vec<float>;
  using I = simd::IndexVec<float>::type;
  const V::type hi = V::broadcast(88.72283935546875f), lo = V::broadcast(-87.33654022216797f);
  const V::type xc = x > hi ? hi : (x < lo ? lo : x);
  // n = round(x / ln 2)
  V::type n = xc * V::broadcast(1.44269504088896341f);
  n = __builtin_convertvector(__builtin_convertvector(n + (n < V::zero() ? V::broadcast(-0.5f) : V::broadcast(0.5f)), I), V::type);
  V::type r = xc - n * V::broadcast(0.693359375f);
  r = r - n * V::broadcast(-2.12194440e-4f);
  V::type p = V::broadcast(1.9875691500e-4f);
  p = p * r + V::broadcast(1.3981999507e-3f);
  p = p * r + V::broadcast(8.3334519073e-3f);
  p = p * r + V::broadcast(4.1665795894e-2f);
  p = p * r + V::broadcast(1.6666665459e-1f);
  p = p * r + V::broadcast(5.0000001201e-1f);
  p = p * (r * r) + r + V::broadcast(1.0f);
  // * 2^n: n in [-126, 128]; 2^128 as 2^127 * 2
  const I ni = __builtin_convertvector(n, I);
  const I big = ni > 127;
  const I e = ((big ? ni - 1 : ni) + 127) << 23;
  V::type scale;
  std::memcpy(&scale, &e, sizeof(scale));
  V::type result = p * scale;
  result = big ? result * V::broadcast(2.0f) : result;
  result = x > hi ? V::broadcast(__builtin_inff()) : result;
  result = x < lo ? V::zero() : result;
  return x != x ? x : result;  // NaN
}

// SiLU with the vector exp (float): v / (1 + exp(-v)), within a few ulp
// of the scalar formula (tests: 1e-6 relative).
template <typename T>
inline typename simd::Vec<T>::type silu_vector(typename simd::Vec<T>::type v) {
  if constexpr (std::is_same_v<T, float>) {
    using V = simd::Vec<float>;
    return v / (V::broadcast(1.0f) + exp_vector(-v));
  } else {
    return activate_lanes<T, Activation::kSilu>(v);
  }
}

template <typename T>
inline typename simd::Vec<T>::type activate_vector(typename simd::Vec<T>::type v, Activation a) {
  using V = simd::Vec<T>;
  const typename V::type zero = V::zero();
  switch (a) {
    case Activation::kNone:
      return v;
    case Activation::kRelu:
      return v < zero ? zero : v;  // activate's compare-and-select
    case Activation::kRelu6: {
      const typename V::type six = V::broadcast(T(6));
      return v < zero ? zero : (v > six ? six : v);
    }
    case Activation::kSilu:
      return silu_vector<T>(v);
    case Activation::kGeluErf:
      return activate_lanes<T, Activation::kGeluErf>(v);
    case Activation::kGeluTanh:
      return activate_lanes<T, Activation::kGeluTanh>(v);
    case Activation::kHardswish: {  // activate's operations, in the same order
      const typename V::type six = V::broadcast(T(6));
      typename V::type t = v + V::broadcast(T(3));
      t = t < zero ? zero : (t > six ? six : t);
      return v * t / six;
    }
  }
  return v;
}

}  // namespace epilogue_detail

// v: sums (with bias) for `n` valid lanes, to be stored at `dst`. Lanes are
// channels k, k+1, ... (along_channels) or pixels of channel k.
template <typename T, bool along_channels>
inline typename simd::Vec<T>::type apply_epilogue_vector(typename simd::Vec<T>::type v,
                                                         const StoreEpilogue<T>& s, int64_t k,
                                                         const T* dst, int n) {
  using V = simd::Vec<T>;
  const Epilogue<T>& e = s.e;
  if (e.scale != nullptr) {
    v *= along_channels ? simd::load_upto<T>(e.scale + k, n) : V::broadcast(e.scale[k]);
    epilogue_detail::rounded(v);
  }
  if (e.shift != nullptr) {
    v += along_channels ? simd::load_upto<T>(e.shift + k, n) : V::broadcast(e.shift[k]);
  }
  const T* residual = e.residual != nullptr ? e.residual + (dst - s.out) : nullptr;
  if (residual != nullptr && e.residual_before_activation) v += simd::load_upto<T>(residual, n);
  v = epilogue_detail::activate_vector<T>(v, e.activation);
  if (residual != nullptr && !e.residual_before_activation) v += simd::load_upto<T>(residual, n);
  return v;
}

// In place on n consecutive elements at dst: channels k .. k + n - 1 of one
// pixel (along_channels), or n pixels of channel k.
template <typename T, bool along_channels>
inline void epilogue_run(const StoreEpilogue<T>& s, T* dst, int64_t n, int64_t k) {
  using V = simd::Vec<T>;
  constexpr int L = V::size;
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V::store(dst + i, apply_epilogue_vector<T, along_channels>(V::load(dst + i), s,
                                                               along_channels ? k + i : k, dst + i, L));
  }
  if (i < n) {
    const int r = static_cast<int>(n - i);
    if constexpr (simd::kMaskedAccess) {
      simd::store_upto<T>(dst + i,
                          apply_epilogue_vector<T, along_channels>(simd::load_upto<T>(dst + i, r), s,
                                                                   along_channels ? k + i : k, dst + i, r),
                          r);
    } else {
      for (; i < n; ++i) {
        dst[i] = s.e.template apply<T>(dst[i], along_channels ? k + i : k, dst + i - s.out);
      }
    }
  }
}

// The epilogue of a transpose into NCHW (transpose_plane): column j of the
// transposed block is output channel k0 + j, its rows consecutive pixels.
template <typename T>
struct ColumnEpilogue {
  const StoreEpilogue<T>* s;
  int64_t k0;
  typename simd::Vec<T>::type operator()(typename simd::Vec<T>::type v, int64_t j, const T* dst,
                                         int n) const {
    return apply_epilogue_vector<T, false>(v, *s, k0 + j, dst, n);
  }
  T scalar(T v, int64_t j, const T* dst) const {
    return s->e.template apply<T>(v, k0 + j, dst - s->out);
  }
};

// The separate pass, where a path cannot take the epilogue in its stores:
// out N x K x HW, channels_last ([N][HW][K]) or not ([N][K][HW]), elements
// S (float, double: vectors; bfloat16/float16: the scalar epilogue in
// float, one rounding).
template <typename S>
void epilogue_pass(S* out, const EpilogueTensors& tensors, int64_t N, int64_t K, int64_t HW,
                   bool channels_last) {
  const Epilogue<S> e = tensors.view<S>();
  if (e.is_identity()) return;
  if constexpr (std::is_same_v<S, float> || std::is_same_v<S, double>) {
    const StoreEpilogue<S> s = store_epilogue<S>(tensors, out);
    if (channels_last) {
      at::parallel_for(0, N * HW, grain_for(K), [&](int64_t begin, int64_t end) {
        for (int64_t px = begin; px < end; ++px) epilogue_run<S, true>(s, out + px * K, K, 0);
      });
    } else {
      at::parallel_for(0, N * K, grain_for(HW), [&](int64_t begin, int64_t end) {
        for (int64_t nk = begin; nk < end; ++nk) epilogue_run<S, false>(s, out + nk * HW, HW, nk % K);
      });
    }
  } else {
    using A = at::opmath_type<S>;
    const int64_t total = N * K * HW;
    at::parallel_for(0, total, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t k = channels_last ? i % K : (i / HW) % K;
        out[i] = static_cast<S>(e.template apply<A>(static_cast<A>(out[i]), k, i));
      }
    });
  }
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
