// CPU emulation of the warp-level and asynchronous-copy instructions that
// csrc/cuda/conv2d_warp_primitives.cuh wraps (mma.sync, ldmatrix, shfl.sync,
// cp.async with commit_group/wait_group, cvt.rna.tf32), with the register
// fragment layouts of the PTX ISA. Included by cuda_emulation.h; test-only.
//
// Warp rendezvous. A block's threads are std::threads; lanes 32w..32w+31 form
// warp w, which owns a std::barrier over its lanes and an exchange area of
// two buffers of 32 slots. A collective writes the lane's operands into its
// slot of buffer (n % 2) for the lane's n-th collective, waits on the warp
// barrier, then computes its own results reading other lanes' slots. One
// barrier per collective suffices: a lane writes buffer b again only at
// collective n + 2, after passing the barrier of collective n + 1, which every
// lane reaches only after finishing its reads of collective n. As on the GPU,
// every lane of the warp must execute the same collectives (full mask only).
//
// cp.async: the copy is issued into a per-thread pending list (the source is
// read at issue, so ASan checks it there) and its destination is filled with
// 0xff bytes (NaN in every float type) until cp.async.wait_group retires its
// group. A kernel that reads a stage without waiting (or without the
// __syncthreads after the wait) reads NaN, and the result shows it.
#pragma once

#include <c10/util/Half.h>

#include <array>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cuda_emulation {

// The first misuse seen during a launch (misaligned ldmatrix row, bad
// cp.async size): emulate_launch throws it after the threads finish.
struct LaunchErrors {
  std::mutex mutex;
  std::string first;
  void report(const std::string& message) {
    const std::lock_guard<std::mutex> lock(mutex);
    if (first.empty()) first = message;
  }
};
inline thread_local LaunchErrors* launch_errors = nullptr;
inline void report_error(const std::string& message) {
  if (launch_errors != nullptr) launch_errors->report(message);
}

struct WarpRendezvous {
  explicit WarpRendezvous(std::ptrdiff_t lanes) : barrier(lanes) {}
  std::barrier<> barrier;
  std::array<std::array<std::array<uint64_t, 8>, 32>, 2> slots{};
};

inline thread_local WarpRendezvous* warp = nullptr;
inline thread_local unsigned warp_collectives = 0;  // this lane's count, for the buffer parity

inline int lane() { return static_cast<int>(threadIdx.x % 32); }

// Publishes this lane's words, waits for the warp, returns the buffer of
// all lanes' words for this collective.
template <size_t N>
inline const std::array<std::array<uint64_t, 8>, 32>& exchange(const uint64_t (&words)[N]) {
  static_assert(N <= 8, "at most 8 words per lane");
  auto& buffer = warp->slots[warp_collectives++ % 2];
  for (size_t i = 0; i < N; ++i) buffer[lane()][i] = words[i];
  warp->barrier.arrive_and_wait();
  return buffer;
}

// ---- shfl.sync (full mask, width 32) ----
template <typename T>
inline T shfl(T value, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 64 bits");
  uint64_t word = 0;
  std::memcpy(&word, &value, sizeof(T));
  const uint64_t words[1] = {word};
  const auto& all = exchange(words);
  T out;
  std::memcpy(&out, &all[src_lane & 31][0], sizeof(T));
  return out;
}
template <typename T>
inline T shfl_xor(T value, int lane_mask) { return shfl(value, lane() ^ lane_mask); }
template <typename T>
inline T shfl_down(T value, int delta) {
  // Lanes whose source is out of range keep their own value.
  return shfl(value, lane() + delta < 32 ? lane() + delta : lane());
}

// ---- element conversions ----
inline float bf16_bits_to_float(uint16_t bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &word, 4);
  return out;
}
inline float f16_bits_to_float(uint16_t bits) { return c10::detail::fp16_ieee_to_fp32_value(bits); }
// A .tf32 operand as the tensor core reads it: the low 13 mantissa bits of
// the 32-bit register are ignored (truncation; cvt.rna rounds beforehand).
inline float tf32_bits_to_float(uint32_t bits) {
  bits &= 0xffffe000u;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// cvt.rna.tf32.f32: round to 10 mantissa bits, ties away from zero; NaN and
// infinity pass through. The result is a .b32 with the low 13 bits zero.
inline uint32_t cvt_rna_tf32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u) return bits;  // inf / NaN
  return (bits + 0x1000u) & 0xffffe000u;
}

// ---- mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 ----
// Fragments (groupID g = lane / 4, t = lane % 4; registers hold two 16-bit
// elements, the lower-numbered one in the low half):
//   A 16x16: a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..],
//            a[3] = A[g+8][2t+8..]
//   B 16x8:  b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   C/D 16x8 (f32): d[0] = D[g][2t], d[1] = D[g][2t+1], d[2] = D[g+8][2t],
//            d[3] = D[g+8][2t+1]
// D = A * B + C, the products exact, summed in double and rounded once: the
// hardware's order of the fp32 sum is unspecified, and this keeps the
// emulation deterministic and at least as accurate.
inline void mma_m16n8k16(bool bf16, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const uint64_t words[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  const auto& all = exchange(words);
  const auto half = [&](int src_lane, int reg, int which) {
    const uint16_t bits = static_cast<uint16_t>(all[src_lane][reg] >> (16 * which));
    return static_cast<double>(bf16 ? bf16_bits_to_float(bits) : f16_bits_to_float(bits));
  };
  const int g = lane() / 4, t = lane() % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    double sum = d[i];
    for (int k = 0; k < 16; ++k) {
      const int kk = k % 8;
      // A[row][k]: lane (row % 8) * 4 + kk / 2, register (row >= 8) + 2 * (k >= 8).
      const double av = half((row % 8) * 4 + kk / 2, (row / 8) + 2 * (k / 8), kk % 2);
      // B[k][col]: lane col * 4 + kk / 2, register k >= 8.
      const double bv = half(col * 4 + kk / 2, 4 + k / 8, kk % 2);
      sum += av * bv;
    }
    d[i] = static_cast<float>(sum);
  }
}

