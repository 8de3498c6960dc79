"""PyTorch's own OpInfo samples and error inputs for nn.functional.conv2d,
conv1d, conv_transpose1d and conv_transpose2d, and its ModuleInfo inputs
for the four modules, run through conv_ext."""
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

OURS = {  # OpInfo name -> conv_ext's function
    "nn.functional.conv2d": conv_ext.conv2d,
    "nn.functional.conv1d": conv_ext.conv1d,
    "nn.functional.conv_transpose1d": conv_ext.conv_transpose1d,
    "nn.functional.conv_transpose2d": conv_ext.conv_transpose2d,
}
OPINFOS = {op.name: op for op in op_db if op.name in OURS}
MODULES = {nn.Conv2d: conv_ext.Conv2d, nn.Conv1d: conv_ext.Conv1d,
           nn.ConvTranspose1d: conv_ext.ConvTranspose1d,
           nn.ConvTranspose2d: conv_ext.ConvTranspose2d}
MODULEINFOS = {m.module_cls: m for m in module_db if m.module_cls in MODULES}


def _differentiable(t):
    return isinstance(t, torch.Tensor) and t.requires_grad


@pytest.mark.parametrize("name", list(OURS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opinfo_sample_inputs(name, dtype):
    opinfo = OPINFOS[name]
    samples = list(opinfo.sample_inputs("cpu", dtype, requires_grad=True))
    assert len(samples) >= 10
    for sample in samples:
        args = (sample.input, *sample.args)
        expected = opinfo.op(*args, **sample.kwargs)
        got = OURS[name](*args, **sample.kwargs)
        torch.testing.assert_close(got, expected, **TOLERANCES[dtype], msg=lambda m: f"{sample}: {m}")
        inputs = [t for t in args if _differentiable(t)]
        grad_output = torch.randn_like(expected)
        want = torch.autograd.grad(expected, inputs, grad_output, allow_unused=True)
        have = torch.autograd.grad(got, inputs, grad_output, allow_unused=True)
        for g, e in zip(have, want):
            torch.testing.assert_close(g, e, **TOLERANCES[dtype], msg=lambda m: f"{sample} grad: {m}")


# (conv_transpose1d/2d's OpInfos have no error inputs.)
ERROR_INPUTS = [(name, e) for name, op in OPINFOS.items() if op.error_inputs_func is not None
                for e in op.error_inputs("cpu")]


@pytest.mark.parametrize("name,error_input", ERROR_INPUTS,
                         ids=[f"{n[14:]}-{e.error_regex[:40]}" for n, e in ERROR_INPUTS])
def test_opinfo_error_inputs(name, error_input):
    sample = error_input.sample_input
    with pytest.raises(error_input.error_type, match=error_input.error_regex):
        OURS[name](sample.input, *sample.args, **sample.kwargs)


def _module_inputs(cls, dtype):
    info = MODULEINFOS[cls]
    return info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                   training=True)


@pytest.mark.parametrize("cls", list(MODULES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_moduleinfo_inputs(cls, dtype):
    module_inputs = _module_inputs(cls, dtype)
    assert module_inputs
    for module_input in module_inputs:
        ctor = module_input.constructor_input
        reference = cls(*ctor.args, **ctor.kwargs, dtype=dtype)
        ours = MODULES[cls](*ctor.args, **ctor.kwargs, dtype=dtype)
        ours.load_state_dict(reference.state_dict())
        assert repr(ours) == "conv_ext." + repr(reference)
        compare_modules(reference, ours, module_input.forward_input.args[0], dtype)


def test_error_regexes_are_torchs_own():
    # The error inputs above must exercise real checks, not an empty list.
    regexes = {e.error_regex for _, e in ERROR_INPUTS}
    assert {name for name, _ in ERROR_INPUTS} == {"nn.functional.conv2d", "nn.functional.conv1d"}
    assert any(re.search("stride", r) for r in regexes)
    assert any(re.search("groups", r) for r in regexes)
