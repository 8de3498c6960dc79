"""JIT build of the CPU emulation of conv_ext's CUDA kernels (test-only).

load() compiles tests/cuda_emulation/conv2d_emulation.cpp with g++ against
the same kernel headers nvcc compiles, caching the module under
build/cuda_emulation (build/cuda_emulation_asan when
CONV_EXT_EMU_SANITIZE=address, so the two builds never overwrite each
other). The first build takes about a minute; later ones are cached.
"""
import os

from torch.utils.cpp_extension import load as _load

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

_module = None


def load():
    global _module
    if _module is not None:
        return _module
    sanitize = os.environ.get("CONV_EXT_EMU_SANITIZE", "")
    name = "conv_ext_cuda_emulation"
    flags = ["-std=c++20", "-pthread", "-Wall", "-Wno-unknown-pragmas"]
    ldflags = ["-pthread"]
    if sanitize:
        # -O1 keeps ASan reports readable and the build short.
        flags += ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}"]
        ldflags += [f"-fsanitize={sanitize}"]
        name += "_" + sanitize.replace(",", "_")
    else:
        flags += ["-O2"]
    build_dir = os.path.join(ROOT, "build", name)
    os.makedirs(build_dir, exist_ok=True)
    _module = _load(
        name=name,
        sources=[os.path.join(HERE, "conv2d_emulation.cpp"),
                 os.path.join(HERE, "warp_primitive_tests.cpp")],
        extra_cflags=flags,
        extra_ldflags=ldflags,
        extra_include_paths=[os.path.join(ROOT, "csrc")],
        build_directory=build_dir,
        verbose=False,
    )
    return _module
