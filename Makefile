# pathsgd: `make help` lists the targets.
# Python runs as $(PY): the project's virtual environment by default; `make smoke PY=python3` uses another.
VENV ?= .venv
PY ?= $(VENV)/bin/python
# torch/torchvision pinned to releases that pip can take from this machine's disk; any torch >= 2.3 works.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.DEFAULT_GOAL := help
.PHONY: help install test

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-26s %s\n", $$1, $$2}'

install: ## create $(VENV) and install the package with its test tools
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install -e '.[dev]'

test: ## run the test suite (CPU, no network)
	$(PY) -m pytest -q

# >>> reproduce (owned by the figure pipeline)
# <<< reproduce
