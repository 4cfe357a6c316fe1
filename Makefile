# The two commands: `make demo` and `make test`. Both create (or reuse) .venv and install what they need from
# this repository's own files. torch==2.13.0 is pinned for the install here (the CPU build lies on this disk; a
# bare `torch` would pull a multi-GB CUDA build); pyproject.toml keeps a compatible range.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.gsmt-installed
TORCH_PIN ?= torch==2.13.0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint install wheel-check bench clean

$(STAMP): pyproject.toml CMakeLists.txt $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*.cu csrc/*/*.cuh csrc/*/*.h csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.12"
	$(PIP) install -q --no-build-isolation -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gsmt-fast demo --out demo_out

lint: $(STAMP)
	$(VENV)/bin/ruff check gsmt_fast kernels tests bench

test: $(STAMP) lint
	$(PY) -m pytest -q -m "not gpu" tests

# Build a wheel, install it into a fresh venv and import the extension and the kernels from it (run by CI).
wheel-check: $(STAMP)
	rm -rf build/wheelhouse build/wheel-venv
	$(PIP) wheel -q --no-build-isolation --no-deps -w build/wheelhouse .
	$(PYTHON) -m venv build/wheel-venv
	build/wheel-venv/bin/pip install -q --no-deps build/wheelhouse/gsmt_fast-*.whl
	cd build && wheel-venv/bin/python -c "import sys; sys.path = [p for p in sys.path if p != '']; \
	  import gsmt_fast, gsmt_fast._C as C, gsmt_fast.kernels as K; \
	  assert 'site-packages' in gsmt_fast.__file__, gsmt_fast.__file__; \
	  print('wheel ok:', gsmt_fast.__file__, C.build_info, K.__name__)"

bench: $(STAMP)
	$(PY) bench/run.py --quick

clean:
	rm -rf build dist demo_out .pytest_cache
