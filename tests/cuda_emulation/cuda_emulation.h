// Maps the CUDA built-ins that conv_ext's kernels use onto standard C++, so
// the kernel headers (csrc/cuda/*.cuh) compile with g++ and run on the CPU:
//
//   qualifiers            __global__, __device__, __host__, __forceinline__,
//                         __launch_bounds__ -> nothing / inline
//   threadIdx, blockIdx,  thread_local, set by the launcher for each thread
//   blockDim, gridDim
//   shared memory         the kernels get it only through
//                         conv_ext::cuda::shared_array<T, N, Id>(), which
//                         here returns the launch's own heap allocation of
//                         exactly N elements for (T, N, Id), shared by the
//                         block's threads (one block runs at a time).
//                         AddressSanitizer bounds-checks heap allocations
//                         (it does not instrument function-local statics of
//                         templates, so static storage would go unchecked);
//                         new arrays are filled with 0xff bytes (NaN), so a
//                         read of an element no thread wrote shows up.
//                         __shared__ itself is left undefined: a bare
//                         __shared__ in a kernel fails to compile here.
//   __syncthreads()       std::barrier across the block's threads
//   __ldg(p)              *p
//   warp-level and async  mma.sync, ldmatrix, shfl.sync, cp.async (+ commit/
//   instructions          wait_group), cvt.rna.tf32 through the wrappers of
//                         csrc/cuda/conv2d_warp_primitives.cuh, emulated in
//                         warp_emulation.h (a rendezvous of the warp's lanes)
//
// emulate_launch runs a grid block by block; each block's threads are real
// concurrent std::threads (created once per launch, looping over the
// blocks), so a missing __syncthreads is a race that shows up as a wrong
// answer, and ThreadSanitizer/ASan see real threads.
//
// Include this before any kernel header. Test-only; not part of conv_ext.
#pragma once

#include <barrier>
#include <cstdint>
#include <stdexcept>
#include <cstring>
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <typeindex>
#include <utility>
#include <vector>

#define CONV_EXT_CUDA_EMULATION 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __syncthreads() ::cuda_emulation::sync_block_threads()

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

#include "warp_emulation.h"

namespace cuda_emulation {

inline thread_local std::barrier<>* block_barrier = nullptr;

inline void sync_block_threads() { block_barrier->arrive_and_wait(); }

// The shared memory of one launch: one heap array per (type, size, id),
// created by the first thread that asks for it, reused by every block (as
// on the GPU, a block finds whatever the previous one left there).
class SharedMemory {
 public:
  template <typename T, int N, int Id>
  T* array() {
    const std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = arrays_[std::make_tuple(std::type_index(typeid(T)), N, Id)];
    if (!slot) {
      slot.reset(new unsigned char[sizeof(T) * N]);
      std::memset(slot.get(), 0xff, sizeof(T) * N);
    }
    return reinterpret_cast<T*>(slot.get());
  }

 private:
  std::mutex mutex_;
  std::map<std::tuple<std::type_index, int, int>, std::unique_ptr<unsigned char[]>> arrays_;
};

inline thread_local SharedMemory* block_shared_memory = nullptr;

template <typename T, int N, int Id>
T* shared_array() {
  return block_shared_memory->array<T, N, Id>();
}

// Runs kernel(args...) over grid (x, y, z) with `threads` threads per block
// (1-d blocks, as the conv_ext kernels use). Blocks run one after another in
// (z, y, x) order; a barrier after each block keeps a block's threads from
// starting the next block while others still use its shared memory.
template <typename Kernel, typename... Args>
void emulate_launch(Kernel kernel, const uint32_t grid[3], uint32_t threads,
                    const Args&... args) {
  std::barrier<> barrier(threads);
  SharedMemory shared_memory;
  LaunchErrors errors;
  // Warp w: lanes 32w..32w+31 (the last one partial when threads % 32 != 0).
  std::vector<std::unique_ptr<WarpRendezvous>> warps;
  for (uint32_t first = 0; first < threads; first += 32) {
    warps.push_back(std::make_unique<WarpRendezvous>(std::min<uint32_t>(32, threads - first)));
  }
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (uint32_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      threadIdx = dim3{t, 0, 0};
      blockDim = dim3{threads, 1, 1};
      gridDim = dim3{grid[0], grid[1], grid[2]};
      block_barrier = &barrier;
      block_shared_memory = &shared_memory;
      launch_errors = &errors;
      warp = warps[t / 32].get();
      warp_collectives = 0;
      AsyncCopies copies;
      async_copies = &copies;
      for (uint32_t z = 0; z < grid[2]; ++z) {
        for (uint32_t y = 0; y < grid[1]; ++y) {
          for (uint32_t x = 0; x < grid[0]; ++x) {
            blockIdx = dim3{x, y, z};
            kernel(args...);
            // Copies never waited for land in a dead block's shared memory
            // on the GPU; here they are dropped.
            copies.pending.clear();
            barrier.arrive_and_wait();
          }
        }
      }
      block_barrier = nullptr;
      block_shared_memory = nullptr;
      launch_errors = nullptr;
      warp = nullptr;
      async_copies = nullptr;
    });
  }
  for (auto& thread : pool) thread.join();
  if (!errors.first.empty()) throw std::runtime_error("emulated kernel: " + errors.first);
}

}  // namespace cuda_emulation
