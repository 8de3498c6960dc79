"""PyTorch's own OpInfo samples and error inputs for nn.functional.conv2d,
and its ModuleInfo inputs for nn.Conv2d, run through conv_ext."""
import re

import pytest
import torch
import torch.nn as nn

# torch's test internals import expecttest; `make test` installs it, a bare
# GPU image may not have it.
pytest.importorskip("expecttest")
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402
from torch.testing._internal.common_modules import module_db  # noqa: E402

import conv_ext
from helpers import TOLERANCES, compare_modules

CONV2D_OPINFO = next(op for op in op_db if op.name == "nn.functional.conv2d")
CONV2D_MODULEINFO = next(m for m in module_db if m.module_cls is nn.Conv2d)


def _differentiable(t):
    return isinstance(t, torch.Tensor) and t.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opinfo_sample_inputs(dtype):
    samples = list(CONV2D_OPINFO.sample_inputs("cpu", dtype, requires_grad=True))
    assert len(samples) > 10
    for sample in samples:
        args = (sample.input, *sample.args)
        expected = CONV2D_OPINFO.op(*args, **sample.kwargs)
        got = conv_ext.conv2d(*args, **sample.kwargs)
        torch.testing.assert_close(got, expected, **TOLERANCES[dtype], msg=lambda m: f"{sample}: {m}")
        inputs = [t for t in args if _differentiable(t)]
        grad_output = torch.randn_like(expected)
        want = torch.autograd.grad(expected, inputs, grad_output, allow_unused=True)
        have = torch.autograd.grad(got, inputs, grad_output, allow_unused=True)
        for g, e in zip(have, want):
            torch.testing.assert_close(g, e, **TOLERANCES[dtype], msg=lambda m: f"{sample} grad: {m}")


ERROR_INPUTS = list(CONV2D_OPINFO.error_inputs("cpu"))


@pytest.mark.parametrize("error_input", ERROR_INPUTS, ids=lambda e: e.error_regex[:40])
def test_opinfo_error_inputs(error_input):
    sample = error_input.sample_input
    with pytest.raises(error_input.error_type, match=error_input.error_regex):
        conv_ext.conv2d(sample.input, *sample.args, **sample.kwargs)


def _module_inputs(dtype):
    return CONV2D_MODULEINFO.module_inputs_func(
        CONV2D_MODULEINFO, device="cpu", dtype=dtype, requires_grad=True, training=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_moduleinfo_inputs(dtype):
    module_inputs = _module_inputs(dtype)
    assert module_inputs
    for module_input in module_inputs:
        ctor = module_input.constructor_input
        reference = nn.Conv2d(*ctor.args, **ctor.kwargs, dtype=dtype)
        ours = conv_ext.Conv2d(*ctor.args, **ctor.kwargs, dtype=dtype)
        ours.load_state_dict(reference.state_dict())
        assert repr(ours) == repr(reference)
        compare_modules(reference, ours, module_input.forward_input.args[0], dtype)


def test_error_regexes_are_torchs_own():
    # The error inputs above must exercise real checks, not an empty list.
    regexes = {e.error_regex for e in ERROR_INPUTS}
    assert any(re.search("stride", r) for r in regexes)
    assert any(re.search("groups", r) for r in regexes)
