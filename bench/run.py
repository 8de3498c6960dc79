"""The benchmark against torch on the default device (CUDA where a GPU is
visible and conv_ext has CUDA kernels, else the CPU): `make bench` runs it.

    python bench/run.py [--suite resnet50|mobilenet|all] [--pass train] ...

A thin entry point: the benchmark lives in conv_ext/bench.py (also
`python -m conv_ext.bench`), so an installed conv_ext carries it too.
See docs/benchmark.md for the flags and columns; bench/gpu_bench.py is the
GPU comparison with cuDNN (TF32 off/on, NCHW/NHWC, bfloat16).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from conv_ext.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
