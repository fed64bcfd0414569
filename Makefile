# Every target installs what it needs first, so each works on a fresh machine.
PYTHON ?= python3
# Used only where no torch is installed: the local CPU build (a plain `torch`
# requirement would pull several GB of CUDA packages).
TORCH_CPU ?= torch==2.13.0

.PHONY: install install-browser test test-slow bench

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
# runs share one environment directory). CI (.ci/run) runs both README lines.
test: install
	$(PYTHON) -m pytest -m "not slow" -n 2

test-slow: install install-browser
	$(PYTHON) -m pytest -m slow -n 2 --dist loadfile

bench: install
	$(PYTHON) -m tools.run.bench
