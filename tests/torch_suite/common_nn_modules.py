"""PyTorch's generated module tests of the four convolutions conv_ext replaces.

test/test_nn.py builds one test per entry of the installed
torch.testing._internal.common_nn's `module_tests` and `get_new_module_tests()`
(`NewModuleTest(**params)`, run on the CPU as `test(self)` in an NNTestCase):
forward against the entry's reference, the Jacobians by gradcheck, gradgradcheck,
non-contiguous inputs, pickling. This file builds the same tests for the
Conv1d, Conv2d, ConvTranspose1d and ConvTranspose2d entries, so they run
without test_nn.py (a 500 KB file). Not built: test_nn.py's extra variants of
an entry (`check_with_long_tensor`: integer tensors, which conv_ext refuses by
design) and the CUDA tests.

Run by run.py after its swap (the entries construct `nn.<module_name>` when
the test runs, so they build conv_ext's modules); not collected by the
project's own pytest run (the name does not start with test_).
"""
import torch
import torch.nn as nn
from torch.testing._internal.common_nn import NNTestCase, NewModuleTest, get_new_module_tests, module_tests
from torch.testing._internal.common_utils import freeze_rng_state, run_tests

CONVOLUTIONS = ("Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d")


class TestNNConvolutionModules(NNTestCase):
    """test_nn.py's TestNN, reduced to what NewModuleTest calls back."""
    _do_cuda_memory_leak_check = True
    _do_cuda_non_default_stream = True

    def _forward(self, module, input):
        with freeze_rng_state():
            return module(*input) if isinstance(input, tuple) else module(input)

    def _backward(self, module, input, output, grad_output, create_graph=False):
        output.backward(grad_output, retain_graph=True, create_graph=create_graph)
        if isinstance(input, tuple):
            return tuple(i.grad.data if i.grad is not None else None for i in input)
        return input.grad.data if input.grad is not None else None

    def _zero_grad_parameters(self, module):
        for p in module.parameters():
            if p.grad is not None:
                with torch.no_grad():
                    p.grad.zero_()
                p.grad.detach_()

    def _get_parameters(self, module):
        params = list(module.parameters())
        return params, [p.grad for p in params]


def _module_name(params):
    return params.get("module_name") or params.get("fullname", "").split("_")[0]


for _params in module_tests + get_new_module_tests():
    if _module_name(_params) not in CONVOLUTIONS:
        continue
    _params = dict(_params)
    if "constructor" not in _params:
        _params["constructor"] = getattr(nn, _params.pop("module_name"))
    _params.pop("check_with_long_tensor", None)
    _test = NewModuleTest(**_params)
    _name = _test.get_name()
    if hasattr(TestNNConvolutionModules, _name):
        raise RuntimeError(f"two tests named {_name}")
    if _test.test_cpu:
        setattr(TestNNConvolutionModules, _name, lambda self, test=_test: test(self))


if __name__ == "__main__":
    run_tests()
