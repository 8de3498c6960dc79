// Warp-level and asynchronous-copy instructions for the tensor-core kernels,
// as inline functions: PTX (inline asm) under nvcc, the CPU emulation of
// tests/cuda_emulation/warp_emulation.h under g++ (same fragment layouts,
// documented there). sm_80 or newer: mma.sync m16n8k16 (bf16/fp16) and
// m16n8k8 (tf32), ldmatrix, cp.async.
//
// Every lane of the warp must call the warp-collective ones (mma, ldmatrix,
// shuffles) together, with a full mask.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace conv_ext {
namespace cuda {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define CONV_EXT_HAS_SM80_PTX 1
#endif

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x % 32); }

// A pair of 16-bit values (the lower-numbered element in the low half), as
// the mma operands hold them.
template <typename half_t>
__device__ __forceinline__ uint32_t pack_pair(half_t lo, half_t hi) {
  static_assert(sizeof(half_t) == 2, "16-bit element type");
  uint16_t l, h;
  std::memcpy(&l, &lo, 2);
  std::memcpy(&h, &hi, 2);
  return static_cast<uint32_t>(l) | (static_cast<uint32_t>(h) << 16);
}

// d += a * b, m16n8k16, fp32 accumulators; half_t = c10::BFloat16 or c10::Half.
template <typename half_t>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
  static_assert(std::is_same_v<half_t, c10::BFloat16> || std::is_same_v<half_t, c10::Half>,
                "bf16 or fp16 operands");
#ifdef CONV_EXT_CUDA_EMULATION
  ::cuda_emulation::mma_m16n8k16(std::is_same_v<half_t, c10::BFloat16>, d, a, b);
#elif defined(CONV_EXT_HAS_SM80_PTX)
  if constexpr (std::is_same_v<half_t, c10::BFloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  __trap();  // the plan never picks a tensor-core kernel below sm_80
#endif
}

// d += a * b, m16n8k8 with tf32 operands (registers from cvt_rna_tf32).
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t (&b)[2]) {
#ifdef CONV_EXT_CUDA_EMULATION
  ::cuda_emulation::mma_m16n8k8_tf32(d, a, b);
#elif defined(CONV_EXT_HAS_SM80_PTX)
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
}

// The float whose bits a 32-bit register holds (fragments of fp32 data).
__device__ __forceinline__ float bits_as_float(uint32_t bits) {
#ifdef CONV_EXT_CUDA_EMULATION
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
#else
  return __uint_as_float(bits);
#endif
}

// float -> tf32 (round to nearest, ties away from zero), as a .b32.
__device__ __forceinline__ uint32_t cvt_rna_tf32(float x) {
#ifdef CONV_EXT_CUDA_EMULATION
  return ::cuda_emulation::cvt_rna_tf32(x);
#elif defined(CONV_EXT_HAS_SM80_PTX)
  uint32_t out;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(out) : "f"(x));
  return out;
#else
  __trap();
  return 0;
#endif
}

// ldmatrix.m8n8.b16, Count = 1, 2 or 4 matrices: lane 8j + i passes the
// (16-byte aligned) address of row i of matrix j; Trans loads the transpose.
template <int Count, bool Trans = false>
__device__ __forceinline__ void ldmatrix(uint32_t (&r)[Count], const void* row_address) {
  static_assert(Count == 1 || Count == 2 || Count == 4, "x1, x2 or x4");
#ifdef CONV_EXT_CUDA_EMULATION
  ::cuda_emulation::ldmatrix(r, row_address, Trans);
#elif defined(CONV_EXT_HAS_SM80_PTX)
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(row_address));
  if constexpr (Count == 1) {
    if constexpr (Trans) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                   : "=r"(r[0]) : "r"(address));
    } else {
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
                   : "=r"(r[0]) : "r"(address));
    }
  } else if constexpr (Count == 2) {
    if constexpr (Trans) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                   : "=r"(r[0]), "=r"(r[1]) : "r"(address));
    } else {
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                   : "=r"(r[0]), "=r"(r[1]) : "r"(address));
    }
  } else {
    if constexpr (Trans) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
    } else {
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
    }
  }
#else
  __trap();
#endif
}

// Asynchronous global -> shared copy of Bytes (4, 8 or 16; 16 bypasses L1,
// .cg) bytes; valid == false reads nothing and fills zeros (padding).
template <int Bytes>
__device__ __forceinline__ void cp_async(void* smem, const void* global, bool valid) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
  const int src_size = valid ? Bytes : 0;
#ifdef CONV_EXT_CUDA_EMULATION
  ::cuda_emulation::cp_async(smem, global, Bytes, src_size);
#elif defined(CONV_EXT_HAS_SM80_PTX)
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  if constexpr (Bytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(address), "l"(global), "r"(src_size));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n"
                 :: "r"(address), "l"(global), "n"(Bytes), "r"(src_size));
  }
#else
  __trap();
#endif
}

// Closes the group of cp.async issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#ifdef CONV_EXT_CUDA_EMULATION
  ::cuda_emulation::cp_async_commit();
#elif defined(CONV_EXT_HAS_SM80_PTX)
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most NewestLeft committed groups are in flight (this
// thread's copies only: a __syncthreads must follow before others read).
template <int NewestLeft>
__device__ __forceinline__ void cp_async_wait() {
#ifdef CONV_EXT_CUDA_EMULATION
  ::cuda_emulation::cp_async_wait(NewestLeft);
#elif defined(CONV_EXT_HAS_SM80_PTX)
  asm volatile("cp.async.wait_group %0;\n" :: "n"(NewestLeft));
#endif
}

// Warp shuffles over all 32 lanes (width 32).
template <typename T>
__device__ __forceinline__ T warp_shfl(T value, int src_lane) {
#ifdef CONV_EXT_CUDA_EMULATION
  return ::cuda_emulation::shfl(value, src_lane);
#else
  return __shfl_sync(0xffffffffu, value, src_lane);
#endif
}
template <typename T>
__device__ __forceinline__ T warp_shfl_xor(T value, int lane_mask) {
#ifdef CONV_EXT_CUDA_EMULATION
  return ::cuda_emulation::shfl_xor(value, lane_mask);
#else
  return __shfl_xor_sync(0xffffffffu, value, lane_mask);
#endif
}
template <typename T>
__device__ __forceinline__ T warp_shfl_down(T value, int delta) {
#ifdef CONV_EXT_CUDA_EMULATION
  return ::cuda_emulation::shfl_down(value, delta);
#else
  return __shfl_down_sync(0xffffffffu, value, delta);
#endif
}

}  // namespace cuda
}  // namespace conv_ext
