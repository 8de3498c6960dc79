"""The runner of PyTorch's own convolution tests (tests/torch_suite/run.py):
its swap of torch's convolutions and its bookkeeping of failures. (The run
itself needs a PyTorch checkout: docs/torch_suite.md.)"""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

SUITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_suite")


def _load(name):
    # By path, under a unique name: the folder is not a package, and "run"
    # is too common a name to put on sys.path.
    spec = importlib.util.spec_from_file_location(f"torch_suite_{name}",
                                                  os.path.join(SUITE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load("run")
CLASSES, KNOWN = _load("known_failures").CLASSES, _load("known_failures").KNOWN


def test_known_failures_name_a_class():
    for pattern, (cls, why) in KNOWN.items():
        re.compile(pattern)
        assert cls in CLASSES, pattern
        assert why


def test_classify():
    known = {r"f\.py::T::test_a.*": ("bug", "x"), r"f\.py::T::test_b": ("precision", "y")}
    outcomes = {
        "f.py::T::test_a_cpu": "failed",   # explained
        "f.py::T::test_b": "passed",       # listed but passes: stale
        "f.py::T::test_c": "failed",       # not listed
        "f.py::T::test_d": "skipped",
    }
    by_class, unexplained, stale = run.classify(outcomes, known)
    assert dict(by_class) == {"bug": ["f.py::T::test_a_cpu"]}
    assert unexplained == ["f.py::T::test_c"]
    assert stale == ["f.py::T::test_b"]


def test_test_id_keeps_the_file_name():
    assert (run.Recorder.test_id("../../x/test/nn/test_convolution.py::TestConvolutionNN::test_a")
            == "test_convolution.py::TestConvolutionNN::test_a")


def test_patch_swaps_torch_for_conv_ext_and_counts_calls():
    # In a child process: the swap is global to the interpreter.
    code = """
import sys
sys.path.insert(0, sys.argv[1])
import torch, torch.nn as nn, torch.nn.functional as F
import run
calls = run.patch_torch()
import conv_ext
assert nn.Conv2d is conv_ext.Conv2d and nn.ConvTranspose1d is conv_ext.ConvTranspose1d
assert F.conv1d is conv_ext.conv1d and F.conv_transpose2d is conv_ext.conv_transpose2d
x = torch.randn(1, 2, 5, 5)
nn.Conv2d(2, 3, 3)(x)
F.conv_transpose1d(torch.randn(1, 2, 5), torch.randn(2, 3, 3))
assert calls[0] == 2, calls
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
        + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    result = subprocess.run([sys.executable, "-c", code, SUITE],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_runner_refuses_a_missing_checkout(tmp_path):
    with pytest.raises(SystemExit):
        run.main(["--pytorch-tests", str(tmp_path)])
