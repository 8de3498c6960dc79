// Op schemas of the conv_ext library (the one place they are declared) and
// the Python module conv_ext._C that loads them.
#include <Python.h>
#include <torch/library.h>

#include "conv2d_params.h"

namespace conv_ext {

TORCH_LIBRARY(conv_ext, m) {
  // int[] rather than int[2]: the ops check lengths themselves so a wrong
  // length gets F.conv2d's message instead of a schema error.
  m.def(
      "conv2d_forward(Tensor input, Tensor weight, Tensor? bias, int[] stride, "
      "int[] padding, int[] dilation, int groups) -> Tensor");
  m.def(
      "conv2d_backward_input(Tensor grad_output, Tensor weight, "
      "SymInt[] input_size, int[] stride, int[] padding, int[] dilation, "
      "int groups) -> Tensor");
  m.def(
      "conv2d_backward_weight(Tensor grad_output, Tensor input, "
      "SymInt[] weight_size, int[] stride, int[] padding, int[] dilation, "
      "int groups) -> Tensor");
  // The forward with an epilogue (conv2d_epilogue.h): bias, then
  // output * scale + shift per channel, then the activation, with residual
  // added before or after it. activation: none, relu, relu6, silu, gelu,
  // gelu_tanh, hardswish.
  m.def(
      "conv2d_fused(Tensor input, Tensor weight, Tensor? bias, Tensor? scale, "
      "Tensor? shift, Tensor? residual, str activation, "
      "bool residual_before_activation, int[] stride, int[] padding, "
      "int[] dilation, int groups) -> Tensor");
}

#ifndef CONV_EXT_WITH_CUDA
// Without CUDA kernels, a CUDA tensor would otherwise meet the dispatcher's
// generic "could not run ... with arguments from the CUDA backend".
[[noreturn]] static void fail_not_built_with_cuda() {
  TORCH_CHECK(false,
              "conv_ext was built without CUDA support, so it cannot run on "
              "CUDA tensors. Rebuild it on a machine with the CUDA toolkit and "
              "a CUDA build of torch: CONV_EXT_CUDA=1 pip install "
              "--no-build-isolation . (set CUDA_HOME to the toolkit if it is "
              "not found)");
}
static at::Tensor forward_without_cuda(const at::Tensor&, const at::Tensor&,
                                       const std::optional<at::Tensor>&,
                                       at::IntArrayRef, at::IntArrayRef,
                                       at::IntArrayRef, int64_t) {
  fail_not_built_with_cuda();
}
static at::Tensor backward_without_cuda(const at::Tensor&, const at::Tensor&,
                                        at::IntArrayRef, at::IntArrayRef,
                                        at::IntArrayRef, at::IntArrayRef,
                                        int64_t) {
  fail_not_built_with_cuda();
}
static at::Tensor fused_without_cuda(const at::Tensor&, const at::Tensor&,
                                     const std::optional<at::Tensor>&,
                                     const std::optional<at::Tensor>&,
                                     const std::optional<at::Tensor>&,
                                     const std::optional<at::Tensor>&, c10::string_view,
                                     bool, at::IntArrayRef, at::IntArrayRef,
                                     at::IntArrayRef, int64_t) {
  fail_not_built_with_cuda();
}
TORCH_LIBRARY_IMPL(conv_ext, CUDA, m) {
  m.impl("conv2d_forward", &forward_without_cuda);
  m.impl("conv2d_fused", &fused_without_cuda);
  m.impl("conv2d_backward_input", &backward_without_cuda);
  m.impl("conv2d_backward_weight", &backward_without_cuda);
}
#endif

}  // namespace conv_ext

// The ops register themselves when this shared library loads; the module
// carries one flag so Python can tell whether the CUDA kernels are in it.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "conv_ext compiled ops", -1, nullptr,
  };
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef CONV_EXT_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (PyModule_AddIntConstant(module, "WITH_CUDA", with_cuda) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
