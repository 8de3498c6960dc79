"""Run PyTorch's own convolution tests with conv_ext in torch's place.

    python tests/torch_suite/run.py --pytorch-tests /path/to/pytorch/test
    make torch-tests PYTORCH_TESTS=/path/to/pytorch/test

Before the test files are imported, nn.Conv1d/Conv2d/ConvTranspose1d/
ConvTranspose2d become conv_ext's subclasses and F.conv1d/conv2d/
conv_transpose1d/conv_transpose2d conv_ext's functions, so every test that
builds those modules or calls those functions runs conv_ext (CPU only). The
files are PyTorch's, never copied into this repository: point --pytorch-tests
at the test/ directory of a PyTorch checkout of the installed torch's version
(docs/torch_suite.md says how to get one). common_nn_modules.py, here, adds
test_nn.py's generated module tests of the same four modules.

Every failure must be explained in known_failures.py (a conv_ext bug, a
precision artefact, a test of torch internals, a feature conv_ext does not
have, or a failure on plain torch too). The run prints the
counts, the failures by class, and exits non-zero on a failure that is not
listed there, or on a listed one that now passes (so the list stays true).
--baseline runs the same files on plain torch, for comparison.
"""
import argparse
import collections
import os
import pathlib
import re
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# The test files run, relative to PyTorch's test/ directory, each with the
# pytest -k expression that selects its convolution tests (None: all).
FILES = {
    "nn/test_convolution.py": None,
    # The ModuleInfo tests of the four modules conv_ext replaces (the Lazy*
    # modules become torch's own classes, and Conv3d is torch's).
    "test_modules.py": "(Conv1d or Conv2d or ConvTranspose1d or ConvTranspose2d) and not Lazy",
    # Here, not in PyTorch's test/: test_nn.py's generated module tests of the
    # four convolutions, built from the installed torch's common_nn lists.
    "common_nn_modules.py": None,
}


def _path(name, tests_dir):
    """The file `name`: this folder's own harness, else PyTorch's."""
    return HERE / name if (HERE / name).is_file() else tests_dir / name


def patch_torch():
    """Swap conv_ext's modules and functions in for torch's, and count the
    calls that reach conv_ext (a test that never does checks torch alone)."""
    import torch.nn as nn
    import torch.nn.functional as F

    import conv_ext
    from conv_ext import functional as ours

    nn.Conv1d, nn.Conv2d = conv_ext.Conv1d, conv_ext.Conv2d
    nn.ConvTranspose1d, nn.ConvTranspose2d = conv_ext.ConvTranspose1d, conv_ext.ConvTranspose2d
    F.conv1d, F.conv2d = conv_ext.conv1d, conv_ext.conv2d
    F.conv_transpose1d, F.conv_transpose2d = conv_ext.conv_transpose1d, conv_ext.conv_transpose2d

    calls = [0]

    def counted(fn):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            return fn(*args, **kwargs)
        return wrapper

    # Every public function goes through one of these two (looked up as
    # module globals at call time, so the wrappers see every call).
    ours._conv = counted(ours._conv)
    ours._conv_transpose = counted(ours._conv_transpose)
    return calls


class Recorder:
    """A pytest plugin that keeps one outcome per test and whether the test
    called conv_ext."""

    def __init__(self, calls):
        self.calls = calls
        self.outcome = {}       # test id -> passed/failed/skipped/xfailed/xpassed
        self.message = {}       # test id -> first line of the failure / skip reason
        self.used_ours = set()  # test ids during which conv_ext ran
        self.duration = collections.Counter()

    @staticmethod
    def test_id(nodeid):
        """'test_modules.py::TestModuleCPU::test_x' (the path without its folders)."""
        path, _, rest = nodeid.partition("::")
        return f"{pathlib.PurePath(path).name}::{rest}"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        before = self.calls[0]
        yield
        if self.calls[0] != before:
            self.used_ours.add(self.test_id(item.nodeid))

    def pytest_runtest_logreport(self, report):
        tid = self.test_id(report.nodeid)
        self.duration[tid] += report.duration
        previous = self.outcome.get(tid)
        if report.when == "call" or previous is None or report.failed:
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            else:
                outcome = report.outcome
            if previous == "failed":
                return
            self.outcome[tid] = outcome
            if report.failed or report.skipped:
                self.message[tid] = _first_line(report)


def _first_line(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0] if text.strip() else ""


