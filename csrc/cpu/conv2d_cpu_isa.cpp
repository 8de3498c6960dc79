// Which ISA's copy of the CPU kernels runs (conv2d_cpu_isa.h). Compiled for
// the baseline ISA: it must run on any CPU.
#include "conv2d_cpu_isa.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>

#include "conv2d_cpu_amx.h"
#include "conv2d_cpu_avx512bf16.h"

#if defined(__linux__) && defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace conv_ext {
namespace cpu {
namespace {

constexpr bool kX86 =
#if defined(__x86_64__) || defined(__i386__)
    true;
#else
    false;
#endif

// Every feature the ISA's translation unit was compiled with
// (conv2d_cpu_kernels_<isa>.cpp); __builtin_cpu_supports also checks that
// the OS saves the vector registers.
bool cpu_supports(CpuIsa isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (isa) {
    case CpuIsa::kAvx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    case CpuIsa::kAvx2:
      return avx2;
    case CpuIsa::kPortable:
      return true;
  }
  return false;
#else
  return isa == CpuIsa::kPortable;
#endif
}

// Best first.
std::vector<const CpuBackends*> all_backends() {
  if constexpr (kX86) return {&avx512::kBackends, &avx2::kBackends, &portable::kBackends};
  return {&portable::kBackends};
}

const CpuBackends& backends_named(const std::string& name) {
  std::string known;
  for (const CpuBackends* b : all_backends()) {
    known += known.empty() ? "" : ", ";
    known += b->name;
    if (name != b->name) continue;
    TORCH_CHECK(cpu_supports(b->isa), "conv_ext: the CPU kernels for ", name,
                " were asked for, but this CPU lacks that ISA (it supports: ",
                c10::Join(", ", supported_isas()), ")");
    return *b;
  }
  TORCH_CHECK(false, "conv_ext: unknown CPU ISA '", name, "' (expected auto, ", known, ")");
}

const CpuBackends& best_backends() {
  for (const CpuBackends* b : all_backends()) {
    if (cpu_supports(b->isa)) return *b;
  }
  return portable::kBackends;
}

// CONV_EXT_CPU_ISA=avx512|avx2|portable|auto, read once.
const CpuBackends& initial_backends() {
  const char* env = std::getenv("CONV_EXT_CPU_ISA");
  if (env == nullptr || *env == '\0' || std::string(env) == "auto") return best_backends();
  try {
    return backends_named(env);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "CONV_EXT_CPU_ISA=", env, ": ", e.msg());
  }
}

std::atomic<const CpuBackends*> g_active{nullptr};

}  // namespace

const CpuBackends& active_backends() {
  const CpuBackends* b = g_active.load(std::memory_order_acquire);
  if (b != nullptr) return *b;
  // Raises (every call, until the variable is fixed) for an ISA the CPU lacks.
  static const CpuBackends& initial = initial_backends();
  const CpuBackends* expected = nullptr;
  g_active.compare_exchange_strong(expected, &initial, std::memory_order_acq_rel);
  return *g_active.load(std::memory_order_acquire);
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const CpuBackends* b : all_backends()) {
    if (cpu_supports(b->isa)) names.emplace_back(b->name);
  }
  return names;
}

std::string set_active_isa(const std::string& name) {
  const std::string previous = active_backends().name;
  const CpuBackends& next = name == "auto" ? best_backends() : backends_named(name);
  g_active.store(&next, std::memory_order_release);
  return previous;
}

namespace {

// AMX-TILE and AMX-BF16 (cpuid leaf 7: EDX bits 24 and 22), and the
// process's permission to the tile data state: Linux (5.16+) enables it per
// process on request; without it the first tile instruction faults.
bool amx_probe() {
#if defined(__linux__) && defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool tile = (edx >> 24) & 1u, bf16 = (edx >> 22) & 1u;
  if (!tile || !bf16 || !cpu_supports(CpuIsa::kAvx512)) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

// CONV_EXT_CPU_AMX=0 turns AMX off (read once); anything else: on where supported.
std::atomic<bool> g_amx_enabled{[] {
  const char* env = std::getenv("CONV_EXT_CPU_AMX");
  return env == nullptr || std::string(env) != "0";
}()};

}  // namespace

bool amx_supported() {
  static const bool supported = amx_probe();
  return supported;
}

bool amx_active() {
  return g_amx_enabled.load(std::memory_order_relaxed) && amx_supported() &&
         active_backends().isa == CpuIsa::kAvx512;
}

namespace {

// Whether vdpbf16ps beats the float32 kernels on this CPU, by vendor (a
// fixed rule, so the path and its numerics do not depend on a timing):
// AMD's Zen 4/5 run it at twice the multiply-adds of an fp32 FMA (Zen 5,
// 2 threads: bf16 ResNet-50 forward 0.70x -> 1.06x torch with it); on an
// Intel Xeon with AMX (Sapphire Rapids class) the same kernels ran at
// 0.55-0.65x of the float32 kernels on the same bf16 data (first layer 134
// vs 301 GFLOP/s, 3x3 64@56 221 vs 397), so Intel keeps the float32 kernels
// (and AMX where it has it). docs/cpu.md: "bfloat16 on an AMX Xeon".
bool bf16_dot_pays() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return false;
  return ebx == 0x68747541u && edx == 0x69746e65u && ecx == 0x444d4163u;  // "AuthenticAMD"
#else
  return false;
#endif
}

// CONV_EXT_CPU_BF16_DOT=0 turns the AVX512-BF16 forward off, =1 on (where
// supported), read once; unset: on where it pays (bf16_dot_pays).
std::atomic<bool> g_bf16_dot_enabled{[] {
  const char* env = std::getenv("CONV_EXT_CPU_BF16_DOT");
  if (env != nullptr && *env != '\0') return std::string(env) != "0";
  return bf16_dot_pays();
}()};

}  // namespace

bool bf16_dot_supported() {
#if defined(__x86_64__)
  static const bool supported = [] {
    __builtin_cpu_init();
    return cpu_supports(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512bf16");
  }();
  return supported;
#else
  return false;
#endif
}

bool bf16_dot_active() {
  return g_bf16_dot_enabled.load(std::memory_order_relaxed) && bf16_dot_supported() &&
         active_backends().isa == CpuIsa::kAvx512;
}

bool set_bf16_dot_enabled(bool enabled) {
  TORCH_CHECK(!enabled || bf16_dot_supported(),
              "conv_ext: the AVX512-BF16 forward was asked for, but this CPU lacks AVX512-BF16");
  return g_bf16_dot_enabled.exchange(enabled) && bf16_dot_supported();
}

bool set_amx_enabled(bool enabled) {
  TORCH_CHECK(!enabled || amx_supported(),
              "conv_ext: AMX was asked for, but this CPU lacks AMX-BF16 or the OS did not "
              "grant the tile state");
  // false where unsupported, so that restoring the returned value never raises
  return g_amx_enabled.exchange(enabled) && amx_supported();
}

}  // namespace cpu
}  // namespace conv_ext
