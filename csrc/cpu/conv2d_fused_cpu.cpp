// conv2d_fused on the CPU: the forward convolution, then the epilogue
// (conv2d_epilogue.h) in one pass over the output, in the output's layout.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "../conv2d_front.h"
#include "conv2d_cpu_common.h"

namespace conv_ext {
namespace cpu {
namespace {

// out: N x K x HW, channels_last ([N][HW][K]) or not ([N][K][HW]).
template <typename T>
void apply_epilogue(T* out, const Epilogue<T>& e, int64_t N, int64_t K, int64_t HW,
                    bool channels_last) {
  using A = at::opmath_type<T>;
  if (channels_last) {
    at::parallel_for(0, N * HW, grain_for(K), [&](int64_t begin, int64_t end) {
      for (int64_t px = begin; px < end; ++px) {
        T* o = out + px * K;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t i = px * K + k;
          o[k] = static_cast<T>(e.template apply<A>(static_cast<A>(o[k]), k, i));
        }
      }
    });
  } else {
    at::parallel_for(0, N * K, grain_for(HW), [&](int64_t begin, int64_t end) {
      for (int64_t nk = begin; nk < end; ++nk) {
        const int64_t k = nk % K;
        T* o = out + nk * HW;
        for (int64_t hw = 0; hw < HW; ++hw) {
          o[hw] = static_cast<T>(e.template apply<A>(static_cast<A>(o[hw]), k, nk * HW + hw));
        }
      }
    });
  }
}

at::Tensor conv2d_forward_op(const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("conv_ext::conv2d_forward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t)>();
  return op.call(input, weight, bias, stride, padding, dilation, groups);
}

at::Tensor conv2d_fused_cpu(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& scale,
                            const std::optional<at::Tensor>& shift,
                            const std::optional<at::Tensor>& residual,
                            c10::string_view activation, bool residual_before_activation,
                            at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups) {
  return conv2d_fused_front(
      input, weight, bias, scale, shift, residual, activation, residual_before_activation, stride,
      padding, dilation, groups, conv2d_forward_op,
      [](at::Tensor& output, const EpilogueTensors& e, const Conv2dShape& p,
         at::MemoryFormat format) {
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(),
                                        "conv2d_fused_cpu", [&] {
          const Epilogue<scalar_t> ep = e.view<scalar_t>();
          if (ep.is_identity()) return;
          apply_epilogue<scalar_t>(output.mutable_data_ptr<scalar_t>(), ep, p.N, p.K, p.P * p.Q,
                                   format == at::MemoryFormat::ChannelsLast);
        });
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(conv_ext, CPU, m) {
  m.impl("conv2d_fused", &conv2d_fused_cpu);
}

}  // namespace cpu
}  // namespace conv_ext
