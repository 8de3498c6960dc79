#!/bin/sh
# The emulated CUDA kernel tests (tests/test_cuda_emulation.py) with the
# emulation built under AddressSanitizer (its own build dir), so an
# out-of-bounds read or write of global or __shared__ memory by a kernel
# fails. torch itself is not instrumented, hence the preloaded runtime, and
# it leaks at exit by design, hence detect_leaks=0. --capture=sys leaves
# file descriptor 2 alone, so the ASan report of an aborted run is seen.
#   tests/run_emulation_asan.sh [pytest args]     (PYTHON=... to pick python)
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ASAN_LIB=$(${CC:-gcc} -print-file-name=libasan.so)
if [ ! -f "$ASAN_LIB" ]; then
  echo "run_emulation_asan.sh: libasan.so not found (gcc -print-file-name)" >&2
  exit 1
fi
# libstdc++ is preloaded too: python itself does not link it, and ASan's
# __cxa_throw interceptor must find the real one when it starts, or the
# first C++ exception (any TORCH_CHECK) aborts.
CXX_LIB=$(${CC:-gcc} -print-file-name=libstdc++.so)
CONV_EXT_EMU_SANITIZE=address LD_PRELOAD="$ASAN_LIB $CXX_LIB" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  "$PYTHON" -m pytest tests/test_cuda_emulation.py tests/test_cuda_warp_primitives.py \
  tests/test_cuda_mma_emulation.py tests/test_cuda_mma_wgrad_emulation.py -q --capture=sys "$@"
