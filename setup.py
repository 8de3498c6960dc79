"""Build of conv_ext._C: CPU kernels always, CUDA kernels when a CUDA toolkit
and a CUDA build of torch are present (GPU or not).

Environment:
  CONV_EXT_CUDA=0|1        force the CUDA part off or on
  CONV_EXT_MARCH=<arch>    -march for the whole build (default: none, the
                           compiler's baseline). Not needed for speed: the
                           CPU kernels are compiled for AVX-512, AVX2+FMA and
                           the baseline (csrc/cpu/conv2d_cpu_kernels_<isa>.cpp,
                           `#pragma GCC target`) and chosen at run time from
                           the CPU's features (CONV_EXT_CPU_ISA forces one)
  CONV_EXT_SANITIZE=...    e.g. address,undefined: build with sanitizers
  CONV_EXT_DEBUG=1         -O0 -g
  TORCH_CUDA_ARCH_LIST     CUDA archs; default: the visible GPUs, else 9.0
"""
import glob
import os
import shutil
import sys


def _is_cuda_root(path):
    """A toolkit root has nvcc, the runtime headers and libcudart (a bare
    bin/nvcc wrapper under /usr/local is not one)."""
    if not path or not os.path.isfile(os.path.join(path, "bin", "nvcc")):
        return False
    if not os.path.isfile(os.path.join(path, "include", "cuda_runtime.h")):
        return False
    return any(glob.glob(os.path.join(path, lib, "libcudart.so*")) for lib in ("lib64", "lib"))


def _find_cuda_home():
    """The CUDA toolkit root. torch guesses it from `which nvcc`, which is
    wrong where nvcc on PATH is a wrapper script (e.g. /usr/local/bin/nvcc,
    giving /usr/local): that compiles but fails to link."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _is_cuda_root(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if _is_cuda_root(root):
            return root
    for root in ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True):
        if _is_cuda_root(root):
            return root
    return None


_cuda_home = _find_cuda_home()
if _cuda_home:
    # Must be set before torch.utils.cpp_extension is imported: it reads it once.
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda():
    forced = os.environ.get("CONV_EXT_CUDA")
    available = _cuda_home is not None and torch.version.cuda is not None
    if forced == "0":
        return False
    if forced == "1":
        if not available:
            sys.exit("CONV_EXT_CUDA=1 but no CUDA toolkit (CUDA_HOME) or no CUDA build of torch")
        return True
    return available


def _set_cuda_arch_list():
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(f"{a}.{b}" for a, b in caps)
    else:
        # No GPU visible (CI): one arch keeps the compile short, and torch's
        # own arch detection would fail without a device.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"


def _extension():
    with_cuda = _want_cuda()
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    debug = os.environ.get("CONV_EXT_DEBUG") == "1"
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    # C++20 explicitly: torch 2.14's headers need it, and an older torch's
    # BuildExtension would default to C++17 (it adds -std only when absent).
    cxx += ["-fopenmp", "-std=c++20"]
    march = os.environ.get("CONV_EXT_MARCH", "none")
    if march and march != "none":
        cxx.append(f"-march={march}")
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo", "-std=c++20"]
    ldflags = ["-fopenmp"]
    sanitize = os.environ.get("CONV_EXT_SANITIZE")
    if sanitize:
        # -O1 and line tables only (-g1), as the sanitizers' docs advise: the checks are the same,
        # and at -O3 gcc spends 20+ minutes on the instrumented AVX-512 copy
        # of the kernels (CI's time budget; tests/run_sanitized.sh).
        cxx += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g1"]
        if not debug:
            cxx.append("-O1")
        ldflags += [f"-fsanitize={sanitize}"]
    define_macros = []
    if with_cuda:
        _set_cuda_arch_list()
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        define_macros.append(("CONV_EXT_WITH_CUDA", None))
        return CUDAExtension(
            "conv_ext._C", sources, define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=ldflags,
        )
    return CppExtension(
        "conv_ext._C", sources, define_macros=define_macros,
        extra_compile_args={"cxx": cxx}, extra_link_args=ldflags,
    )


# Metadata and packages are in pyproject.toml.
setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
)
