// Argument checks of conv2d_fused beyond conv2d_forward's (which it runs
// first): the activation name and the epilogue tensors. Shared by the CPU and
// CUDA ops and the CUDA emulation.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <optional>
#include <string>

#include "conv2d_epilogue.h"
#include "conv2d_params.h"

namespace conv_ext {

inline Activation parse_activation(c10::string_view name) {
  if (name == "none") return Activation::kNone;
  if (name == "relu") return Activation::kRelu;
  if (name == "relu6") return Activation::kRelu6;
  if (name == "silu") return Activation::kSilu;
  if (name == "gelu") return Activation::kGeluErf;
  if (name == "gelu_tanh") return Activation::kGeluTanh;
  if (name == "hardswish") return Activation::kHardswish;
  TORCH_CHECK_VALUE(false, "conv_ext::conv2d_fused: unknown activation '", std::string(name),
                    "'; expected one of none, relu, relu6, silu, gelu, gelu_tanh, hardswish");
}

inline bool is_defined(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined();
}

// scale/shift: 1-d of K elements; residual: the output's shape; all of the
// input's dtype and device.
inline void check_conv2d_epilogue(const at::Tensor& input, const Conv2dShape& p,
                                  const std::optional<at::Tensor>& scale,
                                  const std::optional<at::Tensor>& shift,
                                  const std::optional<at::Tensor>& residual) {
  for (const auto& [t, name] : {std::pair{&scale, "scale"}, std::pair{&shift, "shift"}}) {
    if (!is_defined(*t)) continue;
    TORCH_CHECK((*t)->dim() == 1 && (*t)->size(0) == p.K, "conv_ext::conv2d_fused: expected ",
                name, " to be 1-dimensional with ", p.K, " elements, but got ", name,
                " of size ", (*t)->sizes(), " instead");
    check_same_type(input, "Input", **t, name);
  }
  if (is_defined(residual)) {
    TORCH_CHECK(residual->sizes() == at::IntArrayRef(p.output_sizes()),
                "conv_ext::conv2d_fused: expected residual of size ",
                at::IntArrayRef(p.output_sizes()), " (the output's), but got ",
                residual->sizes());
    check_same_type(input, "Input", *residual, "residual");
  }
}

// The epilogue's tensors made ready for a kernel that writes its output in
// `format`: contiguous per-channel vectors, the residual in the output's
// layout (so one index addresses both).
struct EpilogueTensors {
  at::Tensor scale, shift, residual;
  Activation activation = Activation::kNone;
  bool residual_before_activation = true;

  template <typename T>
  Epilogue<T> view() const {
    Epilogue<T> e;
    e.scale = scale.defined() ? scale.const_data_ptr<T>() : nullptr;
    e.shift = shift.defined() ? shift.const_data_ptr<T>() : nullptr;
    e.residual = residual.defined() ? residual.const_data_ptr<T>() : nullptr;
    e.activation = activation;
    e.residual_before_activation = residual_before_activation;
    return e;
  }
};

inline EpilogueTensors prepare_epilogue(const std::optional<at::Tensor>& scale,
                                        const std::optional<at::Tensor>& shift,
                                        const std::optional<at::Tensor>& residual,
                                        c10::string_view activation,
                                        bool residual_before_activation,
                                        at::MemoryFormat format) {
  EpilogueTensors e;
  if (is_defined(scale)) e.scale = scale->contiguous();
  if (is_defined(shift)) e.shift = shift->contiguous();
  if (is_defined(residual)) e.residual = residual->contiguous(format);
  e.activation = parse_activation(activation);
  e.residual_before_activation = residual_before_activation;
  return e;
}

}  // namespace conv_ext
