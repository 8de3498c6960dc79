// The epilogue of conv2d_fused, applied to each output element after the
// convolution (which already includes the bias): optional per-channel scale
// and shift (a BatchNorm folded at run time), an optional residual added
// before or after the activation, and the activation. One definition for the
// CPU kernels, the CUDA kernels and their CPU emulation: device-safe code
// only (no ATen), so nvcc and g++ compile the same arithmetic.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(CONV_EXT_CUDA_EMULATION)
#define CONV_EXT_EPILOGUE_FN __host__ __device__ __forceinline__
#else
#define CONV_EXT_EPILOGUE_FN inline
#endif

namespace conv_ext {

// The activations conv2d_fused applies, by the names its schema takes
// (parse_activation in conv2d_fused_params.h).
enum class Activation : int {
  kNone = 0,
  kRelu,
  kRelu6,
  kSilu,
  kGeluErf,   // F.gelu(x), approximate='none'
  kGeluTanh,  // F.gelu(x, approximate='tanh')
  kHardswish,
};

namespace epilogue_math {
template <typename T>
CONV_EXT_EPILOGUE_FN T exp_(T x) {
#ifdef __CUDA_ARCH__
  return exp(x);
#else
  return std::exp(x);
#endif
}
template <typename T>
CONV_EXT_EPILOGUE_FN T erf_(T x) {
#ifdef __CUDA_ARCH__
  return erf(x);
#else
  return std::erf(x);
#endif
}
template <typename T>
CONV_EXT_EPILOGUE_FN T tanh_(T x) {
#ifdef __CUDA_ARCH__
  return tanh(x);
#else
  return std::tanh(x);
#endif
}
}  // namespace epilogue_math

// The activation of one value, with torch's formulas (NaN stays NaN, as in
// torch.relu and F.hardtanh: comparisons with NaN are false).
template <typename T>
CONV_EXT_EPILOGUE_FN T activate(T v, Activation a) {
  using namespace epilogue_math;
  switch (a) {
    case Activation::kRelu:
      return v < T(0) ? T(0) : v;
    case Activation::kRelu6:
      return v < T(0) ? T(0) : (v > T(6) ? T(6) : v);
    case Activation::kSilu:
      return v / (T(1) + exp_(-v));
    case Activation::kGeluErf:
      return T(0.5) * v * (T(1) + erf_(v * T(0.70710678118654752440)));
    case Activation::kGeluTanh: {
      const T inner = T(0.79788456080286535588) * (v + T(0.044715) * v * v * v);
      return T(0.5) * v * (T(1) + tanh_(inner));
    }
    case Activation::kHardswish: {
      T t = v + T(3);
      t = t < T(0) ? T(0) : (t > T(6) ? T(6) : t);
      return v * t / T(6);
    }
    default:
      return v;
  }
}

// The epilogue's arguments. scale/shift: K values or null; residual: a
// tensor of the output's shape in the output's memory layout (the caller
// indexes it like the output), or null.
template <typename T>
struct Epilogue {
  const T* scale = nullptr;
  const T* shift = nullptr;
  const T* residual = nullptr;
  Activation activation = Activation::kNone;
  bool residual_before_activation = true;

  // Nothing to do beyond the bias: the plain forward's store.
  CONV_EXT_EPILOGUE_FN bool is_identity() const {
    return scale == nullptr && shift == nullptr && residual == nullptr &&
           activation == Activation::kNone;
  }

  // v: convolution plus bias of output channel k, in the accumulation type
  // A; index: the element's offset in the output (and residual) buffer.
  template <typename A>
  CONV_EXT_EPILOGUE_FN A apply(A v, int64_t k, int64_t index) const {
    if (scale != nullptr) v *= static_cast<A>(scale[k]);
    if (shift != nullptr) v += static_cast<A>(shift[k]);
    if (residual != nullptr && residual_before_activation) v += static_cast<A>(residual[index]);
    v = activate(v, activation);
    if (residual != nullptr && !residual_before_activation) v += static_cast<A>(residual[index]);
    return v;
  }
};

}  // namespace conv_ext
