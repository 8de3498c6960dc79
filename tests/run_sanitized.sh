#!/bin/sh
# The CPU test suite against a build of conv_ext with AddressSanitizer and
# UndefinedBehaviorSanitizer. Fails on any sanitizer report.
#
#   tests/run_sanitized.sh [pytest args]       (PYTHON=... to pick python)
#
# The extension is built in a copy of the sources under build/sanitized
# (ninja keeps its objects there between runs), so the normal in-place
# build is left alone. torch itself is not instrumented, hence the
# preloaded ASan runtime; Python and torch leak at exit by design, hence
# detect_leaks=0. --capture=sys leaves file descriptor 2 alone, so an
# aborted run shows the report. The emulated CUDA kernels, where the tree
# has them, run under ASan too (tests/run_emulation_asan.sh).
#
# Default test selection: the tests that drive the kernels over the
# parameter space (comparisons with F.conv2d, gradcheck, bad input,
# hypothesis, threads, transforms, the depthwise/grouped/fused/transposed
# kernels); compile/DDP/ResNet/example/torchvision tests run the same kernels
# more slowly, the emulated CUDA tests have their own ASan run, and the
# benchmark smoke test needs bench/ (not copied): those are left out (pass
# test paths to override).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
case $PYTHON in   # a relative path must survive the cd below
  */*) PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON") ;;
esac
WORK=${CONV_EXT_SANITIZE_DIR:-$ROOT/build/sanitized}
SANITIZE=${CONV_EXT_SANITIZE:-address,undefined}
ASAN_LIB=$(${CC:-gcc} -print-file-name=libasan.so)
# libstdc++ preloaded too: ASan intercepts __cxa_throw and must find the real
# one when it starts, or the first C++ exception thrown by an uninstrumented
# library (triton, imported via torch.testing._internal) aborts the run.
STDCXX_LIB=$(${CC:-gcc} -print-file-name=libstdc++.so)
if [ ! -f "$ASAN_LIB" ]; then
  echo "run_sanitized.sh: libasan.so not found (gcc -print-file-name)" >&2
  exit 1
fi

# Copy the sources (mtimes kept, so ninja rebuilds only what changed).
mkdir -p "$WORK"
rm -rf "$WORK/csrc" "$WORK/conv_ext" "$WORK/tests"
cp -a "$ROOT/setup.py" "$ROOT/pyproject.toml" "$ROOT/csrc" "$ROOT/conv_ext" "$ROOT/tests" "$WORK/"
find "$WORK/conv_ext" -name '*.so' -delete

echo "run_sanitized.sh: building with -fsanitize=$SANITIZE in $WORK"
(cd "$WORK" && CONV_EXT_SANITIZE=$SANITIZE CONV_EXT_CUDA=0 "$PYTHON" setup.py build_ext --inplace \
  > "$WORK/build.log" 2>&1) || { tail -40 "$WORK/build.log"; exit 1; }

if [ $# -eq 0 ]; then
  set -- tests/test_conv2d.py tests/test_errors.py tests/test_opinfo.py tests/test_module.py \
    tests/test_transforms.py tests/test_autocast.py tests/test_hostile.py \
    tests/test_cpu_fast_paths.py tests/test_cpu_depthwise.py tests/test_cpu_grouped_reduced.py \
    tests/test_cpu_isa.py tests/test_cpu_amx.py \
    tests/test_fusion.py tests/test_transposed_1d.py tests/test_parity.py \
    -k "not memory_flat and not variants_benchmark and not emulat and not torchvision and not compile"
fi

LOG="$WORK/pytest.log"
status=0
(cd "$WORK" && LD_PRELOAD="$ASAN_LIB $STDCXX_LIB" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  "$PYTHON" -m pytest -q -p no:cacheprovider --capture=sys "$@") > "$LOG" 2>&1 || status=$?
tail -5 "$LOG"
# A report that did not stop the run (e.g. from a subprocess) still fails it.
if grep -E "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$LOG" > /dev/null; then
  echo "run_sanitized.sh: sanitizer report(s), see $LOG:" >&2
  grep -E -A20 "ERROR: AddressSanitizer|runtime error:" "$LOG" | head -60 >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "run_sanitized.sh: tests failed (exit $status), see $LOG" >&2
  exit "$status"
fi

if [ -f "$ROOT/tests/run_emulation_asan.sh" ]; then
  PYTHON="$PYTHON" sh "$ROOT/tests/run_emulation_asan.sh"
fi
echo "run_sanitized.sh: no sanitizer reports"
