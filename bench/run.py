"""The benchmark against torch on the default device (CUDA where a GPU is
visible and conv_ext has CUDA kernels, else the CPU): `make bench` runs it.

    python bench/run.py [--suite resnet50,convnext] [--pass train] [--model resnet50] ...

The same as `python -m bench` from the repository root; see bench/cli.py and
docs/benchmark.md.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
