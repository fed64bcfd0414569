# Every target installs what it needs first, so each works on a fresh machine.
PYTHON ?= python3
# Used only where no torch is installed: the local CPU build (a plain `torch`
# requirement would pull several GB of CUDA packages).
TORCH_CPU ?= torch==2.13.0

# make test-gpu: the wheelhouse of pytest, pytest-xdist, asv_runner, ... (shared/offline/wheels, carried to a GPU
# host as .gpu/wheels, the default where it exists; empty: use what is installed), the workers, the pytest marks
# (every test but the slow ones: the CUDA-marked tests, those that take the GPU where one exists (Triton kernels,
# graph captures, the suite's step) and the CPU ones).
WHEELS ?= $(wildcard .gpu/wheels)
GPU_WORKERS ?= 12
GPU_MARKS ?= not slow
GPU_SITE ?= /tmp/estimators-gpu-site
PYTEST_ARGS ?=  # more of pytest's arguments for test-gpu, e.g. tests/test_graph_capture.py

.PHONY: install install-browser test test-slow test-gpu bench

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_CPU)"
	$(PYTHON) -m pip install -q -e ".[test]"

# Debian's Chromium and ChromeDriver, for the dashboard test (tests/test_dashboard.py); apt-get only as root.
install-browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		if [ "$$(id -u)" = 0 ]; then \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		else \
			echo "chromium and chromedriver are missing and only root can apt-get them:" \
			     "sudo apt-get install chromium chromium-driver (the dashboard test needs them)" >&2; \
		fi

# The tests in two processes (pytest-xdist) with a progress bar; the slow ones (asv, a browser, the Triton
# interpreter, the compiled sweep) are test-slow's, also in two processes, a test file each (the gate's asv
# runs share one environment directory). -rfEs: failures, errors and skips (one line per reason and place)
# after the run. CI (.ci/run) runs both README lines.
test: install
	$(PYTHON) -m pytest -m "not slow" -n 2 -rfEs

test-slow: install install-browser
	$(PYTHON) -m pytest -m slow -n 2 --dist loadfile -rfEs

# On a GPU host without a package index: pytest and the suite's imports from $(WHEELS), installed into
# $(GPU_SITE) beside the host's torch (never touching it), then the tests in $(GPU_WORKERS) workers. The image's
# pytest-benchmark plugin is switched off (it warns in every worker); bytecode is cached outside the tree
# (hosts with PYTHONDONTWRITEBYTECODE=1 would compile torch from source in every worker).
test-gpu:
	@$(PYTHON) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
		f'make test-gpu needs a CUDA device, and torch {torch.__version__} finds none (make test runs the CPU tests)')"
	@if [ -n "$(WHEELS)" ]; then \
		ls "$(WHEELS)"/*.whl >/dev/null 2>&1 || { echo "no wheels in WHEELS=$(WHEELS): copy shared/offline/wheels" \
			"there, or pass WHEELS= to use the installed pytest and pytest-xdist" >&2; exit 1; }; \
		$(PYTHON) -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$(GPU_SITE)" \
			$$(ls "$(WHEELS)"/*.whl | grep -vE '/(pip|setuptools|wheel)-'); \
	else \
		$(PYTHON) -c "import xdist, asv_runner" 2>/dev/null || { echo "pytest-xdist or asv_runner is not installed:" \
			"name an offline wheelhouse, make test-gpu WHEELS=.gpu/wheels (a copy of shared/offline/wheels)" >&2; exit 1; }; \
	fi
	env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/estimators-pycache \
		PYTHONPATH="$(CURDIR)$(if $(WHEELS),:$(GPU_SITE))$${PYTHONPATH:+:$$PYTHONPATH}" \
		$(PYTHON) -m pytest -m "$(GPU_MARKS)" -n $(GPU_WORKERS) -p no:benchmark -p no:cacheprovider -rfEs $(PYTEST_ARGS)

bench: install
	$(PYTHON) -m tools.run.bench
