"""`python -m conv_ext.bench`: runs the benchmark harness, which lives in the
source checkout's bench/ package (cases, timing, report, CLI; see
docs/benchmark.md). Not part of conv_ext's API."""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    if not os.path.isfile(os.path.join(_ROOT, "bench", "cli.py")):
        sys.exit("conv_ext.bench: the benchmark needs the source checkout (its bench/ folder); "
                 "this conv_ext is installed without it")
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    from bench.cli import main as bench_main
    return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
