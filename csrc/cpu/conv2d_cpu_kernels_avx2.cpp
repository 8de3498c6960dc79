// The CPU kernels compiled for AVX2 with FMA: 32-byte vectors.
// conv2d_cpu_isa.h: runtime dispatch; the CPU's features are checked before
// anything here runs.
#include "conv2d_cpu_isa_prelude.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma")
#include "conv2d_cpu_target_macros.h"
#define CONV_EXT_ISA avx2
#include "conv2d_cpu_backends.h"
#endif
