import zlib

import pytest
import torch

import conv_ext  # noqa: F401  (registers the ops before any test runs)
from helpers import set_cudnn_allow_tf32


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def vector_cpu_isas():
    """The vector ISAs (avx512, avx2) whose copy of the CPU kernels this CPU
    can run; "portable" only where it has none (csrc/cpu/conv2d_cpu_isa.h)."""
    isas = list(torch.ops.conv_ext_debug.cpu_isas())
    return [isa for isa in isas if isa != "portable"] or isas


@pytest.fixture(params=vector_cpu_isas())
def cpu_isa(request):
    """Runs the test once per vector ISA the CPU has: an AVX-512 machine tests
    the AVX2 kernels too. Use with `pytestmark = pytest.mark.usefixtures("cpu_isa")`."""
    previous = torch.ops.conv_ext_debug.set_cpu_isa(request.param)
    try:
        yield request.param
    finally:
        torch.ops.conv_ext_debug.set_cpu_isa(previous)


@pytest.fixture
def amx_off():
    """bfloat16 on the float32 kernels, not the AMX tiles (csrc/cpu/conv2d_cpu_amx.h)
    nor vdpbf16ps (csrc/cpu/conv2d_cpu_avx512bf16.h): for tests of those kernels'
    exact results."""
    debug = torch.ops.conv_ext_debug
    previous = debug.set_cpu_amx(False)
    previous_dot = debug.set_cpu_bf16_dot(False)
    try:
        yield
    finally:
        debug.set_cpu_bf16_dot(previous_dot)
        debug.set_cpu_amx(previous)


@pytest.fixture(autouse=True)
def _exact_float32():
    # torch runs float32 convolutions on TF32 by default, and conv_ext's CUDA
    # ops follow the same flag; tests compare float32 exactly unless they
    # turn TF32 on themselves.
    before = torch.backends.cudnn.allow_tf32
    set_cudnn_allow_tf32(False)
    yield
    set_cudnn_allow_tf32(before)


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # A different but reproducible seed per test: fresh random inputs that a
    # failure report can reproduce (the seed is the test id's hash).
    # (crc32, not hash(): str hashes change from process to process.)
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield


@pytest.fixture(scope="module")
def emu():
    """The CUDA kernels built for the CPU emulation (tests/cuda_emulation),
    with no dense tile forced before or after the module's tests."""
    from cuda_emulation.build import load
    module = load()
    module.force_tile("")
    module.force_mma_splits(0)
    yield module
    module.force_tile("")
    module.force_mma_splits(0)
