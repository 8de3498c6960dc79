// The conv_ext_debug op library: test and benchmark helpers, not part of
// conv_ext's public ops (torch.ops.conv_ext). All of them are declared here.
//
//   cpu_forward_path(input, weight, stride, padding, dilation, groups) -> str
//       the CPU path conv2d_forward takes for these arguments (select_path,
//       conv2d_cpu_plan.h): "pointwise", "first_layer", "dense", "depthwise"
//       or "generic"
//   simd_isa() -> str
//       the vector ISA the CPU kernels were compiled for (simd.h)
//   fma_peak_cpu(iterations, rounds) -> float
//       the machine's measured fp32 FMA throughput in GFLOP/s (all threads),
//       the "100%" of the benchmark's share-of-peak column
#include <torch/library.h>

#include <ATen/Parallel.h>

#include <chrono>
#include <string>
#include <vector>

#include "conv2d_params.h"
#include "cpu/conv2d_cpu_plan.h"
#include "cpu/simd.h"

namespace conv_ext {
namespace debug {
namespace {

std::string cpu_forward_path(const at::Tensor& input, const at::Tensor& weight,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups) {
  const Conv2dShape p = check_conv2d_forward(input, weight, std::nullopt, stride, padding,
                                             dilation, groups);
  return cpu::path_name(cpu::select_path(p, Pass::kForward, input.scalar_type()));
}

std::string simd_isa() { return cpu::simd::kIsaName; }

// Every thread runs independent chains of vector FMAs (enough chains to cover
// the FMA latency times the number of FMA pipes), so the loop is bound by
// FMA throughput only.
namespace simd = cpu::simd;
using V = simd::Vec<float>;
// FMA latency (4 cycles) x FMA pipes (2) independent chains, within the
// register file (16 vector registers without AVX-512).
constexpr int kChains = simd::kVectorBytes == 64 ? 16 : 10;

// Runs `iterations` rounds of kChains FMAs; returns a value that depends on
// them all so the compiler cannot drop the loop.
float fma_chains(int64_t iterations, float seed) {
  V::type acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = V::broadcast(seed + static_cast<float>(i));
  const V::type a = V::broadcast(0.999999f), b = V::broadcast(1e-7f);
  for (int64_t it = 0; it < iterations; ++it) {
    // Without -ffast-math the compiler may not fold or reorder the FMAs,
    // so each iteration stays kChains vector FMAs on registers.
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) {
      acc[i] = simd::fmadd(acc[i], a, b);
    }
  }
  V::type sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum += acc[i];
  float total = 0;
  for (int i = 0; i < V::size; ++i) total += sum[i];
  return total;
}

// GFLOP/s of all threads (at::get_num_threads()) together, best of `rounds`.
double fma_peak_cpu(int64_t iterations, int64_t rounds) {
  TORCH_CHECK(iterations > 0 && rounds > 0, "fma_peak_cpu: expected positive arguments");
  const int64_t threads = at::get_num_threads();
  double best = 0;
  for (int64_t round = 0; round < rounds; ++round) {
    std::vector<float> sink(threads);
    const auto start = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) sink[t] = fma_chains(iterations, 1.0f + t);
    });
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    const double flops = 2.0 * kChains * V::size * static_cast<double>(iterations) * threads;
    best = std::max(best, flops / elapsed.count() / 1e9);
  }
  return best;
}

}  // namespace

TORCH_LIBRARY(conv_ext_debug, m) {
  m.def("cpu_forward_path(Tensor input, Tensor weight, int[] stride, int[] padding, "
        "int[] dilation, int groups) -> str", &cpu_forward_path);
  m.def("simd_isa() -> str", &simd_isa);
  m.def("fma_peak_cpu(int iterations=20000000, int rounds=3) -> float", &fma_peak_cpu);
}

}  // namespace debug
}  // namespace conv_ext
