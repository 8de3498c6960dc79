// Include right after a `#pragma GCC target(...)` line of an ISA copy
// (conv2d_cpu_kernels_<isa>.cpp). g++ keeps the ISA macros of the command
// line under a target pragma (gcc updates them in C only): this defines the
// ones the kernels test (simd.h), as the -m flags would. AVX2 and FMA always;
// the AVX-512 set (F, BW, VL, DQ) where CONV_EXT_TARGET_AVX512 is defined.
// No include guard: each copy includes it once, after its own pragma.
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#if defined(CONV_EXT_TARGET_AVX512)
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
#endif
