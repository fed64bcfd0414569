# Every target installs what it needs first, so each works on a fresh machine.
PYTHON ?= python3
# Used only where no torch is installed: the local CPU build (a plain `torch`
# requirement would pull several GB of CUDA packages).
TORCH_CPU ?= torch==2.13.0

.PHONY: install test

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_CPU)"
	$(PYTHON) -m pip install -e ".[test]"

test: install
	$(PYTHON) -m pytest -q
