// Every header the per-ISA kernel headers use, included by
// conv2d_cpu_kernels_<isa>.cpp *before* its `#pragma GCC target`: what these
// define (torch's inline functions and templates, the standard library, the
// shared conv_ext headers) is then compiled for the build's baseline ISA in
// every translation unit, so the linker's pick among their copies never
// lands on AVX-512 code. A kernel header that needs another system or torch
// header adds it here too (tests/test_cpu_isa.py checks the built library:
// no function outside the ISA namespaces holds AVX code).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "../conv2d_epilogue.h"
#include "../conv2d_fused_params.h"
#include "../conv2d_params.h"
#include "../conv2d_shape.h"
#include "../static_switch.h"
#include "conv2d_cpu_common.h"
#include "conv2d_cpu_isa.h"
#include "conv2d_cpu_plan.h"
