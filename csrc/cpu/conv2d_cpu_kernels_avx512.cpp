// The CPU kernels compiled for AVX-512 (F, BW, VL, DQ) with AVX2 and FMA: 64-byte vectors.
// conv2d_cpu_isa.h: runtime dispatch; the CPU's features are checked before
// anything here runs.
#include "conv2d_cpu_isa_prelude.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")
#define CONV_EXT_TARGET_AVX512
#include "conv2d_cpu_target_macros.h"
#define CONV_EXT_ISA avx512
#include "conv2d_cpu_backends.h"
#endif