// ---- mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 ----
//   A 16x8: a[0] = A[g][t], a[1] = A[g+8][t], a[2] = A[g][t+4], a[3] = A[g+8][t+4]
//   B 8x8:  b[0] = B[t][g], b[1] = B[t+4][g]
//   C/D as for m16n8k16.
inline void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const uint64_t words[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  const auto& all = exchange(words);
  const auto value = [&](int src_lane, int reg) {
    return static_cast<double>(tf32_bits_to_float(static_cast<uint32_t>(all[src_lane][reg])));
  };
  const int g = lane() / 4, t = lane() % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    double sum = d[i];
    for (int k = 0; k < 8; ++k) {
      const double av = value((row % 8) * 4 + k % 4, (row / 8) + 2 * (k / 4));
      const double bv = value(col * 4 + k % 4, 4 + k / 4);
      sum += av * bv;
    }
    d[i] = static_cast<float>(sum);
  }
}

// ---- ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16 ----
// Lane 8j + i gives the address of row i of matrix j (16-byte aligned, 8
// consecutive 16-bit elements). Lane l receives in r[j] elements
// (row l / 4, columns 2 (l % 4), 2 (l % 4) + 1) of matrix j; with .trans,
// (rows 2 (l % 4), 2 (l % 4) + 1, column l / 4), i.e. of the transpose.
template <int Count>
inline void ldmatrix(uint32_t (&r)[Count], const void* row_address, bool trans) {
  static_assert(Count == 1 || Count == 2 || Count == 4, "x1, x2 or x4");
  const auto address = reinterpret_cast<uintptr_t>(row_address);
  if (lane() < 8 * Count && address % 16 != 0) {
    report_error("ldmatrix: row address not 16-byte aligned");
  }
  const uint64_t words[1] = {address};
  const auto& all = exchange(words);
  const auto element = [&](int matrix, int row, int col) {
    const auto* p = reinterpret_cast<const uint16_t*>(all[8 * matrix + row][0] & ~uintptr_t{15});
    return static_cast<uint32_t>(p[col]);
  };
  const int l = lane();
  for (int j = 0; j < Count; ++j) {
    uint32_t lo, hi;
    if (trans) {
      lo = element(j, 2 * (l % 4), l / 4);
      hi = element(j, 2 * (l % 4) + 1, l / 4);
    } else {
      lo = element(j, l / 4, 2 * (l % 4));
      hi = element(j, l / 4, 2 * (l % 4) + 1);
    }
    r[j] = lo | (hi << 16);
  }
  // No lane may go on (and, say, overwrite the rows) before all have read:
  // the GPU reads the rows at once.
  warp->barrier.arrive_and_wait();
}

// ---- cp.async.{ca,cg}.shared.global [dst], [src], bytes, src_size ----
struct PendingCopy {
  unsigned char* dst;
  unsigned char data[16];
  int bytes;
  long group;  // -1: not yet committed
};
struct AsyncCopies {
  std::vector<PendingCopy> pending;
  long committed = 0;  // groups committed so far
};
inline thread_local AsyncCopies* async_copies = nullptr;

// bytes: 4, 8 or 16; src_size bytes are read, the rest zero-filled (src_size 0
// reads nothing, the zero-fill for padding).
inline void cp_async(void* dst, const void* src, int bytes, int src_size) {
  if (!(bytes == 4 || bytes == 8 || bytes == 16) || src_size < 0 || src_size > bytes) {
    report_error("cp.async: bad size");
    return;
  }
  if (reinterpret_cast<uintptr_t>(dst) % bytes != 0 ||
      (src_size > 0 && reinterpret_cast<uintptr_t>(src) % bytes != 0)) {
    report_error("cp.async: misaligned address");
  }
  PendingCopy copy{static_cast<unsigned char*>(dst), {}, bytes, -1};
  if (src_size > 0) std::memcpy(copy.data, src, src_size);
  std::memset(copy.data + src_size, 0, bytes - src_size);
  std::memset(dst, 0xff, bytes);  // NaN until the wait retires it
  async_copies->pending.push_back(copy);
}

inline void cp_async_commit() {
  for (auto& copy : async_copies->pending) {
    if (copy.group < 0) copy.group = async_copies->committed;
  }
  ++async_copies->committed;
}

// Retires every committed group but the newest `newest_left` ones.
inline void cp_async_wait(int newest_left) {
  const long last_done = async_copies->committed - 1 - newest_left;
  auto& pending = async_copies->pending;
  std::vector<PendingCopy> still;
  for (const auto& copy : pending) {
    if (copy.group >= 0 && copy.group <= last_done) {
      std::memcpy(copy.dst, copy.data, copy.bytes);
    } else {
      still.push_back(copy);
    }
  }
  pending.swap(still);
}

}  // namespace cuda_emulation
