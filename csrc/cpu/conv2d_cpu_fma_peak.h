// The machine's fp32 FMA throughput with this ISA's vectors: the "100%" of
// the benchmark's share-of-peak column (debug op fma_peak_cpu).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "simd.h"

namespace conv_ext {
namespace cpu {
namespace CONV_EXT_ISA {  // one copy per ISA: conv2d_cpu_isa.h

// Every thread runs independent chains of vector FMAs (enough chains to cover
// the FMA latency times the number of FMA pipes), so the loop is bound by
// FMA throughput only.
// FMA latency (4 cycles) x FMA pipes (2) independent chains, within the
// register file (16 vector registers without AVX-512).
inline constexpr int kFmaChains = simd::kVectorBytes == 64 ? 16 : 10;

// Runs `iterations` rounds of kFmaChains FMAs; returns a value that depends
// on them all so the compiler cannot drop the loop.
inline float fma_chains(int64_t iterations, float seed) {
  using V = simd::Vec<float>;
  V::type acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = V::broadcast(seed + static_cast<float>(i));
  const V::type a = V::broadcast(0.999999f), b = V::broadcast(1e-7f);
  for (int64_t it = 0; it < iterations; ++it) {
    // Without -ffast-math the compiler may not fold or reorder the FMAs,
    // so each iteration stays kFmaChains vector FMAs on registers.
#pragma GCC unroll 16
    for (int i = 0; i < kFmaChains; ++i) {
      acc[i] = simd::fmadd(acc[i], a, b);
    }
  }
  V::type sum = acc[0];
  for (int i = 1; i < kFmaChains; ++i) sum += acc[i];
  float total = 0;
  for (int i = 0; i < V::size; ++i) total += sum[i];
  return total;
}

// GFLOP/s of all threads (at::get_num_threads()) together, best of `rounds`.
inline double fma_peak(int64_t iterations, int64_t rounds) {
  const int64_t threads = at::get_num_threads();
  double best = 0;
  for (int64_t round = 0; round < rounds; ++round) {
    std::vector<float> sink(threads);
    const auto start = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) sink[t] = fma_chains(iterations, 1.0f + t);
    });
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    const double flops =
        2.0 * kFmaChains * simd::Vec<float>::size * static_cast<double>(iterations) * threads;
    best = std::max(best, flops / elapsed.count() / 1e9);
  }
  return best;
}

}  // namespace CONV_EXT_ISA
}  // namespace cpu
}  // namespace conv_ext
