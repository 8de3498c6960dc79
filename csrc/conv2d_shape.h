// The one description of a 2-d convolution problem (like CUTLASS's
// Conv2dProblemSize), shared by the argument checks (conv2d_params.h), the CPU
// kernels, the CUDA plans and kernels, and the CPU emulation of the CUDA
// kernels. Plain data and constexpr arithmetic, no ATen and no CUDA runtime,
// so nvcc (host and device code) and g++ both accept it. What a backend needs
// beyond the fields is a named function here, not a copy of the fields.
#pragma once

#include <array>
#include <cstdint>

#if defined(__CUDACC__)
#define CONV_EXT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CONV_EXT_HOST_DEVICE inline
#endif

namespace conv_ext {

// The three ops, for path selection and plans.
enum class Pass { kForward, kBackwardInput, kBackwardWeight };

// Input N x C x H x W, weight K x (C/groups) x R x S, output N x K x P x Q.
// int64_t throughout: offsets into tensors of more than 2^31 elements must
// not wrap. Built (and checked) only by make_conv2d_shape in conv2d_params.h.
struct Conv2dShape {
  int64_t N = 0, C = 0, H = 0, W = 0;
  int64_t K = 0, R = 0, S = 0;
  int64_t P = 0, Q = 0;
  int64_t groups = 1;
  int64_t C_per_group = 0, K_per_group = 0;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;

  constexpr std::array<int64_t, 4> input_sizes() const { return {N, C, H, W}; }
  constexpr std::array<int64_t, 4> weight_sizes() const { return {K, C_per_group, R, S}; }
  constexpr std::array<int64_t, 4> output_sizes() const { return {N, K, P, Q}; }

  // Depthwise: every group reads exactly one input channel (groups == C),
  // with any channel multiplier K_per_group. This is the only definition.
  CONV_EXT_HOST_DEVICE constexpr bool is_depthwise() const { return C_per_group == 1; }
  // Grouped: more than one group (depthwise problems included).
  CONV_EXT_HOST_DEVICE constexpr bool is_grouped() const { return groups > 1; }
  // 1x1 filter without padding: every output pixel reads one input pixel.
  CONV_EXT_HOST_DEVICE constexpr bool is_pointwise() const {
    return R == 1 && S == 1 && pad_h == 0 && pad_w == 0;
  }
  CONV_EXT_HOST_DEVICE constexpr bool is_unit_stride() const {
    return stride_h == 1 && stride_w == 1;
  }
  CONV_EXT_HOST_DEVICE constexpr int64_t taps() const { return R * S; }
};

// (size + 2 * pad - extent) / stride + 1: the output length along one axis,
// extent being the dilated kernel's (dilation * (kernel - 1) + 1). The one
// output-size formula of the C++ side.
CONV_EXT_HOST_DEVICE constexpr int64_t conv_output_length(int64_t size, int64_t pad,
                                                          int64_t extent, int64_t stride) {
  return (size + 2 * pad - extent) / stride + 1;
}

// Input positions (padding included) that `outputs` consecutive outputs read
// along one axis: the inverse of conv_output_length.
CONV_EXT_HOST_DEVICE constexpr int64_t input_span(int64_t outputs, int64_t stride,
                                                  int64_t kernel, int64_t dilation) {
  return (outputs - 1) * stride + (kernel - 1) * dilation + 1;
}

// Stride phases of grad-input, one axis. Input positions x = phase + i * stride
// (x % stride == phase) receive contributions from the same taps only:
// tap = first + j * step for j < count, those with
// tap * dilation == phase + pad (mod stride), each from output position
// i + phase_tap_offset(tap). Both backends split grad-input this way, so no
// multiply meets an inserted zero.
struct PhaseTaps {
  int first, step, count;
};

CONV_EXT_HOST_DEVICE constexpr PhaseTaps phase_taps(int64_t phase, int64_t pad, int64_t stride,
                                                    int64_t dilation, int64_t kernel) {
  // Residues of tap * dilation repeat with period stride / gcd(dilation, stride).
  int64_t a = dilation % stride, b = stride;
  while (a != 0) {
    const int64_t t = b % a;
    b = a;
    a = t;
  }
  const int step = static_cast<int>(stride / b);
  const int64_t target = (phase + pad) % stride;
  for (int t = 0; t < step && t < kernel; ++t) {
    if ((t * dilation) % stride == target) {
      return PhaseTaps{t, step, static_cast<int>((kernel - 1 - t) / step + 1)};
    }
  }
  return PhaseTaps{0, step, 0};
}

// Output position minus i for input position x = phase + i * stride and a
// tap of the phase: (phase + pad - tap * dilation) / stride, exact (it may be
// negative).
CONV_EXT_HOST_DEVICE constexpr int64_t phase_tap_offset(int64_t phase, int64_t pad,
                                                        int64_t stride, int64_t dilation,
                                                        int64_t tap) {
  return (phase + pad - tap * dilation) / stride;
}

// Input positions x < size with x % stride == phase.
CONV_EXT_HOST_DEVICE constexpr int64_t phase_positions(int64_t phase, int64_t size,
                                                       int64_t stride) {
  return phase < size ? (size - phase + stride - 1) / stride : 0;
}

}  // namespace conv_ext
