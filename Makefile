# conv_ext: two commands on a fresh machine.
#   make test    create .venv, install dependencies, build, run the whole test suite
#   make bench   the same set-up, then the benchmark against torch on the default device
# Against an existing environment (no venv, no network), name its python:
#   make test PYTHON=python3
# Variables: BENCH_ARGS (extra benchmark flags), PYTEST_ARGS, MAX_JOBS (parallel compiles),
# SANITIZE_ARGS (pytest args for make test-sanitized).

VENV ?= .venv
ifeq ($(origin PYTHON), undefined)
PYTHON := $(VENV)/bin/python
SETUP := $(VENV)/.installed
else
SETUP :=
endif
DEPS := torch ninja pybind11 setuptools wheel pytest expecttest hypothesis numpy matplotlib
export MAX_JOBS ?= 2

.PHONY: test bench build install clean test-emulation-asan test-sanitized

$(VENV)/.installed:
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(DEPS)
	touch $@

# In-place build (incremental: ninja keeps its objects under build/).
build: $(SETUP)
	$(PYTHON) setup.py build_ext --inplace

test: build
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# The CPU tests against an ASan+UBSan build in build/sanitized (the in-place
# build is left alone); fails on any sanitizer report. Slow: a separate build.
test-sanitized: $(SETUP)
	PYTHON=$(PYTHON) sh tests/run_sanitized.sh $(SANITIZE_ARGS)

# The emulated CUDA kernel tests again, with the emulation built under
# AddressSanitizer (out-of-bounds global/shared accesses abort the run).
test-emulation-asan: build
	PYTHON=$(PYTHON) tests/run_emulation_asan.sh $(PYTEST_ARGS)

bench: build
	$(PYTHON) -m conv_ext.bench $(BENCH_ARGS)

# For users: an editable install into the current environment, built
# against the torch already installed there (hence no build isolation).
install: $(SETUP)
	$(PYTHON) -m pip install --no-build-isolation --no-deps -e .

clean:
	rm -rf build conv_ext/*.so
