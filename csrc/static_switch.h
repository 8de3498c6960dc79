// Runtime values to compile-time constants, in the manner of
// flash-attention's static_switch.h: the body (a lambda) is instantiated once
// per listed value, and sees the value as a constexpr. The one list of
// specialised filter sizes; both backends use it (CPU and CUDA kernels may
// unroll their taps for these sizes, 0 meaning any size).
//
//   KERNEL_SIZE_SWITCH(R, S, kKernel, [&] { launch(kernel<T, kKernel>, ...); });
#pragma once

#define KERNEL_SIZE_SWITCH(R, S, CONST_NAME, ...)   \
  [&] {                                             \
    if ((R) == 3 && (S) == 3) {                     \
      constexpr static int CONST_NAME = 3;          \
      return __VA_ARGS__();                         \
    } else if ((R) == 5 && (S) == 5) {              \
      constexpr static int CONST_NAME = 5;          \
      return __VA_ARGS__();                         \
    } else {                                        \
      constexpr static int CONST_NAME = 0;          \
      return __VA_ARGS__();                         \
    }                                               \
  }()
