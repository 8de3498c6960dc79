// The CPU kernels compiled for AVX2 with FMA: 32-byte vectors.
// conv2d_cpu_isa.h: runtime dispatch; the CPU's features are checked before
// anything here runs.
#include "conv2d_cpu_isa_prelude.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma")
// g++ keeps the ISA macros of the command line under a target pragma (gcc
// updates them in C only): define the ones the kernels test, as -m flags would.
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#define CONV_EXT_ISA avx2
#include "conv2d_cpu_backends.h"
#endif
