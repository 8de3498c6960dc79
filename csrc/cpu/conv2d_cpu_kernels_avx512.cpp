// The CPU kernels compiled for AVX-512 (F, BW, VL, DQ) with AVX2 and FMA: 64-byte vectors.
// conv2d_cpu_isa.h: runtime dispatch; the CPU's features are checked before
// anything here runs.
#include "conv2d_cpu_isa_prelude.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")
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
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#define CONV_EXT_ISA avx512
#include "conv2d_cpu_backends.h"
#endif
