// The CPU kernels compiled for the build's baseline ISA (x86-64: SSE2, 16-byte vectors; the fallback).
// conv2d_cpu_isa.h: runtime dispatch; the CPU's features are checked before
// anything here runs.
#include "conv2d_cpu_isa_prelude.h"

#define CONV_EXT_ISA portable
#include "conv2d_cpu_backends.h"