def classify(outcomes, known):
    """Match each failure to its entry in known_failures.KNOWN (regexes over
    test ids). Returns (by_class, unexplained, stale)."""
    by_class = collections.defaultdict(list)
    unexplained, matched_entries = [], set()
    for tid, outcome in sorted(outcomes.items()):
        entry = next((pattern for pattern in known if re.fullmatch(pattern, tid)), None)
        if outcome == "failed":
            if entry is None:
                unexplained.append(tid)
            else:
                by_class[known[entry][0]].append(tid)
                matched_entries.add(entry)
        elif entry is not None and outcome in ("passed", "xpassed"):
            matched_entries.add(entry)
            by_class["stale"].append(tid)
    stale = by_class.pop("stale", [])
    return by_class, unexplained, stale


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pytorch-tests", default=os.environ.get("PYTORCH_TESTS"),
                        help="PyTorch's test/ directory (or $PYTORCH_TESTS)")
    parser.add_argument("--files", nargs="+", default=list(FILES),
                        help=f"test files under it (default: {' '.join(FILES)})")
    parser.add_argument("--cuda", action="store_true",
                        help="also run the CUDA tests (a GPU and a CUDA build of conv_ext; "
                             "known_failures.py lists CPU results only)")
    parser.add_argument("--baseline", action="store_true",
                        help="run on plain torch (nothing patched) for comparison")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (and the file's own)")
    parser.add_argument("--json", help="write every test's outcome to this file")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="list every failure with its message")
    args = parser.parse_args(argv)
    if not args.pytorch_tests:
        parser.error("--pytorch-tests (or PYTORCH_TESTS) is required: see docs/torch_suite.md")
    tests_dir = pathlib.Path(args.pytorch_tests)
    paths = [_path(f, tests_dir) for f in args.files]
    for path in paths:
        if not path.is_file():
            parser.error(f"{path} does not exist: see docs/torch_suite.md")

    # torch's test framework reads these at import.
    if not args.cuda:
        os.environ["PYTORCH_TESTING_DEVICE_ONLY_FOR"] = "cpu"
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    sys.path.insert(0, str(ROOT))
    import torch

    calls = [0] if args.baseline else patch_torch()
    recorder = Recorder(calls)
    start = time.monotonic()
    for name, path in zip(args.files, paths):
        keywords = [k for k in (FILES.get(name), args.keyword) if k]
        pytest_args = [
            str(path), "-q", "-p", "no:cacheprovider", "--noconftest", "--rootdir", str(path.parent),
            "-o", "addopts=", "-W", "ignore::UserWarning", "-W", "ignore::FutureWarning",
            "--tb=short" if args.verbose else "--tb=line",
        ]
        if keywords:
            pytest_args += ["-k", " and ".join(f"({k})" for k in keywords)]
        pytest.main(pytest_args, plugins=[recorder])
    elapsed = time.monotonic() - start

    outcomes = recorder.outcome
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({t: {"outcome": o, "ran_conv_ext": t in recorder.used_ours,
                           "message": recorder.message.get(t, "")}
                       for t, o in sorted(outcomes.items())}, f, indent=1)
    counts = collections.Counter(outcomes.values())
    print()
    print(f"== {'plain torch' if args.baseline else 'conv_ext'} {torch.__version__}, "
          f"{', '.join(args.files)}: {len(outcomes)} tests in {elapsed:.0f} s ==")
    print("  " + ", ".join(f"{k} {counts[k]}" for k in
                           ("passed", "failed", "skipped", "xfailed", "xpassed") if counts[k]))
    if not args.baseline:
        passed_ours = sum(1 for t, o in outcomes.items() if o == "passed" and t in recorder.used_ours)
        print(f"  passed and ran conv_ext: {passed_ours}; passed without calling it (Conv3d, "
              f"aten ops, constructor checks): {counts['passed'] - passed_ours}")
    if args.verbose:
        reasons = collections.Counter(
            f"{o}: {recorder.message.get(t, '')[:100]}" for t, o in outcomes.items()
            if o in ("skipped", "xfailed"))
        for reason, n in reasons.most_common():
            print(f"    {n:4d} {reason}")
    print("  slowest: " + ", ".join(f"{t} {d:.0f}s" for t, d in recorder.duration.most_common(5)))
    if args.baseline:
        for tid in sorted(t for t, o in outcomes.items() if o == "failed"):
            print(f"  FAILED on torch: {tid}: {recorder.message.get(tid, '')[:160]}")
        return 0

    sys.path.insert(0, str(HERE))
    from known_failures import CLASSES, KNOWN
    by_class, unexplained, stale = classify(outcomes, KNOWN)
    for cls, description in CLASSES.items():
        tids = by_class.get(cls, [])
        print(f"  {cls} ({description}): {len(tids)}")
        for tid in tids:
            entry = next(p for p in KNOWN if re.fullmatch(p, tid))
            print(f"    {tid}: {KNOWN[entry][1]}")
            if args.verbose:
                print(f"      got: {recorder.message.get(tid, '')[:300]}")
    for tid in unexplained:
        print(f"  UNEXPLAINED failure: {tid}: {recorder.message.get(tid, '')[:300]}")
    for tid in stale:
        print(f"  now PASSES (remove it from known_failures.py): {tid}")
    return 1 if unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
