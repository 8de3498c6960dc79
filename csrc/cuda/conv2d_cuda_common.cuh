// Device helpers shared by the conv_ext CUDA kernels. Device code only: the
// same headers are compiled by nvcc for the GPU and by g++ for the CPU
// emulation of the kernels (tests/cuda_emulation), so they use nothing but
// qualifiers, thread/block indices, shared_array, __syncthreads and __ldg.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "conv2d_cuda_geometry.h"

namespace conv_ext {
namespace cuda {

// Read-only global load, converted to the accumulation type. float and
// double go through the non-coherent cache (__ldg); the 16-bit types are
// plain loads (at::Half / at::BFloat16 have no __ldg overload).
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t load_as(const scalar_t* p) {
  if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
    return static_cast<acc_t>(__ldg(p));
  } else {
    return static_cast<acc_t>(*p);
  }
}

// Division and remainder of a non-negative int32 by a divisor fixed for the
// whole kernel, as a multiply and a shift (Granlund-Montgomery): the GEMM
// loaders decode reduction indices into (channel, tap) every slab, and a
// hardware-less 32-bit division costs ~20 instructions on the GPU. With
// l = ceil(log2 d) and m = ceil(2^(32+l) / d), x / d == (x * m) >> (32 + l)
// exactly for 0 <= x < 2^31 (the error x * (m*d - 2^(32+l)) / (d*2^(32+l))
// stays below 1 / (2d)). m needs 33 bits, hence the 64-bit product.
struct FastDivmod {
  int divisor;
  uint64_t multiplier;
  int shift;

  __device__ __forceinline__ explicit FastDivmod(int d) : divisor(d), multiplier(0), shift(0) {
    int l = 0;
    while ((int64_t{1} << l) < d) ++l;
    shift = 32 + l;
    multiplier = ((uint64_t{1} << shift) + static_cast<uint64_t>(d) - 1) / static_cast<uint64_t>(d);
  }
  __device__ __forceinline__ int div(int x) const {
    return static_cast<int>((static_cast<uint64_t>(x) * multiplier) >> shift);
  }
  // x = quotient * divisor + remainder.
  __device__ __forceinline__ void divmod(int x, int& quotient, int& remainder) const {
    quotient = div(x);
    remainder = x - quotient * divisor;
  }
};

// Four consecutive elements of a 16-byte aligned shared array, in one
// 128-bit load where the type allows (float: LDS.128); the emulation copies.
template <typename T>
__device__ __forceinline__ void load_four(const T* p, T (&out)[4]) {
#ifndef CONV_EXT_CUDA_EMULATION
  if constexpr (std::is_same_v<T, float>) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  } else
#endif
  {
    for (int i = 0; i < 4; ++i) out[i] = p[i];
  }
}

// Copies 16 bytes between 16-byte aligned addresses (global or shared) in
// one 128-bit load and store; the emulation copies bytes.
__device__ __forceinline__ void copy16(void* dst, const void* src) {
#ifdef CONV_EXT_CUDA_EMULATION
  std::memcpy(dst, src, 16);
#else
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#endif
}

// The block's shared-memory array number Id of N elements of T. Kernels get
// all shared memory through this (never a bare __shared__ declaration): the
// emulation gives each array its own heap allocation of exactly N elements,
// which AddressSanitizer bounds-checks, and fills it with 0xff bytes (NaN)
// so that reading an element no thread wrote shows up in the results.
template <typename T, int N, int Id>
__device__ __forceinline__ T* shared_array() {
#ifdef CONV_EXT_CUDA_EMULATION
  return ::cuda_emulation::shared_array<T, N, Id>();
#else
  // 16-byte aligned for load_four.
  __shared__ __align__(16) T storage[N];
  return storage;
#endif
}

// The block's dynamic shared memory, Bytes of it (the launch passes
// LaunchDims::shared_bytes = Bytes): tiles over 48 KB need it. The emulation
// gives it its own bounds-checked array, as shared_array does.
template <int Bytes, int Id>
__device__ __forceinline__ unsigned char* dynamic_shared_bytes() {
#ifdef CONV_EXT_CUDA_EMULATION
  return ::cuda_emulation::shared_array<unsigned char, Bytes, Id>();
#else
  extern __shared__ __align__(16) unsigned char dynamic_shared[];
  return dynamic_shared;
#endif
}

// Sums partial results over `splits` workspace slices in a fixed order
// (split 0 first) and casts: the second half of every split reduction, so
// results do not depend on scheduling. workspace: [splits][count].
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kReduceThreads)
    sum_splits_kernel(const acc_t* __restrict__ workspace, int64_t splits,
                      int64_t count, scalar_t* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < count; i += stride) {
    acc_t sum = workspace[i];
    for (int64_t s = 1; s < splits; ++s) sum += workspace[s * count + i];
    out[i] = static_cast<scalar_t>(sum);
  }
}

}  // namespace cuda
}  // namespace conv_ext
