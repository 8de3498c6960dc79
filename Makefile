# conv_ext: two commands on a fresh machine.
#   make test    create .venv, install dependencies, build, run the whole test suite
#   make bench   the same set-up, then the benchmark against torch on the default device
#                (ResNet-50 + MobileNet layers; BENCH_ARGS="--suite all", "--model resnet50",
#                ... for the rest: docs/benchmark.md)
# Against an existing environment (no venv, no network), name its python:
#   make test PYTHON=python3
# Variables: BENCH_ARGS (extra benchmark flags), PYTEST_ARGS, MAX_JOBS (parallel compiles),
# SANITIZE_ARGS / EMULATION_ASAN_ARGS (pytest args of the two sanitizer runs).

VENV ?= .venv
ifeq ($(origin PYTHON), undefined)
PYTHON := $(VENV)/bin/python
SETUP := $(VENV)/.installed
else
SETUP :=
endif
# scikit-learn: only for the LeNet example's test (its bundled digits data).
# nvidia-cuda-cuobjdump/nvdisasm: the static SASS checks (bench/sass_check.py, tests/test_sass.py).
DEPS := torch ninja pybind11 setuptools wheel pytest expecttest hypothesis numpy matplotlib scikit-learn \
	nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
# Optional: the benchmark's whole-model mode (torchvision architectures) and the
# create_feature_extractor test of a converted ResNet; pinned to the torch just
# installed, and skipped (with the mode and the test) where none matches.
OPTIONAL_DEPS := torchvision
export MAX_JOBS ?= 2

.PHONY: test test-suite bench bench-results bench-suites bench-models build install clean \
        test-emulation-asan test-sanitized sass torch-tests

$(VENV)/.installed:
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(DEPS)
	$(VENV)/bin/python -m pip install $(OPTIONAL_DEPS) \
	  "torch==$$($(VENV)/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')" \
	  || echo "optional $(OPTIONAL_DEPS) not installed: the benchmark's --model mode will skip"
	touch $@

# In-place build (incremental: ninja keeps its objects under build/).
build: $(SETUP)
	$(PYTHON) setup.py build_ext --inplace

# Everything CI runs: the whole suite, then the sanitizer runs: the CPU
# suite against an ASan+UBSan build, and the emulated CUDA kernels under ASan.
test: test-suite test-sanitized

test-suite: build
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# The CPU tests against an ASan+UBSan build in build/sanitized (the in-place
# build is left alone), then tests/run_emulation_asan.sh; fails on any
# sanitizer report. Slow: a separate build.
test-sanitized: test-suite
	PYTHON=$(PYTHON) sh tests/run_sanitized.sh $(SANITIZE_ARGS)

# The emulated CUDA kernel tests alone, with the emulation built under
# AddressSanitizer (out-of-bounds global/shared accesses abort the run).
test-emulation-asan: build
	PYTHON=$(PYTHON) sh tests/run_emulation_asan.sh $(EMULATION_ASAN_ARGS)

# PyTorch's own convolution tests (test/nn/test_convolution.py, the conv
# ModuleInfo tests of test/test_modules.py, test_nn.py's generated conv module
# tests) with conv_ext in torch's place, on the CPU; not in `test`: needs a
# PyTorch checkout's test/ directory (docs/torch_suite.md).
# PYTORCH_TESTS=/path/to/pytorch/test
torch-tests: build
	$(PYTHON) tests/torch_suite/run.py --pytorch-tests "$(PYTORCH_TESTS)"

# Without a GPU, the static table of the CUDA kernels (registers, spills,
# main-loop math share, HMMA) comes first: the GPU-free view of their speed.
bench: build
	$(PYTHON) bench/sass_check.py --no-gpu-only
	$(PYTHON) bench/run.py $(BENCH_ARGS)

# The static SASS table of the CUDA kernels (bench/sass_check.py).
sass: build
	$(PYTHON) bench/sass_check.py

# The runs whose figures docs/benchmark.md quotes, written to bench/results
# (about 15 minutes on 2 cores).
bench-results: build
	$(PYTHON) -m bench --suite resnet50 --pass forward --batch 8 --out bench/results
	$(PYTHON) -m bench --suite mobilenet --pass forward --batch 8 --out bench/results
	$(PYTHON) -m bench --suite resnet50 --pass train --batch 8 --out bench/results
	$(PYTHON) -m bench --suite resnet50 --pass forward --batch 1 --out bench/results
	$(PYTHON) -m bench --suite mobilenet --pass train --batch 8 --out bench/results

# Every layer suite, forward, at N=8 and N=1 (issue 10's broad benchmark; an
# hour or more on 2 cores), and the whole-model training steps (torchvision).
bench-suites: build
	$(PYTHON) -m bench --suite all --pass forward --batch 8 --no-plot --out bench/results
	$(PYTHON) -m bench --suite all --pass forward --batch 1 --no-plot --out bench/results

bench-models: build
	$(PYTHON) -m bench --model all --pass train --batch 8 --out bench/results

# For users: an editable install into the current environment, built
# against the torch already installed there (hence no build isolation).
install: $(SETUP)
	$(PYTHON) -m pip install --no-build-isolation --no-deps -e .

clean:
	rm -rf build conv_ext/*.so
